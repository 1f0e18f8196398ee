"""The IMAP source against a real Dovecot: staged first, moved after, nothing lost or doubled.

Every server test starts its own Dovecot (tests/fixtures/dovecot.py) and stages into a real
SQLite store; waits poll a condition, never sleep blindly. The first tests cover the pure
response parsing in bridge.sources.imap_parse and need no server.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import pytest

from bridge.config import ImapSettings, OAuth2Settings
from bridge.models import RawMessage
from bridge.sources import imap_parse as P
from bridge.sources.imap import ImapAuthError, ImapConfigError, ImapError, ImapSource
from bridge.sources.imap_client import ImapConnection
from bridge.store.db import AsyncStore, StageResult, Store
# The `dovecot` fixture comes from tests/fixtures/dovecot.py (a plugin of tests/conftest.py).
from tests.fixtures.dovecot import MISSING, DovecotServer, OAuthServer, dovecot_available

# -- pure parsing -------------------------------------------------------------------------------


def test_parse_fetch_reads_attributes_outside_literals_only() -> None:
    lines: list[bytes | bytearray] = [
        b'1 FETCH (UID 7 RFC822.SIZE 12 INTERNALDATE "17-Jul-1996 02:44:25 -0700" BODY[] {12}',
        bytearray(b"UID 99 (\r\n)x"),
        b")",
        b"* 2 FETCH (UID 8 BODY[] {3}",  # a line aioimaplib left its "* " on
        bytearray(b"abc"),
        b' INTERNALDATE " 7-Jul-1996 02:44:25 +0000")',
        b"Fetch completed (0.001 + 0.000 secs).",
    ]
    first, second = P.parse_fetch(lines)
    assert (first.uid, first.size, first.literal) == (7, 12, b"UID 99 (\r\n)x")
    assert first.internaldate == datetime(1996, 7, 17, 9, 44, 25, tzinfo=timezone.utc).timestamp()
    assert (second.uid, second.literal) == (8, b"abc")
    assert second.internaldate == datetime(1996, 7, 7, 2, 44, 25, tzinfo=timezone.utc).timestamp()


def test_parse_search_select_and_internaldate() -> None:
    assert P.parse_search([b"3 1 2", b"Search completed."]) == [3, 1, 2]
    assert P.parse_search([b"", b"Search completed."]) == []
    info = P.parse_select([b"FLAGS (\\Seen)", b"5 EXISTS", b"OK [UIDVALIDITY 1234] UIDs valid",
                           b"OK [UIDNEXT 9] Predicted next UID", b"[READ-WRITE] Select completed."])
    assert (info.uidvalidity, info.exists, info.uidnext) == (1234, 5, 9)
    assert P.parse_internaldate("31-Foo-2024 00:00:00 +0000") is None


def test_mailbox_names_are_quoted_modified_utf7() -> None:
    # RFC 3501 §5.1.3's own example, plus the characters that need care.
    assert P.mailbox_arg("~peter/mail/台北/日本語") == '"~peter/mail/&U,BTFw-/&ZeVnLIqe-"'
    assert P.mailbox_arg("Entwürfe") == '"Entw&APw-rfe"'
    assert P.mailbox_arg('A&B "x" \\') == '"A&-B \\"x\\" \\\\"'


def test_uid_sets_and_size_bounded_groups() -> None:
    assert P.uid_set([10, 1, 2, 3, 7, 9]) == "1:3,7,9:10"
    assert P.uid_set([5]) == "5"
    pairs = [(1, 10), (2, 10), (3, 100), (4, 10), (5, 10)]
    assert P.chunks_by_size(pairs, max_count=2, max_bytes=50) == [[1, 2], [3], [4, 5]]
    assert P.chunks_by_size(pairs, max_count=10, max_bytes=1000) == [[1, 2, 3, 4, 5]]


# -- helpers ------------------------------------------------------------------------------------

needs_dovecot = pytest.mark.skipif(not dovecot_available(), reason=MISSING)


def alert(i: int, body: str = "CPU load above 95% for 5 minutes.") -> bytes:
    return (f"From: monitor@example.com\r\nTo: alerts@example.org\r\n"
            f"Subject: ALERT {i} host{i} CPU high\r\nMessage-ID: <{i}.alert@example.com>\r\n"
            f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


class Staging:
    """A real stage function: `Store.stage_many` on the store's worker thread. `fail` makes the
    next calls raise; `unacked` makes them stage but report False (the commit happened, the
    answer got lost)."""

    def __init__(self, path: Path) -> None:
        self.store = AsyncStore(Store(path))
        self.calls: list[int] = []
        self.results: list[StageResult] = []
        self.messages: list[RawMessage] = []
        self.fail = 0
        self.unacked = 0

    async def __call__(self, msgs: list[RawMessage]) -> list[bool]:
        self.calls.append(len(msgs))
        if self.fail:
            self.fail -= 1
            raise OSError("disk full (test)")
        results = await self.store.stage_many(msgs)
        self.results.extend(results)
        self.messages.extend(msgs)
        if self.unacked:
            self.unacked -= 1
            return [False] * len(msgs)
        return [True] * len(msgs)

    async def rows(self) -> list[dict[str, Any]]:
        return await self.store.query(
            "SELECT source, source_uid, arrived_at, message_id, r.raw, oversize, size"
            " FROM messages m JOIN raw_messages r ON r.message_ref = m.id ORDER BY m.id")

    async def count(self) -> int:
        return int(await self.store.scalar("SELECT count(*) FROM messages"))

    @property
    def duplicates(self) -> int:
        return sum(r.duplicate for r in self.results)

    def close(self) -> None:
        self.store.close()


@pytest.fixture
def staging(tmp_path: Path) -> Any:
    s = Staging(tmp_path / "mailbridge.db")
    yield s
    s.close()


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, kind: str, detail: dict[str, Any]) -> None:
        self.seen.append((kind, detail))

    def count(self, kind: str) -> int:
        return sum(1 for k, _ in self.seen if k == kind)

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [d for k, d in self.seen if k == kind]


async def eventually(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `cond` (sync or async) until it is true."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(source: ImapSource) -> AsyncIterator[asyncio.Event]:
    """Run `source.run()` in a task; on exit set stop and check it returns within 2 s."""
    stop = asyncio.Event()
    ready = asyncio.Event()
    task = asyncio.create_task(source.run(stop, ready.set))
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield stop
    finally:
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2.0, "run() did not return promptly after stop"


def fast(source: ImapSource) -> ImapSource:
    """Short reconnect delays, so a test does not wait for production backoff."""
    source.BACKOFF_BASE = 0.1  # type: ignore[misc]
    source.BACKOFF_MAX = 1.0  # type: ignore[misc]
    return source


# -- taking mail ----------------------------------------------------------------------------


@needs_dovecot
@pytest.mark.dovecot
async def test_drain_stages_then_moves_to_processed(dovecot: DovecotServer, staging: Staging) -> None:
    dates = [1_700_000_000 + i * 60 for i in range(5)]
    for i, date in enumerate(dates):
        dovecot.append(alert(i), date=date)
    events = Events()
    source = ImapSource(dovecot.settings(batch_size=2), staging, on_event=events)
    try:
        assert await source.drain() == 5
    finally:
        await source.close()
    assert dovecot.count("INBOX") == 0
    assert dovecot.count("Processed") == 5
    assert staging.calls == [2, 2, 1]  # one stage() per UID batch
    rows = await staging.rows()
    uidvalidity = source.state.uidvalidity
    assert [r["source"] for r in rows] == ["imap:test"] * 5
    assert [r["source_uid"] for r in rows] == [f"{uidvalidity}:{uid}" for uid in range(1, 6)]
    assert [r["arrived_at"] for r in rows] == dates  # INTERNALDATE
    assert rows[0]["raw"] == alert(0)
    assert all(r["oversize"] is None for r in rows)
    assert events.count("folder_created") == 1 and events.count("taken") == 3
    # Processed holds the messages unchanged and nothing was marked \Seen before staging.
    assert sorted(dovecot.messages("Processed").values()) == sorted(alert(i) for i in range(5))


@needs_dovecot
@pytest.mark.dovecot
async def test_failed_staging_leaves_mail_for_the_next_round(dovecot: DovecotServer,
                                                            staging: Staging) -> None:
    dovecot.append(alert(1))
    events = Events()
    source = ImapSource(dovecot.settings(), staging, on_event=events)
    staging.fail = 1
    try:
        assert await source.drain() == 0
        assert dovecot.count("INBOX") == 1 and dovecot.count("Processed") == 0
        assert events.of("stage_failed")[0]["error"] == "OSError: disk full (test)"
        assert await source.drain() == 1
    finally:
        await source.close()
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == 1
    assert await staging.count() == 1


@needs_dovecot
@pytest.mark.dovecot
async def test_oversize_message_is_staged_as_headers_only(dovecot: DovecotServer,
                                                         staging: Staging) -> None:
    big = alert(1, body="x" * 200_000)
    dovecot.append(big)
    dovecot.append(alert(2))
    events = Events()
    source = ImapSource(dovecot.settings(max_message_bytes=100_000), staging, on_event=events)
    try:
        assert await source.drain() == 2
    finally:
        await source.close()
    by_id = {m.raw.split(b"Message-ID: ")[1].split(b"\r\n")[0]: m for m in staging.messages}
    header_only = by_id[b"<1.alert@example.com>"]
    assert header_only.oversize == len(big)
    assert header_only.raw == big.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert by_id[b"<2.alert@example.com>"].oversize is None
    assert events.of("oversize")[0]["size"] == len(big)
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == 2
    # The original, whole, stays in Processed for a human to look at.
    assert big in dovecot.messages("Processed").values()


@needs_dovecot
@pytest.mark.dovecot
async def test_uidvalidity_reset_does_not_restage(dovecot: DovecotServer, staging: Staging) -> None:
    for i in range(3):
        dovecot.append(alert(i))
    events = Events()
    source = fast(ImapSource(dovecot.settings(), staging, on_event=events))
    try:
        # Staged, but the answer was lost: the messages stay in INBOX.
        staging.unacked = 1
        assert await source.drain() == 0
        assert dovecot.count("INBOX") == 3 and await staging.count() == 3
        old = source.state.uidvalidity
        new = dovecot.reset_uidvalidity("INBOX")
        assert await source.drain() == 3
    finally:
        await source.close()
    assert events.of("uidvalidity_changed") == [{"old": old, "new": new, "source": "imap:test"}]
    assert await staging.count() == 3           # nothing created twice ...
    assert staging.duplicates == 3              # ... the store recognised all three
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == 3


@needs_dovecot
@pytest.mark.dovecot
async def test_copy_expunge_when_the_server_has_no_move(staging: Staging) -> None:
    caps = "IMAP4rev1 LITERAL+ SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UIDPLUS NAMESPACE"
    with DovecotServer(extra_conf=f"imap_capability = {caps}\n") as server:
        for i in range(3):
            server.append(alert(i))
        source = ImapSource(server.settings(), staging)
        try:
            assert await source.drain() == 3
            assert source._conn is not None and "MOVE" not in source._conn.capabilities
        finally:
            await source.close()
        assert server.count("INBOX") == 0 and server.count("Processed") == 3


@needs_dovecot
@pytest.mark.dovecot
async def test_large_response_does_not_hit_the_recursion_bug(dovecot: DovecotServer) -> None:
    # aioimaplib 2.0.3 recursed once per response line and failed at ~1,500 lines (#118).
    for i in range(2000):
        dovecot.append(b"Subject: s\r\n\r\nx\r\n")
    conn = ImapConnection(dovecot.settings())
    try:
        await conn.open()
        await conn.select("INBOX")
        uids = await conn.search_undeleted()
        records = await conn.fetch(uids, "(UID FLAGS)")
    finally:
        await conn.logout()
    assert [r.uid for r in records] == list(range(1, 2001))


# -- the long-running loop ------------------------------------------------------------------


@needs_dovecot
@pytest.mark.dovecot
async def test_idle_takes_new_mail_promptly(dovecot: DovecotServer, staging: Staging) -> None:
    events = Events()
    source = ImapSource(dovecot.settings(poll_interval=300), staging, on_event=events)
    async with running(source):
        await eventually(lambda: source.state.idle, what="IDLE")
        dovecot.append(alert(1))
        arrived = time.monotonic()
        await eventually(staging.count, timeout=5, what="the message to be staged")
        assert time.monotonic() - arrived < 2.0
        await eventually(lambda: dovecot.count("Processed") == 1, what="the move")
    assert events.count("connected") == 1


@needs_dovecot
@pytest.mark.dovecot
async def test_reidle_and_poll_mode(dovecot: DovecotServer, staging: Staging) -> None:
    events = Events()
    source = ImapSource(dovecot.settings(reidle_interval=0.2), staging, on_event=events)
    async with running(source):
        await eventually(lambda: events.count("idle") >= 3, what="IDLE to be re-issued")
    assert events.count("connected") == 1  # re-IDLE keeps the connection

    events = Events()
    source = ImapSource(dovecot.settings(idle=False, poll_interval=0.2), staging, on_event=events)
    async with running(source):
        dovecot.append(alert(7))
        await eventually(staging.count, what="the poll to take the message")
    assert events.count("idle") == 0


@needs_dovecot
@pytest.mark.dovecot
async def test_server_drop_during_idle_reconnects(dovecot: DovecotServer, staging: Staging) -> None:
    events = Events()
    source = fast(ImapSource(dovecot.settings(poll_interval=300), staging, on_event=events))
    async with running(source):
        await eventually(lambda: source.state.idle, what="IDLE")
        assert dovecot.kick()
        await eventually(lambda: events.count("connected") == 2, what="the reconnect")
        assert "connection lost" in events.of("error")[0]["error"]
        dovecot.append(alert(1))
        await eventually(staging.count, what="mail after the reconnect")
        await eventually(lambda: dovecot.count("Processed") == 1, what="the move")


@needs_dovecot
@pytest.mark.dovecot
async def test_server_restart_loses_and_doubles_nothing(dovecot: DovecotServer,
                                                       staging: Staging) -> None:
    source = fast(ImapSource(dovecot.settings(poll_interval=300), staging))
    async with running(source):
        for i in range(3):
            dovecot.append(alert(i))
        await eventually(lambda: dovecot.count("Processed") == 3, what="the first messages")
        dovecot.stop()
        for i in range(3, 6):  # delivered while the IMAP server is down
            dovecot.append(alert(i))
        await eventually(lambda: not source.state.connected, what="the drop to be noticed")
        dovecot.start()
        await eventually(lambda: dovecot.count("Processed") == 6, timeout=15,
                         what="the messages delivered during the outage")
    assert dovecot.count("INBOX") == 0
    assert await staging.count() == 6
    assert staging.duplicates == 0


@needs_dovecot
@pytest.mark.dovecot
async def test_failed_stage_is_retried_while_idling(dovecot: DovecotServer, staging: Staging) -> None:
    source = ImapSource(dovecot.settings(poll_interval=300), staging)
    source.STAGE_RETRY = 0.2  # type: ignore[misc]
    staging.fail = 1
    dovecot.append(alert(1))
    async with running(source):
        await eventually(lambda: dovecot.count("Processed") == 1, what="the retry")
    assert staging.calls == [1, 1]


@needs_dovecot
@pytest.mark.dovecot
async def test_two_mailboxes_run_side_by_side(dovecot: DovecotServer, staging: Staging) -> None:
    a = ImapSource(dovecot.settings(name="a"), staging)
    b = ImapSource(dovecot.settings(name="b", folder="Network", processed_folder="NetworkDone"),
                   staging)
    dovecot.append(alert(1))
    dovecot.append(alert(2), folder="Network")
    async with running(a), running(b):
        await eventually(lambda: dovecot.count("Processed") == 1
                         and dovecot.count("NetworkDone") == 1, what="both mailboxes")
    assert sorted(r["source"] for r in await staging.rows()) == ["imap:a", "imap:b"]


async def test_silent_server_times_out_and_never_delays_stop(staging: Staging) -> None:
    """A server that accepts the connection but never greets (a hung host, issue #110's
    cousin): every await is bounded, and stop() does not wait for the timeout."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        quick = ImapSettings(host="127.0.0.1", port=port, security="none", username="u",
                             password="p", timeout=0.3)
        with pytest.raises(ImapError, match="no answer to connect"):
            await ImapSource(quick, staging).check()

        events = Events()
        patient = ImapSource(quick.model_copy(update={"timeout": 30.0}), staging, on_event=events)
        stop = asyncio.Event()
        task = asyncio.create_task(patient.run(stop))
        await eventually(lambda: patient._conn is not None, what="the connection attempt")
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2.0
        assert events.count("connected") == 0


