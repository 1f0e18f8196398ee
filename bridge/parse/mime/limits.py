"""The bounds on one message's cost, shared by every stage of the MIME parser.

`MimeLimits` caps header block size, multipart nesting, part count and how much decoded text,
HTML, XML and attachment data is kept, so a hostile message costs bounded time and memory
(docs/parsing.md, "Limits"). It lives in its own module because the header reader, the walker
and the builder all take it, and none of them should have to import another just for it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MimeLimits:
    """Bounds that keep one hostile message from costing unbounded time or memory."""

    max_header_bytes: int = 256 * 1024   # one header block
    max_depth: int = 16                  # multipart nesting
    max_parts: int = 500                 # leaves and containers together
    max_text_bytes: int = 4 * 1024 * 1024  # decoded bytes kept per text part
    max_html_chars: int = 512 * 1024     # HTML handed to the HTML-to-text conversion
    max_body_chars: int = 1024 * 1024    # text of `body` kept (what rules and templates read)
    max_attachment_bytes: int = 1024 * 1024  # larger attachments are listed without data
    max_xml_bytes: int = 4 * 1024 * 1024   # XML parts are cut just past this (xmlsafe then refuses)
    max_recipients: int = 1000
    max_defects: int = 50


DEFAULT_LIMITS = MimeLimits()
