"""The daemon end to end: a real Dovecot, the simulator over HTTP, a real SMTP server.

Dovecot is started by the `dovecot` fixture on a free loopback port; every wait polls a
condition (a ticket appearing, a folder emptying), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bridge.config import load_settings
from bridge.daemon import Bridge
from tests.helpers import MAILBRIDGE, SAMPLES, outcomes, write_config

pytestmark = pytest.mark.dovecot

# A recovery closes its ticket at once here: no flap damping (its default is 120 s, issue 15).
CLOSE_AT_ONCE = "\n[storm]\nresolve_delay = 0.0\n"


def imap_section(dovecot, **extra) -> str:
    lines = [f'\n[[imap]]\nname = "alerts"\nhost = "127.0.0.1"\nport = {dovecot.port}',
             'security = "none"', f'username = "{dovecot.user}"',
             f'password = "{dovecot.password}"', "timeout = 10.0"]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {str(v).lower()}"
              for k, v in extra.items()]
    return "\n".join(lines) + "\n"


async def until(cond, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)  # polling a condition, not a fixed delay


class Running:
    """Bridge.run() as a task in the test's loop."""

    def __init__(self, config: Path):
        self.settings = load_settings(config)
        self.bridge = Bridge(self.settings, config_path=config)
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> "Running":
        self.task = asyncio.ensure_future(self.bridge.run(self.stop, shutdown_timeout=10))
        return self

    async def __aexit__(self, *exc) -> None:
        self.stop.set()
        assert await asyncio.wait_for(self.task, 30) == 0


def own_rules_config(tmp_path, psa_sim, dovecot) -> tuple[Path, Path]:
    """A config whose rule directory is a copy the test may edit."""
    import shutil

    rules = tmp_path / "rules"
    shutil.copytree(SAMPLES.parent / "rules", rules)
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=300.0),
                          extra=CLOSE_AT_ONCE)
    config.write_text(config.read_text().replace(str(SAMPLES.parent / "rules") + '"',
                                                 str(rules) + '"'))
    return rules, config


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


async def test_mail_in_inbox_becomes_tickets_and_lands_in_processed(tmp_path, dovecot,
                                                                     psa_sim, smtp_sink):
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                          imap=imap_section(dovecot, poll_interval=300.0), extra=CLOSE_AT_ONCE)
    for name in ("01-nagios-problem.eml", "02-nagios-problem-again.eml",
                 "19-nagios-unknown-account.eml"):
        dovecot.append(sample(name))
    async with Running(config):
        await until(lambda: dovecot.count("Processed") == 3, what="3 messages in Processed")
        await until(lambda: len(psa_sim.calls()) == 1, what="the OPEN")
        # IDLE: appended now, taken without waiting for the 300 s poll.
        dovecot.append_imap(sample("04-nagios-recovery.eml"))
        await until(lambda: psa_sim.tickets() and psa_sim.tickets()[0]["status"] == "closed",
                    what="the recovery to close the ticket")
        await until(lambda: len(smtp_sink.messages) == 1, what="the unmatched forward")
    assert dovecot.count("INBOX") == 0
    [ticket] = psa_sim.tickets()
    assert [h["incidentStatus"] for h in ticket["history"]] == ["OPEN", "UPDATE", "RESOLVED"]
    assert sorted(o for o, _ in outcomes(tmp_path / "mailbridge.db").values()) == \
        ["appended", "created", "resolved", "unmatched"]


async def test_dovecot_restart_mid_run_loses_and_doubles_nothing(tmp_path, dovecot, psa_sim):
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=1.0))
    async with Running(config):
        dovecot.append(sample("05-zabbix-problem.eml"))
        await until(lambda: len(psa_sim.tickets()) == 1, what="first ticket")
        dovecot.stop()
        dovecot.append(sample("07-prtg-sensor-down.eml"))  # delivered while IMAP is down
        dovecot.start()  # same port; the fixture polls until it accepts again
        dovecot.append(sample("09-veeam-failed.eml"))
        await until(lambda: len(psa_sim.tickets()) == 3, timeout=40, what="3 tickets")
        await until(lambda: dovecot.count("INBOX") == 0, what="INBOX empty")
    assert len(psa_sim.calls()) == 3
    assert len(outcomes(tmp_path / "mailbridge.db")) == 3


async def test_kick_during_idle_reconnects(tmp_path, dovecot, psa_sim):
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=300.0))
    async with Running(config) as r:
        await until(lambda: r.bridge.runtime.sources.get("imap:alerts") is not None and
                    r.bridge.runtime.sources["imap:alerts"].idle, what="IDLE")
        assert dovecot.kick()
        dovecot.append_imap(sample("05-zabbix-problem.eml"))
        await until(lambda: len(psa_sim.tickets()) == 1, timeout=30, what="ticket after kick")


