"""Staged message -> parse -> classify -> decide -> outcome or outbox rows.

Two halves. `evaluate` does everything that reads untrusted bytes (MIME, HTML, tokens, XML,
the rules) and touches no store: it may run anywhere, and a message that breaks it breaks only
itself. `apply` decides (through the one `Decider`) and records, in the store's write
transaction. `process_batch` claims a batch, evaluates every message outside any transaction,
then applies the batch in one short write transaction, so one bad message is parked
(`quarantined`, with the reason) without stopping the batch (Mailman's runner: per-item
try/except; the savepoint per message is taken only once a message has failed). `simulate`
runs this same code on a scratch store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Protocol

from bridge.classify.engine import ClassifyContext, classify
from bridge.classify.ruleset import RuleSet
from bridge.classify.safety import own_addresses
from bridge.config import Settings
from bridge.decide.decider import Decider
from bridge.decide.expectations import report_seen
from bridge.models import Classification, Decision, Kind, OutboxItem, Outcome, ParsedMessage
from bridge.parse.mime import parse
from bridge.parse.xmlapi import Transaction
from bridge.seams import StateStore
from bridge.store.db import StagedRow, Store

log = logging.getLogger("mailbridge.pipeline")


def classify_context(settings: Settings) -> ClassifyContext:
    pw = settings.ates.password.get_secret_value() if settings.ates.password else None
    return ClassifyContext(
        ates_sources=frozenset(settings.ates.sources), ates_id=settings.ates.id,
        ates_password=pw, authserv_ids=frozenset(settings.auth.authserv_ids),
        trusted_relays=frozenset(settings.auth.trusted_relays),
        trusted_hosts=frozenset(settings.auth.trusted_hosts),
        xml_password_set=settings.xml_api.password is not None,
        xml_enabled=settings.xml_api.enabled,
        internal_address=settings.routing.internal_address,
        own_addresses=own_addresses(settings))


@dataclass(frozen=True)
class Evaluation:
    """What the untrusted half found: the final decision for everything but alerts and XML
    transactions, which need the correlation store."""

    parsed: ParsedMessage
    classification: Classification | None
    decision: Decision | None = None
    transaction: Transaction | None = None


@dataclass(frozen=True)
class Broken:
    """A message that got no evaluation. `crashed`: its worker died on it (tried again, up to
    the poison cap). Otherwise the pool itself went away (a reload closed it): tried again
    by the new parts without counting against the message."""

    message_ref: int
    reason: str
    crashed: bool = True


Result = Evaluation | Broken


class Evaluator(Protocol):
    """Runs `Pipeline.evaluate` for staged rows somewhere bounded (`bridge.process.isolation`)."""

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]: ...

    def close(self) -> None: ...


def quarantine(parsed: ParsedMessage, reason: str) -> Evaluation:
    return Evaluation(parsed, None, Decision(outcome=Outcome.QUARANTINED, reason=reason))


@dataclass(frozen=True)
class Pipeline:
    settings: Settings
    ruleset: RuleSet
    context: ClassifyContext
    decider: Decider

    # -- batch processing ---------------------------------------------------------------------

    def process_batch(self, store: Store, worker: str, evaluator: Evaluator,
                      limit: int = 200, only: int | None = None) -> int:
        """Claim, evaluate, apply — in one thread (simulate, tests). The daemon runs the three
        steps itself so that the store's thread never waits on the evaluation."""
        rows = store.claim_staged(worker, limit=limit, only=only, with_raw=False)
        if rows:
            self.apply_batch(store, rows, evaluator.evaluate(store.path, rows), worker)
        return len(rows)

    def apply_batch(self, store: Store, rows: list[StagedRow], results: list[Result],
                    worker: str) -> None:
        """One short write transaction for the batch. A message whose claim this process no
        longer holds (the administrator released or quarantined it meanwhile) is left alone.
        Its events are inserted together at the end.

        One bad message must not stop the batch, nor leave half a record: the batch is
        recorded under one savepoint, and if a message fails, that is undone and the batch
        recorded again with a savepoint per message, the failing one parked (`quarantined`,
        with the reason). A savepoint per message always would cost two statements a message
        for what a bug does."""
        with store.write(), store.batched_events():
            held = store.claims_held([row.id for row in rows], worker)
            todo = [(row, ev) for row, ev in zip(rows, results) if row.id in held]
            try:
                with store.savepoint("batch"):
                    for row, ev in todo:
                        self._record(store, row, ev)
                return
            except Exception:  # recorded again below, where the failure is caught and logged
                pass
            for row, ev in todo:
                if isinstance(ev, Broken):
                    self._record(store, row, ev)
                    continue
                try:
                    with store.savepoint():  # undoes this message's half-written record
                        self.apply(store, row, ev)
                except Exception as exc:  # a bug must not stop the batch: park the message
                    log.exception("recording message %s failed", row.id)
                    store.apply_decision(row.id, Decision(
                        outcome=Outcome.QUARANTINED,
                        reason=f"internal error while deciding: {type(exc).__name__}: {exc}"),
                        arrived_at=row.arrived_at)

    def _record(self, store: Store, row: StagedRow, ev: Result) -> None:
        if isinstance(ev, Broken):
            if ev.crashed:
                store.requeue_crashed(row.id, ev.reason)
            else:
                store.requeue_uncounted(row.id, ev.reason)
        else:
            self.apply(store, row, ev)

    def apply(self, store: StateStore, row: StagedRow, ev: Evaluation) -> Decision:
        """Decide what needs the store and record it, in the caller's write transaction."""
        c = ev.classification
        if c is not None:
            store.event("classified", row.id, c.alert.alert_key if c.alert else None,
                        None, kind=c.kind.value, rule=c.rule, reason=c.reason,
                        account=c.alert.account_id if c.alert else None,
                        how=c.account_how, subject=ev.parsed.subject[:200])
        meta = None
        if ev.decision is not None:
            decision = ev.decision
        elif ev.transaction is not None:
            from bridge.decide.xmltx import apply_transaction

            decision = apply_transaction(ev.transaction, ev.parsed, self.settings, store,
                                         self.decider, row.id, row.arrived_at,
                                         self.ruleset.accounts)
        else:
            assert c is not None and c.alert is not None
            a = c.alert
            decision = self.decider.decide(store, a, row.arrived_at)
            meta = {"account_id": a.account_id, "product_group": a.product_group,
                    "alert_type": a.alert_type, "title": a.title[:255]}
        decision = self._refile(row.source, row.id, decision)
        store.apply_decision(row.id, decision, arrived_at=row.arrived_at,
                             rule=c.rule if c else None, alert_meta=meta)
        for hit in c.expected if c is not None else ():
            report_seen(store, self.ruleset.expect, self.decider, hit, row.arrived_at, row.id)
        return decision

    def _refile(self, source: str, message_ref: int, decision: Decision) -> Decision:
        """IMAP messages may move on from the processed folder by outcome: regular mail to
        `routing.regular_folder` (regular_mail = "move"), quarantined mail to the mailbox's
        `quarantine_folder`. Done from the outbox, so an IMAP outage delays it only."""
        if not source.startswith("imap:"):
            return decision
        folder = None
        if decision.outcome is Outcome.REGULAR and self.settings.routing.regular_mail == "move":
            folder = self.settings.routing.regular_folder
        elif decision.outcome is Outcome.QUARANTINED:
            imap = next((m for m in self.settings.imap if f"imap:{m.name}" == source), None)
            folder = imap.quarantine_folder if imap else None
        if not folder:
            return decision
        item = OutboxItem("imap", f"message:{message_ref}", {"source": source, "folder": folder},
                          "move")
        return replace(decision, outbox=decision.outbox + (item,))

    # -- the untrusted half: no store, no clock -----------------------------------------------

    def evaluate(self, raw: bytes, *, oversize: int | None = None, source: str = "",
                 message_ref: int | None = None) -> Evaluation:
        parsed = parse(raw, html_alternative=self.ruleset.reads_html)
        if oversize is not None:
            return quarantine(parsed, f"message of {oversize} bytes is over the size limit;"
                              " only its header was downloaded")
        if parsed.parse_error:
            return quarantine(parsed, f"could not be parsed: {parsed.parse_error}")
        c = classify(parsed, self.ruleset, self.context)
        if c.kind is Kind.ALERT:
            return Evaluation(parsed, c)
        if c.kind is Kind.XML:
            from bridge.decide.xmltx import read_transaction

            tx = read_transaction(parsed, self.settings)
            if isinstance(tx, Decision):
                return Evaluation(parsed, c, tx)
            return Evaluation(parsed, c, transaction=tx)
        return Evaluation(parsed, c, self._route(c, message_ref))

    def _route(self, c: Classification, message_ref: int | None) -> Decision:
        r = self.settings.routing
        if c.kind in (Kind.SKIPPED, Kind.UNMATCHED):
            outcome = Outcome.SKIPPED if c.kind is Kind.SKIPPED else Outcome.UNMATCHED
            return self._forward(outcome, c.reason, c.forward_to or r.internal_address,
                                 message_ref, c.rule)
        if c.kind is Kind.REJECTED:
            return Decision(outcome=Outcome.REJECTED, reason=c.reason)
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
