"""An IMAP server that echoes the LOGIN line (password included) in its NO: the password
must reach none of `check --online`, `status` (plain and --json), events, the stored runtime
status or the admin-alert mail. The server is a small scripted asyncio responder."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import threading
from collections.abc import Iterator

import pytest

from bridge.config import load_settings
from bridge.daemon import Bridge
from bridge.operator.admin import check_and_alert
from bridge.operator.status import save_runtime
from tests.fixtures.dovecot import free_port
from tests.helpers import cli, write_config

PASSWORDS = ["Echo-Pa55-word-4711", 'qu"ote\\d-Pa55-0815']


class EchoingImap:
    """Greets, answers CAPABILITY, and refuses LOGIN by quoting the whole command back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.logins = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted server ready\r\n")
        while line := await reader.readline():
            tag, _, rest = line.decode("utf-8", "replace").rstrip("\r\n").partition(" ")
            command = rest.split(" ", 1)[0].upper()
            if command == "CAPABILITY":
                writer.write(f"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n{tag} OK done\r\n".encode())
            elif command == "LOGIN":
                self.logins += 1
                writer.write(f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials in: {rest}\r\n"
                             .encode())
            elif command == "LOGOUT":
                writer.write(f"* BYE bye\r\n{tag} OK done\r\n".encode())
                break
            else:
                writer.write(f"{tag} BAD unknown\r\n".encode())
            await writer.drain()
        writer.close()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self._ready.set()
        self.loop.run_forever()
        server.close()

    def __enter__(self) -> "EchoingImap":
        self._thread.start()
        self._ready.wait(5)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


@pytest.fixture
def echoing() -> Iterator[EchoingImap]:
    with EchoingImap() as server:
        yield server


def forms(secret: str) -> set[str]:
    raw = secret.encode()
    out = {secret, secret.replace("\\", "\\\\").replace('"', '\\"'), json.dumps(secret)[1:-1]}
    for shift in range(3):
        chunk = base64.b64encode(b"x" * shift + raw).decode()
        out.add(chunk[4 * ((shift + 2) // 3):][:len(raw) * 4 // 3 - 4])
    return out


def assert_clean(text: str, secret: str, where: str) -> None:
    for form in forms(secret):
        assert form not in text, f"the password ({form!r}) is in {where}:\n{text}"


@pytest.mark.parametrize("password", PASSWORDS)
async def test_an_echoed_password_is_nowhere(password, echoing, tmp_path, psa_sim, smtp_sink):
    imap = (f'\n[[imap]]\nname = "alerts"\nhost = "127.0.0.1"\nport = {echoing.port}\n'
            f'security = "none"\nusername = "alerts@msp.example"\n'
            f"password = {json.dumps(password)}\ntimeout = 5.0\n")
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port, imap=imap)
    config.write_text(config.read_text().replace(
        'internal_address = "support@msp.example"',
        'internal_address = "support@msp.example"\nadmin_address = "noc@msp.example"'))

    online = cli("check", "--online", "--config", str(config))
    assert echoing.logins == 1 and b"Invalid credentials" in online.stdout, online.stdout
    assert_clean(online.stdout.decode() + online.stderr.decode(), password, "check --online")

    bridge = Bridge(load_settings(config))
    try:
        with pytest.raises(Exception) as failed:
            await bridge.run_once()
        assert_clean(str(failed.value), password, "the error run --once reports")
        mailed = check_and_alert(bridge.settings, bridge.runtime, bridge.sync_store, None)
        assert any(kind.startswith("imap-login:") for kind in mailed), mailed
        save_runtime(bridge.sync_store, bridge.runtime)
        await bridge.delivery.drain()
        [admin] = smtp_sink.wait_for(1)
        assert b"Invalid credentials" in admin.content
        assert_clean(admin.content.decode("utf-8", "replace"), password, "the admin mail")
    finally:
        await bridge.close()

    for args in (("status",), ("status", "--json"), ("events",), ("events", "--json")):
        shown = cli(*args, "--config", str(config))
        assert shown.returncode == 0, shown.stderr
        assert_clean(shown.stdout.decode() + shown.stderr.decode(), password, " ".join(args))
    assert b"Invalid credentials" in cli("status", "--config", str(config)).stdout
    db = sqlite3.connect(config.parent / "mailbridge.db")
    try:
        for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'"):
            if table == "raw_messages":
                continue  # the raw store keeps mail as received (SPEC §3.2)
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            assert_clean(repr(rows) + json.dumps(rows, default=str), password, f"table {table}")
    finally:
        db.close()
