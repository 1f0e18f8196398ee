"""classify(): the SPEC §3.4 precedence, sender forms, skip, accounts, ATES, status, keys."""

from dataclasses import replace
from pathlib import Path

import pytest

from bridge.classify import classify
from bridge.models import Kind
from tests.test_rules_support import CTX, make_rules, msg, token

BASIC = """
[[detect]]
name = "nagios"
sender = "nagios@monitor.msp.example"
subject = "PROBLEM"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]

[[detect]]
name = "backup-domain"
sender = "@backup.msp.example"
product_group = "backup"
alert_type = "Backup Failed"
resolved = ["[Success]"]

[[detect]]
name = "wild"
sender = "*@*.rmm.example"
product_group = "rmm"
alert_type = "Alert"
resolved = ["Resolved"]

[[detect]]
name = "subject-only"
subject = ["Alert for Site", "Watchdog"]
product_group = "network"
alert_type = "Interface Down"
resolved = ["is Up"]

[[skip]]
name = "healed"
subject = "Self Healed"

[[skip]]
name = "noise"
subject = "informational"
forward_to = "noc@msp.example"

[[account]]
name = "site"
after = "Alert for Site"
before = ","
search = ["name"]

[[account]]
name = "host"
after = "Host:"

[[account]]
name = "tail"
before = "reports"

[[account]]
name = "by-sender"
from = "sender"
"""


@pytest.fixture
def rules(tmp_path: Path):
    return make_rules(tmp_path, BASIC)


# -- 1. detection --------------------------------------------------------------------------

def test_sender_and_subject_are_anded_case_insensitively(rules) -> None:
    c = classify(msg("problem Host: Acme Corp", "NAGIOS@Monitor.MSP.example"), rules, CTX)
    assert c.kind is Kind.ALERT and c.rule == "10-test.toml:nagios"
    # right sender, wrong subject: not this rule, and no other: regular
    c = classify(msg("all fine", "nagios@monitor.msp.example"), rules, CTX)
    assert c.kind is Kind.REGULAR
    # right subject, wrong sender
    assert classify(msg("PROBLEM Host: Acme Corp", "x@y.example"), rules, CTX).kind is Kind.REGULAR


def test_domain_sender_matches_that_domain_only(rules) -> None:
    assert classify(msg("[Failed] Host: Initech", "veeam@backup.msp.example"), rules,
                    CTX).rule == "10-test.toml:backup-domain"
    assert classify(msg("[Failed] Host: Initech", "veeam@sub.backup.msp.example"), rules,
                    CTX).kind is Kind.REGULAR


def test_wildcard_sender(rules) -> None:
    c = classify(msg("Disk Host: Initech", "agent@eu.rmm.example"), rules, CTX)
    assert c.rule == "10-test.toml:wild"
    assert classify(msg("Disk Host: Initech", "agent@rmm.example"), rules, CTX).kind is Kind.REGULAR


def test_subject_only_rule_any_of_its_phrases(rules) -> None:
    c = classify(msg("Watchdog Host: Initech", "someone@else.example"), rules, CTX)
    assert c.rule == "10-test.toml:subject-only"


