"""Delivery targets by kind and instance: the registry `Delivery` looks each outbox row up in.

A target is addressed `kind:name` (`psa:default`, `smtp:default`, `imap:default`,
`webhook:<name>`); a row names its instance in `payload.target` (webhooks), else it is
"default". `build_targets` makes the registry from one configuration's peers, so a reload
makes a new one. A row whose target is not in the registry (a reload removed it, or a kind this
version does not know) is held with the reason, never dropped (`Delivery`).
"""

from __future__ import annotations

from bridge.deliver.imap_target import ImapMoveTarget
from bridge.deliver.mail_target import MailTarget
from bridge.deliver.peers import Peers
from bridge.deliver.psa_target import PsaTarget
from bridge.deliver.settle import TargetEnv
from bridge.deliver.webhook_target import HookTarget
from bridge.seams import Target
from bridge.store.db import OutboxRow

KINDS = frozenset({"psa", "smtp", "webhook", "imap"})  # the kinds this version can deliver
# Kinds claimed even when no instance is configured, so that a row for a removed instance is
# held with the reason. Not the PSA: its rows are queued even with the PSA disabled, and wait
# unclaimed until one is configured (claiming them would only count attempts).
CLAIMED_WITHOUT_INSTANCE = frozenset({"smtp", "webhook", "imap"})


def address(kind: str, name: str = "default") -> str:
    return f"{kind}:{name}"


def address_of(row: OutboxRow) -> str:
    return address(row.kind, str(row.payload.get("target") or "default"))


def build_targets(env: TargetEnv, peers: Peers) -> dict[str, Target]:
    """The registry for one configuration. SMTP and IMAP moves always have their instance:
    without an SMTP server the mail target holds its rows itself, saying so."""
    targets: list[Target] = []
    if peers.psa is not None:
        targets.append(PsaTarget(env, peers.psa))
    targets.append(MailTarget(env, peers.smtp))
    targets.extend(HookTarget(env, name, hook) for name, hook in peers.webhooks.items())
    targets.append(ImapMoveTarget(env))
    return {address(t.kind, t.name): t for t in targets}


def missing_reason(row: OutboxRow) -> str:
    """Why a row without a target is held."""
    if row.kind not in KINDS:
        return (f"held: mailbridge cannot deliver outbox rows of kind {row.kind!r} (written by"
                " another version?)")
    name = str(row.payload.get("target") or "default")
    return (f"held: no {row.kind} target named {name!r} in the configuration (removed by a"
            " reload?)")
