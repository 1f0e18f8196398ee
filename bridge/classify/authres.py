"""Authentication-Results (RFC 8601) and the trace block our own servers wrote.

The parser follows the RFC's grammar, not a split on ";": quoted strings and (nested)
comments are read as units, so `smtp.mailfrom="x;dkim=pass header.d=a.example"@evil.example`
is one SPF property whose domain is evil.example, never a DKIM pass. A malformed result is
skipped up to the next top-level ";" and never invents a pass.

`trusted_results` applies RFC 8601 §5 to the order of the trace headers: a header counts only
when it stands above a `Received` header written by one of our hosts (`by` host in
`trusted_hosts`), and above every `Received` header written by anyone else. Headers below our
border MTA's `Received` were written by the sender, whatever authserv-id they claim. The local
delivery hop (Dovecot LMTP, `with LMTP`) that sits above the MX's header counts as ours while
no `Received` of another host has been seen.

The `authres` PyPI package parses the same grammar, but its last release is from 2019; this
module is small and held to the grammar by property tests (tests/test_auth_boundary.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

# A bare word ends at whitespace, comment and quote openers, and the separators the grammar
# gives meaning to.
_WORD_RUN = re.compile(r'[^ \t\r\n()";=/]+')
_SPACES = re.compile(r"[ \t\r\n]+")
_COMMENT_STOP = re.compile(r"[\\()]")
_QUOTED_RUN = re.compile(r'[^"\\]+')
_FLAT_COMMENT = re.compile(r"\([^()]*\)")  # a comment with no comment inside
_LMTP = re.compile(r"^lmtp[sa]{0,2}$", re.IGNORECASE)


# A tuple: a Received header has dozens of tokens, and a frozen dataclass is 3x slower to make.
class Token(NamedTuple):
    kind: str  # "word", "qs" (quoted string, unquoted), or one of ";", "=", "/"
    text: str
    spaced: bool  # whitespace or a comment came before it


class Result(NamedTuple):
    method: str
    result: str
    props: dict[str, str]


def tokenize(value: str) -> list[Token]:
    """Tokens of a structured header value; comments and folding whitespace only separate.
    Runs of word, space and quoted characters are taken by a regex each, not character by
    character: this runs on the Received and Authentication-Results headers of most mail."""
    tokens: list[Token] = []
    i, n = 0, len(value)
    spaced = False
    while i < n:
        c = value[i]
        if c in " \t\r\n":
            spaced, i = True, _run_end(_SPACES, value, i)
        elif c == "(":
            depth, i = 1, i + 1
            while depth and (m := _COMMENT_STOP.search(value, i)) is not None:
                if m.group() == "\\":
                    i = m.start() + 2  # the escaped character is skipped
                else:
                    depth += 1 if m.group() == "(" else -1
                    i = m.end()
            if depth:
                i = max(i, n)  # unterminated: the comment runs to the end
            spaced = True
        elif c == ")":  # a stray closer: treat as a separator, never as text
            spaced, i = True, i + 1
        elif c == '"':
            out: list[str] = []
            i += 1
            while i < n and value[i] != '"':
                if value[i] == "\\":
                    if i + 1 < n:
                        i += 1
                    out.append(value[i])
                    i += 1
                else:
                    end = _run_end(_QUOTED_RUN, value, i)
                    out.append(value[i:end])
                    i = end
            i += 1  # the closing quote (or the end of an unterminated string)
            tokens.append(Token("qs", "".join(out), spaced))
            spaced = False
        elif c in ";=/":
            tokens.append(Token(c, c, spaced))
            spaced, i = False, i + 1
        else:
            end = _run_end(_WORD_RUN, value, i)
            tokens.append(Token("word", value[i:end], spaced))
            i, spaced = end, False
    return tokens


def _run_end(run: re.Pattern[str], value: str, i: int) -> int:
    """Where the run of `run`'s characters that starts at `i` ends (the caller saw one)."""
    m = run.match(value, i)
    return m.end() if m is not None else i + 1


class _Malformed(Exception):
    pass


class _Reader:
    def __init__(self, tokens: list[Token]):
        self.tokens, self.pos = tokens, 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def kind(self) -> str | None:
        tok = self.peek()
        return tok.kind if tok is not None else None

    def take(self, *kinds: str) -> Token:
        tok = self.peek()
        if tok is None or tok.kind not in kinds:
            raise _Malformed
        self.pos += 1
        return tok

    def skip_to_semicolon(self) -> None:
        while self.kind() not in (None, ";"):
            self.pos += 1

    def pvalue(self) -> str:
        """value / [local-part] "@" domain: a quoted local part must be followed directly by
        "@domain"; anything else glued together is malformed."""
        first = self.take("word", "qs")
        nxt = self.peek()
        if nxt is not None and not nxt.spaced and nxt.kind in ("word", "qs"):
            if first.kind == "qs" and nxt.kind == "word" and nxt.text.startswith("@"):
                self.pos += 1
                return first.text + nxt.text
            raise _Malformed
        return first.text


