"""Every rule pack present, the same way: its header and samples, `check` with the pack alone,
and its samples' lifecycle through the daemon's pipeline (in-process) and store into the PSA
simulator over HTTP (expected outcomes in samples/expected.toml). Then all packs together, an
administrator's rule replacing a pack rule by full name, and a pack fitted onto an MSP whose
catalogue and senders differ from the pack's neutral ones."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bridge.classify import ClassifyContext, check_ruleset, classify, load_ruleset
from bridge.classify.rulepacks import PACKS_ROOT, PackMapping, PackSelection, available, read_info
from bridge.config import load_settings
from bridge.models import Kind, RawMessage
from bridge.operator.checks import run_checks
from bridge.parse.mime import parse
from tests.helpers import cli
from tests.lifecycle_support import Mailbridge
from tests.packs_support import (ACCOUNTS_CSV, MSP, NEUTRAL, delivered, pack_config, pack_psa,
                                 recorded, recovers, samples)

__all__ = ["pack_psa"]  # the fixture, imported for pytest

PACKS = available()
OUTCOMES = {"created", "appended", "resolved", "skipped", "regular", "unmatched"}
SOURCE_HEADER = b"X-Mailbridge-Sample-Source: "
CTX = ClassifyContext(authserv_ids=frozenset({"mx.msp.example"}), ates_sources=frozenset({"Kaseya"}),
                      internal_address="support@msp.example")
CATALOGUE = {g: frozenset(t) for g, t in NEUTRAL.items()}


def test_there_are_packs() -> None:
    assert len(PACKS) >= 20, PACKS  # issue 18: at least 20 tools


@pytest.mark.parametrize("pack", PACKS)
def test_pack_header_and_samples(pack: str) -> None:
    info = read_info(pack)
    assert info.tool and info.versions and info.sources and info.doc.strip()
    listed = samples(pack)
    files = sorted(p.name for p in (PACKS_ROOT / pack / "samples").glob("*.eml"))
    assert sorted(s["file"] for s in listed) == files, "expected.toml lists every sample"
    assert len(files) >= 3
    for sample in listed:
        assert sample["outcome"] in OUTCOMES
        raw = (PACKS_ROOT / pack / "samples" / sample["file"]).read_bytes()
        assert raw.startswith(SOURCE_HEADER), f"{sample['file']}: no source header first"
        source = raw.split(b"\n", 1)[0][len(SOURCE_HEADER):].strip()
        assert b"@" in source or b"http" in source, "names repository@commit or vendor page"
    outcomes = [s["outcome"] for s in listed]
    needed = {"appended", "resolved"} if recovers(pack) else {"appended"}
    assert outcomes[0] == "created" and needed <= set(outcomes)
    if {"skipped", "regular"} & set(outcomes):  # the tool's informational mail
        assert len(outcomes) >= 4


@pytest.mark.parametrize("pack", PACKS)
def test_check_accepts_the_pack_alone(pack: str, tmp_path: Path, pack_psa) -> None:
    # `check`'s own code in-process (the CLI route is covered by the fitted-pack test below).
    config = pack_config(tmp_path, pack_psa, [pack])
    lines: list[str] = []
    code = run_checks(load_settings(config), online=False, echo=lines.append)
    assert code == 0, "\n".join(lines)
    assert "check: OK" in lines


ARRIVAL = datetime(2025, 3, 4, 9, 0, tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize("pack", PACKS)
async def test_lifecycle_through_the_pipeline(pack: str, tmp_path: Path, pack_psa,
                                              smtp_sink) -> None:
    """The daemon's `Bridge` in-process, one pass per sample a minute apart: the worker pool,
    decide and the outbox, into the simulator over HTTP and the SMTP sink."""
    config = pack_config(tmp_path, pack_psa, [pack], smtp_port=smtp_sink.port)
    listed = samples(pack)
    mb = Mailbridge.from_config(config, now=ARRIVAL)
    try:
        for n, sample in enumerate(listed):
            raw = (PACKS_ROOT / pack / "samples" / sample["file"]).read_bytes()
            at = ARRIVAL + 60 * n
            await mb.feed([RawMessage(delivered(raw), "pipe", None, at)], at)
        await mb.settle()
    finally:
        await mb.close()
    got = recorded(tmp_path / "mailbridge.db")
    assert [(s["file"], o) for s, (o, _, _) in zip(listed, got)] == \
        [(s["file"], s["outcome"]) for s in listed], got
    assert len(got) == len(listed)
    keys = [key for _, _, key in got]
    for sample, key in zip(listed, keys):
        if "key" in sample:
            assert key == sample["key"], sample["file"]
    # One ticket per created sample, in order, routed as the sample says.
    created = [s for s in listed if s["outcome"] == "created"]
    tickets = pack_psa.tickets()
    assert len(tickets) == len(created)
    for sample, ticket in zip(created, tickets):
        assert ticket["history"][0]["incidentStatus"] == "OPEN"
        assert ticket["accountId"] == "ACME-001"
        assert ticket["productGroup"] == sample.get("product_group", "monitoring")
        if "alert_type" in sample:
            assert ticket["alertType"] == sample["alert_type"], sample["file"]
    resolved = {key for s, key in zip(listed, keys) if s["outcome"] == "resolved"}
    assert sum(t["status"] == "closed" for t in tickets) == len(resolved)
    appended = sum(s["outcome"] == "appended" for s in listed)
    assert sum(len(t["history"]) for t in tickets) == len(created) + appended + len(resolved)
    skipped = sum(1 for o, _, _ in got if o == "skipped")
    smtp_sink.wait_for(skipped)  # skipped mail goes to the internal address
    assert len(smtp_sink.messages) == skipped


def test_a_sample_piped_through_mailbridge_ingest(tmp_path: Path, pack_psa) -> None:
    """The piped route end to end once (`mailbridge ingest` as a subprocess, as the MTA runs
    it): a pack's problem sample opens its ticket."""
    config = pack_config(tmp_path, pack_psa, ["nagios"])
    [first, *_] = samples("nagios")
    raw = (PACKS_ROOT / "nagios" / "samples" / first["file"]).read_bytes()
    result = cli("ingest", "--config", str(config), stdin=delivered(raw))
    assert result.returncode == 0, result.stderr.decode()
    assert [(o, k) for o, _, k in recorded(tmp_path / "mailbridge.db")] == \
        [("created", first["key"])]
    [ticket] = pack_psa.tickets()
    assert (ticket["accountId"], ticket["history"][0]["incidentStatus"]) == ("ACME-001", "OPEN")


