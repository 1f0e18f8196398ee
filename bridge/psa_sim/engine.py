"""What the simulated MSPCentric platform does with each call, without any HTTP in the way.

`Simulator.sync` applies seed 000's rules in a fixed order (docs/psa-simulator.md lists it):
PSA present → integration known, active, alerting → for OPEN: a ticket already under this
correlationId (answered as is: creates are idempotent) → account known and mapped → a rule for
the product group and alert type, and one of them on → suppression and the ticket-creation
toggle → de-duplication → a new ticket; for UPDATE/RESOLVED: the ticket, its integration,
account and rule still there → suppression → append, or close (or only note the heal when
self-healing is off). Each answer is a `Reply`; the documented inconsistencies of the seed
(`correlationID` vs `correlationId`, `statusCode` as int or string, where a 404's cause is
written) are varied on purpose when the partner's `quirks` is on.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.psa_sim.faults import Faults
from bridge.psa_sim.partner import Account, PartnerConfig, Suppression
from bridge.psa_sim.state import TicketBook

REQUIRED = ("title", "summary", "alertType", "accountId", "productGroup", "incidentStatus")
INCIDENT_STATUSES = ("OPEN", "UPDATE", "RESOLVED")
NOT_FOUND = "OemNotFoundException"
CONFLICT = "OemConflictException"
INTERNAL = "OemInternalServerException"


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict[str, Any] | str
    headers: dict[str, str] = field(default_factory=dict)
    outcome: str = ""  # a word for the call log: created, suppressed, not-found, …


class Simulator:
    def __init__(self, partner: PartnerConfig, state_path: Path | None = None):
        self._original = partner.model_copy(deep=True)
        self.partner = partner.model_copy(deep=True)
        self.book = TicketBook(state_path)
        self.faults = Faults()
        self.calls: deque[dict[str, Any]] = deque(maxlen=100_000)
        self._answers = 0  # drives the quirk rotation, so it is deterministic
        self._call_seq = 0

    def log_call(self, record: dict[str, Any]) -> dict[str, Any]:
        """Keep a call (without secrets) for GET /_control/calls; returns it for updating."""
        self._call_seq += 1
        record = {"seq": self._call_seq} | record
        self.calls.append(record)
        return record

    # -- authentication -------------------------------------------------------------------

    def authenticate(self, client_id: Any, client_secret: Any, org_token: Any) -> bool:
        creds = self.partner.credentials
        given = (client_id, client_secret, org_token)
        if not all(isinstance(v, str) for v in given):
            return False
        expected = (creds.client_id, creds.client_secret, creds.organization_oem_token)
        # Compare all three every time (constant time, no early exit).
        ok = [hmac.compare_digest(g.encode(), e.encode()) for g, e in zip(given, expected)]
        return all(ok)

    def unauthorized(self) -> Reply:
        return Reply(401, {"statusCode": 401, "message": "Unauthorized: invalid client credentials",
                           "error": "UnauthorizedException"}, outcome="unauthorized")

    # -- POST /alert/sync -----------------------------------------------------------------

    def sync(self, body: dict[str, Any]) -> Reply:
        data = body.get("data")
        if not isinstance(data, dict):
            return self._bad_request("data is missing")
        missing = [k for k in REQUIRED if not isinstance(data.get(k), str)
                   or (k != "summary" and not data[k].strip())]
        if missing:
            return self._bad_request(f"missing or empty: {', '.join(missing)}")
        status = data["incidentStatus"]
        if status not in INCIDENT_STATUSES:
            return self._bad_request(f"incidentStatus must be one of {', '.join(INCIDENT_STATUSES)}")
        correlation_id = body.get("correlationId") or body.get("correlationID")
        if correlation_id is not None and not isinstance(correlation_id, str):
            return self._bad_request("correlationId must be a string")
        integration_id = body.get("integrationId")
        message_id = f"msg-{uuid.uuid4()}"
        call = _Call(data=data, status=status, correlation_id=correlation_id,
                     message_id=message_id)

        if not self.partner.psa:
            return self._error(404, NOT_FOUND, "No PSA found on the organization", call)
        integration = self.partner.integration(integration_id) if isinstance(integration_id, str) else None
        if integration is None:
            return self._error(404, NOT_FOUND, f"Integration not found: {integration_id!r}", call)
        if not integration.active:
            return self._error(409, CONFLICT,
                               "Integration is not in an active state to receive alerts", call)
        if not integration.alerting:
            return self._error(409, CONFLICT, "Alerts is not enabled for this integration", call)
        if status == "OPEN":
            return self._open(call, integration.id)
        return self._append_or_heal(call)

    def _open(self, call: _Call, integration_id: str) -> Reply:
        data = call.data
        if call.correlation_id and (ticket := self.book.get(call.correlation_id)):
            # A repeated create (a retry after an ambiguous failure): the same ticket again.
            return self._answer(201, 201, "created", ticket.correlation_id, call.message_id)
        refused = self._account_refusal(data["accountId"], call)
        if refused:
            return refused
        group = self.partner.product_group(data["productGroup"])
        rules = [r for r in group.rules if r.covers(data["alertType"])] if group else []
        if not rules:
            return self._error(404, NOT_FOUND, "No rules defined for product group "
                               f"{data['productGroup']!r} and alert type {data['alertType']!r}", call)
        rule = next((r for r in rules if r.enabled), None)
        if rule is None:
            return self._error(404, NOT_FOUND, "All rules are turned off for product group "
                               f"{data['productGroup']!r}", call)
        if self._suppressed(call) or not self.partner.features.ticket_creation:
            return self._suppressed_reply(call)
        if self.partner.features.deduplication:
            duplicate = self.book.find_open_duplicate(
                account_id=data["accountId"], product_group=data["productGroup"],
                alert_type=data["alertType"], title=data["title"])
            if duplicate is not None:
                duplicate.record(message_id=call.message_id, incident_status="OPEN",
                                 action="deduplicated", title=data["title"],
                                 summary=data["summary"])
                if call.correlation_id:
                    self.book.alias(duplicate, call.correlation_id)
                self.book.save()
                return self._answer(200, 201, "updated", duplicate.correlation_id,
                                    call.message_id)
        account = self.partner.account(data["accountId"])
        assert account is not None  # checked by _account_refusal
        ticket = self.book.add({
            "correlation_id": call.correlation_id or str(uuid.uuid4()),
            "integration_id": integration_id,
            "account_id": account.id, "account_name": account.name,
            "product_group": data["productGroup"], "alert_type": data["alertType"],
            "rule_id": rule.id, "queue": rule.queue, "priority": rule.priority,
            "title": data["title"], "summary": data["summary"],
            "device": data.get("device") if isinstance(data.get("device"), str) else None,
        })
        ticket.record(message_id=call.message_id, incident_status="OPEN", action="created",
                      title=data["title"], summary=data["summary"])
        self.book.save()
        return self._answer(201, 201, "created", ticket.correlation_id, call.message_id)

    def _append_or_heal(self, call: _Call) -> Reply:
        data = call.data
        if not call.correlation_id:
            return self._error(404, NOT_FOUND, "Ticket not found: no correlationId provided", call)
        ticket = self.book.get(call.correlation_id)
        if ticket is None:
            return self._error(404, NOT_FOUND, "Ticket not found that corresponds to the "
                               f"correlationId provided: {call.correlation_id!r}", call)
        if self.partner.integration(ticket.integration_id) is None:
            return self._error(404, NOT_FOUND, "Integration not found: it was likely removed "
                               f"by the user ({ticket.integration_id!r})", call)
        refused = self._account_refusal(ticket.account_id, call)
        if refused:
            return refused
        group = self.partner.product_group(ticket.product_group)
        if group is None or group.rule(ticket.rule_id) is None:
            return self._error(404, NOT_FOUND, "Rule was not found: it was likely deleted by "
                               f"the user ({ticket.rule_id!r})", call)
        if self._suppressed(call):
            return self._suppressed_reply(call)
        if call.status == "UPDATE":
            if ticket.status == "closed":
                return self._error(404, NOT_FOUND, "Ticket not found that corresponds to the "
                                   f"correlationId provided: {call.correlation_id!r} is closed",
                                   call)
            ticket.record(message_id=call.message_id, incident_status="UPDATE",
                          action="appended", title=data["title"], summary=data["summary"])
            self.book.save()
            return self._answer(200, 201, "updated", ticket.correlation_id, call.message_id)
        if ticket.status == "closed":
            # A repeated heal (a retry): closed already, say so again and change nothing.
            return self._answer(200, "200", "closed", ticket.correlation_id, call.message_id)
        if not self.partner.features.self_healing:
            ticket.record(message_id=call.message_id, incident_status="RESOLVED",
                          action="heal-noted", title=data["title"], summary=data["summary"])
            self.book.save()
            return self._answer(200, 201, "updated", ticket.correlation_id, call.message_id)
        ticket.status = "closed"
        ticket.record(message_id=call.message_id, incident_status="RESOLVED", action="closed",
                      title=data["title"], summary=data["summary"])
        self.book.save()
        return self._answer(200, "200", "closed", ticket.correlation_id, call.message_id)

    def _account_refusal(self, account_id: str, call: _Call) -> Reply | None:
        account = self.partner.account(account_id)
        if account is None:
            return self._error(404, NOT_FOUND, f"Account was not found: {account_id!r}", call)
        if not account.mapped:
            return self._error(404, NOT_FOUND, f"Account {account_id!r} was not mapped by the "
                               "user and cannot be communicated to the PSA", call)
        return None

    def _suppressed(self, call: _Call) -> bool:
        d = call.data
        return any(s.matches(product_group=d["productGroup"], alert_type=d["alertType"],
                             incident_status=call.status, account_id=d["accountId"])
                   for s in self.partner.suppressions)

    def _suppressed_reply(self, call: _Call) -> Reply:
        if self.partner.responses.suppressed_variant == "409":
            return self._answer(409, 409, "suppressed", call.correlation_id, call.message_id,
                                error=CONFLICT)
        return self._answer(200, 201, "suppressed", call.correlation_id, call.message_id)

    # -- GET endpoints ----------------------------------------------------------------------

    def get_ticket(self, correlation_id: str) -> Reply:
        ticket = self.book.get(correlation_id)
        if ticket is None:
            return Reply(404, {"statusCode": 404, "error": NOT_FOUND,
                               "message": "Ticket not found that corresponds to the "
                                          "correlationId provided"}, outcome="not-found")
        return Reply(200, {"statusCode": 200, "message": "ok", "data": ticket.public()},
                     outcome="ok")

    def list_tickets(self, status: str | None = None) -> Reply:
        tickets = [t.public() for t in self.book.tickets.values()
                   if status is None or t.status == status]
        return Reply(200, {"statusCode": 200, "message": "ok", "data": tickets}, outcome="ok")

    def list_integrations(self) -> Reply:
        rows = [{"id": i.id, "name": i.name, "active": i.active, "alertingEnabled": i.alerting,
                 "psa": self.partner.psa or None} for i in self.partner.integrations]
        return Reply(200, {"statusCode": 200, "message": "ok", "data": rows}, outcome="ok")

    # -- control ---------------------------------------------------------------------------

    def control(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Apply control changes (docs/psa-simulator.md); unknown keys are errors."""
        changes = dict(changes)
        if changes.pop("reset", False):
            self.partner = self._original.model_copy(deep=True)
            self.faults = Faults()
            self.book.clear()
            self.calls.clear()
            self._answers = 0
            self._call_seq = 0
        if changes.pop("reset_faults", False):
            self.faults = Faults()
        if "features" in changes:
            for key, value in dict(changes.pop("features")).items():
                _set(self.partner.features, key, value)
        for key in ("suppressed_variant", "quirks"):
            if key in changes:
                _set(self.partner.responses, key, changes.pop(key))
        if "psa" in changes:
            self.partner.psa = str(changes.pop("psa") or "")
        if "integration" in changes:
            self._control_integration(dict(changes.pop("integration")))
        if "account" in changes:
            self._control_account(dict(changes.pop("account")))
        if "rule" in changes:
            self._control_rule(dict(changes.pop("rule")))
        if "close_ticket" in changes:  # a technician closes a ticket in the PSA itself
            ticket = self.book.get(str(changes.pop("close_ticket")))
            if ticket is None:
                raise ValueError("no such ticket")
            ticket.status = "closed"
            ticket.record(message_id="technician", incident_status="RESOLVED",
                          action="closed by a technician", title=ticket.title, summary="")
            self.book.save()
        if "suppressions" in changes:
            self.partner.suppressions = [Suppression.model_validate(s)
                                         for s in changes.pop("suppressions")]
        self.faults.update(changes)  # what is left must be fault settings
        return self.snapshot()

    def _control_integration(self, spec: dict[str, Any]) -> None:
        wanted = spec.pop("id", None)
        integration = (self.partner.integration(wanted) if wanted
                       else (self.partner.integrations[0] if self.partner.integrations else None))
        if integration is None:
            raise ValueError(f"no integration {wanted!r}")
        if spec.pop("remove", False):
            self.partner.integrations.remove(integration)
            return
        for key, value in spec.items():
            _set(integration, key, value)

    def _control_account(self, spec: dict[str, Any]) -> None:
        account_id = spec.pop("id")
        account = self.partner.account(account_id)
        if spec.pop("remove", False):
            if account is not None:
                self.partner.accounts.remove(account)
            return
        if account is None:
            self.partner.accounts.append(Account(id=account_id, **spec))
            return
        for key, value in spec.items():
            _set(account, key, value)

    def _control_rule(self, spec: dict[str, Any]) -> None:
        group = self.partner.product_group(spec.pop("product_group"))
        if group is None:
            raise ValueError("no such product group")
        rule_id = spec.pop("id", None)
        rules = [r for r in group.rules if rule_id is None or r.id == rule_id]
        if not rules:
            raise ValueError(f"no rule {rule_id!r}")
        if spec.pop("remove", False):
            group.rules = [r for r in group.rules if r not in rules]
            return
        for rule in rules:
            for key, value in spec.items():
                _set(rule, key, value)

    def snapshot(self) -> dict[str, Any]:
        partner = self.partner.model_dump(exclude={"credentials"})
        return {"faults": self.faults.as_dict(), "partner": partner,
                "tickets": len(self.book.tickets), "calls": len(self.calls)}

    # -- answers -----------------------------------------------------------------------------

    def _answer(self, http: int, status_code: int | str, message: str,
                correlation_id: str | None, message_id: str, error: str | None = None) -> Reply:
        turn = self._next_turn()
        body: dict[str, Any] = {"statusCode": self._status_code(status_code, turn),
                                "message": message}
        if error:
            body["error"] = error
        body["data"] = {"messageId": message_id, self._cid_key(turn): correlation_id}
        return Reply(http, body, outcome=message)

    def _error(self, http: int, error: str, cause: str, call: _Call) -> Reply:
        turn = self._next_turn()
        body: dict[str, Any] = {"statusCode": self._status_code(http, turn)}
        if self.partner.responses.quirks and turn % 2:
            # The seed's example error body says only "failed"; the cause is elsewhere.
            body |= {"message": "failed", "error": f"{error}: {cause}"}
        else:
            body |= {"message": cause, "error": error}
        if not (self.partner.responses.quirks and turn % 4 == 3):
            body["data"] = {"messageId": call.message_id,
                            self._cid_key(turn): call.correlation_id}
        outcome = {404: "not-found", 409: "conflict"}.get(http, "error")
        return Reply(http, body, outcome=outcome)

    def _bad_request(self, reason: str) -> Reply:
        return Reply(400, {"statusCode": 400, "message": f"Bad Request: {reason}",
                           "error": "BadRequestException"}, outcome="bad-request")

    def internal_error(self) -> Reply:
        return Reply(500, {"statusCode": 500, "message": "Internal server error",
                           "error": INTERNAL}, outcome="error")

    def _next_turn(self) -> int:
        self._answers += 1
        return self._answers - 1

    def _cid_key(self, turn: int) -> str:
        return "correlationId" if self.partner.responses.quirks and turn % 2 else "correlationID"

    def _status_code(self, code: int | str, turn: int) -> int | str:
        if self.partner.responses.quirks and turn % 3 == 2:
            # Flip the type: ints become strings, the seed's string "200" becomes an int.
            return int(code) if isinstance(code, str) else str(code)
        return code


@dataclass
class _Call:
    data: dict[str, Any]
    status: str
    correlation_id: str | None
    message_id: str
    at: float = field(default_factory=time.time)


def _set(model: Any, key: str, value: Any) -> None:
    if key not in type(model).model_fields:
        raise ValueError(f"unknown key {key!r}")
    setattr(model, key, value)


