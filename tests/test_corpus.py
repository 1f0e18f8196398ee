"""Every message of the Zammad corpus (../shared/corpus, SPEC §6) parses to something usable.

The corpus is AGPL test data kept beside the checkout, not in it; without it this module is
skipped. Besides "does not raise", a handful of messages are checked for the specific oddity
they carry (see ../shared/corpus/README.md).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bridge.models import ParsedMessage
from bridge.parse.mime import parse

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "zammad-mail"
if not CORPUS.is_dir():
    pytest.skip(f"corpus not found at {CORPUS}", allow_module_level=True)

pytestmark = pytest.mark.corpus
FILES = sorted(CORPUS.glob("*.box"))


def load(name: str) -> ParsedMessage:
    return parse((CORPUS / name).read_bytes())


def test_corpus_is_complete() -> None:
    assert len(FILES) == 116


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_parses_without_raising(path: Path) -> None:
    parsed = parse(path.read_bytes())
    assert isinstance(parsed, ParsedMessage)
    assert parsed.parse_error is None, parsed.parse_error
    strings = [parsed.subject, parsed.sender, parsed.sender_name, parsed.body,
               *parsed.recipients, *parsed.defects, *parsed.headers]
    strings += [v for values in parsed.headers.values() for v in values]
    for text in strings:
        text.encode("utf-8")  # storable: no lone surrogates anywhere
    assert parsed.headers, "every corpus message has headers"


def test_spoofed_encoded_from_stays_literal() -> None:
    assert load("mail118.box").sender == "=?utf-8?q?agent?=@example.com"
    assert load("mail118.box").sender != "agent@example.com"
    assert load("mail117.box").sender == "=?utf-8?q?attacker?q?agent?=@victim.example"


def test_glued_date_and_received() -> None:
    parsed = load("mail107.box")
    assert parsed.date == datetime(2023, 4, 7, 17, 30, 44, tzinfo=timezone(timedelta(hours=2)))
    assert parsed.headers["received"][0].startswith("from m241-41.example.com")


def test_unindented_header_continuation_mail054() -> None:
    parsed = load("mail054.box")
    assert parsed.subject == "AW: One Net Business"
    assert parsed.sender == "karoline.smith@example.com"


def test_junk_line_before_headers_mail068() -> None:
    parsed = load("mail068.box")
    assert parsed.subject == "Contact from Server"
    assert parsed.sender == "xxxxx@xxxxx.cz"
    assert "Contact form" in parsed.body


def test_encoded_comma_in_display_name_mail065() -> None:
    parsed = load("mail065.box")
    assert (parsed.sender, parsed.sender_name) == ("smith@example.com", "Bürling, Andreas")


def test_unknown_and_odd_charsets() -> None:
    assert load("mail060.box").body.startswith("Here it goes - ")  # iso-gb2312 (mixed garbage)
    assert load("mail119.box").subject == "Запрос цены"  # ks_c_5601-1987 label on Cyrillic
    assert "Übermittlungsstatus" in load("mail018.box").subject  # unicode-1-1-utf-7 report
    assert load("mail116.box").body.startswith("これはテストメールです。")  # ISO-2022-JP, no charset


def test_bounces_keep_their_report_parts() -> None:
    types = [a.content_type for a in load("mail033-undelivered-mail-returned-to-sender.box").attachments]
    assert types == ["message/delivery-status", "message/rfc822"]


def test_broken_multiparts_still_give_a_body() -> None:
    assert load("mail105.box").body.startswith("äöüß ad asd")  # no boundary lines at all
    parsed = load("mail089.box")  # closing boundary missing
    assert "closing MIME boundary missing" in parsed.defects and parsed.body


def test_invalid_date_is_none_mail074() -> None:
    parsed = load("mail074.box")
    assert parsed.date is None and "invalid Date header" in parsed.defects


def test_uuencoded_attachment_mail078() -> None:
    parsed = load("mail078-content_transfer_encoding_x_uuencode.box")
    (word,) = [a for a in parsed.attachments if a.content_type == "application/msword"]
    assert word.filename == "PGP_Cmts_on_12-14-01_Pkg.txt" and word.data


def test_big_pdf_listed_without_data_mail082() -> None:
    parsed = load("mail082.box")
    big = [a for a in parsed.attachments if a.content_type == "application/pdf" and not a.data]
    assert big and any("not kept" in d for d in parsed.defects)
