"""Dry-run peers for `simulate`: the same request building as the real ones, nothing sent.

Each accepts every call as the real peer's best answer would say (the PSA creates, appends and
closes; the SMTP relay and the webhooks take the message) and records the exact request it
would have made, credentials redacted, under the outbox row being delivered (`CURRENT_ROW`,
set by `Delivery.deliver` for the task that sends one row).
"""

from __future__ import annotations

from collections import defaultdict
from email.message import EmailMessage
from typing import Any, Mapping

from bridge.config import Settings
from bridge.deliver.peers import CURRENT_ROW, Peers
from bridge.deliver.psa import Action, PsaClient, PsaResult, Verdict, redact_payload
from bridge.deliver.smtp import SendResult, SmtpSender
from bridge.deliver.webhook import WebhookResult, WebhookTarget
from bridge.models import TicketCall


_PSA_VERDICT = {"OPEN": Verdict.CREATED, "UPDATE": Verdict.UPDATED, "RESOLVED": Verdict.CLOSED}


class DryRunLog:
    """Every request the dry-run peers would have sent, in order, by outbox row."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._by_row: dict[int | None, list[dict[str, Any]]] = defaultdict(list)

    def add(self, call: dict[str, Any]) -> None:
        self.calls.append(call)
        self._by_row[CURRENT_ROW.get()].append(call)

    def by_row(self, row_id: int) -> list[dict[str, Any]]:
        return list(self._by_row.get(row_id, ()))


class DryRunPsa(PsaClient):
    def __init__(self, settings: Settings, log: DryRunLog):
        super().__init__(settings.psa)
        self.log = log

    async def sync(self, action: Action, call: TicketCall,
                   correlation_id: str | None = None) -> PsaResult:
        body = redact_payload(self.build_payload(action, call, correlation_id))
        self.log.add({"kind": "psa", "action": action, "correlation_id": correlation_id,
                      "request": body})
        return PsaResult(_PSA_VERDICT[action], 200, "simulated: not sent", correlation_id)


class DryRunSmtp(SmtpSender):
    def __init__(self, settings: Settings, log: DryRunLog):
        assert settings.smtp is not None
        super().__init__(settings.smtp)
        self.log = log

    async def send(self, message: EmailMessage | bytes) -> SendResult:
        if isinstance(message, bytes):
            from email import message_from_bytes, policy

            parsed = message_from_bytes(message, policy=policy.default)
            to, subject = str(parsed.get("To", "")), str(parsed.get("Subject", ""))
        else:
            to, subject = str(message.get("To", "")), str(message.get("Subject", ""))
        self.log.add({"kind": "smtp", "to": to, "subject": subject})
        return SendResult("ok", "simulated: not sent")


class DryRunWebhook(WebhookTarget):
    def __init__(self, settings: Any, log: DryRunLog):
        super().__init__(settings)
        self.log = log

    async def send(self, fields: Mapping[str, Any]) -> WebhookResult:
        url, body = self.render(fields)
        self.log.add({"kind": "webhook", "target": self.settings.name,
                      "method": self.settings.method, "url": url, "body": body})
        return WebhookResult("ok", 200, "simulated: not sent")


def dry_run_peers(settings: Settings, log: DryRunLog) -> Peers:
    return Peers(DryRunPsa(settings, log) if settings.psa.enabled else None,
                 DryRunSmtp(settings, log) if settings.smtp is not None else None,
                 {w.name: DryRunWebhook(w, log) for w in settings.webhook})
