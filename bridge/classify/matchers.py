"""What a detect or skip rule matches: senders, subject phrases, conditions, an ATES source.

The RangerMSP rule is "sender and/or a word or phrase in the subject; both means AND". Here
each part may list several alternatives (any of them), and OpsRamp-style conditions and an
ATES token source may be added; all parts given must match. Senders are an exact address
(`nagios@monitor.example`), a whole domain (`@acme.example`, that domain only) or a wildcard
(`*@*.acme.example`). `index_keys` tells the rule index which cheap key every matching
message must have; `covers` tells the checker that one matcher accepts everything another does.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import Literal

from bridge.classify.conditions import ConditionGroup, FieldSource
from bridge.classify.reader import TableReader
from bridge.classify.regex import Regex
from bridge.classify.text import PhraseSet
from bridge.classify.view import MessageView

SenderKind = Literal["exact", "domain", "wildcard", "regex"]
INDEXED: tuple[SenderKind, ...] = ("exact", "domain")
_ADDR = re.compile(r"[^@\s]+@[^@\s]+")
_DOMAIN = re.compile(r"@[^@\s*?]+")


@dataclass(frozen=True)
class SenderPattern:
    text: str
    kind: SenderKind
    value: str  # exact address, bare domain, the wildcard pattern (lower case) or the regex
    regex: re.Pattern[str] | None = None  # a wildcard's translation
    pattern: Regex | None = None  # a regex sender

    @classmethod
    def parse(cls, text: str) -> "SenderPattern":
        value = text.strip().lower()
        if "*" in value or "?" in value:
            if value.startswith("@"):
                value = "*" + value
            if "@" not in value and value != "*":
                raise ValueError(f"sender wildcard {text!r} has no '@' (e.g. '*@*.example.com')")
            return cls(text, "wildcard", value, re.compile(fnmatch.translate(value)))
        if _DOMAIN.fullmatch(value):
            return cls(text, "domain", value[1:])
        if _ADDR.fullmatch(value):
            return cls(text, "exact", value)
        raise ValueError(f"sender {text!r} is not an address, '@domain' or a wildcard")

    @classmethod
    def of_regex(cls, pattern: Regex) -> "SenderPattern":
        return cls(f"regex {pattern.pattern!r}", "regex", pattern.pattern, pattern=pattern)

    def matches(self, view: MessageView) -> bool:
        if self.kind == "exact":
            return view.sender == self.value
        if self.kind == "domain":
            return view.domain == self.value
        if self.pattern is not None:
            return self.pattern.search(view.sender) is not None
        assert self.regex is not None
        return self.regex.match(view.sender) is not None

    def covers(self, other: "SenderPattern") -> bool:
        """Every sender `other` accepts, this accepts too (conservative: a regex covers an
        exact address it matches and the same regex; only the bare `*` covers a regex)."""
        if self.kind == "regex":
            assert self.pattern is not None
            return (other.kind == "exact" and self.pattern.search(other.value) is not None) \
                or (other.kind == "regex" and other.value == self.value)
        if self.kind == "wildcard":
            if other.kind == "exact":
                return self.regex is not None and self.regex.match(other.value) is not None
            if other.kind == "regex":
                return self.value == "*"
            local, _, dom = self.value.partition("@")
            if other.kind == "domain":
                return local == "*" and fnmatch.fnmatchcase(other.value, dom)
            return self.value == other.value or self.value in ("*", "*@*")
        if self.kind == "domain":
            return (other.kind == "domain" and other.value == self.value) or (
                other.kind == "exact" and other.value.rpartition("@")[2] == self.value)
        return other.kind == "exact" and other.value == self.value

    @property
    def literal_labels(self) -> int:
        """How many domain labels of a wildcard are literal: fewer than 2 is very broad."""
        dom = self.value.partition("@")[2] if "@" in self.value else ""
        return sum(1 for label in dom.split(".") if label and "*" not in label and "?" not in label)


@dataclass(frozen=True)
class Matcher:
    senders: tuple[SenderPattern, ...] = ()
    subject: PhraseSet = PhraseSet(())
    conditions: ConditionGroup | None = None
    ates_source: str | None = None  # "*" = any configured source
    gate: tuple[SenderPattern, ...] = ()  # v2 skip rule with a tool and its own sender

    @property
    def empty(self) -> bool:
        return not (self.senders or self.subject or self.conditions or self.ates_source)

    def match(self, view: MessageView) -> str | None:
        """A readable account of why the message matches, or None."""
        return self.check(view)[0]

    def check(self, view: MessageView, fields: FieldSource | None = None,
              conditions: bool = True) -> tuple[str | None, str]:
        """(why it matches, "") or (None, the first part that failed). Conditions read
        `fields` when given (a v2 rule's captures), else the view; `conditions=False` leaves
        them to the caller (v2 runs its captures first)."""
        why: list[str] = []
        if self.ates_source is not None:
            if view.token_source is None or (
                    self.ates_source != "*"
                    and view.token_source.casefold() != self.ates_source.casefold()):
                return None, f"no trusted ATES token from {self.ates_source!r}"
            why.append(f"ATES source {view.token_source!r}")
        if self.gate and not any(s.matches(view) for s in self.gate):
            return None, "sender is none of the tool's senders"
        if self.senders:
            hit = next((s for s in self.senders if s.matches(view)), None)
            if hit is None:
                return None, "sender is none of " + ", ".join(s.text for s in self.senders)
            why.append(f"sender {hit.text}")
        if self.subject:
            phrase = self.subject.search(view.fsubject)
            if phrase is None:
                return None, "subject has none of " + ", ".join(
                    repr(p.text) for p in self.subject.phrases)
            why.append(f"subject {phrase!r}")
        if conditions and self.conditions is not None:
            source = fields if fields is not None else view
            desc = self.conditions.test(source)
            if desc is None:
                return None, f"condition {self.conditions.first_failure(source)} failed"
            why.append(desc)
        return " AND ".join(why), ""

    def index_keys(self) -> tuple[str, tuple[str, ...]] | None:
        """('sender'|'domain'|'word', keys) such that every matching message has one of the
        keys — or None when the rule must be tried on every message (wildcard or regex
        senders, conditions only, phrases without a word). Exact and domain senders are indexed separately."""
        if self.senders and all(s.kind in INDEXED for s in self.senders):
            return ("sender", tuple(("=" if s.kind == "exact" else "@") + s.value
                                    for s in self.senders))
        if self.subject:
            firsts = tuple(p.first_word for p in self.subject.phrases)
            if all(firsts):
                return ("word", tuple(f for f in firsts if f))
        return None

    def covers(self, other: "Matcher") -> bool:
        """True when every message `other` matches is matched by this one (so a later rule
        with `other` is unreachable). Conservative: conditions are never compared."""
        if self.conditions is not None or self.empty:
            return False
        theirs = other.gate or other.senders
        if self.gate and not (theirs and all(any(a.covers(b) for a in self.gate)
                                             for b in theirs)):
            return False
        if self.ates_source is not None and not (
                other.ates_source is not None and self.ates_source in ("*", other.ates_source)):
            return False
        if self.senders:
            if not other.senders or not all(any(a.covers(b) for a in self.senders)
                                            for b in other.senders):
                return False
        if self.subject:
            if not other.subject or not all(any(a.within(b) for a in self.subject.phrases)
                                            for b in other.subject.phrases):
                return False
        return True


def read_senders(r: TableReader, key: str = "sender") -> tuple[SenderPattern, ...]:
    """`sender`: a string, a `{ regex = "…" }` table, or a list mixing both (any of them)."""
    value = r.table.get(key)
    if value is None:
        return ()
    senders: list[SenderPattern] = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, str) and item.strip():
            try:
                senders.append(SenderPattern.parse(item))
            except ValueError as exc:
                r.problem(str(exc), key)
        elif isinstance(item, dict) and set(item) == {"regex"} and isinstance(
                item["regex"], str) and item["regex"].strip():
            pattern = r.compile(key, item["regex"])
            if pattern is not None:
                senders.append(SenderPattern.of_regex(pattern))
        else:
            r.problem(f"{key} must be a string or a list of strings (address, '@domain', "
                      "wildcard) and { regex = \"…\" } tables", key)
    return tuple(senders)
