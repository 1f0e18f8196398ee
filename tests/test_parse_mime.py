"""bridge.parse.mime: what the rules get out of real-world (and hostile) message bytes."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import pickle
import quopri
import random
import tracemalloc
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.models import ParsedMessage, TokenRef
from bridge.parse.mime import MimeLimits, decode_text, decode_words, parse
from bridge.parse.xmlapi import Transaction, parse_transaction
from bridge.parse.xmlsafe import UnsafeXml, parse_untrusted

TOKEN = ('<Autotask><ID name="acmemsp.com"/><CustomerID source="Kaseya" name="100"/>'
         '<AlertID source="Kaseya" name="8932"/></Autotask>')

TRANSACTION = b"""<?xml version="1.0" encoding="UTF-8"?>
<mailbridge-transaction version="1">
  <application>Acme RMM</application>
  <respond-to>noc@acme.example</respond-to>
  <open><alert-id>a1</alert-id><title>Disk full</title><account>ACME</account></open>
</mailbridge-transaction>
"""


def message(headers: str, body: bytes | str = b"hello\r\n", eol: str = "\r\n") -> bytes:
    head = eol.join(line.rstrip() for line in headers.strip().splitlines()) + eol + eol
    return head.encode("utf-8") + (body.encode("utf-8") if isinstance(body, str) else body)


def multipart(parts: list[tuple[str, bytes]], subtype: str = "mixed", boundary: str = "XyZ",
              close: bool = True, extra_headers: str = "") -> bytes:
    body = b"This is a MIME message.\r\n"
    for headers, content in parts:
        body += f"--{boundary}\r\n".encode() + headers.strip().replace("\n", "\r\n").encode()
        body += b"\r\n\r\n" + content + b"\r\n"
    if close:
        body += f"--{boundary}--\r\n".encode()
    return message(f"""From: Monitor <monitor@rmm.example>
To: alerts@msp.example
Subject: test
MIME-Version: 1.0
Content-Type: multipart/{subtype}; boundary="{boundary}"
{extra_headers}""", body)


def text_strings(parsed: ParsedMessage) -> list[str]:
    strings = [parsed.subject, parsed.sender, parsed.sender_name, parsed.body, *parsed.recipients,
               *parsed.defects, parsed.message_id or "", parsed.parse_error or ""]
    strings += [v for values in parsed.headers.values() for v in values] + list(parsed.headers)
    strings += [a.filename or "" for a in parsed.attachments] + [a.content_type for a in parsed.attachments]
    return strings


def assert_clean(parsed: ParsedMessage) -> None:
    """Everything is a valid Unicode string that SQLite and JSON logs can take."""
    for text in text_strings(parsed):
        assert isinstance(text, str)
        text.encode("utf-8")  # no lone surrogates from surrogateescape


# -- headers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw,expected", [
    ("=?utf-8?Q?Disk_C:_95=25_full?=", "Disk C: 95% full"),
    ("=?UTF-8?B?w4RyZ2VyIG1pdCBkZXIgRmVzdHBsYXR0ZQ==?=", "Ärger mit der Festplatte"),
    ("=?iso-8859-1?q?caf=E9?= =?iso-8859-1?q?_au_lait?=", "café au lait"),  # space between words dropped
    ("Alert: =?utf-8?q?caf=C3=A9?= is down", "Alert: café is down"),
    ("=?utf-8?B?5L2/?= =?utf-8?B?44Gj44Gm?=", "使って"),
    ("=?utf-8?B?5L0=?= =?utf-8?B?v+OBo+OBpg==?=", "使って"),  # a character split across two words
    ("=?ks_c_5601-1987?B?wMy/67nO?=", "이용민"),
    ("=?iso-gb2312?B?suLK1A==?=", "测试"),
    ("=?unicode-1-1-utf-7?Q?+AOQ-rger?=", "ärger"),
    ("=?x-no-such-charset?Q?caf=C3=A9?=", "café"),  # unknown: UTF-8 guess
    ("=?x-no-such-charset?Q?caf=E9?=", "café"),  # unknown: windows-1252 fallback
    ("=?utf-8?B?YWJj?=", "abc"),
    ("=?utf-8?B?YWI?=", "ab"),  # missing padding
    ("=?utf-8?Q?broken", "=?utf-8?Q?broken"),  # not an encoded-word at all
])
def test_decode_words(raw: str, expected: str) -> None:
    assert decode_words(raw) == expected


def test_rfc2047_subject_folded_and_decoded() -> None:
    raw = message("""From: a@b.example
