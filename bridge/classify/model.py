"""The rule classes: one small class per table name of a rule file (imapautofiler style).

The loader's `RULE_KINDS` maps each TOML table name — `[[detect]]`, `[[skip]]` here and
`[[account]]` in account_rule.py — to its class. Each class's docstring and `KEYS` document
the keys it accepts, and `read()` builds a compiled, immutable rule from one table, reporting
every problem through the TableReader. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bridge.classify.conditions import Condition, ConditionGroup
from bridge.classify.matchers import Matcher, read_senders
from bridge.classify.reader import TableReader
from bridge.classify.regex import Regex
from bridge.classify.templates import Template
from bridge.classify.view import BodyChoice
from bridge.classify.text import PhraseSet
from bridge.models import Status

if TYPE_CHECKING:
    from bridge.classify.captures import Capture
    from bridge.classify.fieldmap import FieldMap
    from bridge.classify.status import StatusSpec

# Used when no [status] table exists. Whole-word, case-insensitive: "OK" never matches "BOOK".
DEFAULT_RESOLVED = ("RECOVERY", "RECOVERED", "Resolved", "OK", "Success", "Succeeded",
                    "Self Healed", "is back online", "is UP", "Cleared")
DEFAULT_UPDATE = ("ACKNOWLEDGEMENT", "Acknowledged", "Reminder", "Escalation")

_MATCH_KEYS = {
    "name": "unique name of the rule, shown in traces and the audit trail (required)",
    "sender": "sender address, '@domain', wildcard '*@*.example.com' or { regex = '…' }; "
              "or a list (any)",
    "subject": "word or phrase that must appear in the subject; or a list (any)",
    "conditions": "list of { field, op, value } tables (OpsRamp style)",
    "match": "'all' (default) or 'any': how conditions combine",
    "ates_source": "matches mail with a trusted ATES token from this source ('*': any)",
}


@dataclass(frozen=True)
class StatusPhrases:
    """Which phrases make an occurrence open, resolved or an update (checked in that order)."""

    open: PhraseSet
    resolved: PhraseSet
    update: PhraseSet

    def decide(self, folded_text: str) -> tuple[Status, str | None]:
        checks: tuple[tuple[Status, PhraseSet], ...] = (
            ("open", self.open), ("resolved", self.resolved), ("update", self.update))
        for status, phrases in checks:
            hit = phrases.search(folded_text)
            if hit is not None:
                return status, hit
        return "open", None

    def strip(self, folded_text: str) -> str:
        for phrases in (self.open, self.resolved, self.update):
            folded_text = phrases.remove(folded_text)
        return folded_text


DEFAULT_STATUS = StatusPhrases(PhraseSet(()), PhraseSet.of(DEFAULT_RESOLVED),
                               PhraseSet.of(DEFAULT_UPDATE))


def read_status(r: TableReader, base: StatusPhrases) -> tuple[StatusPhrases, bool]:
    """Each list given replaces the corresponding list of `base`; True if any was given."""
    open_, resolved, update = (r.phrases(k) for k in ("open", "resolved", "update"))
    own = any(v is not None for v in (open_, resolved, update))
    return StatusPhrases(open_ if open_ is not None else base.open,
                         resolved if resolved is not None else base.resolved,
                         update if update is not None else base.update), own


def read_matcher(r: TableReader, v2: ConditionGroup | None | bool = False) -> Matcher:
    """v1: conditions read here and an empty matcher is an error. v2 passes its conditions
    (a ConditionGroup, or None) and judges emptiness itself."""
    senders = read_senders(r)
    subject = PhraseSet.of(r.texts("subject"))
    group = None if v2 is False or v2 is True else v2
    raw = r.table.get("conditions") if v2 is False else None
    match_any = r.choice("match", ("all", "any"), "all") == "any" if v2 is False else False
    if raw is not None:
        conds = []
        if not isinstance(raw, list) or not raw:
            r.problem("conditions must be a non-empty list of { field, op, value }", "conditions")
            raw = []
        for i, c in enumerate(raw, start=1):
            op = c.get("op", c.get("operator")) if isinstance(c, dict) else None
            if not isinstance(c, dict) or set(c) - {"field", "op", "operator", "value"} or \
                    not all(isinstance(c.get(k), str) for k in ("field", "value")) or \
                    not isinstance(op, str):
                r.problem(f"condition {i} must be {{ field = \"…\", op = \"…\", value = \"…\" }}",
                          "conditions")
                continue
            try:
                cond = Condition.compile(c["field"], op, c["value"])
            except ValueError as exc:
                r.problem(f"condition {i}: {exc}", "conditions")
                continue
            if cond.regex is not None:
                r.warn_fallback("conditions", cond.regex, f"condition {i}")
            conds.append(cond)
        group = ConditionGroup(tuple(conds), match_any) if conds else None
    elif "match" in r.table and v2 is False:
        r.problem("match only applies to conditions, and this rule has none", "match", "warning")
    source = r.text("ates_source")
    matcher = Matcher(senders, subject, group, source)
    if matcher.empty and r.errors == 0 and v2 is False:
        r.problem("matches nothing: give sender, subject, conditions or ates_source")
    return matcher


@dataclass(frozen=True)
class Rule:
    NAME: ClassVar[str] = ""
    KEYS: ClassVar[dict[str, str]] = {}
    name: str
    file: str
    line: int | None

    @property
    def label(self) -> str:
        return f"{self.file}:{self.name}"


@dataclass(frozen=True)
class DetectRule(Rule):
    """`[[detect]]` — recognises automated mail and says what ticket it becomes.

    Match keys (all given must match; a list means any of its items): `sender`, `subject`,
    `conditions` + `match`, `ates_source`. Routing: `product_group` and `alert_type`
    (required, from the catalogue), `title` (default "{subject}"), `summary` (default
    "{body}"), `device`. Identity: `key` (template), `key_regex` (regex on the subject; its
    captures make the key), `subject_regex`/`body_regex` (named captures become fields).
    Status: `open`, `resolved`, `update` phrase lists (each replaces the global one) searched
    in `status_in` = "subject" (default), "body" or "both". `require_authentication = true`
    rejects mail whose sender is not authenticated. `coalesce_window` (seconds) overrides the
    global coalescing window of `[storm]` for this rule's alerts; `min_duration` (seconds) holds
    a new problem that long before it opens a ticket, and a recovery within it opens nothing.
    """

    NAME: ClassVar[str] = "detect"
    KEYS: ClassVar[dict[str, str]] = {
        **_MATCH_KEYS,
        "product_group": "product group from the catalogue (required)",
        "alert_type": "alert type of that product group (required)",
        "title": "ticket title template (default '{subject}')",
        "summary": "ticket summary template (default '{body}')",
        "device": "device template, e.g. '{host}' (an ATES DeviceID wins)",
        "key": "alert key template, e.g. 'nagios:{account}:{host}:{service}'",
        "key_regex": "regex on the subject whose captures identify the alert",
        "subject_regex": "regex (or list) on the subject; named groups become fields",
        "body_regex": "regex (or list) on the body; named groups become fields",
        "open": "phrases that mean a new problem (checked first)",
        "resolved": "phrases that mean the problem healed",
        "update": "phrases that mean more news about an open problem",
        "status_in": "where status phrases are searched: subject (default), body, both",
        "require_authentication": "true: reject mail whose sender is not authenticated",
        "coalesce_window": "seconds: repeats within it become one append (default: [storm])",
        "min_duration": "seconds a problem must last before it opens a ticket (default 0)",
    }
    matcher: Matcher = Matcher()
    product_group: str = ""
    alert_type: str = ""
    title: Template = Template.parse("{subject}")
    summary: Template = Template.parse("{body}")
    device: Template | None = None
    key: Template | None = None
    key_regex: Regex | None = None
    subject_regex: tuple[Regex, ...] = ()
    body_regex: tuple[Regex, ...] = ()
    status: StatusPhrases = DEFAULT_STATUS
    own_status: bool = False
    status_in: str = "subject"
    require_authentication: bool = False
    coalesce_window: float | None = None
    min_duration: float = 0.0
    # v2 (format = 2; docs/rules-v2-format.md). A v1 rule leaves them at these values.
    version: int = 1
    tool: str = ""
    body: BodyChoice = "text"
    captures: tuple["Capture", ...] = ()  # the tool's, then the rule's (incl. *_regex)
    require: frozenset[str] = frozenset()
    keys: tuple[Template, ...] = ()       # most specific first
    alert_type_map: "FieldMap | None" = None
    product_group_map: "FieldMap | None" = None
    spec: "StatusSpec | None" = None

    def index_keys(self) -> tuple[str, tuple[str, ...]] | None:
        return self.matcher.index_keys()

    @property
    def capture_names(self) -> frozenset[str]:
        regexes = (*self.subject_regex, *self.body_regex,
                   *((self.key_regex,) if self.key_regex is not None else ()))
        return frozenset(n for rx in regexes for n in rx.groupindex) | frozenset(
            n for c in self.captures for n in c.names)

    @property
    def can_resolve(self) -> bool:
        return self.spec.can_resolve if self.spec is not None else bool(self.status.resolved)

    @classmethod
    def read(cls, r: TableReader, status: StatusPhrases) -> "DetectRule":
        rule_status, own = read_status(r, status)
        return cls(
            name=r.label, file=r.rule_file, line=r.line(), matcher=read_matcher(r),
            product_group=r.text("product_group", required=True) or "",
            alert_type=r.text("alert_type", required=True) or "",
            title=r.template("title", "{subject}") or Template.parse("{subject}"),
            summary=r.template("summary", "{body}") or Template.parse("{body}"),
            device=r.template("device"), key=r.template("key"),
            key_regex=r.regex("key_regex"), subject_regex=r.regexes("subject_regex"),
            body_regex=r.regexes("body_regex"), status=rule_status, own_status=own,
            status_in=r.choice("status_in", ("subject", "body", "both"), "subject"),
            require_authentication=r.flag("require_authentication"),
            coalesce_window=r.seconds("coalesce_window"),
            min_duration=r.seconds("min_duration") or 0.0)


@dataclass(frozen=True)
class SkipRule(Rule):
    """`[[skip]]` — automated mail that should not become a ticket (status noise, "Self
    Healed"). Same match keys as `[[detect]]`; `forward_to` names the address the skipped
    message is forwarded to (default: the configured internal address)."""

    NAME: ClassVar[str] = "skip"
    KEYS: ClassVar[dict[str, str]] = {**_MATCH_KEYS,
                                      "forward_to": "address to forward skipped mail to"}
    matcher: Matcher = Matcher()
    forward_to: str | None = None
    version: int = 1
    tool: str = ""
    body: BodyChoice = "text"
    captures: tuple["Capture", ...] = ()
    only_tool: str | None = None  # a tool without senders: only mail it detected

    def index_keys(self) -> tuple[str, tuple[str, ...]] | None:
        return self.matcher.index_keys()

    @classmethod
    def read(cls, r: TableReader, status: StatusPhrases) -> "SkipRule":
        forward = r.text("forward_to")
        if forward is not None and "@" not in forward:
            r.problem(f"forward_to {forward!r} is not an e-mail address", "forward_to")
        return cls(name=r.label, file=r.rule_file, line=r.line(), matcher=read_matcher(r),
                   forward_to=forward)


STATUS_KEYS = {"open": "global open phrases", "resolved": "global resolved phrases",
               "update": "global update phrases"}
