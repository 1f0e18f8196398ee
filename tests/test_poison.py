"""Poison caps: a message that kills its process 3 times is quarantined while the rest of its
batch goes on; an outbox row that crashes the deliverer (or dies with it) 3 times goes dead,
and transient retries (the simulator's 503s) do not count towards that cap.

The deaths are real: `run --once` in a child process killed with SIGKILL — by a test-only
patch of the child's pipeline when it meets the poison message, or by the test while a call is
in flight (the simulator's latency fault keeps it there).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from bridge.models import RawMessage
from bridge.store.db import Store
from tests.helpers import MAILBRIDGE, SAMPLES, outcomes, write_config
from tests.test_outbox_delivery import Rig

# `run --once` whose pipeline kills its own process on the poison message (test-only patch).
DYING_RUN = """
import asyncio, os, signal, sys
from bridge.config import load_settings
from bridge.daemon import Bridge
from bridge.process.pipeline import Pipeline
from bridge.store.db import Store

real_apply, real_claim = Pipeline.apply, Store.claim_staged

def apply(self, store, row, ev):
    # The Message-ID: of a parsed mail, results from the workers carry only subject, sender
    # and Message-ID (bridge/process/isolation.py, _slim).
    if "poison" in (ev.parsed.message_id or ""):
        os.kill(os.getpid(), signal.SIGKILL)
    return real_apply(self, store, row, ev)

def claim_staged(self, *args, **kwargs):
    rows = real_claim(self, *args, **kwargs)
    if rows:
        print("claimed", " ".join(str(r.id) for r in rows), flush=True)
    return rows

Pipeline.apply, Store.claim_staged = apply, claim_staged

async def main():
    bridge = Bridge(load_settings(sys.argv[1]))
    try:
        return await bridge.run_once()
    finally:
        await bridge.close()

sys.exit(asyncio.run(main()))
"""


def zabbix(n: int, poison: bool = False) -> bytes:
    raw = (SAMPLES / "05-zabbix-problem.eml").read_bytes().replace(b"48213", str(n).encode())
    return raw.replace(b"<zbx.", b"<poison.zbx.") if poison else raw


def query(db: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_poison_message_is_quarantined_after_3_deaths_and_its_batch_goes_on(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    s = Store(db)
    for i in range(8):
        s.stage(RawMessage(zabbix(80_000 + i, poison=(i == 2)), "pipe", None, 1000.0 + i))
    s.close()
    deaths, claims = 0, []
    for _ in range(8):
        run = subprocess.run([sys.executable, "-c", DYING_RUN, str(config)],
                             capture_output=True, timeout=120)
        claims += [line.split()[1:] for line in run.stdout.decode().splitlines()
                   if line.startswith("claimed")]
        if run.returncode != -signal.SIGKILL:
            assert run.returncode == 0, run.stderr.decode()[-2000:]
            break
        deaths += 1
    assert deaths == 3
    got = outcomes(db)
    poison = got.pop(3)
    assert poison[0] == "quarantined" and "killed 3 times" in (poison[1] or ""), poison
    assert all(o == "created" for o, _ in got.values()) and len(got) == 7, got
    assert len(psa_sim.tickets()) == 7
    # After the first death the batch came back as suspects, handed out one at a time; no
    # innocent message was charged three times.
    assert len(claims[0]) == 8 and all(len(c) == 1 for c in claims[1:4]), claims
    assert max(n for (n,) in query(db, "SELECT claims FROM messages WHERE id != 3")) <= 2
    assert query(db, "SELECT kind FROM events WHERE kind='poison'") == [("poison",)]


def test_outbox_row_goes_dead_after_3_deliverer_deaths(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    s = Store(db)
    s.stage(RawMessage(zabbix(90_000), "pipe", None, time.time()))
    s.close()
    psa_sim.control(latency_ms=20_000)  # each call stays in flight until the kill
    for death in range(3):
        proc = subprocess.Popen([MAILBRIDGE, "run", "--once", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while len(psa_sim.calls()) <= death:  # polling the simulator's call log
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        proc.kill()
        proc.wait(timeout=10)
    psa_sim.control(latency_ms=0)
    last = subprocess.run([MAILBRIDGE, "run", "--once", "--config", str(config)],
                          capture_output=True, timeout=60)
    assert last.returncode == 0, last.stderr.decode()[-2000:]
    [(state, crashes, error)] = query(db, "SELECT state, crashes, last_error FROM outbox")
    assert (state, crashes) == ("dead", 3) and "3 times" in error
    [(outcome, _)] = outcomes(db).values()
    assert outcome == "failed"
    assert len(psa_sim.calls()) == 3  # not sent a fourth time


class Flaky:
    """The real PSA client; the calls numbered in `crash_on` raise instead (a deliverer bug)."""

    def __init__(self, real, crash_on: set[int]):
        self.real, self.crash_on, self.n = real, crash_on, 0

    async def sync(self, *args, **kwargs):
        self.n += 1
        if self.n in self.crash_on:
            raise RuntimeError("injected deliverer crash")
        return await self.real.sync(*args, **kwargs)

    async def aclose(self) -> None:
        await self.real.aclose()


async def step(rig: Rig) -> None:
    await rig.delivery.drain()
    due = rig.store.next_outbox_due()
    if due is not None:
        rig.clock.now = max(rig.clock.now, due) + 0.001


async def test_transient_503s_do_not_count_towards_the_crash_cap(tmp_path, psa_sim):
    rig = Rig(tmp_path, psa_sim)
    rig.delivery.psa = Flaky(rig.client, crash_on={7, 8})
    try:
        psa_sim.control(fail_next=100_000, fail_status=503)
        mid = rig.alert("open")
        for _ in range(6):
            await step(rig)
        row = rig.store.query("SELECT state, attempts, crashes, last_error FROM outbox")[0]
        assert (row["state"], row["attempts"], row["crashes"]) == ("pending", 6, 0), row
        assert "503" in row["last_error"]
        psa_sim.control(reset_faults=True)
        for _ in range(2):  # two crashes after six transient failures: still not dead
            await step(rig)
        assert rig.store.scalar("SELECT state || ' ' || crashes FROM outbox") == "pending 2"
        await step(rig)
        assert rig.outcome(mid) == "created" and len(psa_sim.tickets()) == 1
    finally:
        await rig.close()


async def test_three_deliverer_crashes_send_a_row_dead(tmp_path, psa_sim):
    rig = Rig(tmp_path, psa_sim)
    rig.delivery.psa = Flaky(rig.client, crash_on={1, 2, 3})
    try:
        mid = rig.alert("open")
        for _ in range(3):
            await step(rig)
        row = rig.store.query("SELECT state, crashes, last_error FROM outbox")[0]
        assert row["state"] == "dead" and "crashed 3 times" in row["last_error"], row
        assert rig.outcome(mid) == "failed" and psa_sim.calls() == []
    finally:
        await rig.close()
