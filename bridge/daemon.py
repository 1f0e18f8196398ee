"""Life cycle of a mailbridge process: assemble the parts, run them as asyncio tasks, stop well.

`Bridge` holds the store (opened once: its path needs a restart) and the current `Parts` from
`bridge.assembly`. `Bridge.run()` is the daemon: sources -> staging -> processing -> outbox ->
delivery, plus the HTTP endpoints. SIGTERM stops intake, lets in-flight calls finish up to a
deadline and parks the rest (rows in flight are re-sent with the same correlationId at the next
start, so nothing doubles). SIGHUP, or a rule file saved with `rules.watch`, re-reads the config,
rules, accounts and credentials, assembles a fresh set of parts and swaps it in between batches
(in-flight work finishes on the old set); an invalid config or rule set keeps the old parts and
`status` says why (uvicorn's life cycle, Alertmanager's coordinator, SPEC §5).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from bridge.assembly import Parts, assemble, build_peers, restart_needed, rules_signature
from bridge.config import Settings, load_settings
from bridge.decide.expectations import judge_in
from bridge.deliver.outbox import Delivery
from bridge.deliver.peers import Peers
from bridge.models import RawMessage
from bridge.operator import sdnotify
from bridge.operator.audit import Redactor
from bridge.operator.status import RuntimeStatus
from bridge.process.batches import drain_all, process_staged, process_until
from bridge.process.pipeline import Pipeline
from bridge.seams import Source
from bridge.sources import build_sources, sources_signature
from bridge.store.db import AsyncStore, Store
from bridge.store.lease import OwnerConflict, OwnerLease
from bridge.store.spool import stage_spooled

if TYPE_CHECKING:
    from starlette.applications import Starlette

log = logging.getLogger("mailbridge.daemon")

EXIT_OK, EXIT_PENDING, EXIT_STARTUP = 0, 3, 2
HEARTBEAT_KEY = "daemon_heartbeat"
READY_GRACE = 45.0  # seconds; below the unit's TimeoutStartSec=90


class Bridge:
    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 peers: Callable[[Settings], Peers] = build_peers, worker: str | None = None,
                 clock: Callable[[], float] = time.time, redactor: Redactor | None = None):
        self.config_path = config_path
        self.worker = worker or f"{os.uname().nodename}:{os.getpid()}"
        self.clock = clock
        self._peers = peers
        self.sync_store = Store(settings.store.path, clock=clock)
        # One redactor per process: logs and events pass through the same one.
        self.redactor = redactor or Redactor(settings.secrets())
        self.sync_store.redact = self.redactor.redact
        self.store = AsyncStore(self.sync_store)
        self.parts: Parts = assemble(settings, peers=peers)  # raises on an invalid rule set
        self._boot_settings = settings  # what the store, the HTTP bind and logging follow
        # This process as the owner of its claims: registered by run() as the daemon, by
        # run_once() as a one-shot, released in close() (docs/architecture.md).
        self.lease = OwnerLease(self.sync_store)
        self.rules_seen = rules_signature(settings)  # what the loaded set was read from
        self.runtime = RuntimeStatus()
        self.runtime.rules_reloaded(self.parts.version)
        p = self.parts.peers
        self.delivery = Delivery(self.store, settings, psa=p.psa, smtp=p.smtp,
                                 webhooks=dict(p.webhooks), runtime=self.runtime, clock=clock)
        self.sources: list[Source] = self._build_sources(settings)
        self.processed = asyncio.Event()
        self._stage_signal: asyncio.Event | None = None
        self._intake: dict[str, tuple[asyncio.Future[None], asyncio.Event]] = {}
        self._reload_lock = asyncio.Lock()
        self._reload_task: asyncio.Task[bool] | None = None
        self.web_app: Starlette | None = None
        self._sources_caught_up: Callable[[], bool] = lambda: False

    @property
    def settings(self) -> Settings:
        return self.parts.settings

    @property
    def pipeline(self) -> Pipeline:
        return self.parts.pipeline

    def _build_sources(self, settings: Settings) -> list[Source]:
        from bridge.sources.imap import ImapSource
        sources = build_sources(settings, self.stage, self.runtime)
        self.delivery.mailboxes = {s.name: s for s in sources if isinstance(s, ImapSource)}
        return sources

    # -- stages -------------------------------------------------------------------------------

    async def stage(self, msgs: list[RawMessage]) -> list[bool]:
        """Durably stage a batch; True for each message that is safe to acknowledge."""
        await self.store.stage_many(msgs)
        if self._stage_signal is not None:
            self._stage_signal.set()
        return [True] * len(msgs)

    async def process_pending(self, only: int | None = None) -> int:
        """Claim, evaluate in the worker pool (off the store's thread: staging, delivery and
        the views go on meanwhile), apply in one short transaction; until nothing is left.
        The next batch is evaluated while the previous is applied (bridge.process.batches)."""
        await self.store.run(stage_spooled, self.sync_store)
        return await process_staged(self.store, lambda: self.parts, self.worker, only,
                                    self.delivery.wake.set)

    async def judge_expectations(self) -> int:
        """Open a ticket for each expected mail past its deadline; only once the sources
        have caught up (a backlog may hold an on-time report). docs/expect.md."""
        opened = await self.store.run(judge_in, self.sync_store, self.parts.ruleset.expect,
                                      self.parts.decider, self.clock())
        if opened:
            self.delivery.wake.set()
        return opened

    # -- one pass (`--once`, ingest, replay, demo, tests) ---------------------------------------

    async def run_once(self, deliver: bool = True, flush: bool = False) -> int:
        """Take what the sources have now, process it, deliver what can go now (`flush`: held
        work too); as in the daemon, a processed batch goes out while the next is processed."""
        await self.lease.register("once")
        await self.store.reclaim_in_flight()
        signal = self._stage_signal = asyncio.Event()
        before = await self.store.run(self.sync_store.outbox_high_water)
        intake: asyncio.Future[object] = asyncio.ensure_future(drain_all(self.sources))
        processing: asyncio.Future[object] = asyncio.ensure_future(
            process_until(self.process_pending, intake, signal))
        try:
            if deliver:
                await self.delivery.run_until(processing, before)
            await processing
        finally:
            for task in (processing, intake):
                task.cancel()
        # Drained and processed: now a report that has not come is missing.
        await self.judge_expectations()
        while True:  # held work (`flush`) and what delivery queued in turn
            processed = await self.process_pending()
            if flush:
                await self.store.run(self.sync_store.flush_held)
            sent = await self.delivery.drain() if deliver else 0
            if processed == 0 and sent == 0:
                break
        pending = await self.store.pending_work()
        return EXIT_OK if not any(pending.values()) else EXIT_PENDING

    # -- the daemon ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, shutdown_timeout: float = 20.0) -> int:
        stop = stop or asyncio.Event()
        from bridge.operator.httpserve import raise_nofile_limit

        raise_nofile_limit()  # before any source, client or listener opens a descriptor
        loop = asyncio.get_running_loop()
        self._install_signals(loop, stop)
        self._stage_signal = asyncio.Event()
        try:  # one daemon per store
            await self.lease.register("daemon")
        except OwnerConflict as exc:
            log.error("%s", exc)
            sys.stderr.write(f"mailbridge: {exc}\n")
            await self.close()
            return EXIT_STARTUP
        await self.store.reclaim_in_flight()
        ready_sources: set[str] = set()
        needs_ready = {s.name for s in self.sources}

        # Expectations are judged only once every source has caught up (docs/expect.md).
        self._sources_caught_up = lambda: ready_sources >= needs_ready

        def ready_for(name: str) -> Callable[[], None]:
            def mark() -> None:
                ready_sources.add(name)
                if ready_sources >= needs_ready:
                    sdnotify.ready()
                    sdnotify.status("connected; processing mail")
            return mark

        if not self.sources:
            sdnotify.ready()
        # A mailbox that is down at boot must not fail the unit's start (systemd would kill
        # and restart it in a loop): after a grace period mailbridge says READY anyway —
        # staging from the other sources, the pipe and the outbox work — and names what waits.
        loop.call_later(READY_GRACE, self._ready_anyway, ready_sources, needs_ready)
        self._start_intake(self.sources, ready_for)
        delivery_stop = asyncio.Event()
        deliver_task = asyncio.ensure_future(self.delivery.run(delivery_stop))
        process_task = asyncio.ensure_future(self._process_loop(stop))
        from bridge.operator.housekeeping import housekeeping

        house_task = asyncio.ensure_future(housekeeping(self, stop))
        web_task = self._start_web(stop)
        log.info("mailbridge running (%d source(s))", len(self.sources))
        await stop.wait()
        sdnotify.stopping()
        log.info("stopping: intake first, then in-flight work (deadline %.0f s)",
                 shutdown_timeout)
        deadline = time.monotonic() + shutdown_timeout
        await self._stop_intake(deadline)
        await _wait_all([process_task, house_task], deadline)
        if self._reload_task is not None:
            await _wait_all([self._reload_task], deadline)
        delivery_stop.set()
        await _wait_all([deliver_task] + ([web_task] if web_task else []), deadline)
        await self.store.release_claims(self.worker)
        await self.close()
        return EXIT_OK

    def _start_intake(self, sources: list[Source],
                      ready_for: Callable[[str], Callable[[], None]] | None = None) -> None:
        for s in sources:
            stop = asyncio.Event()
            ready = ready_for(s.name) if ready_for else (lambda: None)
            self._intake[s.name] = (asyncio.ensure_future(s.run(stop, ready)), stop)

    async def _stop_intake(self, deadline: float) -> None:
        running = list(self._intake.values())
        self._intake.clear()
        for _, stop in running:
            stop.set()
        await _wait_all([task for task, _ in running], deadline)

    def _ready_anyway(self, ready: set[str], needed: set[str]) -> None:
        missing = sorted(needed - ready)
        if missing:
            sdnotify.ready()
            sdnotify.status(f"running; not connected yet: {', '.join(missing)}")
            log.warning("not connected after %.0f s: %s (retrying in the background)",
                        READY_GRACE, ", ".join(missing))

    async def _process_loop(self, stop: asyncio.Event) -> None:
        assert self._stage_signal is not None
        interval = sdnotify.watchdog_interval()
        last_ping = 0.0
        while not stop.is_set():
            self._stage_signal.clear()
            try:
                await self.process_pending()
                if self._sources_caught_up():
                    await self.judge_expectations()
                await self.store.run(self.sync_store.set_meta, HEARTBEAT_KEY, str(time.time()))
            except Exception:
                log.exception("processing pass failed")
            # The watchdog is pinged only from here, so a wedged pipeline gets restarted.
            if interval and time.monotonic() - last_ping >= interval:
                sdnotify.watchdog()
                last_ping = time.monotonic()
            waiter = asyncio.ensure_future(self._stage_signal.wait())
            stopper = asyncio.ensure_future(stop.wait())
            # Poll now and then too: `mailbridge ingest` stages from another process.
            await asyncio.wait({waiter, stopper}, timeout=1.0,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()

    def _start_web(self, stop: asyncio.Event) -> asyncio.Future[None] | None:
        h = self.settings.http
        if not h.enabled:
            return None
        from bridge.operator.httpserve import HttpLimits
        from bridge.operator.web import create_app, serve

        path = self.settings.store.path
        # The dashboard reads through its own connection, never queued behind pipeline writes.
        self.web_app = create_app(lambda: Store(path, readonly=True), self.runtime, self.settings,
                                  accounts_provider=self.accounts_for_vendor_api,
                                  redactor=self.redactor)
        return asyncio.ensure_future(serve(self.web_app, h.host, h.port, stop,
                                           limits=HttpLimits.from_settings(h)))

    def accounts_for_vendor_api(self) -> list[dict[str, Any]]:
        return [{"id": a.id, "name": a.name} for a in self.parts.ruleset.accounts.all()]

    # -- signals and reload -------------------------------------------------------------------

    def _install_signals(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        def on_term() -> None:
            if stop.is_set():  # a second request: leave now
                log.warning("second stop signal: exiting immediately")
                os._exit(1)
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_term)
            except (NotImplementedError, RuntimeError):
                pass
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        except (NotImplementedError, RuntimeError):
            pass

    def request_reload(self) -> None:
        """SIGHUP: one reload task at a time, kept so that its failure is logged, not lost.
        Reloads asked for while one runs are served by a single follow-up."""
        previous = self._reload_task

        async def after_previous() -> bool:
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            return await self.reload()

        task = asyncio.ensure_future(after_previous())
        task.add_done_callback(_log_failure)
        self._reload_task = task

    async def reload(self) -> bool:
        """Re-read config, rules, accounts and credentials; swap in a fresh set of parts."""
        async with self._reload_lock:
            sdnotify.reloading()
            try:
                ok = await self._reload()
            finally:
                sdnotify.ready()
            return ok

    async def _reload(self) -> bool:
        old = self.parts
        try:
            fresh = load_settings(self.config_path) if self.config_path else old.settings
            parts = await asyncio.to_thread(assemble, fresh, peers=self._peers)
        except Exception as exc:  # ConfigError, RuleSetError, a broken file of any kind
            error = self.redactor.redact(str(exc))
            log.error("rule reload failed, keeping the previous configuration: %s", error)
            self.runtime.rules_reload_failed(error)
            await self.store.event("rules-reload-failed", None, None, None, error=error)
            return False
        self.rules_seen = rules_signature(fresh)
        self.redactor.update(fresh.secrets())
        self.parts = parts
        self.delivery.use(fresh, parts.peers)  # the old peers close once their calls ended
        # The old worker pool finishes what it was given, then exits.
        asyncio.ensure_future(asyncio.to_thread(old.evaluator.close)).add_done_callback(
            _log_failure)
        await self.store.run(self.sync_store.retry_waiting_now)
        self.delivery.wake.set()
        if self.web_app is not None:
            self.web_app.state.settings = fresh
        if sources_signature(fresh) != sources_signature(old.settings) and self._intake:
            # Intake from the old mailboxes stops between batches; what they staged stays.
            await self._stop_intake(time.monotonic() + 30)
            for source in self.sources:
                await source.close()
            self.sources = self._build_sources(fresh)
            self._start_intake(self.sources)
        elif sources_signature(fresh) != sources_signature(old.settings):
            self.sources = self._build_sources(fresh)
        self.runtime.restart_needed = restart_needed(self._boot_settings, fresh)
        self.runtime.rules_reloaded(parts.version)
        await self.store.event("rules-reloaded", None, None, None, version=parts.version,
                               restart_needed=self.runtime.restart_needed or None)
        log.info("reloaded (rule set %s)%s", parts.version,
                 f"; restart needed for {', '.join(self.runtime.restart_needed)}"
                 if self.runtime.restart_needed else "")
        return True

    async def close(self) -> None:
        await asyncio.to_thread(self.parts.evaluator.close)
        await self.delivery.aclose()
        for source in self.sources:
            try:
                await source.close()
            except Exception:
                pass
        await self.lease.release()  # unfinished claims go back uncounted
        self.store.close()


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("reload task failed: %r", task.exception())


async def _wait_all(tasks: list[asyncio.Future[Any]], deadline: float) -> None:
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for t in still:
            t.cancel()
        if still:
            await asyncio.wait(still, timeout=5)
