"""Missing-mail alerts through the whole pipeline into the PSA simulator (issue 20).

A Veeam job reports daily by 06:00 Berlin time (grace 2 h). The Bridge runs on an injected
clock; reports are staged with their arrival times and each pass is `run_once` — the same
drain-then-judge order as the daemon.
"""

from __future__ import annotations

import itertools
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from bridge.models import RawMessage
from tests.helpers import ROOT, write_config
from tests.lifecycle_support import Mailbridge

_n = itertools.count(1)

EXPECT = """
[[expect]]
name = "veeam-daily"
rule = "veeam"
daily = "06:00"
timezone = "Europe/Berlin"
grace = "2h"
product_group = "backup"
alert_type = "Backup Failed"
title = "Backup report missing: {account} / {what}, last seen {last_seen}"
"""


def utc(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def report(at: float) -> RawMessage:
    raw = (ROOT / "samples" / "11-veeam-success.eml").read_bytes()
    n = next(_n)
    raw = raw.replace(b"<vbr.job77.run3@backup.msp.example>",
                      f"<vbr.expect.{n}@backup.msp.example>".encode())
    return RawMessage(raw, "imap:expect", f"1:{n}", at)


def config(tmp: Path, psa: Any) -> Path:
    rules = tmp / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "96-expect.toml").write_text(EXPECT)
    path = write_config(tmp, psa)
    path.write_text(path.read_text().replace(f'directory = "{ROOT / "rules"}"',
                                             f'directory = "{rules}"'))
    return path


def missing_tickets(psa: Any) -> list[dict[str, Any]]:
    return [t for t in psa.tickets() if "Backup report missing" in str(t.get("title", ""))]


async def test_a_day_without_the_report_opens_one_ticket_and_the_late_report_resolves_it(
        tmp_path, psa_sim):
    mb = Mailbridge.from_config(config(tmp_path, psa_sim), now=utc("2025-03-03T04:30:00"))
    await mb.feed([report(utc("2025-03-03T04:30:00"))], utc("2025-03-03T04:30:00"))
    # Tuesday 06:00 Berlin (05:00 UTC) plus 2 h of grace: 07:00 UTC.
    await mb.deliver_at(utc("2025-03-03T06:59:00"))
    await mb.deliver_at(utc("2025-03-04T06:59:00"))
    assert missing_tickets(psa_sim) == []
    await mb.deliver_at(utc("2025-03-04T07:00:01"))
    [ticket] = missing_tickets(psa_sim)
    assert ticket["title"] == ("Backup report missing: ACME-001 / Veeam: backup job Acme HQ - "
                               "Daily VMs, last seen 2025-03-03 04:30 UTC")
    # Another day without it: still that one ticket (one per outage, not per window).
    await mb.deliver_at(utc("2025-03-05T08:00:00"))
    assert len(missing_tickets(psa_sim)) == 1
    events = mb.store.query("SELECT kind, alert_key, detail FROM events WHERE kind LIKE"
                            " 'expectation-%'")
    assert [e["kind"] for e in events] == ["expectation-missing"]
    assert "veeam-daily" in events[0]["detail"]
    # The report comes back, late: it resolves the missing-mail ticket.
    await mb.feed([report(utc("2025-03-05T09:00:00"))], utc("2025-03-05T09:00:00"))
    await mb.settle()
    [ticket] = missing_tickets(psa_sim)
    assert [h["incidentStatus"] for h in ticket["history"]] == ["OPEN", "RESOLVED"]
    assert ticket["status"] == "closed"
    kinds = [e["kind"] for e in mb.store.query("SELECT kind FROM events WHERE kind LIKE"
                                               " 'expectation-%' ORDER BY id")]
    assert kinds == ["expectation-missing", "expectation-met"]


