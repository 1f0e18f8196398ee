"""An index over an ordered rule list that keeps first-match-wins order.

Rules with exact or domain senders are filed under those senders, rules with subject phrases
under each phrase's first word; everything else (wildcard senders, condition-only rules,
phrases without a word) is tried on every message. For one message the index gathers the few
candidate rules whose key the message has, merges them with the always-tried list by rule
position, and evaluates them in that order — so a thousand sender/phrase rules cost about what
ten do, while wildcard, condition and regex rules still cost one evaluation each.
"""

from __future__ import annotations

from typing import Generic, Iterator, Protocol, Sequence, TypeVar

from bridge.classify.view import MessageView


class Indexable(Protocol):
    def index_keys(self) -> tuple[str, tuple[str, ...]] | None: ...


R = TypeVar("R", bound=Indexable)


class RuleIndex(Generic[R]):
    """Candidate rules for a message, in rule order."""

    def __init__(self, rules: Sequence[R]):
        self.rules = tuple(rules)
        self.by_sender: dict[str, list[int]] = {}
        self.by_domain: dict[str, list[int]] = {}
        self.by_word: dict[str, list[int]] = {}
        self.always: list[int] = []
        self._always_rules: tuple[R, ...] = ()
        self._always_set: frozenset[int] = frozenset()
        for pos, rule in enumerate(self.rules):
            keys = rule.index_keys()
            if keys is None:
                self.always.append(pos)
                continue
            kind, values = keys
            for value in set(values):
                if kind == "sender":
                    table = self.by_sender if value[0] == "=" else self.by_domain
                    table.setdefault(value[1:], []).append(pos)
                else:
                    self.by_word.setdefault(value, []).append(pos)
        self._always_rules = tuple(self.rules[pos] for pos in self.always)
        self._always_set = frozenset(self.always)

    def candidates(self, view: MessageView) -> Iterator[R]:
        found: set[int] = set()
        if self.by_sender:
            found.update(self.by_sender.get(view.sender, ()))
        if self.by_domain and view.domain:
            found.update(self.by_domain.get(view.domain, ()))
        if self.by_word:
            # Probe with the smaller side: a subject's words, or the (few) indexed words.
            subject_words = view.subject_words
            if len(subject_words) <= len(self.by_word):
                for w in subject_words:
                    found.update(self.by_word.get(w, ()))
            else:
                for w, positions in self.by_word.items():
                    if w in subject_words:
                        found.update(positions)
        # Runs for every rule list of every message: no generator of our own. An indexed
        # rule is never in `always`, so sorting the union is the merge by rule position.
        if not found:
            return iter(self._always_rules)
        return map(self.rules.__getitem__, sorted(found.union(self._always_set)))

    def __len__(self) -> int:
        return len(self.rules)
