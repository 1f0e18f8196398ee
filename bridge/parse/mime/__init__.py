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
usable came out. The work is split by stage: `charsets` (labels, RFC 2047), `headers` (header
blocks, addresses, parameters), `walker` (the structure on the raw bytes, transfer decodings)
and `builder` (the fields of the `ParsedMessage`); `limits` holds `MimeLimits`.
"""

from __future__ import annotations

from bridge.models import ParsedMessage
from bridge.parse.mime.builder import _Builder
from bridge.parse.mime.charsets import decode_text, decode_words
# Private, re-exported for the property tests that hold the regex fast paths equal to `email`.
from bridge.parse.mime.headers import _addresses, _addresses_general, _mime_info  # noqa: F401
from bridge.parse.mime.limits import DEFAULT_LIMITS, MimeLimits

__all__ = ["MimeLimits", "parse", "decode_words", "decode_text"]


def parse(raw: bytes, *, limits: MimeLimits = DEFAULT_LIMITS,
          html_alternative: bool = True) -> ParsedMessage:
    """Parse one raw message. Never raises; see the module docstring for what is decoded.
    `html_alternative=False`: the HTML alternative beside a plain body is converted only when
    the plain body could be a stub (`html_body` stays "" otherwise; builder.py)."""
    try:
        if isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        if not isinstance(raw, bytes):
            return ParsedMessage(parse_error=f"input is {type(raw).__name__}, not bytes")
        if not raw or raw.isspace():  # not raw.strip(): that would copy a 50 MB message
            return ParsedMessage(parse_error="empty message")
        return _Builder(raw, limits, html_alternative).build()
    except Exception as exc:  # noqa: BLE001 - the daemon must never stop on one message
        return ParsedMessage(parse_error=f"parser failure: {type(exc).__name__}: {str(exc)[:120]}")
