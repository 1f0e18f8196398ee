"""The IMAP source: take every message from a watched folder, stage it, then move it away.

`ImapSource` is one mailbox (several mailboxes are several instances; nothing is shared). It
fetches by UID in batches, hands each batch to `stage` (the store's durable commit), and only
then moves the messages whose staging succeeded to `processed_folder` — so a message is always
either still in the folder or safely staged, never neither. A message over `max_message_bytes`
is not downloaded: its header block is staged with `oversize` set, for quarantine. `run()`
keeps a connection, waits with IDLE (re-issued every `reidle_interval`) or polls, and
reconnects with exponential backoff and jitter after any error; `drain()` is one pass, for
`mailbridge run --once`; `check()` is the `check --online` probe. Connection details live in
`imap_client` (on aioimaplib classes adjusted in `imap_wire`), response parsing in `imap_parse`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from bridge.auth.oauth2 import TokenProvider
from bridge.config import ImapSettings
from bridge.models import RawMessage
from bridge.sources.imap_client import ImapConnection
from bridge.sources.imap_errors import (ImapAuthError, ImapConfigError, ImapConnectionLost,
                                        ImapError, ImapTimeout)
from bridge.sources.imap_parse import chunks_by_size
from bridge.sources.imap_staging import StagingPipeline

__all__ = ["ImapSource", "ImapState", "StageFn", "ImapError", "ImapAuthError",
           "ImapConfigError", "ImapConnectionLost", "ImapTimeout"]

log = logging.getLogger(__name__)

StageFn = Callable[[list[RawMessage]], Awaitable[list[bool]]]
"""Stage a batch; True per message = durably staged (or already staged): safe to move."""

EventFn = Callable[[str, dict[str, Any]], None]

# Bytes of message bodies held by one FETCH. With the default batch of 200 alert mails (a few
# KB each) this never binds; with large messages it keeps memory bounded.
FETCH_BYTES = 16 * 1024 * 1024
# Header block of an oversize message: enough for any sane header, bounded for an insane one.
HEADER_BYTES = 1024 * 1024


@dataclass
class ImapState:
    """What `mailbridge status`, /healthz and the dashboard show about one mailbox."""

    connected: bool = False
    idle: bool = False
    last_poll: float | None = None      # end of the last completed pass over the folder
    last_error: str | None = None
    uidvalidity: int | None = None
    taken: int = 0                      # messages staged and moved since start
    failures: int = 0                   # consecutive failed connection attempts


class ImapSource:
    """One watched IMAP folder. See the module docstring; docs/imap.md for operators."""

    # Reconnect delays: BACKOFF_BASE * 2**(n-1), capped, times a jitter in [0.5, 1].
    BACKOFF_BASE = 1.0
    BACKOFF_MAX = 300.0
    # A refused login is not retried sooner than this: hammering a server with a wrong
    # password gets accounts locked.
    AUTH_BACKOFF_MIN = 60.0
    # After a batch failed to stage, look again this soon even if no new mail arrives.
    STAGE_RETRY = 10.0
    # On stop: time a pass in progress gets to finish its batch before it is cancelled.
    STOP_GRACE = 1.0

    def __init__(self, settings: ImapSettings, stage: StageFn, *,
                 token_provider: TokenProvider | None = None,
                 on_event: EventFn | None = None) -> None:
        self.settings = settings
        self.name = f"imap:{settings.name}"
        self.state = ImapState()
        self._stage = stage
        self._on_event = on_event
        if token_provider is None and settings.oauth2 is not None:
            token_provider = TokenProvider(settings.oauth2)
        self._tokens = token_provider
        self._conn: ImapConnection | None = None
        self._lock = asyncio.Lock()
        self._retry_soon = False

    # -- public -------------------------------------------------------------------------------

    async def drain(self) -> int:
        """Connect if needed and take everything now in the folder; return how many."""
        async with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None and self._conn.usable
                try:
                    await self._ensure_connected()
                    return await self._drain(None)
                except ImapConnectionLost:
                    await self._drop()
                    # A kept connection may have died while nobody listened: one fresh try.
                    if not reused or attempt == 2:
                        raise
                except BaseException:
                    await self._drop()
                    raise
        raise AssertionError("unreachable")

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        """Take mail until `stop` is set: IDLE or poll, reconnect after any failure."""
        pending_ready = [ready] if ready is not None else []
        while not stop.is_set():
            try:
                async with self._lock:
                    # Connecting is raced against stop too: a server that never answers must
                    # not hold up a shutdown for `timeout` seconds.
                    await self._until_stopped(self._serve(stop, pending_ready), stop)
            except asyncio.CancelledError:
                await self._drop()
                raise
            except Exception as exc:  # noqa: BLE001 — any failure means: reconnect later
                await self._drop()
                self.state.failures += 1
                self.state.last_error = str(exc) or type(exc).__name__
                if not isinstance(exc, ImapError):
                    log.exception("%s: unexpected error", self.name)
                # Wrong credentials or settings will not fix themselves in a second.
                slow = isinstance(exc, (ImapAuthError, ImapConfigError))
                delay = self._backoff(self.state.failures, slow)
                self._emit("error", error=self.state.last_error, retry_in=round(delay, 2),
                           auth=isinstance(exc, ImapAuthError))
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
        await self.close()

    async def check(self) -> str:
        """Log in, look at the folder read-only, log out; one line for `check --online`."""
        s = self.settings
        conn = ImapConnection(s, self._tokens)
        try:
            await conn.open()
            info = await conn.select(s.folder, readonly=True)
            processed = await conn.folder_exists(s.processed_folder)
        finally:
            await conn.logout()
        caps = conn.capabilities
        transport = f"TLS {conn.tls_version}" if conn.tls_version else "plain text"
        if s.security == "starttls":
            transport += " via STARTTLS"
        how = "XOAUTH2" if self._tokens else "password"
        return (f"{self.name}: {s.username} on {s.host}:{s.port} ({transport}, {how}); "
                f"{s.folder}: {info.exists or 0} message(s), UIDVALIDITY {info.uidvalidity}; "
                f"IDLE {'yes' if 'IDLE' in caps else 'no'}, MOVE {'yes' if 'MOVE' in caps else 'no'}; "
                f"{s.processed_folder} {'exists' if processed else 'missing (will be created)'}")

    async def peek(self, limit: int = 1000) -> list[RawMessage]:
        """The messages now in the folder, read-only (EXAMINE, BODY.PEEK): nothing is flagged,
        moved or staged. For `mailbridge simulate --mailbox`."""
        s = self.settings
        conn = ImapConnection(s, self._tokens)
        out: list[RawMessage] = []
        try:
            await conn.open()
            await conn.select(s.folder, readonly=True)
            uids = (await conn.search_undeleted())[:limit]
            for start in range(0, len(uids), s.batch_size):
                async for msgs in self._fetch(conn, uids[start:start + s.batch_size]):
                    out.extend(msgs)
        finally:
            await conn.logout()
        return out

    async def refile(self, message_id: str, folder: str) -> int:
        """Outcome-based second move (regular mail, quarantine): find the message in the
        processed folder by its Message-ID and move it to `folder` (created if missing).
        Uses a connection of its own, so the main one can stay in IDLE. Returns how many
        messages moved (0: not there any more, e.g. a person moved it already)."""
        s = self.settings
        conn = ImapConnection(s, self._tokens)
        try:
            await conn.open()
            await conn.ensure_folder(folder)
            await conn.select(s.processed_folder)
            uids = await conn.search_message_id(message_id)
            if uids:
                await conn.move(uids, folder)
            return len(uids)
        finally:
            await conn.logout()

    async def close(self) -> None:
        await self._drop(graceful=True)

    # -- connection ---------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._conn is not None and self._conn.usable:
            return
        await self._drop()
        s = self.settings
        conn = ImapConnection(s, self._tokens)
        self._conn = conn
        try:
            await conn.open()
        except ImapAuthError as exc:
            self._emit("login_failed", error=str(exc))
            raise
        created = await conn.ensure_folder(s.processed_folder)
        if created:
            self._emit("folder_created", folder=s.processed_folder)
        info = await conn.select(s.folder)
        previous = self.state.uidvalidity
        if previous is not None and info.uidvalidity != previous:
            # The server renumbered the folder (restore, migration). Nothing to undo: staging
            # de-duplicates by Message-ID + hash, so a message seen before is not re-created.
            self._emit("uidvalidity_changed", old=previous, new=info.uidvalidity)
            log.warning("%s: UIDVALIDITY changed %s -> %s", self.name, previous, info.uidvalidity)
        self.state.uidvalidity = info.uidvalidity
        self.state.connected = True
        self.state.last_error = None
        self._emit("connected", host=s.host, port=s.port, tls=conn.tls_version,
                   idle="IDLE" in conn.capabilities, move="MOVE" in conn.capabilities,
                   uidvalidity=info.uidvalidity, exists=info.exists)

    async def _drop(self, graceful: bool = False) -> None:
        conn, self._conn = self._conn, None
        was = self.state.connected
        self.state.connected = False
        self.state.idle = False
        if conn is None:
            return
        if graceful:
            await conn.logout()
        else:
            conn.abort()
        if was:
            self._emit("disconnected", graceful=graceful)

    def _backoff(self, failures: int, slow: bool) -> float:
        delay = min(self.BACKOFF_MAX, self.BACKOFF_BASE * 2 ** max(0, failures - 1))
        if slow:
            delay = max(delay, self.AUTH_BACKOFF_MIN)
        return delay * random.uniform(0.5, 1.0)

    async def _until_stopped(self, work: Awaitable[None], stop: asyncio.Event) -> None:
        """Run `work`; once `stop` is set, give it STOP_GRACE to finish, then cancel it."""
        task = asyncio.ensure_future(work)
        stopper = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                await asyncio.wait({task}, timeout=self.STOP_GRACE)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                return
            task.result()
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()

    # -- the work -----------------------------------------------------------------------------

    async def _serve(self, stop: asyncio.Event, pending_ready: list[Callable[[], None]]) -> None:
        """One connection's life: connect, then pass / wait / pass ... until stop or error."""
        await self._ensure_connected()
        while pending_ready:  # ready() once, after the first successful login
            pending_ready.pop()()
        conn = self._conn
        assert conn is not None
        s = self.settings
        use_idle = s.idle and "IDLE" in conn.capabilities
        while not stop.is_set():
            await self._drain(stop)
            # Only a completed pass proves the connection works: until then failures keep
            # counting up, so a server that fails every pass is not hammered at BACKOFF_BASE.
            self.state.failures = 0
            if stop.is_set():
                return
            wait = s.reidle_interval if use_idle else s.poll_interval
            if self._retry_soon:
                wait = min(wait, self.STAGE_RETRY)
            if use_idle:
                if conn.changed.is_set():
                    continue  # mail arrived during the pass
                self.state.idle = True
                self._emit("idle", seconds=wait)
                try:
                    await conn.idle(stop, wait)
                finally:
                    self.state.idle = False
            else:
                await self._pause(conn, stop, wait)

    async def _pause(self, conn: ImapConnection, stop: asyncio.Event, seconds: float) -> None:
        """Polling mode: wait for the next poll, waking early on stop or a dropped link."""
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(conn.lost.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if conn.lost.is_set() and not stop.is_set():
            raise ImapConnectionLost(f"{conn.where}: connection lost while waiting to poll")

    async def _drain(self, stop: asyncio.Event | None) -> int:
        """Search, take, repeat until the folder holds nothing new (mail arriving during a
        pass is taken in the same pass). Messages whose staging failed are skipped until the
        next pass, so one bad message cannot spin this loop. Staging overlaps the IMAP work
        (`StagingPipeline`); nothing is moved before its own stage() said so."""
        conn = self._conn
        assert conn is not None
        pipe = StagingPipeline(conn, self._stage_safely, self.settings.processed_folder,
                               self._taken)
        while stop is None or not stop.is_set():
            await conn.noop()
            # Cleared after the NOOP (whose EXISTS the SEARCH covers) and before the SEARCH:
            # an EXISTS arriving from now on means "search again".
            conn.changed.clear()
            uids = [u for u in await conn.search_undeleted() if u not in pipe.failed]
            if not uids:
                break
            for start in range(0, len(uids), self.settings.batch_size):
                if stop is not None and stop.is_set():
                    break
                async for msgs in self._fetch(conn, uids[start:start + self.settings.batch_size]):
                    await pipe.push(msgs)
            await pipe.finish()
        await pipe.finish()
        self._retry_soon = bool(pipe.failed)
        self.state.last_poll = time.time()
        self._emit("polled", taken=pipe.moved, failed=len(pipe.failed))
        return pipe.moved

    async def _fetch(self, conn: ImapConnection, uids: list[int]) -> AsyncIterator[list[RawMessage]]:
        """The messages of one UID batch, in groups bounded in count and bytes. Messages over
        max_message_bytes come as their header block only, with `oversize` set."""
        s = self.settings
        meta = await conn.fetch(uids, "(UID RFC822.SIZE INTERNALDATE)")
        known = {r.uid: r for r in meta if r.uid is not None}
        small = [(u, known[u].size or 0) for u in uids
                 if u in known and (known[u].size or 0) <= s.max_message_bytes]
        large = [u for u in uids if u in known and (known[u].size or 0) > s.max_message_bytes]
        for group in chunks_by_size(small, s.batch_size, FETCH_BYTES):
            expected = sum((known[u].size or 0) for u in group)
            records = await conn.fetch(group, "(UID BODY.PEEK[])", expected)
            msgs = [self._message(r.uid, r.literal or b"", known[r.uid].internaldate)
                    for r in records if r.uid in known]
            del records  # the bodies now live in `msgs` only: one copy in memory
            yield msgs
        if large:
            records = await conn.fetch(large, f"(UID BODY.PEEK[HEADER]<0.{HEADER_BYTES}>)")
            msgs = [self._message(r.uid, r.literal or b"", known[r.uid].internaldate,
                                  oversize=known[r.uid].size)
                    for r in records if r.uid in known]
            for m in msgs:
                self._emit("oversize", uid=m.source_uid, size=m.oversize,
                           limit=s.max_message_bytes)
            yield msgs

    def _message(self, uid: int | None, raw: bytes, internaldate: float | None,
                 oversize: int | None = None) -> RawMessage:
        return RawMessage(raw=raw, source=self.name,
                          source_uid=f"{self.state.uidvalidity}:{uid}",
                          arrived_at=internaldate if internaldate is not None else time.time(),
                          oversize=oversize)

    async def _stage_safely(self, msgs: list[RawMessage]) -> list[bool]:
        """stage(), with any failure turned into "not staged" (the mail then stays put)."""
        try:
            results = [bool(r) for r in await self._stage(msgs)]
            if len(results) != len(msgs):
                raise ValueError(f"stage returned {len(results)} results for {len(msgs)} messages")
        except Exception as exc:  # noqa: BLE001 — a failed stage leaves mail where it is
            log.warning("%s: staging %d message(s) failed: %s", self.name, len(msgs), exc)
            self._emit("stage_failed", count=len(msgs), error=f"{type(exc).__name__}: {exc}")
            return [False] * len(msgs)
        if not all(results):
            self._emit("stage_failed", count=results.count(False), error="stage reported failure")
        return results

    def _taken(self, count: int, folder: str) -> None:
        self.state.taken += count
        self._emit("taken", count=count, folder=folder)

    def _emit(self, kind: str, **detail: Any) -> None:
        detail["source"] = self.name
        log.debug("%s: %s %s", self.name, kind, detail)
        if self._on_event is None:
            return
        try:
            self._on_event(kind, detail)
        except Exception:  # noqa: BLE001 — an observer must not stop the mail
            log.exception("%s: on_event callback failed for %s", self.name, kind)
