"""A webhook target as an additional destination, through the outbox, against a real local
HTTP server; and the shipped config.example.toml is a valid config."""

from __future__ import annotations

import json
import re

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.config import load_settings
from bridge.operator.httpserve import ThreadedServer
from tests.helpers import ROOT, SAMPLES, cli, write_config


def receiver():
    got: list[dict] = []
    fail = {"n": 1}

    async def hook(request: Request):
        if fail["n"]:
            fail["n"] -= 1
            return JSONResponse({"error": "busy"}, status_code=503)
        got.append({"auth": request.headers.get("authorization"),
                    "body": json.loads(await request.body())})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    return ThreadedServer(app).start(), got


def test_alerts_are_mirrored_to_a_webhook_in_order_with_retries(tmp_path, psa_sim):
    server, got = receiver()
    try:
        extra = f"""
[[webhook]]
name = "halo"
url = "{server.url}/hook"
payload = '{{"title": "{{title}}", "status": "{{status}}", "key": "{{alert_key}}", "account": "{{account_id}}"}}'
[webhook.auth]
type = "basic"
username = "mb"
password = "hook-secret"
"""
        config = write_config(tmp_path, psa_sim, extra=extra)
        for name in ("05-zabbix-problem.eml", "06-zabbix-resolved.eml"):
            assert cli("ingest", "--config", str(config),
                       stdin=(SAMPLES / name).read_bytes()).returncode == 0
        # The first webhook call met a 503: the row waits for its backoff; send it now.
        rows = json.loads(cli("outbox", "--config", str(config), "--json").stdout)
        for row in rows:
            cli("outbox", "--config", str(config), "retry", str(row["id"]))
        assert cli("run", "--once", "--config", str(config)).returncode == 0
        assert [g["body"]["status"] for g in got] == ["OPEN", "RESOLVED"]
        assert got[0]["body"]["account"] == "INITECH-003"
        assert got[0]["auth"].startswith("Basic ")
        assert len(psa_sim.tickets()) == 1
    finally:
        server.stop()


def test_config_example_is_valid_once_its_secrets_exist(tmp_path):
    # The example names its secrets as systemd credentials, read outside the service from
    # credentials/NAME beside the config: write them there and load the copy.
    text = (ROOT / "config.example.toml").read_text()
    (tmp_path / "credentials").mkdir()
    for name in set(re.findall(r'\{ credential = "([\w-]+)" \}', text)):
        (tmp_path / "credentials" / name).write_text("x")
    (tmp_path / "config.toml").write_text(text)
    settings = load_settings(tmp_path / "config.toml")
    assert settings.imap[0].security == "tls" and settings.smtp.security == "starttls"
    assert settings.catalogue_map()["storm"] == {"Alert Storm"}