async def test_smtp_down_then_up_delivers_queued_forwards_once(tmp_path, dovecot, psa_sim,
                                                               smtp_sink):
    smtp_sink.stop()
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                          imap=imap_section(dovecot, poll_interval=300.0))
    dovecot.append(sample("14-xyz-self-healed-skipped.eml"))
    dovecot.append(sample("19-nagios-unknown-account.eml"))
    async with Running(config) as r:
        await until(lambda: dovecot.count("Processed") == 2, what="staged and moved")
        await until(lambda: r.bridge.sync_store.scalar(
            "SELECT count(*) FROM outbox WHERE kind='smtp' AND attempts>0") == 2,
            what="forwards attempted while SMTP is down")
        assert smtp_sink.messages == []
        smtp_sink.start()
        for row in r.bridge.sync_store.outbox_rows(("pending",)):
            r.bridge.sync_store.outbox_requeue(row["id"])  # skip the backoff wait
        r.bridge.delivery.wake.set()
        await until(lambda: len(smtp_sink.messages) == 2, what="both forwards")
    assert len(smtp_sink.messages) == 2
    assert sorted(m.rcpt_tos[0] for m in smtp_sink.messages) == ["support@msp.example"] * 2


async def test_uidvalidity_reset_does_not_recreate_tickets(tmp_path, dovecot, psa_sim):
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=1.0,
                                                               processed_folder="INBOX.done"))
    settings = load_settings(config)
    dovecot.append(sample("05-zabbix-problem.eml"))
    bridge = Bridge(settings)
    assert await bridge.run_once() == 0
    await bridge.close()
    assert len(psa_sim.tickets()) == 1
    # The server forgets its UIDs and the same message shows up in INBOX again.
    dovecot.append(sample("05-zabbix-problem.eml"))
    dovecot.reset_uidvalidity("INBOX")
    bridge = Bridge(settings)
    assert await bridge.run_once() == 0
    await bridge.close()
    assert len(psa_sim.tickets()) == 1 and len(psa_sim.calls()) == 1
    assert dovecot.count("INBOX") == 0  # taken (as a duplicate) and moved all the same


def test_run_once_exit_codes(tmp_path, dovecot, psa_sim):
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot))
    dovecot.append(sample("05-zabbix-problem.eml"))
    done = subprocess.run([MAILBRIDGE, "run", "--once", "--config", str(config)],
                          capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    psa_sim.control(fail_next=1000, fail_status=503)
    dovecot.append(sample("07-prtg-sensor-down.eml"))
    pending = subprocess.run([MAILBRIDGE, "run", "--once", "--config", str(config)],
                             capture_output=True, timeout=60)
    assert pending.returncode == 3
    assert dovecot.count("INBOX") == 0  # staged and moved even though the PSA is down


def test_sigterm_stops_within_the_deadline_and_sighup_keeps_old_rules_when_broken(
        tmp_path, dovecot, psa_sim):
    rules, config = own_rules_config(tmp_path, psa_sim, dovecot)
    proc = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(
        line.decode(errors="replace") for line in proc.stdout), daemon=True)
    reader.start()
    try:
        dovecot.append_imap(sample("05-zabbix-problem.eml"))
        _poll(lambda: len(psa_sim.tickets()) == 1, "first ticket")
        (rules / "20-zabbix.toml").write_text("this is = = not toml")
        proc.send_signal(signal.SIGHUP)
        _poll(lambda: any("rule reload failed" in line for line in lines), "reload failure")
        assert proc.poll() is None
        dovecot.append_imap(sample("06-zabbix-resolved.eml"))
        _poll(lambda: psa_sim.tickets()[0]["status"] == "closed",
              "old rules still resolve after a failed reload")
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 25
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(timeout=10)
    out = "".join(lines)
    assert "rule reload failed" in out and "20-zabbix.toml" in out
    assert "Traceback" not in out


