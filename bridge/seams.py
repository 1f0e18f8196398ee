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
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol

from bridge.config import StormSettings
from bridge.models import Alert, AlertContext, Decision, RawMessage

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

    def record_effects(self, message_ref: int, decision: Decision, *, arrived_at: float,
                       alert_meta: dict[str, Any] | None = None) -> list[int]: ...

    def correlation_meta(self, alert_key: str) -> dict[str, Any] | None: ...

    def recent_replies(self, to: str, since: float) -> int: ...

    def event(self, kind: str, message_ref: int | None = None, alert_key: str | None = None,
              outcome: str | None = None, /, **detail: Any) -> None: ...


class RowState(str, enum.Enum):
    """Where an outbox row goes after one delivery attempt."""

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"


@dataclass(frozen=True)
class Settlement:
    """What one delivery attempt of one outbox row came to (Alertmanager's retry/permanent)."""

    state: RowState
    reason: str
    outcome: str | None = None        # the message's outcome, when this row decides it
    retry_at: float | None = None


class Target(Protocol):
    """Delivers outbox rows of one kind (psa, webhook, smtp, imap)."""

    kind: str

    async def aclose(self) -> None: ...
