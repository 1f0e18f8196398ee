"""What the running daemon knows about itself that the store does not: connections, credentials,
the rule set in force, the admin alerts it raised. One mutable `RuntimeStatus`, updated by the
daemon's tasks (all on one event loop, so no locking; readers on other threads copy the
collections with list() first), read by `status`, `/healthz`, `/metrics` and the dashboard.
`health` combines it with the store into ready / degraded with reasons.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Literal

from bridge.store.db import Store

# A source may take a while to connect at start-up before that counts as trouble.
CONNECT_GRACE = 60.0
# Staged messages nobody processed for this long mean the pipeline is stuck.
STUCK_STAGED = 600.0
# Outbox rows waiting this long mean alerts are not reaching the PSA.
STUCK_OUTBOX = 1800.0
# The daemon saves its RuntimeStatus in the store's meta table (save_runtime), so that
# `mailbridge status` in another process can show connections and credentials too.
RUNTIME_META_KEY = "runtime_status"
# A saved status older than this means the daemon stopped saving it: it is not running.
RUNTIME_STALE = 120.0
# Creates the PSA answered with 404 for this many different accounts within the window are
# the integration's trouble (integration id, catalogue not published, wrong organisation),
# not one partner's missing mapping: `degraded`. The 404 does not say its cause (SPEC §3.6);
# docs/health.md says why three in an hour.
REFUSED_ACCOUNTS = 3
REFUSED_WINDOW = 3600.0
# `PSA auth` in `status` is the result of the last PSA call this recent.
PSA_CALL_HORIZON = 7 * 86400.0


@dataclass
class SourceState:
    """One configured mailbox or folder. `idle` is true while an IMAP IDLE is open."""

    name: str
    connected: bool = False
    last_poll: float | None = None
    last_error: str | None = None
    idle: bool = False
    since: float = field(default_factory=time.time)  # last change of `connected`


@dataclass
class AdminAlert:
    """Trouble the admin was (or is being) told about by mail: kind is e.g. "imap-login",
    "psa-auth", "dead-outbox", "disk"."""

    kind: str
    message: str
    since: float = field(default_factory=time.time)


@dataclass
class RuntimeStatus:
    started_at: float = field(default_factory=time.time)
    sources: dict[str, SourceState] = field(default_factory=dict)
    psa_auth: Literal["unknown", "ok", "refused"] = "unknown"
    psa_auth_message: str | None = None
    psa_reachable: bool | None = None  # None: not tried yet
    ruleset_version: str | None = None
    ruleset_error: str | None = None  # the last reload failure; the previous set stays in force
    admin_alerts: list[AdminAlert] = field(default_factory=list)
    degraded: dict[str, str] = field(default_factory=dict)  # free-form reasons by a short key
    # Settings a reload read but cannot apply (store path, HTTP bind, logging): not degraded,
    # but not in force until the next restart either.
    restart_needed: list[str] = field(default_factory=list)

    # -- updates (called by the daemon) ------------------------------------------------------

    def source(self, name: str) -> SourceState:
        """The state of a source, created on first use."""
        if name not in self.sources:
            self.sources[name] = SourceState(name)
        return self.sources[name]

    def source_connected(self, name: str, idle: bool = False) -> None:
        state = self.source(name)
        if not state.connected:
            state.since = time.time()
        state.connected, state.idle, state.last_error = True, idle, None

    def source_lost(self, name: str, error: str) -> None:
        state = self.source(name)
        if state.connected:
            state.since = time.time()
        state.connected, state.idle, state.last_error = False, False, error

    def source_polled(self, name: str, at: float | None = None) -> None:
        self.source(name).last_poll = time.time() if at is None else at

    def on_source_event(self, name: str, kind: str, detail: dict[str, Any]) -> None:
        """Adapter for a source's `on_event(kind, detail)` callback (sources/imap.py):
        `on_event=functools.partial(runtime.on_source_event, source.name)`."""
        if kind == "connected":
            self.source_connected(name)
            self.clear_alert(f"imap-login:{name}")
        elif kind == "idle":
            self.source_connected(name, idle=True)
            self.source_polled(name)
        elif kind in ("taken", "polled"):
            self.source_polled(name)
        elif kind in ("error", "login_failed", "disconnected"):
            error = str(detail.get("error") or kind)
            self.source_lost(name, error)
            if kind == "login_failed" or detail.get("auth"):
                self.raise_alert(f"imap-login:{name}", f"login to {name} fails: {error}")

    def psa_auth_ok(self) -> None:
        self.psa_auth, self.psa_auth_message = "ok", None
        self.clear_alert("psa-auth")

    def psa_auth_refused(self, message: str) -> None:
        self.psa_auth, self.psa_auth_message = "refused", message

    def rules_reloaded(self, version: str | None) -> None:
        self.ruleset_version, self.ruleset_error = version, None

    def rules_reload_failed(self, error: str | None) -> None:
        self.ruleset_error = error or "invalid rule set"
        # Imported here: metrics imports this module.
        from bridge.operator.metrics import RULE_RELOAD_FAILURES

        RULE_RELOAD_FAILURES.inc()

    def raise_alert(self, kind: str, message: str) -> AdminAlert:
        """Record an admin alert; raising the same kind again updates the message only, so
        `since` tells how long the trouble has lasted."""
        for alert in self.admin_alerts:
            if alert.kind == kind:
                alert.message = message
                return alert
        alert = AdminAlert(kind, message)
        self.admin_alerts.append(alert)
        return alert

    def clear_alert(self, kind: str) -> None:
        self.admin_alerts = [a for a in self.admin_alerts if a.kind != kind]

    def set_degraded(self, key: str, reason: str | None) -> None:
        """Set (or with None clear) a degraded reason under a short key."""
        if reason is None:
            self.degraded.pop(key, None)
        else:
            self.degraded[key] = reason

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sources"] = [asdict(s) for s in list(self.sources.values())]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RuntimeStatus:
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        fields["sources"] = {s["name"]: SourceState(**s) for s in data.get("sources", [])}
        fields["admin_alerts"] = [AdminAlert(**a) for a in data.get("admin_alerts", [])]
        return cls(**fields)


def save_runtime(store: Store, status: RuntimeStatus, now: float | None = None) -> None:
    """Called by the daemon every few seconds (on the store's thread)."""
    data = _redacted(store.redact, status.to_dict())
    data["saved_at"] = time.time() if now is None else now
    store.set_meta(RUNTIME_META_KEY, json.dumps(data))


def _redacted(redact: Callable[[str], str], value: Any) -> Any:
    """Errors in the status are server text (an IMAP NO may echo the password)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted(redact, v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(redact, v) for v in value]
    return value


def load_runtime(store: Store, now: float | None = None) -> RuntimeStatus | None:
    """The daemon's last saved status; None when no daemon ever saved one. A stale one says
    so as a degraded reason ("daemon not running")."""
    text = store.get_meta(RUNTIME_META_KEY)
    if not text:
        return None
    try:
        data = json.loads(text)
        status = RuntimeStatus.from_dict(data)
    except (ValueError, TypeError, KeyError):
        return None
    now = time.time() if now is None else now
    age = now - float(data.get("saved_at", 0))
    if age > RUNTIME_STALE:
        # What the daemon knew is history now: report that it is gone, not its old state.
        status = RuntimeStatus(started_at=status.started_at,
                               ruleset_version=status.ruleset_version)
        status.set_degraded("daemon", f"the daemon is not running (last seen {_age(age)} ago)")
    return status


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def runtime_reasons(status: RuntimeStatus, now: float | None = None) -> list[str]:
    """Why the daemon itself is degraded (empty when it is fine)."""
    now = time.time() if now is None else now
    reasons: list[str] = []
    for src in list(status.sources.values()):
        if src.connected:
            continue
        if src.last_error:
            reasons.append(f"source {src.name} not connected for {_age(now - src.since)}:"
                           f" {src.last_error}")
        elif now - status.started_at > CONNECT_GRACE:
            reasons.append(f"source {src.name} not connected")
    if status.psa_auth == "refused":
        reasons.append("PSA refused the credentials; sending is stopped until they are"
                       f" reloaded ({status.psa_auth_message or 'no detail'})")
    if status.psa_reachable is False:
        reasons.append("PSA unreachable; alerts wait in the outbox")
    if status.ruleset_error:
        reasons.append(f"rule reload failed, previous rule set in force: {status.ruleset_error}")
    reasons.extend(f"{a.kind}: {a.message}" for a in list(status.admin_alerts))
    reasons.extend(status.degraded.values())
    # The same trouble may come from two places (psa-auth alert and psa_auth): say it once.
    return list(dict.fromkeys(reasons))


def store_reasons(store: Store, now: float | None = None) -> list[str]:
    """Why the store says alerts are not flowing: dead rows, stuck staging, an old outbox."""
    now = time.time() if now is None else now
    reasons: list[str] = []
    dead = store.dead_outbox_count()
    if dead:
        reasons.append(f"{dead} dead outbox row(s) need attention (mailbridge outbox)")
    stuck = store.stuck_staged_count(now - STUCK_STAGED)
    if stuck:
        reasons.append(f"{stuck} message(s) staged for over {_age(STUCK_STAGED)}"
                       " and not processed")
    accounts = refused_accounts(store, now - REFUSED_WINDOW)
    if len(accounts) >= REFUSED_ACCOUNTS:
        reasons.append(f"the PSA refused creates (404) for {len(accounts)} accounts in the last"
                       f" {_age(REFUSED_WINDOW)} ({', '.join(sorted(accounts)[:5])}): check"
                       " psa.integration_id and the catalogue the partner has")
    oldest = store.oldest_unsent_at()
    if oldest is not None and now - oldest > STUCK_OUTBOX:
        waiting = store.outbox_pending_count()
        reasons.append(f"{waiting} outbox row(s) waiting, the oldest for {_age(now - oldest)}")
    return reasons


def refused_accounts(store: Store, since: float) -> set[str]:
    """The accounts whose creates the PSA answered with 404 since `since`."""
    found: set[str] = set()
    for row in store.refused_creates(since):
        try:
            found.add(str(json.loads(row["detail"] or "{}").get("account_id") or "?"))
        except ValueError:
            found.add("?")
    return found


def psa_auth(store: Store, runtime: RuntimeStatus | None,
             now: float | None = None) -> tuple[str, str | None, float | None]:
    """(ok | refused | unknown, message, when): the last PSA call's answer, from the store,
    so a one-shot command's calls count too; the daemon's own view when it knows better
    (a refusal it paused on, or a reload that resumed sending after it)."""
    now = time.time() if now is None else now
    last = store.last_psa_call(now - PSA_CALL_HORIZON)
    if runtime is not None and runtime.psa_auth == "refused":
        return "refused", runtime.psa_auth_message, last["at"] if last else None
    if last is None:
        return (runtime.psa_auth if runtime is not None else "unknown"), None, None
    try:
        detail = json.loads(last["detail"] or "{}")
    except ValueError:
        detail = {}
    if last["verdict"] == "auth":
        return "refused", f"HTTP {detail.get('http_status')}: {detail.get('message')}", \
            last["at"]
    if detail.get("http_status"):  # any answer but 401/403: the credentials were accepted
        return "ok", None, last["at"]
    return (runtime.psa_auth if runtime is not None else "unknown"), None, last["at"]


def health(status: RuntimeStatus | None, store: Store | None,
           now: float | None = None) -> tuple[bool, list[str]]:
    """(ready, reasons). Ready means: alerts are flowing and nothing needs the admin."""
    reasons = runtime_reasons(status, now) if status is not None else []
    if store is not None:
        try:
            reasons.extend(store_reasons(store, now))
        except Exception as exc:  # a store we cannot read is the worst kind of degraded
            reasons.append(f"store unreadable: {exc}")
    return (not reasons, reasons)
