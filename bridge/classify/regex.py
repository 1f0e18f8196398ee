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
from typing import Literal, Mapping, Protocol, overload

import re2

Engine = Literal["re2", "re"]

# Python's \w, \d and \s as RE2 classes, per kind of text. UNICODE is checked code point by
# code point in tests/test_regex.py (only characters newer than Python's Unicode database
# differ). RE2 compiles Unicode classes a hundred times slower than small ones (~5 ms for a `\w`, against 0.05), so ASCII text — most mail — runs a program
# with ASCII classes, Latin-1 text one with the Latin-1 part of each class (RE2's own Latin-1
# mode does not case-fold "é" and "É"), and only other text the Unicode program; each is
# compiled when first needed.
UNICODE = {"w": r"\p{L}\p{N}_", "d": r"\p{Nd}", "s": r"\t-\r\x1c-\x1f\x85\p{Z}"}
ASCII = {"w": "0-9A-Za-z_", "d": "0-9", "s": r"\t-\r\x1c-\x1f "}


def _latin1_class(shorthand: str, below: int = 256) -> str:
    found = [c for c in range(below) if re.fullmatch(shorthand, chr(c))]
    runs: list[str] = []
    for c in found:
        if runs and c - 1 in found:
            runs[-1] = runs[-1].split("-")[0] + "-" + "\\x{%02x}" % c
        else:
            runs.append("\\x{%02x}" % c)
    return "".join(runs)


LATIN1 = {k: _latin1_class("\\" + k) for k in ("w", "d", "s")}
# "Letters" idioms: a negated class of \W and some of \d, "_" is \w less those (RE2 has no
# class intersection, so each is written out).
_IDIOMS = {r"\W\d_": r"[^\W\d_]", r"\W_": r"[^\W_]", r"\W\d": r"[^\W\d]"}
UNICODE_IDIOMS = {r"\W\d_": r"\p{L}\p{Nl}\p{No}", r"\W_": r"\p{L}\p{N}",
                  r"\W\d": r"\p{L}\p{Nl}\p{No}_"}
ASCII_IDIOMS = {k: _latin1_class(v, 128) for k, v in _IDIOMS.items()}
LATIN1_IDIOMS = {k: _latin1_class(v) for k, v in _IDIOMS.items()}
_IDIOMS_OF = {id(UNICODE): UNICODE_IDIOMS, id(ASCII): ASCII_IDIOMS, id(LATIN1): LATIN1_IDIOMS}
_NEGATED = {"W": "w", "D": "d", "S": "s"}
_OCTAL = "01234567"
_QUANTIFIER = re.compile(r"\{(\d*),(\d*)\}")
_TOKEN = re.compile(r"\\.|.", re.DOTALL)  # one item of a class: an escape or a character


class _Untranslatable(Exception):
    """The pattern needs a feature RE2 lacks (e.g. a backreference); `re` runs it."""


class _Spans(Protocol):
    def span(self, group: int = 0, /) -> tuple[int, int]: ...


class Match:
    """One match, the same for both engines: group(), groups(), groupdict(), start(), end().
    A group's span is asked of the engine's match only when it is read: a capture reads its
    named groups, a condition only whether there was a match (RE2's wrapper answers each
    `span` in Python, and asking for every group up front was half the cost of a search)."""

    __slots__ = ("_text", "_found", "_groups", "_names")

    def __init__(self, text: str, found: _Spans, groups: int, names: Mapping[str, int]):
        self._text = text
        self._found = found
        self._groups = groups
        self._names = names

    def _span(self, group: int | str) -> tuple[int, int]:
        index = self._names[group] if isinstance(group, str) else group
        if not 0 <= index <= self._groups:
            raise IndexError(f"no such group {group!r}")
        return self._found.span(index)

    @overload
    def group(self) -> str: ...
    @overload
    def group(self, group: Literal[0]) -> str: ...
    @overload
    def group(self, group: int | str) -> str | None: ...

    def group(self, group: int | str = 0) -> str | None:
        start, end = self._span(group)
        return None if start < 0 else self._text[start:end]

    def groups(self, default: str | None = None) -> tuple[str | None, ...]:
        found = (self.group(i) for i in range(1, self._groups + 1))
        return tuple(default if g is None else g for g in found)

    def groupdict(self, default: str | None = None) -> dict[str, str | None]:
        found = ((name, self.group(i)) for name, i in self._names.items())
        return {name: default if g is None else g for name, g in found}

    def start(self, group: int | str = 0) -> int:
        return self._span(group)[0]

    def end(self, group: int | str = 0) -> int:
        return self._span(group)[1]


class _Compiled(Protocol):
    def search(self, text: str, /) -> _Spans | None: ...


class _Re2Compiled(Protocol):
    def search(self, text: str | bytes, /) -> _Spans | None: ...


