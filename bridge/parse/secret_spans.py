"""Where the secrets are in a text: ATES `PW` values, XML transaction passwords, known values.

Used to cut secrets out of a forwarded original (docs/smtp.md, "Secrets in forwards"). The
spans cover the value only, so the token or the transaction stays readable around it. Written
as tolerant as `bridge.parse.ates` reads tokens: plain tags, tags HTML-escaped once, straight
or typographic quotes; over-matching costs a harmless replacement, under-matching a leak, so
the patterns do not require the PW to sit inside an `<Autotask>` block. Known secret values
(the configured passwords, the PW values found) are also found in their HTML-escaped, URL- and
JSON-encoded forms.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from typing import Iterable

__all__ = ["secret_spans", "variants", "MIN_SECRET_CHARS"]

# A value shorter than this is not searched for on its own: replacing every "abc" in a mail
# would mangle it. The PW and <password> patterns still find short values by position.
MIN_SECRET_CHARS = 4

_CURLY = "“”„‟″‘’‚‛"
_WS = r"[ \t\r\n\xa0]*"
_VALUE = (r"""\bname\s*=\s*(?:"(?P<v1>[^"]*)"|'(?P<v2>[^']*)'|"""
          rf"""[{_CURLY}](?P<v3>[^{_CURLY}"'<>]*)[{_CURLY}"']|(?P<v4>[^\s"'<>/{_CURLY}]+))""")
_PW_TAG = re.compile(rf"<{_WS}PW(?=[\s/>])(?P<attrs>[^<>]{{0,2048}})>", re.IGNORECASE)
_VALUE_RE = re.compile(_VALUE, re.IGNORECASE)
# The same, HTML-escaped once: &lt;PW name=&quot;value&quot;/&gt;
_PW_ESCAPED = re.compile(rf"&lt;{_WS}PW(?=[\s/&])(?P<attrs>.{{0,2048}}?)&gt;",
                         re.IGNORECASE | re.DOTALL)
_ESC_Q = r"(?:&quot;|&#0*34;|&#x0*22;)"
_ESC_A = r"(?:&apos;|&#0*39;|&#x0*27;)"
_ESC_VALUE_RE = re.compile(
    rf"""\bname\s*=\s*(?:{_ESC_Q}(?P<v1>.*?){_ESC_Q}|{_ESC_A}(?P<v2>.*?){_ESC_A}|"""
    rf""""(?P<v3>[^"]*)"|'(?P<v4>[^']*)'|[{_CURLY}](?P<v5>[^{_CURLY}]*)[{_CURLY}]|"""
    rf"""(?P<v6>[^\s"'&<>/{_CURLY}]+))""", re.IGNORECASE | re.DOTALL)
# An XML transaction's <password>, as markup or escaped once; a namespace prefix is allowed.
_XML_PASSWORD = re.compile(
    r"<(?P<p>(?:[\w.-]+:)?password)\b[^<>]{0,200}>(?P<v>.{0,4096}?)</(?P=p)\s*>",
    re.IGNORECASE | re.DOTALL)
_XML_PASSWORD_ESCAPED = re.compile(
    r"&lt;(?P<p>(?:[\w.-]+:)?password)\b.{0,200}?&gt;(?P<v>.{0,4096}?)&lt;/(?P=p)\s*&gt;",
    re.IGNORECASE | re.DOTALL)


def variants(secret: str) -> set[str]:
    """The forms a secret value takes in mail: clear, HTML/XML-escaped, URL- and JSON-encoded."""
    forms = {secret, html.escape(secret), html.escape(secret, quote=False),
             secret.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
             .replace('"', "&quot;").replace("'", "&apos;"),
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             urllib.parse.quote(secret), json.dumps(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


def _group_span(match: re.Match[str], offset: int) -> tuple[int, int] | None:
    for name, value in match.groupdict().items():
        if name.startswith("v") and value is not None:
            start, end = match.span(name)
            return (offset + start, offset + end) if end > start else None
    return None


def secret_spans(text: str, known: Iterable[str] = ()) -> list[tuple[int, int]]:
    """Sorted, merged (start, end) spans of every secret value in `text`."""
    spans: list[tuple[int, int]] = []
    for tag in _PW_TAG.finditer(text):
        value = _VALUE_RE.search(tag.group("attrs"))
        if value is not None:
            found = _group_span(value, tag.start("attrs"))
            if found:
                spans.append(found)
    if "&" in text:
        for tag in _PW_ESCAPED.finditer(text):
            value = _ESC_VALUE_RE.search(tag.group("attrs"))
            if value is not None:
                found = _group_span(value, tag.start("attrs"))
                if found:
                    spans.append(found)
        for element in _XML_PASSWORD_ESCAPED.finditer(text):
            if element.end("v") > element.start("v"):
                spans.append(element.span("v"))
    for element in _XML_PASSWORD.finditer(text):
        if element.end("v") > element.start("v"):
            spans.append(element.span("v"))
    forms = set().union(*(variants(s) for s in known if s)) if known else set()
    for form in forms:
        start = text.find(form)
        while start >= 0:
            spans.append((start, start + len(form)))
            start = text.find(form, start + len(form))
    return _merge(spans)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out
