"""Secrets cut out of an original before it is forwarded, touching only the parts that hold one.

A skipped or unmatched alert is forwarded with its original attached, and that original may
carry the ATES token's `PW` or an XML transaction's `<password>` (issue 14). `redact` walks the
MIME tree by byte offsets (the parser's own walker: nothing is copied), decodes each text and
XML part, finds the secret values (`bridge.parse.secret_spans`) and replaces them with
`REPLACEMENT`; only a part that held a secret is re-encoded, in its own transfer encoding and
charset, so every other byte of the original stays as received. The result is a list of
segments — memoryview slices of the raw message and the re-encoded parts — that the forward
streams without ever joining them (a 60 MB original is not copied). Last, every known secret
value (clear or escaped) is searched in the raw bytes outside the re-encoded parts: in headers,
preambles or a part too large to decode, it is replaced in place.
"""

from __future__ import annotations

import base64
import binascii
import codecs
from dataclasses import dataclass
from typing import Iterable, Sequence, Union

from bridge.parse.mime.headers import _read_headers
from bridge.parse.mime.limits import DEFAULT_LIMITS
from bridge.parse.mime.walker import _decode_part, _Leaf, _Walker
from bridge.parse.secret_spans import secret_spans, variants

__all__ = ["REPLACEMENT", "Redaction", "redact"]

REPLACEMENT = "[secret removed by mailbridge]"
# Parts larger than this (encoded) are not decoded; the raw search still covers them. Text
# parts of alerts are kilobytes; this bounds the memory one forward costs.
SCAN_LIMIT = 16 * 1024 * 1024
_TEXTLIKE = ("text/", "application/xml", "application/json", "message/")
_REENCODABLE = {"", "7bit", "8bit", "binary", "base64", "quoted-printable"}

Segment = Union[bytes, memoryview]


@dataclass(frozen=True)
class Redaction:
    """The original as segments to send in order; `parts` re-encoded, `values` replaced."""

    segments: tuple[Segment, ...]
    size: int
    parts: int = 0
    values: int = 0

    @property
    def changed(self) -> bool:
        return self.values > 0


def _codec(charset: str | None) -> str:
    try:
        return codecs.lookup(charset or "utf-8").name
    except LookupError:
        return "utf-8"


def _text(data: bytes, charset: str | None) -> tuple[str, str]:
    """`data` as text that encodes back to exactly `data`, and the codec that does it."""
    for codec in (_codec(charset), "latin-1"):
        try:
            text = data.decode(codec, "surrogateescape")
            if text.encode(codec, "surrogateescape") == data:
                return text, codec
        except (UnicodeError, LookupError):
            continue
    return data.decode("latin-1"), "latin-1"


def _encode_body(data: bytes, cte: str, newline: bytes) -> bytes:
    if cte == "base64":
        return base64.encodebytes(data).rstrip(b"\n").replace(b"\n", newline)
    if cte == "quoted-printable":
        lf = data.replace(b"\r\n", b"\n")
        return binascii.b2a_qp(lf, istext=True).replace(b"\n", newline)
    return data


def _leaf_redaction(raw: bytes, leaf: _Leaf, known: Sequence[str]) -> tuple[bytes, int] | None:
    """The re-encoded body of `leaf` and the number of values replaced, or None if clean."""
    if leaf.end - leaf.start > SCAN_LIMIT or leaf.cte not in _REENCODABLE:
        return None
    textlike = leaf.ctype.startswith(_TEXTLIKE) or leaf.ctype.endswith(("+xml", "/xml"))
    data, cut = _decode_part(raw, leaf, leaf.end - leaf.start + 1, [])
    if cut:
        return None
    text, codec = _text(data, leaf.charset if textlike else "latin-1")
    spans = secret_spans(text, known)
    if not textlike:
        # A binary part is looked at byte for byte (latin-1): UTF-8 forms of the values.
        utf8 = [v.encode("utf-8", "surrogateescape").decode("latin-1") for v in known]
        spans = sorted(set(spans) | set(secret_spans(text, utf8)))
    if not spans:
        return None
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos:
            start = pos
        out.append(text[pos:start])
        out.append(REPLACEMENT)
        pos = max(pos, end)
    out.append(text[pos:])
    try:
        new = "".join(out).encode(codec, "surrogateescape")
    except UnicodeError:
        new = "".join(out).encode("utf-8", "surrogateescape")
    head = raw[leaf.start:min(leaf.end, leaf.start + 4096)]
    newline = b"\r\n" if b"\r\n" in head or b"\r\n" in raw[:4096] else b"\n"
    return _encode_body(new, leaf.cte, newline), len(spans)


def _raw_hits(raw: bytes, start: int, end: int, forms: Iterable[bytes]) -> list[tuple[int, int]]:
    hits: list[tuple[int, int]] = []
    for form in forms:
        at = raw.find(form, start, end)
        while at >= 0:
            hits.append((at, at + len(form)))
            at = raw.find(form, at + len(form), end)
    merged: list[tuple[int, int]] = []
    for a, b in sorted(hits):
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def redact(raw: bytes, known: Iterable[str] = ()) -> Redaction:
    """The original with every secret value replaced; see the module docstring."""
    secrets = sorted({s for s in known if s}, key=len, reverse=True)
    changes: list[tuple[int, int, bytes]] = []  # (start, end, replacement) in raw
    values = parts = 0
    try:
        defects: list[str] = []
        top = _read_headers(raw, 0, len(raw), DEFAULT_LIMITS, True, defects)
        walker = _Walker(raw, DEFAULT_LIMITS, defects)
        walker.entity(top, len(raw), 0, "text/plain", True)
        leaves = walker.leaves
    except Exception:  # noqa: BLE001 - an unreadable structure leaves the raw search below
        leaves = []
    for leaf in leaves:
        try:
            found = _leaf_redaction(raw, leaf, secrets)
        except Exception:  # noqa: BLE001 - hostile bytes: fall back to the raw search
            found = None
        if found is not None:
            changes.append((leaf.start, leaf.end, found[0]))
            values += found[1]
            parts += 1
    forms = sorted({f.encode("utf-8", "surrogateescape") for s in secrets for f in variants(s)},
                   key=len, reverse=True)
    gaps: list[tuple[int, int]] = []
    pos = 0
    for start, end, _ in sorted(changes):
        gaps.append((pos, start))
        pos = end
    gaps.append((pos, len(raw)))
    replacement = REPLACEMENT.encode()
    for start, end in gaps:
        for a, b in _raw_hits(raw, start, end, forms):
            changes.append((a, b, replacement))
            values += 1
    view = memoryview(raw)
    segments: list[Segment] = []
    pos = 0
    for start, end, new in sorted(changes):
        if start > pos:
            segments.append(view[pos:start])
        segments.append(new)
        pos = end
    if pos < len(raw):
        segments.append(view[pos:])
    return Redaction(tuple(segments), sum(len(s) for s in segments), parts, values)
