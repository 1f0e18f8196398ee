"""A configured webhook as a delivery target: one instance per `[[webhook]]`, by its name.

Each mirrored PSA call is one row naming its webhook (`payload.target`); the HTTP side is
`bridge.deliver.webhook.WebhookTarget`. 2xx → done; a permanent refusal → dead (the message's
outcome is the PSA's, so it is left alone); anything else → retried with backoff. A row naming
a webhook a reload removed never reaches here: `Delivery` holds it with the reason.
"""

from __future__ import annotations

from typing import Any

from bridge.deliver.settle import TargetEnv, backoff, dead, done, retry
from bridge.deliver.webhook import WebhookTarget
from bridge.seams import Event, Settlement
from bridge.store.db import OutboxRow


class HookTarget:
    kind = "webhook"

    def __init__(self, env: TargetEnv, name: str, hook: WebhookTarget):
        self.env = env
        self.name = name
        self.hook = hook

    def __repr__(self) -> str:
        return f"HookTarget(name={self.name!r})"

    @staticmethod
    def _fields(row: OutboxRow) -> dict[str, Any]:
        return dict(row.payload.get("fields", {}))

    async def render(self, row: OutboxRow) -> dict[str, object]:
        url, body = self.hook.render(self._fields(row))
        return {"kind": self.kind, "target": self.name, "method": self.hook.settings.method,
                "url": url, "body": body}

    async def deliver(self, row: OutboxRow) -> Settlement:
        name = self.name
        result = await self.hook.send(self._fields(row))
        event = Event("webhook", row.message_ref, row.ordering_key, result.verdict, {
            "outbox": row.id, "target": name, "status": result.status, "detail": result.detail})
        if result.verdict == "ok":
            return done({"status": result.status}, event)
        if result.verdict == "permanent":
            return dead(f"webhook {name}: {result.detail}", event)
        return retry(row, self.env.clock(), backoff(row.attempts), f"webhook {name}: "
                     f"{result.detail}", event)
