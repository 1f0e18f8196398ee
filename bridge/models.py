"""Plain data handed from one pipeline stage to the next.

Every stage takes one of these in and gives one out; none of them does I/O. Keeping them in one
small module makes the contract between stages readable in one sitting.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Mapping


class Outcome(str, enum.Enum):
    """The one final outcome every staged message ends in (SPEC §3.8)."""

    CREATED = "created"
    APPENDED = "appended"
    RESOLVED = "resolved"
    NOTHING_TO_RESOLVE = "nothing-to-resolve"
    COALESCED = "coalesced"
    DAMPED = "damped"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    UNMATCHED = "unmatched"
    REGULAR = "regular"
    XML = "xml"
    REJECTED = "rejected"
    QUARANTINED = "quarantined"
    FAILED = "failed"


# -- source -> stage ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RawMessage:
    """A message as a source received it, before anything looked inside.

    `source` names the source instance ("imap:<mailbox name>", "maildir:<name>", "pipe");
    `source_uid` is its identity there ("<uidvalidity>:<uid>" for IMAP, the file's unique
    name for Maildir, None for a pipe). `arrived_at` is the arrival time at the mailbox
    (IMAP INTERNALDATE, else receive time), epoch seconds: storm windows are measured on it.
    """

    raw: bytes
    source: str
    source_uid: str | None
    arrived_at: float
    # Set when the source refused to download a message over its size limit: `raw` then holds
    # only the header block, and the message is quarantined with this original size as reason.
    oversize: int | None = None


# -- parse ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRef:
    """One data element of an ATES token: `<AlertID source="Kaseya" name="8932"/>`."""

    name: str
    source: str | None = None


@dataclass(frozen=True)
class AtesToken:
    """The `<Autotask>` token of seed 001. Every element is optional."""

    id: str | None = None
    pw: str | None = field(default=None, repr=False)  # a password: never in a repr or log
    customer_id: TokenRef | None = None
    device_id: TokenRef | None = None
    alert_id: TokenRef | None = None
    ticket_id: TokenRef | None = None
    problems: tuple[str, ...] = ()  # e.g. "AlertID has no source attribute"


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedMessage:
    """What the rules may look at. Built once per message by `bridge.parse.mime.parse`.

    `sender` is the addr-spec of From exactly as written (lower-cased), never the decoding of
    an encoded-word inside it: `=?utf-8?Q?agent?=@example.com` stays that literal string.
    `headers` maps lower-case header names to all their (decoded) values.
    `parse_error` is set when the message could not be understood at all; such a message is
    quarantined with that reason.
    """

    subject: str = ""
    sender: str = ""
    sender_name: str = ""
    recipients: tuple[str, ...] = ()
    date: datetime | None = None
    message_id: str | None = None
    headers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    body: str = ""
    # The text of the first HTML part when `body` came from text/plain parts ("" otherwise),
    # cut as `body` is; `body_is_html`: `body` itself is an HTML part's text (no plain part);
    # `text_is_stub`: the plain body only points at its HTML alternative (docs/parsing.md).
    html_body: str = ""
    body_is_html: bool = False
    text_is_stub: bool = False
    ates: tuple[AtesToken, ...] = ()
    xml_parts: tuple[bytes, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    defects: tuple[str, ...] = ()
    parse_error: str | None = None
    # Received and Authentication-Results headers, (lower-case name, value), top to bottom:
    # the trust boundary of RFC 8601 §5 depends on their order (classify/authres.py).
    trace: tuple[tuple[str, str], ...] = ()

    def header(self, name: str) -> str:
        """First value of a header, or "" (names are case-insensitive)."""
        values = self.headers.get(name.lower(), ())
        return values[0] if values else ""

    @property
    def ates_token(self) -> AtesToken | None:
        return self.ates[0] if self.ates else None


# -- classify ---------------------------------------------------------------------------------


class Kind(str, enum.Enum):
    """Where the precedence of SPEC §3.4 put a message."""

    ALERT = "alert"          # automated, not skipped, account found
    SKIPPED = "skipped"      # automated, a skip rule matched
    UNMATCHED = "unmatched"  # automated, no account
    XML = "xml"              # an XML transaction (API by email)
    REGULAR = "regular"      # neither
    REJECTED = "rejected"    # e.g. a rule demanded authentication and it was missing


Status = Literal["open", "update", "resolved"]


@dataclass(frozen=True)
class Alert:
    """An automated message understood as one occurrence of one alert."""

    alert_key: str
    status: Status
    account_id: str
    product_group: str
    alert_type: str
    title: str
    summary: str
    device: str | None = None
    ticket_ref: str | None = None  # the monitoring tool's own ticket number (ATES TicketID)
    coalesce_window: float | None = None  # the rule's own window; None: the global one
    min_duration: float = 0.0  # the rule's minimum duration before a problem opens a ticket


@dataclass(frozen=True)
class ExpectHit:
    """A classified message satisfies one instance of an `[[expect]]` rule: `scope` is the
    alert key (per = "key"), the account (per = "account") or "" (per = "once")."""

    expectation: str
    scope: str
    account_id: str
    what: str


@dataclass(frozen=True)
class ExpectationRow:
    """One watched instance of an `[[expect]]` rule, as the store keeps it."""

    name: str
    scope: str
    account_id: str
    what: str
    last_seen_at: float | None
    judge_at: float
    state: str
    missing_since: float | None
    alert_key: str | None
    created_at: float


@dataclass(frozen=True)
class Classification:
    """The result of the rules: what the message is, and which rule said so.

    `steps` is the human-readable trace `simulate` prints: one line per precedence step.
    `rule` names the deciding rule as "file.toml:rule-name".
    """

    kind: Kind
    reason: str
    rule: str | None = None
    alert: Alert | None = None
    forward_to: str | None = None
    account_how: str | None = None
    steps: tuple[str, ...] = ()
    expected: tuple[ExpectHit, ...] = ()  # the [[expect]] instances this mail satisfies


# -- decide -> outbox -------------------------------------------------------------------------

OutboxKind = Literal["psa", "webhook", "smtp", "imap"]
PsaAction = Literal["OPEN", "UPDATE", "RESOLVED"]


@dataclass(frozen=True)
class TicketCall:
    """What a create, append or resolve says about the ticket, in the core's own words.

    decide and the storm logic build it, the store keeps it as an outbox row's payload (its
    snake_case fields, JSON), and only a ticketing target renders it in its wire names (the
    MSPCentric client: `alertType`, `accountId`, … in `deliver/psa.py`). Outbox rows written
    before this shape carried those wire names; migration 8 (`store/schema.py`) rewrote them.
    """

    title: str
    summary: str
    alert_type: str
    account_id: str
    product_group: str
    device: str | None = None

    @classmethod
    def of(cls, alert: Alert) -> TicketCall:
        return cls(alert.title, alert.summary, alert.alert_type, alert.account_id,
                   alert.product_group, alert.device or None)

    def payload(self) -> dict[str, str]:
        """The outbox row's payload (no `device` key when there is none)."""
        out = {"title": self.title, "summary": self.summary, "alert_type": self.alert_type,
               "account_id": self.account_id, "product_group": self.product_group}
        if self.device:
            out["device"] = self.device
        return out

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> TicketCall:
        """Read an outbox row's payload back; other keys (e.g. `target`) are ignored."""
        missing = [k for k in TICKET_FIELDS if payload.get(k) is None]
        if missing:
            raise ValueError(f"ticket call lacks {', '.join(missing)}")
        device = payload.get("device")
        return cls(title=str(payload["title"]), summary=str(payload["summary"]),
                   alert_type=str(payload["alert_type"]), account_id=str(payload["account_id"]),
                   product_group=str(payload["product_group"]),
                   device=str(device) if device else None)


