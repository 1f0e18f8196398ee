"""Header blocks and header values: unfolding, repairs, addresses and MIME parameters.

`_read_headers` splits a header block off the raw bytes by offsets, repairing what real mail
gets wrong (mbox `From ` lines, junk before the headers, lost indents, glued headers, a missing
blank line). The rest turns header bytes into what the builder and the walker need: text
(`_header_text`, `_fold`), whether encoded-words may be decoded in a header at all (never in
address and trace headers, SPEC §3.7a), address lists (`_addresses`: a regex fast path, else
`getaddresses` with encoded-words hidden) and Content-Type/Disposition parameters (`_mime_info`:
a regex fast path, else a compat32 `Message` for RFC 2231 and odd quoting).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.utils import getaddresses
from typing import Callable, NamedTuple, TypeVar

from bridge.parse.mime.charsets import _ENCODED_WORD, decode_text
from bridge.parse.mime.limits import MimeLimits

T = TypeVar("T")

# -- header blocks -----------------------------------------------------------------------------

_HEADER_START = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")  # (name) before the first colon
# Two headers glued on one line ("Date: … +0200Received: from …", corpus mail107). Only
# looked for in headers whose grammar cannot legitimately contain "Name: ".
_GLUED = re.compile(rb"(?<=[0-9)>])([A-Z][A-Za-z0-9-]{1,40}):[ \t]")
_GLUE_CHECKED = {b"date", b"received", b"message-id", b"mime-version", b"return-path",
                 b"content-transfer-encoding", b"delivered-to"}


@dataclass
class _Headers:
    fields: list[tuple[bytes, bytes]]  # (lower-case name, unfolded raw value)
    body_start: int

    def first(self, name: bytes) -> bytes | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None


# The end of a header block: a line that is empty once its CRs are stripped.
_BLANK_LINE = re.compile(rb"\n\r*\n")


def _header_lines(buf: bytes, start: int, end: int, cap: int, defects: list[str]
                  ) -> tuple[list[tuple[int, bytes]], int]:
    """(offset, line without EOL) of each line of the header block in buf[start:cap], and
    where the body starts. The blank line is found by one search and the block split at once:
    a loop of `find` and a slice per line was a tenth of a worker's time."""
    stop = _BLANK_LINE.search(buf, start, cap)
    pieces = buf[start:stop.start() if stop else cap].split(b"\n")
    # Without a blank line the last piece has no newline before `cap`: it is the last line
    # of a block that runs to the end, or the cut-off rest of one too large.
    tail = None if stop else pieces.pop()
    lines: list[tuple[int, bytes]] = []
    pos = start
    for piece in pieces:
        line = piece.rstrip(b"\r")
        if not line:  # only the first line can be blank here: the search found the others
            return lines, pos + len(piece) + 1
        lines.append((pos, line))
        pos += len(piece) + 1
    if stop:
        return lines, stop.end()
    assert tail is not None
    if cap < end:
        defects.append("header block too large; rest read as body")
        return lines, pos
    if tail.rstrip(b"\r"):
        lines.append((pos, tail.rstrip(b"\r")))
    return lines, end


def _read_headers(buf: bytes, start: int, end: int, limits: MimeLimits, top: bool,
                  defects: list[str]) -> _Headers:
    """Split a header block off buf[start:end], repairing what real mail gets wrong."""
    lines, body_start = _header_lines(buf, start, end, min(end, start + limits.max_header_bytes),
                                      defects)

    if top and lines and lines[0][1].startswith(b"From "):
        lines.pop(0)  # mbox envelope line; not a header
    if top and lines and not _HEADER_START.match(lines[0][1]):
        # A line of junk before the headers (corpus mail068: "---- Original email message ----").
        for skip in (1, 2, 3):
            if skip < len(lines) and _HEADER_START.match(lines[skip][1]):
                defects.append(f"skipped {skip} line(s) before the headers")
                del lines[:skip]
                break

    # A line without a colon is folded in while real headers still follow it.
    last_header = next((i for i in range(len(lines) - 1, -1, -1)
                        if _HEADER_START.match(lines[i][1])), -1)
    names: list[bytes] = []
    values: list[list[bytes]] = []  # each header's pieces, joined once at the end
    for i, (offset, line) in enumerate(lines):
        header = _HEADER_START.match(line)
        if header:
            names.append(header.group(1).lower())
            values.append([line[header.end():].strip(b" \t")])
        elif names and ((indented := line[:1] in b" \t") or i < last_header):
            # A continuation, or a line without a colon while real headers still follow
            # (mail054: base64 continuation lines missing their indent): fold it in.
            if not indented:
                defects.append("header line without indent or colon joined to the previous one")
            values[-1].append(b" " + line.strip(b" \t"))
        else:
            # No blank line between headers and body: the body starts here.
            defects.append("no blank line between headers and body" if names or not top
                           else "no header block")
            body_start = offset
            break

    repaired: list[tuple[bytes, bytes]] = []
    for name, pieces in zip(names, values):
        value = b"".join(pieces)
        while name in _GLUE_CHECKED and (glued := _GLUED.search(value)):
            defects.append(f"two headers glued together in {name.decode('ascii', 'replace')}")
            repaired.append((name, value[:glued.start()].rstrip()))
            name = glued.group(1).lower()
            value = value[glued.end():].strip()
        repaired.append((name, value))
    return _Headers(repaired, body_start)


