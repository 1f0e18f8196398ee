"""The outbox against the PSA simulator over real HTTP: order, retries, outages, crashes.

Decisions are made with the real decide() and written with the real store; the clock is
injected so held rows and backoff can be stepped through without waiting.
"""

from __future__ import annotations

import itertools
import json
import re
import sqlite3

import pytest

from bridge.config import settings_from_dict
from bridge.decide.core import decide
from bridge.deliver.outbox import Delivery
from bridge.deliver.psa import PsaClient
from bridge.models import Alert, RawMessage, TicketCall
from bridge.store import AsyncStore, Store


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Rig:
    """A store, a delivery worker and the simulator, wired as the daemon wires them."""

    def __init__(self, tmp_path, sim, **psa_overrides):
        self.sim = sim
        self.path = tmp_path / "mb.db"
        self.clock = Clock()
        self.psa_settings = sim.settings(**psa_overrides)
        self.settings = settings_from_dict({"psa": {"concurrency": 4}})
        self._n = itertools.count(1)
        self.open()

    def open(self):
        self.store = Store(self.path, clock=self.clock)
        self.astore = AsyncStore(self.store)
        self.client = PsaClient(self.psa_settings)
        self.delivery = Delivery(self.astore, self.settings, psa=self.client, clock=self.clock)

    async def close(self):
        await self.client.aclose()
        self.astore.close()

    def alert(self, status="open", key="acme:web01:Host Down", account="ACME-001",
              group="servers", alert_type="Host Down") -> int:
        n = next(self._n)
        raw = b"Message-ID: <m%d@t>\r\n\r\nx" % n
        mid = self.store.stage(RawMessage(raw, "pipe", None, self.clock())).id
        a = Alert(key, status, account, group, alert_type, f"{key} {status}", f"occurrence {n}")
        with self.store.write():
            ctx = self.store.alert_context(a, self.clock(), self.settings.storm)
            self.store.apply_decision(mid, decide(a, ctx, policy=self.settings.storm),
                                      arrived_at=self.clock())
        return mid

    def outcome(self, mid: int) -> str | None:
        return self.store.scalar("SELECT coalesce(outcome, state) FROM messages WHERE id=?",
                                 (mid,))

    async def drain_until_settled(self, rounds: int = 20) -> None:
        """Deliver, then jump the clock past the next due row, until the outbox is empty."""
        for _ in range(rounds):
            await self.delivery.drain()
            due = self.store.next_outbox_due()
            if due is None:
                return
            self.clock.now = max(self.clock.now, due) + 0.001
        raise AssertionError("outbox did not settle")


@pytest.fixture
async def rig(tmp_path, psa_sim):
    r = Rig(tmp_path, psa_sim)
    yield r
    await r.close()


def sync_calls(sim):
    return [(c["incidentStatus"], c["correlationId"], c["status"]) for c in sim.calls()]


async def test_open_update_resolve_make_one_ticket_with_history(rig):
    ids = [rig.alert("open"), rig.alert("open"), rig.alert("resolved")]
    await rig.drain_until_settled()
    assert [rig.outcome(i) for i in ids] == ["created", "appended", "resolved"]
    [ticket] = rig.sim.tickets()
    assert ticket["status"] == "closed"
    assert [h["incidentStatus"] for h in ticket["history"]] == ["OPEN", "UPDATE", "RESOLVED"]
    assert rig.store.scalar("SELECT state FROM correlations") == "closed"


async def test_update_never_overtakes_its_open_under_retries(rig):
    rig.sim.control(fail_next=6, fail_status=503)  # more than the client's in-call attempts
    opened, updated = rig.alert("open"), rig.alert("open")
    await rig.delivery.drain()
    assert rig.outcome(opened) == "pending" and rig.outcome(updated) == "pending"
    assert {c[0] for c in sync_calls(rig.sim)} == {"OPEN"}  # the UPDATE was never tried
    await rig.drain_until_settled()
    statuses = [c[0] for c in sync_calls(rig.sim) if c[2] in (200, 201)]
    assert statuses == ["OPEN", "UPDATE"]
    assert rig.outcome(opened) == "created" and rig.outcome(updated) == "appended"


