"""Staged message -> parse -> classify -> decide -> outcome or outbox rows.

Runs synchronously on the store's thread: every step here is pure or a local SQLite write, so
one batch of staged messages is processed in one write transaction with a savepoint per
message. One bad message can never stop the batch (Mailman's runner: per-item try/except); it
ends `quarantined` with the reason, and `mailbridge replay` can run it again after a fix.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from bridge.config import Settings
from bridge.decide import decide, new_correlation_id, with_webhooks
from bridge.models import Classification, Decision, Kind, OutboxItem, Outcome, ParsedMessage
from bridge.store.db import StagedRow, Store

log = logging.getLogger("mailbridge.pipeline")


class RuleSetHolder:
    """The current rule set; a reload that fails keeps the old one and remembers the error."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.ruleset: Any = None
        self.error: str | None = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        from bridge.classify.loader import load_ruleset

        s = self.settings.rules
        return load_ruleset(s.directory, s.accounts, self.settings.catalogue_map())

    def reload(self) -> bool:
        try:
            fresh = self.load()
        except Exception as exc:  # RuleSetError, or anything a broken file provokes
            self.error = str(exc)
            log.error("rule reload failed, keeping the previous rule set: %s", exc)
            if self.ruleset is None:
                raise
            return False
        with self._lock:
            self.ruleset, self.error = fresh, None
        return True


def classify_context(settings: Settings) -> Any:
    from bridge.classify.engine import ClassifyContext

    pw = settings.ates.password.get_secret_value() if settings.ates.password else None
    return ClassifyContext(
        ates_sources=frozenset(settings.ates.sources), ates_id=settings.ates.id,
        ates_password=pw, authserv_ids=frozenset(settings.auth.authserv_ids),
        trusted_relays=frozenset(settings.auth.trusted_relays),
        trusted_hosts=frozenset(settings.auth.trusted_hosts),
        xml_password_set=settings.xml_api.password is not None,
        xml_enabled=settings.xml_api.enabled,
        internal_address=settings.routing.internal_address)


@dataclass
class Preview:
    """What `simulate` shows for one message: nothing is written anywhere."""

    parsed: ParsedMessage
    classification: Classification | None
    decision: Decision | None
    outcome: str
    reason: str
    payloads: list[dict[str, Any]] = field(default_factory=list)


