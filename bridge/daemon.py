"""Life cycle of a mailbridge process: build the stages, run them as asyncio tasks, stop well.

`Bridge` wires the pipeline from settings (dependencies can be passed in, so tests build exactly
what they need). `Bridge.run()` is the daemon: sources -> staging -> processing -> outbox ->
delivery, plus the HTTP endpoints. SIGTERM stops intake, lets in-flight calls finish up to a
deadline and parks the rest (rows in flight are re-sent with the same correlationId at the next
start, so nothing doubles); SIGHUP reloads rules, accounts and credentials and keeps the old
rule set when the new one is invalid (uvicorn's life cycle, SPEC §5).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable

from bridge import sdnotify
from bridge.config import Settings, load_settings
from bridge.deliver.outbox import Delivery
from bridge.models import RawMessage
from bridge.pipeline import Pipeline, RuleSetHolder
from bridge.store.db import AsyncStore, Store
from bridge.store.lease import OwnerConflict, OwnerLease  # h5 (issue 13): claims have owners
from bridge.store.spool import stage_spooled  # h5 (issue 13): ingest's spool

log = logging.getLogger("mailbridge.daemon")

EXIT_OK, EXIT_PENDING, EXIT_STARTUP = 0, 3, 2
HEARTBEAT_KEY = "daemon_heartbeat"
READY_GRACE = 45.0  # seconds; below the unit's TimeoutStartSec=90


class Bridge:
    def __init__(self, settings: Settings, *, config_path: Path | None = None,
                 psa: Any = None, smtp: Any = None, worker: str | None = None,
                 clock: Callable[[], float] = time.time, redactor: Any = None):
        self.settings = settings
        self.config_path = config_path
        self.worker = worker or f"{os.uname().nodename}:{os.getpid()}"
        self.clock = clock
        self.sync_store = Store(settings.store.path, clock=clock)
        from bridge.audit import Redactor

        # One redactor per process: logs and events pass through the same one.
        self.redactor = redactor or Redactor(settings.secrets())
        self.sync_store.redact = self.redactor.redact  # type: ignore[assignment]
        self.store = AsyncStore(self.sync_store)
        # h5 (issue 13): this process as the owner of its claims; registered by run() as the
        # daemon, by run_once() as a one-shot, released in close().
        self.lease = OwnerLease(self.sync_store)
        self.rules = RuleSetHolder(settings)
        self.rules.reload()  # raises on an invalid rule set at start-up
        self.rules_seen = rules_signature(settings)  # what the loaded set was read from
        self.pipeline = Pipeline(self.sync_store, settings, self.rules)
        self.runtime = _make_runtime(self)
        self.delivery = Delivery(self.store, settings, psa=psa or _make_psa(settings),
                                 smtp=smtp if smtp is not None else _make_smtp(settings),
                                 webhooks=_make_webhooks(settings), runtime=self.runtime,
                                 clock=clock)
        self.sources = self._make_sources()
        self.delivery.mailboxes = {s.name: s for s in self.sources if s.name.startswith("imap:")}
        self.processed = asyncio.Event()
        self._stage_signal: asyncio.Event | None = None

    # -- stages -------------------------------------------------------------------------------

    def _make_sources(self) -> list[Any]:
        from bridge.sources.maildir import MaildirSource

        sources: list[Any] = []
        for m in self.settings.maildir:
            source = MaildirSource(m, self.stage)
            source.on_polled = functools.partial(self.runtime.source_polled, source.name)
            self.runtime.source_connected(source.name)
            sources.append(source)
        if self.settings.imap:
            from bridge.sources.imap import ImapSource

            for imap in self.settings.imap:
                tokens = None
                if imap.oauth2 is not None:
                    from bridge.oauth2 import TokenProvider

                    tokens = TokenProvider(imap.oauth2)
                sources.append(ImapSource(
                    imap, self.stage, token_provider=tokens,
                    on_event=functools.partial(self.runtime.on_source_event,
                                               f"imap:{imap.name}")))
        return sources

    async def stage(self, msgs: list[RawMessage]) -> list[bool]:
        """Durably stage a batch; True for each message that is safe to acknowledge."""
        await self.store.stage_many(msgs)
        if self._stage_signal is not None:
            self._stage_signal.set()
        return [True] * len(msgs)

    async def process_pending(self) -> int:
        total = 0
        await self.store.run(stage_spooled, self.sync_store)  # h5 (issue 13): ingest's spool
        while True:
            n = await self.store.run(self.pipeline.process_batch, self.worker)
            total += n
            if n == 0:
                break
            self.delivery.wake.set()
        return total

    # -- one pass (`--once`, ingest, demo, tests) -----------------------------------------------

    async def run_once(self, deliver: bool = True) -> int:
        """Take what the sources have now, process it, deliver what can go now."""
        await self.lease.register("once")  # h5 (issue 13)
        await self.store.reclaim_in_flight()
        for source in self.sources:
            await source.drain()
        while True:
            processed = await self.process_pending()
            sent = await self.delivery.drain() if deliver else 0
            if processed == 0 and sent == 0:
                break
        pending = await self.store.pending_work()
        return EXIT_OK if not any(pending.values()) else EXIT_PENDING

    # -- the daemon ---------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event | None = None, shutdown_timeout: float = 20.0) -> int:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        self._install_signals(loop, stop)
        self._stage_signal = asyncio.Event()
        try:  # h5 (issue 13): one daemon per store
            await self.lease.register("daemon")
        except OwnerConflict as exc:
            log.error("%s", exc)
            sys.stderr.write(f"mailbridge: {exc}\n")
            await self.close()
            return EXIT_STARTUP
        await self.store.reclaim_in_flight()
        intake_stop = asyncio.Event()
        ready_sources: set[str] = set()
        needs_ready = {getattr(s, "name", str(i)) for i, s in enumerate(self.sources)}

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
        tasks = [asyncio.ensure_future(s.run(intake_stop, ready_for(getattr(s, "name", str(i)))))
                 for i, s in enumerate(self.sources)]
        delivery_stop = asyncio.Event()
        deliver_task = asyncio.ensure_future(self.delivery.run(delivery_stop))
        process_task = asyncio.ensure_future(self._process_loop(stop))
        house_task = asyncio.ensure_future(self._housekeeping(stop))
        web_task = self._start_web(stop)
        log.info("mailbridge running (%d source(s))", len(self.sources))
        await stop.wait()
        sdnotify.stopping()
        log.info("stopping: intake first, then in-flight work (deadline %.0f s)",
                 shutdown_timeout)
        intake_stop.set()
        deadline = time.monotonic() + shutdown_timeout
        await _wait_all(tasks + [process_task, house_task], deadline)
        delivery_stop.set()
        await _wait_all([deliver_task] + ([web_task] if web_task else []), deadline)
        await self.store.release_claims(self.worker)
        await self.close()
        return EXIT_OK

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

    async def _housekeeping(self, stop: asyncio.Event) -> None:
        """Runtime status for `mailbridge status`, admin alerts, retention."""
        from bridge.admin import check_and_alert
        from bridge.audit import prune
        from bridge.status import save_runtime

        last_check = last_prune = last_reconcile = 0.0
        while not stop.is_set():
            now = time.monotonic()
            try:
                if self.settings.rules.watch:
                    if rules_signature(self.settings) != self.rules_seen:
                        # An admin saved a rule file: reload as on SIGHUP.
                        log.info("rule files changed on disk: reloading")
                        await self.reload_rules()
                await self.store.run(save_runtime, self.sync_store, self.runtime)
                if now - last_check >= 30:
                    last_check = now
                    mailed = await self.store.run(check_and_alert, self.settings,
                                                  self.runtime, self.sync_store,
                                                  self.delivery.psa_refused)
                    if mailed:
                        self.delivery.wake.set()
                if now - last_reconcile >= 3600 and self.delivery.psa is not None \
                        and not self.delivery.psa_refused:
                    last_reconcile = now
                    await self._reconcile()
                if now - last_prune >= 86400:
                    last_prune = now
                    s = self.settings.store
                    pruned = await self.store.run(prune, self.sync_store, s.retention_days,
                                                  s.correlation_retention_days)
                    log.info("retention: %s", pruned)
            except Exception:
                log.exception("housekeeping pass failed")
            try:
                await asyncio.wait_for(stop.wait(), 5.0)
            except asyncio.TimeoutError:
                pass

    async def _reconcile(self) -> None:
        from bridge.reconcile import reconcile

        try:
            report = await reconcile(self.store, self.delivery.psa, fix=True)
        except Exception as exc:  # PSA unreachable: the next round will try again
            log.warning("reconcile skipped: %s", exc)
            return
        if report.fixed:
            log.info("reconcile: %d ticket(s) closed at the PSA, correlations closed here",
                     report.fixed)

    def _start_web(self, stop: asyncio.Event) -> asyncio.Future[Any] | None:
        h = self.settings.http
        if not h.enabled:
            return None
        from bridge.web import create_app, serve

        path = self.settings.store.path
        # The dashboard reads through its own connection, never queued behind pipeline writes.
        self.web_app = create_app(lambda: Store(path), self.runtime, self.settings,
                                  accounts_provider=self.accounts_for_vendor_api,
                                  redactor=self.redactor)
        return asyncio.ensure_future(serve(self.web_app, h.host, h.port, stop))

    def accounts_for_vendor_api(self) -> list[dict[str, Any]]:
        ruleset = self.rules.ruleset
        accounts = getattr(ruleset, "accounts", None)
        if accounts is None or not hasattr(accounts, "all"):
            return []
        return [{"id": a.id, "name": a.name} for a in accounts.all()]

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
            loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        except (NotImplementedError, RuntimeError):
            pass

    async def reload_rules(self) -> bool:
        self.rules_seen = rules_signature(self.settings)
        ok = await self.store.run(self.rules.reload)
        if not ok:
            _runtime_call(self.runtime, "rules_reload_failed", self.rules.error)
            await self.store.event("rules-reload-failed", None, None, None,
                                   error=self.rules.error)
        else:
            _runtime_call(self.runtime, "rules_reloaded", _ruleset_version(self.rules))
            await self.store.event("rules-reloaded", None, None, None,
                                   version=_ruleset_version(self.rules))
        return ok

    async def reload(self) -> bool:
        """SIGHUP: rules and accounts, then credentials from the config file."""
        sdnotify.reloading()
        ok = await self.reload_rules()
        if self.config_path is not None:
            try:
                fresh = load_settings(self.config_path)
            except Exception as exc:
                log.error("config reload failed, keeping the previous settings: %s", exc)
            else:
                self.settings = fresh
                self.delivery.settings = fresh
                self.redactor.update(fresh.secrets())
                if getattr(self, "web_app", None) is not None:
                    self.web_app.state.settings = fresh
                self.delivery.resume_psa(_make_psa(fresh))
        else:
            self.delivery.resume_psa()
        sdnotify.ready()
        log.info("reloaded (rules %s)", "ok" if ok else "kept the previous set")
        return ok

    async def close(self) -> None:
        psa = self.delivery.psa
        if psa is not None and hasattr(psa, "aclose"):
            await psa.aclose()
        for source in self.sources:
            if hasattr(source, "close"):
                try:
                    await source.close()
                except Exception:
                    pass
        await self.lease.release()  # h5 (issue 13): unfinished claims go back uncounted
        self.store.close()


def rules_signature(settings: Settings) -> tuple[tuple[str, float, int], ...]:
    """Names, times and sizes of the rule files and the accounts file: a cheap change test."""
    paths = list(Path(settings.rules.directory).glob("*.toml"))
    if settings.rules.accounts is not None:
        paths.append(Path(settings.rules.accounts))
    out = []
    for p in sorted(paths):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime, st.st_size))
    return tuple(out)


async def _wait_all(tasks: list[asyncio.Future[Any]], deadline: float) -> None:
    pending = [t for t in tasks if not t.done()]
    if pending:
        _, still = await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
        for t in still:
            t.cancel()
        if still:
            await asyncio.wait(still, timeout=5)


def _ruleset_version(rules: RuleSetHolder) -> str | None:
    return getattr(rules.ruleset, "version", None)


def _runtime_call(runtime: Any, name: str, *args: Any) -> None:
    fn = getattr(runtime, name, None)
    if callable(fn):
        fn(*args)


def _make_runtime(bridge: Bridge) -> Any:
    from bridge.status import RuntimeStatus

    runtime = RuntimeStatus()
    _runtime_call(runtime, "rules_reloaded", _ruleset_version(bridge.rules))
    return runtime


def _make_psa(settings: Settings) -> Any:
    if not settings.psa.enabled:
        return None
    from bridge.deliver.psa import PsaClient

    return PsaClient(settings.psa)


def _make_smtp(settings: Settings) -> Any:
    if settings.smtp is None:
        return None
    from bridge.deliver.smtp import SmtpSender

    tokens = None
    if settings.smtp.oauth2 is not None:
        from bridge.oauth2 import TokenProvider

        tokens = TokenProvider(settings.smtp.oauth2)
    return SmtpSender(settings.smtp, token_provider=tokens)


def _make_webhooks(settings: Settings) -> dict[str, Any]:
    if not settings.webhook:
        return {}
    from bridge.deliver.webhook import WebhookTarget

    return {w.name: WebhookTarget(w) for w in settings.webhook}