Subject: =?utf-8?Q?PROBLEM:_Disk_C:?=
 =?utf-8?Q?_on_S=C3=BCdserver?=\t is   CRITICAL""")
    assert parse(raw).subject == "PROBLEM: Disk C: on Südserver is CRITICAL"


def test_raw_8bit_headers_use_the_message_charset() -> None:
    raw = message("From: a@b.example\nSubject: Störung\nContent-Type: text/plain; charset=iso-8859-1",
                  "x".encode()).replace("Störung".encode(), "Störung".encode("latin-1"))
    assert parse(raw).subject == "Störung"
    raw_utf8 = message("From: a@b.example\nSubject: Störung")
    assert parse(raw_utf8).subject == "Störung"


def test_sender_keeps_encoded_word_in_the_address_literal() -> None:
    parsed = parse(message("From: =?utf-8?Q?agent?=@example.com\nSubject: x"))
    assert parsed.sender == "=?utf-8?q?agent?=@example.com"
    assert parsed.sender_name == ""
    parsed = parse(message('From: "=?utf-8?Q?agent@example.com?=" <Attacker@Evil.example>'))
    assert parsed.sender == "attacker@evil.example"
    assert parsed.sender_name == "agent@example.com"


def test_sender_name_with_encoded_comma_is_one_address() -> None:
    parsed = parse(message("From: =?iso-8859-1?Q?B=FCrling,=20Andreas?= <Smith@Example.com>"))
    assert (parsed.sender, parsed.sender_name) == ("smith@example.com", "Bürling, Andreas")
    assert not any("several" in d for d in parsed.defects)


def test_recipients_to_and_cc_lowercased_and_unique() -> None:
    parsed = parse(message("""From: a@b.example
To: Ops <OPS@msp.example>, "Doe, Jane" <jane@msp.example>
Cc: ops@msp.example, undisclosed-recipients:;
Cc: =?utf-8?Q?x?=@spoof.example"""))
    assert parsed.recipients == ("ops@msp.example", "jane@msp.example", "=?utf-8?q?x?=@spoof.example")


@pytest.mark.parametrize("value,expected", [
    ("Tue, 03 Mar 2026 10:15:00 +0100", datetime(2026, 3, 3, 10, 15, tzinfo=timezone(timedelta(hours=1)))),
    ("Tue, 03 Mar 2026 10:15:00 -0000", datetime(2026, 3, 3, 10, 15, tzinfo=timezone.utc)),
    ("3 Mar 2026 10:15 GMT", datetime(2026, 3, 3, 10, 15, tzinfo=timezone.utc)),
    ("Wed, 05 Sep 2018 29:24:05 +0700", None),
    ("yesterday", None),
])
def test_date(value: str, expected: datetime | None) -> None:
    parsed = parse(message(f"From: a@b.example\nDate: {value}"))
    assert parsed.date == expected
    if expected is None:
        assert "invalid Date header" in parsed.defects
    else:
        assert parsed.date is not None and parsed.date.tzinfo is not None


def test_message_id_and_headers_table() -> None:
    parsed = parse(message("""Return-Path: <bounce@rmm.example>
Received: from mx1 by mx2; Tue, 03 Mar 2026 10:15:00 +0100
Received: from rmm by mx1; Tue, 03 Mar 2026 10:14:59 +0100
Authentication-Results: mx.msp.example; dkim=pass header.d=rmm.example;
 spf=pass smtp.mailfrom=rmm.example