async def test_psa_down_for_a_while_then_back_loses_nothing(rig):
    rig.sim.control(fail_next=10_000, fail_status=502)
    ids = [rig.alert("open", key=f"k{i}") for i in range(5)]
    for _ in range(3):
        await rig.delivery.drain()
        rig.clock.now += 3600
    assert all(rig.outcome(i) == "pending" for i in ids)
    assert rig.store.outbox_pending_count() == 5
    rig.sim.control(reset_faults=True)
    await rig.drain_until_settled()
    assert [rig.outcome(i) for i in ids] == ["created"] * 5
    assert len(rig.sim.tickets()) == 5


@pytest.mark.parametrize("how", ["drop", "500"])
async def test_failure_after_the_psa_created_the_ticket_makes_no_second_one(rig, how):
    rig.sim.control(fail_after_apply_next=1, fail_after_apply=how)
    mid = rig.alert("open")
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "created"
    assert len(rig.sim.tickets()) == 1
    opens = [c for c in sync_calls(rig.sim) if c[0] == "OPEN"]
    assert len(opens) >= 2 and len({c[1] for c in opens}) == 1  # re-sent with the same id


async def test_crash_between_send_and_commit_makes_no_second_ticket(rig):
    mid = rig.alert("open")
    [row] = rig.store.claim_outbox(rig.clock(), 5)
    sent = await rig.client.sync(row.action, TicketCall.from_payload(row.payload),
                                 row.correlation_id)
    assert sent.verdict == "created"
    # The process dies here: the row is still in flight, nothing recorded.
    await rig.close()
    rig.open()
    await rig.astore.reclaim_in_flight()  # what Delivery.run does at start-up
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "created"
    assert len(rig.sim.tickets()) == 1


async def test_rows_queued_with_the_old_wire_names_are_delivered_after_the_upgrade(rig):
    # Before migration 8 a PSA row's payload carried MSPCentric's names (alertType, accountId,
    # productGroup). Such rows, written as the old code wrote them, one of them queued and one
    # delivered, must survive the upgrade: the queued one is sent with the right routing.
    done = rig.alert("open", key="acme:db1:Disk", alert_type="Disk")
    await rig.drain_until_settled()
    queued = rig.alert("open", key="acme:web01:Host Down")
    await rig.close()
    conn = sqlite3.connect(rig.path)
    for row_id, payload in conn.execute("SELECT id, payload FROM outbox").fetchall():
        p = json.loads(payload)
        old = {"title": p["title"], "summary": p["summary"], "alertType": p["alert_type"],
               "accountId": p["account_id"], "productGroup": p["product_group"],
               "device": "web01"}
        conn.execute("UPDATE outbox SET payload=? WHERE id=?", (json.dumps(old), row_id))
    # Back to version 7: the columns later migrations add go too, so they can run again.
    from bridge.store.schema import MIGRATIONS

    for later in MIGRATIONS[8:]:
        for index in re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", later):
            conn.execute(f"DROP INDEX IF EXISTS {index}")
        for table in re.findall(r"CREATE TABLE (\w+)", later):
            conn.execute(f"DROP TABLE {table}")
        for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", later):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    conn.execute("PRAGMA user_version = 7")
    conn.commit()
    conn.close()
    rig.open()  # migrates, as `run` does
    payloads = [json.loads(r[0]) for r in rig.store.conn.execute("SELECT payload FROM outbox")]
    assert all(set(p) == {"title", "summary", "alert_type", "account_id", "product_group",
                          "device"} for p in payloads)
    await rig.drain_until_settled()
    assert rig.outcome(done) == "created" and rig.outcome(queued) == "created"
    web = [t for t in rig.sim.tickets() if t["alertType"] == "Host Down"]
    assert len(web) == 1 and web[0]["accountId"] == "ACME-001"
    assert web[0]["productGroup"] == "servers" and web[0]["device"] == "web01"


