"""`simulate` is `run` without side effects: the same mails, the same clock past every hold,
the same outcome per message and the same PSA calls per ticket, in the same order — while the
preview itself sends nothing and leaves the live store's bytes untouched."""

from __future__ import annotations

import hashlib
import imaplib
import json
import time
from email.utils import formatdate
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.operator.httpserve import ThreadedServer
from bridge.store import Store
from tests.helpers import SAMPLES, cli, write_config
from tests.test_daemon import imap_section
from tests.test_xml_e2e import OPEN, tx

pytestmark = pytest.mark.dovecot

T0 = int(time.time()) - 3 * 3600  # the mails are three hours old: every hold has a known end
STORM = """
[storm]
coalesce_window = 300
resolve_delay = 120
account_cap = 3
account_window = 60
storm_product_group = "storm"
storm_alert_type = "Alert Storm"
"""


def nagios(n: int, at: int, host: str, kind: str = "PROBLEM") -> bytes:
    state = "OK" if kind == "RECOVERY" else "CRITICAL"
    return (
        "Authentication-Results: mx.msp.example;\r\n"
        "\tdkim=pass header.d=monitor.msp.example header.s=mail2025;\r\n"
        "\tspf=pass smtp.mailfrom=nagios@monitor.msp.example\r\n"
        # Results count only above our MX's own Received header (RFC 8601 §5).
        "Received: from monitor.msp.example (monitor.msp.example [192.0.2.10])\r\n"
        f"\tby mx.msp.example (Postfix) with ESMTPS id EQ{n}\r\n"
        f"\tfor <alerts@msp.example>; {formatdate(at)}\r\n"
        "From: Nagios <nagios@monitor.msp.example>\r\nTo: alerts@msp.example\r\n"
        f"Subject: ** {kind} Service Alert: acme/{host}/HTTP is {state} **\r\n"
        f"Date: {formatdate(at)}\r\nMessage-ID: <eq.{n}@monitor.msp.example>\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        f"X-Nagios-Notification-Type: {kind}\r\n\r\n"
        f"***** Nagios *****\r\n\r\nNotification Type: {kind}\r\n\r\nService: HTTP\r\n"
        f"Host: {host}\r\nHost group: acme\r\nState: {state}\r\n\r\n"
        f"Additional Info:\r\n\r\nHTTP {state} (notification {n})\r\n").encode()


def dated(raw: bytes, at: int, n: int) -> bytes:
    """A sample with its Date and Message-ID replaced (arrival order is the Date header)."""
    head, _, body = raw.partition(b"\n\n") if b"\r\n\r\n" not in raw else \
        raw.partition(b"\r\n\r\n")
    sep = b"\r\n" if b"\r\n" in head else b"\n"
    lines = [h for h in head.split(sep) if not h.lower().startswith((b"date:", b"message-id:"))]
    lines += [f"Date: {formatdate(at)}".encode(), f"Message-ID: <eq.{n}@sample>".encode()]
    return sep.join(lines) + sep + sep + body


def the_mails() -> list[bytes]:
    xml = (f"From: Acme RMM <rmm@acme.example>\r\nTo: alerts@msp.example\r\n"
           f"Subject: transaction\r\nDate: {formatdate(T0 + 200)}\r\n"
           f"Message-ID: <eq.xml@acme.example>\r\n"
           f"Content-Type: application/xml; charset=utf-8\r\n\r\n{tx(OPEN)}").encode()
    return [
        nagios(1, T0, "web1"),                              # problem: create
        nagios(2, T0 + 20, "web1"),                         # repeat inside the window
        nagios(3, T0 + 60, "web1", "RECOVERY"),             # recovery, held 120 s
        *[nagios(10 + i, T0 + 100 + i, f"h{i}") for i in range(6)],  # a burst past the cap
        dated((SAMPLES / "05-zabbix-problem.eml").read_bytes(), T0 + 150, 30),  # + webhook
        xml,                                                # an XML transaction
    ]


def receiver() -> tuple[ThreadedServer, list[dict]]:
    got: list[dict] = []

    async def hook(request: Request) -> JSONResponse:
        got.append(json.loads(await request.body()))
        return JSONResponse({"ok": True})

    return ThreadedServer(Starlette(routes=[Route("/hook", hook, methods=["POST"])])).start(), got


def digest(db: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (db, db.with_name(db.name + "-wal")) if p.exists()}


def per_ticket(calls: list[dict]) -> dict[str, list[tuple]]:
    """PSA calls grouped by ticket (correlationId), each named by its first call's title: the
    correlation ids themselves are random, the sequence of calls per ticket is not."""
    tickets: dict[str, list[dict]] = {}
    for c in calls:
        tickets.setdefault(c["correlationId"], []).append(c)
    return {seq[0]["title"]: [(c["incidentStatus"], c["accountId"], c["productGroup"],
                               c["alertType"]) for c in seq] for seq in tickets.values()}


def test_simulate_fresh_predicts_run_once_call_for_call(tmp_path, dovecot, psa_sim, smtp_sink):
    server, hooked = receiver()
    try:
        extra = STORM + f"""
[xml_api]
enabled = true
password = "correct horse battery staple"

[[webhook]]
name = "mirror"
url = "{server.url}/hook"
payload = '{{"status": "{{status}}", "key": "{{alert_key}}"}}'
"""
        config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port, extra=extra,
                              imap=imap_section(dovecot))
        db = tmp_path / "mailbridge.db"
        assert cli("run", "--once", "--config", str(config)).returncode == 0  # the store
        mails = the_mails()
        files = []
        for i, raw in enumerate(mails):
            files.append(tmp_path / f"{i:02d}.eml")
            files[-1].write_bytes(raw)

        before = digest(db)
        shown = cli("simulate", "--fresh", "--flush", "--json", "--config", str(config),
                    *map(str, files))
        assert shown.returncode == 0, shown.stderr.decode()
        preview = json.loads(shown.stdout)
        assert digest(db) == before, "simulate wrote to the live store"
        assert psa_sim.calls(None) == [] and smtp_sink.messages == [] and hooked == []

        with imaplib.IMAP4("127.0.0.1", dovecot.port) as m:
            m.login(dovecot.user, dovecot.password)
            for raw, i in zip(mails, range(len(mails))):
                at = T0 + [0, 20, 60, 100, 101, 102, 103, 104, 105, 150, 200][i]
                m.append("INBOX", None, imaplib.Time2Internaldate(at), raw)
        done = cli("run", "--once", "--flush", "--config", str(config))
        assert done.returncode == 0, done.stdout.decode()[-2000:]

        store = Store(db)
        try:
            ran = {r["message_id"]: r["outcome"] for r in
                   store.query("SELECT message_id, outcome FROM messages")}
        finally:
            store.close()
        predicted = {}
        for r, f in zip(sorted(preview, key=lambda r: r["file"]), sorted(files)):
            mid = next(line.split(":", 1)[1].strip() for line in
                       f.read_bytes().decode().splitlines() if line.startswith("Message-ID:"))
            predicted[mid] = r["outcome"]
        assert predicted == ran
        sent = [c for c in psa_sim.calls()]
        simulated = [dict(call["request"]["data"], correlationId=call["correlation_id"])
                     for r in preview for call in r["calls"] if call["kind"] == "psa"]
        assert per_ticket(simulated) == per_ticket(sent)
        assert len(simulated) == len(sent) >= 8
        webhooks = [c for r in preview for c in r["calls"] if c["kind"] == "webhook"]
        assert sorted(json.loads(w["body"])["status"] for w in webhooks) == \
            sorted(h["status"] for h in hooked)
    finally:
        server.stop()
