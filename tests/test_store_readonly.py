"""Nothing waits behind a long write: views, /healthz and ingest answer while a writer holds
the store's write lock, and only `run`, `run --once` and `migrate` ever migrate the schema.

The long writer is a real second process holding `BEGIN IMMEDIATE` for 10 s (what a long
pipeline batch or a migration did).
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from bridge.config import settings_from_dict
from bridge.operator.web import create_app
from bridge.store.db import Store, StoreNotReady
from bridge.store.schema import MIGRATIONS
from tests.helpers import SAMPLES, cli, outcomes, write_config

HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO meta (key, value) VALUES ('long-writer', 'x')")
print("holding", flush=True)
time.sleep(float(sys.argv[2]))  # the long write: the lock stays taken this long
conn.execute("COMMIT")
"""


class Writer:
    """Another process holding the write lock for `seconds`."""

    def __init__(self, db, seconds: float = 10.0):
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(db), str(seconds)],
                                     stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == b"holding"
        self.until = time.monotonic() + seconds

    def still_holding(self) -> bool:
        return self.proc.poll() is None and time.monotonic() < self.until - 0.5

    def finish(self) -> None:
        self.proc.wait(timeout=30)


def timed(fn):
    started = time.monotonic()
    result = fn()
    return result, time.monotonic() - started


@pytest.fixture
def installed(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    assert cli("migrate", "--config", str(config)).returncode == 0
    assert cli("ingest", "--config", str(config),
               stdin=(SAMPLES / "05-zabbix-problem.eml").read_bytes()).returncode == 0
    return config


async def test_views_web_and_ingest_answer_within_2s_during_a_long_write(installed):
    db = installed.parent / "mailbridge.db"
    writer = Writer(db)
    try:
        status, took = timed(lambda: cli("status", "--config", str(installed), "--json"))
        assert status.returncode == 0 and took < 2.0, (took, status.stderr)
        events, took = timed(lambda: cli("events", "--config", str(installed), "--json"))
        assert events.returncode == 0 and took < 2.0 and b"staged" in events.stdout, took

        settings = settings_from_dict({})
        for factory in (lambda: Store(db, readonly=True), lambda: Store(db)):
            app = create_app(factory, None, settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                started = time.monotonic()
                r = await c.get("/healthz")
                took = time.monotonic() - started
            app.state.close()
            assert r.status_code in (200, 503) and took < 2.0, (took, r.text)
            assert "store unreadable" not in r.text

        other = (SAMPLES / "01-nagios-problem.eml").read_bytes()
        ingested, took = timed(lambda: cli("ingest", "--config", str(installed), stdin=other))
        assert ingested.returncode == 0 and took < 2.0, (took, ingested.stderr)
        assert writer.still_holding()  # all of the above ran while the lock was taken
    finally:
        writer.finish()
    # The mail ingest could not stage at once was spooled durably; the next run stages it.
    spooled = list((db.parent / "mailbridge.db.spool" / "new").iterdir())
    assert len(spooled) == 1
    cli("run", "--once", "--config", str(installed))
    assert len(outcomes(db)) == 2
    assert list((db.parent / "mailbridge.db.spool" / "new").iterdir()) == []


def test_views_never_migrate_and_say_what_to_do(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    db = tmp_path / "mailbridge.db"
    missing = cli("status", "--config", str(config))
    assert missing.returncode == 1 and b"mailbridge migrate" in missing.stderr
    assert not db.exists()  # a view does not even create the file
    # A store one migration behind (as after an upgrade): views refuse, migrate updates it.
    old = Store(db)
    old.close()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")
    conn.close()
    with pytest.raises(StoreNotReady, match="mailbridge migrate"):
        Store(db, readonly=True)
    behind = cli("events", "--config", str(config))
    assert behind.returncode == 1 and b"schema version" in behind.stderr
    probe = sqlite3.connect(db)
    assert probe.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) - 1
    probe.close()


def test_migrate_creates_the_store_and_readonly_opens_cannot_write(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    done = cli("migrate", "--config", str(config))
    assert done.returncode == 0 and f"schema version {len(MIGRATIONS)}".encode() in done.stdout
    ro = Store(tmp_path / "mailbridge.db", readonly=True)
    assert ro.scalar("SELECT count(*) FROM messages") == 0
    with pytest.raises(sqlite3.OperationalError):
        ro.set_meta("k", "v")
    ro.close()