def _resinfo(r: _Reader) -> Result:
    method = r.take("word").text.lower()
    if r.kind() == "/":
        r.take("/")
        r.take("word")
    r.take("=")
    result = r.take("word").text.lower()
    props: dict[str, str] = {}
    while r.kind() not in (None, ";"):
        name = r.take("word").text.lower()
        r.take("=")
        value = r.pvalue()
        if "." not in name.strip("."):
            continue  # reason=, or a vendor's bare keyword (action=none): not a property
        props.setdefault(name, value)  # a repeated property does not override the first
    return Result(method, result, props)


def parse_results(value: str) -> tuple[str, list[Result]]:
    """(authserv-id lower-cased, results) of one header value. Never raises; a result that
    does not follow the grammar is left out."""
    r = _Reader(tokenize(value))
    try:
        authserv = r.take("word", "qs").text.lower()
    except _Malformed:
        return "", []
    version = r.peek()
    if version is not None and version.kind == "word" and version.text.isdigit():
        r.pos += 1  # authres-version
    results: list[Result] = []
    r.skip_to_semicolon()
    while r.kind() is not None:
        r.take(";")
        start = r.pos
        try:
            tok = r.peek()
            if tok is None or tok.kind == ";":
                continue
            if tok.kind == "word" and tok.text.lower() == "none" and (
                    r.pos + 1 >= len(r.tokens) or r.tokens[r.pos + 1].kind == ";"):
                r.pos += 1
                continue
            results.append(_resinfo(r))
        except _Malformed:
            r.pos = max(r.pos, start)
            r.skip_to_semicolon()
    return authserv, results


# -- the trace block -------------------------------------------------------------------------


def received_words(head: str) -> list[str]:
    """The words and quoted strings of a Received header's clauses, comments removed: what
    `tokenize` yields as words, the same list (tests/test_auth_boundary.py holds it to that)."""
    flat = _FLAT_COMMENT.sub(" ", head) if '"' not in head and "\\" not in head else "("
    if "(" not in flat:
        # Without quotes, escapes or nested comments, the words are what is left once the
        # comments are cut out: one regex instead of the tokenizer (most Received headers).
        return _WORD_RUN.findall(flat)
    return [t.text for t in tokenize(head) if t.kind in ("word", "qs")]


def received_clauses(value: str) -> dict[str, str]:
    """The `from`, `by`, `via`, `with`, `id`, `for` clauses of a Received header (first word
    of each, comments removed), from the part before its date."""
    head = value.rpartition(";")[0] if ";" in value else value
    words = received_words(head)
    clauses: dict[str, str] = {}
    i = 0
    while i < len(words) - 1:
        key = words[i].lower()
        if key in ("from", "by", "via", "with", "id", "for") and key not in clauses:
            clauses[key] = words[i + 1]
            i += 2
        else:
            i += 1
    return clauses


def _host(name: str) -> str:
    return name.strip("[]").lower().rstrip(".")


@dataclass(frozen=True)
class TrustedTrace:
    results: tuple[str, ...]  # A-R values above our border, in header order
    border: str | None  # the Received header our border MTA wrote (whom it received from)


def trusted_trace(trace: tuple[tuple[str, str], ...], trusted_hosts: frozenset[str]
                  ) -> TrustedTrace:
    """Apply the trust boundary to (name, value) trace headers in top-to-bottom order."""
    hosts = {_host(h) for h in trusted_hosts}
    pending: list[str] = []
    trusted: list[str] = []
    border: str | None = None
    seen_ours = False
    for name, value in trace:
        if name == "authentication-results":
            pending.append(value)
            continue
        if name != "received":
            continue
        clauses = received_clauses(value)
        by = _host(clauses.get("by", ""))
        if by and by in hosts:
            seen_ours = True
            trusted.extend(pending)
            pending, border = [], value
        elif not seen_ours and _LMTP.match(clauses.get("with", "")):
            # The local delivery hop sits above the MX's header; it adds no results.
            continue
        else:
            break
    return TrustedTrace(tuple(trusted), border)
