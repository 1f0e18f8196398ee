"""`mailbridge rules diff` on real staged history: mixed alert mail goes through Dovecot and
`run --once` into the store (and the PSA simulator) first; then candidate rule directories are
diffed against it. The diff must name exactly the messages a change moves, exit 0 for an
unchanged copy, exit 2 naming the file and line of a broken one, and never write to the live
store nor send anything."""

from __future__ import annotations

import hashlib
import json
import os
import pty
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator

import click
import pytest

from bench import corpus
from bridge.cli.common import SINCE
from bridge.store import Store
from tests.fixtures.dovecot import DovecotServer, dovecot_available
from tests.fixtures.psa import SimulatorServer
from tests.helpers import MAILBRIDGE, ROOT, cli, write_config
from tests.test_daemon import imap_section

pytestmark = pytest.mark.dovecot

NOW = time.time()


class History:
    def __init__(self, tmp: Path, config: Path, psa: SimulatorServer):
        self.tmp, self.config, self.psa = tmp, config, psa
        self.db = tmp / "mailbridge.db"

    def messages(self) -> dict[int, dict]:
        store = Store(self.db, readonly=True)
        try:
            return {r["id"]: r for r in store.query("SELECT id, rule, outcome, arrived_at"
                                                   " FROM messages")}
        finally:
            store.close()

    def candidate(self, name: str) -> Path:
        """A copy of the live rule directory (the accounts file included)."""
        target = self.tmp / name
        shutil.copytree(ROOT / "rules", target)
        return target

    def diff(self, candidate: Path, *args: str) -> tuple[int, str, str]:
        done = cli("rules", "diff", "--config", str(self.config), "--rules", str(candidate),
                   *args, timeout=120)
        return done.returncode, done.stdout.decode(), done.stderr.decode()


def digest(db: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (db, db.with_name(db.name + "-wal")) if p.exists()}


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    """121 mixed alerts of the past two hours, through Dovecot into the store."""
    if not dovecot_available():
        pytest.skip("Dovecot is not installed")
    tmp = tmp_path_factory.mktemp("history")
    psa = SimulatorServer().start()
    server = DovecotServer()
    try:
        server.start()
        mails = corpus.backlog(120, NOW - 2 * 3600, NOW - 15 * 60, seed=19)
        for mail in mails:
            server.append(mail.raw, date=mail.at)
        # A subject that carries a configured secret (the PSA client secret): the diff shows
        # this message, masked.
        z = next(m for m in mails if m.family == "zabbix")
        server.append(z.raw.replace(b"Subject: Problem: ", b"Subject: Problem: demo-secret ")
                      .replace(b"Message-ID: <", b"Message-ID: <secret."), date=z.at + 1)
        config = write_config(tmp, psa, imap=imap_section(server))
        done = cli("run", "--once", "--flush", "--config", str(config), timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert server.count("INBOX") == 0
        yield History(tmp, config, psa)
    finally:
        server.cleanup()
        psa.stop()


def test_moving_one_tools_alerts_to_another_alert_type_shows_exactly_those(history):
    live = history.messages()
    zabbix = {mid for mid, r in live.items() if r["rule"] == "20-zabbix.toml:zabbix"}
    assert len(zabbix) >= 5 and len(zabbix) < len(live)  # the change touches some, not all
    cand = history.candidate("zabbix-trigger")
    rules = cand / "20-zabbix.toml"
    rules.write_text(rules.read_text().replace('alert_type = "Problem"',
                                               'alert_type = "Trigger"'))
    before, calls = digest(history.db), len(history.psa.calls(None))

    code, out, err = history.diff(cand, "--since", "3h", "--json")
    assert code == 1, err
    report = json.loads(out)
    assert report["valid"] and report["replayed"] == len(live)
    assert {c["message"] for c in report["changes"]} == zabbix
    for c in report["changes"]:
        assert c["fields"] == ["alert_type"]
        assert (c["before"]["alert_type"], c["after"]["alert_type"]) == ("Problem", "Trigger")
        assert c["before"]["product_group"] == c["after"]["product_group"] == "monitoring"
        assert c["before"]["rule"] == "20-zabbix.toml:zabbix"
        assert c["before"]["outcome"] == live[c["message"]]["outcome"]  # replay = what ran
    # The ticket counts do not move: the same tickets, of another type.
    assert report["totals"]["before"] == report["totals"]["after"]
    assert report["totals"]["before"]["created"] > 0
    assert "demo-secret" not in out and "Problem: [redacted]" in out  # the secret, masked
    assert digest(history.db) == before, "rules diff wrote to the live store"
    assert len(history.psa.calls(None)) == calls, "rules diff sent something"

    code, text, _ = history.diff(cand, "--since", "3h")
    assert code == 1
    assert f"{len(zabbix)} message(s) change" in text
    assert "monitoring / Problem → monitoring / Trigger" in text
    assert text.count("→") == len(zabbix)  # only the alert type line changes


def test_the_period_limits_what_is_replayed(history):
    live = history.messages()
    cut = NOW - 3600
    code, out, err = history.diff(history.candidate("same-period"), "--since",
                                  time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(cut)),
                                  "--json")
    assert code == 0, err
    assert json.loads(out)["replayed"] == sum(1 for r in live.values() if r["arrived_at"] >= cut)


