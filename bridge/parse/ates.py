"""Finding ATES `<Autotask>` tokens (seed 001) in the text or HTML of an alert mail.

Monitoring tools paste the token into plain text, into HTML as real tags, or HTML-escaped
(`&lt;Autotask&gt;`), and the vendor's own documentation writes it with curly quotes. A strict
XML parser would refuse most real tokens, so this module reads them with bounded regular
expressions instead: the text between `<Autotask>` and `</Autotask>` (at most a few KiB) is
scanned for the six known elements and their `name`/`source` attributes. Nothing is ever
expanded except the five predefined XML entities and numeric character references, and tags
that are not token elements (`<br>`, `<span>`) are ignored. Every token found is returned in
document order; which one counts is the caller's rule (docs/parsing.md: the first complete one).
"""

from __future__ import annotations

import html
import re
from dataclasses import replace
from typing import Iterator

from bridge.models import AtesToken, TokenRef

__all__ = ["DTD_PROBLEM", "cut_tokens", "find_tokens"]

# A token in a document that declares a DTD or entities is refused, never trusted: its values
# are whatever the entity trick makes them (tokens.py turns this problem into a rejection).
DTD_PROBLEM = "the token is inside a document with a DOCTYPE or entity declarations"

MAX_TOKEN_CHARS = 16 * 1024  # inner text of one token; real tokens are a few hundred bytes
MAX_VALUE_CHARS = 512
MAX_TOKENS = 50

_WS = r"[ \t\r\n\xa0]*"
_OPEN = re.compile(rf"(?:<|&lt;){_WS}autotask{_WS}(?:>|&gt;)", re.IGNORECASE)
_CLOSE = re.compile(rf"(?:<|&lt;){_WS}/{_WS}autotask{_WS}(?:>|&gt;)", re.IGNORECASE)

# Element names as the seed spells them, matched case-insensitively.
_ELEMENTS = {"id": "ID", "pw": "PW", "customerid": "CustomerID", "deviceid": "DeviceID",
             "alertid": "AlertID", "ticketid": "TicketID"}
_REF_ELEMENTS = ("customerid", "deviceid", "alertid", "ticketid")
_ELEMENT = re.compile(
    rf"<{_WS}(ID|PW|CustomerID|DeviceID|AlertID|TicketID)(?=[\s/>])([^<>]{{0,2048}})>",
    re.IGNORECASE,
)
# Quotes: straight double or single, or any of the typographic quotes word processors put in
# (the seed itself uses ” on both sides). A straight-quoted value may contain the other quote.
_CURLY = "“”„‟″‘’‚‛"
_ATTR = re.compile(
    r"""([A-Za-z_][\w.:-]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|"""
    rf"""[{_CURLY}]([^{_CURLY}"'<>]*)[{_CURLY}"']|([^\s"'<>/{_CURLY}]+))"""
)
_XML_REF = re.compile(r"&(lt|gt|amp|quot|apos|#[0-9]{1,7}|#x[0-9A-Fa-f]{1,6});")
_XML_NAMED = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# `<!ENTITY`, or a DOCTYPE other than HTML's plain `<!DOCTYPE html ...>` (an internal subset
# `[` always counts), written as markup or HTML-escaped.
_DECLARATION = re.compile(
    r"(?:<|&lt;)!\s*(?:ENTITY|DOCTYPE(?!\s+html\b[^\[<>]*(?:>|&gt;)))", re.IGNORECASE)
