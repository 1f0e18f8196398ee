"""Hardened parsing of untrusted XML: the only door through which mail-borne XML enters lxml.

Every XML document mailbridge reads comes from an email, so every one is hostile until proven
otherwise. `parse_untrusted` caps the size before lxml sees a byte, accepts only UTF-8 (and its
ASCII/Latin-1 relatives) or UTF-16 with a byte-order mark, refuses any DOCTYPE or entity
declaration (before parsing, and again on the parsed tree, in case an encoding hid it), parses
with entity resolution, DTD loading and network access off, and then checks nesting depth and
attribute sizes iteratively. Whatever goes wrong surfaces as `UnsafeXml` with a short reason that
can be recorded as a message's outcome; no other exception leaves this module.
"""

from __future__ import annotations

import codecs
import re

from lxml import etree

__all__ = ["UnsafeXml", "parse_untrusted"]

# Reason prefixes: stable, short, meant for audit records and for tests to compare against.
TOO_LARGE = "too large"
DOCTYPE = "document has a DOCTYPE"
TOO_DEEP = "too deep"
ENTITY = "entity reference"
ENCODING = "invalid encoding"
NOT_WELL_FORMED = "not well-formed"
ATTR_TOO_LONG = "attribute too long"


class UnsafeXml(ValueError):
    """An XML document was refused; `reason` says why in a few words.

    `kind` is the fixed part of the reason (one of the module's reason constants), so callers can
    branch on it while the full reason keeps the parser's detail for the audit trail.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def kind(self) -> str:
        return self.reason.split(":", 1)[0]


# Declared encodings we accept for byte-oriented (non-UTF-16) input. Anything else (EBCDIC,
# UTF-7, exotic iconv names) only widens the attack surface and no integrator needs it.
_ACCEPTED_8BIT = {"utf-8", "us-ascii", "iso8859-1", "cp1252"}
_DECL_ENCODING = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
# A DTD is the gateway to every entity attack; no legitimate transaction needs one.
_DTD_MARKERS = (b"<!DOCTYPE", b"<!ENTITY")
_UTF16_MARKERS = tuple(marker.decode("ascii").encode(encoding) for marker in _DTD_MARKERS
                       for encoding in ("utf-16-le", "utf-16-be"))


def _make_parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parser objects must not be shared between threads, and
    # building one costs microseconds.
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        attribute_defaults=False,
        huge_tree=False,
        remove_pis=True,
        remove_comments=True,
        collect_ids=False,
        recover=False,
    )


def _check_encoding(data: bytes) -> bool:
    """Refuse encodings we cannot scan safely; return True when the input is UTF-16 with a BOM."""
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise UnsafeXml(f"{ENCODING}: UTF-32 is not accepted")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        head = data[:400].decode("utf-16", "replace").encode("ascii", "replace")
        declared = _DECL_ENCODING.match(head)
        if declared and not declared.group(1).lower().startswith(b"utf-16"):
            raise UnsafeXml(f"{ENCODING}: UTF-16 byte order mark but another encoding declared")
        return True
    body = data[3:] if data.startswith(codecs.BOM_UTF8) else data
    # Everything else must start in ASCII: libxml2 would otherwise sniff UTF-16/UTF-32 without
    # a BOM or EBCDIC from the first bytes, and a DOCTYPE in those encodings slips past the
    # byte scan below. The XML spec requires a BOM for UTF-16 anyway.
    if b"\x00" in body[:2]:
        raise UnsafeXml(f"{ENCODING}: UTF-16 or UTF-32 without a byte order mark")
    if body[:1] not in (b"<", b" ", b"\t", b"\r", b"\n"):
        raise UnsafeXml(f"{ENCODING}: the document does not start with '<' in ASCII")
    match = _DECL_ENCODING.match(body)
    if match:
        name = match.group(1).decode("ascii").lower()
        try:
            canonical = codecs.lookup(name).name
        except LookupError:
            raise UnsafeXml(f"{ENCODING}: unsupported encoding {name}") from None
        if canonical.startswith("utf-16"):
            raise UnsafeXml(f"{ENCODING}: declared UTF-16 without a byte order mark")
        if canonical not in _ACCEPTED_8BIT:
            raise UnsafeXml(f"{ENCODING}: unsupported encoding {name}")
    return False


def _prescan(data: bytes, utf16: bool) -> None:
    """Cheap refusal of DTDs before lxml parses anything (the tree is checked again later)."""
    markers = _UTF16_MARKERS if utf16 else _DTD_MARKERS
    if any(marker in data for marker in markers):
        raise UnsafeXml(DOCTYPE)


_LOCATION_NOISE = re.compile(r"\s*\(<string>, line \d+\)$")


def _reason_for(error: BaseException) -> str:
    """Map libxml2's error text to one of our short reasons, keeping its first line as detail."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    text = _LOCATION_NOISE.sub("", text)[:160]
    lowered = text.lower()
    if "excessive depth" in lowered:
        return TOO_DEEP
    if "entity" in lowered:
        return f"{ENTITY}: {text}"
    if "encoding" in lowered or "not proper utf-8" in lowered or "labelled utf-16" in lowered:
        return f"{ENCODING}: {text}"
    if "buffer size limit" in lowered or "attvalue length too long" in lowered:
        return f"{ATTR_TOO_LONG}: {text}"
    if "resource limit" in lowered or "huge" in lowered:
        return f"{TOO_LARGE}: {text}"
    return f"{NOT_WELL_FORMED}: {text}"