TICKET_FIELDS = ("title", "summary", "alert_type", "account_id", "product_group")


@dataclass(frozen=True)
class OutboxItem:
    """One call to make, written to the outbox in the same transaction as the decision."""

    kind: OutboxKind
    ordering_key: str
    payload: Mapping[str, Any]
    action: str | None = None  # OPEN / UPDATE / RESOLVED for psa; "forward", "reply" for smtp
    correlation_id: str | None = None
    not_before: float | None = None  # held until then (coalescing window, resolve delay)


@dataclass(frozen=True)
class CorrelationView:
    """The open correlation of an alert key, as decide() sees it."""

    alert_key: str
    correlation_id: str
    opened_at: float
    occurrences: int = 1


@dataclass(frozen=True)
class PendingCall:
    """An outbox row of this alert key that has not been sent yet (storm control folds into
    it or cancels it)."""

    row_id: int
    action: str
    first_arrived_at: float
    occurrences: int
    due_at: float
    message_ref: int | None = None
    summary_chars: int = 0  # length of its summary so far (a storm append's list grows)
    correlation_id: str | None = None
    held_until: float | None = None  # the hold decided for it (arrival time + delay), if any


@dataclass(frozen=True)
class HeldOpen:
    """A new alert's OPEN still held (group wait of a burst, or a minimum duration): a storm
    that starts before it falls due takes it over, and the storm ticket lists it."""

    row_id: int
    alert_key: str
    correlation_id: str
    title: str
    alert_type: str
    product_group: str
    arrived_at: float
    due_at: float