def test_first_match_wins_in_rule_order(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [[detect]]
        name = "first-wildcard"
        sender = "*@*.msp.example"
        subject = "Disk"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["OK"]

        [[detect]]
        name = "second-exact"
        sender = "nagios@monitor.msp.example"
        product_group = "servers"
        alert_type = "Service Critical"
        resolved = ["OK"]
    """)
    # the indexed exact rule is found first by the index, but the earlier wildcard rule wins
    c = classify(msg("Disk Host: Acme Corp", "nagios@monitor.msp.example"), rs, CTX)
    assert c.rule == "10-test.toml:first-wildcard"
    c = classify(msg("CPU Host: Acme Corp", "nagios@monitor.msp.example"), rs, CTX)
    assert c.rule == "10-test.toml:second-exact"


def test_rules_in_later_files_come_later(tmp_path: Path) -> None:
    rule = """
        [[detect]]
        name = "{n}"
        sender = "a@b.example"
        subject = "{s}"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["OK"]
    """
    rs = make_rules(tmp_path, rule.format(n="late", s="disk"),
                    **{"05-early.toml": rule.format(n="early", s="full")})
    assert classify(msg("disk full Host: Initech", "a@b.example"), rs, CTX).rule == "05-early.toml:early"
    assert classify(msg("disk Host: Initech", "a@b.example"), rs, CTX).rule == "10-test.toml:late"


# -- 2. skip -------------------------------------------------------------------------------

def test_skip_forwards_to_internal_address_or_the_rules_own(rules) -> None:
    c = classify(msg("PROBLEM Self Healed Host: Acme Corp", "nagios@monitor.msp.example"), rules, CTX)
    assert (c.kind, c.forward_to, c.rule) == (Kind.SKIPPED, "support@msp.example", "10-test.toml:healed")
    c = classify(msg("PROBLEM informational", "nagios@monitor.msp.example"), rules, CTX)
    assert (c.kind, c.forward_to) == (Kind.SKIPPED, "noc@msp.example")


def test_skip_rules_only_apply_to_automated_mail(rules) -> None:
    c = classify(msg("Self Healed", "jane@acme.example"), rules, CTX)
    assert c.kind is Kind.REGULAR


# -- 3. account ----------------------------------------------------------------------------

def test_account_between_two_phrases(rules) -> None:
    c = classify(msg("Alert for Site Globex Corporation, sensor Ping is Down", "p@q.example"),
                 rules, CTX)
    assert c.alert is not None and c.alert.account_id == "GLOBEX-002"
    assert "between 'Alert for Site' and ','" in (c.account_how or "")


def test_account_between_with_missing_before_phrase(rules) -> None:
    c = classify(msg("Alert for Site Globex Corporation sensor Ping is Down", "p@q.example"),
                 rules, CTX)
    assert c.kind is Kind.UNMATCHED and c.forward_to == "support@msp.example"
    assert any("',' not found after 'Alert for Site'" in s for s in c.steps)


def test_account_after_takes_the_longest_name(rules) -> None:
    c = classify(msg("PROBLEM Host: Acme Corp web01 is DOWN", "nagios@monitor.msp.example"),
                 rules, CTX)
    assert c.alert is not None and c.alert.account_id == "ACME-001"
    assert c.account_how and "'acme corp' via name" in c.account_how


def test_account_after_at_end_of_subject_and_by_foreign_or_record_id(rules) -> None:
    for found in ("acme", "ACME-001", "  Acme HQ "):
        c = classify(msg(f"PROBLEM Host: {found}", "nagios@monitor.msp.example"), rules, CTX)
        assert c.alert is not None and c.alert.account_id == "ACME-001", found


def test_account_before_a_phrase(rules) -> None:
    c = classify(msg("PROBLEM: Initech Montréal reports a disk", "nagios@monitor.msp.example"),
                 rules, CTX)
    assert c.alert is not None and c.alert.account_id == "INITECH-003"


def test_account_non_latin_name(rules) -> None:
    c = classify(msg("PROBLEM Host: ЗОНТИК", "nagios@monitor.msp.example"), rules, CTX)
    assert c.alert is not None and c.alert.account_id == "UMBRELLA-004"


def test_account_from_sender_address_and_parent_domain(rules) -> None:
    c = classify(msg("PROBLEM x", "nagios@monitor.msp.example"), rules, CTX)
    assert c.kind is Kind.UNMATCHED
    rs_msg = msg("Disk", "agent@eu.rmm.example")
    assert classify(rs_msg, rules, CTX).kind is Kind.UNMATCHED
    c = classify(msg("Watchdog", "fw@site1.initech.example"), rules, CTX)
    assert c.alert is not None and c.alert.account_id == "INITECH-003"
    assert "via sender domain initech.example" in (c.account_how or "")
    c = classify(msg("Watchdog", "alerts@globex.example"), rules, CTX)
    assert c.alert is not None and c.alert.account_id == "GLOBEX-002"


def test_account_rule_limited_to_detect_rules(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [[detect]]
        name = "a"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["OK"]

        [[detect]]
        name = "b"
        sender = "b@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["OK"]

        [[account]]
        name = "only-a"
        for_rules = ["a"]
        after = "customer"
    """)
    assert classify(msg("customer Initech", "a@x.example"), rs, CTX).kind is Kind.ALERT
    assert classify(msg("customer Initech", "b@x.example"), rs, CTX).kind is Kind.UNMATCHED


