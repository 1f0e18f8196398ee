"""Hardened parsing of untrusted XML: the only door through which mail-borne XML enters lxml.

Every XML document mailbridge reads comes from an email, so every one is hostile until proven
otherwise. `parse_untrusted` caps the size before lxml sees a byte, reads the BOM and the whole
XML declaration (refusing one longer than 1 KiB), decides the encoding from them — only UTF-8
(and its ASCII/Latin-1 relatives) or UTF-16 with a byte-order mark — and decodes the document
itself. DOCTYPE and ENTITY are refused in the decoded text, so no encoding can hide them; lxml
then parses UTF-8 we produced, with entity resolution, DTD loading and network access off and a
resolver that refuses every external reference, and the tree is checked again for a DTD,
entities, nesting depth and attribute sizes (iteratively). Whatever goes wrong surfaces as
`UnsafeXml` with a short reason that can be recorded as a message's outcome; no other
exception leaves this module.
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
# UTF-7, UTF-32, exotic iconv names) only widens the attack surface and no integrator needs it.
_ACCEPTED_8BIT = {"utf-8", "us-ascii", "iso8859-1", "cp1252"}
MAX_DECL = 1024  # bytes of the XML declaration, BOM included
# The whole declaration, however it is padded: `<?xml` up to the first `?>`.
_DECL = re.compile(r"\A<\?xml(?=[\s?])(.*?)\?>", re.DOTALL)
_DECL_ENCODING = re.compile(r"""\sencoding\s*=\s*(["'])([A-Za-z0-9._:-]{1,40})\1""")
# A DTD is the gateway to every entity attack; no legitimate transaction needs one. Checked
# on the decoded text, so no encoding can hide it.
_DTD_MARKERS = re.compile(r"<!\s*(?:DOCTYPE|ENTITY)", re.IGNORECASE)
_BOMS = ((codecs.BOM_UTF32_LE, None), (codecs.BOM_UTF32_BE, None),
         (codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
         (codecs.BOM_UTF16_BE, "utf-16-be"))


def _make_parser() -> etree.XMLParser:
    # A fresh parser per call: lxml parser objects must not be shared between threads, and
    # building one costs microseconds. The input is always UTF-8 we produced ourselves.
    parser = etree.XMLParser(
        encoding="utf-8",
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
    parser.resolvers.add(_RefuseAll())
    return parser


class _RefuseAll(etree.Resolver):
    """Every external reference (DTD, entity, XInclude) is refused, never opened."""

    def resolve(self, system_url: str | None, public_id: str | None, context: object) -> None:
        raise UnsafeXml(f"{DOCTYPE}: external reference refused")


def _decode(data: bytes) -> str:
    """The document as text, its encoding decided from the BOM and the whole declaration;
    the declaration itself is removed (the text is parsed as the UTF-8 we re-encode)."""
    bom_codec = "none"
    for bom, codec in _BOMS:
        if data.startswith(bom):
            if codec is None:
                raise UnsafeXml(f"{ENCODING}: UTF-32 is not accepted")
            bom_codec, data = codec, data[len(bom):]
            break
    if bom_codec in ("none", "utf-8"):
        # No BOM: the document must start in ASCII; libxml2 would otherwise sniff UTF-16,
        # UTF-32 or EBCDIC from the first bytes. The XML spec requires a BOM for UTF-16.
        if b"\x00" in data[:2]:
            raise UnsafeXml(f"{ENCODING}: UTF-16 or UTF-32 without a byte order mark")
        if data[:1] not in (b"<", b" ", b"\t", b"\r", b"\n"):
            raise UnsafeXml(f"{ENCODING}: the document does not start with '<' in ASCII")
        head = data[:MAX_DECL].decode("latin-1")
    else:
        head = data[:MAX_DECL].decode(bom_codec, "replace")
    declared: str | None = None
    if head.startswith("<?xml"):
        decl = _DECL.match(head)
        if decl is None:
            raise UnsafeXml(f"{ENCODING}: XML declaration longer than {MAX_DECL} bytes")
        found = _DECL_ENCODING.search(decl.group(1))
        if found:
            declared = found.group(2).lower()
    codec = _choose(bom_codec, declared)
    try:
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise UnsafeXml(f"{ENCODING}: not valid {codec}") from None
    decl = _DECL.match(text)
    return text[decl.end():] if decl else text


def _choose(bom_codec: str, declared: str | None) -> str:
    canonical: str | None = None
    if declared is not None:
        try:
            canonical = codecs.lookup(declared).name
        except LookupError:
            raise UnsafeXml(f"{ENCODING}: unsupported encoding {declared}") from None
    if bom_codec.startswith("utf-16"):
        if canonical is not None and not canonical.startswith("utf-16"):
            raise UnsafeXml(f"{ENCODING}: UTF-16 byte order mark but another encoding declared")
        return bom_codec
    if bom_codec == "utf-8" and canonical not in (None, "utf-8"):
        raise UnsafeXml(f"{ENCODING}: UTF-8 byte order mark but another encoding declared")
    if canonical is None:
        return "utf-8"
    if canonical.startswith("utf-16"):
        raise UnsafeXml(f"{ENCODING}: declared UTF-16 without a byte order mark")
    if canonical not in _ACCEPTED_8BIT:
        raise UnsafeXml(f"{ENCODING}: unsupported encoding {declared}")
    return canonical


def _prescan(text: str) -> None:
    """Refusal of DTDs before lxml parses anything (the tree is checked again later)."""
    if _DTD_MARKERS.search(text):
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
        text = _decode(data)
        _prescan(text)
        try:
            root = etree.fromstring(text.encode("utf-8"), _make_parser())
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
