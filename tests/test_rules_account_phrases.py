"""Account phrases (after/before) try runs of any length, bounded by the line and the
longest name in the accounts directory — and stay fast on a huge line."""

from __future__ import annotations

import time

from bridge.classify.account_rule import AccountRule, _runs
from bridge.classify.accounts import Account, AccountsDirectory
from bridge.classify.text import Phrase
from bridge.classify.view import MessageView
from tests.test_rules_support import msg

LONG = "Kreisverwaltung des Landkreises Nordwestmecklenburg Fachdienst Informationstechnik " \
       "und Digitalisierung Standort Grevesmühlen Haus B"  # 12 words
ACCOUNTS = AccountsDirectory([
    Account("KV-001", LONG, aliases=("KV NWM",)),
    Account("ACME-001", "Acme Corp", foreign_ids=("acme",)),
    Account("AC-002", "Acme"),
])


def rule(**kw: object) -> AccountRule:
    return AccountRule(name="t", file="t.toml", line=1, **kw)  # type: ignore[arg-type]


def found(r: AccountRule, subject: str = "", body: str = "") -> str:
    hit = r.find(MessageView(msg(subject, "a@x.example", body=body)), ACCOUNTS)
    return hit[0].id if isinstance(hit, tuple) else f"none: {hit}"


def test_a_name_longer_than_eight_words_is_found_after_and_before() -> None:
    after = rule(after=Phrase.compile("Alert for"))
    assert found(after, f"Disk Alert for {LONG} | sensor C: full") == "KV-001"
    before = rule(before=Phrase.compile("reports"))
    assert found(before, f"[Nagios] {LONG} reports a full disk") == "KV-001"
    body = rule(source="body", after=Phrase.compile("Customer:"))
    assert found(body, "disk", f"Host: x\nCustomer: {LONG}.\nState: y") == "KV-001"


def test_the_longest_run_still_wins_and_edge_punctuation_is_stripped() -> None:
    after = rule(after=Phrase.compile("Site"))
    assert found(after, "Site | Acme Corp | | | | | | | | | | sensor") == "ACME-001"
    assert found(after, "Site Acme, Corp") == "AC-002"
    assert found(after, "Site | | |") == "none: found no text to look up"
    miss = found(after, "Site Hooli Inc")
    assert miss.startswith("none: ") and "names no account" in miss


def test_runs_are_bounded_by_the_longest_name() -> None:
    words = "| Acme Corp , web01 is down".split()
    assert ACCOUNTS.max_words() == 12 and ACCOUNTS.max_words(["foreign-id"]) == 1
    assert _runs(words, 2) == ["Acme Corp", "Acme"]
    assert _runs(words, 0) == ["Acme"]
    assert _runs(words, 3, from_end=True) == ["web01 is down", "is down", "down"]
    assert _runs([], 5) == [] and _runs(["|", ","], 5) == []


def test_a_huge_line_costs_its_length_not_its_square() -> None:
    after = rule(after=Phrase.compile("Customer:"), source="body")
    line = "Customer: " + " ".join(f"w{i}" for i in range(200_000))
    started = time.perf_counter()
    assert found(after, "disk", line).startswith("none: ")
    assert time.perf_counter() - started < 2.0