# -- header values -----------------------------------------------------------------------------

# Headers whose encoded-words are left alone: addresses and trace/authentication data, where a
# decoded encoded-word would be a spoofing vector (SPEC §3.7a), and MIME structure headers.
_LITERAL_HEADERS = {"from", "sender", "reply-to", "to", "cc", "bcc", "return-path", "delivered-to",
                    "received", "received-spf", "authentication-results", "dkim-signature",
                    "domainkey-signature", "message-id", "in-reply-to", "references", "date",
                    "mime-version", "list-id", "list-post", "list-unsubscribe", "errors-to",
                    "disposition-notification-to"}
_ADDRESSY_TOKENS = {"from", "to", "cc", "bcc", "sender", "recipient", "recipients", "address",
                    "envelope", "original", "addr", "rcpt", "mailfrom"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _decodes_words(name: str) -> bool:
    if name in _LITERAL_HEADERS or name.startswith(("content-", "arc-", "resent-", "list-")):
        return False
    return not _ADDRESSY_TOKENS.intersection(name.split("-"))


def _header_text(value: bytes, hint: str | None) -> str:
    """Header bytes to text: UTF-8 (RFC 6532), else the message's charset, else windows-1252."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if hint:
        text, defect = decode_text(value, hint)
        if defect is None:
            return text
    return value.decode("cp1252", "replace")


def _fold(text: str) -> str:
    # str.split() splits on exactly what `\s+` matches (str.isspace): one pass, no regex.
    return " ".join(_CONTROL.sub(" ", text).split())


# One address, no comments, no encoded-words, no backslashes: what almost every alert carries.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_ADDR_SPEC = rf"{_ATOM}(?:\.{_ATOM})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_SIMPLE_ADDRESS = re.compile(
    r"[ \t]*(?:"
    rf"""(?:([A-Za-z0-9!#$%&'*+/?^_`{{|}}~ \t.-]*?)|"([^"\\=]*)")[ \t]*<({_ADDR_SPEC})>"""  # Name <a@b>
    rf"|({_ADDR_SPEC})"  # a@b
    r")[ \t]*"
)
_PLACEHOLDER = re.compile("\ue000([0-9]+)\ue001")


def _addresses(value: str) -> list[tuple[str, str]]:
    """(display name still encoded, addr-spec lower-cased) pairs of an address header.

    Encoded-words are swapped for opaque placeholders before `getaddresses` sees the value, so
    a comma inside an encoded display name (corpus mail065) does not split the address, and an
    encoded-word inside an addr-spec (mail117/118) comes back as the literal text it was:
    never decoded (SPEC §3.7a).
    """
    simple = _SIMPLE_ADDRESS.fullmatch(value)
    if simple:  # the common "Name <a@b>" or "a@b": 10x cheaper than getaddresses
        name = simple.group(2) if simple.group(2) is not None else (simple.group(1) or "")
        address = simple.group(3) or simple.group(4)
        return [(" ".join(name.split()), address.lower())]
    return _addresses_general(value)


def _addresses_general(value: str) -> list[tuple[str, str]]:
    words: list[str] = []

    def hide(match: re.Match[str]) -> str:
        words.append(match.group(0))
        return f"\ue000{len(words) - 1}\ue001"

    def show(text: str) -> str:
        return _PLACEHOLDER.sub(lambda m: words[int(m.group(1))], text)

    value = _CONTROL.sub(" ", value.replace("\ue000", "").replace("\ue001", ""))
    hidden = _ENCODED_WORD.sub(hide, value)
    pairs = []
    for name, address in getaddresses([hidden]):
        if name or address:
            pairs.append((show(name), show(address).strip().lower()))
    return pairs


def _angle_addr(value: str) -> tuple[str, str] | None:
    """(text before it, addr-spec) of the angle-addr of the first mailbox, found outside
    quoted strings, comments and encoded-words; None when the first mailbox has none.

    An unquoted "@" in a display name (`a@b.example <c@d.example>`) makes getaddresses see two
    addresses; the mailbox is the angle-addr, and the sender must never be the display name.
    """
    masked = _ENCODED_WORD.sub(lambda m: "x" * len(m.group(0)), value)
    depth, quoted, i = 0, False, 0
    while i < len(masked):
        c = masked[i]
        if c == "\\":
            i += 2
            continue
        if quoted:
            quoted = c != '"'
        elif c == '"' and depth == 0:
            quoted = True
        elif c == "(":
            depth += 1
        elif c == ")" and depth:
            depth -= 1
        elif depth == 0 and c == ",":
            return None
        elif depth == 0 and c == "<":
            end = masked.find(">", i)
            if end < 0:
                return None
            address = value[i + 1:end].strip()
            address = address.rpartition(":")[2] if address.startswith("@") else address
            return value[:i], address.strip().lower()
        i += 1
    return None


def _from_mailbox(value: str, pairs: list[tuple[str, str]] | None = None
                  ) -> tuple[str, str] | None:
    """(display name still encoded, addr-spec lower-cased) of the first mailbox of From.
    `pairs`: `_addresses(value)`, when the caller has it already (it is not cheap)."""
    simple = _SIMPLE_ADDRESS.fullmatch(value)
    if not simple:
        angle = _angle_addr(value)
        if angle is not None and "@" in angle[1]:
            name = " ".join(angle[0].replace('"', " ").split())
            return name, angle[1]
    pairs = _addresses(value) if pairs is None else pairs
    return pairs[0] if pairs else None


class _MimeInfo(NamedTuple):
    """What the walker needs from Content-Type and Content-Disposition. A tuple: one is made
    for every part of every message, and a frozen dataclass is several times slower to make."""

    ctype: str
    boundary: str | None
    charset: str | None
    filename: str | None  # raw: still Latin-1-read and possibly RFC 2047-encoded
    disposition: str | None


_TOKEN = r"[A-Za-z0-9!#$&^_.+-]+"
_SIMPLE_CTYPE = re.compile(rf"[ \t]*({_TOKEN})/({_TOKEN})[ \t]*")
_SIMPLE_DISPOSITION = re.compile(rf"[ \t]*({_TOKEN})[ \t]*")
_SIMPLE_PARAM = re.compile(rf"""[ \t]*;[ \t]*({_TOKEN})[ \t]*=[ \t]*(?:"([^"\\]*)"|([^;"\s]*))[ \t]*""")


def _simple_params(value: str, head: re.Pattern[str]) -> tuple[str, dict[str, str]] | None:
    """`type/sub; key=value; key="value"` without RFC 2231 or escapes; None for anything else."""
    match = head.match(value)
    if match is None:
        return None
    params: dict[str, str] = {}
    pos = match.end()
    while pos < len(value):
        param = _SIMPLE_PARAM.match(value, pos)
        if param is None:
            if value[pos:].strip(" \t;"):
                return None
            break
        quoted, bare = param.group(2), param.group(3)
        params.setdefault(param.group(1).lower(), quoted if quoted is not None else bare)
        pos = param.end()
    return match.group(0).strip().lower(), params


def _mime_info(content_type: bytes | None, disposition: bytes | None, default: str) -> _MimeInfo:
    """Parse the two headers; a regex handles the common case, `email` the rest (RFC 2231)."""
    # Latin-1 keeps every byte: boundaries must match the raw body byte for byte.
    ct_text = content_type.decode("latin-1") if content_type is not None else None
    cd_text = disposition.decode("latin-1") if disposition is not None else None
    ct = _simple_params(ct_text, _SIMPLE_CTYPE) if ct_text is not None else (default, {})
    cd = _simple_params(cd_text, _SIMPLE_DISPOSITION) if cd_text is not None else ("", {})
    if ct is not None and cd is not None:
        boundary = ct[1].get("boundary")
        return _MimeInfo(ct[0], boundary.rstrip() if boundary is not None else None,
                         ct[1].get("charset", "").lower() or None,
                         cd[1].get("filename") or ct[1].get("name"), cd[0] or None)
    msg = Message()  # compat32: RFC 2231 continuations and charsets, quoting, oddities
    msg.set_default_type(default)
    if ct_text is not None:
        msg["Content-Type"] = ct_text
    if cd_text is not None:
        msg["Content-Disposition"] = cd_text

    def attempt(getter: Callable[[], T], fallback: T) -> T:
        try:
            return getter()
        except Exception:  # noqa: BLE001 - broken RFC 2231 parameters must not lose the part
            return fallback

    return _MimeInfo(attempt(msg.get_content_type, default), attempt(msg.get_boundary, None),
                     attempt(msg.get_content_charset, None), attempt(msg.get_filename, None),
                     attempt(msg.get_content_disposition, None))


def _relatin(text: str) -> str:
    """A parameter read as Latin-1 back to what its bytes meant (usually UTF-8)."""
    try:
        return _header_text(text.encode("latin-1"), None)
    except UnicodeEncodeError:
        return text  # already decoded through RFC 2231
