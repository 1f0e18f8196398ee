"""Phrases (whole words, case-insensitive, Unicode) and templates."""

import pytest

from bridge.classify.templates import Template, TemplateError
from bridge.classify.text import Phrase, PhraseSet, fold


def found(phrase: str, text: str) -> bool:
    return Phrase.compile(phrase).search(fold(text)) is not None


@pytest.mark.parametrize("phrase,text,expected", [
    ("OK", "HTTP is OK", True),
    ("OK", "BOOK keeping", False),          # whole words only
    ("OK", "OKAY then", False),
    ("ok", "Service is OK", True),          # case-insensitive both ways
    ("RECOVERY", "** recovery Service Alert", True),
    ("PROBLEM", "PROBLEM at the start", True),   # phrase at start of subject
    ("down", "host web01 is DOWN", True),        # and at the end
    ("[Failed]", "[Failed] Backup job", True),   # no word boundary needed around brackets
    ("[Failed]", "x[failed]y", True),
    ("Alert for Site", "Alert   for\tSite Globex", True),  # any white space run
    ("is back online", "device is back  online now", True),
    ("Problem", "Problème: disque", False),      # "è" is a letter: not a whole word
    ("Problème", "PROBLÈME: disque", True),      # accents fold with case
    ("Résolu", "Re\u0301solu: ok", True),        # decomposed é equals composed é (NFC)
    ("障害", "サーバー 障害 発生", True),          # non-Latin scripts
    ("Straße", "STRASSE gesperrt", True),        # full case folding
])
def test_phrase_matching(phrase: str, text: str, expected: bool) -> None:
    assert found(phrase, text) is expected


def test_white_space_at_a_phrase_edge_is_part_of_it() -> None:
    spaced = Phrase.compile(" - ")
    m = spaced.search(fold("Backup job 'Acme-HQ - Daily'"))
    assert m is not None and m.start() == len("backup job 'acme-hq")
    assert spaced.search(fold("Acme-HQ")) is None
    assert Phrase.compile("-").search(fold("Acme-HQ")) is not None


def test_empty_phrase_is_refused() -> None:
    with pytest.raises(ValueError):
        Phrase.compile("   ")


def test_first_word_is_the_index_key() -> None:
    assert Phrase.compile("[Failed] job").first_word == "failed"
    assert Phrase.compile("!!!").first_word is None


def test_phrase_set_reports_the_phrase_as_written() -> None:
    ps = PhraseSet.of(["is Up", "RECOVERY"])
    assert ps.search(fold("sensor Ping is UP")) == "is Up"
    assert ps.search(fold("** recovery **")) == "RECOVERY"
    assert ps.search(fold("is Upper")) is None
    assert not PhraseSet(())


def test_within_means_every_text_with_the_other_has_this_one() -> None:
    assert Phrase.compile("PROBLEM").within(Phrase.compile("PROBLEM Service Alert"))
    assert not Phrase.compile("OK").within(Phrase.compile("BOOK"))


def test_template_renders_fields_and_escapes() -> None:
    t = Template.parse("{service} on {host} {{literal}}")
    assert t.fields == {"service", "host"}
    assert t.render({"service": "HTTP", "host": "web01"}) == "HTTP on web01 {literal}"
    assert t.render({}) == " on  {literal}"
    assert t.missing({"service": "HTTP"}) == ["host"]


@pytest.mark.parametrize("bad", ["{", "}", "{0.__class__}", "{a b}", "x {} y"])
def test_template_refuses_anything_but_plain_fields(bad: str) -> None:
    with pytest.raises(TemplateError):
        Template.parse(bad)
