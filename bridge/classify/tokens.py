"""Which ATES token (seed 001) may be believed, and is its ID/password right?

Only a token from a configured source counts: it makes a message automated on its own, its
CustomerID names the account and its AlertID/TicketID the alert. A token whose elements carry
no `source` cannot be attributed to any application and is ignored, with the reason recorded
in the trace. When the config sets an ATES ID or password, a token from a configured source
that does not carry them is rejected: a forged token must not open or close tickets.
"""

from __future__ import annotations

import hmac

from bridge.models import AtesToken, ParsedMessage
from bridge.parse.ates import DTD_PROBLEM

_ELEMENTS = (("AlertID", "alert_id"), ("TicketID", "ticket_id"), ("CustomerID", "customer_id"),
             ("DeviceID", "device_id"))


def token_source(token: AtesToken, notes: list[str]) -> str | None:
    """The application a token comes from: the source of its elements."""
    sources = []
    for label, attr in _ELEMENTS:
        ref = getattr(token, attr)
        if ref is None:
            continue
        if ref.source and ref.source.strip():
            sources.append(ref.source.strip())
        else:
            notes.append(f"ates: {label} has no source attribute")
    if len({s.casefold() for s in sources}) > 1:
        notes.append("ates: token elements name different sources: " + ", ".join(sources))
    return sources[0] if sources else None


def trusted_token(msg: ParsedMessage, sources: frozenset[str], ates_id: str | None,
                  password: str | None, steps: list[str]
                  ) -> tuple[AtesToken | None, str | None, str | None]:
    """(token, its source, None) for the first trusted token; (None, None, reason) when a
    token from a configured source has the wrong ID or password; (None, None, None) if none."""
    configured = {s.strip().casefold(): s for s in sources}
    for token in msg.ates:
        notes = [f"ates: {p}" for p in token.problems]
        source = token_source(token, notes)
        steps.extend(dict.fromkeys(notes))  # the parser may already have said the same
        if source is None:
            steps.append("ates: token names no source; ignored")
            continue
        if source.casefold() not in configured:
            steps.append(f"ates: token from {source!r} is not from a configured source; ignored")
            continue
        if DTD_PROBLEM in token.problems:
            return None, None, f"ATES token from {source!r}: {DTD_PROBLEM}"
        if ates_id and (token.id or "").strip().casefold() != ates_id.strip().casefold():
            return None, None, f"ATES token ID {token.id or '(none)'!r} is not the configured ID"
        if password:
            if token.pw is None:
                return None, None, "ATES token carries no password (PW)"
            if not hmac.compare_digest(token.pw.strip().encode(), password.encode()):
                return None, None, "wrong ATES password (PW)"
        steps.append(f"ates: token from {source!r} accepted")
        return token, source, None
    return None, None, None