Auto-Submitted: auto-generated
From: Monitor <monitor@rmm.example>
X-Alert-Category: =?utf-8?Q?Speicherplatz_kn=C3=A4pp?=
X-Original-From: =?utf-8?Q?boss?=@msp.example
Message-ID:  <abc.123@rmm.example> (comment)
Subject: hi"""))
    assert parsed.message_id == "<abc.123@rmm.example>"
    assert parsed.headers["received"] == ("from mx1 by mx2; Tue, 03 Mar 2026 10:15:00 +0100",
                                          "from rmm by mx1; Tue, 03 Mar 2026 10:14:59 +0100")
    assert parsed.header("Authentication-Results") == (
        "mx.msp.example; dkim=pass header.d=rmm.example; spf=pass smtp.mailfrom=rmm.example")
    assert parsed.header("auto-submitted") == "auto-generated"
    assert parsed.header("return-path") == "<bounce@rmm.example>"
    assert parsed.header("x-alert-category") == "Speicherplatz knäpp"  # unstructured: decoded
    assert parsed.header("x-original-from") == "=?utf-8?Q?boss?=@msp.example"  # address: literal
    assert dataclasses.asdict(parsed)["headers"]["auto-submitted"] == ("auto-generated",)
    assert pickle.loads(pickle.dumps(parsed)) == parsed


# -- bodies -----------------------------------------------------------------------------------


def test_plain_body_crlf_normalised() -> None:
    parsed = parse(message("From: a@b.example\nSubject: s", "line 1\r\nline 2\r\n"))
    assert parsed.body == "line 1\nline 2"  # outer blank lines are trimmed
    assert parsed.parse_error is None and parsed.defects == ()


def test_quoted_printable_body() -> None:
    body = quopri.encodestring("Température: 95 °C — kritisch\n".encode("utf-8"))
    parsed = parse(message("""From: a@b.example
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable""", body))
    assert parsed.body == "Température: 95 °C — kritisch"


def test_base64_body() -> None:
    body = base64.encodebytes("Сервер недоступен".encode("koi8-r"))
    parsed = parse(message("""From: a@b.example
Content-Type: text/plain; charset="koi8-r"
Content-Transfer-Encoding: BASE64""", body))
    assert parsed.body == "Сервер недоступен"


@pytest.mark.parametrize("charset,text,codec", [
    ("iso-gb2312", "磁盘空间不足", "gb2312"),
    ("ks_c_5601-1987", "디스크 공간 부족", "cp949"),
    ("unicode-1-1-utf-7", "Plattenplatz knapp: 95 %", "utf-7"),
    ("x-totally-unknown", "Ärger", "utf-8"),
    ("x-totally-unknown", "Ärger", "cp1252"),
])
def test_odd_and_unknown_charsets(charset: str, text: str, codec: str) -> None:
    parsed = parse(message(f"From: a@b.example\nContent-Type: text/plain; charset={charset}",
                           text.encode(codec)))
    assert parsed.body == text
    assert parsed.parse_error is None
    if charset.startswith("x-"):
        assert "unknown charset 'x-totally-unknown'" in parsed.defects


def test_charset_codecs_that_are_not_charsets_are_refused() -> None:
    for charset in ("punycode", "idna", "unicode_escape", "rot13", "zlib"):
        text, _ = decode_text(b"\\N{BULLET} caf\xc3\xa9", charset)
        assert text == "\\N{BULLET} café"


def test_iso2022jp_without_charset_is_sniffed() -> None:
    parsed = parse(message("From: a@b.example\nContent-Type: text/plain;", "お問い合わせ".encode("iso2022_jp")))
    assert parsed.body == "お問い合わせ"


def test_html_only_mail_becomes_text() -> None:
    parsed = parse(message("From: a@b.example\nContent-Type: text/html; charset=utf-8", """<html>
