"""Text normalisation and phrase matching shared by every rule.

All matching is case-insensitive and Unicode-aware: text is NFC-normalised and case-folded
once per message, phrases once at load. A phrase matches as whole words — "OK" matches
"is OK" but not "BOOK" — and any run of white space in a phrase matches any run in the text,
so a subject folded over two lines still matches. The first word of each phrase doubles as an
index key: a phrase can only match a text that contains its first word as a whole token, which
is what lets thousands of phrase rules be looked up instead of scanned.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_WORD = re.compile(r"\w+")


def nfc(text: str) -> str:
    """NFC form with white-space runs collapsed: what every matcher compares."""
    # Runs several times per message. ASCII text is its own NFC form, and str.split() splits
    # on exactly the characters `\s` matches (str.isspace), so the join is the regex's
    # substitution and strip in one pass.
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def fold(text: str) -> str:
    """Case-folded NFC text. Folding can change the length ("ß" -> "ss"); callers that need
    positions in the original keep both."""
    return nfc(text).casefold()


def words(folded: str) -> frozenset[str]:
    """The whole-word tokens of folded text: the keys a phrase index is probed with."""
    return frozenset(_WORD.findall(folded))


def _phrase_pattern(folded: str) -> str:
    lead, trail = folded.startswith(" "), folded.endswith(" ")
    folded = folded.strip()
    parts = [re.escape(p) for p in folded.split(" ")]
    body = r"\s+".join(parts)
    # Boundaries only where the phrase itself begins/ends with a word character: "[Failed]"
    # needs none, "OK" needs both, so "BOOK" and "OKAY" do not match it.
    if _WORD.match(folded[0]):
        body = r"(?<!\w)" + body
    if _WORD.match(folded[-1]):
        body = body + r"(?!\w)"
    # White space the admin put at an edge is part of the phrase: before = " - " needs the
    # spaces, so "Acme-HQ - Daily" splits at the spaced dash, not inside "Acme-HQ".
    return (r"\s+" if lead else "") + body + (r"\s+" if trail else "")


@dataclass(frozen=True)
class Phrase:
    """One case-insensitive whole-word phrase, compiled."""

    text: str            # as the admin wrote it, for messages and traces
    folded: str
    pattern: re.Pattern[str]

    @classmethod
    def compile(cls, text: str) -> "Phrase":
        folded = fold(text)
        if not folded:
            raise ValueError("a phrase must not be empty")
        folded = (" " if text[:1].isspace() else "") + folded + (" " if text[-1:].isspace() else "")
        return cls(text, folded, re.compile(_phrase_pattern(folded)))

    @property
    def first_word(self) -> str | None:
        """The index key, or None when the phrase has no word characters at all ("!!!")."""
        m = _WORD.search(self.folded)
        return m.group(0) if m else None

    def search(self, folded_text: str) -> re.Match[str] | None:
        return self.pattern.search(folded_text)

    def within(self, other: "Phrase") -> bool:
        """True when every text containing `other` also contains this phrase (used to find
        shadowed rules): this phrase occurs inside the other's own words."""
        return self.pattern.search(other.folded) is not None


class PhraseSet:
    """An ordered list of phrases, searched with one compiled alternation."""

    __slots__ = ("phrases", "_alt")

    def __init__(self, phrases: tuple[Phrase, ...]):
        self.phrases = phrases
        self._alt = (re.compile("|".join(f"(?:{p.pattern.pattern})" for p in phrases))
                     if phrases else None)

    @classmethod
    def of(cls, texts: list[str] | tuple[str, ...]) -> "PhraseSet":
        return cls(tuple(Phrase.compile(t) for t in texts))

    def __bool__(self) -> bool:
        return bool(self.phrases)

    def __len__(self) -> int:
        return len(self.phrases)

    def search(self, folded_text: str) -> str | None:
        """The first phrase found in the text (as the admin wrote it), or None."""
        if self._alt is None:
            return None
        m = self._alt.search(folded_text)
        if m is None:
            return None
        for p in self.phrases:
            if p.pattern.fullmatch(m.group(0)):
                return p.text
        return m.group(0)

    def remove(self, folded_text: str) -> str:
        return self._alt.sub(" ", folded_text) if self._alt is not None else folded_text
