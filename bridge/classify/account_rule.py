"""`[[account]]` rules: find the customer named in an automated message (seed 002).

The text right after a phrase, right before one, or between two — or a regex capture, or the
sender's address — is looked up in the accounts directory. All phrase work happens on the
case-folded text, the same text the rule index keys on, so index and rule never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

from bridge.classify.accounts import SEARCH_BY, Account, AccountsDirectory, SearchBy
from bridge.classify.model import Rule, StatusPhrases
from bridge.classify.reader import TableReader
from bridge.classify.regex import Regex
from bridge.classify.text import Phrase, fold
from bridge.classify.view import MessageView


_EDGE = " \t\"'`,;:.!?()[]{}<>*|"


@dataclass(frozen=True)
class AccountRule(Rule):
    """`[[account]]` — finds the customer of an automated message (seed 002).

    `from = "subject"` (default) or `"body"`: the text right `after` a phrase, right `before`
    a phrase, or between the two when both are given; or the first capture of `regex` (named
    group `account` if present). With only `after`, the longest run of words that names an
    account wins ("after 'Alert for Site'" finds "Globex Corporation" in "… Site Globex
    Corporation, sensor …"), up to the end of the subject or of the phrase's body line; with
    only `before`, the longest run ending there. Runs longer than the longest name in the
    accounts directory are not tried, so the search costs the line's length plus a few
    dictionary lookups, however long the line. `from = "sender"` looks up the sender's
    address, then its domain and parent domains. `search` limits what the text is looked up
    as: "name", "foreign-id", "record-id" (default: all three, in that order). `for_rules`
    limits the rule to mail matched by the named `[[detect]]` rules.
    """

    NAME: ClassVar[str] = "account"
    KEYS: ClassVar[dict[str, str]] = {
        "name": "unique name of the rule (required)",
        "from": "where to look: subject (default), body or sender",
        "after": "the account follows this phrase",
        "before": "the account precedes this phrase",
        "regex": "regex whose group 'account' (or first group) is the account",
        "search": "what the text is: name, foreign-id, record-id (default: all)",
        "for_rules": "only for mail matched by these [[detect]] rules (names)",
    }
    source: str = "subject"
    after: Phrase | None = None
    before: Phrase | None = None
    regex: Regex | None = None
    search: tuple[SearchBy, ...] = SEARCH_BY
    for_rules: frozenset[str] | None = None
    for_tool: str | None = None  # a [[tool]]'s account table: only for mail of that tool
    field: str | None = None     # v2: `from` names another field (header.<Name>, a capture …)

    def applies(self, detect_rule: str | None, tool: str | None = None) -> bool:
        if self.for_tool is not None and self.for_tool != tool:
            return False
        return self.for_rules is None or detect_rule in self.for_rules

    def index_keys(self) -> tuple[str, tuple[str, ...]] | None:
        phrase = self.after or self.before
        word = phrase.first_word if phrase is not None and self.source == "subject" else None
        return ("word", (word,)) if word else None

    @property
    def how(self) -> str:
        if self.field is not None:
            return f"from {self.field}" + (" regex" if self.regex is not None else "")
        if self.source == "sender":
            return "from sender"
        if self.regex is not None:
            return f"from {self.source} regex"
        if self.after and self.before:
            return f"from {self.source} between {self.after.text!r} and {self.before.text!r}"
        if self.after:
            return f"from {self.source} after {self.after.text!r}"
        return f"from {self.source} before {self.before.text if self.before else ''!r}"

    def find(self, view: MessageView, accounts: AccountsDirectory,
             text_of: Callable[[str], str] | None = None) -> tuple[Account, str] | str | None:
        """(account, how) when found; a note when text was found but named no account (or
        the closing phrase was missing); None when the rule does not apply at all.
        `text_of` gives a v2 field's value (the matched rule's captures included)."""
        if self.field is not None:
            text = " ".join((text_of(self.field) if text_of is not None else "").split())
            if not text:
                return None
            if self.regex is None and self.after is None and self.before is None:
                return self._lookup([text], accounts)  # the field's whole value names it
            return self._search((text,), lambda: (fold(text),), accounts)
        if self.source == "sender":
            if not view.sender or "=?" in view.sender:
                return None
            hit = accounts.find_sender(view.sender)
            return (hit[0], f"{self.how} ({hit[1]})") if hit else \
                f"sender {view.sender} is in no account"
        texts = (view.subject,) if self.source == "subject" else view.body_lines
        return self._search(texts, lambda: (view.fsubject,) if self.source == "subject" else
                            tuple(fold(line) for line in view.body_lines), accounts)

    def _search(self, texts: tuple[str, ...], folded: Callable[[], tuple[str, ...]],
                accounts: AccountsDirectory) -> tuple[Account, str] | str | None:
        if self.regex is not None:
            for text in texts:
                found = self.regex.search(text)
                if found:
                    group: str | int = "account" if "account" in self.regex.groupindex else 1
                    return self._lookup([found.group(group) or ""], accounts)
            return None
        anchor = self.after or self.before
        if anchor is None:
            return None
        for line in folded():
            m = anchor.search(line)
            if m is None:
                continue
            if self.after and self.before:
                end = self.before.pattern.search(line, m.end())
                if end is None:
                    return f"{self.before.text!r} not found after {self.after.text!r}"
                return self._lookup([line[m.end():end.start()]], accounts)
            most = accounts.max_words(self.search)
            if self.after:
                return self._lookup(_runs(line[m.end():].split(), most), accounts)
            return self._lookup(_runs(line[:m.start()].split(), most, from_end=True),
                                accounts)
        return None

    def _lookup(self, candidates: list[str], accounts: AccountsDirectory
                ) -> tuple[Account, str] | str:
        tried = []
        for text in candidates:
            text = text.strip(_EDGE)
            if not text:
                continue
            tried.append(text)
            hit = accounts.find(text, self.search)
            if hit is not None:
                return hit[0], f"{self.how} ({text!r} {hit[1]})"
        return f"{tried[0]!r} names no account" if tried else "found no text to look up"

    @classmethod
    def read(cls, r: TableReader, status: StatusPhrases) -> "AccountRule":
        return cls.read_from(r, None)

    @classmethod
    def read_v2(cls, r: TableReader, status: StatusPhrases) -> "AccountRule":
        """v2: `from` may also name a field (header.<Name>, a capture …); with neither
        after, before nor regex, the field's whole value names the account."""
        raw = r.table.get("from")
        if isinstance(raw, str) and raw.strip() and \
                raw.strip().lower() not in ("subject", "body", "sender"):
            return cls.read_from(r, raw.strip())
        return cls.read_from(r, None)

    @classmethod
    def read_from(cls, r: TableReader, field: str | None) -> "AccountRule":
        source = "subject" if field is not None else \
            r.choice("from", ("subject", "body", "sender"), "subject")
        after, before, regex = r.phrase("after"), r.phrase("before"), r.regex("regex")
        search: list[SearchBy] = []
        for s in r.texts("search") or SEARCH_BY:
            canon = s.strip().lower().replace("_", "-").replace(" ", "-")
            if canon in SEARCH_BY:
                search.append(canon)
            else:
                r.problem(f"search {s!r} is not one of {', '.join(SEARCH_BY)}", "search")
        if source == "sender" and (after or before or regex):
            r.problem("from = \"sender\" takes no after, before or regex")
        elif source != "sender" and regex is not None and (after or before):
            r.problem("give either regex or after/before, not both")
        elif source != "sender" and not (after or before or regex) and r.errors == 0 \
                and field is None:
            r.problem(f"can never match: from = {source!r} needs after, before or regex")
        if regex is not None and not regex.groups:
            r.problem("regex has no capture group for the account", "regex")
        for_rules = frozenset(r.texts("for_rules")) if "for_rules" in r.table else None
        return cls(name=r.label, file=r.rule_file, line=r.line(), source=source, after=after,
                   before=before, regex=regex, search=tuple(search) or SEARCH_BY,
                   for_rules=for_rules, field=field)


def _runs(words: list[str], most: int, from_end: bool = False) -> list[str]:
    """Runs of `words` that start at its start (or end at its end), longest first, that
    could name an account: each ends (or starts) on a word with more than punctuation — a
    run ending in "|" is the shorter one once stripped — and spans at most `most` words,
    the longest name in the directory. Costs the words scanned plus `most` runs."""
    if from_end:
        return [" ".join(reversed(run.split(" "))) for run in _runs(words[::-1], most)]
    first = next((i for i, w in enumerate(words) if w.strip(_EDGE)), None)
    if first is None:
        return []
    window = words[first:first + max(most, 1)]
    ends = [i for i, w in enumerate(window) if w.strip(_EDGE)]
    return [" ".join(window[:end + 1]) for end in reversed(ends)]
