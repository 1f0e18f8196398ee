"""Helpers shared by the rule tests (no tests here): build rule sets and messages quickly."""

from __future__ import annotations

import textwrap
from pathlib import Path

from bridge.classify import ClassifyContext, RuleSet, load_ruleset
from bridge.models import AtesToken, ParsedMessage, TokenRef

# The demo catalogue of the brief (config [[catalogue]]).
CATALOGUE: dict[str, frozenset[str]] = {
    "servers": frozenset({"Host Down", "Service Critical", "Service Warning", "Disk Space"}),
    "backup": frozenset({"Backup Failed", "Backup Warning"}),
    "network": frozenset({"Firewall Alert", "Interface Down"}),
    "monitoring": frozenset({"Problem", "Trigger"}),
    "rmm": frozenset({"Agent Offline", "Patch Failed", "Alert"}),
    "storm": frozenset({"Alert Storm"}),
    "test": frozenset({"Test Alert"}),
}

ACCOUNTS_CSV = """\
id,name,aliases,foreign_ids,senders
ACME-001,Acme Corp,Acme HQ,acme,@acme.example
GLOBEX-002,Globex Corporation,,1002,alerts@globex.example
INITECH-003,Initech,Initech Montréal,,@initech.example
UMBRELLA-004,Umbrella Corp,Зонтик,umb-9,
SOYLENT-005,Soylent,,SOYLENT-DRMM-8841,
"""

CTX = ClassifyContext(
    ates_sources=frozenset({"XYZ Monitoring Application", "Datto RMM"}),
    authserv_ids=frozenset({"mx.msp.example"}),
    trusted_relays=frozenset({"192.0.2.0/28", "relay.msp.example"}),
    xml_enabled=True, internal_address="support@msp.example")


def write_rules(tmp_path: Path, files: dict[str, str], accounts: str | None = ACCOUNTS_CSV
                ) -> tuple[Path, Path | None]:
    rules = tmp_path / "rules"
    rules.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (rules / name).write_text(textwrap.dedent(text), encoding="utf-8")
    acc = None
    if accounts is not None:
        acc = tmp_path / "accounts.csv"
        acc.write_text(accounts, encoding="utf-8")
    return rules, acc


def make_rules(tmp_path: Path, text: str, accounts: str | None = ACCOUNTS_CSV,
               **more: str) -> RuleSet:
    """A rule set from one file's text (plus more files by name)."""
    rules, acc = write_rules(tmp_path, {"10-test.toml": text, **more}, accounts)
    return load_ruleset(rules, acc, CATALOGUE)


def msg(subject: str = "", sender: str = "", body: str = "", headers: dict | None = None,
        ates: tuple[AtesToken, ...] = (), xml: tuple[bytes, ...] = (),
        recipients: tuple[str, ...] = ()) -> ParsedMessage:
    hdrs = {k.lower(): (v if isinstance(v, tuple) else (v,)) for k, v in (headers or {}).items()}
    return ParsedMessage(subject=subject, sender=sender.lower(), body=body, headers=hdrs,
                         ates=ates, xml_parts=xml, recipients=recipients)


def token(source: str | None = "Datto RMM", customer: str | None = "SOYLENT-DRMM-8841",
          alert: str | None = "A-1", ticket: str | None = None, device: str | None = None,
          id: str | None = None, pw: str | None = None) -> AtesToken:
    def ref(v: str | None) -> TokenRef | None:
        return TokenRef(v, source) if v is not None else None
    return AtesToken(id=id, pw=pw, customer_id=ref(customer), device_id=ref(device),
                     alert_id=ref(alert), ticket_id=ref(ticket))
