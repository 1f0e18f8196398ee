"""The simulator's tickets, their history, and how they survive a restart.

Every call that changed a ticket adds a history entry (what happened, status, title, summary,
time). A ticket is found by its correlationId or by an alias: when de-duplication folds a new
alert into an open ticket, the correlationId the caller sent becomes an alias of that ticket, so
later UPDATE/RESOLVED calls with either id reach it. With a state file, the book is written
after every change, atomically (temporary file, fsync, rename), so a crash never leaves half a
file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

TicketStatus = Literal["open", "closed"]


class HistoryEntry(BaseModel):
    message_id: str
    incident_status: str
    action: str  # created / appended / deduplicated / closed / heal-noted
    status: TicketStatus
    title: str
    summary: str
    at: float


class Ticket(BaseModel):
    correlation_id: str
    number: int
    status: TicketStatus = "open"
    integration_id: str
    account_id: str
    account_name: str
    product_group: str
    alert_type: str
    rule_id: str
    queue: str
    priority: str
    title: str
    summary: str
    device: str | None = None
    created_at: float
    updated_at: float
    aliases: list[str] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)

    def record(self, *, message_id: str, incident_status: str, action: str, title: str,
               summary: str) -> None:
        now = time.time()
        self.updated_at = now
        self.history.append(HistoryEntry(
            message_id=message_id, incident_status=incident_status, action=action,
            status=self.status, title=title, summary=summary, at=now))

    def public(self) -> dict[str, object]:
        """The ticket as the GET endpoints show it (camelCase, like the rest of the API)."""
        return {
            "correlationId": self.correlation_id,
            "ticketNumber": self.number,
            "status": self.status,
            "integrationId": self.integration_id,
            "accountId": self.account_id,
            "accountName": self.account_name,
            "productGroup": self.product_group,
            "alertType": self.alert_type,
            "ruleId": self.rule_id,
            "queue": self.queue,
            "priority": self.priority,
            "title": self.title,
            "summary": self.summary,
            "device": self.device,
            "createdAt": self.created_at,
            "updatedAt": self.updated_at,
            "aliases": list(self.aliases),
            "history": [
                {"messageId": h.message_id, "incidentStatus": h.incident_status,
                 "action": h.action, "status": h.status, "title": h.title,
                 "summary": h.summary, "at": h.at}
                for h in self.history
            ],
        }


class _Snapshot(BaseModel):
    next_number: int = 1001
    tickets: list[Ticket] = Field(default_factory=list)


class TicketBook:
    """All tickets of the partner, in creation order, optionally persisted to `path`."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.tickets: dict[str, Ticket] = {}
        self._aliases: dict[str, str] = {}
        self._next_number = 1001
        if path is not None and path.exists():
            self._load(path)

    def get(self, correlation_id: str) -> Ticket | None:
        key = self._aliases.get(correlation_id, correlation_id)
        return self.tickets.get(key)

    def add(self, ticket_fields: dict[str, object]) -> Ticket:
        now = time.time()
        ticket = Ticket.model_validate(
            ticket_fields | {"number": self._next_number, "created_at": now, "updated_at": now})
        self._next_number += 1
        self.tickets[ticket.correlation_id] = ticket
        return ticket

    def alias(self, ticket: Ticket, correlation_id: str) -> None:
        if correlation_id != ticket.correlation_id and correlation_id not in ticket.aliases:
            ticket.aliases.append(correlation_id)
            self._aliases[correlation_id] = ticket.correlation_id

    def find_open_duplicate(self, *, account_id: str, product_group: str, alert_type: str,
                            title: str) -> Ticket | None:
        for ticket in self.tickets.values():
            if (ticket.status == "open" and ticket.account_id == account_id
                    and ticket.product_group == product_group
                    and ticket.alert_type == alert_type and ticket.title == title):
                return ticket
        return None

    def clear(self) -> None:
        self.tickets.clear()
        self._aliases.clear()
        self._next_number = 1001
        self.save()

    def save(self) -> None:
        """Write the whole book atomically; a no-op without a state file."""
        if self.path is None:
            return
        snapshot = _Snapshot(next_number=self._next_number, tickets=list(self.tickets.values()))
        data = snapshot.model_dump_json(indent=1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        snapshot = _Snapshot.model_validate(json.loads(path.read_text(encoding="utf-8")))
        self._next_number = snapshot.next_number
        for ticket in snapshot.tickets:
            self.tickets[ticket.correlation_id] = ticket
            for alias in ticket.aliases:
                self._aliases[alias] = ticket.correlation_id
