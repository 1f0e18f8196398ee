"""The one path from an alert to a decision: read its context, decide, mirror to webhooks.

Every command decides through `Decider.decide` — the daemon, `run --once`, `ingest`, `replay`,
XML transactions, `simulate` (on its scratch store) and `test-alert`. Only the policy may differ,
and only by an explicit per-call override (test-alert's "send now"), so a preview and a run of
the same mail under the same settings cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from bridge.config import Settings, StormSettings
from bridge.decide.core import decide, new_correlation_id, with_webhooks
from bridge.models import Alert, Decision
from bridge.seams import StateStore

# test-alert must reach the PSA now: no coalescing, no resolve delay.
SEND_NOW = {"coalesce_window": 0.0, "resolve_delay": 0.0}


@dataclass(frozen=True)
class Decider:
    policy: StormSettings
    webhooks: tuple[str, ...] = ()
    new_id: Callable[[], str] = field(default=new_correlation_id)

    @classmethod
    def from_settings(cls, settings: Settings,
                      new_id: Callable[[], str] = new_correlation_id) -> "Decider":
        return cls(settings.storm, tuple(w.name for w in settings.webhook), new_id)

    def decide(self, store: StateStore, alert: Alert, arrived_at: float, *,
               override: dict[str, float] | None = None) -> Decision:
        """Decide in the caller's write transaction (the context read here and the result
        recorded after it must not interleave with another writer)."""
        policy = self.policy.model_copy(update=override) if override else self.policy
        ctx = store.alert_context(alert, arrived_at, policy)
        return with_webhooks(decide(alert, ctx, self.new_id, policy), alert,
                             list(self.webhooks))