@dataclass(frozen=True)
class ListedAlert:
    """An alert a storm ticket lists without owning it (it got its own ticket before)."""

    alert_key: str
    title: str
    alert_type: str
    correlation_id: str


@dataclass(frozen=True)
class AlertContext:
    """Everything decide() may know besides the alert, read in the deciding transaction."""

    arrived_at: float
    open_correlation: CorrelationView | None = None
    pending_update: PendingCall | None = None
    pending_resolve: PendingCall | None = None
    last_closed: CorrelationView | None = None
    storm_of_key: CorrelationView | None = None      # the storm ticket this key is grouped in
    storm_members_open: int = 0                      # grouped keys of that storm still firing
    open_storm: CorrelationView | None = None        # the account's open storm ticket
    storm_pending_update: PendingCall | None = None  # unsent append to that storm ticket
    new_alerts_account: int = 0                      # new alert keys of the account in window
    new_alerts_global: int = 0                       # of all accounts; counted only in a burst
    burst_alerts: int = 0                            # new alert keys of the group in burst_window
    held_open: PendingCall | None = None             # this key's OPEN, not sent yet
    held_opens: tuple[HeldOpen, ...] = ()            # the group's OPENs still held (bursts)
    own_tickets: tuple[ListedAlert, ...] = ()        # the group's own tickets in account_window
    storm_size: int = 0                              # keys listed on the storm ticket so far
    storm_routing: tuple[str, str] | None = None     # its (product group, alert type)


@dataclass(frozen=True)
class Decision:
    """What to do with one message.

    `outcome` is final now (skipped, regular, nothing-to-resolve, …) or None when the outcome
    depends on delivering `outbox` (created/appended/resolved/suppressed/failed are then set by
    the delivery worker). `open_correlation` is the correlationId of a new ticket to record as
    open for `alert_key`; `close_correlation` marks it closed (after a RESOLVED is queued).
    """

    reason: str
    outcome: Outcome | None = None
    outbox: tuple[OutboxItem, ...] = ()
    alert_key: str | None = None
    open_correlation: str | None = None
    close_correlation: str | None = None
    open_key: str | None = None            # the key of open_correlation when not alert_key
    fold_into: int | None = None           # outbox row this occurrence is folded into
    fold_note: str | None = None           # a line added to that row's summary (storms)
    cancel_row: int | None = None          # a pending resolve this re-fire cancels (flap)
    flush_row: int | None = None           # a held append to send now (a resolve follows it)
    storm_join: str | None = None          # storm correlationId this alert key joins
    storm_leave: str | None = None         # storm correlationId this alert key recovered in
    reopen: str | None = None              # a closed correlationId appended to again
    previous_id: str | None = None         # the closed ticket a new one follows
    fold_section: str | None = None        # the storm list section fold_note belongs in
    fold_title: str | None = None          # a new title for the row folded into (storm count)
    damp: str | None = None                # correlationId whose unsent calls are damped
    absorb: tuple[HeldOpen, ...] = ()      # held OPENs the storm ticket opened here takes over
