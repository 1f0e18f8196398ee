"""`[[expect]]` rules: mail that must arrive, and when (issue 20).

An expectation names the mail it waits for — a detect or skip rule by name, or match keys of
its own (sender, subject, conditions) — and a schedule: every N hours after the last one, or
daily at HH:MM in a time zone (on given weekdays), each with a grace period. Expectations are
per alert key (one per backup job seen), per account, or one for the whole rule.

Everything here is pure: reading the table, matching a classified message, and the schedule
arithmetic (`Schedule.judge_at`). The store keeps the deadlines; bridge/decide/expectations.py
turns a passed deadline into a synthetic alert that goes through the one decide path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time as dtime, timedelta
from typing import ClassVar, Literal, Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bridge.classify.checks import check_catalogue
from bridge.classify.matchers import Matcher
from bridge.classify.model import Rule, StatusPhrases, read_matcher
from bridge.classify.reader import TableReader
from bridge.classify.templates import Template, TemplateError
from bridge.classify.view import MessageView
from bridge.models import Classification, ExpectHit, Kind

Per = Literal["key", "account", "once"]
PER: dict[str, Per] = {"key": "key", "account": "account", "once": "once"}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_HHMM = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")
TITLE_FIELDS = frozenset({"expectation", "account", "what", "last_seen", "due", "scope"})
DEFAULT_TITLE = "Expected mail missing: {account} / {what}, last seen {last_seen}"


def parse_duration(value: object) -> float | None:
    """Seconds from 3600, "90m", "12h", "7d" or "2w"; None when it is not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    m = _DURATION.match(value)
    return float(m.group(1)) * _UNIT[m.group(2).lower()] if m else None


@dataclass(frozen=True)
class Schedule:
    """When the next report is due. `every`: seconds after the last one. Otherwise `daily`
    slots at `at` (local time of `zone`) on `weekdays`; a report counts for the first slot
    whose grace has not yet ended when it arrives, so one a little late still counts for its
    own day, and the next judgement is the following slot plus the grace."""

    grace: float
    every: float | None = None
    at: dtime | None = None
    zone: str = "UTC"
    weekdays: frozenset[int] = frozenset(range(7))

    def _slots_from(self, t: float) -> "list[float]":
        assert self.at is not None
        tz = ZoneInfo(self.zone)
        day = datetime.fromtimestamp(t, tz).date() - timedelta(days=1)
        out: list[float] = []
        for i in range(16):  # at least two slots of any non-empty weekday set
            d = day + timedelta(days=i)
            if d.weekday() in self.weekdays:
                # fold=0 and zoneinfo: a slot in a DST gap moves forward, one in the
                # repeated hour takes its first occurrence — the wall clock's meaning.
                local = datetime.combine(d, self.at, tzinfo=tz)
                out.append(local.timestamp())
        return out

    def judge_at(self, seen_at: float) -> float:
        """The instant a missing report is declared, for a report (or a start) at `seen_at`."""
        if self.every is not None:
            return seen_at + self.every + self.grace
        slots = [s for s in self._slots_from(seen_at - self.grace) if s + self.grace >= seen_at]
        # slots[0] is the slot this report answers; the next one is what we wait for now.
        return slots[1] + self.grace

    def describe(self) -> str:
        if self.every is not None:
            return f"every {_human(self.every)}, grace {_human(self.grace)}"
        days = "daily" if len(self.weekdays) == 7 else ",".join(
            WEEKDAYS[d] for d in sorted(self.weekdays))
        assert self.at is not None
        return f"{days} at {self.at.strftime('%H:%M')} {self.zone}, grace {_human(self.grace)}"