def _poll(cond, what, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition


async def test_rule_files_are_reloaded_when_they_change_and_a_bad_edit_is_refused(
        tmp_path, dovecot, psa_sim):
    rules, config = own_rules_config(tmp_path, psa_sim, dovecot)
    async with Running(config) as r:
        before = r.bridge.parts.version
        zabbix = rules / "20-zabbix.toml"
        good = zabbix.read_text()
        zabbix.write_text(good + "\n[[detect]]\nnmae = 'typo'\n")
        await until(lambda: r.bridge.runtime.ruleset_error is not None,
                    what="the refused reload")
        assert "20-zabbix.toml" in (r.bridge.runtime.ruleset_error or "")
        assert r.bridge.parts.version == before  # the old set stays in force
        zabbix.write_text(good.replace('"Problem"', '"Trigger"', 1))
        await until(lambda: r.bridge.runtime.ruleset_error is None and
                    r.bridge.parts.version != before, what="the good reload")
        dovecot.append_imap(sample("05-zabbix-problem.eml"))
        await until(lambda: len(psa_sim.tickets()) == 1, what="ticket with the new rules")
    assert psa_sim.tickets()[0]["alertType"] == "Trigger"


def test_simulate_mailbox_is_a_dry_run_over_the_mailbox(tmp_path, dovecot, psa_sim):
    import json

    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot))
    for name in ("05-zabbix-problem.eml", "20-regular-human.eml"):
        dovecot.append(sample(name))
    uids_before = dovecot.uids("INBOX")
    result = subprocess.run([MAILBRIDGE, "simulate", "--mailbox", "--json", "--config",
                             str(config)], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr.decode()
    rows = json.loads(result.stdout)
    assert [r["outcome"] for r in rows] == ["created", "regular"]
    assert rows[0]["file"].startswith("imap:alerts/")
    assert dovecot.uids("INBOX") == uids_before  # nothing moved
    assert b"\\Seen" not in b"".join(dovecot.messages("INBOX").values())
    assert psa_sim.calls() == [] and not (tmp_path / "mailbridge.db").exists()


def test_check_online_logs_in_to_imap_and_says_no_clearly_when_it_cannot(tmp_path, dovecot,
                                                                         psa_sim, smtp_sink):
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                          imap=imap_section(dovecot))
    ok = subprocess.run([MAILBRIDGE, "check", "--online", "--config", str(config)],
                        capture_output=True, timeout=60)
    out = ok.stdout.decode()
    assert ok.returncode == 0, out
    assert "online: IMAP alerts" in out and "yes" in out and "IDLE yes" in out
    bad = tmp_path / "bad.toml"
    bad.write_text(config.read_text().replace(f'password = "{dovecot.password}"',
                                              'password = "wrong-pass-9"'))
    refused = subprocess.run([MAILBRIDGE, "check", "--online", "--config", str(bad)],
                             capture_output=True, timeout=60)
    text = refused.stdout.decode()
    assert refused.returncode == 1
    assert "online: IMAP alerts" in text and ": NO" in text
    assert "wrong-pass-9" not in text + refused.stderr.decode()


async def test_regular_and_quarantined_mail_move_on_by_outcome(tmp_path, dovecot, psa_sim):
    config = write_config(tmp_path, psa_sim, imap=imap_section(
        dovecot, quarantine_folder="Quarantine", max_message_bytes=4096))
    config.write_text(config.read_text().replace(
        '[routing]\n', '[routing]\nregular_mail = "move"\nregular_folder = "Regular"\n'))
    dovecot.append(sample("20-regular-human.eml"))
    dovecot.append(sample("05-zabbix-problem.eml"))
    big = (b"From: someone@example.org\r\nSubject: huge\r\nMessage-ID: <big@example.org>\r\n\r\n"
           + b"x" * 10_000 + b"\r\n")
    dovecot.append(big)
    bridge = Bridge(load_settings(config))
    try:
        assert await bridge.run_once() == 0
    finally:
        await bridge.close()
    assert dovecot.count("INBOX") == 0
    assert dovecot.count("Regular") == 1 and dovecot.count("Quarantine") == 1
    assert dovecot.count("Processed") == 1  # the alert stays where staging put it
    got = sorted(o for o, _ in outcomes(tmp_path / "mailbridge.db").values())
    assert got == ["created", "quarantined", "regular"]


async def test_several_mailboxes_in_one_config(tmp_path, dovecot, psa_sim):
    second = imap_section(dovecot, poll_interval=300.0, folder="INBOX.Backups",
                          processed_folder="INBOX.Backups-done").replace(
        'name = "alerts"', 'name = "backups"')
    config = write_config(tmp_path, psa_sim,
                          imap=imap_section(dovecot, poll_interval=300.0) + second)
    dovecot.append(sample("05-zabbix-problem.eml"))
    dovecot.append(sample("09-veeam-failed.eml"), folder="INBOX.Backups")
    async with Running(config) as r:
        assert [s.name for s in r.bridge.sources] == ["imap:alerts", "imap:backups"]
        await until(lambda: len(psa_sim.tickets()) == 2, what="a ticket from each mailbox")
    assert dovecot.count("INBOX.Backups") == 0 and dovecot.count("INBOX.Backups-done") == 1
    from bridge.store import Store

    s = Store(tmp_path / "mailbridge.db")
    assert sorted(row["source"] for row in s.query("SELECT source FROM messages")) == \
        ["imap:alerts", "imap:backups"]


def test_systemd_notify_ready_status_watchdog_and_stopping(tmp_path, dovecot, psa_sim):
    import socket

    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=300.0))
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    env = dict(os.environ, NOTIFY_SOCKET=path, WATCHDOG_USEC="2000000")
    proc = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    got: list[str] = []

    def receive_until(word: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(word in g for g in got):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {word} in {got}")
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                pass  # polling the socket until the datagram arrives

    try:
        receive_until("READY=1")
        receive_until("STATUS=")
        receive_until("WATCHDOG=1")  # pinged from the main loop (every WATCHDOG_USEC/2)
        proc.send_signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()
