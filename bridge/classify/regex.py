"""Administrators' regexes on a linear-time engine: RE2, Python's `re` only where RE2 cannot go.

Python's `re` backtracks: `(a+)+$` over fifty thousand "a"s and a "b" never finishes, and one
such rule would make the worker budget quarantine good mail. RE2 (google-re2) matches in time
linear in the text. Every admin regex is compiled here: first by `re` (so the language a rule
file may use, and the error an admin reads, stay exactly Python's), then translated to RE2's
syntax with Python's meaning kept — `\\w`, `\\d` and `\\s` are Unicode-aware as in `re`, `\\Z`
is RE2's `\\z`, `{,n}` is `{0,n}`, a `[` inside a class is literal, and a non-multiline `$`
also matches before a final newline. What RE2 cannot express (backreferences, lookaround,
possessive and atomic groups, `(?x)`, conditionals…) runs on `re`, and `Regex.engine` says
so, for `mailbridge check` to warn. The remaining differences are in docs/rules.md.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal, Mapping, Protocol, overload

import re2

Engine = Literal["re2", "re"]

# Python's Unicode \w, \d and \s as RE2 classes (checked code point by code point in
# tests/test_regex.py; only characters newer than Python's Unicode database differ).
_WORD = r"\p{L}\p{N}_"
_DIGIT = r"\p{Nd}"
_SPACE = r"\t-\r\x1c-\x1f\x85\p{Z}"
_CLASS = {"w": _WORD, "d": _DIGIT, "s": _SPACE}
_NEGATED = {"W": "w", "D": "d", "S": "s"}
_OCTAL = "01234567"
_QUANTIFIER = re.compile(r"\{(\d*),(\d*)\}")


class _Untranslatable(Exception):
    """The pattern needs a feature RE2 lacks (e.g. a backreference); `re` runs it."""


class _Spans(Protocol):
    def span(self, group: int = 0, /) -> tuple[int, int]: ...


class Match:
    """One match, the same for both engines: group(), groups(), groupdict(), start(), end()."""

    __slots__ = ("_text", "_spans", "_names")

    def __init__(self, text: str, found: _Spans, groups: int, names: Mapping[str, int]):
        self._text = text
        self._spans = tuple(found.span(i) for i in range(groups + 1))
        self._names = names

    def _index(self, group: int | str) -> int:
        index = self._names[group] if isinstance(group, str) else group
        if not 0 <= index < len(self._spans):
            raise IndexError(f"no such group {group!r}")
        return index

    @overload
    def group(self) -> str: ...
    @overload
    def group(self, group: Literal[0]) -> str: ...
    @overload
    def group(self, group: int | str) -> str | None: ...

    def group(self, group: int | str = 0) -> str | None:
        start, end = self._spans[self._index(group)]
        return None if start < 0 else self._text[start:end]

    def groups(self, default: str | None = None) -> tuple[str | None, ...]:
        found = (self.group(i) for i in range(1, len(self._spans)))
        return tuple(default if g is None else g for g in found)

    def groupdict(self, default: str | None = None) -> dict[str, str | None]:
        found = ((name, self.group(i)) for name, i in self._names.items())
        return {name: default if g is None else g for name, g in found}

    def start(self, group: int | str = 0) -> int:
        return self._spans[self._index(group)][0]

    def end(self, group: int | str = 0) -> int:
        return self._spans[self._index(group)][1]


class _Compiled(Protocol):
    def search(self, text: str, /) -> _Spans | None: ...


class _Re2Compiled(Protocol):
    def search(self, text: str | bytes, /) -> _Spans | None: ...


@dataclass(frozen=True, eq=False)
class Regex:
    """A compiled admin regex. `engine` is "re2" (linear time) or "re" (`why` says why)."""

    pattern: str
    case_sensitive: bool
    engine: Engine
    why: str
    groups: int
    groupindex: Mapping[str, int]
    _python: _Compiled = field(repr=False)
    _re2: _Re2Compiled | None = field(repr=False, default=None)
    # A `$` outside (?m) that RE2 reads as end-of-text: Python's also matches before a final
    # newline, so a text ending in one is searched once more without it.
    _dollar: bool = field(repr=False, default=False)

    def search(self, text: str) -> Match | None:
        if self._re2 is None:
            found = self._python.search(text)
        else:
            # ASCII text goes in as bytes: its offsets are the characters', and the wrapper
            # skips decoding them (3x faster on a subject).
            subject: str | bytes = text.encode("ascii") if text.isascii() else text
            found = self._re2.search(subject)
            if found is None and self._dollar and text.endswith("\n"):
                found = self._re2.search(subject[:-1])
        return Match(text, found, self.groups, self.groupindex) if found is not None else None

    def __reduce__(self) -> tuple[object, tuple[str, bool]]:
        # Rule sets travel to the worker processes by pickle; recompile there.
        return (_rebuild, (self.pattern, self.case_sensitive))


def _rebuild(pattern: str, case_sensitive: bool) -> Regex:
    return compile_regex(pattern, case_sensitive=case_sensitive)


def compile_regex(pattern: str, *, case_sensitive: bool = False) -> Regex:
    """Raises re.error (Python's message, with its position) when the pattern is invalid."""
    python = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    groupindex = dict(python.groupindex)
    try:
        if python.flags & (re.VERBOSE | re.ASCII):
            raise _Untranslatable("RE2 has no (?x) or (?a) flag")
        try:
            translated, dollar = _translate(pattern, python.flags)
        except (IndexError, ValueError, KeyError) as exc:  # e.g. a "[" inside (?#…)
            raise _Untranslatable(f"cannot translate for RE2: {exc}") from None
        options = re2.Options()
        options.case_sensitive = case_sensitive
        options.log_errors = False  # RE2 would print every refused pattern to stderr
        compiled = re2.compile(translated, options)
    except _Untranslatable as exc:
        return Regex(pattern, case_sensitive, "re", str(exc), python.groups, groupindex,
                     python)
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        return Regex(pattern, case_sensitive, "re", why, python.groups, groupindex, python)
    return Regex(pattern, case_sensitive, "re2", "", python.groups, groupindex, python,
                 compiled, dollar)


def _translate(pattern: str, flags: int) -> tuple[str, bool]:
    """RE2 syntax with Python's meaning, and whether a non-multiline `$` occurs."""
    out: list[str] = []
    dollar = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = _escape(pattern, i, in_class=False)
            out.append(text)
        elif c == "[":
            text, i = _char_class(pattern, i)
            out.append(text)
        elif c == "{":
            m = _QUANTIFIER.match(pattern, i)
            if m and not m.group(1):
                out.append("{0," + m.group(2) + "}")
                i = m.end()
            else:
                out.append(c)
                i += 1
        else:
            if c == "$" and not flags & re.MULTILINE:
                dollar = True
            out.append(c)
            i += 1
    if dollar and "\\z" in out:
        # The second search over a text cut short by its newline would let `\Z` match early.
        raise _Untranslatable("$ beside \\Z: RE2 cannot give both Python's meaning")
    return "".join(out), dollar


def _escape(pattern: str, i: int, in_class: bool) -> tuple[str, int]:
    """One escape at pattern[i] == "\\" → (RE2 text, index after it)."""
    c = pattern[i + 1]
    end = i + 2
    if c in _CLASS:
        return (_CLASS[c] if in_class else f"[{_CLASS[c]}]"), end
    if c in _NEGATED:
        if in_class:
            raise AssertionError("negated shorthands in a class are handled by _char_class")
        return f"[^{_CLASS[_NEGATED[c]]}]", end
    if c == "Z" and not in_class:
        return r"\z", end
    if c == "b" and in_class:
        return r"\x08", end
    if c in "uU":
        digits = 4 if c == "u" else 8
        return "\\x{" + pattern[end:end + digits] + "}", end + digits
    if c == "N":
        close = pattern.index("}", end)
        return "\\x{%x}" % ord(unicodedata.lookup(pattern[end + 1:close])), close + 1
    if c.isdigit():
        # Python: \0, \0nn and three octal digits are characters; anything else a backreference.
        j = end
        if c == "0":
            while j < min(len(pattern), end + 2) and pattern[j] in _OCTAL:
                j += 1
        elif c in _OCTAL and pattern[end:end + 2].isdigit() and \
                all(d in _OCTAL for d in pattern[end:end + 2]):
            j = end + 2
        else:
            raise _Untranslatable(f"backreference \\{c}: RE2 has none")
        return "\\x{%x}" % int(pattern[i + 1:j], 8), j
    return pattern[i:end], end


def _char_class(pattern: str, i: int) -> tuple[str, int]:
    """The class starting at pattern[i] == "[" → (RE2 text, index after its "]")."""
    j = i + 1
    negated = pattern.startswith("^", j)
    if negated:
        j += 1
    items: list[str] = []
    outside: list[str] = []  # \W, \D, \S: complements, joined as alternatives
    first = True
    while True:
        c = pattern[j]  # Python compiled it, so the class is closed
        if c == "]" and not first:
            j += 1
            break
        first = False
        if c == "\\" and pattern[j + 1] in _NEGATED:
            if negated:
                raise _Untranslatable(f"[^…\\{pattern[j + 1]}…]: RE2 cannot intersect classes")
            outside.append(f"[^{_CLASS[_NEGATED[pattern[j + 1]]]}]")
            j += 2
        elif c == "\\":
            text, j = _escape(pattern, j, in_class=True)
            items.append(text)
        elif c in "[]^":
            items.append("\\" + c)  # RE2 would read "[:alpha:]" as a POSIX class
            j += 1
        else:
            items.append(c)
            j += 1
    body = "".join(items)
    if not outside:
        return ("[^" if negated else "[") + body + "]", j
    if body:
        outside.append(f"[{body}]")
    return "(?:" + "|".join(outside) + ")", j


__all__ = ["Engine", "Match", "Regex", "compile_regex"]