class Pipeline:
    def __init__(self, store: Store, settings: Settings, rules: RuleSetHolder,
                 new_id: Callable[[], str] = new_correlation_id):
        self.store = store
        self.settings = settings
        self.rules = rules
        self.ctx = classify_context(settings)
        self.new_id = new_id

    # -- batch processing ---------------------------------------------------------------------

    def process_batch(self, worker: str, limit: int = 200, only: int | None = None) -> int:
        rows = self.store.claim_staged(worker, limit=limit, only=only)
        if not rows:
            return 0
        conn = self.store.conn
        with self.store.write():
            for row in rows:
                conn.execute("SAVEPOINT msg")
                try:
                    self.process_row(row)
                except Exception as exc:  # a bug must not stop the batch: park the message
                    conn.execute("ROLLBACK TO msg")
                    log.exception("processing message %s failed", row.id)
                    self.store.apply_decision(row.id, Decision(
                        outcome=Outcome.QUARANTINED,
                        reason=f"internal error while processing: {type(exc).__name__}: {exc}"),
                        arrived_at=row.arrived_at)
                conn.execute("RELEASE msg")
        return len(rows)

    def process_row(self, row: StagedRow) -> None:
        preview = self.evaluate(row.raw, oversize=row.oversize, message_ref=row.id,
                                arrived_at=row.arrived_at)
        c = preview.classification
        if c is not None:
            self.store.event("classified", row.id, c.alert.alert_key if c.alert else None,
                             None, kind=c.kind.value, rule=c.rule, reason=c.reason,
                             account=c.alert.account_id if c.alert else None,
                             how=c.account_how, subject=preview.parsed.subject[:200])
        decision = preview.decision
        if decision is None:  # an alert: decide against the live correlation store
            assert c is not None and c.alert is not None
            ctx = self.store.alert_context(c.alert, row.arrived_at, self.settings.storm)
            decision = decide(c.alert, ctx, self.new_id, self.settings.storm)
            decision = with_webhooks(decision, c.alert,
                                     [w.name for w in self.settings.webhook])
        meta = None
        if c is not None and c.alert is not None:
            a = c.alert
            meta = {"account_id": a.account_id, "product_group": a.product_group,
                    "alert_type": a.alert_type, "title": a.title[:255]}
        decision = self._refile(row, decision)
        self.store.apply_decision(row.id, decision, arrived_at=row.arrived_at,
                                  rule=c.rule if c else None, alert_meta=meta)

    def _refile(self, row: StagedRow, decision: Decision) -> Decision:
        """IMAP messages may move on from the processed folder by outcome: regular mail to
        `routing.regular_folder` (regular_mail = "move"), quarantined mail to the mailbox's
        `quarantine_folder`. Done from the outbox, so an IMAP outage delays it only."""
        if not row.source.startswith("imap:"):
            return decision
        folder = None
        if decision.outcome is Outcome.REGULAR and self.settings.routing.regular_mail == "move":
            folder = self.settings.routing.regular_folder
        elif decision.outcome is Outcome.QUARANTINED:
            imap = next((m for m in self.settings.imap if f"imap:{m.name}" == row.source), None)
            folder = imap.quarantine_folder if imap else None
        if not folder:
            return decision
        item = OutboxItem("imap", f"message:{row.id}", {"source": row.source, "folder": folder},
                          "move")
        return replace(decision, outbox=decision.outbox + (item,))

    # -- the pure part, shared with `simulate` ------------------------------------------------

    def evaluate(self, raw: bytes, *, oversize: int | None = None,
                 message_ref: int | None = None, arrived_at: float = 0.0) -> Preview:
        from bridge.classify.engine import classify
        from bridge.parse.mime import parse

        parsed = parse(raw)
        if oversize is not None:
            reason = (f"message of {oversize} bytes is over the size limit; only its header"
                      " was downloaded")
            return Preview(parsed, None, Decision(outcome=Outcome.QUARANTINED, reason=reason),
                           Outcome.QUARANTINED.value, reason)
        if parsed.parse_error:
            reason = f"could not be parsed: {parsed.parse_error}"
            return Preview(parsed, None, Decision(outcome=Outcome.QUARANTINED, reason=reason),
                           Outcome.QUARANTINED.value, reason)
        c = classify(parsed, self.rules.ruleset, self.ctx)
        decision = self._route(c, parsed, message_ref, arrived_at)
        if decision is not None:
            return Preview(parsed, c, decision,
                           decision.outcome.value if decision.outcome else "pending",
                           decision.reason)
        return Preview(parsed, c, None, "pending", c.reason)

    def _route(self, c: Classification, parsed: ParsedMessage,
               message_ref: int | None, arrived_at: float) -> Decision | None:
        """Every kind but a plain alert is decided here; alerts need the correlation store."""
        r = self.settings.routing
        if c.kind is Kind.ALERT:
            return None
        if c.kind in (Kind.SKIPPED, Kind.UNMATCHED):
            outcome = Outcome.SKIPPED if c.kind is Kind.SKIPPED else Outcome.UNMATCHED
            return self._forward(outcome, c.reason, c.forward_to or r.internal_address,
                                 message_ref, c.rule)
        if c.kind is Kind.REJECTED:
            return Decision(outcome=Outcome.REJECTED, reason=c.reason)
        if c.kind is Kind.XML:
            from bridge.xmltx import decide_transaction

            return decide_transaction(parsed, self.settings, self.store, message_ref,
                                      arrived_at, getattr(self.rules.ruleset, "accounts", None),
                                      self.new_id)
        # Regular mail: leave it (the source already moved it), or forward it.
        if r.regular_mail == "forward" and r.regular_forward_to:
            return self._forward(Outcome.REGULAR, c.reason, r.regular_forward_to,
                                 message_ref, None)
        return Decision(outcome=Outcome.REGULAR, reason=c.reason)

    def _forward(self, outcome: Outcome, reason: str, to: str | None,
                 message_ref: int | None, rule: str | None) -> Decision:
        if not to or self.settings.smtp is None:
            return Decision(outcome=outcome, reason=f"{reason}; not forwarded (no "
                            f"{'SMTP server' if to else 'internal address'} configured)")
        note = f"{outcome.value}: {reason}"
        item = OutboxItem("smtp", f"message:{message_ref}", {"type": "forward", "to": to,
                          "note": note, "rule": rule}, "forward")
        return Decision(outcome=outcome, reason=f"{reason}; forwarded to {to}", outbox=(item,))


def preview_payloads(decision: Decision | None) -> list[dict[str, Any]]:
    """The exact `data` + status + correlationId each queued PSA call would carry."""
    out = []
    for item in decision.outbox if decision else ():
        if item.kind == "psa":
            out.append({"incidentStatus": item.action, "correlationId": item.correlation_id,
                        "data": dict(item.payload)})
        else:
            out.append({"kind": item.kind, **dict(item.payload)})
    return out

