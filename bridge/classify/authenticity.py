"""Is the sender who it says it is? (SPEC §3.7a, RFC 8601 §5)

A message is authenticated when either
- an `Authentication-Results` header written by one of the configured, trusted authserv-ids,
  standing above our border MTA's `Received` header (see `authres.trusted_trace`; headers
  below it were written by the sender, whatever id they claim), says `dkim=pass` with
  `header.d` (or `header.i`) in the From domain, or `spf=pass` with `smtp.mailfrom` in the
  From domain — strict alignment, no parent domains; or
- the border `Received` header — the lowest one our own servers wrote — says the message came
  from a trusted relay, by the IP address or reverse-DNS name our server recorded in the
  comment ("from helo (rdns [192.0.2.7])"). The HELO name is chosen by the client, so it is
  never trusted.
The sender is the addr-spec of From (never its display name). A sender address containing an
encoded-word is never authenticated: it is not the address it looks like.

`verify` answers for rules with `require_authentication`; `mx_failure` answers the weaker
question every resolving mail must pass: did our MX positively say the sender is not who it
claims (a trusted header present, no aligned pass)?
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from bridge.classify.authres import parse_results, trusted_trace
from bridge.models import ParsedMessage

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")


def trace_of(msg: ParsedMessage) -> tuple[tuple[str, str], ...]:
    """The trace headers in order; a message built without the parser (tests, tools) lists
    its Authentication-Results above its Received headers."""
    if msg.trace:
        return msg.trace
    return tuple(("authentication-results", v) for v in
                 msg.headers.get("authentication-results", ()) if isinstance(v, str)) + \
        tuple(("received", v) for v in msg.headers.get("received", ()) if isinstance(v, str))


def _domain_of(value: str) -> str:
    return value.strip().lower().rpartition("@")[2].rstrip(".")


def _hosts(authserv_ids: frozenset[str], trusted_hosts: frozenset[str]) -> frozenset[str]:
    return trusted_hosts or authserv_ids


def check_results(msg: ParsedMessage, sender_domain: str, authserv_ids: frozenset[str],
                  trusted_hosts: frozenset[str] = frozenset()) -> tuple[bool | None, str]:
    """(True, why) on an aligned pass in a trusted header; (False, why) when a trusted header
    exists without one; (None, why) when no trusted header exists at all."""
    trusted = {a.lower() for a in authserv_ids}
    if not trusted:
        return None, "no trusted authserv-id is configured"
    boundary = trusted_trace(trace_of(msg), _hosts(frozenset(trusted), trusted_hosts))
    seen: list[str] = []
    trusted_header = False
    for value in boundary.results:
        authserv, results = parse_results(value)
        if authserv not in trusted:
            continue
        trusted_header = True
        for res in results:
            seen.append(f"{res.method}={res.result}")
            if res.result != "pass":
                continue
            if res.method == "dkim":
                for key in ("header.d", "header.i"):
                    if key in res.props and _domain_of(res.props[key]) == sender_domain:
                        return True, f"dkim=pass {key}={res.props[key]} by {authserv}"
            elif res.method == "spf" and "smtp.mailfrom" in res.props:
                if _domain_of(res.props["smtp.mailfrom"]) == sender_domain:
                    return True, (f"spf=pass smtp.mailfrom={res.props['smtp.mailfrom']} "
                                  f"by {authserv}")
    if not trusted_header:
        return None, ("no Authentication-Results header from a trusted authserv-id ("
                      + ", ".join(sorted(trusted)) + ") above our border Received header")
    if not seen:
        return False, "the trusted Authentication-Results header reports no dkim or spf result"
    return False, (f"{', '.join(seen)} from a trusted authserv-id, but no dkim/spf pass for "
                   f"the sender's domain {sender_domain}")


@lru_cache(maxsize=32)
def _relays(relays: frozenset[str]) -> tuple[tuple[_Net, ...], frozenset[str]]:
    nets: list[_Net] = []
    names: set[str] = set()
    for r in relays:
        try:
            nets.append(ipaddress.ip_network(r.strip(), strict=False))
        except ValueError:
            names.add(r.strip().lower().rstrip("."))
    return tuple(nets), frozenset(names)


_FROM = re.compile(r"^\s*from\s+\S+\s+(.*?)(?:\s+by\s|$)", re.IGNORECASE | re.DOTALL)


def check_relay(msg: ParsedMessage, relays: frozenset[str],
                hosts: frozenset[str] = frozenset()) -> tuple[bool, str]:
    """Did our border MTA receive the message from a trusted relay? The border header is the
    lowest of our own Received headers (the topmost one when `hosts` is not given)."""
    received = [v for v in msg.headers.get("received", ()) if isinstance(v, str)]
    if not relays or not received:
        return False, "not received from a trusted relay"
    border = trusted_trace(trace_of(msg), hosts).border if hosts else received[0]
    if border is None:
        return False, "not received from a trusted relay (no Received header of our own)"
    nets, names = _relays(relays)
    m = _FROM.match(border)
    # Only what sits inside the parenthesised comment was written by our server.
    inside = " ".join(c[1:-1] for c in _COMMENT.findall(m.group(1) if m else ""))
    for word in re.split(r"[\s\[\]()]+", inside):
        if not word:
            continue
        text = word[5:] if word.lower().startswith("ipv6:") else word
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            if word.lower().rstrip(".") in names:
                return True, f"received from trusted relay {word.lower()}"
            continue
        if any(ip in net for net in nets):
            return True, f"received from trusted relay [{ip}]"
    return False, "not received from a trusted relay"


def _domain(sender: str) -> str:
    return sender.rpartition("@")[2] if "@" in sender else ""


def verify(msg: ParsedMessage, sender: str, authserv_ids: frozenset[str],
           relays: frozenset[str], trusted_hosts: frozenset[str] = frozenset()
           ) -> tuple[bool, str]:
    """(authenticated?, why) for a message whose literal sender address is `sender`."""
    if "=?" in sender:
        return False, f"sender address {sender!r} contains an encoded-word"
    domain = _domain(sender)
    if not domain:
        return False, "the message has no sender address"
    ok, why = check_results(msg, domain, authserv_ids, trusted_hosts)
    if ok:
        return True, why
    relay_ok, relay_why = check_relay(msg, relays, _hosts(authserv_ids, trusted_hosts))
    if relay_ok:
        return True, relay_why
    return False, why


def mx_failure(msg: ParsedMessage, sender: str, authserv_ids: frozenset[str],
               relays: frozenset[str], trusted_hosts: frozenset[str] = frozenset()
               ) -> str | None:
    """Why our MX says this sender is not who it claims: a trusted Authentication-Results is
    present and shows no aligned pass for the From domain (and no trusted relay vouches for
    the message). None when no trusted header exists or it shows an aligned pass."""
    if not authserv_ids:
        return None
    domain = _domain(sender)
    if "=?" in sender or not domain:
        ok: bool | None = False
        why = f"sender address {sender!r} cannot be authenticated"
        if check_results(msg, "", authserv_ids, trusted_hosts)[0] is None:
            return None
    else:
        ok, why = check_results(msg, domain, authserv_ids, trusted_hosts)
    if ok is None or ok:
        return None
    if check_relay(msg, relays, _hosts(authserv_ids, trusted_hosts))[0]:
        return None
    return why
