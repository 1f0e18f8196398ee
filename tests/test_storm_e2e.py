"""Storm control through the real pipeline into the PSA simulator over HTTP (SPEC §3.5, issue 7).

Mail the shipped Nagios rules understand is staged with explicit arrival times, processed by the
real `Bridge` (parse -> classify -> decide -> store -> outbox) and delivered over HTTP to the
simulator. The clock is injected: held rows (coalescing window, resolve delay) are reached by
stepping it, never by waiting.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from typing import Any

import pytest

from bridge.config import load_settings
from bridge.daemon import Bridge
from bridge.decide.core import STORM_APPEND_CHARS
from bridge.models import RawMessage
from tests.helpers import cli, write_config
from tests.lifecycle_support import Clock, ClockedBridge

T0 = 1_741_078_800.0  # 2025-03-04 09:00:00 UTC

# The storm ticket's routing (an entry of the catalogue that write_config writes). Without it,
# caps are off: every new alert key gets its own ticket.
STORM = {"storm_product_group": "storm", "storm_alert_type": "Alert Storm"}


def storm_section(**values: Any) -> str:
    """A `[storm]` config section (TOML) with the storm routing and `values`."""
    return "\n[storm]\n" + "".join(f"{k} = {json.dumps(v)}\n"
                                    for k, v in {**STORM, **values}.items())


class Rig(ClockedBridge):
    """A whole mailbridge (the daemon's `Bridge`) on a temporary store, an injected clock and
    the simulator."""

    def __init__(self, tmp_path, sim, **storm: Any):
        self.sim = sim
        self.clock = Clock(T0)
        self.config = write_config(tmp_path, sim, extra=storm_section(**storm))
        self.settings = load_settings(self.config)
        self.bridge = Bridge(self.settings, config_path=self.config, clock=self.clock,
                             worker="storm-test")
        self.store = self.bridge.sync_store
        self._n = itertools.count(1)

    # -- mail ---------------------------------------------------------------------------------

    def nagios(self, host: str, service: str = "HTTP", kind: str = "PROBLEM",
               at: float | None = None, group: str = "acme", info: str = "") -> RawMessage:
        """A Nagios service notification as the MX delivers it (DKIM-verified)."""
        n = next(self._n)
        state = "OK" if kind == "RECOVERY" else "CRITICAL"
        raw = (
            "Authentication-Results: mx.msp.example;\r\n"
            "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\r\n"
            "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\r\n"
            # Results count only above our MX's own Received header (RFC 8601 §5).
            "Received: from monitor.msp.example (monitor.msp.example [192.0.2.10])\r\n"
            "\tby mx.msp.example (Postfix) with ESMTPS id STORM\r\n"
            "\tfor <alerts@msp.example>; Tue, 04 Mar 2025 09:00:00 +0000\r\n"
            "From: Nagios <nagios@monitor.msp.example>\r\n"
            "To: alerts@msp.example\r\n"
            f"Subject: ** {kind} Service Alert: {group}/{host}/{service} is {state} **\r\n"
            f"Message-ID: <storm.{n}@monitor.msp.example>\r\n"
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
            "Auto-Submitted: auto-generated\r\n"
            f"X-Nagios-Notification-Type: {kind}\r\n\r\n"
            f"***** Nagios *****\r\n\r\nNotification Type: {kind}\r\n\r\nService: {service}\r\n"
            f"Host: {host}\r\nHost group: {group}\r\nState: {state}\r\n\r\n"
            f"Additional Info:\r\n\r\n{service} {state} (notification {n})\r\n{info}"
        ).encode()
        return RawMessage(raw, "imap:storm", f"1:{n}", T0 if at is None else at)

    # -- driving ------------------------------------------------------------------------------

    async def feed(self, *msgs: RawMessage, now: float | None = None) -> list[int]:
        """Stage messages and run one pass (process + deliver what is due) at `now`."""
        return await self.stage_and_pass(list(msgs), now)

    async def step_to(self, t: float) -> None:
        """Advance the clock to `t`, delivering every held row that falls due on the way."""
        await self.deliver_at(t)

    async def restart(self) -> None:
        """Stop this mailbridge and start a new one on the same store (held rows survive)."""
        await self.bridge.close()
        self.bridge = Bridge(self.settings, config_path=self.config, clock=self.clock,
                             worker="storm-test-2")
        self.store = self.bridge.sync_store

    async def close(self) -> None:
        await self.bridge.close()

    # -- looking ------------------------------------------------------------------------------

    def outcomes(self, ids: list[int] | None = None) -> list[str | None]:
        rows = self.store.query("SELECT id, coalesce(outcome, state) AS o FROM messages"
                                " ORDER BY id")
        by_id = {r["id"]: r["o"] for r in rows}
        return [by_id[i] for i in (ids if ids is not None else sorted(by_id))]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        rows = self.store.query("SELECT kind, message_ref, alert_key, outcome, detail FROM events"
                                + (" WHERE kind=?" if kind else "") + " ORDER BY id",
                                [kind] if kind else [])
        for r in rows:
            r["detail"] = json.loads(r["detail"]) if r["detail"] else {}
        return rows

    def sent(self) -> list[tuple[str, str]]:
        """(incidentStatus, correlationId) of every accepted sync call, in order."""
        return [(c["incidentStatus"], c["correlationId"]) for c in self.sim.calls()
                if c["status"] in (200, 201)]


@pytest.fixture
async def make_rig(tmp_path, psa_sim):
    rigs: list[Rig] = []

    def make(**storm: Any) -> Rig:
        path = tmp_path / f"rig{len(rigs)}"
        path.mkdir()
        rig = Rig(path, psa_sim, **storm)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


def key(host: str, service: str = "HTTP", account: str = "ACME-001") -> str:
    return f"nagios:{account}:{host}:{service}"


def history(ticket: dict[str, Any]) -> list[str]:
    return [h["incidentStatus"] for h in ticket["history"]]


# -- 1. a site outage: 500 alerts for one account within a minute ---------------------------------


async def test_500_alerts_in_a_minute_make_three_tickets_and_one_storm_ticket(make_rig, psa_sim):
    # Issue 15: a burst is grouped early. The first `burst_threshold` (3) new alerts get their
    # own tickets at once; the next ones wait `group_wait` and, when the account cap is reached,
    # the storm ticket takes them over. (Before: account_cap single tickets + 1 storm ticket.)
    rig = make_rig(account_cap=10, account_window=60.0, coalesce_window=300.0)
    hosts = [f"host{i:03d}" for i in range(500)]
    ids = await rig.feed(*(rig.nagios(h, at=T0 + i * 0.1) for i, h in enumerate(hosts)),
                         now=T0 + 50)
    await rig.settle()

    tickets = psa_sim.tickets()
    assert len(tickets) == 4  # burst_threshold individual tickets + 1 storm ticket
    [storm] = [t for t in tickets if t["productGroup"] == "storm"]
    assert storm["alertType"] == "Alert Storm" and storm["accountId"] == "ACME-001"
    assert storm["title"].startswith("Alert storm: ") and storm["title"].endswith(
        " alerts for ACME-001")
    assert sorted(t["title"] for t in tickets if t is not storm) == \
        sorted(f"HTTP on {h} is CRITICAL" for h in hosts[:3])
    # The storm ticket lists every alert key of the burst, those with tickets of their own too.
    text = "\n".join(h["summary"] for h in storm["history"])
    missing = [h for h in hosts if key(h) not in text]
    assert not missing, f"{len(missing)} keys are not listed, e.g. {missing[:3]}"
    # One line per key, at most STORM_APPEND_CHARS of lines per call, so nothing is cut at the
    # summary limit.
    updates = history(storm)[1:]
    assert history(storm)[0] == "OPEN" and set(updates) <= {"UPDATE"}
    line = len(text) // 500
    assert len(updates) + 1 <= math.ceil(500 * line / (STORM_APPEND_CHARS - 200)) + 1
    assert all(len(h["summary"]) <= rig.settings.psa.summary_max_chars
               for h in storm["history"])
    assert len(psa_sim.calls()) <= 3 + 1 + len(updates)

    outcomes = rig.outcomes(ids)
    assert outcomes[:3] == ["created"] * 3
    assert outcomes[3:10] == ["coalesced"] * 7  # held, then taken over by the storm ticket
    assert outcomes[10] == "created"  # the message that opened the storm ticket
    assert set(outcomes[11:]) <= {"coalesced", "appended"}
    # Every grouping decision is an event that names the storm ticket.
    grouped = [e for e in rig.events("decided") if e["detail"].get("storm")]
    assert len(grouped) == 490
    assert {e["detail"]["storm"] for e in grouped} == {storm["correlationId"]}
    assert {e["alert_key"] for e in grouped} == {key(h) for h in hosts[10:]}
    assert all("storm" in e["detail"]["reason"] for e in grouped)
    taken = rig.events("grouped")
    assert {e["alert_key"] for e in taken if e["alert_key"].startswith("nagios:")} == \
        {key(h) for h in hosts[3:10]}
    assert rig.store.scalar("SELECT count(*) FROM storm_members WHERE state='open'") == 497

    # Later, every alert recovers: the three tickets close on their own; recoveries of grouped
    # keys append to the storm ticket, which resolves once the last of them has recovered.
    later = T0 + 3600
    await rig.feed(*(rig.nagios(h, kind="RECOVERY", at=later + i * 0.1)
                     for i, h in enumerate(hosts)), now=later + 50)
    await rig.settle()
    tickets = {t["correlationId"]: t for t in psa_sim.tickets()}
    assert len(tickets) == 4 and all(t["status"] == "closed" for t in tickets.values())
    storm = tickets[storm["correlationId"]]
    assert history(storm)[-1] == "RESOLVED" and history(storm).count("RESOLVED") == 1
    recovered = "\n".join(h["summary"] for h in storm["history"][1:-1])
    assert all(f"RECOVERED {key(h)}" in recovered for h in hosts[3:-1])
    assert key(hosts[-1]) in storm["history"][-1]["summary"]  # the last one closes it
    assert rig.store.scalar("SELECT count(*) FROM storm_members WHERE state='open'") == 0
    assert rig.store.scalar("SELECT count(*) FROM correlations WHERE state='open'") == 0


async def test_global_cap_is_the_last_guard_across_accounts(make_rig, psa_sim):
    rig = make_rig(account_cap=1000, global_cap=15, account_window=60.0)
    groups = {"acme": "ACME-001", "initech": "INITECH-003", "1002": "GLOBEX-002"}
    msgs = [rig.nagios(f"h{i:02d}", group=g, at=T0 + i * 0.5)
            for i in range(20) for g in groups]
    msgs.sort(key=lambda m: m.arrived_at)
    await rig.feed(*msgs, now=T0 + 30)
    await rig.settle()
    tickets = psa_sim.tickets()
    storms = [t for t in tickets if t["productGroup"] == "storm"]
    # Each account's first burst_threshold (3) alerts get tickets at once; its next ones are
    # held for group_wait, and once global_cap (15) new alerts arrived overall, one storm ticket
    # per account that kept alerting takes them over. (Before issue 15: 15 individual tickets.)
    assert len(tickets) - len(storms) == 9
    assert sorted(t["accountId"] for t in storms) == sorted(groups.values())
    grouped = [e for e in rig.events("decided") if e["detail"].get("storm")]
    assert len(grouped) == 60 - 15
    assert all("new alerts overall" in e["detail"]["reason"] for e in grouped)


async def test_grouped_key_that_fires_again_keeps_the_storm_ticket_open(make_rig, psa_sim):
    rig = make_rig(account_cap=2, account_window=60.0, coalesce_window=30.0)
    hosts = ["h0", "h1", "h2", "h3", "h4"]
    await rig.feed(*(rig.nagios(h, at=T0 + i) for i, h in enumerate(hosts)), now=T0 + 5)
    await rig.settle()
    [storm] = [t for t in psa_sim.tickets() if t["productGroup"] == "storm"]
    # h3 (grouped) recovers and, still within the storm, fails again; then h2 and h4 recover.
    await rig.feed(rig.nagios("h3", kind="RECOVERY", at=T0 + 10), now=T0 + 10)
    await rig.feed(rig.nagios("h3", at=T0 + 20), now=T0 + 20)
    await rig.feed(rig.nagios("h2", kind="RECOVERY", at=T0 + 30),
                   rig.nagios("h4", kind="RECOVERY", at=T0 + 31), now=T0 + 31)
    await rig.settle()
    storm = next(t for t in psa_sim.tickets() if t["correlationId"] == storm["correlationId"])
    assert storm["status"] == "open", "the storm ticket closed while h3 is still failing"
    assert "RECOVERED " + key("h3") in json.dumps(storm["history"])
    # h3 recovers for good: now every grouped alert has, and the storm ticket resolves.
    await rig.feed(rig.nagios("h3", kind="RECOVERY", at=T0 + 600), now=T0 + 600)
    await rig.settle()
    storm = next(t for t in psa_sim.tickets() if t["correlationId"] == storm["correlationId"])
    assert storm["status"] == "closed" and history(storm).count("RESOLVED") == 1
    assert key("h3") in storm["history"][-1]["summary"]
    assert len(psa_sim.tickets()) == 3  # h0, h1 and the storm ticket


# -- 2. a flapping check ---------------------------------------------------------------------------


async def test_check_flapping_20_times_in_5_minutes_keeps_one_ticket(make_rig, psa_sim):
    rig = make_rig(resolve_delay=60.0, coalesce_window=300.0)
    ids = []
    for i in range(40):  # fail, recover, fail, … every 7.5 s: 20 flaps in 300 s
        at = T0 + i * 7.5
        ids += await rig.feed(rig.nagios("web01", kind="RECOVERY" if i % 2 else "PROBLEM",
                                         at=at), now=at)
        [ticket] = psa_sim.tickets()
        assert ticket["status"] == "open", f"closed after message {i}"
    last_recovery = T0 + 39 * 7.5
    await rig.step_to(last_recovery + 59)
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "open"  # the last resolve is still within its 60 s delay
    await rig.settle()
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "closed"
    assert history(ticket) == ["OPEN", "UPDATE", "RESOLVED"]  # never closed and re-opened
    assert "flapping" in ticket["history"][1]["summary"]
    assert "covers 19 occurrences" in ticket["history"][1]["summary"]
    resolved_at = rig.store.scalar("SELECT max(updated_at) FROM outbox WHERE action='RESOLVED'"
                                   " AND result LIKE '%resolved%'")
    assert resolved_at >= last_recovery + 60
    out = rig.outcomes(ids)
    assert out[0] == "created" and out[-1] == "resolved"
    assert out.count("appended") == 1 and out.count("resolved") == 1
    assert set(out[1:-1]) == {"coalesced", "appended"}
    cancelled = rig.events("cancelled")
    assert len(cancelled) == 19  # every held resolve but the last was cancelled by a re-fire
    assert {e["alert_key"] for e in cancelled} == {key("web01")}


async def test_flapping_that_settles_leaves_the_ticket_open(make_rig, psa_sim):
    rig = make_rig(resolve_delay=60.0, coalesce_window=300.0)
    for i in range(41):  # … and ends failing
        at = T0 + i * 7.5
        await rig.feed(rig.nagios("web01", kind="RECOVERY" if i % 2 else "PROBLEM", at=at),
                       now=at)
    await rig.settle()
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "open" and history(ticket) == ["OPEN", "UPDATE"]
    assert rig.store.scalar("SELECT count(*) FROM outbox WHERE state='pending'") == 0


async def test_held_resolve_survives_a_restart_and_is_still_cancelled_by_a_refire(
        make_rig, psa_sim):
    rig = make_rig(resolve_delay=120.0, coalesce_window=300.0)
    await rig.feed(rig.nagios("web04", at=T0), now=T0)
    await rig.feed(rig.nagios("web04", kind="RECOVERY", at=T0 + 60), now=T0 + 60)
    assert rig.store.scalar("SELECT count(*) FROM outbox WHERE action='RESOLVED' AND"
                            " state='pending'") == 1
    await rig.restart()
    await rig.feed(rig.nagios("web04", at=T0 + 100), now=T0 + 100)  # a flap, after a restart
    await rig.step_to(T0 + 200)
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "open" and history(ticket) == ["OPEN"]
    await rig.feed(rig.nagios("web04", kind="RECOVERY", at=T0 + 200), now=T0 + 200)
    await rig.restart()
    await rig.step_to(T0 + 399)
    assert psa_sim.tickets()[0]["status"] == "open"  # the resolve waits behind the held append
    await rig.settle()
    [ticket] = psa_sim.tickets()
    assert history(ticket) == ["OPEN", "UPDATE", "RESOLVED"] and ticket["status"] == "closed"


# -- 3. a clean fail -> repeat x10 -> recover ------------------------------------------------------


@pytest.mark.parametrize("resolve_delay", [0.0, 60.0])
async def test_fail_repeat_recover_is_one_create_bounded_appends_one_close(
        make_rig, psa_sim, resolve_delay):
    window = 300.0
    rig = make_rig(coalesce_window=window, resolve_delay=resolve_delay)
    ids = await rig.feed(rig.nagios("db01", "MySQL", at=T0), now=T0)
    for i in range(1, 11):  # Nagios re-notifies every minute
        at = T0 + i * 60
        ids += await rig.feed(rig.nagios("db01", "MySQL", at=at), now=at)
    recover = T0 + 11 * 60
    ids += await rig.feed(rig.nagios("db01", "MySQL", kind="RECOVERY", at=recover),
                          now=recover)
    await rig.settle()

    [ticket] = psa_sim.tickets()
    statuses = history(ticket)
    assert statuses[0] == "OPEN" and statuses[-1] == "RESOLVED" and ticket["status"] == "closed"
    appends = ticket["history"][1:-1]
    # The bound: repeats spanning S seconds (here 60 s .. 600 s, S = 540) make at most
    # floor(S / window) + 1 appends: 2 with a 300 s window.
    assert len(appends) == int(540 // window) + 1 == 2
    covered = []
    for h in appends:
        m = re.search(r"covers (\d+) occurrences, first (.+?) UTC, last (.+?) UTC\.$",
                      h["summary"])
        assert m, h["summary"]
        covered.append(int(m.group(1)))
    assert covered == [5, 5]  # [09:01, 09:06), then [09:06, 09:11): windows are half-open
    out = rig.outcomes(ids)
    assert out[0] == "created" and out[-1] == "resolved"
    assert out.count("appended") == len(appends)
    assert out.count("coalesced") == 10 - len(appends)
    assert [c for c, _ in rig.sent()] == statuses


# -- 4. a backlog drained after an outage is judged as it happened ---------------------------------


async def test_backlog_of_500_alerts_over_2_hours_is_not_a_storm(make_rig, psa_sim):
    rig = make_rig(account_cap=10, account_window=60.0)
    hosts = [f"host{i:03d}" for i in range(500)]
    # 500 alerts over two hours: about four per minute, well below the cap of ten per minute,
    # all staged three hours late (the mailbox was unreachable) and processed in one go.
    msgs = [rig.nagios(h, at=T0 + i * 14.4) for i, h in enumerate(hosts)]
    ids = await rig.feed(*msgs, now=T0 + 5 * 3600)
    await rig.settle()
    tickets = psa_sim.tickets()
    assert len(tickets) == 500
    assert not [t for t in tickets if t["productGroup"] == "storm"]
    assert set(rig.outcomes(ids)) == {"created"}
    assert not [e for e in rig.events("decided") if e["detail"].get("storm")]


async def test_backlog_drained_after_live_mail_is_judged_on_its_own_arrival_times(
        make_rig, psa_sim):
    rig = make_rig(account_cap=10, account_window=60.0)
    now = T0 + 3 * 3600
    # The live mailbox works: a burst of 10 new alerts (the cap, not over it) was just handled.
    await rig.feed(*(rig.nagios(f"live{i}", at=now + i) for i in range(10)), now=now + 10)
    # Then a second mailbox comes back and its backlog is drained: 30 alerts that arrived one a
    # minute, hours before the live burst. Alerts that arrived after them must not count.
    backlog = [rig.nagios(f"old{i:02d}", at=T0 + i * 60) for i in range(30)]
    ids = await rig.feed(*backlog, now=now + 20)
    await rig.settle()
    tickets = psa_sim.tickets()
    assert not [t for t in tickets if t["productGroup"] == "storm"]
    assert len(tickets) == 40
    assert set(rig.outcomes(ids)) == {"created"}


async def test_flapping_backlog_processed_late_is_damped_as_it_happened(make_rig, psa_sim):
    rig = make_rig(resolve_delay=60.0, coalesce_window=300.0)
    flaps = [rig.nagios("web05", kind="RECOVERY" if i % 2 else "PROBLEM", at=T0 + i * 7.5)
             for i in range(40)]
    await rig.feed(*flaps, now=T0 + 2 * 3600)  # every held row is long due when processed
    await rig.settle()
    [ticket] = psa_sim.tickets()
    assert history(ticket) == ["OPEN", "UPDATE", "RESOLVED"] and ticket["status"] == "closed"


# -- 5. re-open policy and stale correlations ------------------------------------------------------


async def test_alert_after_its_ticket_closed_opens_a_new_ticket_linking_the_old(
        make_rig, psa_sim):
    rig = make_rig()
    await rig.feed(rig.nagios("web02", at=T0), now=T0)
    await rig.feed(rig.nagios("web02", kind="RECOVERY", at=T0 + 60), now=T0 + 60)
    await rig.settle()
    [first] = psa_sim.tickets()
    assert first["status"] == "closed"
    [again] = await rig.feed(rig.nagios("web02", at=T0 + 3600), now=T0 + 3600)
    await rig.settle()
    tickets = psa_sim.tickets()
    assert len(tickets) == 2
    second = next(t for t in tickets if t["correlationId"] != first["correlationId"])
    assert second["status"] == "open"
    assert first["correlationId"] in second["summary"]
    assert rig.store.scalar("SELECT previous_id FROM correlations WHERE state='open'") == \
        first["correlationId"]
    assert rig.outcomes([again]) == ["created"]


async def test_reopen_append_to_a_closed_ticket_falls_back_to_a_linked_new_ticket(
        make_rig, psa_sim):
    # reopen = "append": the alert appends to its closed ticket. MSPCentric (and the simulator)
    # refuse an UPDATE to a closed ticket with a 404; delivery then asks for the ticket, finds
    # it closed and creates a new one from the same payload, which names the closed ticket.
    rig = make_rig(reopen="append")
    await rig.feed(rig.nagios("web03", at=T0), now=T0)
    await rig.feed(rig.nagios("web03", kind="RECOVERY", at=T0 + 60), now=T0 + 60)
    await rig.settle()
    [first] = psa_sim.tickets()
    [again] = await rig.feed(rig.nagios("web03", at=T0 + 3600), now=T0 + 3600)
    await rig.settle()
    tickets = psa_sim.tickets()
    assert len(tickets) == 2
    first = next(t for t in tickets if t["correlationId"] == first["correlationId"])
    second = next(t for t in tickets if t is not first)
    assert history(first) == ["OPEN", "RESOLVED"] and first["status"] == "closed"
    assert history(second) == ["OPEN"] and second["status"] == "open"
    assert first["correlationId"] in second["summary"]
    assert rig.outcomes([again]) == ["created"]
    sent = [(e["outcome"], e["detail"]["action"]) for e in rig.events("sent")
            if e["message_ref"] == again]
    assert sent == [("not_found", "UPDATE"), ("created", "OPEN")]


async def test_stale_open_correlation_gets_a_new_ticket(make_rig, psa_sim):
    rig = make_rig(max_open_age_days=1.0)
    await rig.feed(rig.nagios("nas01", "Disk", at=T0), now=T0)
    await rig.settle()
    [old] = psa_sim.tickets()
    later = T0 + 2 * 86400
    [mid] = await rig.feed(rig.nagios("nas01", "Disk", at=later), now=later)
    await rig.settle()
    tickets = psa_sim.tickets()
    assert len(tickets) == 2
    new = next(t for t in tickets if t["correlationId"] != old["correlationId"])
    assert history(new) == ["OPEN"]
    assert history(next(t for t in tickets if t is not new)) == ["OPEN"]  # nothing appended
    assert rig.outcomes([mid]) == ["created"]
    [decided] = [e for e in rig.events("decided") if e["message_ref"] == mid]
    assert "stale" in decided["detail"]["reason"] and old["correlationId"] in \
        decided["detail"]["reason"]
    states = {r["correlation_id"]: r["state"] for r in
              rig.store.query("SELECT correlation_id, state FROM correlations")}
    assert states == {old["correlationId"]: "closed", new["correlationId"]: "open"}


# -- 6. `mailbridge events --key` ------------------------------------------------------------------


async def test_events_cli_shows_occurrences_and_what_they_became(make_rig, psa_sim):
    rig = make_rig(account_cap=1, account_window=60.0, resolve_delay=60.0,
                   coalesce_window=300.0)
    k, grouped = key("app01", "API"), key("app02", "API")
    steps = [(0, "app01", "PROBLEM"), (5, "app02", "PROBLEM"), (30, "app01", "PROBLEM"),
             (60, "app01", "PROBLEM"), (90, "app01", "RECOVERY"), (100, "app01", "PROBLEM"),
             (120, "app01", "RECOVERY")]
    ids = {}
    for at, host, kind in steps:
        [ids[at]] = await rig.feed(rig.nagios(host, "API", kind=kind, at=T0 + at), now=T0 + at)
    await rig.settle()

    result = cli("events", "--config", str(rig.config), "--key", k, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    # The key's own events, and the key-less events (staged, outcome) of its messages.
    assert {r["alert_key"] for r in rows} == {k, None}
    assert {r["message_ref"] for r in rows if r["alert_key"] is None} <= set(ids.values())
    assert "outcome" in {r["kind"] for r in rows}
    by_msg: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_msg.setdefault(r["message_ref"], []).append(r)
    mine = [ids[a] for a, host, _ in steps if host == "app01"]
    assert sorted(by_msg) == sorted(mine)
    # Every raw occurrence is there, with its subject ...
    for m in mine:
        [c] = [r for r in by_msg[m] if r["kind"] == "classified"]
        assert "Service Alert: acme/app01/API" in c["detail"]["subject"]

    # ... and what it turned into.
    def became(m: int) -> list[tuple[str, str | None]]:
        return [(r["kind"], r["outcome"]) for r in by_msg[m]
                if r["kind"] in ("decided", "sent", "cancelled")]

    assert became(ids[0]) == [("decided", "pending"), ("sent", "created")]
    assert became(ids[30]) == [("decided", "pending"), ("sent", "updated")]
    assert became(ids[60]) == [("decided", "coalesced")]
    assert became(ids[90]) == [("decided", "pending"), ("cancelled", "coalesced")]
    assert became(ids[100]) == [("decided", "coalesced")]  # folded, and cancelled the resolve
    assert became(ids[120]) == [("decided", "pending"), ("sent", "closed")]
    [refire] = [r for r in by_msg[ids[100]] if r["kind"] == "decided"]
    assert refire["detail"]["folded_into"] and refire["detail"]["cancelled"]

    # A grouped key shows the grouping decision, naming the storm ticket.
    rows = json.loads(cli("events", "--config", str(rig.config), "--key", grouped,
                          "--json").stdout)
    [decided] = [r for r in rows if r["kind"] == "decided"]
    [storm] = [t for t in psa_sim.tickets() if t["productGroup"] == "storm"]
    assert decided["detail"]["storm"] == storm["correlationId"]
    assert "storm" in decided["detail"]["reason"]

    text = cli("events", "--config", str(rig.config), "--key", k).stdout.decode()
    assert "cancelled" in text and "coalesced" in text and "closed" in text


async def test_occurrence_count_survives_the_summary_length_limit(make_rig, psa_sim):
    rig = make_rig(coalesce_window=300.0)
    long = "x" * 60 + "\r\n"
    for i in range(3):
        await rig.feed(rig.nagios("big01", info=long * 150, at=T0 + i * 10), now=T0 + i * 10)
    await rig.settle()
    [ticket] = psa_sim.tickets()
    summary = ticket["history"][1]["summary"]
    limit = rig.settings.psa.summary_max_chars
    assert len(ticket["history"][0]["summary"]) > limit - 100  # the alert text alone is long
    assert len(summary) <= limit
    assert summary.endswith(" UTC.") and "covers 2 occurrences" in summary
