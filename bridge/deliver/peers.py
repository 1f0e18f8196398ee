"""The peers delivery talks to, as one value: a reload replaces them together."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

if TYPE_CHECKING:
    from bridge.deliver.psa import PsaClient
    from bridge.deliver.smtp import SmtpSender
    from bridge.deliver.webhook import WebhookTarget

# The outbox row the current delivery task sends (set by `Delivery.deliver`): the dry-run
# peers file the requests they record under it.
CURRENT_ROW: contextvars.ContextVar[int | None] = contextvars.ContextVar("outbox_row",
                                                                        default=None)


@dataclass(frozen=True)
class Peers:
    """Everything that talks to a server other than the mailbox: the PSA, SMTP, webhooks."""

    psa: PsaClient | None
    smtp: SmtpSender | None
    webhooks: Mapping[str, WebhookTarget] = field(default_factory=dict)

    async def aclose(self) -> None:
        if self.psa is not None:
            await self.psa.aclose()
        for hook in self.webhooks.values():
            await hook.aclose()
