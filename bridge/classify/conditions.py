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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable

from bridge.classify.regex import Regex, compile_regex
from bridge.classify.text import fold, nfc
from bridge.classify.view import TOKEN_FIELDS, FIELDS, MessageView

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


FIELD_HELP = ("subject, sender, sender_name, body, to, header:<Name>, or token.<"
              + "|".join(TOKEN_FIELDS) + ">")


@dataclass(frozen=True)
class Condition:
    """One compiled condition."""

    field: str
    op: str
    value: str
    folded: str  # the value as compared: case-folded NFC, or NFC when case-sensitive
    regex: Regex | None = None
    case_sensitive: bool = False

    @classmethod
    def compile(cls, field: str, op: str, value: str, case_sensitive: bool = False
                ) -> "Condition":
        """Raises ValueError with an admin-readable reason."""
        field = field.strip()
        if field.lower().startswith("header:"):
            field = "header:" + field[7:].strip()
        else:
            field = field.lower()
        if not valid_field(field):
            raise ValueError(f"unknown field {field!r}: use {FIELD_HELP}")
        canon = canonical_operator(op)
        if canon not in OPERATORS:
            raise ValueError(f"unknown operator {op!r}: use " + ", ".join(OPERATORS))
        if canon == "regex":
            try:
                regex = compile_regex(value, case_sensitive=case_sensitive)
            except re.error as exc:
                raise ValueError(f"bad regex {value!r}: {exc}") from None
            return cls(field, canon, value, value, regex, case_sensitive)
        compared = nfc(value) if case_sensitive else fold(value)
        return cls(field, canon, value, compared, None, case_sensitive)

    def test(self, view: MessageView) -> bool:
        if self.regex is not None:
            values = view.values(self.field) or ("",)
            return any(self.regex.search(v) for v in values)
        positive, negated = OPERATORS[self.op]
        assert positive is not None
        # Folding only when insensitive: "CRIT" must not equal "crit" when the case matters.
        values = (view.values(self.field) if self.case_sensitive
                  else view.folded_values(self.field)) or ("",)
        hit = any(positive(v, self.folded) for v in values)
        return not hit if negated else hit

    def describe(self) -> str:
        case = " (case-sensitive)" if self.case_sensitive else ""
        return f"{self.field} {self.op} {self.value!r}{case}"


@dataclass(frozen=True)
class ConditionGroup:
    """Conditions joined by `match = "all"` (default) or `"any"`."""

    conditions: tuple[Condition, ...]
    match_any: bool = False

    def test(self, view: MessageView) -> str | None:
        """A description of what matched, or None."""
        if self.match_any:
            for c in self.conditions:
                if c.test(view):
                    return c.describe()
            return None
        for c in self.conditions:
            if not c.test(view):
                return None
        return " AND ".join(c.describe() for c in self.conditions)

    @property
    def has_regex(self) -> bool:
        return any(c.regex is not None for c in self.conditions)
