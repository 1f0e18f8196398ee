"""v2 status: a field through a map first, then phrase lists in an explicit order, then a default.

`StatusSpec.decide` is pure and bounded: one template render and dict look-up, then at most
one compiled alternation per list plus the few table phrases. Plain phrases keep v1's meaning
(whole words, case-insensitive, searched in `in`); a table phrase picks a mode — `word`,
`substring`, `starts_with`, `ends_with` (of the field's trimmed text) — a field and its case.
A value the map does not know falls through to the phrases (the trace says so); nothing
matched gives `default`, so a status is always decided.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Mapping, get_args

from bridge.classify.fields import RuleFields
from bridge.classify.model import StatusPhrases
from bridge.classify.templates import Template
from bridge.classify.text import _phrase_pattern, fold, nfc
from bridge.models import Status

Mode = Literal["word", "substring", "starts_with", "ends_with"]
MODES: tuple[Mode, ...] = get_args(Mode)
STATUSES: tuple[Status, ...] = ("open", "resolved", "update")
V1_ORDER: tuple[Status, ...] = ("open", "resolved", "update")
V2_ORDER: tuple[Status, ...] = ("resolved", "open", "update")


@dataclass(frozen=True)
class TablePhrase:
    """`{ phrase, mode, in, case_sensitive }`: one phrase with its own way of matching."""

    text: str
    mode: Mode = "word"
    field: str | None = None      # None: the status's `in`
    case_sensitive: bool = False
    pattern: re.Pattern[str] | None = None  # word mode only

    @classmethod
    def build(cls, text: str, mode: Mode, field: str | None, case_sensitive: bool
              ) -> "TablePhrase":
        needle = nfc(text) if case_sensitive else fold(text)
        pattern = re.compile(_phrase_pattern(needle)) if mode == "word" else None
        return cls(needle, mode, field, case_sensitive, pattern)

    def found(self, text: str) -> bool:
        if self.pattern is not None:
            return self.pattern.search(text) is not None
        if self.mode == "substring":
            return self.text in text
        text = nfc(text)
        return text.startswith(self.text) if self.mode == "starts_with" else \
            text.endswith(self.text)


@dataclass(frozen=True)
class StatusSpec:
    phrases: StatusPhrases                       # plain phrases, searched in `where`
    order: tuple[Status, ...] = V2_ORDER
    tables: tuple[tuple[Status, TablePhrase], ...] = ()
    where: str = "subject"
    source: Template | None = None               # `from`
    mapping: Mapping[str, Status] | None = None  # folded value -> status
    default: Status = "open"

    @property
    def can_resolve(self) -> bool:
        return bool(self.phrases.resolved) or any(s == "resolved" for s, _ in self.tables) \
            or "resolved" in (self.mapping or {}).values() or self.default == "resolved" \
            or (self.source is not None and self.mapping is None)

    def _text(self, fields: RuleFields, where: str, case_sensitive: bool) -> str:
        view = fields.view
        if where == "subject":
            return view.subject if case_sensitive else view.fsubject
        if where in ("body", "both"):
            body = fields.body if case_sensitive else (
                view.fbody if fields.body is view.body else fields.body.casefold())
            if where == "body":
                return body
            return (view.subject if case_sensitive else view.fsubject) + "\n" + body
        value = "\n".join(fields.values(where))
        return value if case_sensitive else fold(value)

    def decide(self, fields: RuleFields) -> tuple[Status, str]:
        """(status, why) for the trace."""
        notes: list[str] = []
        if self.source is not None:
            value = fold(self.source.render(fields))
            table: Mapping[str, Status] = self.mapping if self.mapping is not None \
                else {s: s for s in STATUSES}
            hit = table.get(value)
            if hit is not None:
                return hit, f"{self.source.source} = {value!r} maps to {hit}"
            notes.append(f"{self.source.source} = {value!r} is not in the map")
        texts: dict[tuple[str, bool], str] = {}
        for status in self.order:
            plain = getattr(self.phrases, status)
            if plain:
                text = texts.setdefault((self.where, False), self._text(fields, self.where,
                                                                           False))
                phrase = plain.search(text)
                if phrase is not None:
                    return status, "; ".join(notes + [f"phrase {phrase!r} in {self.where}"])
            for s, tp in self.tables:
                if s != status:
                    continue
                where = tp.field or self.where
                key = (where, tp.case_sensitive)
                if key not in texts:
                    texts[key] = self._text(fields, where, tp.case_sensitive)
                if tp.found(texts[key]):
                    return status, "; ".join(notes + [f"phrase {tp.text!r} ({tp.mode}) in "
                                                      f"{where}"])
        return self.default, "; ".join(notes + [f"no status phrase in {self.where}; "
                                                f"default {self.default}"])

    def strip(self, folded_subject: str) -> str:
        """The subject without this spec's phrases (for `subject_key` and the default key)."""
        text = self.phrases.strip(folded_subject)
        for _, tp in self.tables:
            if tp.pattern is not None and not tp.case_sensitive:
                text = tp.pattern.sub(" ", text)
        return text