def _check_tree(root: etree._Element, max_depth: int, max_attr_len: int) -> None:
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise UnsafeXml(DOCTYPE)
    depth = 0
    # iterwalk runs in C without recursion, so a deep tree cannot exhaust Python's stack.
    for event, node in etree.iterwalk(root, events=("start", "end")):
        if event == "end":
            depth -= 1
            continue
        depth += 1
        if depth > max_depth:
            raise UnsafeXml(f"{TOO_DEEP}: more than {max_depth} levels")
        for value in node.attrib.values():
            if len(value) > max_attr_len:
                raise UnsafeXml(f"{ATTR_TOO_LONG}: over {max_attr_len} characters")
    for _ in root.iter(etree.Entity):
        raise UnsafeXml(ENTITY)


def parse_untrusted(
    data: bytes,
    *,
    max_bytes: int = 1_048_576,
    max_depth: int = 64,
    max_attr_len: int = 65536,
) -> etree._Element:
    """Parse `data` as untrusted XML and return its root element, or raise `UnsafeXml`."""
    try:
        if isinstance(data, (bytearray, memoryview)):
            if len(data) > max_bytes:
                raise UnsafeXml(f"{TOO_LARGE}: {len(data)} bytes, limit {max_bytes}")
            data = bytes(data)
        if not isinstance(data, bytes):
            raise UnsafeXml(f"{NOT_WELL_FORMED}: expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise UnsafeXml(f"{TOO_LARGE}: {len(data)} bytes, limit {max_bytes}")
        if not data.strip():
            raise UnsafeXml(f"{NOT_WELL_FORMED}: empty document")
        utf16 = _check_encoding(data)
        _prescan(data, utf16)
        try:
            root = etree.fromstring(data, _make_parser())
        except etree.XMLSyntaxError as exc:
            raise UnsafeXml(_reason_for(exc)) from None
        if root is None:
            raise UnsafeXml(f"{NOT_WELL_FORMED}: no root element")
        _check_tree(root, max_depth, max_attr_len)
        return root
    except UnsafeXml:
        raise
    except MemoryError:
        raise UnsafeXml(TOO_LARGE) from None
    except Exception as exc:  # noqa: BLE001 - the contract is: only UnsafeXml leaves this function
        raise UnsafeXml(_reason_for(exc)) from None
