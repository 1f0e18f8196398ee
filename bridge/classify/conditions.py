"""OpsRamp-style conditions (seed 004): `field` `op` `value`, combined with match any/all.

Fields: subject, sender, sender_name, body, to, `header:<Name>` (any header), and the fields
of a trusted ATES token: token.id, token.customer_id, token.device_id, token.alert_id,
token.ticket_id, token.source. Operators: contains, not_contains, equals, not_equals,
starts_with, ends_with, regex — case-insensitive unless the condition is compiled with
`case_sensitive=True` (v2's per-condition key; OpsRamp's "Not Contains" and
"not-contains" spellings are accepted too). A field with several values (a repeated header,
several recipients) satisfies a positive operator when any value does, and a negated operator
when no value satisfies its positive form; an absent field behaves as the empty string.
Regexes run in order on every message that reaches them: they are the expensive part (on RE2,
linear in the text; bridge/classify/regex.py).
v2 (issue 16) adds nested `{ all = [...] }` / `{ any = [...] }` groups, `case_sensitive = true`
per condition, and every field of the v2 namespace (captures, `header.<Name>` …) through the
rule's RuleFields, which answers `values()` like the view does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Union

from bridge.classify.captures import Pattern, compile_regex
from bridge.classify.text import fold, nfc
from bridge.classify.view import TOKEN_FIELDS, FIELDS

_Test = Callable[[str, str], bool]

# Positive operators on folded (or, case-sensitive, NFC) text; each negation is "not any value satisfies the positive".
OPERATORS: dict[str, tuple[_Test | None, bool]] = {
    "contains": (lambda v, x: x in v, False),
    "not_contains": (lambda v, x: x in v, True),
    "equals": (lambda v, x: v == x, False),
    "not_equals": (lambda v, x: v == x, True),
    "starts_with": (lambda v, x: v.startswith(x), False),
    "ends_with": (lambda v, x: v.endswith(x), False),
    "regex": (None, False),
}


def canonical_operator(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").replace("_", " ").split())


def valid_field(field: str) -> bool:
    if field in FIELDS:
        return True
    if field.startswith("header:"):
        return bool(field[7:].strip()) and ":" not in field[7:]
    if field.startswith("token."):
        return field[6:] in TOKEN_FIELDS
    return False


class FieldSource(Protocol):
    """The view (v1 fields) or a v2 rule's RuleFields."""

    def values(self, field: str) -> tuple[str, ...]: ...

    def folded_values(self, field: str) -> tuple[str, ...]: ...


FIELD_HELP = ("subject, sender, sender_name, body, to, header:<Name>, or token.<"
              + "|".join(TOKEN_FIELDS) + ">")


@dataclass(frozen=True)
class Condition:
    """One compiled condition."""

    field: str
    op: str
    value: str
    folded: str
    regex: Pattern | None = None
    case_sensitive: bool = False

    @classmethod
    def compile(cls, field: str, op: str, value: str, *, case_sensitive: bool = False,
                valid: Callable[[str], bool] | None = None, help: str = FIELD_HELP
                ) -> "Condition":
        """Raises ValueError with an admin-readable reason. `valid` replaces v1's field
        check (v2 passes its namespace, captures included)."""
        field = field.strip()
        low = field.lower()
        if low.startswith("header:") or (valid is not None and low.startswith("header.")):
            field = "header:" + field[7:].strip()
        elif valid is None or not valid(field):
            field = low
        if not (valid or valid_field)(field):
            raise ValueError(f"unknown field {field!r}: use {help}")
        canon = canonical_operator(op)
        if canon not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}: use " + ", ".join(OPERATORS))
        regex = None
        if canon == "regex":
            try:
                regex = compile_regex(value, case_sensitive)
            except Exception as exc:  # re.error, or the RE2 layer's error
                raise ValueError(f"bad regex {value!r}: {exc}") from None
        needle = value if canon == "regex" else nfc(value) if case_sensitive else fold(value)
        return cls(field, canon, value, needle, regex, case_sensitive)

    def test(self, view: FieldSource) -> bool:
        if self.regex is not None:
            values = view.values(self.field) or ("",)
            return any(self.regex.search(v) for v in values)
        positive, negated = OPERATORS[self.op]
        assert positive is not None
        values = (tuple(nfc(v) for v in view.values(self.field)) if self.case_sensitive
                  else view.folded_values(self.field)) or ("",)
        hit = any(positive(v, self.folded) for v in values)
        return not hit if negated else hit

    def describe(self) -> str:
        case = " (case-sensitive)" if self.case_sensitive else ""
        return f"{self.field} {self.op} {self.value!r}{case}"

    def first_failure(self, view: FieldSource) -> str | None:
        return None if self.test(view) else self.describe()


@dataclass(frozen=True)
class ConditionGroup:
    """Conditions (or nested groups) joined by all (default) or any."""

    conditions: tuple[Union[Condition, "ConditionGroup"], ...]
    match_any: bool = False

    def test(self, view: FieldSource) -> str | None:
        """A description of what matched, or None."""
        if self.match_any:
            for c in self.conditions:
                if isinstance(c, ConditionGroup):
                    found = c.test(view)
                    if found is not None:
                        return found
                elif c.test(view):
                    return c.describe()
            return None
        parts = []
        for c in self.conditions:
            if isinstance(c, ConditionGroup):
                found = c.test(view)
                if found is None:
                    return None
                parts.append(f"({found})")
            elif not c.test(view):
                return None
            else:
                parts.append(c.describe())
        return " AND ".join(parts)

    def first_failure(self, view: FieldSource) -> str | None:
        """What made the group fail (for `simulate --explain`), or None when it holds."""
        if self.test(view) is not None:
            return None
        if self.match_any:
            return "none of: " + "; ".join(self.describe_each())
        for c in self.conditions:
            failed = c.first_failure(view)
            if failed is not None:
                return failed
        return None

    def describe_each(self) -> list[str]:
        return [c.describe() for c in self.conditions]

    def describe(self) -> str:
        joiner = " OR " if self.match_any else " AND "
        return "(" + joiner.join(self.describe_each()) + ")"

    @property
    def depth(self) -> int:
        return 1 + max((c.depth for c in self.conditions if isinstance(c, ConditionGroup)),
                       default=0)

    @property
    def has_regex(self) -> bool:
        return any(c.has_regex if isinstance(c, ConditionGroup) else c.regex is not None
                   for c in self.conditions)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(f for c in self.conditions
                         for f in (c.fields if isinstance(c, ConditionGroup) else (c.field,)))
