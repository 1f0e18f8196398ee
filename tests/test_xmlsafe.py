"""bridge.parse.xmlsafe: hostile XML is refused with the right reason, nothing else escapes."""

from __future__ import annotations

import http.server
import threading
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from bridge.parse import mime, xmlsafe
from bridge.parse.xmlapi import Transaction, parse_transaction
from bridge.parse.xmlsafe import UnsafeXml, parse_untrusted

HOSTILE = Path(__file__).parent / "data" / "hostile-xml"
CASES = tomllib.loads((HOSTILE / "expectations.toml").read_text())["case"]


def _refusal(data: bytes, **limits: int) -> str | None:
    try:
        parse_untrusted(data, **limits)
    except UnsafeXml as exc:
        return exc.kind
    return None


def _xml_of(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".eml":
        parsed = mime.parse(data)
        assert len(parsed.xml_parts) == 1, parsed
        return parsed.xml_parts[0]
    return data


def test_every_corpus_file_has_an_expectation() -> None:
    listed = {case["file"] for case in CASES}
    present = {p.name for p in HOSTILE.iterdir() if p.name != "expectations.toml"}
    assert listed == present


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_hostile_corpus(case: dict[str, object]) -> None:
    data = _xml_of(HOSTILE / str(case["file"]))
    expected = case["expect"]
    assert _refusal(data) == (None if expected == "ok" else expected)
    if "transaction" in case:
        assert isinstance(parse_transaction(data), Transaction) is case["transaction"]


def test_nothing_from_the_file_system_is_read() -> None:
    passwd = Path("/etc/passwd").read_text().splitlines()[0]
    for name in ("xxe-file.xml", "xinclude.xml"):
        try:
            root = parse_untrusted((HOSTILE / name).read_bytes())
        except UnsafeXml:
            continue
        assert passwd not in etree.tostring(root, encoding="unicode")


def test_ten_thousand_levels_deep_is_refused() -> None:
    data = b"<a>" * 10_000 + b"</a>" * 10_000
    assert _refusal(data) == "too deep"


def test_fifty_megabyte_attribute() -> None:
    data = b'<a x="' + b"A" * (50 * 1024 * 1024) + b'"/>'
    # Refused before lxml sees it under the default size cap …
    assert _refusal(data) == "too large"
    # … and by libxml2's own attribute limit when the caller raises the cap.
    assert _refusal(data, max_bytes=len(data)) == "attribute too long"


def test_depth_limit_is_exact() -> None:
    assert _refusal(b"<a>" * 64 + b"</a>" * 64) is None
    assert _refusal(b"<a>" * 65 + b"</a>" * 65) == "too deep"
    assert _refusal(b"<a><b/></a>", max_depth=1) == "too deep"


def test_size_limit_is_exact() -> None:
    doc = b"<r>" + b"x" * 100 + b"</r>"
    assert _refusal(doc, max_bytes=len(doc)) is None
    assert _refusal(doc, max_bytes=len(doc) - 1) == "too large"


def test_attribute_limit() -> None:
    assert _refusal(b'<r a="' + b"x" * 10 + b'"/>', max_attr_len=10) is None
    assert _refusal(b'<r a="' + b"x" * 11 + b'"/>', max_attr_len=10) == "attribute too long"


def test_plain_document_is_returned_as_element() -> None:
    root = parse_untrusted(b'<?xml version="1.0" encoding="ISO-8859-1"?><r a="1">caf\xe9</r>')
    assert root.tag == "r" and root.get("a") == "1" and root.text == "café"


def test_processing_instructions_and_comments_are_dropped() -> None:
    root = parse_untrusted(_xml_of(HOSTILE / "pi-and-comments.xml"))
    assert root.findtext("application") == "Acme RMM"
    assert not list(root.iter(etree.PI, etree.Comment))


@pytest.mark.parametrize("data,kind", [
    (b"", "not well-formed"),
    (b"   \n", "not well-formed"),
    (b"<r>", "not well-formed"),
    (b"\x00<\x00r\x00/\x00>", "invalid encoding"),
    (b"\xff\xfe\x00\x00<\x00\x00\x00", "invalid encoding"),  # UTF-32 BOM
    (b'<?xml version="1.0" encoding="no-such-charset"?><r/>', "invalid encoding"),
    (b'<?xml version="1.0" encoding="UTF-16"?><r/>', "invalid encoding"),  # declared, no BOM
    (b"<!ENTITY x 'y'><r/>", "document has a DOCTYPE"),
])
def test_small_refusals(data: bytes, kind: str) -> None:
    assert _refusal(data) == kind


def test_non_bytes_input_is_refused_not_crashed() -> None:
    with pytest.raises(UnsafeXml):
        parse_untrusted("<r/>")  # type: ignore[arg-type]
    assert parse_untrusted(bytearray(b"<r/>")).tag == "r"
    assert parse_untrusted(memoryview(b"<r/>")).tag == "r"


def test_reason_is_short_and_typed() -> None:
    with pytest.raises(UnsafeXml) as info:
        parse_untrusted(b"<r><a></r>")
    assert info.value.kind == "not well-formed"
    assert str(info.value).startswith("not well-formed: ")
    assert "<string>" not in info.value.reason and len(info.value.reason) < 200


class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        _Recorder.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'<!ENTITY send "leaked">')

    def log_message(self, *args: object) -> None:
        pass


