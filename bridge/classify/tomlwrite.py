"""Write rule-file values as TOML that an administrator would have written by hand.

Only what rule files hold: strings, booleans, numbers, lists and inline tables. Regexes come
out as literal strings ('…', no backslash doubling) whenever TOML allows; short lists and
tables stay on one line; longer lists break one item a line. No library writes this shape
(tomli-w puts regexes in escaped basic strings and lists of tables as [[sub.tables]]), and
the caller re-reads every file it writes with tomllib and compares, so a writer bug can
never turn into a changed rule.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

WIDTH = 100
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# TOML forbids these raw in any string (tab is allowed).
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class WriteError(ValueError):
    """A value that has no place in a rule file (a date, a nested table in a list …)."""


def key(name: str) -> str:
    return name if _BARE_KEY.fullmatch(name) else basic_string(name)


def basic_string(text: str) -> str:
    # JSON's escapes are a subset of TOML's basic-string escapes; DEL is the one control
    # character JSON leaves raw and TOML does not.
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def string(text: str) -> str:
    """A literal string when it reads better (a backslash in it) and TOML allows it."""
    if "\\" in text and "'" not in text and not _CONTROL.search(text):
        return f"'{text}'"
    return basic_string(text)


def inline(value: Any) -> str:
    """One value on one line."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # Python's repr of ints, floats, inf and nan is valid TOML
    if isinstance(value, str):
        return string(value)
    if isinstance(value, list):
        return "[" + ", ".join(inline(v) for v in value) + "]"
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{key(k)} = {inline(v)}" for k, v in value.items()) + " }"
    raise WriteError(f"cannot write a value of type {type(value).__name__} in a rule file")


def assignment(name: str, value: Any, comment: str | None = None) -> list[str]:
    """`name = value` as one line when it fits, else a list broken one item a line (lists of
    tables always so, when there is more than one)."""
    head = f"{key(name)} = "
    one = head + inline(value)
    tail = f"  {comment}" if comment else ""
    tables = isinstance(value, list) and (len(value) > 1 or len(one) > WIDTH) and any(
        isinstance(v, Mapping) for v in value)
    if isinstance(value, list) and value and (tables or len(one) > WIDTH):
        if not tables:
            return _wrapped(head, value, tail)
        return [head + "[" + tail] + [f"  {inline(v)}," for v in value] + ["]"]
    return [one + tail]


def _wrapped(head: str, items: list[Any], tail: str) -> list[str]:
    """Strings packed up to the width, continuation lines aligned under the first item."""
    indent = " " * (len(head) + 1)
    lines, current = [], head + "["
    for i, item in enumerate(items):
        piece = inline(item) + ("," if i < len(items) - 1 else "]")
        start = current.endswith("[")
        if not start and len(current) + 1 + len(piece) > WIDTH:
            lines.append(current)
            current = indent + piece
        else:
            current += piece if start else " " + piece
    lines.append(current + tail)
    return lines