# -- security and login -------------------------------------------------------------------------


@needs_dovecot
@pytest.mark.dovecot
async def test_implicit_tls_and_starttls_verify_the_certificate(staging: Staging,
                                                                tmp_path: Path) -> None:
    import trustme

    wrong_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(wrong_ca))
    with DovecotServer(tls=True) as server:
        server.append(alert(1))
        server.append(alert(2))
        tls = ImapSource(server.settings(), staging)
        assert "TLS TLSv1." in await tls.check()
        starttls = ImapSource(server.settings(security="starttls"), staging)
        assert "via STARTTLS" in await starttls.check()
        try:
            assert await tls.drain() == 2
        finally:
            await tls.close()
        for security in ("tls", "starttls"):
            bad = ImapSource(server.settings(security=security, ca_file=wrong_ca), staging)
            with pytest.raises(ImapError, match="certificate not trusted"):
                await bad.check()


@needs_dovecot
@pytest.mark.dovecot
async def test_starttls_refused_when_not_offered(dovecot: DovecotServer, staging: Staging) -> None:
    with pytest.raises(ImapError, match="does not offer STARTTLS"):
        await ImapSource(dovecot.settings(security="starttls"), staging).check()


async def test_plain_text_only_to_loopback(staging: Staging) -> None:
    settings = ImapSettings(host="imap.example.com", port=143, security="none",
                            username="u", password="p")
    with pytest.raises(ImapConfigError, match="loopback"):
        await ImapSource(settings, staging).check()


