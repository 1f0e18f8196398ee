"""Alert lifecycle through a real Dovecot into the PSA simulator over HTTP (issue 15).

Mail is delivered into Dovecot with its INTERNALDATE set (the arrival time every window is
measured on), fetched by the IMAP source, processed and delivered to the simulator. Holds are
reached by stepping the injected clock, never by waiting; the latency test runs the daemon on
the real clock with IDLE.
"""

from __future__ import annotations

import itertools
import statistics
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from bridge.psa_sim.partner import DEFAULT_PARTNER
from tests.fixtures.psa import SimulatorServer

from tests.helpers import ROOT, write_config
from tests.lifecycle_support import Mailbridge, rules_with_min_duration

pytestmark = pytest.mark.dovecot

_n = itertools.count(1)


def imap_section(dovecot: Any, **extra: Any) -> str:
    lines = [f'\n[[imap]]\nname = "alerts"\nhost = "127.0.0.1"\nport = {dovecot.port}',
             'security = "none"', f'username = "{dovecot.user}"',
             f'password = "{dovecot.password}"', "timeout = 10.0"]
    lines += [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def nagios_mail(subject: str, body: str = "") -> bytes:
    n = next(_n)
    return (
        "Authentication-Results: mx.msp.example;\r\n"
        "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\r\n"
        "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\r\n"
        # Results count only above our MX's own Received header (RFC 8601 §5).
        "Received: from monitor.msp.example (monitor.msp.example [192.0.2.10])\r\n"
        "\tby mx.msp.example (Postfix) with ESMTPS id LIFE\r\n"
        "\tfor <alerts@msp.example>; Tue, 04 Mar 2025 09:00:00 +0000\r\n"
        "From: Nagios <nagios@monitor.msp.example>\r\nTo: alerts@msp.example\r\n"
        f"Subject: ** {subject} **\r\n"
        f"Message-ID: <life-e2e.{n}.{time.time()}@monitor.msp.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"Auto-Submitted: auto-generated\r\n\r\n***** Nagios *****\r\n\r\n{subject}\r\n{body}\r\n"
    ).encode()


def service(kind: str, host: str, group: str = "acme", service: str = "HTTP") -> bytes:
    state = "OK" if kind == "RECOVERY" else "CRITICAL"
    return nagios_mail(f"{kind} Service Alert: {group}/{host}/{service} is {state}")


def host_down(host: str, group: str = "acme") -> bytes:
    return nagios_mail(f"PROBLEM Host Alert: {group}/{host} is DOWN")


def config_for(tmp: Path, psa: Any, dovecot: Any, storm: dict[str, Any] | None = None,
               rules: Path | None = None, accounts: Path | None = None, **imap: Any) -> Path:
    extra = ""
    if storm:
        extra = "\n[storm]\n" + "".join(f"{k} = {v}\n" for k, v in storm.items())
    path = write_config(tmp, psa, imap=imap_section(dovecot, poll_interval=300.0, **imap),
                        extra=extra)
    text = path.read_text()
    if rules is not None:
        text = text.replace(f'directory = "{ROOT / "rules"}"', f'directory = "{rules}"')
    if accounts is not None:
        text = text.replace(f'accounts = "{ROOT / "rules" / "accounts.csv"}"',
                            f'accounts = "{accounts}"')
    path.write_text(text)
    return path


def history(ticket: dict[str, Any]) -> list[str]:
    return [h["incidentStatus"] for h in ticket["history"]]


# -- flaps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing,resolve_delay", [(1.0, 0.0), (600.0, 0.0), (600.0, None)],
                         ids=["same-minute-no-delay", "10min-no-delay", "10min-default-delay"])
async def test_fail_heal_fail_heal_in_one_batch_ends_with_two_closed_tickets(
        tmp_path, dovecot, psa_sim, spacing, resolve_delay):
    storm = {} if resolve_delay is None else {"resolve_delay": resolve_delay}
    config = config_for(tmp_path, psa_sim, dovecot, storm)
    now = time.time()
    start = now - 4 * spacing - 60
    for i, kind in enumerate(["PROBLEM", "RECOVERY", "PROBLEM", "RECOVERY"]):
        dovecot.append(service(kind, "web01"), date=start + i * spacing)
    mb = Mailbridge.from_config(config, now=now)
    try:
        await mb.bridge.run_once()  # one batch: every decision before any call goes out
        await mb.settle()
        outcomes = sorted(o for o in mb.outcomes().values())
    finally:
        await mb.close()
    tickets = psa_sim.tickets()
    assert len(tickets) == 2
    assert all(t["status"] == "closed" for t in tickets), [t["status"] for t in tickets]
    assert all(history(t) == ["OPEN", "RESOLVED"] for t in tickets)
    assert outcomes == ["created", "created", "resolved", "resolved"]


# -- a burst ---------------------------------------------------------------------------------------