def _human(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@dataclass(frozen=True)
class ExpectRule(Rule):
    """`[[expect]]` — mail that must keep arriving; a ticket when it does not.

    What: `rule` (a detect or skip rule's name, or a list) or match keys of its own (`sender`,
    `subject`, `conditions`). When: `every` ("24h") or `daily` ("06:00") with `timezone`
    (default UTC) and `weekdays` (default all); `grace` ("1h" default). Scope: `per = "key"`
    (default: one per alert key seen), `"account"` or `"once"`; `account` fixes the account
    (and makes the expectation exist from the start). Ticket: `product_group`, `alert_type`
    (required), `title`. Per-key and per-account expectations end after `expire_after` of
    silence (default 30d).
    """

    NAME: ClassVar[str] = "expect"
    KEYS: ClassVar[dict[str, str]] = {
        "name": "unique name of the expectation (required)",
        "rule": "detect or skip rule(s) whose mail is expected, by name",
        "sender": "sender address, '@domain' or wildcard; or a list (any)",
        "subject": "word or phrase that must appear in the subject; or a list (any)",
        "conditions": "list of { field, op, value } tables (OpsRamp style)",
        "match": "'all' (default) or 'any': how conditions combine",
        "every": "a report at most this long after the last one, e.g. '24h'",
        "daily": "a report every day by this local time, 'HH:MM'",
        "timezone": "time zone of daily (IANA name, default UTC)",
        "weekdays": "days daily applies to, e.g. ['mon','tue','wed','thu','fri']",
        "grace": "how late a report may be before it counts as missing (default '1h')",
        "per": "key (default), account or once",
        "account": "account of the expectation (required for per = 'once' without mail)",
        "product_group": "product group of the missing-mail ticket (required)",
        "alert_type": "alert type of the missing-mail ticket (required)",
        "title": "ticket title; fields " + ", ".join(sorted(TITLE_FIELDS)),
        "expire_after": "forget a per-key/per-account expectation after this silence",
    }
    rules: tuple[str, ...] = ()
    matcher: Matcher = Matcher()
    schedule: Schedule = Schedule(grace=3600.0, every=86400.0)
    per: Per = "key"
    account: str | None = None
    product_group: str = ""
    alert_type: str = ""
    title: Template = Template.parse(DEFAULT_TITLE)
    expire_after: float = 30 * 86400.0

    def hit(self, c: Classification, view: MessageView) -> ExpectHit | None:
        """The expectation instance this classified message satisfies, if any."""
        if self.rules:
            short = (c.rule or "").rpartition(":")[2]
            if short not in self.rules:
                return None
        elif self.matcher.match(view) is None:
            return None
        alert = c.alert
        account = alert.account_id if alert is not None else self.account
        if self.per == "key":
            if alert is None:
                return None
            scope, what = alert.alert_key, alert.title
        elif self.per == "account":
            if account is None:
                return None
            scope, what = account, self.name
        else:
            scope, what = "", self.name
        if self.account is not None and account != self.account:
            return None
        return ExpectHit(self.name, scope, account or "", what[:200])

    @classmethod
    def read(cls, r: TableReader, status: StatusPhrases) -> "ExpectRule":
        rules = r.texts("rule")
        own = any(k in r.table for k in ("sender", "subject", "conditions"))
        if rules and own:
            r.problem("give either rule or match keys (sender, subject, conditions), not both")
        matcher = read_matcher(r) if not rules else Matcher()
        grace = parse_duration(r.table.get("grace", "1h"))
        if grace is None:
            r.problem("grace must be a duration such as '30m', '2h' or 3600", "grace")
            grace = 3600.0
        schedule = _read_schedule(r, grace)
        per = PER[r.choice("per", tuple(PER), "key")]
        account = r.text("account")
        expire = parse_duration(r.table.get("expire_after", "30d"))
        if expire is None or expire <= 0:
            r.problem("expire_after must be a positive duration such as '30d'", "expire_after")
            expire = 30 * 86400.0
        title_src = r.text("title") or DEFAULT_TITLE
        try:
            title = Template.parse(title_src)
            unknown = title.fields - TITLE_FIELDS
            if unknown:
                r.problem(f"title uses unknown fields {', '.join(sorted(unknown))}; use "
                          + ", ".join(sorted(TITLE_FIELDS)), "title")
        except TemplateError as exc:
            r.problem(str(exc), "title")
            title = Template.parse(DEFAULT_TITLE)
        return cls(name=r.label, file=r.rule_file, line=r.line(), rules=rules, matcher=matcher,
                   schedule=schedule, per=per, account=account,
                   product_group=r.text("product_group", required=True) or "",
                   alert_type=r.text("alert_type", required=True) or "", title=title,
                   expire_after=expire)


def _read_schedule(r: TableReader, grace: float) -> Schedule:
    every, daily = r.table.get("every"), r.table.get("daily")
    if (every is None) == (daily is None):
        r.problem("give exactly one of every ('24h') or daily ('06:00')",
                  "every" if every is not None else None)
        return Schedule(grace=grace, every=86400.0)
    if every is not None:
        seconds = parse_duration(every)
        if seconds is None or seconds < 60:
            r.problem("every must be a duration of a minute or more, e.g. '4h'", "every")
            seconds = 86400.0
        for key in ("timezone", "weekdays"):
            if key in r.table:
                r.problem(f"{key} only applies to daily", key)
        return Schedule(grace=grace, every=seconds)
    m = _HHMM.match(daily) if isinstance(daily, str) else None
    if m is None:
        r.problem("daily must be a time 'HH:MM' (24-hour clock)", "daily")
        at = dtime(0, 0)
    else:
        at = dtime(int(m.group(1)), int(m.group(2)))
    zone = r.text("timezone") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        r.problem(f"unknown time zone {zone!r} (an IANA name such as 'Europe/Berlin')",
                  "timezone")
        zone = "UTC"
    days = r.texts("weekdays")
    bad = [d for d in days if d.lower()[:3] not in WEEKDAYS]
    if bad:
        r.problem(f"unknown weekdays {', '.join(bad)}: use {', '.join(WEEKDAYS)}", "weekdays")
    chosen = frozenset(WEEKDAYS.index(d.lower()[:3]) for d in days
                       if d.lower()[:3] in WEEKDAYS) or frozenset(range(7))
    return Schedule(grace=grace, at=at, zone=zone, weekdays=chosen)


def check_expect(loaded: list[tuple[ExpectRule, TableReader]], detect: frozenset[str],
                 skip: frozenset[str], catalogue: Mapping[str, frozenset[str]]) -> None:
    """Named rules exist, the ticket routing is in the catalogue, a fixed account is real
    enough to route (per = "once" with neither mail of an account nor `account` cannot)."""
    for rule, r in loaded:
        check_catalogue(rule.product_group, rule.alert_type, r, catalogue)
        for name in rule.rules:
            if name not in detect and name not in skip:
                r.problem(f"rule {name!r} is no [[detect]] or [[skip]] rule", "rule")
            elif name in skip and rule.per != "once" and rule.account is None:
                r.problem(f"{name!r} is a skip rule: skipped mail has no alert key or "
                          "account, so use per = \"once\" with an account", "per")
        if rule.per == "once" and rule.account is None and not any(n in detect
                                                                    for n in rule.rules):
            r.problem("per = \"once\" needs an account: only a detect rule's mail brings "
                      "one", "account")
        if rule.per == "key" and not rule.rules and rule.account is None:
            r.problem("per = \"key\" expectations begin with the first matching alert; "
                      "mail that is skipped never starts one", severity="warning")


def hits(rules: tuple[ExpectRule, ...], c: Classification,
         view: MessageView) -> tuple[ExpectHit, ...]:
    """Every expectation a classified message satisfies. Rejected and quarantined mail never
    counts: a forged report must not keep a dead job looking alive."""
    if c.kind not in (Kind.ALERT, Kind.SKIPPED, Kind.UNMATCHED):
        return ()
    found = (rule.hit(c, view) for rule in rules)
    return tuple(h for h in found if h is not None)
