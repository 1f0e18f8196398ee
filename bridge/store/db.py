"""SQLite access for the pipeline. All SQL lives in this package, so stages stay free of I/O.

`Store` opens the connection (WAL, migrations) and makes backups; `write()` transactions,
`query`/`scalar`, the event log and meta values come from `StoreBase` (bridge.store.base), its
domain methods from the mixins in `staging`, `decisions`, `outbox`, `owners`, `reads`,
`operator` (the operator's views and counts), `history` (`rules diff`'s replays) and
`maintenance` (retention, reconcile, admin alerts, savepoints, simulate's scratch copy).
Modules outside this package call named methods, never SQL (tests/test_store_owns_sql.py).
`AsyncStore` runs a `Store` on one dedicated thread for asyncio code, delivery's calls ahead
of processing's (bridge.store.thread).
The names other modules import from here (`StagedRow`, `StageResult`, `OutboxRow`,
`message_id_of`, `events_log`, `TROUBLE_EVENTS`) stay importable from this module.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any, Callable, Concatenate, Coroutine, Literal, ParamSpec, TypeVar

import sqlite_utils

from bridge.store import files
from bridge.store.checkpoint import Checkpointer
from bridge.store.base import TROUBLE_EVENTS, events_log, no_redaction
from bridge.store.decisions import DecisionsMixin
from bridge.store.expectations import ExpectationsMixin
from bridge.store.history import HistoryMixin
from bridge.store.maintenance import MaintenanceMixin
from bridge.store.operator import OperatorMixin
from bridge.store.outbox import OutboxMixin, OutboxRow
from bridge.store.reads import ReadsMixin
from bridge.store.owners import OwnersMixin
from bridge.store.schema import MIGRATIONS
from bridge.store.staging import StagedRow, StageResult, StagingMixin, message_id_of
from bridge.store.thread import StoreThread

__all__ = ["Store", "AsyncStore", "StagedRow", "StageResult", "OutboxRow", "message_id_of",
           "events_log", "TROUBLE_EVENTS", "StoreNotReady"]

T = TypeVar("T")
P = ParamSpec("P")


class StoreNotReady(RuntimeError):
    """The store has no schema yet, or an older one, and this open may not migrate it."""


class Store(StagingMixin, DecisionsMixin, OutboxMixin, OwnersMixin, ReadsMixin, ExpectationsMixin,
            OperatorMixin, HistoryMixin, MaintenanceMixin):
    """Synchronous store. Use from one thread only (see AsyncStore)."""

    def __init__(self, path: Path | str, clock: Callable[[], float] = time.time, *,
                 migrate: bool | Literal["missing"] = True, readonly: bool = False):
        """`migrate`: True brings the schema up to date (taking the write lock only when it is
        behind), "missing" only creates a store that has no schema yet (ingest), False never
        migrates and refuses an out-of-date schema. `readonly` (views, the web) opens the file
        read-only: never a migration, never the write lock."""
        self.path = str(path)
        self.clock = clock  # injected in tests: due times and windows follow it
        self.readonly = readonly
        self.owner = None  # no lease yet: see StoreBase.owner
        self.redact = no_redaction
        if readonly:
            if not Path(self.path).exists():
                raise StoreNotReady(f"no store at {self.path} yet: start mailbridge or run"
                                    " `mailbridge migrate`")
            conn = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro", uri=True,
                                   check_same_thread=False, timeout=30.0, isolation_level=None)
        else:
            if self.path != ":memory:" and not self.path.startswith("file:"):
                files.create_private(self.path)  # 0600 whatever the umask: every raw mail
            conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0,
                                   isolation_level=None)
        self.conn = conn
        self.db = sqlite_utils.Database(conn)
        if not readonly:  # already WAL: a no-op that takes no lock
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        # 8 MiB, four times SQLite's default: the outbox, correlation and event indexes of a
        # busy day stay in memory. On the backlog benchmark 32 -> 8 MiB took 24 MiB off the
        # daemon's peak with no loss of speed (the OS page cache holds the rest).
        conn.execute("PRAGMA cache_size=-8192")
        conn.execute("PRAGMA temp_store=MEMORY")
        if readonly:
            conn.execute("PRAGMA query_only=ON")
        self._migrate(False if readonly else migrate)

    # -- plumbing -----------------------------------------------------------------------------

    def schema_version(self) -> int:
        return int(self.conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self, mode: bool | Literal["missing"]) -> None:
        # Read the version first, without a lock: a current schema (the usual case) never
        # waits for a writer. Only a store that is behind takes the write lock.
        version = self.schema_version()
        if version >= len(MIGRATIONS) or (mode == "missing" and version > 0):
            return
        if mode is False:
            if version == 0:
                raise StoreNotReady(f"no store at {self.path} yet: start mailbridge or run"
                                    " `mailbridge migrate`")
            raise StoreNotReady(f"the store at {self.path} has schema version {version}, this"
                                f" mailbridge needs {len(MIGRATIONS)}: run `mailbridge migrate`"
                                " (or restart the daemon)")
        self.migrate_now()

    def migrate_now(self) -> tuple[int, int]:
        """Apply the migrations still missing; (version before, version after)."""
        with self.write():
            version = self.schema_version()
            for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in _split_sql(sql):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")
        return version, max(version, len(MIGRATIONS))

    def close(self) -> None:
        self.conn.close()

    # -- maintenance --------------------------------------------------------------------------

    def backup(self, target: Path | str, force: bool = False,
               progress: Callable[[int], None] | None = None) -> None:
        """A 0600 copy at `target`; files.BackupError says why it could not be made.
        `progress(n)` is told each further percent copied."""
        files.backup(self.conn, target, force, progress)


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _on_store_thread(method: Callable[Concatenate[Store, P], T], first: bool = False
                     ) -> Callable[Concatenate[AsyncStore, P], Coroutine[Any, Any, T]]:
    """The awaitable twin of a Store method, run on the AsyncStore's thread (typed, unlike
    the attribute proxy it replaces); `first`: ahead of the calls that are not (see
    bridge.store.thread)."""

    async def call(self: AsyncStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(lambda: method(self.store, *args, **kwargs), first)

    call.__name__ = call.__qualname__ = method.__name__
    call.__doc__ = method.__doc__
    return call


class AsyncStore:
    """Runs a Store on one dedicated thread: `await store.run(fn, *args)`, or the awaitable
    twins below of the Store methods that asyncio code calls (same signatures, checked).
    Delivery's short transactions (`run_first`, `claim_outbox`) go ahead of processing's
    batches (bridge.store.thread)."""

    def __init__(self, store: Store):
        self.store = store
        self._thread = StoreThread("store")
        # WAL checkpoints off the store thread (bridge/store/checkpoint.py).
        self._checkpoints = Checkpointer(store.path)
        if not store.readonly:
            self._thread.submit(lambda: self._checkpoints.start(store.conn)).result()

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(lambda: fn(*args, **kwargs), False)

    async def run_first(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`run`, ahead of every waiting call that was not itself sent first."""
        return await self._call(lambda: fn(*args, **kwargs), True)

    async def _call(self, fn: Callable[[], T], first: bool) -> T:
        result: T = await asyncio.wrap_future(self._thread.submit(fn, first))
        return result

    def close(self) -> None:
        def close_on_thread() -> None:
            self._checkpoints.stop(self.store.conn)
            self.store.close()

        self._thread.submit(close_on_thread).result()
        self._thread.shutdown()

    query = _on_store_thread(Store.query)
    scalar = _on_store_thread(Store.scalar)
    event = _on_store_thread(Store.event)
    stage_many = _on_store_thread(Store.stage_many)
    release_claims = _on_store_thread(Store.release_claims)
    pending_work = _on_store_thread(Store.pending_work)
    message_raw = _on_store_thread(Store.message_raw)
    message_arrived_at = _on_store_thread(Store.message_arrived_at)
    claim_outbox = _on_store_thread(Store.claim_outbox, first=True)
    reclaim_in_flight = _on_store_thread(Store.reclaim_in_flight)
    release_outbox = _on_store_thread(Store.release_outbox, first=True)
    next_outbox_due = _on_store_thread(Store.next_outbox_due)
    outbox_results = _on_store_thread(Store.outbox_results)
    open_correlation = _on_store_thread(Store.open_correlation)
    close_correlation = _on_store_thread(Store.close_correlation)
    correlation_state = _on_store_thread(Store.correlation_state)
    reopen_as_create = _on_store_thread(Store.reopen_as_create)
    confirmed_open_correlations = _on_store_thread(Store.confirmed_open_correlations)
    correlation_ids = _on_store_thread(Store.correlation_ids)
    close_reconciled = _on_store_thread(Store.close_reconciled)
