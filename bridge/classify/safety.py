"""The safety stage: mail that is certainly not an alert, recognised before any rule runs.

A detect rule broad enough to match "CRITICAL" in a subject also matches the bounce of our own
forward that quotes it, and the out-of-office reply to it. Such mail must never open a ticket,
be forwarded or be answered, whatever the rules say, or mailbridge feeds a mail loop. Three
kinds are certain (issue 14, RFC 3834):

- **our own mail**: our `X-Mailbridge` header, or a sender (From or Return-Path) that is one of
  our addresses — `smtp.from_address`, `routing.own_addresses`, and the watched mailboxes' own
  addresses (an IMAP username that is an address), which count as ours without being listed;
- **bounces and delivery reports**: a null sender (`Return-Path: <>`), `MAILER-DAEMON` or
  `postmaster` as sender or Return-Path, `multipart/report` (RFC 6522: DSNs and MDNs);
- **auto-replies**: `Auto-Submitted: auto-replied` (RFC 3834 §5), `X-Autoreply`,
  `X-Autorespond`.

`Auto-Submitted: auto-generated` and `Precedence: bulk` are not in the list: monitoring tools
send them on genuine alerts (RFC 3834 §5 says auto-generated mail is what they send). Pure: no
I/O; `own_addresses` reads only the settings.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, Iterable

from bridge.models import ParsedMessage

if TYPE_CHECKING:
    from bridge.config import Settings

__all__ = ["MARKER", "own_addresses", "unsafe_reason", "forward_loop_problems", "address_of"]

MARKER = "X-Mailbridge"

_BOUNCE_LOCALPARTS = frozenset({"mailer-daemon", "postmaster"})
_AUTO_REPLY_HEADERS = ("x-autoreply", "x-autorespond")
_ANGLE = re.compile(r"<([^<>]*)>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


def address_of(value: str) -> str:
    """The lower-cased addr-spec of `local@domain`, `<local@domain>` or `Name <local@domain>`."""
    text = value.strip()
    match = None
    for match in _ANGLE.finditer(text):
        pass  # the last <...> is the address; a display name may contain one of its own
    if match is not None:
        text = match.group(1)
    return text.strip().lower()


def own_addresses(settings: Settings) -> frozenset[str]:
    """Every address mail from mailbridge (or to its mailboxes) carries, lower-cased.

    The watched mailboxes' own addresses count without being listed: a forward to the mailbox
    we read is a loop, however the config names it. An IMAP username that is not an address
    (a plain login name) says nothing about an address and is left out.
    """
    found = {address_of(a) for a in settings.routing.own_addresses}
    if settings.smtp is not None:
        found.add(address_of(settings.smtp.from_address))
        if settings.smtp.username and "@" in settings.smtp.username:
            found.add(address_of(settings.smtp.username))
    for mailbox in settings.imap:
        if "@" in mailbox.username:
            found.add(address_of(mailbox.username))
    found.discard("")
    return frozenset(found)


def _one_line(text: str, limit: int = 60) -> str:
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _return_paths(msg: ParsedMessage) -> list[str]:
    return [v.strip() for v in msg.headers.get("return-path", ())]


@lru_cache(maxsize=8)
def _ours(own: frozenset[str]) -> frozenset[str]:
    """Our addresses as compared: the same configured set for every message (a frozenset is
    its own frozenset(), and caches its hash)."""
    return frozenset(address_of(a) for a in own) - {""}


def unsafe_reason(msg: ParsedMessage, own: Iterable[str]) -> str | None:
    """Why `msg` is certainly not an alert (and must never be forwarded or answered), or None.

    Checked in order of certainty: our own marker, our own addresses, a bounce, an auto-reply.
    """
    marker = msg.header(MARKER)
    if marker:
        return f"sent by mailbridge itself ({MARKER}: {_one_line(marker, 40)})"
    ours = _ours(frozenset(own))
    return_paths = _return_paths(msg)
    sender = msg.sender.strip().lower()
    for address in [sender, *(address_of(v) for v in return_paths)]:
        if address and address in ours:
            return f"sent from {_one_line(address)}, one of mailbridge's own addresses"

    if any(address_of(v) == "" for v in return_paths):
        return "a bounce (empty Return-Path <>: the null sender)"
    for address in [sender, *(address_of(v) for v in return_paths)]:
        if address.split("@", 1)[0] in _BOUNCE_LOCALPARTS:
            return f"a bounce or delivery report (from {_one_line(address)})"
    ctype = msg.header("content-type").strip().lower()
    if ctype.startswith("multipart/report"):
        return "a bounce or delivery report (multipart/report)"

    for value in msg.headers.get("auto-submitted", ()):
        if value.split(";", 1)[0].strip().lower() == "auto-replied":
            return "an auto-reply (Auto-Submitted: auto-replied)"
    for name in _AUTO_REPLY_HEADERS:
        if msg.header(name):
            return f"an auto-reply ({name.title()} header)"
    return None


def forward_loop_problems(settings: Settings) -> list[str]:
    """Config keys that would send mail to one of our own addresses (a loop), one line each."""
    own = own_addresses(settings)
    out = []
    for key, value in (("routing.internal_address", settings.routing.internal_address),
                       ("routing.regular_forward_to", settings.routing.regular_forward_to),
                       ("routing.admin_address", settings.routing.admin_address),
                       ("xml_api.bcc", settings.xml_api.bcc)):
        if value and address_of(value) in own:
            out.append(f"{key}: {value} is one of mailbridge's own addresses (smtp.from_address,"
                       " routing.own_addresses or a watched mailbox): mail sent there would"
                       " come back and loop")
    return out