async def test_a_report_within_the_grace_period_opens_nothing(tmp_path, psa_sim):
    mb = Mailbridge.from_config(config(tmp_path, psa_sim), now=utc("2025-03-03T04:30:00"))
    await mb.feed([report(utc("2025-03-03T04:30:00"))], utc("2025-03-03T04:30:00"))
    # Tuesday's report an hour late (07:00 Berlin), inside the 2 h grace.
    await mb.feed([report(utc("2025-03-04T06:00:00"))], utc("2025-03-04T06:00:00"))
    await mb.deliver_at(utc("2025-03-04T07:30:00"))
    assert missing_tickets(psa_sim) == []
    [row] = mb.store.expectations()
    # The next judgement is Wednesday 06:00 Berlin + 2 h.
    assert row.judge_at == utc("2025-03-05T07:00:00")
    # `status` and the dashboard show it, with when it is next due.
    from bridge.operator import views
    from bridge.operator.audit import Redactor
    from bridge.operator.dashboard import render_dashboard

    data = views.status_view(mb.store)
    text = views.format_status(data)
    assert f"expected:     veeam-daily [{row.scope}] (ACME-001): next due " \
        f"{views.fmt_time(row.judge_at)}" in text
    page = render_dashboard({"status": data, "messages": views.messages_view(mb.store, 5,
                                                                            Redactor(())),
                             "tickets": [], "failures": {"messages": [], "dead_outbox": []},
                             "chart": views.alerts_per_hour(mb.store, 24)}, Redactor(()))
    assert "Expected mail" in page and "veeam-daily" in page


async def test_a_daemon_down_across_the_deadline_opens_exactly_one_ticket_after_restart(
        tmp_path, psa_sim):
    path = config(tmp_path, psa_sim)
    first = Mailbridge.from_config(path, now=utc("2025-03-03T04:30:00"))
    await first.feed([report(utc("2025-03-03T04:30:00"))], utc("2025-03-03T04:30:00"))
    await first.bridge.close()
    # Down from Monday to Thursday: two deadlines passed while nobody watched.
    again = Mailbridge.from_config(path, now=utc("2025-03-06T09:00:00"))
    await again.settle()
    await again.bridge.run_once()
    assert len(missing_tickets(psa_sim)) == 1
    await again.bridge.close()
    third = Mailbridge.from_config(path, now=utc("2025-03-06T09:05:00"))
    await third.settle()
    assert len(missing_tickets(psa_sim)) == 1


def nagios_at(at: float, n: int) -> RawMessage:
    raw = (ROOT / "samples" / "01-nagios-problem.eml").read_bytes()
    head, _, rest = raw.partition(b"Message-ID:")
    raw = head + f"Message-ID: <irregular.{n}@monitor.msp.example>\r\nX-Was-Message-ID:".encode() \
        + rest
    return RawMessage(raw, "imap:expect", f"2:{n}", at)


async def test_expect_suggest_proposes_a_daily_rule_and_nothing_for_irregular_mail(
        tmp_path, psa_sim):
    import subprocess
    import sys

    path = config(tmp_path, psa_sim)
    (tmp_path / "rules" / "96-expect.toml").unlink()  # nothing expected yet
    start = utc("2025-03-03T04:20:00")  # 05:20 Berlin
    mb = Mailbridge.from_config(path, now=start)
    daily = [report(start + day * 86400 + (day % 3) * 600) for day in range(7)]  # 05:20-05:40
    irregular = [nagios_at(start + h * 3600, i) for i, h in enumerate((3, 33, 40, 90, 92, 150))]
    one_off = [nagios_at(start + 5000, 99)]
    for msg in sorted(daily + irregular + one_off, key=lambda m: m.arrived_at):
        await mb.feed([msg], msg.arrived_at)
    await mb.bridge.close()
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "expect", "suggest", "--config", str(path), "--days",
         "100000", "--timezone", "Europe/Berlin"], capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout
    assert out.count("[[expect]]") == 1, out
    rule = out
    assert "veeam@backup.msp.example: 7 reports, daily around 05:30 Europe/Berlin" in rule
    assert 'rule = "veeam"' in rule and 'per = "key"' in rule
    assert 'daily = "05:45"' in rule and 'grace = "1h"' in rule
    assert 'timezone = "Europe/Berlin"' in rule
    assert 'product_group = "backup"' in rule and 'alert_type = "Backup Failed"' in rule
    assert "nagios" not in out


