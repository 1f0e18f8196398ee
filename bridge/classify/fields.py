"""The v2 field namespace: one name space for conditions, templates, captures and status.

A `RuleFields` is made per (message, rule) while a v2 rule is evaluated: the message's own
fields (through the shared MessageView, so nothing is normalised twice), `header.<Name>`, the
trusted token's fields, the rule's captures, and — once decided — account, device, status,
alert type and product group. Templates read it through `get` (a missing field renders as "",
the documented fallback); conditions read every value of a field through `values()`.
"""

from __future__ import annotations

import re
from typing import Callable

from bridge.classify.templates import BUILTIN_FIELDS
from bridge.classify.text import nfc
from bridge.classify.view import BodyChoice, TOKEN_FIELDS, MessageView
from bridge.parse.ates import cut_tokens

# Built-in template fields of v2: v1's, plus `to`, `tool` and `subject_key`.
V2_BUILTINS = BUILTIN_FIELDS | {"to", "tool", "subject_key"}
# Decided after detection: usable in key/title/summary/device only, never in a condition,
# a capture, a map's or status's `from` (they would be empty there).
DECIDED = frozenset({"device", "status", "alert_type", "product_group"})
ACCOUNT_FIELDS = frozenset({"account", "account_name"})
_HEADER = re.compile(r"header[.:]\s*([!-9;-~]+)\s*", re.IGNORECASE)
_TOKEN = re.compile(r"token[._](\w+)")
_REPLY_PREFIX = re.compile(r"^(?:(?:re|fw|fwd|aw|wg|tr)\s*:\s*)+", re.IGNORECASE)
_NON_WORD = re.compile(r"[\W_]+")


def subject_identity(fsubject: str, strip_status: Callable[[str], str] | None) -> str:
    """The folded subject without status phrases and reply prefixes, non-word runs -> one
    space: the identity part of the default key (`subject_key`)."""
    if strip_status is not None:
        fsubject = strip_status(fsubject)
    return _NON_WORD.sub(" ", _REPLY_PREFIX.sub("", fsubject.strip())).strip()


def header_name(field: str) -> str | None:
    """`header.X-Name` / `header:X-Name` -> "x-name" (lower case), else None."""
    m = _HEADER.fullmatch(field)
    return m.group(1).lower() if m else None


def is_builtin(field: str) -> bool:
    """A field every message has (captures are the rule's own)."""
    if field in V2_BUILTINS or header_name(field) is not None:
        return True
    m = _TOKEN.fullmatch(field)
    return m is not None and m.group(1) in TOKEN_FIELDS


class RuleFields:
    """Field values of one message as one rule sees them (lazy; pure)."""

    def __init__(self, view: MessageView, rule: str = "", tool: str = "", body: BodyChoice = "text",
                 strip_status: Callable[[str], str] | None = None):
        self.view = view
        self.rule = rule
        self.tool = tool
        self.body_choice = body
        self.strip_status = strip_status
        self.captures: dict[str, str] = {}
        self.decided: dict[str, str] = {}
        self.secrets = tuple(t.pw for t in view.msg.ates if t.pw)
        self._cache: dict[str, str] = {}

    # -- raw values, for conditions and captures -------------------------------------------
    @property
    def body(self) -> str:
        return self.view.body_for(self.body_choice)

    def values(self, field: str) -> tuple[str, ...]:
        if field in self.captures:
            return (self.captures[field],)
        if field == "body":
            return (self.body,)
        name = header_name(field)
        if name is not None:
            return self.view.values("header:" + name)
        if field.startswith("token."):
            return self.view.values(field)
        if field in ("subject", "sender", "sender_name", "to"):
            return self.view.values(field)
        value = self.get(field, "")
        return (value,) if value else ()

    def folded_values(self, field: str) -> tuple[str, ...]:
        if field == "subject":
            return (self.view.fsubject,)
        if field == "body" and self.body is self.view.body:
            return (self.view.fbody,)
        return tuple(v.casefold() for v in self.values(field))

    def capture_text(self, field: str) -> str:
        found = self.values(field)
        return found[0] if found else ""

    # -- template values ---------------------------------------------------------------------
    def __getitem__(self, field: str) -> str:
        if field in self.decided:
            return self.decided[field]
        if field in self.captures:
            return self.captures[field]
        cached = self._cache.get(field)
        if cached is None:
            cached = self._cache[field] = self._builtin(field)
        return cached

    def _builtin(self, field: str) -> str:
        view, msg = self.view, self.view.msg
        if field == "body":
            # The text part keeps v1's template value (whole, tokens cut); another part as read.
            chosen = self.body
            return cut_tokens(msg.body or "" if chosen is view.body else chosen, self.secrets)
        simple: dict[str, Callable[[], str]] = {
            "subject": lambda: view.subject, "sender": lambda: view.sender,
            "sender_name": lambda: nfc(msg.sender_name or ""),
            "to": lambda: ", ".join(view.values("to")),
            "date": lambda: msg.date.isoformat() if msg.date else "",
            "message_id": lambda: msg.message_id or "", "rule": lambda: self.rule,
            "tool": lambda: self.tool, "token_source": lambda: view.token_source or "",
            "subject_key": self._subject_key,
        }
        if field in simple:
            return simple[field]()
        name = header_name(field)
        if name is not None:
            found = view.values("header:" + name)
            return cut_tokens(found[0], self.secrets) if found else ""
        m = _TOKEN.fullmatch(field)
        if m is not None and m.group(1) in TOKEN_FIELDS:
            return view.token_value(m.group(1)) or ""
        raise KeyError(field)

    def _subject_key(self) -> str:
        return subject_identity(self.view.fsubject, self.strip_status)

    def get(self, field: str, default: str = "", /) -> str:
        try:
            return self[field]
        except KeyError:
            return default