<head><style>p {color: red}</style></head><body><h1>Backup failed</h1>
<p>Job <b>Nightly</b> on <i>SRV01</i> failed.</p><table><tr><td>Status</td><td>Error</td></tr></table>
<img src="cid:logo"></body></html>"""))
    assert "Backup failed" in parsed.body and "Job Nightly on SRV01 failed." in parsed.body
    assert "Status" in parsed.body and "<" not in parsed.body and "color" not in parsed.body


def test_html_meta_charset_used_when_mime_has_none() -> None:
    html = '<html><head><meta charset="windows-1251"></head><body>Сбой</body></html>'
    parsed = parse(message("From: a@b.example\nContent-Type: text/html", html.encode("cp1251")))
    assert parsed.body == "Сбой"


def test_neither_text_nor_html_gives_empty_body() -> None:
    raw = multipart([("Content-Type: image/png\nContent-Transfer-Encoding: base64",
                      base64.encodebytes(b"\x89PNG..."))])
    parsed = parse(raw)
    assert parsed.body == "" and parsed.attachments[0].data == b"\x89PNG..."


def test_alternative_prefers_plain_and_token_found_once() -> None:
    plain = f"Disk full\n{TOKEN}\n".encode()
    html_part = f"<p>Disk full</p><p>{TOKEN.replace('<', '&lt;').replace('>', '&gt;')}</p>".encode()
    parsed = parse(multipart([("Content-Type: text/plain; charset=utf-8", plain),
                              ("Content-Type: text/html; charset=utf-8", html_part)], "alternative"))
    assert parsed.body.startswith("Disk full")
    assert len(parsed.ates) == 1
    assert parsed.ates_token is not None
    assert parsed.ates_token.alert_id == TokenRef("8932", "Kaseya")
    assert parsed.attachments == ()


def test_escaped_token_in_html_only_mail() -> None:
    token = TOKEN.replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    parsed = parse(message("From: a@b.example\nContent-Type: text/html; charset=utf-8",
                           f"<html><body><p>Alert</p><p>{token}</p></body></html>"))
    assert parsed.ates_token is not None
    assert parsed.ates_token.customer_id == TokenRef("100", "Kaseya")


def test_token_with_curly_quotes_and_missing_source_in_qp_body() -> None:
    text = "Alert\n<Autotask><AlertID source=”N-central” name=”55”/><TicketID name=”T1”/></Autotask>\n"
    parsed = parse(message("""From: a@b.example
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable""", quopri.encodestring(text.encode())))
    (token,) = parsed.ates
    assert token.alert_id == TokenRef("55", "N-central")
    assert token.problems == ("TicketID has no source attribute",)


def test_several_tokens_kept_in_order() -> None:
    body = "\n".join(f'<Autotask><AlertID source="s" name="{i}"/></Autotask>' for i in (3, 1, 2))
    parsed = parse(message("From: a@b.example", body))
    assert [t.alert_id.name for t in parsed.ates if t.alert_id] == ["3", "1", "2"]


# -- XML parts --------------------------------------------------------------------------------


def test_xml_transaction_as_plain_body() -> None:
    parsed = parse(message("From: rmm@acme.example\nContent-Type: text/plain", b"\r\n  " + TRANSACTION))
    (xml,) = parsed.xml_parts
    assert isinstance(parse_transaction(xml), Transaction)


def test_xml_transaction_in_base64_attachment() -> None:
    raw = multipart([("Content-Type: text/plain", b"see attachment"),
                     ('Content-Type: application/xml; name="tx.xml"\nContent-Transfer-Encoding: base64',
                      base64.encodebytes(TRANSACTION))])
    parsed = parse(raw)
    assert parsed.body == "see attachment"
    assert parsed.xml_parts == (TRANSACTION,)
    assert parsed.attachments[0].filename == "tx.xml"
    assert isinstance(parse_transaction(parsed.xml_parts[0]), Transaction)


def test_xml_in_quoted_printable_text_xml_and_by_filename() -> None:
    raw = multipart([("Content-Type: text/xml; charset=utf-8\nContent-Transfer-Encoding: quoted-printable",
                      quopri.encodestring(TRANSACTION)),
                     ('Content-Type: application/octet-stream\nContent-Disposition: attachment; filename="t.XML"',
                      TRANSACTION)])
    assert parse(raw).xml_parts == (TRANSACTION, TRANSACTION)


def test_xml_body_in_latin1_without_declaration_is_reencoded() -> None:
    xml = '<mailbridge-transaction version="1"><application>Café</application></mailbridge-transaction>'
    parsed = parse(message("From: a@b.example\nContent-Type: text/plain; charset=iso-8859-1",
                           xml.encode("latin-1")))
    assert parse_untrusted(parsed.xml_parts[0]).findtext("application") == "Café"


def test_html_body_is_not_an_xml_candidate() -> None:
    parsed = parse(message("From: a@b.example\nContent-Type: text/html", "<html><body>x</body></html>"))
    assert parsed.xml_parts == ()


def test_oversized_xml_part_is_cut_so_xmlsafe_refuses_it() -> None:
    big = b"<r>" + b"<a>x</a>" * 10_000 + b"</r>"
    raw = multipart([("Content-Type: application/xml\nContent-Transfer-Encoding: base64",
                      base64.encodebytes(big))])
    parsed = parse(raw, limits=MimeLimits(max_xml_bytes=1000))
    (xml,) = parsed.xml_parts
    assert len(xml) == 1001 and xml == big[:1001]
    with pytest.raises(UnsafeXml, match="too large"):
        parse_untrusted(xml, max_bytes=1000)


# -- attachments and size ---------------------------------------------------------------------


def test_small_attachment_kept_big_one_listed_without_data() -> None:
    small = b"\x00\x01" * 100
    raw = multipart([("Content-Type: text/plain", b"body"),
                     ('Content-Type: application/pdf\nContent-Disposition: attachment; filename="a.pdf"\n'
                      "Content-Transfer-Encoding: base64", base64.encodebytes(small)),
                     ('Content-Type: application/zip\nContent-Disposition: attachment; filename="b.zip"\n'
                      "Content-Transfer-Encoding: base64", base64.encodebytes(b"z" * 5000))])
    parsed = parse(raw, limits=MimeLimits(max_attachment_bytes=1000))
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("a.pdf", "application/pdf", small), ("b.zip", "application/zip", b"")]
    assert "attachment b.zip not kept: over 1000 bytes" in parsed.defects


def test_rfc2231_and_encoded_word_filenames() -> None:
    raw = multipart([("Content-Type: application/pdf\nContent-Disposition: attachment;\n"
                      " filename*=UTF-8''R%C3%A9sum%C3%A9.pdf", b"%PDF"),
                     ('Content-Type: application/pdf; name="=?utf-8?B?w5xiZXJzaWNodC5wZGY=?="', b"%PDF")])
    assert [a.filename for a in parse(raw).attachments] == ["Résumé.pdf", "Übersicht.pdf"]


def test_uuencoded_attachment() -> None:
    encoded = b"begin 644 report.txt\n" + binascii.b2a_uu(b"uuencoded report") + b"`\nend\n"
    raw = multipart([("Content-Type: text/plain", b"see file"),
                     ('Content-Type: application/octet-stream; name="report.txt"\n'
                      "Content-Transfer-Encoding: x-uuencode", encoded)])
    assert parse(raw).attachments[0].data == b"uuencoded report"


def test_fifty_megabyte_attachment_is_not_copied() -> None:
    line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n"
    payload = line * (50 * 1024 * 1024 // 57)
    raw = multipart([("Content-Type: text/plain", b"Backup report attached"),
                     ('Content-Type: application/octet-stream\nContent-Disposition: attachment; '
                      'filename="backup.img"\nContent-Transfer-Encoding: base64', payload)])
    del payload
    assert len(raw) > 65_000_000
    tracemalloc.start()
    try:
        parsed = parse(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert parsed.body == "Backup report attached"
    assert parsed.attachments[0].filename == "backup.img" and parsed.attachments[0].data == b""
    assert peak < 2 * 1024 * 1024, f"parse allocated {peak} bytes for a {len(raw)} byte message"


def test_huge_text_part_is_cut() -> None:
    parsed = parse(message("From: a@b.example", b"x" * 5000), limits=MimeLimits(max_text_bytes=1000))
    assert parsed.body == "x" * 1000
    assert "text/plain part cut at 1000 bytes" in parsed.defects


# -- broken structure -------------------------------------------------------------------------


def test_missing_closing_boundary() -> None:
    parsed = parse(multipart([("Content-Type: text/plain", b"first"),
                              ("Content-Type: text/plain", b"second\r\n")], close=False))
    assert parsed.body == "first\n\nsecond"
    assert "closing MIME boundary missing" in parsed.defects


def test_multipart_without_boundary_lines_is_read_as_text() -> None:
    raw = message("""From: a@b.example
