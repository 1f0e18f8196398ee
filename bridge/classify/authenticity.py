"""Is the sender who it says it is? (SPEC §3.7a)

A rule with `require_authentication = true` accepts a message only when either
- an `Authentication-Results` header (RFC 8601) written by one of the configured, trusted
  authserv-ids says `dkim=pass` with `header.d` (or `header.i`) in the sender's domain, or
  `spf=pass` with `smtp.mailfrom` in the sender's domain; or
- the topmost `Received` header — the one our own mail server wrote — says the message came
  from a trusted relay, by the IP address or reverse-DNS name our server recorded in the
  comment ("from helo (rdns [192.0.2.7])"). The HELO name is chosen by the client, so it is
  never trusted.
A header from any other authserv-id is ignored: anyone can write one. The MSP's mail server
must remove incoming headers that claim its own authserv-id (RFC 8601 §5). A sender address
containing an encoded-word is never authenticated: it is not the address it looks like.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache

from bridge.models import ParsedMessage

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network
_COMMENT = re.compile(r"\((?:[^()\\]|\\.)*\)")
_PROP = re.compile(r'([A-Za-z0-9_.\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s;]+)')


def _strip_comments(value: str) -> str:
    previous = None
    while previous != value:  # nested comments: strip innermost first
        previous, value = value, _COMMENT.sub(" ", value)
    return value


def parse_results(value: str) -> tuple[str, list[tuple[str, str, dict[str, str]]]]:
    """(authserv-id, [(method, result, {property: value})]) of one header value."""
    parts = _strip_comments(value).split(";")
    head = parts[0].split()
    authserv = head[0].lower() if head else ""
    results = []
    for part in parts[1:]:
        props = [(k.lower(), v.strip('"')) for k, v in _PROP.findall(part)]
        if not props:
            continue
        method, result = props[0]
        results.append((method, result.lower(), dict(props[1:])))
    return authserv, results


def _domain_of(value: str) -> str:
    return value.strip().lower().rpartition("@")[2].rstrip(".")


def check_results(msg: ParsedMessage, sender_domain: str,
                  authserv_ids: frozenset[str]) -> tuple[bool, str]:
    trusted = {a.lower() for a in authserv_ids}
    seen: list[str] = []
    trusted_header = False
    for value in msg.headers.get("authentication-results", ()):
        if not isinstance(value, str):
            continue
        authserv, results = parse_results(value)
        if authserv not in trusted:
            continue
        trusted_header = True
        for method, result, props in results:
            seen.append(f"{method}={result}")
            if result != "pass":
                continue
            if method == "dkim":
                for key in ("header.d", "header.i"):
                    if key in props and _domain_of(props[key]) == sender_domain:
                        return True, f"dkim=pass {key}={props[key]} by {authserv}"
            elif method == "spf" and "smtp.mailfrom" in props:
                if _domain_of(props["smtp.mailfrom"]) == sender_domain:
                    return True, f"spf=pass smtp.mailfrom={props['smtp.mailfrom']} by {authserv}"
    if not trusted:
        return False, "no trusted authserv-id is configured"
    if not trusted_header:
        return False, ("no Authentication-Results header from a trusted authserv-id ("
                       + ", ".join(sorted(trusted)) + ")")
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


def check_relay(msg: ParsedMessage, relays: frozenset[str]) -> tuple[bool, str]:
    received = [v for v in msg.headers.get("received", ()) if isinstance(v, str)]
    if not relays or not received:
        return False, "not received from a trusted relay"
    nets, names = _relays(relays)
    m = _FROM.match(received[0])
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


def verify(msg: ParsedMessage, sender: str, authserv_ids: frozenset[str],
           relays: frozenset[str]) -> tuple[bool, str]:
    """(authenticated?, why) for a message whose literal sender address is `sender`."""
    if "=?" in sender:
        return False, f"sender address {sender!r} contains an encoded-word"
    domain = sender.rpartition("@")[2] if "@" in sender else ""
    if not domain:
        return False, "the message has no sender address"
    ok, why = check_results(msg, domain, authserv_ids)
    if ok:
        return True, why
    relay_ok, relay_why = check_relay(msg, relays)
    if relay_ok:
        return True, relay_why
    return False, why