async def test_200_host_down_alerts_in_a_minute_make_at_most_4_tickets_and_6_calls(
        tmp_path, dovecot, psa_sim):
    # The shipped defaults: no storm product group or alert type configured.
    config = config_for(tmp_path, psa_sim, dovecot)
    now = time.time()
    hosts = [f"host{i:03d}" for i in range(200)]
    for i, host in enumerate(hosts):
        dovecot.append(host_down(host), date=now - 90 + i * 0.3)  # within one minute
    mb = Mailbridge.from_config(config, now=now)
    try:
        await mb.bridge.run_once()
        await mb.settle()
        assert set(mb.outcomes().values()) <= {"created", "coalesced", "appended"}
    finally:
        await mb.close()
    tickets = psa_sim.tickets()
    calls = psa_sim.calls()
    assert len(tickets) <= 4, [t["title"] for t in tickets]
    assert len(calls) <= 6, [c["incidentStatus"] for c in calls]
    [storm] = [t for t in tickets if t["title"].startswith("Alert storm:")]
    # Routed as the alerts would be: the first alert's product group and alert type.
    assert (storm["productGroup"], storm["alertType"]) == ("servers", "Host Down")
    assert storm["title"].endswith(" alerts for ACME-001")
    text = "\n".join(h["summary"] for h in storm["history"])
    missing = [h for h in hosts if f"nagios:ACME-001:{h}:host" not in text]
    assert not missing, f"{len(missing)} hosts not on the storm ticket, e.g. {missing[:3]}"


# -- a blip ------------------------------------------------------------------------------------


async def test_40_second_blip_under_a_60_second_minimum_duration_opens_nothing(
        tmp_path, dovecot, psa_sim):
    rules = rules_with_min_duration(tmp_path, 60.0)
    config = config_for(tmp_path, psa_sim, dovecot, rules=rules)
    now = time.time()
    dovecot.append(service("PROBLEM", "kuma01"), date=now - 100)
    dovecot.append(service("RECOVERY", "kuma01"), date=now - 60)
    # A problem that outlasts its minimum duration still gets its ticket.
    dovecot.append(service("PROBLEM", "kuma02"), date=now - 100)
    mb = Mailbridge.from_config(config, now=now)
    try:
        await mb.bridge.run_once()
        await mb.settle()
        outcomes = mb.outcomes()
        reasons = [r["reason"] for r in mb.store.query("SELECT reason FROM messages WHERE"
                                                       " outcome='damped'")]
    finally:
        await mb.close()
    assert sorted(outcomes.values()) == ["created", "damped", "damped"]
    assert all("before its ticket was due" in r for r in reasons)
    [ticket] = psa_sim.tickets()
    assert ticket["title"] == "HTTP on kuma02 is CRITICAL"
    assert [c["incidentStatus"] for c in psa_sim.calls()] == ["OPEN"]


# -- lone alerts are never held ------------------------------------------------------------------


@pytest.fixture
def quiet_sim(tmp_path: Path) -> Iterator[SimulatorServer]:
    """The simulator with twenty more accounts: one quiet storm group each."""
    partner = tmp_path / "partner.toml"
    partner.write_text(DEFAULT_PARTNER.read_text() + "".join(
        f'\n[[accounts]]\nid = "Q-{g}"\nname = "Quiet {g}"\n' for g in QUIET))
    sim = SimulatorServer(partner).start()
    try:
        yield sim
    finally:
        sim.stop()


QUIET = [f"g{i:02d}" for i in range(20)]


async def test_lone_alerts_in_quiet_groups_are_ticketed_within_a_second(
        tmp_path, dovecot, quiet_sim):
    from tests.test_daemon import Running, until

    psa_sim = quiet_sim
    accounts = tmp_path / "accounts.csv"
    shipped = (ROOT / "rules" / "accounts.csv").read_text()
    accounts.write_text(shipped.rstrip("\n") + "\n" + "".join(
        f"Q-{g},Quiet {g},,{g},\n" for g in QUIET))
    config = config_for(tmp_path, psa_sim, dovecot, accounts=accounts)
    async with Running(config) as r:
        await until(lambda: r.bridge.runtime.sources.get("imap:alerts") is not None and
                    r.bridge.runtime.sources["imap:alerts"].idle, what="IDLE")
        for n, g in enumerate(QUIET):
            dovecot.append_imap(service("PROBLEM", f"srv{n}", group=g))
            await until(lambda n=n: len(psa_sim.tickets()) == n + 1, timeout=20,
                        what=f"ticket {n + 1}")
        store = r.bridge.sync_store
        rows = store.query(
            "SELECT m.staged_at AS staged, min(e.at) AS sent FROM messages m JOIN events e ON"
            " e.message_ref=m.id AND e.kind='sent' AND e.outcome='created' GROUP BY m.id")
    assert len(rows) == 20
    latencies = sorted(r["sent"] - r["staged"] for r in rows)
    p95 = latencies[int(0.95 * len(latencies)) - 1]
    assert p95 <= 1.0, f"p95 {p95:.3f} s (median {statistics.median(latencies):.3f} s)"