Content-Type: multipart/mixed; boundary="never-used"
Content-Transfer-Encoding: quoted-printable""", b"=E4=F6=FC ad asd\r\n")
    parsed = parse(raw)
    assert parsed.body == "äöü ad asd"
    assert "multipart without usable boundary; body read as text" in parsed.defects


def test_boundary_prefix_of_nested_boundary_is_not_confused() -> None:
    inner = b"--XyZ-inner\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--XyZ-inner--"
    raw = multipart([("Content-Type: multipart/alternative; boundary=XyZ-inner", inner),
                     ("Content-Type: text/plain", b"outer")])
    assert parse(raw).body == "inner text\n\nouter"


def test_many_boundary_lookalikes_switch_to_the_regex_scan() -> None:
    noise = b"--XyZ-not-a-boundary\r\n" * 3000
    raw = multipart([("Content-Type: text/plain", noise + b"first"), ("Content-Type: text/plain", b"second")])
    parsed = parse(raw)
    assert parsed.body.endswith("first\n\nsecond") and parsed.body.count("--XyZ-not") == 3000
    assert parsed.defects == ()


def test_part_limit() -> None:
    raw = multipart([("Content-Type: text/plain", f"p{i}".encode()) for i in range(20)])
    parsed = parse(raw, limits=MimeLimits(max_parts=5))
    assert parsed.body == "p0\n\np1\n\np2\n\np3"  # the multipart itself is one of the five
    assert "more than 5 MIME parts; rest ignored" in parsed.defects


def test_nesting_limit() -> None:
    body = b"leaf"
    for depth in range(30):
        b = f"b{depth}".encode()
        body = b"--" + b + b"\r\nContent-Type: text/plain\r\n\r\nx\r\n--" + b + b"\r\n" \
               + (f"Content-Type: multipart/mixed; boundary=b{depth - 1}\r\n\r\n".encode() if depth else b"\r\n") \
               + body + b"\r\n--" + b + b"--"
    raw = message("From: a@b.example\nContent-Type: multipart/mixed; boundary=b29", body)
    parsed = parse(raw)
    assert "multipart nesting too deep; inner parts ignored" in parsed.defects
    assert parsed.parse_error is None


def test_mbox_from_line_and_junk_before_headers() -> None:
    parsed = parse(b"From monitor@rmm.example Tue Mar  3 10:15:00 2026\n" + message(
        "From: monitor@rmm.example\nSubject: mbox", eol="\n"))
    assert (parsed.sender, parsed.subject, parsed.defects) == ("monitor@rmm.example", "mbox", ())
    parsed = parse(b"---- Original email message ----\r\n" + message("From: x@y.example\nSubject: junk"))
    assert parsed.subject == "junk" and "skipped 1 line(s) before the headers" in parsed.defects


def test_glued_headers_are_split() -> None:
    raw = (b"From: me@example.com\nDate: Fri, 07 Apr 2023 17:30:44 +0200Received: from m241 by mx;"
           b" Fri, 07 Apr 2023 17:30:45 +0200\nSubject: glued\n\nbody\n")
    parsed = parse(raw)
    assert parsed.date == datetime(2023, 4, 7, 17, 30, 44, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.headers["received"] == ("from m241 by mx; Fri, 07 Apr 2023 17:30:45 +0200",)


def test_unindented_continuation_and_missing_separator() -> None:
    raw = b"From: a@b.example\nX-Tracker: H4sIAAAA\nIg5drOCwmrVzP5sDo\nSubject: still a header\n\nbody\n"
    parsed = parse(raw)
    assert parsed.subject == "still a header" and parsed.header("x-tracker") == "H4sIAAAA Ig5drOCwmrVzP5sDo"
    parsed = parse(b"From: a@b.example\nSubject: s\nThis line starts the body.\nAnd this.\n")
    assert parsed.body == "This line starts the body.\nAnd this."
    assert "no blank line between headers and body" in parsed.defects


def test_empty_and_headerless_input() -> None:
    assert parse(b"").parse_error == "empty message"
    assert parse(b" \r\n\r\n").parse_error == "empty message"
    assert parse("text").parse_error == "input is str, not bytes"  # type: ignore[arg-type]
    parsed = parse(b"\xff\xfe just some garbage without headers")
    assert parsed.parse_error is None and "garbage" in parsed.body
    assert "no header block" in parsed.defects


# -- properties -------------------------------------------------------------------------------

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "zammad-mail"


def _seeds() -> list[bytes]:
    seeds = [
        message("From: a@b.example\nSubject: =?utf-8?Q?x?=", TOKEN),
        multipart([("Content-Type: text/plain", b"a"), ("Content-Type: text/html", b"<b>b</b>")], "alternative"),
        multipart([("Content-Type: application/xml\nContent-Transfer-Encoding: base64",
                    base64.encodebytes(TRANSACTION))]),
    ]
    if CORPUS.is_dir():
        seeds += [p.read_bytes()[:20_000] for p in sorted(CORPUS.glob("*.box"))[::8]]
    return seeds


SEEDS = _seeds()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_never_raise(raw: bytes) -> None:
    parsed = parse(raw)
    assert isinstance(parsed, ParsedMessage)
    assert_clean(parsed)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(range(len(SEEDS))), st.randoms(use_true_random=False),
       st.integers(min_value=1, max_value=20))
def test_mutated_real_messages_never_raise(index: int, rnd: random.Random, edits: int) -> None:
    data = bytearray(SEEDS[index])
    for _ in range(edits):
        if not data:
            break
        at = rnd.randrange(len(data))
        op = rnd.randrange(5)
        if op == 0:
            data[at] = rnd.randrange(256)
        elif op == 1:
            del data[at:at + rnd.randrange(1, 200)]
        elif op == 2:
            data[at:at] = rnd.choice([b"\r\n", b"\n\n", b"--", b"=?utf-8?B?", b"?=", b":", b"\x00",
                                      b"Content-Type: multipart/mixed; boundary=x\n", b"--x\n"])
        elif op == 3:
            chunk = data[at:at + rnd.randrange(1, 500)]
            data[at:at] = chunk
        else:
            del data[at:]
    parsed = parse(bytes(data))
    assert isinstance(parsed, ParsedMessage)
    assert_clean(parsed)


_ATEXT = st.text(alphabet="abcXYZ019!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=8)
_LOCAL = st.lists(_ATEXT, min_size=1, max_size=3).map(".".join)
_DOMAIN = st.lists(st.text(alphabet="abz09-", min_size=1, max_size=6), min_size=1, max_size=3).map(".".join)
_NAME = st.text(alphabet="ab Z.,'\"-=?\\", max_size=12)


@settings(max_examples=300, deadline=None)
@given(_LOCAL, _DOMAIN, _NAME, st.sampled_from(["bare", "plain", "quoted"]))
def test_address_fast_path_agrees_with_getaddresses(local: str, domain: str, name: str, form: str) -> None:
    from bridge.parse.mime import _addresses, _addresses_general

    address = f"{local}@{domain}"
    value = {"bare": address, "plain": f"{name} <{address}>", "quoted": f'"{name}" <{address}>'}[form]
    fold = [(" ".join(n.split()), a) for n, a in _addresses_general(value)]
    assert [(" ".join(n.split()), a) for n, a in _addresses(value)] == fold


_PTOKEN = st.text(alphabet="abcXYZ09-._+", min_size=1, max_size=8)
_PVALUE = st.one_of(_PTOKEN, _PTOKEN.map(lambda t: f'"{t} x;y"'), st.just('""'))


@settings(max_examples=300, deadline=None)
@given(_PTOKEN, _PTOKEN, st.lists(st.tuples(st.sampled_from(["charset", "boundary", "name", "Name", "x"]),
                                            _PVALUE), max_size=4),
       st.sampled_from(["", ";", " ; "]))
def test_content_type_fast_path_agrees_with_email(main: str, sub: str, params: list[tuple[str, str]],
                                                  tail: str) -> None:
    from email.message import Message

    from bridge.parse.mime import _mime_info

    value = f"{main}/{sub}" + "".join(f"; {k}={v}" for k, v in params) + tail
    msg = Message()
    msg["Content-Type"] = value
    info = _mime_info(value.encode("latin-1"), None, "text/plain")
    assert info.ctype == msg.get_content_type()
    assert info.boundary == msg.get_boundary()
    assert info.charset == (msg.get_content_charset() or None)  # an empty charset is no charset
    assert (info.filename or None) == (msg.get_filename() or None)