class Regex:
    """A compiled admin regex. `engine` is "re2" (linear time) or "re" (`why` says why)."""

    __slots__ = ("pattern", "case_sensitive", "engine", "why", "groups", "groupindex",
                 "_python", "_sources", "_programs", "_dollar")

    def __init__(self, pattern: str, case_sensitive: bool, python: re.Pattern[str],
                 why: str = "", sources: Mapping[str, str] | None = None,
                 ascii_program: _Re2Compiled | None = None, dollar: bool = False):
        self.pattern = pattern
        self.case_sensitive = case_sensitive
        self.engine: Engine = "re" if ascii_program is None else "re2"
        self.why = why
        self.groups = python.groups
        self.groupindex: Mapping[str, int] = dict(python.groupindex)
        self._python: _Compiled = python
        self._sources = dict(sources or {})  # "ascii" | "latin-1" | "unicode" -> RE2 source
        # Compiled on first use; None: that kind of text runs on `re` (see _program).
        self._programs: dict[str, _Re2Compiled | None] = {}
        if ascii_program is not None:
            self._programs["ascii"] = ascii_program
            if self._sources["unicode"] == self._sources["ascii"]:
                self._programs["unicode"] = ascii_program  # no \w, \d or \s in the pattern
        # A `$` outside (?m) that RE2 reads as end-of-text: Python's also matches before a
        # final newline, so a text ending in one is searched once more without it.
        self._dollar = dollar

    def search(self, text: str) -> Match | None:
        if self.engine == "re":
            found = self._python.search(text)
        else:
            data, program = self._prepare(text)
            if program is None:
                found = self._python.search(text)
            else:
                found = program.search(data)
                if found is None and self._dollar and data[-1:] in ("\n", b"\n"):
                    found = program.search(data[:-1])
        return Match(text, found, self.groups, self.groupindex) if found is not None else None

    def _prepare(self, text: str) -> tuple[str | bytes, _Re2Compiled | None]:
        """The text as the program for its kind takes it: ASCII and Latin-1 as bytes, whose
        offsets are the characters' (the wrapper then skips decoding them)."""
        if text.isascii():
            return text.encode("ascii"), self._programs["ascii"]
        try:
            text.encode("latin-1")  # the cheapest test that every character is below U+0100
        except UnicodeEncodeError:
            return text, self._program("unicode")
        return text, self._program("latin-1")

    def _program(self, kind: str) -> _Re2Compiled | None:
        if kind not in self._programs:
            try:
                self._programs[kind] = _re2_compile(self._sources[kind], self.case_sensitive)
            except re2.error:
                # Only size can fail, as the ASCII program of the same shape compiled
                # (\w{1000}'s Unicode classes exceed RE2's budget): re keeps the meaning.
                self._programs[kind] = None
        return self._programs[kind]

    def __repr__(self) -> str:
        return f"Regex({self.pattern!r}, engine={self.engine!r})"

    def __reduce__(self) -> tuple[object, tuple[str, bool]]:
        # Rule sets travel to the worker processes by pickle; recompile there.
        return (_rebuild, (self.pattern, self.case_sensitive))


def _rebuild(pattern: str, case_sensitive: bool) -> Regex:
    return compile_regex(pattern, case_sensitive=case_sensitive)


def _re2_compile(source: str, case_sensitive: bool) -> _Re2Compiled:
    options = re2.Options()
    options.case_sensitive = case_sensitive
    options.log_errors = False  # RE2 would print every refused pattern to stderr
    compiled: _Re2Compiled = re2.compile(source, options)
    return compiled


def compile_regex(pattern: str, *, case_sensitive: bool = False) -> Regex:
    """Raises re.error (Python's message, with its position) when the pattern is invalid."""
    python = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE)
    try:
        if python.flags & (re.VERBOSE | re.ASCII):
            raise _Untranslatable("RE2 has no (?x) or (?a) flag")
        try:
            sources = {kind: _translate(pattern, python.flags, classes)
                       for kind, classes in (("ascii", ASCII), ("latin-1", LATIN1),
                                             ("unicode", UNICODE))}
        except (IndexError, ValueError, KeyError) as exc:  # e.g. a "[" inside (?#…)
            raise _Untranslatable(f"cannot translate for RE2: {exc}") from None
        program = _re2_compile(sources["ascii"][0], case_sensitive)
    except _Untranslatable as exc:
        return Regex(pattern, case_sensitive, python, str(exc))
    except re2.error as exc:
        why = exc.args[0].decode(errors="replace") if exc.args and isinstance(
            exc.args[0], bytes) else str(exc)
        return Regex(pattern, case_sensitive, python, why)
    return Regex(pattern, case_sensitive, python, "",
                 {kind: source for kind, (source, _) in sources.items()}, program,
                 sources["ascii"][1])


def _translate(pattern: str, flags: int, classes: Mapping[str, str]) -> tuple[str, bool]:
    """RE2 syntax with Python's meaning, and whether a non-multiline `$` occurs."""
    out: list[str] = []
    dollar = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            text, i = _escape(pattern, i, classes, in_class=False)
            out.append(text)
        elif c == "[":
            text, i = _char_class(pattern, i, classes)
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


def _escape(pattern: str, i: int, classes: Mapping[str, str], in_class: bool
            ) -> tuple[str, int]:
    """One escape at pattern[i] == "\\" → (RE2 text, index after it)."""
    c = pattern[i + 1]
    end = i + 2
    if c in classes:
        return (classes[c] if in_class else f"[{classes[c]}]"), end
    if c in _NEGATED:
        if in_class:
            raise AssertionError("negated shorthands in a class are handled by _char_class")
        return f"[^{classes[_NEGATED[c]]}]", end
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


def _char_class(pattern: str, i: int, classes: Mapping[str, str]) -> tuple[str, int]:
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
                return _idiom(pattern, i, classes)
            outside.append(f"[^{classes[_NEGATED[pattern[j + 1]]]}]")
            j += 2
        elif c == "\\":
            text, j = _escape(pattern, j, classes, in_class=True)
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


def _idiom(pattern: str, i: int, classes: Mapping[str, str]) -> tuple[str, int]:
    """`[^\\W\\d_]` and its kin (letters, letters and digits…), the only negated classes with
    a negated shorthand RE2 can be given; others need an intersection."""
    close = pattern.find("]", i + 2)
    inside = pattern[i + 2:close]
    for key, body in _IDIOMS_OF[id(classes)].items():
        if sorted(_TOKEN.findall(inside)) == sorted(_TOKEN.findall(key)):
            return f"[{body}]", close + 1
    raise _Untranslatable(f"[^{inside}]: RE2 cannot intersect classes")


__all__ = ["Engine", "Match", "Regex", "compile_regex"]
