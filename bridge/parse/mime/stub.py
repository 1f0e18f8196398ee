"""Is the text/plain part a stub that only points at its HTML alternative?

Some senders put the real content only in the HTML part and a placeholder in text/plain ("This
is an HTML message; use an HTML mail reader", "View this email in your browser"). v1 rules
always read the text part; v2 rules with `body = "auto"` read the HTML part's text instead
when this says the text is a stub (docs/parsing.md, "Body choice"). The test is cheap: lengths
and one regex over the start of the text part, never over the HTML.
"""

from __future__ import annotations

import re

STUB_CHARS = 40  # a text part shorter than this (white space collapsed) is a stub
MIN_EXTRA_CHARS = 100  # the HTML's text must be at least this much longer, and twice as long
_HEAD_CHARS = 2000  # the stub phrases are looked for in this much of the text part

_STUB_PHRASES = re.compile(
    r"\bhtml[- ]?(?:capable|compatible|enabled|fähig\w*)?[- ]?(?:e-?mail|mail)?[- ]?"
    r"(?:reader|viewer|client|program|programm)\b"
    r"|\bview (?:this|the) (?:e-?mail|message|newsletter|alert|report) "
    r"(?:online|in (?:your|a) (?:web )?browser)"
    r"|\b(?:does not|doesn't|cannot|can't|unable to) (?:support|display|show|read) html\b"
    r"|\b(?:this|the) (?:e-?mail|message) (?:is|was|has been) (?:sent |written |formatted )?"
    r"(?:in|as) html\b"
    r"|\bim (?:web)?browser (?:anzeigen|öffnen|ansehen)",
    re.IGNORECASE)


def could_be_stub(text: str) -> bool:
    """The half of `text_is_stub` that reads only the text part: False means no HTML
    alternative can make it a stub, so its text need not be converted to know."""
    head = " ".join(text[:_HEAD_CHARS].split())
    size = len(head) if len(text) <= _HEAD_CHARS else len(text)
    return size < STUB_CHARS or _STUB_PHRASES.search(head) is not None


def text_is_stub(text: str, html_text: str) -> bool:
    """True when `html_text` carries substantially more than `text` and `text` is short or
    says it is only a pointer to the HTML version."""
    head = " ".join(text[:_HEAD_CHARS].split())
    size = len(head) if len(text) <= _HEAD_CHARS else len(text)
    # Only lengths are compared: splitting the whole HTML text would copy it once more.
    rich = len(html_text)
    if rich < 2 * size or rich - size < MIN_EXTRA_CHARS:
        return False
    return size < STUB_CHARS or _STUB_PHRASES.search(head) is not None