def test_defence_in_depth_without_the_prescan(monkeypatch: pytest.MonkeyPatch) -> None:
    """Even if the byte scan for DOCTYPE missed, lxml must neither fetch nor expand anything,
    and the tree check must still refuse the document."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        monkeypatch.setattr(xmlsafe, "_prescan", lambda text: None)
        documents = [
            f'<!DOCTYPE r SYSTEM "http://127.0.0.1:{port}/x.dtd"><r>x</r>',
            f'<!DOCTYPE r [<!ENTITY e SYSTEM "http://127.0.0.1:{port}/e">]><r>&e;</r>',
            f'<!DOCTYPE r [<!ENTITY % p SYSTEM "http://127.0.0.1:{port}/p"> %p;]><r>&send;</r>',
            '<!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>',
            (HOSTILE / "billion-laughs.xml").read_text(),
        ]
        for doc in documents:
            assert _refusal(doc.encode()) in ("document has a DOCTYPE", "entity reference")
        assert _Recorder.hits == []
    finally:
        server.shutdown()
        server.server_close()


def test_parser_configuration_expands_and_loads_nothing(tmp_path: Path) -> None:
    """The lxml parser itself (below every check of ours) must not read files or expand."""
    (tmp_path / "secret.txt").write_text("TOPSECRET")
    (tmp_path / "ext.dtd").write_text('<!ENTITY send "LEAKED">')
    documents = [
        f'<!DOCTYPE r [<!ENTITY e SYSTEM "file://{tmp_path}/secret.txt">]><r>&e;</r>',
        f'<!DOCTYPE r SYSTEM "file://{tmp_path}/ext.dtd"><r>&send;</r>',
        f'<!DOCTYPE r [<!ENTITY % p SYSTEM "file://{tmp_path}/ext.dtd"> %p;]><r>&send;</r>',
        (HOSTILE / "billion-laughs.xml").read_text(),
    ]
    for doc in documents:
        try:
            root = etree.fromstring(doc.encode(), xmlsafe._make_parser())
        except (etree.XMLSyntaxError, UnsafeXml):  # our resolver refuses external references
            continue
        text = "".join(root.itertext())
        assert "TOPSECRET" not in text and "LEAKED" not in text and "lollol" not in text


class _Spy(etree.Resolver):
    """Records every external resource libxml2 asks for, and hands back nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def resolve(self, url, pubid, context):  # type: ignore[no-untyped-def]
        self.urls.append(url)
        return self.resolve_string("", context)


def test_prescan_is_what_keeps_the_dtd_file_closed(monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    """lxml 6.1.3 / libxml2 2.14 asks for the external subset named by a DOCTYPE even with
    load_dtd=False (seen with strace); the scan of the decoded text refuses it first, and
    without that scan our resolver refuses the reference before any other resolver (or
    libxml2's own file loader) sees it (think of file:///dev/stdin or a FIFO)."""
    asked: list[str] = []

    class Recording(xmlsafe._RefuseAll):
        def resolve(self, url, pubid, context):  # type: ignore[no-untyped-def]
            asked.append(url)
            return super().resolve(url, pubid, context)

    monkeypatch.setattr(xmlsafe, "_RefuseAll", Recording)
    doc = f'<!DOCTYPE r SYSTEM "file://{tmp_path}/x.dtd"><r/>'.encode()
    assert _refusal(doc) == "document has a DOCTYPE"
    assert asked == []  # refused before parsing
    monkeypatch.setattr(xmlsafe, "_prescan", lambda text: None)
    assert _refusal(doc) == "document has a DOCTYPE"  # libxml2 asked, our resolver refused
    assert asked == [f"file://{tmp_path}/x.dtd"]


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32",
                                      "utf-32-le", "utf-32-be", "cp037", "utf-7"])
def test_doctype_smuggled_in_another_encoding_is_never_fetched(
        encoding: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """libxml2 sniffs UTF-16/32 and EBCDIC from the first bytes; none of them may carry a
    DOCTYPE past the byte scan to the point where libxml2 opens its file."""
    spy = _Spy()
    original = xmlsafe._make_parser

    def spying() -> etree.XMLParser:
        parser = original()
        parser.resolvers.add(spy)
        return parser

    monkeypatch.setattr(xmlsafe, "_make_parser", spying)
    for declared in ("", f'<?xml version="1.0" encoding="{encoding}"?>'):
        text = declared + f'<!DOCTYPE r SYSTEM "file://{tmp_path}/x.dtd"><r/>'
        assert _refusal(text.encode(encoding)) in ("document has a DOCTYPE", "invalid encoding",
                                                   "not well-formed")
    assert spy.urls == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_unsafexml(data: bytes) -> None:
    try:
        parse_untrusted(data)
    except UnsafeXml:
        pass


_PIECES = st.sampled_from([
    "<r>", "</r>", "<a x='1'>", "</a>", "<b/>", "<!DOCTYPE r>", "<!DOCTYPE r [", "]>",
    "<!ENTITY e 'v'>", "<!ENTITY % p SYSTEM 'file:///etc/passwd'>", "%p;", "&e;", "&amp;",
    "&#0;", "&#x41;", "<?xml version='1.0'?>", "<?pi x?>", "<!-- c -->", "<![CDATA[x]]>",
    "text", "\u00e9", "\x00", "\ufeff", "<", ">", "&", "'", '"', "=", " ",
    "<?xml version='1.0' encoding='utf-16'?>",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=40), st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_xmlish_soup_raises_only_unsafexml(pieces: list[str], encoding: str) -> None:
    data = "".join(pieces).encode(encoding, "replace")
    try:
        root = parse_untrusted(data)
    except UnsafeXml:
        return
    # Whatever got through has no DTD and no entity nodes.
    assert root.getroottree().docinfo.internalDTD is None
    assert not list(root.iter(etree.Entity))
