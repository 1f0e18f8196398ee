"""Title, summary, device and key templates: `{field}` placeholders over message fields.

Deliberately not `str.format`: that would let a rule file reach object attributes
(`{0.__class__}`). A template is split into literal text and field names once, at load, so a
typo in a field name is a load error that names the rule, and rendering is a join that cannot
fail. `{{` and `}}` stand for literal braces.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

# Fields every alert offers; rules add the named groups of their own regexes.
BUILTIN_FIELDS = frozenset({
    "subject", "sender", "sender_name", "body", "date", "message_id", "account",
    "account_name", "device", "alert_type", "product_group", "status", "rule",
    "token_source", "token_customer_id", "token_device_id", "token_alert_id",
    "token_ticket_id",
})

_PART = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
# v2 adds `header.<Name>` (a header name is printable ASCII without ':'; no braces here).
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|header\.[!-9;-z|~]+")


class FieldValues(Protocol):
    """What a template renders from: a dict of fields, or a v2 rule's RuleFields."""

    def get(self, key: str, default: str, /) -> str: ...


class TemplateError(ValueError):
    pass


@dataclass(frozen=True)
class Template:
    """A parsed template: literal strings and field names, alternating."""

    source: str
    parts: tuple[tuple[bool, str], ...]  # (is_field, text)

    @classmethod
    def parse(cls, source: str) -> "Template":
        parts: list[tuple[bool, str]] = []
        pos = 0
        literal: list[str] = []
        for m in _PART.finditer(source):
            literal.append(source[pos:m.start()])
            pos = m.end()
            token = m.group(0)
            if token == "{{":
                literal.append("{")
            elif token == "}}":
                literal.append("}")
            elif token in ("{", "}"):
                raise TemplateError(f"unbalanced {token!r} in template {source!r} "
                                    "(write {{ or }} for a literal brace)")
            else:
                name = (m.group(1) or "").strip()
                if not _NAME.fullmatch(name):
                    raise TemplateError(f"{{{m.group(1)}}} is not a field name")
                parts.append((False, "".join(literal)))
                literal = []
                parts.append((True, name))
        literal.append(source[pos:])
        parts.append((False, "".join(literal)))
        return cls(source, tuple(p for p in parts if p[0] or p[1]))

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(text for is_field, text in self.parts if is_field)

    def render(self, values: FieldValues) -> str:
        return "".join(values.get(text, "") if is_field else text
                       for is_field, text in self.parts)

    def missing(self, values: FieldValues) -> list[str]:
        """Fields this template uses that are empty for this message."""
        return sorted(f for f in self.fields if not values.get(f, ""))
