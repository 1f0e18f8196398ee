"""Properties: classify never raises; the rule index never changes which rule wins."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.classify import ClassifyContext, classify, load_ruleset
from bridge.classify.accounts import Account, AccountsDirectory
from bridge.classify.matchers import Matcher, SenderPattern
from bridge.classify.model import DetectRule
from bridge.classify.ruleset import RuleSet
from bridge.classify.text import PhraseSet
from bridge.classify.view import MessageView
from bridge.models import AtesToken, Kind, ParsedMessage, TokenRef
from tests.test_rules_support import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = load_ruleset(ROOT / "rules", ROOT / "rules" / "accounts.csv", CATALOGUE)
WORDS = ["PROBLEM", "RECOVERY", "Alert for Site", "Globex Corporation", ",", "[Failed]",
         "Backup job '", "Acme HQ - ", "Service Alert:", "acme/", "Host:", "OK", "BOOK",
         "Résolu", "Problème:", "[", "]", "(", ")", "Self Healed", "障害", "=?utf-8?q?x?="]
SENDERS = ["nagios@monitor.msp.example", "veeam@backup.msp.example", "prtg@prtg.msp.example",
           "fw@fw.initech.example", "=?utf-8?q?nagios?=@monitor.msp.example", "", "@", "a@",
           "zabbix@zabbix.msp.example"]

SUBJECTS = ["** PROBLEM Service Alert: acme/web01/HTTP is CRITICAL **",
            "[PRTG] Alert for Site Globex Corporation, sensor Ping on device sw1 is Up",
            "[Failed] Backup job 'Umbrella Corp - SQL' (1 VM) 1 failed",
            "Resolved in 5m: disk [Initech Montréal]", "FAILED - Patch installation on X (Acme Corp)",
            "mx.msp.example; dkim=pass header.d=monitor.msp.example", "Original problem ID: 7"]
text = st.one_of(st.text(max_size=60), st.sampled_from(SUBJECTS),
                 st.lists(st.sampled_from(WORDS + SUBJECTS), max_size=8).map(" ".join))
ref = st.one_of(st.none(), st.builds(TokenRef, st.text(max_size=12),
                                     st.sampled_from([None, "", "Datto RMM", "XYZ Monitoring Application", "x"])))
tokens = st.builds(AtesToken, id=st.one_of(st.none(), st.text(max_size=8)),
                   pw=st.one_of(st.none(), st.text(max_size=8)), customer_id=ref,
                   device_id=ref, alert_id=ref, ticket_id=ref,
                   problems=st.lists(st.text(max_size=10), max_size=2).map(tuple))
header_names = st.sampled_from(["authentication-results", "received", "x-mailer", "subject", "x"])
headers = st.dictionaries(header_names, st.lists(text, max_size=3).map(tuple), max_size=4)
messages = st.builds(
    ParsedMessage, subject=text, sender=st.one_of(st.sampled_from(SENDERS), st.text(max_size=30)),
    sender_name=st.text(max_size=10), recipients=st.lists(st.text(max_size=10), max_size=2).map(tuple),
    headers=headers, body=text, ates=st.lists(tokens, max_size=2).map(tuple),
    xml_parts=st.lists(st.binary(max_size=20), max_size=1).map(tuple))
contexts = st.builds(
    ClassifyContext, ates_sources=st.just(frozenset({"Datto RMM", "XYZ Monitoring Application"})),
    ates_id=st.sampled_from([None, "", "msp.example"]), ates_password=st.sampled_from([None, "pw"]),
    authserv_ids=st.just(frozenset({"mx.msp.example"})),
    trusted_relays=st.sampled_from([frozenset(), frozenset({"192.0.2.0/24", "relay.example", "bad/99"})]),
    xml_enabled=st.booleans(), internal_address=st.sampled_from([None, "support@msp.example"]))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, contexts)
def test_classify_never_raises_and_is_consistent(m: ParsedMessage, ctx: ClassifyContext) -> None:
    c = classify(m, SHIPPED, ctx)
    assert isinstance(c.kind, Kind) and c.reason and c.steps
    assert (c.alert is not None) == (c.kind is Kind.ALERT)
    if c.alert is not None:
        assert c.alert.alert_key and c.alert.status in ("open", "update", "resolved")
        assert c.alert.product_group in CATALOGUE
        assert c.alert.alert_type in CATALOGUE[c.alert.product_group]
    assert classify(m, SHIPPED, ctx) == c  # pure: same input, same answer


VOCAB = ["disk", "cpu", "down", "alert for site", "ok", "[failed]"]
rule_parts = st.tuples(
    st.lists(st.sampled_from(["a@x.example", "@x.example", "b@y.example", "*@*.x.example",
                              "@y.example"]), max_size=2),
    st.lists(st.sampled_from(VOCAB), max_size=2))


def _rule(i: int, senders: list[str], subject: list[str]) -> DetectRule:
    matcher = Matcher(tuple(SenderPattern.parse(s) for s in senders), PhraseSet.of(subject))
    return DetectRule(name=f"r{i}", file="t.toml", line=None, matcher=matcher,
                      product_group="servers", alert_type="Disk Space")


@settings(max_examples=300, deadline=None)
@given(st.lists(rule_parts, min_size=1, max_size=12),
       st.sampled_from(["a@x.example", "c@x.example", "b@y.example", "q@eu.x.example", "z@z.example"]),
       st.lists(st.sampled_from(VOCAB + ["book", "site"]), max_size=5))
def test_index_finds_the_same_first_match_as_a_linear_scan(parts, sender, words) -> None:
    rules = [_rule(i, s, p) for i, (s, p) in enumerate(parts) if s or p]
    ruleset = RuleSet.build(rules)
    view = MessageView(ParsedMessage(subject=" ".join(words), sender=sender))
    linear = next((r for r in rules if r.matcher.match(view) is not None), None)
    indexed = next((r for r in ruleset.detect.candidates(view)
                    if r.matcher.match(view) is not None), None)
    assert indexed is linear


def test_a_thousand_sender_and_phrase_rules_are_looked_up_not_scanned() -> None:
    rules = [_rule(i, [f"tool{i}@vendor{i}.example"], []) for i in range(500)]
    rules += [_rule(500 + i, [], [f"phrase{i} alarm"]) for i in range(500)]
    accounts = AccountsDirectory(Account(f"ID-{i}", f"Customer {i}") for i in range(50_000))
    ruleset = RuleSet.build(rules, accounts=accounts)
    view = MessageView(ParsedMessage(subject="phrase77 alarm for Customer 4", sender="tool3@vendor3.example"))
    candidates = list(ruleset.detect.candidates(view))
    assert [r.name for r in candidates] == ["r3", "r577"]  # 2 evaluated out of 1,000
