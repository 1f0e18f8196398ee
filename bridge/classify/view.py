"""One message as the rules see it: normalised once, then shared by every rule.

Rules never touch ParsedMessage directly. The view computes each normalised field (folded
subject, its word set, sender domain, folded body, header values) at most once per message,
and only when some rule asks, so a thousand rules do not fold a long body a thousand times.
The trusted ATES token (one from a configured source) is attached by the engine before any
rule runs: token fields of an untrusted token are invisible to rules.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Generic, Literal, TypeVar, overload

from bridge.classify.text import nfc, words
from bridge.models import AtesToken, ParsedMessage

# Bodies are matched on their first 256 KiB of text: enough for any alert, and a bound on the
# cost of `contains`/regex conditions over a huge pasted log.
MAX_BODY_CHARS = 256 * 1024

BodyChoice = Literal["auto", "text", "html"]
BODY_CHOICES: dict[str, BodyChoice] = {"auto": "auto", "text": "text", "html": "html"}
TOKEN_FIELDS = ("id", "customer_id", "device_id", "alert_id", "ticket_id", "source")
FIELDS = ("subject", "sender", "sender_name", "body", "to")


T = TypeVar("T")


class cached_property(Generic[T]):  # noqa: N801 - used as functools' is
    """functools.cached_property without its lock: Python 3.11's takes an RLock on every
    first read, six times a message, and a view belongs to one message on one thread.
    Computed on the first read, then an ordinary instance attribute."""

    def __init__(self, compute: Callable[["MessageView"], T]) -> None:
        self.compute = compute
        self.name = compute.__name__

    @overload
    def __get__(self, view: None, owner: type) -> "cached_property[T]": ...
    @overload
    def __get__(self, view: "MessageView", owner: type) -> T: ...

    def __get__(self, view: "MessageView | None", owner: type) -> "T | cached_property[T]":
        if view is None:
            return self
        value = view.__dict__[self.name] = self.compute(view)
        return value


class MessageView:
    """Lazily normalised fields of one ParsedMessage."""

    def __init__(self, msg: ParsedMessage, token: AtesToken | None = None,
                 token_source: str | None = None):
        self.msg = msg
        self.token = token
        self.token_source = token_source

    # -- subject ---------------------------------------------------------------------------
    @cached_property
    def subject(self) -> str:
        return nfc(self.msg.subject or "")

    @cached_property
    def fsubject(self) -> str:
        return self.subject.casefold()

    @cached_property
    def subject_words(self) -> frozenset[str]:
        return words(self.fsubject)

    # -- sender ----------------------------------------------------------------------------
    @cached_property
    def sender(self) -> str:
        # Kept literally (an encoded-word stays "=?utf-8?q?x?=@example.com"): never decoded.
        return (self.msg.sender or "").strip().lower()

    @cached_property
    def domain(self) -> str:
        return self.sender.rpartition("@")[2] if "@" in self.sender else ""

    # -- body ------------------------------------------------------------------------------
    @cached_property
    def body(self) -> str:
        # NFC but with its lines kept: body regexes may anchor on lines with (?m).
        return unicodedata.normalize("NFC", (self.msg.body or "")[:MAX_BODY_CHARS])

    @cached_property
    def html_body(self) -> str:
        """The HTML alternative's text (NFC, lines kept), or "" when the mail has none."""
        return unicodedata.normalize("NFC", self.msg.html_body[:MAX_BODY_CHARS])

    def body_for(self, choice: BodyChoice) -> str:
        """The body a rule reads: "text" (v1) is `body` — the plain part, or the HTML part's
        text when there is no plain part; "html" is the HTML alternative's text when the mail
        has one beside its plain part, else `body`; "auto" is "html" when the plain part is
        a stub (`ParsedMessage.text_is_stub`, docs/parsing.md "Body choice"), else "text"."""
        if choice == "text" or not self.msg.html_body:
            return self.body
        if choice == "html" or self.msg.text_is_stub:
            return self.html_body
        return self.body

    @cached_property
    def fbody(self) -> str:
        return self.body.casefold()

    @cached_property
    def body_lines(self) -> tuple[str, ...]:
        """Body lines, NFC and trimmed but not folded (account search works line by line)."""
        return tuple(" ".join(line.split()) for line in self.body.splitlines())

    # -- generic field access for conditions ------------------------------------------------
    def values(self, field: str) -> tuple[str, ...]:
        """The NFC (not folded) values of a condition field; () when absent."""
        if field == "subject":
            return (self.subject,)
        if field == "sender":
            return (self.sender,)
        if field == "sender_name":
            return (nfc(self.msg.sender_name or ""),)
        if field == "body":
            return (self.body,)
        if field == "to":
            return tuple(r.strip().lower() for r in self.msg.recipients)
        if field.startswith("header:"):
            name = field[7:].strip().lower()
            return tuple(nfc(v) for v in self.msg.headers.get(name, ()) if isinstance(v, str))
        if field.startswith("token."):
            value = self.token_value(field[6:])
            return (value,) if value is not None else ()
        return ()

    def folded_values(self, field: str) -> tuple[str, ...]:
        if field == "subject":
            return (self.fsubject,)
        if field == "body":
            return (self.fbody,)
        return tuple(v.casefold() for v in self.values(field))

    def token_value(self, name: str) -> str | None:
        t = self.token
        if t is None:
            return None
        if name == "source":
            return self.token_source
        if name == "id":
            return t.id if isinstance(t.id, str) else None
        ref = getattr(t, name, None)
        value = (getattr(ref, "name", None) or "").strip() if ref is not None else ""
        return value or None