def test_an_unchanged_copy_exits_0_with_no_difference(history):
    code, out, err = history.diff(history.candidate("same"), "--since", "1d", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["changes"] == [] and report["changed"] == 0
    assert report["totals"]["before"] == report["totals"]["after"]
    assert report["replays"] == 1  # the same evaluations: the second replay is not needed
    code, text, _ = history.diff(history.candidate("same-text"), "--since", "7d")
    assert code == 0 and "no change" in text


def test_a_broken_candidate_exits_2_naming_the_file_and_line(history):
    cand = history.candidate("broken")
    rules = cand / "30-prtg.toml"
    lines = rules.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("alert_type"))
    lines[at] = 'alert_type = "No Such Type"'
    rules.write_text("\n".join(lines) + "\n")
    code, out, err = history.diff(cand)
    assert code == 2
    assert f"30-prtg.toml:{at + 1}" in err and "No Such Type" in err
    code, out, _ = history.diff(cand, "--json")
    assert code == 2 and json.loads(out)["valid"] is False


def test_a_progress_bar_on_a_terminal(history):
    """On a terminal, stderr shows the bars of both sides; stdout keeps the report."""
    main, follower = pty.openpty()
    shown = bytearray()

    def read() -> None:  # drained while it runs: a full terminal buffer would block the bars
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the other end closed: everything is read
                return
            if not chunk:
                return
            shown.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run([MAILBRIDGE, "rules", "diff", "--config", str(history.config),
                               "--rules", str(history.candidate("bars"))],
                              stdout=subprocess.PIPE, stderr=follower, timeout=120)
    finally:
        os.close(follower)
        reader.join(10)
        os.close(main)
    assert done.returncode == 0
    assert b"live rules: reading" in shown and b"candidate rules: reading" in shown
    assert b"no change" in done.stdout and b"reading" not in done.stdout


def test_events_since_takes_a_duration_too(history):
    done = cli("events", "--config", str(history.config), "--since", "12h", "--limit", "5",
               "--json")
    assert done.returncode == 0, done.stderr.decode()
    assert len(json.loads(done.stdout)) == 5
    done = cli("events", "--config", str(history.config), "--since", "last week")
    assert done.returncode == 2 and "not seconds ago" in done.stderr.decode()


def test_since_takes_the_events_forms_and_durations() -> None:
    now = time.time()
    assert abs(SINCE.convert("7d", None, None) - (now - 7 * 86400)) < 5
    assert abs(SINCE.convert("12h", None, None) - (now - 12 * 3600)) < 5
    assert abs(SINCE.convert("3600", None, None) - (now - 3600)) < 5
    assert SINCE.convert("2026-01-02T03:04:05+00:00", None, None) == 1767323045.0
    with pytest.raises(click.BadParameter):
        SINCE.convert("last week", None, None)


def test_without_a_store_there_is_nothing_to_diff(tmp_path) -> None:
    class NoPsa:
        url = "http://127.0.0.1:9"  # never called

    config = write_config(tmp_path, NoPsa())
    done = cli("rules", "diff", "--config", str(config), "--rules", str(ROOT / "rules"))
    assert done.returncode == 3
    assert "no store at" in done.stderr.decode()
    assert not (tmp_path / "mailbridge.db").exists()