def test_all_packs_together(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    everything = PackSelection(tuple(PACKS))
    problems = check_ruleset(tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE, everything)
    assert [str(p) for p in problems if p.is_error] == []
    together = load_ruleset(tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE, everything)
    for pack in PACKS:
        alone = load_ruleset(tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE,
                             PackSelection((pack,)))
        for sample in samples(pack):
            msg = parse(delivered((PACKS_ROOT / pack / "samples" / sample["file"]).read_bytes()))
            mine, theirs = classify(msg, alone, CTX), classify(msg, together, CTX)
            assert (theirs.kind, theirs.rule, theirs.alert) == (mine.kind, mine.rule, mine.alert), \
                f"{pack}/{sample['file']}: {theirs.rule} instead of {mine.rule}"
            if mine.rule is not None:
                assert f":{pack}/" in mine.rule


ADMIN_NAGIOS = """
format = 2

# The MSP treats every Nagios service problem as a warning: same name, same place.
[[detect]]
name = "nagios/service"
tool = "nagios/nagios"
subject = "Service Alert:"
capture = [{ in = "subject", regex = '^\\*\\* (?P<type>[A-Z]+) Service Alert: (?P<host>[^/]+)/(?P<service>.+) is (?P<state>[A-Z]+) \\*\\*$' }]
key = "nagios:{account}:{host}:{service}"
alert_type = "Service Warning"
status = { from = "{type}", map = { PROBLEM = "open", RECOVERY = "resolved" } }
"""


def test_an_admin_rule_replaces_a_pack_rule_by_full_name(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    args = (tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE, PackSelection(("nagios",)))
    before = [r.name for r in load_ruleset(*args).detect.rules]
    (tmp_path / "rules" / "10-own.toml").write_text(ADMIN_NAGIOS)
    rs = load_ruleset(*args)
    assert [r.name for r in rs.detect.rules] == before, "replaced in place, nothing added"
    replaced = rs.detect.rules[before.index("nagios/service")]
    assert replaced.file == "10-own.toml"
    raw = (PACKS_ROOT / "nagios" / "samples" / "01-service-problem.eml").read_bytes()
    result = classify(parse(delivered(raw)), rs, CTX)
    assert result.rule == "10-own.toml:nagios/service"
    assert result.alert is not None and result.alert.alert_type == "Service Warning"
    assert result.alert.alert_key == "nagios:ACME-001:acme-web01:HTTP"


MAPPING = """
[packs.nagios]
product_group = "infrastructure"
alert_types = { "Service Critical" = "Critical", "Service Warning" = "Warning", "Host Down" = "Server Down" }
senders = ["nagios@mon.acme.example"]
"""


async def test_a_pack_fitted_onto_another_catalogue_and_senders(tmp_path: Path, pack_psa,
                                                                smtp_sink) -> None:
    unmapped = pack_config(tmp_path, pack_psa, ["nagios"], catalogue=MSP)
    result = cli("check", "--config", str(unmapped))  # `check` as the administrator runs it
    assert result.returncode == 1
    assert b"pack 'nagios': product group 'monitoring' is not in the catalogue" in result.stdout
    config = pack_config(tmp_path, pack_psa, ["nagios"], catalogue=MSP, extra=MAPPING,
                         smtp_port=smtp_sink.port)
    lines: list[str] = []
    assert run_checks(load_settings(config), online=False, echo=lines.append) == 0, lines
    raw = (PACKS_ROOT / "nagios" / "samples" / "01-service-problem.eml").read_bytes()
    # The pack's usual sender is no longer the tool's: regular mail.
    mapped = delivered(raw.replace(b"20250304090000.4401", b"mapped.4401"),
                       sender="nagios@mon.acme.example")
    mb = Mailbridge.from_config(config, now=ARRIVAL)
    try:
        for n, mail in enumerate((delivered(raw), mapped)):
            await mb.feed([RawMessage(mail, "pipe", None, ARRIVAL + n)], ARRIVAL + n)
        await mb.settle()
    finally:
        await mb.close()
    assert [o for o, _, _ in recorded(tmp_path / "mailbridge.db")] == ["regular", "created"]
    [ticket] = pack_psa.tickets()
    assert (ticket["productGroup"], ticket["alertType"]) == ("infrastructure", "Critical")


def test_senders_make_a_senderless_packs_informational_mail_skipped(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    raw = (PACKS_ROOT / "checkmk" / "samples" / "04-service-downtime-start.eml").read_bytes()
    for senders, kind in ((None, Kind.REGULAR), (("mysite@checkmk.msp.example",), Kind.SKIPPED)):
        sel = PackSelection(("checkmk",), {"checkmk": PackMapping(senders=senders)})
        rs = load_ruleset(tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE, sel)
        assert classify(parse(delivered(raw)), rs, CTX).kind is kind


def test_packs_show_prints_sources_rules_and_sample_subjects() -> None:
    shown = cli("packs", "show", "zabbix", "--json")
    assert shown.returncode == 0, shown.stderr.decode()
    detail = json.loads(shown.stdout)
    assert detail["tool"] == "Zabbix" and detail["sources"]
    assert {"kind": "detect", "name": "zabbix/problem"} in detail["rules"]
    assert detail["samples"][0]["subject"] == "Problem: High CPU utilization (over 90% for 5m)"
    text = cli("packs").stdout.decode()
    assert all(name in text for name in PACKS)


# Variants of pack samples the lifecycle order does not show, classified alone (pure).
VARIANTS = [
    # apcupsd: communications restored with the UPS back on mains resolves the UPS's alert.
    ("apcupsd", "03-commok-on-battery.eml", (b"STATUS   : ONBATT", b"STATUS   : ONLINE"),
     Kind.ALERT, "resolved"),
    # Healthchecks: a reminder about several checks cannot be tied to one ticket: skipped.
    ("healthchecks", "02-reminder.eml",
     (b"Subject: Reminder: 1 check still down", b"Subject: Reminder: 2 checks still down"),
     Kind.SKIPPED, None),
    # Bareos: only backup jobs are alerts; a restore job's report is not taken by the pack.
    ("bareos", "03-backup-ok.eml", (b"Subject: Bareos: Backup OK", b"Subject: Bareos: Restore OK"),
     Kind.REGULAR, None),
]


@pytest.mark.parametrize(("pack", "file", "change", "kind", "status"), VARIANTS)
def test_pack_sample_variants(pack: str, file: str, change: tuple[bytes, bytes], kind: Kind,
                              status: str | None, tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "accounts.csv").write_text(ACCOUNTS_CSV)
    rs = load_ruleset(tmp_path / "rules", tmp_path / "accounts.csv", CATALOGUE,
                      PackSelection((pack,)))
    raw = (PACKS_ROOT / pack / "samples" / file).read_bytes()
    assert change[0] in raw
    result = classify(parse(delivered(raw.replace(*change))), rs, CTX)
    assert result.kind is kind, result.reason
    if status is not None:
        assert result.alert is not None and result.alert.status == status
