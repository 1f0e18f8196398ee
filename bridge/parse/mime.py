"""Raw RFC 5322 bytes to a `ParsedMessage`: tolerant, bounded, fast, and never raising.

The structure of the message (header blocks, multipart boundaries, transfer encodings) is read
directly on the raw bytes by offsets, because `email`'s feed parser copies a message several
times over: with `policy.compat32` a 70 MB message with a 50 MB attachment took 3.9 s and a
555 MB peak here (docs/parsing.md). The standard `email` package still does the fiddly parts of
the grammar: address lists (`getaddresses`), dates, and Content-Type/Disposition parameters
with RFC 2231 or odd quoting (a compat32 `Message`); a regex fast path takes the common simple
forms of both, held equal to the library by property tests. Only what the rules need is
decoded: header encoded-words (RFC 2047, with unknown charsets mapped or replaced), the text
bodies, XML parts and small attachments; big binary attachments are listed without their data.
Every irregularity becomes a short string in `defects`; `parse_error` is set only when nothing
usable came out.
"""

from __future__ import annotations

import binascii
import codecs
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime

import html2text

from bridge.models import Attachment, AtesToken, ParsedMessage
from bridge.parse.ates import find_tokens

__all__ = ["MimeLimits", "parse", "decode_words", "decode_text"]


@dataclass(frozen=True)
class MimeLimits:
    """Bounds that keep one hostile message from costing unbounded time or memory."""

    max_header_bytes: int = 256 * 1024   # one header block
    max_depth: int = 16                  # multipart nesting
    max_parts: int = 500                 # leaves and containers together
    max_text_bytes: int = 4 * 1024 * 1024  # decoded bytes kept per text part
    max_html_chars: int = 512 * 1024     # HTML handed to html2text (pure Python, ~1 s per MiB)
    max_attachment_bytes: int = 1024 * 1024  # larger attachments are listed without data
    max_xml_bytes: int = 4 * 1024 * 1024   # XML parts are cut just past this (xmlsafe then refuses)
    max_recipients: int = 1000
    max_defects: int = 50


DEFAULT_LIMITS = MimeLimits()

# -- charsets ----------------------------------------------------------------------------------

# Labels seen in real mail that Python does not know, or knows as a narrower charset than the
# senders actually used (GB2312 mail is GBK/GB18030 in practice; ISO-8859-1 mail is windows-1252,
# as every browser assumes).
_CHARSET_ALIASES = {
    "iso-gb2312": "gb18030", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030",
    "gb_2312-80": "gb18030", "euc-cn": "gb18030", "cn-gb": "gb18030",
    "ks_c_5601-1987": "cp949", "ks_c_5601": "cp949", "ks_c_5601-1989": "cp949", "euc-kr": "cp949",
    "unicode-1-1-utf-7": "utf-7", "x-unicode-1-1-utf-7": "utf-7", "unicode-2-0-utf-7": "utf-7",
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "iso_8859-1": "cp1252",
    "shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "x-sjis": "cp932",
    "iso-2022-jp": "iso2022_jp_2", "tis-620": "cp874", "windows-874": "cp874",
    "utf8": "utf-8", "unicode": "utf-8",
}
# Labels that mean "we do not know": decide from the bytes instead.
_UNKNOWN_LABELS = {"us-ascii", "ascii", "ansi_x3.4-1968", "x-unknown", "unknown", "unknown-8bit",
                   "x-user-defined", "default", "charset", "none", "7bit", "8bit"}
# Text codecs that must never see mail: quadratic (punycode, idna) or not charsets at all.
_REFUSED_CODECS = {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined",
                   "unicode-internal", "mbcs", "oem"}
_JIS_ESCAPES = (b"\x1b$B", b"\x1b$@", b"\x1b(J", b"\x1b$(D")


