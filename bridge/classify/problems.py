"""Problems found in rule files, and how to point at the line that caused them.

tomllib reports syntax errors with a line number but forgets where values came from, so a
`LineMap` scans the file text once: the line of every `[[table]]` header, in order, and the
line of every key inside it. The n-th `[[detect]]` header belongs to the n-th detect rule, so a
semantic error ("unknown key", "bad regex") names the exact line even when the rule has no
name, and falls back to the rule's header line, then to the rule's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One error or warning: str() is `file:line: rule: message`."""

    file: str
    line: int | None
    rule: str | None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        parts = [where]
        if self.rule:
            parts.append(self.rule)
        parts.append(self.message)
        return ": ".join(parts)

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


class RuleSetError(Exception):
    """The rule files cannot be used; `.problems` lists every error (and warning) found."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.is_error]
        lines = [f"{len(errors)} error(s) in the rule files:"]
        lines += [f"  {p}" for p in errors]
        super().__init__("\n".join(lines))


_TOML_POS = re.compile(r"\(at line (\d+), column \d+\)")


def toml_error_line(message: str) -> tuple[int | None, str]:
    """tomllib in 3.11 puts the position only into the message: split it back out."""
    m = _TOML_POS.search(message)
    if m is None:
        return None, message.replace(" (at end of document)", " at the end of the file")
    return int(m.group(1)), (message[: m.start()] + message[m.end():]).strip()


_AOT = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.\-]+)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_\-]+)\s*(?:\.|=)""")


class LineMap:
    """Where each table and key of one TOML file starts (1-based line numbers)."""

    def __init__(self, text: str):
        # (table name, index among tables of that name) -> header line, and -> {key: line}
        self.headers: dict[tuple[str, int], int] = {}
        self.keys: dict[tuple[str, int], dict[str, int]] = {}
        counts: dict[str, int] = {}
        current: tuple[str, int] = ("", 0)
        self.keys[current] = {}
        in_multiline: str | None = None
        for lineno, line in enumerate(text.splitlines(), start=1):
            if in_multiline is not None:
                if line.count(in_multiline) % 2 == 1:
                    in_multiline = None
                continue
            m = _AOT.match(line)
            if m:
                name = m.group(1)
                base = name.split(".")[0]
                if "." in name:  # [[detect.conditions]] belongs to the current detect rule
                    continue
                idx = counts.get(base, 0)
                counts[base] = idx + 1
                current = (base, idx)
                self.headers[current] = lineno
                self.keys.setdefault(current, {})
                continue
            m = _TABLE.match(line)
            if m and "." in m.group(1) and m.group(1).split(".")[0] == current[0]:
                continue  # [tool.status]: a sub-table of the current [[tool]]; keys stay its
            if m:
                name = m.group(1).split(".")[0]
                current = (name, 0)
                self.headers.setdefault(current, lineno)
                self.keys.setdefault(current, {})
                continue
            m = _KEY.match(line)
            if m:
                key = m.group(1).strip("\"'")
                self.keys[current].setdefault(key, lineno)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_multiline = quote
                    break

    def line(self, table: str, index: int = 0, key: str | None = None) -> int | None:
        if key is not None:
            found = self.keys.get((table, index), {}).get(key)
            if found is not None:
                return found
        return self.headers.get((table, index))

    def top_level_key(self, key: str) -> int | None:
        return self.keys.get(("", 0), {}).get(key)
