"""Every shipped sample mail, through the real MIME parser and the shipped rules/.

The samples tell the demo's story in file order; this table is what each must become. The
context is the demo's: both ATES sources configured with the token's ID and password, the
MSP's MX as the trusted authserv-id, and an internal support address.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.classify import ClassifyContext, check_ruleset, classify, load_ruleset
from bridge.models import Kind
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE

ROOT = Path(__file__).resolve().parent.parent
RULES, ACCOUNTS, SAMPLES = ROOT / "rules", ROOT / "rules" / "accounts.csv", ROOT / "samples"
CTX = ClassifyContext(
    ates_sources=frozenset({"XYZ Monitoring Application", "Datto RMM"}),
    ates_id="msp.example", ates_password="zzZ3zZ/2Z1ZzzZZZ0zoZ9z==",
    authserv_ids=frozenset({"mx.msp.example"}), trusted_relays=frozenset(),
    xml_enabled=True, internal_address="support@msp.example")

NAGIOS_KEY = "nagios:ACME-001:web01:HTTP"
DATTO_KEY = "ates:Datto RMM:alert:a7c3f9e2-5b1d-4e8a-9c0f-2d6b8e4f1a37"
PRTG_KEY = "GLOBEX-002:Interface Down:ping:core-sw01"
VEEAM_KEY = "ACME-001:Backup Failed:acme hq - daily vms"

# file: (kind, rule, account, status, alert key or forward address)
EXPECTED: dict[str, tuple[Kind, str | None, str | None, str | None, str | None]] = {
    "01-nagios-problem.eml": (Kind.ALERT, "10-nagios.toml:nagios-service", "ACME-001", "open", NAGIOS_KEY),
    "02-nagios-problem-again.eml": (Kind.ALERT, "10-nagios.toml:nagios-service", "ACME-001", "open", NAGIOS_KEY),
    "03-nagios-forged-recovery.eml": (Kind.REJECTED, "10-nagios.toml:nagios-service", None, None, None),
    "04-nagios-recovery.eml": (Kind.ALERT, "10-nagios.toml:nagios-service", "ACME-001", "resolved", NAGIOS_KEY),
    "05-zabbix-problem.eml": (Kind.ALERT, "20-zabbix.toml:zabbix", "INITECH-003", "open", "zabbix:48213"),
    "06-zabbix-resolved.eml": (Kind.ALERT, "20-zabbix.toml:zabbix", "INITECH-003", "resolved", "zabbix:48213"),
    "07-prtg-sensor-down.eml": (Kind.ALERT, "30-prtg.toml:prtg", "GLOBEX-002", "open", PRTG_KEY),
    "08-prtg-sensor-up.eml": (Kind.ALERT, "30-prtg.toml:prtg", "GLOBEX-002", "resolved", PRTG_KEY),
    "09-veeam-failed.eml": (Kind.ALERT, "40-veeam.toml:veeam", "ACME-001", "open", VEEAM_KEY),
    "10-veeam-warning-skipped.eml": (Kind.SKIPPED, "40-veeam.toml:veeam-warning", None, None, "backup-team@msp.example"),
    "11-veeam-success.eml": (Kind.ALERT, "40-veeam.toml:veeam", "ACME-001", "resolved", VEEAM_KEY),
    "12-datto-ates-alert.eml": (Kind.ALERT, "50-rmm-ates.toml:datto-rmm", "SOYLENT-005", "open", DATTO_KEY),
    "13-datto-ates-resolved.eml": (Kind.ALERT, "50-rmm-ates.toml:datto-rmm", "SOYLENT-005", "resolved", DATTO_KEY),
    "14-xyz-self-healed-skipped.eml": (Kind.SKIPPED, "90-skip.toml:self-healed", None, None, "support@msp.example"),
    "15-fortigate-firewall.eml": (Kind.ALERT, "60-firewall.toml:fortigate", "INITECH-003", "open",
                                  "INITECH-003:Firewall Alert:alert ips attack blocked fg initech 01"),
    "16-nsight-html-only.eml": (Kind.ALERT, "70-nsight.toml:nsight-patch", "ACME-001", "open",
                                "ACME-001:Patch Failed:patch installation on acme lt 22 acme corp"),
    "17-zabbix-encoded-subject.eml": (Kind.ALERT, "20-zabbix.toml:zabbix", "INITECH-003", "open", "zabbix:48230"),
    "18-veeam-umbrella-unmapped.eml": (Kind.ALERT, "40-veeam.toml:veeam", "UMBRELLA-004", "open",
                                       "UMBRELLA-004:Backup Failed:umbrella corp - sql server"),
    "19-nagios-unknown-account.eml": (Kind.UNMATCHED, "10-nagios.toml:nagios-host", None, None, "support@msp.example"),
    "20-regular-human.eml": (Kind.REGULAR, None, None, None, None),
}


@pytest.fixture(scope="module")
def ruleset():
    return load_ruleset(RULES, ACCOUNTS, CATALOGUE)


def test_shipped_rules_load_without_errors_or_warnings() -> None:
    assert check_ruleset(RULES, ACCOUNTS, CATALOGUE) == []


def test_every_sample_is_in_the_table() -> None:
    assert sorted(p.name for p in SAMPLES.glob("*.eml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(ruleset, name: str) -> None:
    raw = (SAMPLES / name).read_bytes()
    parsed = parse(raw)
    assert parsed.parse_error is None
    for header in ("from", "to", "subject", "date", "message-id", "mime-version"):
        assert parsed.headers.get(header), f"{name} lacks {header}"
    c = classify(parsed, ruleset, CTX)
    kind, rule, account, status, last = EXPECTED[name]
    assert (c.kind, c.rule) == (kind, rule), c.steps
    if kind is Kind.ALERT:
        assert c.alert is not None
        assert (c.alert.account_id, c.alert.status, c.alert.alert_key) == (account, status, last)
        assert c.alert.title and c.alert.summary
    else:
        assert c.alert is None and c.forward_to == last


def test_story_details(ruleset) -> None:
    def run(name: str):
        return classify(parse((SAMPLES / name).read_bytes()), ruleset, CTX)

    forged = run("03-nagios-forged-recovery.eml")
    assert forged.reason.startswith("sender not authenticated: ") and "spf=fail" in forged.reason
    datto = run("12-datto-ates-alert.eml")
    assert datto.alert is not None and datto.alert.device == "SOY-WS-014"
    assert datto.account_how == "ATES CustomerID 'SOYLENT-DRMM-8841' via foreign id"
    encoded = run("17-zabbix-encoded-subject.eml")
    assert encoded.alert is not None and "Espace disque" in encoded.alert.title
    assert "'initech montréal' via name" in (encoded.account_how or "")
    html = run("16-nsight-html-only.eml")
    assert html.alert is not None and "0x800f0922" in html.alert.summary
    prtg = run("07-prtg-sensor-down.eml")
    assert "between 'Alert for Site' and ','" in (prtg.account_how or "")
    nagios = run("01-nagios-problem.eml")
    assert nagios.alert is not None and nagios.alert.title == "HTTP on web01 is CRITICAL"
    assert nagios.alert.device == "web01"
