"""Stored mail shown to people (`quarantine show`, the dashboard) through the pipeline's decoder.

The views used to re-read stored mail with the standard `email` package, which follows the
labels a sender wrote: charset `idna` or `undefined` raised UnicodeError, 1,000 nested
multiparts raised RecursionError and a 400 KB body labelled `punycode` took 35 s (issue 13).
These functions use the same bounded reader as `parse` instead: header blocks and the MIME
walk on byte offsets (nesting cut at `max_depth`, parts at `max_parts`), transfer decodings of
bounded prefixes, and only the codecs `charsets` allows. They never raise.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.parse.mime.charsets import decode_text, decode_words
from bridge.parse.mime.headers import _CONTROL, _decodes_words, _fold, _header_text, _mime_info, \
    _read_headers
from bridge.parse.mime.limits import DEFAULT_LIMITS, MimeLimits
from bridge.parse.mime.walker import _decode_part, _Walker

_TEXT_TYPES = ("text/", "application/xml", "application/json")


@dataclass(frozen=True)
class PartView:
    content_type: str
    filename: str | None
    size: int            # bytes of the part as stored (before transfer decoding)
    text: str | None     # decoded text of a text part (a bounded prefix)
    truncated: bool      # the part's data was cut before decoding


def _name(lower: bytes) -> str:
    return "-".join(w.capitalize() for w in lower.decode("ascii", "replace").split("-"))


def header_fields(raw: bytes | None, limits: MimeLimits = DEFAULT_LIMITS) -> list[tuple[str, str]]:
    """The top header block, in order: names capitalised, values unfolded and decoded where
    the parser decodes them (encoded-words stay literal in address and trace headers)."""
    if not raw:
        return []
    try:
        top = _read_headers(raw, 0, len(raw), limits, True, [])
        hint = _mime_info(top.first(b"content-type"), None, "text/plain").charset
        out = []
        for lower, value in top.fields:
            key = lower.decode("ascii", "replace")
            text = _header_text(value, hint)
            text = _fold(decode_words(text)) if _decodes_words(key) else _fold(_CONTROL.sub(" ", text))
            out.append((_name(lower), text))
        return out
    except Exception:  # noqa: BLE001 - a view must show what it can, never a traceback
        return []


def part_views(raw: bytes, max_chars: int, limits: MimeLimits = DEFAULT_LIMITS) -> list[PartView]:
    """The leaves of the message: type, file name, size, and for text parts their decoded text.
    Together the parts decode about `max_chars` characters (later parts get what is left, plus
    a margin so the caller can redact before it cuts)."""
    try:
        defects: list[str] = []
        top = _read_headers(raw, 0, len(raw), limits, True, defects)
        walker = _Walker(raw, limits, defects)
        walker.entity(top, len(raw), 0, "text/plain", True)
    except Exception:  # noqa: BLE001
        return []
    parts: list[PartView] = []
    budget = max_chars
    for leaf in walker.leaves:
        text: str | None = None
        truncated = False
        if leaf.ctype.startswith(_TEXT_TYPES) or leaf.ctype.endswith("+xml"):
            # Four bytes per character at most, plus room for the caller's redaction margin.
            want = min(limits.max_text_bytes, 4 * budget + 16384)
            try:
                data, cut = _decode_part(raw, leaf, want, defects)
                text, _ = decode_text(data, leaf.charset)
            except Exception:  # noqa: BLE001
                data, cut, text = b"", False, "(this part could not be decoded)"
            text = text.replace("\r\n", "\n").replace("\x00", "")
            truncated = cut
            budget = max(0, budget - len(text))
        parts.append(PartView(leaf.ctype, leaf.filename, leaf.end - leaf.start, text, truncated))
    return parts