async def test_update_of_a_ticket_gone_at_the_psa_creates_a_new_one(rig):
    first = rig.alert("open")
    await rig.drain_until_settled()
    # The ticket disappears at the PSA (deleted by a technician, a PSA reset, …).
    rig.sim.control(reset=True)
    again = rig.alert("open")
    await rig.drain_until_settled()
    assert rig.outcome(first) == "created" and rig.outcome(again) == "created"
    states = rig.store.query("SELECT state FROM correlations ORDER BY opened_at, rowid")
    assert [s["state"] for s in states] == ["void", "open"]
    [ticket] = rig.sim.tickets()
    assert ticket["status"] != "closed"


async def test_conflict_is_held_until_the_partner_re_enables(rig):
    rig.sim.control(integration={"active": False})
    mid = rig.alert("open")
    await rig.delivery.drain()
    assert rig.outcome(mid) == "pending"
    row = rig.store.outbox_rows()[0]
    assert row["state"] == "pending" and "409" in row["last_error"]
    assert row["next_attempt_at"] >= rig.clock() + 60  # retried slowly
    rig.sim.control(integration={"active": True})
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "created"


async def test_suppressed_by_the_partner_is_final_and_voids_the_correlation(rig):
    rig.sim.control(features={"ticket_creation": False})
    mid = rig.alert("open")
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "suppressed"
    assert rig.store.scalar("SELECT state FROM correlations") == "void"
    resolved = rig.alert("resolved")
    await rig.drain_until_settled()
    assert rig.outcome(resolved) == "nothing-to-resolve"


async def test_suppressed_as_409_is_also_final(rig):
    rig.sim.control(features={"ticket_creation": False}, suppressed_variant="409")
    mid = rig.alert("open")
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "suppressed"


async def test_unmapped_account_fails_permanently_with_the_cause(rig):
    mid = rig.alert("open", key="umbrella:x", account="UMBRELLA-004")
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "failed"
    reason = rig.store.scalar("SELECT reason FROM messages WHERE id=?", (mid,))
    assert "404" in reason and "mapped" in reason
    # An expected answer, not mailbridge's trouble: no dead row, one create-refused event
    # (for the daily digest and the several-accounts check of `degraded`).
    assert rig.store.dead_outbox_count() == 0
    [refused] = rig.store.refused_creates(0)
    assert '"account_id": "UMBRELLA-004"' in refused["detail"]


async def test_refused_credentials_stop_sending_until_reload(tmp_path, psa_sim):
    from pydantic import SecretStr

    rig = Rig(tmp_path, psa_sim, client_secret=SecretStr("wrong-secret-123"))
    try:
        mid = rig.alert("open")
        await rig.delivery.drain()
        assert rig.delivery.psa_refused and rig.outcome(mid) == "pending"
        before = len(sync_calls(psa_sim))
        rig.clock.now += 60
        await rig.delivery.drain()
        assert len(sync_calls(psa_sim)) == before  # stopped sending
        good = PsaClient(psa_sim.settings())
        rig.delivery.resume_psa(good)
        rig.store.outbox_requeue(rig.store.outbox_rows()[0]["id"])
        await rig.drain_until_settled()
        assert rig.outcome(mid) == "created"
        await good.aclose()
        events = rig.store.query("SELECT detail FROM events")
        assert all("wrong-secret-123" not in (e["detail"] or "") for e in events)
    finally:
        await rig.close()


async def test_rate_limited_calls_are_retried_after_retry_after(rig):
    rig.sim.control(throttle_next=5, retry_after="30")
    mid = rig.alert("open")
    await rig.delivery.drain()
    row = rig.store.outbox_rows()[0]
    assert row["state"] == "pending" and row["next_attempt_at"] >= rig.clock() + 29
    await rig.drain_until_settled()
    assert rig.outcome(mid) == "created"


async def test_different_keys_go_concurrently_one_key_in_order(rig):
    rig.sim.control(latency_ms=100)
    for i in range(4):
        rig.alert("open", key=f"k{i}")
        rig.alert("open", key=f"k{i}")
    import time

    started = time.monotonic()
    await rig.drain_until_settled()
    elapsed = time.monotonic() - started
    calls = sync_calls(rig.sim)
    assert len(calls) == 8
    for cid in {c[1] for c in calls}:  # per ticket: OPEN strictly before UPDATE
        assert [c[0] for c in calls if c[1] == cid] == ["OPEN", "UPDATE"]
    assert elapsed < 8 * 0.1  # four keys in parallel, not one call after another