@needs_dovecot
@pytest.mark.dovecot
async def test_wrong_password_is_an_auth_error_without_the_password(dovecot: DovecotServer,
                                                                   staging: Staging) -> None:
    events = Events()
    source = ImapSource(dovecot.settings(password="Wr0ng-pa$$"), staging, on_event=events)
    with pytest.raises(ImapAuthError, match="refused") as info:
        await source.check()
    assert "Wr0ng-pa$$" not in str(info.value)
    # run() keeps retrying (slowly), reports it, and still stops at once.
    stop = asyncio.Event()
    task = asyncio.create_task(source.run(stop))
    await eventually(lambda: events.count("login_failed"), what="the login failure")
    assert events.of("error")[0]["retry_in"] >= ImapSource.AUTH_BACKOFF_MIN / 2
    stop.set()
    await asyncio.wait_for(task, 2)
    assert "refused" in str(source.state.last_error)
    assert all("Wr0ng-pa$$" not in str(d) for _, d in events.seen)


@needs_dovecot
@pytest.mark.dovecot
async def test_xoauth2_against_dovecot_oauth2_passdb(staging: Staging) -> None:
    """Dovecot checks the token at a local RFC 7662 introspection endpoint; the token comes
    from the same server's token endpoint through bridge.auth.oauth2.TokenProvider."""
    oauth = OAuthServer(issue=["expired-token", "good-token"], valid={"good-token"})
    try:
        with DovecotServer(oauth2_introspection_url=oauth.introspection_url) as server:
            server.append(alert(1))
            oauth2 = OAuth2Settings(token_url=oauth.token_url, client_id="mailbridge",
                                    client_secret="client-s3cret", scope="mail")
            source = ImapSource(server.settings(password=None, oauth2=oauth2), staging)
            try:
                # The first token is refused; the source fetches a new one once and logs in.
                assert await source.drain() == 1
            finally:
                await source.close()
            assert len(oauth.token_requests) == 2
            assert oauth.introspections == ["expired-token", "good-token"]
            assert server.count("Processed") == 1

            oauth.issue, oauth.valid = ["revoked-token"], set()
            oauth.token_requests.clear()
            bad = ImapSource(server.settings(password=None, oauth2=oauth2), staging)
            with pytest.raises(ImapAuthError, match="XOAUTH2 login as alerts@example.org refused"
                               ) as info:
                await bad.check()
            assert "revoked-token" not in str(info.value)
            assert "client-s3cret" not in str(info.value)
            assert len(oauth.token_requests) == 2  # refreshed once, then gave up
    finally:
        oauth.close()