def test_account_from_body_line_and_regex(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [[detect]]
        name = "a"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["OK"]

        [[account]]
        name = "body"
        from = "body"
        after = "Customer:"

        [[account]]
        name = "rx"
        regex = 'cust=(?P<account>[\\w-]+)'
    """)
    c = classify(msg("disk", "a@x.example", body="Device: x\nCustomer: Soylent\nMore: y"), rs, CTX)
    assert c.alert is not None and c.alert.account_id == "SOYLENT-005"
    c = classify(msg("disk cust=umb-9 now", "a@x.example"), rs, CTX)
    assert c.alert is not None and c.alert.account_id == "UMBRELLA-004"


# -- 4./5. XML and regular -----------------------------------------------------------------

def test_xml_only_when_not_automated_and_enabled(rules) -> None:
    tx = b'<mailbridge-transaction version="1"/>'
    m = msg("order", "integrator@partner.example", xml=(b"<x/>", tx))
    assert classify(m, rules, CTX).kind is Kind.XML
    c = classify(m, rules, replace(CTX, xml_enabled=False))
    assert c.kind is Kind.REGULAR and any("disabled" in s for s in c.steps)
    other_xml = msg("export", "someone@customer.example", xml=(b"<inventory/>",))
    assert classify(other_xml, rules, CTX).kind is Kind.REGULAR
    automated = msg("PROBLEM Host: Acme Corp", "nagios@monitor.msp.example", xml=(tx,))
    assert classify(automated, rules, CTX).kind is Kind.ALERT


# -- ATES ----------------------------------------------------------------------------------

ATES_RULES = """
[[detect]]
name = "by-subject"
subject = "Disk usage"
product_group = "servers"
alert_type = "Disk Space"
resolved = ["Resolved"]

[[detect]]
name = "datto"
ates_source = "Datto RMM"
product_group = "rmm"
alert_type = "Alert"
resolved = ["Resolved"]

[[account]]
name = "host"
after = "Host:"
"""


def test_ates_token_wins_over_subject_rules_for_account_and_key(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, ATES_RULES)
    m = msg("Disk usage Host: Acme Corp", "noreply@rmm.example",
            ates=(token(customer="SOYLENT-DRMM-8841", alert="AL-77", device="SOY-WS-1"),))
    c = classify(m, rs, CTX)
    assert c.rule == "10-test.toml:by-subject"
    assert c.alert is not None
    assert c.alert.account_id == "SOYLENT-005"            # CustomerID, not the subject
    assert c.alert.alert_key == "ates:Datto RMM:alert:AL-77"
    assert c.alert.device == "SOY-WS-1"
    assert c.account_how == "ATES CustomerID 'SOYLENT-DRMM-8841' via foreign id"


def test_ates_token_alone_makes_mail_automated(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, ATES_RULES)
    c = classify(msg("Something happened", "noreply@rmm.example", ates=(token(),)), rs, CTX)
    assert c.kind is Kind.ALERT and c.rule == "10-test.toml:datto"
    c = classify(msg("Something", "n@r.example", ates=(token(source="XYZ Monitoring Application"),)),
                 rs, CTX)
    assert c.kind is Kind.UNMATCHED and "no [[detect]] rule" in c.reason


def test_ates_ticket_id_is_the_key_without_alert_id(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, ATES_RULES)
    c = classify(msg("x", "n@r.example", ates=(token(alert=None, ticket="T-9"),)), rs, CTX)
    assert c.alert is not None
    assert (c.alert.alert_key, c.alert.ticket_ref) == ("ates:Datto RMM:ticket:T-9", "T-9")


def test_untrusted_or_sourceless_tokens_are_ignored_with_a_reason(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, ATES_RULES)
    c = classify(msg("hello", "n@r.example", ates=(token(source="Evil RMM"),)), rs, CTX)
    assert c.kind is Kind.REGULAR and any("not from a configured source" in s for s in c.steps)
    c = classify(msg("hello", "n@r.example", ates=(token(source=None),)), rs, CTX)
    assert c.kind is Kind.REGULAR
    assert any("CustomerID has no source attribute" in s for s in c.steps)


def test_wrong_ates_password_or_id_is_rejected(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, ATES_RULES)
    ctx = replace(CTX, ates_id="msp.example", ates_password="s3cret")
    ok = classify(msg("x", "n@r.example", ates=(token(id="MSP.example", pw="s3cret"),)), rs, ctx)
    assert ok.kind is Kind.ALERT
    c = classify(msg("x", "n@r.example", ates=(token(id="msp.example", pw="guess"),)), rs, ctx)
    assert c.kind is Kind.REJECTED and c.reason == "wrong ATES password (PW)"
    assert "guess" not in " ".join(c.steps)
    c = classify(msg("x", "n@r.example", ates=(token(id="msp.example"),)), rs, ctx)
    assert c.kind is Kind.REJECTED and "no password" in c.reason
    c = classify(msg("x", "n@r.example", ates=(token(id="other", pw="s3cret"),)), rs, ctx)
    assert c.kind is Kind.REJECTED and "ID" in c.reason


# -- status and keys -----------------------------------------------------------------------

HOST_ACCOUNT = """
        [[account]]
        name = "host"
        after = "Host:"
"""

def test_status_phrases_rule_and_global(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [status]
        resolved = ["all clear"]
        update = ["still failing"]

        [[detect]]
        name = "own"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        open = ["PROBLEM"]
        resolved = ["OK"]

        [[detect]]
        name = "global"
        sender = "b@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        status_in = "both"
    """ + HOST_ACCOUNT)

    def status(subject: str, sender: str, body: str = "") -> str:
        c = classify(msg(subject + " Host: Initech", sender, body), rs, CTX)
        assert c.alert is not None, c
        return c.alert.status

    assert status("disk is OK", "a@x.example") == "resolved"
    assert status("BOOK keeping", "a@x.example") == "open"          # no word-part matches
    assert status("PROBLEM: disk is OK", "a@x.example") == "open"   # open phrases first
    assert status("All Clear", "b@x.example") == "resolved"         # global list
    assert status("disk is OK", "b@x.example") == "open"            # global replaced defaults
    assert status("disk", "b@x.example", body="it is still failing") == "update"


