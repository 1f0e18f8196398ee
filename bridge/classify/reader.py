"""Typed, reporting access to one rule table of a TOML file.

Every getter checks the type of one key and, when it is wrong, records a Problem that names
the file, the key's line and the rule — then returns a harmless default, so loading goes on
and the admin sees every mistake of every file in one run instead of one typo at a time.
`finish()` reports keys the rule class does not know, with a "did you mean" suggestion.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

from bridge.classify.problems import LineMap, Problem, Severity
from bridge.classify.regex import Regex, compile_regex
from bridge.classify.templates import Template, TemplateError
from bridge.classify.text import Phrase, PhraseSet


class TableReader:
    def __init__(self, table: dict[str, Any], kind: str, index: int, file: str,
                 linemap: LineMap, problems: list[Problem]):
        self.table = table
        self.kind = kind
        self.index = index
        self.file = file
        self.rule_file = file.replace("\\", "/").rpartition("/")[2]  # rules name their file
        self.linemap = linemap
        self.problems = problems
        name = table.get("name")
        self.name = name.strip() if isinstance(name, str) and name.strip() else None
        self.label = self.name or f"{kind} #{index + 1}"
        self.errors = 0
        # v2: keys this rule inherited from its [[tool]] (problems say so; when the tool
        # itself had errors they were reported there, once, and stay quiet here).
        self.inherited: frozenset[str] = frozenset()
        self.origin = ""
        self.quiet = False

    def over(self, table: dict[str, Any], inherited: frozenset[str], origin: str,
             quiet: bool) -> "TableReader":
        """A reader of the same rule over its table merged with its tool's defaults."""
        r = TableReader(table, self.kind, self.index, self.file, self.linemap, self.problems)
        r.label, r.inherited, r.origin, r.quiet = self.label, inherited, origin, quiet
        return r

    def line(self, key: str | None = None) -> int | None:
        return self.linemap.line(self.kind, self.index, key)

    def problem(self, message: str, key: str | None = None,
                severity: Severity = "error") -> None:
        if severity == "error":
            self.errors += 1
        if key is not None and key in self.inherited:
            if self.quiet:
                return
            message += f" (inherited from tool {self.origin!r})"
        self.problems.append(Problem(self.file, self.line(key), self.label, message, severity))

    # -- typed getters -------------------------------------------------------------------------
    def text(self, key: str, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                self.problem(f"missing key {key!r}")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{key} must be a non-empty string", key)
            return None
        return value.strip()

    def texts(self, key: str) -> tuple[str, ...]:
        """A string or a list of strings (the list means: any of them)."""
        value = self.table.get(key)
        if value is None:
            return ()
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) and v.strip() for v in items):
            self.problem(f"{key} must be a string or a list of non-empty strings", key)
            return ()
        return tuple(v.strip() for v in items)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            self.problem(f"{key} must be true or false", key)
            return default
        return value

    def seconds(self, key: str) -> float | None:
        """A non-negative number of seconds, or None when the key is absent."""
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            self.problem(f"{key} must be a number of seconds (0 or more)", key)
            return None
        return float(value)

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.table.get(key, default)
        if not isinstance(value, str) or value.strip().lower() not in options:
            self.problem(f"{key} must be one of {', '.join(options)}", key)
            return default
        return value.strip().lower()

    def regex(self, key: str, case_sensitive: bool = False) -> Regex | None:
        source = self.text(key)
        return self.compile(key, source, case_sensitive) if source is not None else None

    def regexes(self, key: str, case_sensitive: bool = False) -> tuple[Regex, ...]:
        """A regex or a list of regexes (each is applied; all their captures are kept)."""
        found = (self.compile(key, s, case_sensitive) for s in self.texts(key))
        return tuple(p for p in found if p is not None)

    def compile(self, key: str, source: str, case_sensitive: bool = False) -> Regex | None:
        """An admin regex (bridge.classify.regex), its problems reported under `key`."""
        try:
            pattern = compile_regex(source, case_sensitive=case_sensitive)
        except re.error as exc:
            self.problem(f"bad regex in {key}: {exc}", key)
            return None
        if pattern.search("") is not None:
            self.problem(f"{key} matches the empty string, so it matches every message",
                         key, "warning")
        self.warn_fallback(key, pattern)
        return pattern

    def warn_fallback(self, key: str, pattern: Regex, what: str | None = None) -> None:
        """`check` warns about every regex RE2 cannot run (`what` names it within `key`)."""
        if pattern.engine == "re":
            self.problem(f"{what or key} {pattern.pattern!r} runs on Python's re: not "
                         f"linear-time, a hostile message can make it slow (RE2: "
                         f"{pattern.why})", key, "warning")

    def template(self, key: str, default: str | None = None) -> Template | None:
        source = self.text(key) if key in self.table else default
        if source is None:
            return None
        try:
            return Template.parse(source)
        except TemplateError as exc:
            self.problem(f"{key}: {exc}", key)
            return None

    def phrase(self, key: str) -> Phrase | None:
        source = self.text(key)
        return Phrase.compile(source) if source else None

    def phrases(self, key: str) -> PhraseSet | None:
        """None when the key is absent; an explicitly empty list gives an empty set."""
        if key not in self.table:
            return None
        value = self.table[key]
        if isinstance(value, list) and not value:
            return PhraseSet(())
        return PhraseSet.of(self.texts(key))

    def finish(self, known: dict[str, str]) -> None:
        for key in self.table:
            if key not in known:
                close = difflib.get_close_matches(key, list(known), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.problem(f"unknown key {key!r}{hint}", key)
