"""The MIME structure walk: leaves of the multipart tree as byte spans, and their decoding.

`_Walker` finds every leaf part by offsets into the raw message: multipart bodies are cut at
their `--boundary` lines with `bytes.find` (tolerating a missing close line), nothing is copied,
and each leaf is a `_Leaf` holding its (start, end) span plus what its headers say. Decoding is
deferred to `_decode_part`, which transfer-decodes (base64, quoted-printable, uuencode) only a
bounded prefix of a span through a memoryview, so a 50 MB attachment costs what its first
`limit` bytes cost; `_too_big` lets the builder skip a part without decoding it at all.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

from bridge.parse.mime.charsets import _b64decode, decode_words
from bridge.parse.mime.headers import (_fold, _Headers, _mime_info, _MimeInfo, _read_headers,
                                      _relatin)
from bridge.parse.mime.limits import MimeLimits

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
               body_candidate: bool, info: _MimeInfo | None = None) -> None:
        """`info`: this entity's `_mime_info`, when the caller has read it already."""
        self.count += 1
        if self.count > self.limits.max_parts:
            if self.count == self.limits.max_parts + 1:
                self.defects.append(f"more than {self.limits.max_parts} MIME parts; rest ignored")
            return
        if info is None:
            info = _mime_info(headers.first(b"content-type"),
                              headers.first(b"content-disposition"), default)
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
