"""Assembling the `ParsedMessage` from the header block and the walker's leaves.

`_Builder` reads each field on its own guard (one broken field must not lose the others):
headers with encoded-words decoded where that is safe, sender, recipients, date, and the body
— inline text/plain parts joined, else the first text/html part through html-text; beside a
plain body, the first HTML part's text too (`html_body`, and whether the text is a stub; with
`html_alternative=False` only when the text part could be a stub: a rule set without `body =
"html"` rules reads it only then, and converting it was a tenth of a worker's time) — together
with the ATES tokens of every inline text part, the XML transaction candidates (re-encoded to
UTF-8 when the MIME charset says so) and the attachments, big ones listed without their data.
Its `finish` bounds the defects and sets `parse_error` only when nothing usable came out.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from email.utils import parsedate_to_datetime
from typing import Callable


from bridge.models import Attachment, AtesToken, ParsedMessage
from bridge.parse.ates import find_tokens
from bridge.parse.mime.charsets import _codec, decode_text, decode_words
from bridge.parse.mime.headers import (
    _CONTROL,
    _addresses,
    _from_mailbox,
    _decodes_words,
    _fold,
    _header_text,
    _mime_info,
    _read_headers,
)
from bridge.parse.mime.limits import MimeLimits
from bridge.parse.mime.stub import could_be_stub, text_is_stub
from bridge.parse.mime.walker import _decode_part, _Leaf, _too_big, _Walker

# -- assembling the ParsedMessage --------------------------------------------------------------

_XML_START = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*<(?:\?xml|[A-Za-z_])")
_XML_DECL_ENCODING = re.compile(rb"^(?:\xef\xbb\xbf)?[ \t\r\n]*<\?xml[^>]{0,200}?encoding\s*=", re.I)
_XML_TYPES = {"text/xml", "application/xml"}
_HTML_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""", re.I)
_ANY_CHARSET = re.compile(rb"""(?i)charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""")
_MESSAGE_ID = re.compile(r"<[^<>\s]{1,990}>")


# The date form nearly all mail uses (RFC 5322 §3.3, with an optional comment after the zone).
_DATE = re.compile(r"(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), )?([0-9]{1,2}) "
                   r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([1-9][0-9]{3}) "
                   r"([0-9]{2}):([0-9]{2}):([0-9]{2}) (?:([+-])([0-9]{4})|GMT|UTC?)"
                   r"(?: \([^()]*\))?")
_MONTHS = {name: n for n, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}


def _parse_date(text: str) -> datetime:
    """`parsedate_to_datetime(text)`, its result for `_DATE`'s form computed directly: the
    library splits and tries a dozen layouts, a few per cent of a worker's time. The same
    values, the same arithmetic (an offset's minutes are not range-checked, "-0000" is a
    naive time) and the same exceptions from `datetime` (tests/test_parse_date.py)."""
    m = _DATE.fullmatch(text)
    if m is None:
        return parsedate_to_datetime(text)
    day, month, year, hour, minute, second, sign, offset = m.groups()
    seconds = 0
    if offset is not None:
        seconds = int(offset[:2]) * 3600 + int(offset[2:]) * 60
        if sign == "-":
            if not seconds:
                return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute),
                                int(second))
            seconds = -seconds
    return datetime(int(year), _MONTHS[month], int(day), int(hour), int(minute), int(second),
                    tzinfo=timezone(timedelta(seconds=seconds)))


def _html_to_text(html: str, defects: list[str]) -> str:
    """Visible text of HTML in linear time (docs/parsing.md, "HTML to text").

    libxml2 builds the tree (C, linear; its nesting limit of 256 stops the tree there, and the
    defect says so) and html-text walks it with `iterwalk` (no recursion), so deeply nested
    lists cost milliseconds where html2text was quadratic."""
    # Imported here: only the worker processes convert HTML, and lxml with html-text costs
    # the daemon ~7 MiB it would never use (issue 13's memory bar sums every process).
    import html_text
    import lxml.etree
    import lxml.html

    parser = lxml.html.HTMLParser(recover=True, encoding="utf-8")
    data = html.replace("\x00", "").strip().encode("utf-8", "replace") or b"<html/>"
    root = lxml.etree.fromstring(data, parser=parser)
    if any("Excessive depth" in e.message for e in parser.error_log):
        defects.append("HTML nested deeper than 256 elements; the deeper text is not read")
    if root is None:
        return ""
    return str(html_text.extract_text(root)).strip()


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


# Header names as text, and whether their encoded-words are decoded: the same few dozen names
# in every message, so worked out once per worker. Bounded: only short names are kept, and
# only so many (a message may invent any number of long ones).
_NAMES: dict[bytes, tuple[str, bool]] = {}
_NAMES_MAX, _NAME_MAX_BYTES = 1024, 64


