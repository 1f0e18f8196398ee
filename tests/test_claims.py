"""Claims have owners: a row is taken back only when its claimant is gone.

Owners are real processes here: a child that claims and is then killed with SIGKILL, a daemon
(`mailbridge run`) in mid-delivery against the simulator slowed by its latency fault, with
`run --once` started beside it. The simulator's call log and an aiosmtpd sink prove that no
call and no mail went out twice.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from bridge.models import OutboxItem, RawMessage
from bridge.store.db import Store
from bridge.store.lease import OwnerConflict, OwnerLease
from tests.fixtures.smtp import SmtpSink, _Handler
from tests.helpers import MAILBRIDGE, SAMPLES, cli, write_config

RAW = b"Message-ID: <m%d@example.org>\r\nSubject: x\r\n\r\nbody\r\n"

CLAIMANT = """
import asyncio, sys
from bridge.store.db import Store
from bridge.store.lease import OwnerLease

async def main():
    store = Store(sys.argv[1])
    lease = OwnerLease(store)
    await lease.register("once")
    store.claim_outbox(now=1e12, limit=5)
    store.claim_staged("child", limit=5)
    print("claimed", flush=True)
    await asyncio.Event().wait()  # alive, holding its claims, until killed

asyncio.run(main())
"""


def until(cond, timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition


def filled_store(path: Path) -> Store:
    s = Store(path)
    s.stage(RawMessage(RAW % 1, "pipe", None, 1.0))
    s.enqueue(OutboxItem("psa", "k", {}, "OPEN", "c"), None)
    return s


def test_a_live_owners_claims_stay_a_dead_owners_come_back_at_once(tmp_path):
    s = filled_store(tmp_path / "db")
    child = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(tmp_path / "db")],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == b"claimed"
        assert s.reclaim_in_flight() == 0  # the child lives: its call is its own
        assert s.claim_staged("me") == []
        [held] = s.processing_rows()
        assert held["claimant"] == "alive" and held["claims"] == 1
        assert s.processing_release(held["id"]) is not None  # refused without --force
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    # No lease wait: on this host a pid that is gone is a dead owner.
    assert s.reclaim_in_flight() == 1
    [row] = s.claim_outbox(now=1e12, limit=5)
    assert row.crashes == 1 and row.attempts == 2
    [msg] = s.claim_staged("me")
    assert s.scalar("SELECT claims FROM messages WHERE id=?", (msg.id,)) == 2
    assert s.scalar("SELECT count(*) FROM owners") == 0  # the dead owner is forgotten


def test_an_owner_on_another_host_is_trusted_until_its_lease_runs_out(tmp_path):
    s = filled_store(tmp_path / "db")
    with s.write() as conn:
        conn.execute("INSERT INTO owners (id, kind, pid, host, boot_id, proc_start, started_at,"
                     " heartbeat_at) VALUES ('far', 'daemon', 1, 'elsewhere', NULL, NULL, ?, ?)",
                     (time.time(), time.time()))
    s.owner = "far"
    s.claim_outbox(now=1e12, limit=5)
    s.owner = None
    assert s.reclaim_in_flight() == 0
    with s.write() as conn:  # no heartbeat for longer than the 60 s lease
        conn.execute("UPDATE owners SET heartbeat_at=? WHERE id='far'", (time.time() - 61,))
    assert s.reclaim_in_flight() == 1


async def test_one_daemon_per_store_one_shots_beside_it_and_a_clean_release(tmp_path):
    path = tmp_path / "db"
    s = filled_store(path)
    daemon = OwnerLease(s, heartbeat=0.05)
    await daemon.register("daemon")
    second = OwnerLease(Store(path))
    with pytest.raises(OwnerConflict, match="another mailbridge daemon already runs"):
        await second.register("daemon")
    once = OwnerLease(Store(path))
    await once.register("once")
    beat = s.scalar("SELECT heartbeat_at FROM owners WHERE kind='daemon'")
    until(lambda: s.scalar("SELECT heartbeat_at FROM owners WHERE kind='daemon'") > beat,
          5, "a heartbeat")
    # A clean stop hands its claims back uncounted: no crash, no poison charge.
    [row] = s.claim_outbox(now=1e12, limit=5)
    s.claim_staged("w")
    await daemon.release()
    assert s.scalar("SELECT state || ' ' || crashes FROM outbox") == "pending 0"
    assert s.scalar("SELECT state || ' ' || claims FROM messages") == "staged 0"
    await second.register("daemon")  # the first daemon is gone now
    await second.release()
    await once.release()


class SlowHandler(_Handler):
    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        await asyncio.sleep(1.0)  # injected fault: a slow relay keeps the mail in flight
        return await super().handle_DATA(server, session, envelope)


class SlowSink(SmtpSink):
    def start(self) -> None:
        self._controller = Controller(SlowHandler(self), hostname=self.host, port=self.port,
                                      ready_timeout=5.0)
        self._controller.start()


def zabbix(n: int) -> bytes:
    raw = (SAMPLES / "05-zabbix-problem.eml").read_bytes()
    return raw.replace(b"48213", str(n).encode())


def unmatched(n: int) -> bytes:
    raw = (SAMPLES / "19-nagios-unknown-account.eml").read_bytes()
    return raw.replace(b"Message-ID: <", f"Message-ID: <fw{n}.".encode(), 1)


def in_flight(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT count(*) FROM outbox WHERE state='in_flight'").fetchone()[0]
    finally:
        conn.close()


def test_run_once_beside_a_daemon_in_mid_delivery_sends_nothing_twice(tmp_path, psa_sim):
    with SlowSink() as sink:
        # Twelve new alerts of one account at once are a burst (docs/storm.md); this test counts
        # one ticket per alert, so it lifts the caps.
        config = write_config(tmp_path, psa_sim, smtp_port=sink.port,
                              extra="\n[storm]\nburst_threshold = 1000\naccount_cap = 1000\n")
        db = tmp_path / "mailbridge.db"
        s = Store(db)
        for i in range(12):
            s.stage(RawMessage(zabbix(70_000 + i), "pipe", None, time.time()))
        for i in range(4):
            s.stage(RawMessage(unmatched(i), "pipe", None, time.time()))
        s.close()
        psa_sim.control(latency_ms=1500)  # every call stays in flight 1.5 s
        daemon = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            until(lambda: in_flight(db) > 0, 30, "the daemon's first calls in flight")
            again = cli("run", "--config", str(config), timeout=30)
            assert again.returncode == 2 and b"another mailbridge daemon" in again.stderr
            once = cli("run", "--once", "--config", str(config), timeout=120)
            assert once.returncode in (0, 3), once.stderr.decode()[-2000:]
            until(lambda: len(psa_sim.tickets()) == 12 and len(sink.messages) >= 4
                  and in_flight(db) == 0, 90, "everything delivered")
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    calls = collections.Counter((c["correlationId"], c["incidentStatus"])
                                for c in psa_sim.calls())
    assert len(calls) == 12 and set(calls.values()) == {1}, calls
    mails = collections.Counter(i for m in sink.messages for i in range(4)
                                if f"<fw{i}.".encode() in m.content)
    assert len(sink.messages) == 4 and mails == {i: 1 for i in range(4)}, mails


def test_processing_command_lists_releases_and_quarantines(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    s = filled_store(db)
    s.stage(RawMessage(RAW % 2, "pipe", None, 2.0))
    s.close()
    child = subprocess.Popen([sys.executable, "-c", CLAIMANT, str(db)], stdout=subprocess.PIPE)
    assert child.stdout is not None and child.stdout.readline().strip() == b"claimed"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    listed = cli("processing", "--config", str(config), "--json")
    rows = __import__("json").loads(listed.stdout)
    assert [(r["id"], r["claimant"], r["claims"]) for r in rows] == [(1, "gone", 1), (2, "gone", 1)]
    assert cli("processing", "--config", str(config), "release", "1").returncode == 0
    assert cli("processing", "--config", str(config), "quarantine", "2").returncode == 0
    again = cli("processing", "--config", str(config), "quarantine", "2")
    assert again.returncode == 1 and b"not in processing" in again.stderr
    s = Store(db, readonly=True)
    assert s.query("SELECT id, state, outcome, reason, suspect FROM messages ORDER BY id") == [
        {"id": 1, "state": "staged", "outcome": None, "reason": None, "suspect": 1},
        {"id": 2, "state": "done", "outcome": "quarantined",
         "reason": "quarantined by the administrator", "suspect": 0}]
