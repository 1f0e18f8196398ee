"""One hostile mail never stops the pipeline: a runaway parse, a memory bomb and a worker
crash among ordinary alerts, through a running daemon (Maildir source, the simulator over
HTTP). Each bad mail ends quarantined with the budget it broke; the alerts around it become
tickets; /healthz, `status` and `ingest` of another mail answer within 2 s all along.

The three budget breakers use the worker's test-only hooks (MAILBRIDGE_TEST_HOOKS, see
docs/hardening.md): no real mail can trigger them. The nested-list HTML mails of the issue are
real and go through as ordinary mail now that HTML is converted in linear time."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

from tests.fixtures.smtp import free_port
from tests.helpers import MAILBRIDGE, SAMPLES, cli, write_config

HOOKS = "crash=X-Test-Crash;hang=X-Test-Hang;hog=X-Test-Hog"


def zabbix(n: int, marker: str = "") -> bytes:
    raw = (SAMPLES / "05-zabbix-problem.eml").read_bytes().replace(b"48213", str(n).encode())
    return (f"{marker}: yes\r\n".encode() + raw) if marker else raw


def nested_lists(size: int) -> bytes:
    n = size // 9
    html = "<html><body>" + "<ol>" * n + "<li>x" * n + "</body></html>"
    return (f"From: someone@example.org\r\nTo: alerts@msp.example\r\nSubject: lists {size}\r\n"
            f"Message-ID: <lists{size}@example.org>\r\nMIME-Version: 1.0\r\n"
            f"Content-Type: text/html; charset=utf-8\r\n\r\n{html}").encode()


def outcomes(db: Path) -> dict[str, tuple[str | None, str | None]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {mid: (o, r) for mid, o, r in
                conn.execute("SELECT message_id, outcome, reason FROM messages")}
    finally:
        conn.close()


def healthz(port: int) -> float:
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        resp.read()
    return time.monotonic() - started


def test_budget_breakers_are_quarantined_while_everything_else_goes_on(tmp_path, psa_sim):
    port = free_port()
    config = write_config(tmp_path, psa_sim, maildir=True,
                          extra="\n[processing]\nwall_seconds = 5\nworkers = 2\n")
    config.write_text(config.read_text().replace(
        "[http]\nenabled = false", f"[http]\nenabled = true\nport = {port}"))
    new = tmp_path / "Maildir" / "new"
    new.mkdir(parents=True)
    for d in ("cur", "tmp"):
        (tmp_path / "Maildir" / d).mkdir()
    db = tmp_path / "mailbridge.db"
    log = open(tmp_path / "daemon.log", "wb")
    proc = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)], stdout=log,
                            stderr=subprocess.STDOUT, env=os.environ | {"MAILBRIDGE_TEST_HOOKS": HOOKS})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                healthz(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "the daemon did not come up"
                time.sleep(0.1)  # polling a condition: the HTTP listener
        mails = [zabbix(100 + i) for i in range(10)]
        mails[2:2] = [zabbix(900, "X-Test-Hang"), zabbix(901, "X-Test-Hog"),
                      zabbix(902, "X-Test-Crash")]
        mails += [nested_lists(144 * 1024), nested_lists(1024 * 1024)]
        for i, raw in enumerate(mails):
            (new / f"m{i:03d}.eml").write_bytes(raw)

        slowest = 0.0
        other = zabbix(777)
        deadline = time.monotonic() + 90
        ingested = False
        while True:
            slowest = max(slowest, healthz(port))
            started = time.monotonic()
            assert cli("status", "--config", str(config)).returncode in (0, 1)
            slowest = max(slowest, time.monotonic() - started)
            if not ingested:
                started = time.monotonic()
                assert cli("ingest", "--config", str(config), stdin=other).returncode == 0
                slowest = max(slowest, time.monotonic() - started)
                ingested = True
            got = outcomes(db) if db.exists() else {}
            if len(got) == len(mails) + 1 and all(o for o, _ in got.values()):
                break
            assert time.monotonic() < deadline, f"not every mail got an outcome: {got}"
        assert slowest < 2.0, f"something waited behind processing: {slowest:.2f} s"

        got = outcomes(db)
        by_event = {n: next(v for k, v in got.items() if f"zbx.{n}." in (k or ""))
                    for n in (900, 901, 902)}
        assert "time budget" in (by_event[900][1] or ""), by_event
        assert "memory budget" in (by_event[901][1] or ""), by_event
        assert by_event[902][0] == "quarantined" and "3 times" in (by_event[902][1] or "")
        others = {k: v for k, v in got.items() if not any(f"zbx.{n}." in (k or "")
                                                          for n in (900, 901, 902))}
        assert not [k for k, (o, _) in others.items() if o == "quarantined"], others
        assert len(psa_sim.tickets()) == 11  # ten alerts and the ingested one
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_a_pool_closed_under_a_batch_does_not_count_against_its_messages(tmp_path):
    """A reload closes the old pool; messages it could not evaluate go back uncounted, while a
    worker death counts towards the poison cap."""
    from bridge.classify.engine import ClassifyContext
    from bridge.classify.ruleset import RuleSet
    from bridge.config import Settings
    from bridge.decide.decider import Decider
    from bridge.models import RawMessage
    from bridge.process.pipeline import Broken, Pipeline
    from bridge.store.db import Store
    from tests.test_poison import query

    settings = Settings()
    pipeline = Pipeline(settings, RuleSet(), ClassifyContext(), Decider.from_settings(settings))
    db = tmp_path / "mailbridge.db"
    store = Store(db)
    for i in range(2):
        store.stage(RawMessage(zabbix(500 + i), "pipe", None, 1000.0 + i))
    rows = store.claim_staged("w", limit=2, with_raw=False)
    pipeline.apply_batch(store, rows, [Broken(rows[0].id, "pool closed", crashed=False),
                                       Broken(rows[1].id, "worker died")], "w")
    store.close()
    got = {i: (c, s) for i, c, s in query(db, "SELECT id, claims, suspect FROM messages")}
    assert got[rows[0].id] == (0, 0)  # back to staged, not charged
    assert got[rows[1].id] == (1, 1)  # charged, and tried alone next time