def _name_info(name: bytes) -> tuple[str, bool]:
    info = _NAMES.get(name)
    if info is None:
        key = name.decode("ascii", "replace")
        info = (key, _decodes_words(key))
        if len(name) <= _NAME_MAX_BYTES and len(_NAMES) < _NAMES_MAX:
            _NAMES[name] = info
    return info


class _Builder:
    """Gathers the fields of one ParsedMessage; each step is guarded on its own."""

    def __init__(self, raw: bytes, limits: MimeLimits, html_alternative: bool = True) -> None:
        self.raw = raw
        self.limits = limits
        self.html_alternative = html_alternative
        self.defects: list[str] = []
        self.fields: dict[str, object] = {}

    def guarded(self, what: str, step: Callable[[], object]) -> None:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - one broken field must not lose the others
            self.defects.append(f"could not read {what}: {type(exc).__name__}")

    def build(self) -> ParsedMessage:
        self.top = _read_headers(self.raw, 0, len(self.raw), self.limits, True, self.defects)
        # The top entity's Content-Type, read once: the walker's own reading is the same one
        # unless a Content-Disposition comes into it.
        self.top_info = _mime_info(self.top.first(b"content-type"), None, "text/plain")
        self.hint = self.top_info.charset
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
        trace: list[tuple[str, str]] = []
        for name, value in self.top.fields:
            key, decodes = _name_info(name)
            text = _header_text(value, self.hint)
            text = _fold(decode_words(text)) if decodes else _CONTROL.sub(" ", text).strip()
            table.setdefault(key, []).append(text)
            if key in ("received", "authentication-results"):
                trace.append((key, text))
        self.fields["trace"] = tuple(trace)
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
        mailbox = _from_mailbox(value, pairs)
        if mailbox is None:
            self.defects.append("From has no address")
            return
        if len(pairs) > 1:
            self.defects.append("From names several addresses; the first mailbox is used")
        name, address = mailbox
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
            parsed = _parse_date(_fold(value))
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
        shared = self.top_info if self.top.first(b"content-disposition") is None else None
        walker.entity(self.top, len(self.raw), 0, "text/plain", True, shared)
        limits = self.limits
        plain: list[str] = []
        html: list[str] = []
        tokens: list[AtesToken] = []
        xml_parts: list[bytes] = []
        attachments: list[Attachment] = []
        first_html: str | None = None
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
                elif leaf.ctype == "text/html" and first_html is None:
                    first_html = text  # the HTML alternative beside the plain text
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
            joined = self.fields["body"] = "\n\n".join(text.strip("\n") for text in plain)
            source = html[0] if html else first_html
            if source is not None and (self.html_alternative or could_be_stub(joined)):
                # The HTML alternative's text, for rules that choose it (`body = "html"` or a
                # stub text part under "auto"). v1 never reads it: its problems are not defects.
                converted = self.html_text(source, [])
                if converted:
                    self.fields["html_body"] = converted[: limits.max_body_chars]
                    self.fields["text_is_stub"] = text_is_stub(joined, converted)
        elif html:
            converted = self.html_text(html[0], self.defects)
            if converted is not None:
                self.fields["body"] = converted
                self.fields["body_is_html"] = True
        body = self.fields.get("body")
        if isinstance(body, str) and len(body) > limits.max_body_chars:
            self.defects.append(f"body cut at {limits.max_body_chars} characters")
            self.fields["body"] = body[: limits.max_body_chars]
        self.fields["ates"] = tuple(dict.fromkeys(tokens))  # the same token in text and HTML once
        self.fields["xml_parts"] = tuple(xml_parts)
        self.fields["attachments"] = tuple(attachments)

    def html_text(self, source: str, defects: list[str]) -> str | None:
        limit = self.limits.max_html_chars
        if len(source) > limit:
            defects.append(f"HTML cut at {limit} characters for conversion")
            source = source[:limit]
        try:
            return _html_to_text(source, defects)
        except Exception as exc:  # noqa: BLE001 - libxml2 on hostile markup
            defects.append(f"HTML could not be converted: {type(exc).__name__}")
            return None

    def finish(self) -> ParsedMessage:
        defects = tuple(dict.fromkeys(self.defects))[: self.limits.max_defects]
        usable = self.top.fields or self.fields.get("body") or self.fields.get("attachments") \
            or self.fields.get("xml_parts")
        error = None if usable else "no headers and no readable body"
        # `fields` holds each field under its own name and type, filled step by step by
        # `guarded`; mypy sees only dict[str, object].
        return ParsedMessage(**self.fields, defects=defects,  # type: ignore[arg-type]
                             parse_error=error)
