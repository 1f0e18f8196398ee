"""SIGHUP re-reads everything: each reloadable setting is changed in the config file of a
running daemon and shown to take effect by behaviour against the real servers (Dovecot, the
simulator, two SMTP servers, a webhook receiver); a broken config keeps the old parts and
`status` says why."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.operator.httpserve import ThreadedServer
from tests.fixtures.smtp import SmtpSink
from tests.helpers import SAMPLES, cli, write_config
from tests.test_daemon import Running, imap_section, sample, until

pytestmark = pytest.mark.dovecot


def zabbix(event_id: int) -> bytes:
    raw = sample("05-zabbix-problem.eml")
    return raw.replace(b"48213", str(event_id).encode()).replace(
        b"Message-ID: <", f"Message-ID: <{event_id}.".encode())


def hook_receiver() -> tuple[ThreadedServer, list[dict]]:
    got: list[dict] = []

    async def hook(request: Request) -> JSONResponse:
        got.append(json.loads(await request.body()))
        return JSONResponse({"ok": True})

    return ThreadedServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start(), got


async def test_sighup_applies_every_reloadable_setting(tmp_path, dovecot, psa_sim, smtp_sink):
    rules = tmp_path / "rules"
    shutil.copytree(SAMPLES.parent / "rules", rules)
    base = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                        imap=imap_section(dovecot, poll_interval=300.0),
                        extra="\n[storm]\ncoalesce_window = 0\n")
    text = base.read_text().replace(str(SAMPLES.parent / "rules"), str(rules)).replace(
        '[routing]\n', '[routing]\nregular_mail = "forward"\n'
                       'regular_forward_to = "noc@msp.example"\n')
    good = text
    base.write_text(text.replace('client_secret = "demo-secret"',
                                 'client_secret = "wrong-secret"'))
    server, hooked = hook_receiver()
    other_smtp = SmtpSink()
    other_smtp.start()
    try:
        async with Running(base) as r:
            dovecot.append(zabbix(1))
            await until(lambda: r.bridge.runtime.psa_auth == "refused", what="the 401")
            assert psa_sim.tickets() == []

            # Every reloadable setting changes at once.
            (rules / "20-zabbix.toml").write_text(
                (rules / "20-zabbix.toml").read_text().replace('"Problem"', '"Trigger"', 1))
            accounts = (rules / "accounts.csv").read_text()
            (rules / "accounts.csv").write_text(
                accounts.replace("GLOBEX-002,Globex Corporation", "GLOBEX-002,Initech")
                .replace("INITECH-003,Initech,", "INITECH-003,Initech Old,"))
            dovecot._folder_dir("Alerts")
            base.write_text(
                good.replace(f"port = {smtp_sink.port}", f"port = {other_smtp.port}")
                .replace("coalesce_window = 0", "coalesce_window = 99")
                .replace('timeout = 10.0', 'timeout = 10.0\nfolder = "Alerts"')
                + f'\n[[webhook]]\nname = "mirror"\nurl = "{server.url}/hook"\n'
                  "payload = '{\"status\": \"{status}\", \"account\": \"{account_id}\"}'\n")
            version = r.bridge.parts.version
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: r.bridge.parts.version != version, what="the reload")

            # PSA credentials: the held create goes out with the new secret.
            await until(lambda: len(psa_sim.tickets()) == 1, what="the held create")
            # IMAP folder, rules and accounts: mail in the new folder, the new alert type,
            # the account the new directory names.
            dovecot.append(zabbix(2), folder="Alerts")
            await until(lambda: len(psa_sim.tickets()) == 2, what="the second ticket")
            second = [t for t in psa_sim.tickets() if t["alertType"] == "Trigger"]
            assert len(second) == 1 and second[0]["accountId"] == "GLOBEX-002"
            # Webhooks: the new target mirrors the new alert.
            await until(lambda: len(hooked) == 1, what="the webhook call")
            assert hooked[0] == {"status": "OPEN", "account": "GLOBEX-002"}
            # Storm windows: a repeat now waits in a 99 s window instead of going at once.
            dovecot.append(zabbix(2).replace(b"Message-ID: <", b"Message-ID: <again."),
                           folder="Alerts")
            await until(lambda: any(row["action"] == "UPDATE" and row["kind"] == "psa"
                                    for row in r.bridge.sync_store.outbox_rows(("pending",))),
                        what="the held append")
            [held] = [row for row in r.bridge.sync_store.outbox_rows(("pending",))
                      if row["action"] == "UPDATE" and row["kind"] == "psa"]
            assert held["next_attempt_at"] > time.time() + 60
            # SMTP host/port: a forward reaches the new server only.
            dovecot.append(sample("20-regular-human.eml"), folder="Alerts")
            await until(lambda: len(other_smtp.messages) == 1, what="the forward")
            assert smtp_sink.messages == []

            # A broken config keeps the parts in force and says why.
            base.write_text("this is = = not toml")
            kept = r.bridge.parts
            os.kill(os.getpid(), signal.SIGHUP)
            await until(lambda: r.bridge.runtime.ruleset_error is not None,
                        what="the refused reload")
            assert r.bridge.parts is kept
            base.write_text(good)  # status must read the store named by a valid config
            await until(lambda: "reload failed" in cli("status", "--config",
                                                         str(base)).stdout.decode(),
                        timeout=30, what="status naming the failed reload")
    finally:
        server.stop()
        other_smtp.stop()


def test_settings_read_once_are_named_as_needing_a_restart(tmp_path, psa_sim):
    from bridge.assembly import restart_needed
    from bridge.config import load_settings

    config = write_config(tmp_path, psa_sim)
    before = load_settings(config)
    config.write_text(config.read_text().replace("[http]\nenabled = false",
                                                 "[http]\nenabled = true\nport = 8123")
                      + '\n[log]\nlevel = "DEBUG"\n')
    after = load_settings(config)
    assert restart_needed(before, after) == ["http.enabled", "http.port", "log"]
    assert restart_needed(before, before) == []