def job_report(at: float, job: str) -> RawMessage:
    raw = (ROOT / "samples" / "11-veeam-success.eml").read_bytes()
    n = next(_n)
    raw = raw.replace(b"<vbr.job77.run3@backup.msp.example>",
                      f"<vbr.expect.{n}@backup.msp.example>".encode())
    raw = raw.replace(b"Acme HQ - Daily VMs", f"Acme HQ - {job}".encode())
    return RawMessage(raw, "imap:expect", f"3:{n}", at)


async def test_many_reports_missing_at_once_land_on_a_storm_ticket(tmp_path, psa_sim):
    """The mail path broke: a dozen jobs of one customer miss their reports together. They
    are decided like any burst, so the customer gets a storm ticket, not a dozen."""
    mb = Mailbridge.from_config(config(tmp_path, psa_sim), now=utc("2025-03-03T04:30:00"))
    jobs = [f"Job {i:02d}" for i in range(12)]
    await mb.feed([job_report(utc("2025-03-03T04:30:00"), j) for j in jobs],
                  utc("2025-03-03T04:30:00"))
    assert len(mb.store.expectations()) == 12
    await mb.deliver_at(utc("2025-03-04T07:00:01"))
    await mb.settle()
    tickets = psa_sim.tickets()
    storm = [t["title"] for t in tickets if t["title"].startswith("Alert storm:")]
    assert storm == ["Alert storm: 9 alerts for ACME-001"], [t["title"] for t in tickets]
    assert len(tickets) == 4  # the burst's first three, then the storm ticket takes the rest
    missing = mb.store.query("SELECT count(*) AS n FROM events WHERE kind='expectation-missing'")
    assert missing[0]["n"] == 12


async def test_a_silent_per_key_expectation_expires(tmp_path, psa_sim):
    path = config(tmp_path, psa_sim)
    (tmp_path / "rules" / "96-expect.toml").write_text(EXPECT + 'expire_after = "3d"\n')
    mb = Mailbridge.from_config(path, now=utc("2025-03-03T04:30:00"))
    await mb.feed([report(utc("2025-03-03T04:30:00"))], utc("2025-03-03T04:30:00"))
    await mb.deliver_at(utc("2025-03-04T07:00:01"))
    assert len(missing_tickets(psa_sim)) == 1  # first the outage ...
    await mb.deliver_at(utc("2025-03-06T04:00:00"))
    assert mb.store.expectations() != []
    await mb.deliver_at(utc("2025-03-06T05:00:00"))  # ... 3 days of silence: forgotten
    assert mb.store.expectations() == []
    kinds = [e["kind"] for e in mb.store.query("SELECT kind FROM events WHERE kind LIKE"
                                               " 'expectation-%' ORDER BY id")]
    assert kinds == ["expectation-missing", "expectation-expired"]


async def test_simulate_predicts_the_missing_mail_ticket_run_opens(tmp_path, psa_sim):
    """The preview is the truth: at a clock past the deadline, `simulate` (on a scratch copy
    of the live deadlines) shows the missing-mail ticket that the next pass then opens."""
    import json as jsonlib
    import subprocess
    import sys

    path = config(tmp_path, psa_sim)
    mb = Mailbridge.from_config(path, now=utc("2025-03-03T04:30:00"))
    await mb.feed([report(utc("2025-03-03T04:30:00"))], utc("2025-03-03T04:30:00"))
    await mb.bridge.close()
    other = tmp_path / "other.eml"  # any mail: simulate needs one
    other.write_bytes((ROOT / "samples" / "20-regular-human.eml").read_bytes())
    out = subprocess.run(
        [sys.executable, "-m", "bridge", "simulate", str(other), "--config", str(path),
         "--at", "2025-03-04T07:30:00+00:00", "--json"], capture_output=True, text=True,
        timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True).stdout
    predicted = [r for r in jsonlib.loads(out) if r["file"] == "[[expect]] veeam-daily"]
    assert len(predicted) == 1 and predicted[0]["account"] == "ACME-001", out
    [call] = predicted[0]["calls"]
    assert call["action"] == "OPEN"
    assert missing_tickets(psa_sim) == []  # the preview sent nothing
    again = Mailbridge.from_config(path, now=utc("2025-03-04T07:30:00"))
    await again.settle()
    [ticket] = missing_tickets(psa_sim)
    assert ticket["title"] == call["request"]["data"]["title"]
