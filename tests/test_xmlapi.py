"""bridge.parse.xmlapi: the transaction format, held to docs/xml-api.xsd and docs/xml-api.md."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree
from pydantic import SecretStr

from bridge.parse.xmlapi import (
    Action, ActionResult, Transaction, XmlApiError, build_response, check_password,
    is_transaction, looks_like_transaction, parse_transaction, response_text,
)
from bridge.parse.xmlsafe import parse_untrusted

DOCS = Path(__file__).resolve().parents[1] / "docs"
SCHEMA = etree.XMLSchema(etree.parse(str(DOCS / "xml-api.xsd")))  # our own file: trusted
SECRET = "S3cr3t-Pa55 word"


def valid_by_schema(data: bytes) -> bool:
    return SCHEMA.validate(etree.fromstring(data))


def doc(*children: str, root: str = '<mailbridge-transaction version="1">',
        header: str | None = None) -> bytes:
    if header is None:
        header = f"<application>Acme RMM</application><password>{SECRET}</password>"
    body = header + "".join(children)
    return f'{root}{body}</{root[1:].split()[0].rstrip(">")}>'.encode()


OPEN = "<open><alert-id>a1</alert-id><title>Disk full</title><account>ACME</account></open>"


def doc_examples() -> list[bytes]:
    text = (DOCS / "xml-api.md").read_text()
    return [block.encode() for block in re.findall(r"```xml\n(.*?)```", text, re.S)]


EXAMPLES = doc_examples()


def test_docs_have_request_and_response_examples() -> None:
    roots = [etree.fromstring(e).tag for e in EXAMPLES]
    assert roots.count("mailbridge-transaction") >= 3 and roots.count("mailbridge-response") >= 2


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example{i}" for i in range(len(EXAMPLES))])
def test_doc_examples_validate_and_parse(example: bytes) -> None:
    assert valid_by_schema(example), SCHEMA.error_log
    if b"<mailbridge-transaction" in example:
        assert isinstance(parse_transaction(example), Transaction)


def test_first_doc_example_in_detail() -> None:
    tx = parse_transaction(EXAMPLES[0])
    assert isinstance(tx, Transaction)
    assert (tx.application, tx.respond_to, tx.transaction_id) == (
        "Acme RMM", "noc-robot@acme.example", "T-2026-0001")
    assert tx.password is not None and tx.password.get_secret_value() == "correct horse battery staple"
    (action,) = tx.actions
    assert action == Action(index=1, kind="open", alert_id="srv01-disk-c",
                            title="Disk C: below 5 % free on SRV01", account="ACME-001",
                            summary="Free space on C: is 4.2 GB (4 %). Threshold: 5 %.",
                            product_group="servers", alert_type="Disk Space", device="SRV01")
    assert action.status == "open"
    assert tx.alert_key(action) == "xml:acme rmm:srv01-disk-c"


def test_actions_in_document_order_with_statuses() -> None:
    tx = parse_transaction(doc("<resolve><alert-id>a1</alert-id></resolve>", OPEN,
                               "<update><summary>\n  line 1\n  line 2\n</summary><alert-id>a1</alert-id></update>"))
    assert isinstance(tx, Transaction)
    assert [(a.index, a.kind, a.status) for a in tx.actions] == [
        (1, "resolve", "resolved"), (2, "open", "open"), (3, "update", "update")]
    assert tx.actions[2].summary == "line 1\n  line 2"  # a summary keeps its inner layout
    assert tx.respond_to is None and tx.transaction_id is None


def test_whitespace_folding_and_comments() -> None:
    tx = parse_transaction(doc("<open><alert-id> a1 </alert-id><title>Disk\n   full<!-- x --></title>"
                               "<account>ACME</account></open>"))
    assert isinstance(tx, Transaction)
    assert (tx.actions[0].alert_id, tx.actions[0].title) == ("a1", "Disk full")


INVALID = [
    ("not-a-transaction", doc(OPEN, root='<transaction version="1">')),
    ("not-a-transaction", doc(OPEN, root='<mailbridge-transaction xmlns="urn:x" version="1">')),
    ("unsupported-version", doc(OPEN, root="<mailbridge-transaction>")),
    ("unsupported-version", doc(OPEN, root='<mailbridge-transaction version="2">')),
    ("unknown-attribute", doc(OPEN, root='<mailbridge-transaction version="1" mode="x">')),
    ("missing-element", doc(OPEN, header=f"<password>{SECRET}</password>")),
    ("invalid-value", doc(OPEN, header="<application>  </application>")),
    ("duplicate-element", doc(OPEN, header="<application>a</application><application>b</application>")),
    ("duplicate-element", doc(OPEN, header=f"<application>a</application><password>{SECRET}</password>"
                                           f"<password>{SECRET}</password>")),
    ("invalid-order", doc(OPEN, header=f"<password>{SECRET}</password><application>a</application>")),
    ("invalid-order", doc(OPEN, "<transaction-id>T1</transaction-id>")),
    ("unknown-element", doc(OPEN, "<delete><alert-id>a1</alert-id></delete>")),
    ("no-actions", doc()),
    ("too-many-actions", doc(*[OPEN] * 101)),
    ("missing-element", doc("<open><alert-id>a1</alert-id><account>ACME</account></open>")),
    ("missing-element", doc("<open><alert-id>a1</alert-id><title>t</title></open>")),
    ("missing-element", doc("<update><summary>s</summary></update>")),
    ("unknown-element", doc("<resolve><alert-id>a1</alert-id><severity>5</severity></resolve>")),
    ("duplicate-element", doc("<resolve><alert-id>a1</alert-id><alert-id>a2</alert-id></resolve>")),
    ("invalid-value", doc("<resolve><alert-id>a1</alert-id><summary>x<b>y</b></summary></resolve>")),
    ("invalid-value", doc('<resolve><alert-id lang="en">a1</alert-id></resolve>')),
    ("invalid-value", doc("<resolve><alert-id></alert-id></resolve>")),
    ("unknown-attribute", doc('<resolve id="1"><alert-id>a1</alert-id></resolve>')),
    ("unexpected-text", doc(OPEN + "stray text")),
    ("unexpected-text", doc("<resolve>oops<alert-id>a1</alert-id></resolve>")),
    ("field-too-long", doc(f"<open><alert-id>a1</alert-id><title>{'t' * 1001}</title>"
                           "<account>A</account></open>")),
    ("field-too-long", doc(f"<resolve><alert-id>a1</alert-id><summary>{'s' * 64001}</summary></resolve>")),
    ("field-too-long", doc(OPEN, header=f"<application>a</application><transaction-id>{'x' * 101}"
                                        "</transaction-id>")),
    ("invalid-value", doc(OPEN, header="<application>a</application><transaction-id>T 1</transaction-id>")),
    ("invalid-value", doc(OPEN, header="<application>a</application><respond-to>Bob &lt;b@c.example&gt;"
                                       "</respond-to>")),
    ("invalid-value", doc(OPEN, header="<application>a</application><respond-to>b@localhost</respond-to>")),
    ("invalid-value", doc(OPEN, header="<application>a</application>"
                                       "<respond-to>a@b.example, c@d.example</respond-to>")),
]


@pytest.mark.parametrize("code,data", INVALID, ids=[f"{c}-{i}" for i, (c, _) in enumerate(INVALID)])
def test_invalid_documents_refused_by_parser_and_schema(code: str, data: bytes) -> None:
    result = parse_transaction(data)
    assert isinstance(result, XmlApiError)
    assert result.code == code, result
    assert not valid_by_schema(data)
    assert SECRET not in repr(result) and SECRET not in str(result)


def test_errors_name_the_action() -> None:
    result = parse_transaction(doc(OPEN, "<open><alert-id>a2</alert-id><title>t</title></open>"))
    assert result == XmlApiError("missing-element", "<open> needs <account>", action=2)


@pytest.mark.parametrize("data,code", [
    (b'<!DOCTYPE m [<!ENTITY x "y">]><mailbridge-transaction version="1"/>', "unsafe-xml"),
    (b"<mailbridge-transaction version='1'>" + b"<a>" * 100 + b"</a>" * 100 + b"</mailbridge-transaction>", "unsafe-xml"),
    (b"<r>&x;</r>", "unsafe-xml"),
    (b"<mailbridge-transaction", "not-well-formed"),
    (b"<r>\xff</r>", "invalid-encoding"),
    (b"<r>" + b"x" * 2000 + b"</r>", "too-large"),
])
def test_unsafe_input_codes(data: bytes, code: str) -> None:
    result = parse_transaction(data, max_bytes=1500)
    assert isinstance(result, XmlApiError) and result.code == code


def test_password_never_shows() -> None:
    tx = parse_transaction(doc(OPEN))
    assert isinstance(tx, Transaction)
    for text in (repr(tx), str(tx), str(dataclasses.asdict(tx)), repr(tx.actions)):
        assert SECRET not in text
    assert tx.password is not None and tx.password.get_secret_value() == SECRET


@pytest.mark.parametrize("given_password,expected,ok", [
    (SECRET, None, True),
    (SECRET, "", True),
    (SECRET, SECRET, True),
    (SECRET, SecretStr(SECRET), True),
    (SECRET, SECRET + "x", False),
    (SECRET, "s3cr3t-pa55 word", False),
    (None, SECRET, False),
    ("pässwört ✓", "pässwört ✓", True),  # non-ASCII: compare_digest on str would raise
    ("pässwört ✓", "passwort", False),
])
def test_check_password(given_password: str | None, expected: str | SecretStr | None, ok: bool) -> None:
    header = "<application>a</application>" + (
        f"<password>{escape(given_password)}</password>" if given_password is not None else "")
    tx = parse_transaction(doc(OPEN, header=header))
    assert isinstance(tx, Transaction)
    assert check_password(tx, expected) is ok


def test_is_transaction_and_sniff() -> None:
    assert is_transaction(parse_untrusted(doc(OPEN)))
    assert not is_transaction(parse_untrusted(b"<other/>"))
    assert not is_transaction(None)
    assert looks_like_transaction(b"\n<?xml version='1.0'?>\n<mailbridge-transaction version='1'>")
    assert looks_like_transaction(doc(OPEN).decode().encode("utf-16"))
    assert not looks_like_transaction(b"<html><body>hello</body></html>")


# -- responses --------------------------------------------------------------------------------

RESULTS = [
    ActionResult(1, "resolve", "srv01-disk-c", "resolved", correlation_id="c-1"),
    ActionResult(2, "open", "srv02-ping", "failed",
                 error=XmlApiError("account-not-found", "Account ACME-001 is not mapped\x00.")),
    ActionResult(3, "update", "x<&>\"y", "pending", correlation_id="c-3"),
]


@pytest.mark.parametrize("results,error,status", [
    (RESULTS[:1], None, "ok"),
    (RESULTS, None, "partial"),
    (RESULTS[1:2], None, "failed"),
    ([], XmlApiError("missing-element", "<open> needs <account>", action=1), "rejected"),
    ([], XmlApiError("bad-password", "wrong password"), "rejected"),
])
def test_response_document(results: list[ActionResult], error: XmlApiError | None, status: str) -> None:
    data = build_response("T-1", results, error=error)
    assert valid_by_schema(data), SCHEMA.error_log
    root = parse_untrusted(data)  # our own responses pass our own hardened parser
    assert root.findtext("status") == status and root.findtext("transaction-id") == "T-1"
    got = [(r.get("index"), r.get("action"), r.get("alert-id"), r.findtext("outcome"),
            r.findtext("correlation-id"), r.find("error").get("code") if r.find("error") is not None else None)
           for r in root.findall("result")]
    assert got == [(str(r.index), r.kind, r.alert_id, r.outcome, r.correlation_id,
                    r.error.code if r.error else None) for r in results]
    if error is not None:
        assert root.find("error").get("code") == error.code
        assert root.find("error").text == error.message


def test_response_without_transaction_id_and_control_characters() -> None:
    data = build_response(None, RESULTS)
    assert valid_by_schema(data)
    root = parse_untrusted(data)
    assert root.find("transaction-id") is None
    assert root.findall("result")[1].findtext("error") == "Account ACME-001 is not mapped\ufffd."


def test_response_text() -> None:
    text = response_text("T-1", RESULTS)
    assert text.splitlines() == [
        "mailbridge transaction T-1: partial",
        "1. resolve srv01-disk-c: resolved (correlation id c-1)",
        "2. open srv02-ping: failed - account-not-found: Account ACME-001 is not mapped\x00.",
        '3. update x<&>"y: pending (correlation id c-3)',
    ]
    rejected = response_text(None, [], error=XmlApiError("no-actions", "no action"))
    assert rejected == "mailbridge transaction (no transaction id): rejected\nRefused: no-actions: no action\n"


def test_unknown_outcome_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        ActionResult(1, "open", "a", "done")


# -- properties -------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_give_a_value(data: bytes) -> None:
    assert isinstance(parse_transaction(data), (Transaction, XmlApiError))


_TEXT = st.sampled_from(["x", "Acme RMM", "", "   ", "  spaced \n out ", "t" * 1001, "a" * 201,
                         "<b>x</b>", "caf\u00e9"])
_FIELD = st.sampled_from(["alert-id", "title", "summary", "account", "product-group", "alert-type",
                          "device", "severity"])
_ACTION = st.builds(
    lambda kind, fields: f"<{kind}>" + "".join(f"<{n}>{v}</{n}>" for n, v in fields) + f"</{kind}>",
    st.sampled_from(["open", "update", "resolve", "delete"]),
    st.lists(st.tuples(_FIELD, _TEXT), max_size=5),
)
_HEADER = st.sampled_from([
    "<application>Acme</application>", "<application> </application>", f"<password>{SECRET}</password>",
    "<password>  </password>", "<respond-to>noc@acme.example</respond-to>",
    "<respond-to>bad</respond-to>", "<respond-to>a b@c.example</respond-to>",
    "<transaction-id>T-1</transaction-id>", "<transaction-id>T 1</transaction-id>",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(_HEADER, max_size=4), st.lists(_ACTION, max_size=3), st.booleans())
def test_parser_agrees_with_the_schema(header: list[str], actions: list[str], version: bool) -> None:
    root = '<mailbridge-transaction version="1">' if version else "<mailbridge-transaction>"
    data = doc(*actions, root=root, header="".join(header))
    result = parse_transaction(data)
    assert isinstance(result, Transaction) == valid_by_schema(data), (result, SCHEMA.error_log)
    assert SECRET not in repr(result)