def test_keys_from_template_regex_and_default(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [[detect]]
        name = "tmpl"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Service Critical"
        key_regex = 'Alert: (?P<host>\\w+)/(?P<service>\\w+)'
        key = "n:{account}:{host}:{service}"
        open = ["PROBLEM"]
        resolved = ["RECOVERY"]

        [[detect]]
        name = "rx"
        sender = "b@x.example"
        product_group = "servers"
        alert_type = "Service Critical"
        key_regex = 'job (?P<job>\\S+)'
        resolved = ["Success"]

        [[detect]]
        name = "default"
        sender = "c@x.example"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = ["RECOVERY", "OK"]
    """ + HOST_ACCOUNT)

    def key(subject: str, sender: str) -> str:
        c = classify(msg(subject, sender, body="Customer Initech"), rs, CTX)
        assert c.alert is not None, c
        return c.alert.alert_key

    rs_acc = "Host: Initech"
    assert key(f"PROBLEM Alert: web01/HTTP {rs_acc}", "a@x.example") == "n:INITECH-003:web01:HTTP"
    assert key(f"RECOVERY Alert: web01/HTTP {rs_acc}", "a@x.example") == "n:INITECH-003:web01:HTTP"
    # the template lacks its fields when key_regex does not match: the default key is used
    assert key(f"PROBLEM other {rs_acc}", "a@x.example") == "INITECH-003:Service Critical:other host initech"
    assert key(f"Failed job Nightly-1 {rs_acc}", "b@x.example") == "INITECH-003:Service Critical:nightly-1"
    assert key(f"Success job NIGHTLY-1 {rs_acc}", "b@x.example") == "INITECH-003:Service Critical:nightly-1"
    assert (key(f"disk C: full {rs_acc}", "c@x.example")
            == key(f"Re: RECOVERY disk C: full OK {rs_acc}", "c@x.example")
            == "INITECH-003:Disk Space:disk c full host initech")


def test_title_summary_device_from_templates(tmp_path: Path) -> None:
    rs = make_rules(tmp_path, """
        [[detect]]
        name = "t"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Service Critical"
        subject_regex = 'on (?P<host>\\S+)'
        body_regex = ['Severity: (?P<sev>\\w+)']
        device = "{host}"
        title = "{host}: {subject}"
        summary = "[{sev}] {account_name} ({account}) via {rule} from {sender}: {body}"
        resolved = ["OK"]
    """ + HOST_ACCOUNT)
    c = classify(msg("Disk full on srv1 Host: Initech", "a@x.example", body="Severity: High"),
                 rs, CTX)
    assert c.alert is not None
    assert c.alert.device == "srv1"
    assert c.alert.title == "srv1: Disk full on srv1 Host: Initech"
    assert c.alert.summary == "[High] Initech (INITECH-003) via t from a@x.example: Severity: High"


def test_trace_names_each_step(rules) -> None:
    c = classify(msg("PROBLEM Host: Acme Corp", "nagios@monitor.msp.example"), rules, CTX)
    assert [s.split(":")[0] for s in c.steps] == ["detect", "skip", "account", "status", "key"]
    assert c.steps[0] == ("detect: matched 10-test.toml:nagios (sender nagios@monitor.msp.example"
                          " AND subject 'PROBLEM')")
    assert c.steps[2].startswith("account: ACME-001 from subject after 'Host:'")
