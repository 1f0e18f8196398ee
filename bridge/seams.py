"""The seams between stages, as `typing.Protocol`s.

A stage depends on these shapes, never on the concrete class on the other side: the pipeline
and the decider work on any `StateStore` (the live store, or the scratch copy `simulate` runs
on), delivery on any `Target` registered for an outbox kind, the daemon on any `Source`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Mapping, Protocol

from bridge.config import StormSettings
from bridge.models import Alert, AlertContext, Decision, ExpectationRow, Outcome, RawMessage
from bridge.store.outbox import OutboxRow

StageFn = Callable[[list[RawMessage]], Awaitable[list[bool]]]


class Source(Protocol):
    """Hands raw messages to `stage` and acknowledges each only after it returned True."""

    name: str

    async def run(self, stop: asyncio.Event, ready: Callable[[], None]) -> None: ...

    async def drain(self) -> int:
        """Take what is there now; how many messages were taken."""
        ...

    async def close(self) -> None: ...


class StateStore(Protocol):
    """What the pipeline and the decider need of the store, in one write transaction."""

    def write(self, durable: bool = False) -> contextlib.AbstractContextManager[
            sqlite3.Connection]: ...

    def alert_context(self, alert: Alert, arrived_at: float,
                      policy: StormSettings) -> AlertContext: ...

    def apply_decision(self, message_ref: int, decision: Decision, *, arrived_at: float,
                       rule: str | None = None,
                       alert_meta: dict[str, Any] | None = None) -> None: ...

    def record_effects(self, message_ref: int | None, decision: Decision, *, arrived_at: float,
                       alert_meta: dict[str, Any] | None = None) -> list[int]: ...

    def correlation_meta(self, alert_key: str) -> dict[str, Any] | None: ...

    def recent_replies(self, to: str, since: float) -> int: ...

    def event(self, kind: str, message_ref: int | None = None, alert_key: str | None = None,
              outcome: str | None = None, /, **detail: Any) -> None: ...

    # Expected mail (bridge/decide/expectations.py): reports seen, deadlines judged.
    def expectation(self, name: str, scope: str) -> ExpectationRow | None: ...

    def expectations(self) -> list[ExpectationRow]: ...

    def expectation_seen(self, name: str, scope: str, account_id: str, what: str,
                         seen_at: float, judge_at: float) -> ExpectationRow | None: ...

    def expectation_start(self, name: str, scope: str, account_id: str, what: str,
                          now: float, judge_at: float) -> None: ...

    def expectation_missing(self, name: str, scope: str, alert_key: str,
                            since: float) -> None: ...

    def expectation_forget(self, name: str, scope: str) -> None: ...


class RowState(str, enum.Enum):
    """Where an outbox row goes after one delivery attempt."""

    DONE = "done"
    RETRY = "retry"      # pending again at `retry_at` (a temporary failure, or held)
    DEAD = "dead"        # never sent again without the administrator
    CRASHED = "crashed"  # the deliverer crashed on it: pending again, counted in `crashes`


class CorrelationOp(str, enum.Enum):
    CONFIRM = "confirm"  # the PSA made the ticket (`value`: the id it gave it)
    CLOSE = "close"      # a resolve went through
    VOID = "void"        # no ticket exists for it (`value`: why)


@dataclass(frozen=True)
class CorrelationChange:
    op: CorrelationOp
    correlation_id: str
    value: str | None = None


@dataclass(frozen=True)
class Event:
    """An audit event the attempt records (`Store.event`)."""

    kind: str
    message_ref: int | None
    alert_key: str | None = None
    outcome: str | None = None
    detail: Mapping[str, object] = field(default_factory=dict)


Effect = CorrelationChange | Event


@dataclass(frozen=True)
class Settlement:
    """What one delivery attempt of one outbox row came to (Alertmanager's retry/permanent),
    as plain data: `Delivery` writes all of it in one transaction, so a target never writes.

    `outcome` ends the row's message with that outcome (its `reason` says why); `result` is
    kept with a done row (an XML reply reads its calls' results); `effects` are applied first,
    in order. `refused` (the peer refused our credentials) pauses the target's kind until a
    reload or a later recheck."""

    state: RowState
    reason: str
    outcome: Outcome | None = None
    retry_at: float | None = None
    result: Mapping[str, object] | None = None
    effects: tuple[Effect, ...] = ()
    refused: str | None = None


class Target(Protocol):
    """Delivers the outbox rows of one kind and instance (`psa:default`, `webhook:<name>`,
    `smtp:default`, `imap:default`); registered in `bridge.deliver.registry`."""

    kind: str
    name: str

    async def deliver(self, row: OutboxRow) -> Settlement:
        """One attempt; raises only on a bug (the caller counts it as a crash)."""
        ...

    async def render(self, row: OutboxRow) -> dict[str, object]:
        """The exact request `deliver` would send now, credentials masked; sends nothing."""
        ...
