"""Named captures of a v2 rule: each entry runs its regex on one field of the message.

`compile_regex` is the one place rule regexes of v2 are compiled, so the linear-time engine
(issue 16: RE2 through bridge/classify/regex.py) replaces `re` here and nowhere else. A capture
that does not match makes its rule not match unless it is `optional`; its named groups become
fields of the rule (later entries override earlier ones, as v1's regex lists did).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol, Sequence

from bridge.classify import regex
from bridge.classify.text import nfc
from bridge.parse.ates import cut_tokens

Pattern = regex.Regex


def compile_regex(source: str, case_sensitive: bool = False) -> Pattern:
    """Raises re.error. Case-insensitive unless asked (v2's default, as v1's always); on RE2
    where it can express the pattern (bridge/classify/regex.py)."""
    return regex.compile_regex(source, case_sensitive=case_sensitive)


class CaptureTarget(Protocol):
    """What captures read from and write to (RuleFields)."""

    captures: dict[str, str]
    secrets: tuple[str, ...]

    def capture_text(self, field: str) -> str: ...


@dataclass(frozen=True)
class Capture:
    field: str        # the field it runs on: subject, body, header.<Name>, an earlier capture …
    regex: Pattern
    optional: bool = False

    @property
    def names(self) -> frozenset[str]:
        return frozenset(self.regex.groupindex)

    def describe(self) -> str:
        return f"capture {self.regex.pattern!r} in {self.field}"


def run_captures(captures: Sequence[Capture], target: CaptureTarget) -> str | None:
    """Run every capture in order into `target.captures`; the first required one that does
    not match is returned as the reason the rule does not match (None: all fine)."""
    for c in captures:
        m = c.regex.search(target.capture_text(c.field))
        if m is None:
            if not c.optional:
                return f"{c.describe()} did not match"
            continue
        target.captures.update({k: cut_tokens(nfc(v), target.secrets)
                                for k, v in m.groupdict().items() if v})
    return None


def group_alternatives(pattern: str, name: str) -> tuple[str, ...] | None:
    """The literal values a named group can take when it is a plain alternation of words
    (`(?P<state>OK|WARNING|CRITICAL)`), else None: what `check` compares a status map with."""
    start = pattern.find(f"(?P<{name}>")
    if start < 0:
        return None
    body_start = start + len(name) + 5
    depth, i = 1, body_start
    while i < len(pattern) and depth:
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        depth += ch == "("
        depth -= ch == ")"
        i += 1
    body = pattern[body_start:i - 1]
    if depth or not re.fullmatch(r"[\w .-]+(?:\|[\w .-]+)*", body):
        return None
    return tuple(body.split("|"))