def _codec(label: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when the label is unusable."""
    if not label:
        return None
    name = label.strip().strip("\"'").lower()
    if not name or name in _UNKNOWN_LABELS:
        return None
    name = _CHARSET_ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):
        return None
    if info.name in _REFUSED_CODECS or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_text(data: bytes, charset: str | None) -> tuple[str, str | None]:
    """Decode body or header bytes; returns (text, defect or None). Never raises."""
    codec = _codec(charset)
    defect = None
    if charset and codec is None and charset.strip().strip("\"'").lower() not in _UNKNOWN_LABELS:
        defect = f"unknown charset {charset[:40]!r}"
    if codec is not None:
        try:
            return data.decode(codec, "replace"), defect
        except Exception:  # noqa: BLE001 - e.g. a codec that rejects the error handler
            defect = f"charset {charset[:40]!r} failed"
    if any(esc in data for esc in _JIS_ESCAPES):
        try:
            return data.decode("iso2022_jp_2", "replace"), defect
        except Exception:  # noqa: BLE001
            pass
    try:
        return data.decode("utf-8"), defect
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), defect


# -- RFC 2047 encoded-words --------------------------------------------------------------------

_ENCODED_WORD = re.compile(r"=\?([^?\s]{1,60})\?([QqBb])\?([^?]{0,2000}?)\?=")
_B64_CLEAN = re.compile(rb"[^A-Za-z0-9+/]")


def _b64decode(data: bytes | memoryview) -> tuple[bytes, bool]:
    """Lenient base64; returns (bytes, repaired?) — bad padding and junk are tolerated."""
    try:
        return binascii.a2b_base64(data), False
    except (binascii.Error, ValueError):
        clean = _B64_CLEAN.sub(b"", bytes(data))
        clean = clean[: len(clean) - len(clean) % 4] if len(clean) % 4 == 1 else clean
        clean += b"=" * (-len(clean) % 4)
        try:
            return binascii.a2b_base64(clean), True
        except (binascii.Error, ValueError):
            return b"", True


def decode_words(value: str) -> str:
    """Decode RFC 2047 encoded-words in unstructured text; unknown charsets never raise.

    Adjacent words in the same charset are decoded together, so a multi-byte character split
    across two words survives; whitespace between two encoded-words is dropped (RFC 2047 §6.2).
    """
    if "=?" not in value:
        return value
    pieces: list[str | tuple[str, bytearray]] = []
    pos = 0
    for match in _ENCODED_WORD.finditer(value):
        between = value[pos:match.start()]
        follows_word = bool(pieces) and isinstance(pieces[-1], tuple)
        if between and not (follows_word and between.isspace()):
            pieces.append(between)
        charset = match.group(1).split("*", 1)[0].lower()
        payload = match.group(3).encode("utf-8", "replace")
        if match.group(2) in "Qq":
            data = binascii.a2b_qp(payload, header=True)
        else:
            data, _ = _b64decode(payload + b"=" * (-len(payload) % 4))
        last = pieces[-1] if pieces else None
        if isinstance(last, tuple) and last[0] == charset and not between.strip():
            last[1].extend(data)
        else:
            pieces.append((charset, bytearray(data)))
        pos = match.end()
    pieces.append(value[pos:])
    return "".join(p if isinstance(p, str) else decode_text(bytes(p[1]), p[0])[0] for p in pieces)


# -- header blocks -----------------------------------------------------------------------------

_HEADER_START = re.compile(rb"[\x21-\x39\x3b-\x7e]+[ \t]*:")
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


def _read_headers(buf: bytes, start: int, end: int, limits: MimeLimits, top: bool,
                  defects: list[str]) -> _Headers:
    """Split a header block off buf[start:end], repairing what real mail gets wrong."""
    lines: list[tuple[int, bytes]] = []  # (offset of the line, line without EOL)
    pos = start
    body_start = end
    cap = min(end, start + limits.max_header_bytes)
    while pos < end:
        newline = buf.find(b"\n", pos, cap)
        if newline < 0:
            if cap < end:
                defects.append("header block too large; rest read as body")
                body_start = pos
                break
            newline = end - 1
        line = buf[pos:newline + 1].rstrip(b"\r\n")
        if not line:
            body_start = newline + 1
            break
        lines.append((pos, line))
        pos = newline + 1
    else:
        body_start = end

    if top and lines and lines[0][1].startswith(b"From "):
        lines.pop(0)  # mbox envelope line; not a header
    if top and lines and not _HEADER_START.match(lines[0][1]):
        # A line of junk before the headers (corpus mail068: "---- Original email message ----").
        for skip in (1, 2, 3):
            if skip < len(lines) and _HEADER_START.match(lines[skip][1]):
                defects.append(f"skipped {skip} line(s) before the headers")
                del lines[:skip]
                break

    kinds = [b"h" if _HEADER_START.match(line) else b"c" if line[:1] in b" \t" else b"s"
             for _, line in lines]
    last_header = max((i for i, k in enumerate(kinds) if k == b"h"), default=-1)
    fields: list[tuple[bytes, bytearray]] = []
    for i, (offset, line) in enumerate(lines):
        kind = kinds[i]
        if kind == b"h":
            name, _, value = line.partition(b":")
            fields.append((name.strip().lower(), bytearray(value.strip(b" \t"))))
        elif fields and (kind == b"c" or i < last_header):
            # A continuation, or a line without a colon while real headers still follow
            # (mail054: base64 continuation lines missing their indent): fold it in.
            if kind == b"s":
                defects.append("header line without indent or colon joined to the previous one")
            fields[-1][1].extend(b" " + line.strip(b" \t"))
        else:
            # No blank line between headers and body: the body starts here.
            defects.append("no blank line between headers and body" if fields or not top
                           else "no header block")
            body_start = offset
            break

    repaired: list[tuple[bytes, bytes]] = []
    for name, value in fields:
        value = bytes(value)
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
_SPACES = re.compile(r"\s+")


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
    return _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()


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


@dataclass(frozen=True)
class _MimeInfo:
    """What the walker needs from Content-Type and Content-Disposition."""

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

    def attempt(getter, fallback):  # type: ignore[no-untyped-def]
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


# -- parts -------------------------------------------------------------------------------------


@dataclass
class _Leaf:
    ctype: str
    charset: str | None
    cte: str
    filename: str | None
    attachment: bool  # Content-Disposition: attachment, or a filename
    body_candidate: bool  # False for the alternatives not chosen as the body
    start: int
    end: int


_MAX_BOUNDARY_MISSES = 1000
_UU = ("x-uuencode", "uuencode", "x-uue", "uue")
_KNOWN_CTE = {"7bit", "8bit", "binary", "base64", "quoted-printable", *_UU}


class _Walker:
    """Collects the leaves of the MIME tree by byte offsets into the raw message."""

    def __init__(self, buf: bytes, limits: MimeLimits, defects: list[str]) -> None:
        self.buf = buf
        self.limits = limits
        self.defects = defects
        self.leaves: list[_Leaf] = []
        self.count = 0

    def entity(self, headers: _Headers, end: int, depth: int, default: str,
               body_candidate: bool) -> None:
        self.count += 1
        if self.count > self.limits.max_parts:
            if self.count == self.limits.max_parts + 1:
                self.defects.append(f"more than {self.limits.max_parts} MIME parts; rest ignored")
            return
        info = _mime_info(headers.first(b"content-type"), headers.first(b"content-disposition"),
                          default)
        ctype = info.ctype
        cte = (headers.first(b"content-transfer-encoding") or b"").decode("latin-1").strip().lower()
        cte = cte.split(";", 1)[0].strip()
        if ctype.startswith("multipart/"):
            if depth >= self.limits.max_depth:
                self.defects.append("multipart nesting too deep; inner parts ignored")
                return
            if info.boundary and self.multipart(ctype, info.boundary, headers.body_start, end, depth):
                return
            self.defects.append("multipart without usable boundary; body read as text")
            ctype = "text/plain"
        if cte and cte not in _KNOWN_CTE:
            self.defects.append(f"unknown Content-Transfer-Encoding {cte[:30]!r}; taken as 8bit")
        filename = _fold(decode_words(_relatin(info.filename)))[:255] if info.filename else None
        disposition = info.disposition
        charset = info.charset
        self.leaves.append(_Leaf(ctype, charset, cte, filename or None,
                                 disposition == "attachment" or bool(filename),
                                 body_candidate, headers.body_start, end))

    def multipart(self, ctype: str, boundary: str, start: int, end: int, depth: int) -> bool:
        spans = self.split(boundary.encode("latin-1", "replace"), start, end)
        if not spans:
            return False
        # One more than the limit, so entity() still reports that the limit was hit.
        spans = spans[: self.limits.max_parts + 1]
        default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        chosen = self.choose_alternative(spans) if ctype == "multipart/alternative" else None
        for index, (part_start, part_end) in enumerate(spans):
            headers = _read_headers(self.buf, part_start, part_end, self.limits, False, self.defects)
            self.entity(headers, part_end, depth + 1, default, chosen is None or chosen == index)
        return True

    def choose_alternative(self, spans: list[tuple[int, int]]) -> int:
        """The alternative used as the body: the plain-text one, else the first."""
        for index, (part_start, part_end) in enumerate(spans):
            headers = _read_headers(self.buf, part_start, part_end, self.limits, False, [])
            if _mime_info(headers.first(b"content-type"), None, "text/plain").ctype == "text/plain":
                return index
        return 0

    def split(self, boundary: bytes, start: int, end: int) -> list[tuple[int, int]]:
        """Spans of the parts between `--boundary` lines; tolerant of a missing close line."""
        buf = self.buf
        delimiter = b"--" + boundary
        found: list[tuple[int, int]] = []  # (delimiter offset, offset after its line)
        closed = False
        pos = start
        misses = 0
        while True:
            if misses > _MAX_BOUNDARY_MISSES:
                # Many lines that merely start like the boundary: let the C regex engine skip
                # them instead of this loop (about 5x faster on such input).
                pattern = re.compile(b"^" + re.escape(delimiter) + rb"(--)?[ \t]*\r?(?:\n|\Z)", re.M)
                for match in pattern.finditer(buf, pos, end):
                    found.append((match.start(), match.end()))
                    if match.group(1):
                        closed = True
                        break
                break
            at = buf.find(delimiter, pos, end)
            if at < 0:
                break
            pos = at + len(delimiter)
            if at != start and buf[at - 1] != 0x0A:
                misses += 1
                continue  # not at the start of a line
            close = buf[pos:pos + 2] == b"--"
            rest = pos + 2 if close else pos
            newline = buf.find(b"\n", rest, min(end, rest + 200))
            line_end = newline if newline >= 0 else min(end, rest + 200)
            if (newline < 0 and line_end < end) or buf[rest:line_end].strip(b" \t\r"):
                misses += 1
                continue  # the "delimiter" runs on: a longer boundary, or text
            found.append((at, line_end + 1 if newline >= 0 else end))
            if close:
                closed = True
                break
        if not found or (closed and len(found) == 1):
            return []
        if not closed:
            self.defects.append("closing MIME boundary missing")
        spans = []
        for (_, part_start), (next_at, _) in zip(found, found[1:]):
            spans.append((part_start, _strip_eol(buf, part_start, next_at)))
        if not closed:
            spans.append((found[-1][1], end))
        return spans


def _strip_eol(buf: bytes, start: int, at: int) -> int:
    """The line break before a delimiter belongs to the delimiter (RFC 2046 §5.1.1)."""
    if at > start and buf[at - 1] == 0x0A:
        at -= 1
        if at > start and buf[at - 1] == 0x0D:
            at -= 1
    return at


def _uudecode(data: bytes) -> bytes:
    lines = data.splitlines()
    for index, line in enumerate(lines):
        if line.startswith(b"begin "):
            lines = lines[index + 1:]
            break
    out = bytearray()
    for line in lines:
        stripped = line.strip()
        if stripped == b"end":
            break
        if not stripped:
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Broken encoders pad lines wrongly; decode only the length the line announces.
            try:
                out += binascii.a2b_uu(line[: (((line[0] - 32) & 63) * 4 + 5) // 3])
            except (binascii.Error, IndexError):
                continue
    return bytes(out)


def _encoded_bound(cte: str, limit: int) -> int:
    """How many encoded bytes can hold at most about `limit` decoded ones (generously)."""
    if cte == "base64":
        return limit * 2 + 1024  # 4/3 expansion plus line breaks, even for short lines
    if cte == "quoted-printable":
        return limit * 3 + 3
    if cte in _UU:
        return limit * 2 + 1024
    return limit + 1


def _decode_part(buf: bytes, leaf: _Leaf, limit: int, defects: list[str]) -> tuple[bytes, bool]:
    """Transfer-decode at most about `limit` bytes of a part; returns (data, truncated?).

    Only a bounded prefix of the encoded text is touched (through a memoryview, not a copy), so
    a 50 MB part costs what its first `limit` bytes cost.
    """
    size = leaf.end - leaf.start
    need = _encoded_bound(leaf.cte, limit)
    partial = need < size
    if partial and leaf.cte in ("base64", *_UU):
        # Cut at a line end so no base64 quantum (or uu line) is split.
        newline = buf.rfind(b"\n", leaf.start, leaf.start + need)
        if newline > leaf.start:
            need = newline + 1 - leaf.start
    view = memoryview(buf)[leaf.start:leaf.start + min(need, size)]
    if leaf.cte == "base64":
        data, repaired = _b64decode(view)
        if repaired:
            defects.append("invalid base64 in a part; decoded what could be")
    elif leaf.cte == "quoted-printable":
        data = binascii.a2b_qp(view)
    elif leaf.cte in _UU:
        data = _uudecode(bytes(view))
    else:
        data = bytes(view)
    if len(data) > limit:
        return data[:limit], True
    return data, partial


def _too_big(leaf: _Leaf, limit: int) -> bool:
    """True when a part is certainly over `limit` decoded bytes: then it is not decoded at all."""
    return leaf.end - leaf.start > _encoded_bound(leaf.cte, limit)


# -- assembling the ParsedMessage --------------------------------------------------------------

_XML_START = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*<(?:\?xml|[A-Za-z_])")
_XML_DECL_ENCODING = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml[^>]{0,200}?encoding\s*=", re.I)
_XML_TYPES = {"text/xml", "application/xml"}
_HTML_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""", re.I)
_ANY_CHARSET = re.compile(rb"""(?i)charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")


def _html_to_text(html: str) -> str:
    converter = html2text.HTML2Text()
    converter.body_width = 0  # no re-wrapping: rules match phrases that must stay on one line
    converter.ignore_images = True
    converter.ignore_emphasis = True
    converter.unicode_snob = True
    return converter.handle(html).strip()


def _strip_leading_space(data: bytes) -> bytes:
    if data.startswith(b"\xef\xbb\xbf"):
        return b"\xef\xbb\xbf" + data[3:].lstrip(b" \t\r\n")
    return data.lstrip(b" \t\r\n")


def _is_xml_leaf(leaf: _Leaf) -> bool:
    return (leaf.ctype in _XML_TYPES or leaf.ctype.endswith("+xml")
            or (leaf.filename or "").lower().endswith(".xml"))


def _xml_bytes(data: bytes, charset: str | None) -> bytes:
    """XML without its own encoding declaration takes the MIME charset: re-encode to UTF-8."""
    codec = _codec(charset)
    if codec in (None, "utf-8", "ascii") or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return data
    if _XML_DECL_ENCODING.match(data):
        return data
    return data.decode(codec, "replace").encode("utf-8")


class _Builder:
    """Gathers the fields of one ParsedMessage; each step is guarded on its own."""

    def __init__(self, raw: bytes, limits: MimeLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.defects: list[str] = []
        self.fields: dict[str, object] = {}

    def guarded(self, what: str, step) -> None:  # type: ignore[no-untyped-def]
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one broken field must not lose the others
            self.defects.append(f"could not read {what}: {type(exc).__name__}")

    def build(self) -> ParsedMessage:
        self.top = _read_headers(self.raw, 0, len(self.raw), self.limits, True, self.defects)
        self.hint = _mime_info(self.top.first(b"content-type"), None, "text/plain").charset
        if self.hint is None:
            # Raw 8-bit headers (corpus mail015/046) are usually in the charset of the first
            # text part; a multipart's own Content-Type has none.
            found = _ANY_CHARSET.search(self.raw, 0, 65536)
            self.hint = found.group(1).decode("ascii") if found else None
        self.guarded("headers", self.headers)
        self.guarded("From", self.sender)
        self.guarded("recipients", self.recipients)
        self.guarded("Date", self.date)
        self.guarded("body", self.body)
        return self.finish()

    def text_of(self, name: bytes) -> str | None:
        value = self.top.first(name)
        return None if value is None else _header_text(value, self.hint)

    def headers(self) -> None:
        table: dict[str, list[str]] = {}
        for name, value in self.top.fields:
            key = name.decode("ascii", "replace")
            text = _header_text(value, self.hint)
            text = _fold(decode_words(text)) if _decodes_words(key) else _CONTROL.sub(" ", text).strip()
            table.setdefault(key, []).append(text)
        # A plain dict, not a read-only proxy: dataclasses.asdict, copy and pickle must work.
        self.fields["headers"] = {k: tuple(v) for k, v in table.items()}
        subject = table.get("subject")
        self.fields["subject"] = subject[0] if subject else ""
        message_id = table.get("message-id")
        if message_id and message_id[0]:
            bracketed = _MESSAGE_ID.search(message_id[0])
            self.fields["message_id"] = bracketed.group(0) if bracketed else message_id[0][:998]

    def sender(self) -> None:
        value = self.text_of(b"from")
        if value is None:
            return
        pairs = _addresses(value)
        if not pairs:
            self.defects.append("From has no address")
            return
        if len(pairs) > 1:
            self.defects.append("From names several addresses; the first is used")
        name, address = pairs[0]
        self.fields["sender"] = address
        self.fields["sender_name"] = _fold(decode_words(name))

    def recipients(self) -> None:
        found: dict[str, None] = {}
        for header in (b"to", b"cc"):
            for name, value in self.top.fields:
                if name == header:
                    for _, address in _addresses(_header_text(value, self.hint)):
                        if address and len(found) < self.limits.max_recipients:
                            found[address] = None
        self.fields["recipients"] = tuple(found)

    def date(self) -> None:
        value = self.text_of(b"date")
        if value is None:
            return
        try:
            parsed = parsedate_to_datetime(_fold(value))
        except Exception:  # noqa: BLE001 - ValueError, TypeError, OverflowError in the wild
            parsed = None
        if parsed is None:
            self.defects.append("invalid Date header")
            return
        if parsed.tzinfo is None:  # "-0000": UTC, local zone unknown (RFC 5322 §3.3)
            parsed = parsed.replace(tzinfo=timezone.utc)
        self.fields["date"] = parsed

    def body(self) -> None:
        walker = _Walker(self.raw, self.limits, self.defects)
        walker.entity(self.top, len(self.raw), 0, "text/plain", True)
        limits = self.limits
        plain: list[str] = []
        html: list[str] = []
        tokens: list[AtesToken] = []
        xml_parts: list[bytes] = []
        attachments: list[Attachment] = []
        for leaf in walker.leaves:
            is_text = leaf.ctype in ("text/plain", "text/html") and not leaf.attachment
            if is_text:
                data, cut = _decode_part(self.raw, leaf, limits.max_text_bytes, self.defects)
                if cut:
                    self.defects.append(f"{leaf.ctype} part cut at {limits.max_text_bytes} bytes")
                charset = leaf.charset
                if leaf.ctype == "text/html" and not charset:
                    meta = _HTML_META_CHARSET.search(data[:4096])
                    charset = meta.group(1).decode("ascii") if meta else None
                text, defect = decode_text(data, charset)
                if defect:
                    self.defects.append(defect)
                text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
                tokens.extend(find_tokens(text))
                if leaf.body_candidate:
                    (plain if leaf.ctype == "text/plain" else html).append(text)
                if leaf.ctype == "text/plain" and leaf.body_candidate and _XML_START.match(data):
                    # Mail bodies often start with a blank line; an XML declaration may not.
                    xml_parts.append(_xml_bytes(_strip_leading_space(data), leaf.charset))
                continue
            if _is_xml_leaf(leaf):
                data, cut = _decode_part(self.raw, leaf, limits.max_xml_bytes + 1, self.defects)
                if cut:
                    self.defects.append(f"XML part cut at {limits.max_xml_bytes + 1} bytes")
                data = _xml_bytes(data, leaf.charset)
                xml_parts.append(data)
                attachments.append(Attachment(leaf.filename, leaf.ctype, data))
                continue
            cut = _too_big(leaf, limits.max_attachment_bytes)
            if not cut:
                data, cut = _decode_part(self.raw, leaf, limits.max_attachment_bytes, self.defects)
            if cut:
                self.defects.append(
                    f"attachment {leaf.filename or leaf.ctype!s:.60} not kept: over "
                    f"{limits.max_attachment_bytes} bytes")
                data = b""
            attachments.append(Attachment(leaf.filename, leaf.ctype, data))
        if plain:
            self.fields["body"] = "\n\n".join(text.strip("\n") for text in plain)
        elif html:
            source = html[0]
            if len(source) > limits.max_html_chars:
                self.defects.append(f"HTML cut at {limits.max_html_chars} characters for conversion")
                source = source[: limits.max_html_chars]
            try:
                self.fields["body"] = _html_to_text(source)
            except Exception as exc:  # noqa: BLE001 - html2text on hostile markup
                self.defects.append(f"HTML could not be converted: {type(exc).__name__}")
        self.fields["ates"] = tuple(dict.fromkeys(tokens))  # the same token in text and HTML once
        self.fields["xml_parts"] = tuple(xml_parts)
        self.fields["attachments"] = tuple(attachments)

    def finish(self) -> ParsedMessage:
        defects = tuple(dict.fromkeys(self.defects))[: self.limits.max_defects]
        usable = self.top.fields or self.fields.get("body") or self.fields.get("attachments") \
            or self.fields.get("xml_parts")
        error = None if usable else "no headers and no readable body"
        return ParsedMessage(**self.fields, defects=defects, parse_error=error)  # type: ignore[arg-type]


def parse(raw: bytes, *, limits: MimeLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """Parse one raw message. Never raises; see the module docstring for what is decoded."""
    try:
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            return ParsedMessage(parse_error=f"input is {type(raw).__name__}, not bytes")
        if not raw or raw.isspace():  # not raw.strip(): that would copy a 50 MB message
            return ParsedMessage(parse_error="empty message")
        return _Builder(raw, limits).build()
    except Exception as exc:  # noqa: BLE001 - the daemon must never stop on one message
        return ParsedMessage(parse_error=f"parser failure: {type(exc).__name__}: {str(exc)[:120]}")