# A PW element anywhere, inside a token or stray (a token cut short has no closing tag).
_PW_ELEMENT = re.compile(rf"(?:<|&lt;){_WS}PW\b[^<>]{{0,2048}}?(?:>|&gt;)", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def _xml_unescape(value: str) -> str:
    """Predefined entities and character references only: no entity is ever expanded."""

    def one(match: re.Match[str]) -> str:
        ref = match.group(1)
        if ref in _XML_NAMED:
            return _XML_NAMED[ref]
        try:
            code = int(ref[2:], 16) if ref[1] in "xX" else int(ref[1:])
            return chr(code) if 0 < code < 0x110000 and not 0xD800 <= code < 0xE000 else "\ufffd"
        except ValueError:
            return "\ufffd"

    return _XML_REF.sub(one, value)


def _clean(value: str) -> str:
    value = _SPACES.sub(" ", _CONTROL.sub(" ", _xml_unescape(value))).strip()
    return value


def _spans(text: str) -> Iterator[tuple[str, bool]]:
    """Yield (inner text, escaped?) for each <Autotask>…</Autotask>, in order.

    Each closing tag pairs with the last opening tag before it (and after the previous pair),
    so a stray "<Autotask>" in prose does not swallow the real token that follows. Linear in
    the text: both tag lists are found in one pass each.
    """
    opens = [(m.start(), m.end(), m.group(0)[0] == "&") for m in _OPEN.finditer(text)]
    if not opens:
        return
    i = 0
    consumed_to = 0
    for close in _CLOSE.finditer(text):
        last = None
        while i < len(opens) and opens[i][1] <= close.start():
            if opens[i][0] >= consumed_to:
                last = opens[i]
            i += 1
        if last is None:
            continue
        consumed_to = close.end()
        inner = text[last[1]:close.start()]
        if len(inner) <= MAX_TOKEN_CHARS:
            yield inner, last[2]


def _parse_token(inner: str, escaped: bool) -> AtesToken | None:
    if escaped:
        # The whole token was HTML-escaped once; undo exactly that one level.
        inner = html.unescape(inner)
    values: dict[str, tuple[str | None, str | None]] = {}
    problems: list[str] = []
    for element in _ELEMENT.finditer(inner):
        key = element.group(1).lower()
        label = _ELEMENTS[key]
        attrs: dict[str, str] = {}
        for attr in _ATTR.finditer(element.group(2)):
            name = attr.group(1).lower()
            raw = next(g for g in attr.groups()[1:] if g is not None)
            attrs.setdefault(name, raw)
        if key in values:
            problems.append(f"{label} appears more than once; the first counts")
            continue
        name = _clean(attrs["name"]) if "name" in attrs else None
        source = _clean(attrs["source"]) if "source" in attrs else None
        if name is not None and len(name) > MAX_VALUE_CHARS:
            problems.append(f"{label} name is longer than {MAX_VALUE_CHARS} characters; cut")
            name = name[:MAX_VALUE_CHARS]
        if source is not None and len(source) > MAX_VALUE_CHARS:
            problems.append(f"{label} source is longer than {MAX_VALUE_CHARS} characters; cut")
            source = source[:MAX_VALUE_CHARS]
        if not name:
            problems.append(f"{label} has no name attribute" if name is None
                            else f"{label} has an empty name")
            name = None
        if key in _REF_ELEMENTS and name is not None and not source:
            problems.append(f"{label} has no source attribute" if source is None
                            else f"{label} has an empty source")
            source = None
        values[key] = (name, source)
    if not values:
        return None  # "<Autotask></Autotask>" in prose is not a token

    def ref(key: str) -> TokenRef | None:
        name, source = values.get(key, (None, None))
        return TokenRef(name=name, source=source) if name is not None else None

    return AtesToken(
        id=values.get("id", (None, None))[0],
        pw=values.get("pw", (None, None))[0],
        customer_id=ref("customerid"),
        device_id=ref("deviceid"),
        alert_id=ref("alertid"),
        ticket_id=ref("ticketid"),
        problems=tuple(problems),
    )


def find_tokens(text: str) -> tuple[AtesToken, ...]:
    """Every ATES token in `text` (plain text or HTML source), in document order.

    Never raises: anything that is not a readable token is skipped. A token whose elements are
    all missing is not returned; missing attributes are listed in the token's `problems`.
    """
    try:
        # str.lower() + `in` is ten times faster than a case-insensitive regex search, and
        # almost no mail mentions Autotask at all.
        if not isinstance(text, str) or "autotask" not in text.lower():
            return ()
        tokens: list[AtesToken] = []
        declared = _DECLARATION.search(text) is not None
        for inner, escaped in _spans(text):
            token = _parse_token(inner, escaped)
            if token is not None and declared:
                token = replace(token, problems=(DTD_PROBLEM, *token.problems))
            if token is not None:
                tokens.append(token)
                if len(tokens) >= MAX_TOKENS:
                    break
        return tuple(tokens)
    except Exception:  # noqa: BLE001 - a token is optional; a bug here must not stop parsing
        return ()


def cut_tokens(text: str, secrets: tuple[str, ...] = ()) -> str:
    """`text` without its ATES tokens: every <Autotask>...</Autotask> span (plain or
    HTML-escaped), every stray PW element, and every occurrence of a secret (the PW values)
    is replaced by "[ATES token removed]" / "[redacted]". Templates see only this text."""
    if not isinstance(text, str):
        return ""
    if "autotask" in text.lower() or "pw" in text.lower():
        spans = [(m.start(), m.end()) for m in _OPEN.finditer(text)]
        closes = [(m.start(), m.end()) for m in _CLOSE.finditer(text)]
        out: list[str] = []
        pos = 0
        for start, _ in spans:
            if start < pos:
                continue
            end = next((c_end for c_start, c_end in closes if c_start >= start), None)
            if end is None:
                break
            out.append(text[pos:start])
            out.append("[ATES token removed]")
            pos = end
        out.append(text[pos:])
        text = _PW_ELEMENT.sub("[ATES password removed]", "".join(out))
    for secret in secrets:
        if secret and len(secret.strip()) >= 4:
            for form in {secret, secret.strip(), html.escape(secret.strip())}:
                text = text.replace(form, "[redacted]")
    return text
