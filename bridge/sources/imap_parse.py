"""Pure helpers for the IMAP source: reading aioimaplib responses and writing IMAP arguments.

aioimaplib hands back a response as a list of lines (bytes, with the leading `* ` of untagged
lines removed) in which each literal (a message body) is one `bytearray` (or a `Literal`, from
our FETCH command), and whose last line is the text of the tagged completion. These functions turn that into plain values — FETCH records,
SEARCH results, SELECT's UIDVALIDITY — and build the arguments we send (quoted modified-UTF-7
mailbox names, compact UID sets). No I/O here, so all of it is tested without a server.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable, Sequence

_FETCH_START = re.compile(rb"^(?:\* )?\d+ FETCH \(")
_UID = re.compile(rb"\bUID (\d+)")
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_DATE = re.compile(rb'\bINTERNALDATE "([^"]+)"')
_UIDVALIDITY = re.compile(rb"\[UIDVALIDITY (\d+)\]")
_UIDNEXT = re.compile(rb"\[UIDNEXT (\d+)\]")
_EXISTS = re.compile(rb"^(?:\* )?(\d+) EXISTS")
_INTERNALDATE = re.compile(
    r"\s*(\d{1,2})-([A-Za-z]{3})-(\d{4}) (\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)")
_MONTHS = {m: i for i, m in enumerate(
    "jan feb mar apr may jun jul aug sep oct nov dec".split(), start=1)}


class Literal:
    """A literal (message body) in a response, kept apart from the text lines; holds the one
    copy of the bytes, which ends up in the RawMessage without being copied again."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __bytes__(self) -> bytes:
        return self.data


Line = bytes | bytearray | Literal


@dataclass
class FetchRecord:
    """One message of a FETCH response. `literal` is the one body part fetched, if any."""

    uid: int | None = None
    size: int | None = None
    internaldate: float | None = None
    literal: bytes | None = None


@dataclass(frozen=True)
class SelectInfo:
    uidvalidity: int | None
    exists: int | None
    uidnext: int | None


def parse_fetch(lines: Sequence[Line]) -> list[FetchRecord]:
    """FETCH records in response order. Attributes are read from the text lines only (never
    from inside a literal, where a message body may contain anything)."""
    records: list[FetchRecord] = []
    current: FetchRecord | None = None
    for line in lines[:-1]:  # the last line is the tagged completion text
        if not isinstance(line, bytes):  # a literal: ours, or aioimaplib's bytearray
            if current is not None:
                current.literal = line.data if isinstance(line, Literal) else bytes(line)
            continue
        if _FETCH_START.match(line):
            current = FetchRecord()
            records.append(current)
        if current is None:
            continue
        if current.uid is None and (m := _UID.search(line)):
            current.uid = int(m.group(1))
        if current.size is None and (m := _SIZE.search(line)):
            current.size = int(m.group(1))
        if current.internaldate is None and (m := _DATE.search(line)):
            current.internaldate = parse_internaldate(m.group(1).decode("ascii", "replace"))
    return records


def parse_internaldate(text: str) -> float | None:
    """`17-Jul-1996 02:44:25 -0700` (RFC 3501 date-time) -> epoch seconds; None if malformed."""
    m = _INTERNALDATE.match(text)
    if not m:
        return None
    day, mon, year, hh, mm, ss, sign, oh, om = m.groups()
    month = _MONTHS.get(mon.lower())
    if month is None:
        return None
    offset = timedelta(hours=int(oh), minutes=int(om))
    tz = timezone(-offset if sign == "-" else offset)
    try:
        return datetime(int(year), month, int(day), int(hh), int(mm), int(ss), tzinfo=tz).timestamp()
    except ValueError:
        return None


def parse_search(lines: Sequence[Line]) -> list[int]:
    """UIDs of a (UID) SEARCH response; aioimaplib leaves `1 2 3` lines (keyword stripped)."""
    uids: list[int] = []
    for line in lines[:-1]:
        text = bytes(line)
        if text.startswith(b"SEARCH"):
            text = text[6:]
        uids.extend(int(tok) for tok in text.split() if tok.isdigit())
    return uids


def parse_select(lines: Sequence[Line]) -> SelectInfo:
    uidvalidity = uidnext = exists = None
    for line in lines:
        text = bytes(line)
        if (m := _UIDVALIDITY.search(text)) and uidvalidity is None:
            uidvalidity = int(m.group(1))
        if (m := _UIDNEXT.search(text)) and uidnext is None:
            uidnext = int(m.group(1))
        if (m := _EXISTS.match(text)) and exists is None:
            exists = int(m.group(1))
    return SelectInfo(uidvalidity, exists, uidnext)


def response_text(lines: Sequence[Line], redact: Callable[[str], str] = str) -> str:
    """The server's human-readable completion text (the last line), for error messages.
    Redacted before it is cut: servers echo the LOGIN line, password included, in a NO."""
    if not lines:
        return ""
    return redact(bytes(lines[-1]).decode("utf-8", "replace").strip())[:300]


def quoted(text: str) -> str:
    """An IMAP quoted string (RFC 3501 §4.3)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def mailbox_arg(name: str) -> str:
    """A mailbox name as a quoted modified-UTF-7 string (RFC 3501 §5.1.3): `&` becomes `&-`,
    runs of non-ASCII become `&<modified base64 of UTF-16BE>-`."""
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        if run:
            b64 = base64.b64encode("".join(run).encode("utf-16-be")).decode("ascii")
            out.append("&" + b64.rstrip("=").replace("/", ",") + "-")
            run.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            run.append(ch)
    flush()
    return quoted("".join(out))


def uid_set(uids: Iterable[int]) -> str:
    """`1:3,7,9:10` for [1, 2, 3, 7, 9, 10]: short commands however many UIDs."""
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("empty UID set")
    parts: list[str] = []
    start = prev = ordered[0]
    for uid in ordered[1:]:
        if uid == prev + 1:
            prev = uid
            continue
        parts.append(f"{start}:{prev}" if start != prev else str(start))
        start = prev = uid
    parts.append(f"{start}:{prev}" if start != prev else str(start))
    return ",".join(parts)


def chunks_by_size(items: Sequence[tuple[int, int]], max_count: int,
                   max_bytes: int) -> list[list[int]]:
    """Split (uid, size) pairs into groups of at most `max_count` messages and `max_bytes`
    bytes (a single larger message is a group of its own), keeping order. This bounds the
    memory one fetch holds, whatever the message sizes."""
    groups: list[list[int]] = []
    group: list[int] = []
    total = 0
    for uid, size in items:
        if group and (len(group) >= max_count or total + size > max_bytes):
            groups.append(group)
            group, total = [], 0
        group.append(uid)
        total += size
    if group:
        groups.append(group)
    return groups
