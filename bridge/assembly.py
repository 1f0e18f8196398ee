"""One assembly: validated settings in, one immutable set of components out.

Every command gets its parts from `assemble` — the daemon, `run --once`, `ingest`, `replay`,
`simulate`, `test-alert`, `demo`, `check --online`, `reconcile`, `tickets --remote` — and no
component builds another from settings on its own (Alertmanager's config coordinator: one
place turns a config into the running objects, and a reload builds a fresh set and swaps it
in whole). Only the peers and the evaluator may be replaced: `simulate` assembles with
`DryRunPeers`, which accept every call and record the exact request they would have sent;
`rules diff` also with an evaluator of its own. `restart_needed` names the settings a reload
cannot re-assemble (read once at start); `rules_signature` tells the rule watch when the rule
files changed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from bridge.classify.loader import load_ruleset
from bridge.classify.rulepacks import PackSelection
from bridge.classify.ruleset import RuleSet
from bridge.config import Settings
from bridge.decide.core import new_correlation_id
from bridge.decide.decider import Decider
from bridge.deliver.peers import Peers
from bridge.process.isolation import WorkerPool
from bridge.process.pipeline import Evaluator, Pipeline, classify_context

if TYPE_CHECKING:
    from bridge.deliver.webhook import WebhookTarget


@dataclass(frozen=True)
class Parts:
    """The components of one configuration. Immutable: a reload makes a new one."""

    settings: Settings
    ruleset: RuleSet
    decider: Decider
    pipeline: Pipeline
    evaluator: Evaluator
    peers: Peers

    @property
    def version(self) -> str:
        return self.ruleset.version

    async def aclose(self) -> None:
        """After a swap or at exit: the worker pool finishes its tasks, the peers close."""
        await asyncio.to_thread(self.evaluator.close)
        await self.peers.aclose()


def load_rules(settings: Settings) -> RuleSet:
    """The rule set the settings name (files, then packs); raises RuleSetError naming every
    bad file and line."""
    s = settings.rules
    return load_ruleset(s.directory, s.accounts, settings.catalogue_map(),
                        PackSelection.from_settings(settings))


def build_peers(settings: Settings) -> Peers:
    psa = None
    if settings.psa.enabled:
        from bridge.deliver.psa import PsaClient

        psa = PsaClient(settings.psa)
    smtp = None
    if settings.smtp is not None:
        from bridge.deliver.smtp import SmtpSender

        tokens = None
        if settings.smtp.oauth2 is not None:
            from bridge.auth.oauth2 import TokenProvider

            tokens = TokenProvider(settings.smtp.oauth2)
        smtp = SmtpSender(settings.smtp, token_provider=tokens)
    webhooks: dict[str, WebhookTarget] = {}
    if settings.webhook:
        from bridge.deliver.webhook import WebhookTarget

        webhooks = {w.name: WebhookTarget(w) for w in settings.webhook}
    return Peers(psa, smtp, webhooks)


def assemble(settings: Settings, *, peers: Callable[[Settings], Peers] = build_peers,
             new_id: Callable[[], str] = new_correlation_id,
             ruleset: RuleSet | None = None,
             evaluator: Callable[[Pipeline], Evaluator] | None = None) -> Parts:
    """Build every part from `settings`. Loads the rules first, so an invalid rule set fails
    here, before any connection is made, and a reload that fails keeps the old parts.
    `evaluator` replaces the worker pool (`rules diff` evaluates in its own processes and
    hands the pipeline what it found)."""
    rules = ruleset if ruleset is not None else load_rules(settings)
    decider = Decider.from_settings(settings, new_id)
    pipeline = Pipeline(settings, rules, classify_context(settings), decider)
    evaluate: Evaluator = (evaluator(pipeline) if evaluator is not None
                           else WorkerPool(pipeline, settings.processing))
    return Parts(settings, rules, decider, pipeline, evaluate, peers(settings))


def restart_needed(started: Settings, fresh: Settings) -> list[str]:
    """The settings a running process cannot change: they are read once at start."""
    out = []
    if Path(started.store.path) != Path(fresh.store.path):
        out.append("store.path")
    for name in ("enabled", "host", "port"):
        if getattr(started.http, name) != getattr(fresh.http, name):
            out.append(f"http.{name}")
    if started.log != fresh.log:
        out.append("log")
    return out


def rules_signature(settings: Settings) -> tuple[tuple[str, float, int], ...]:
    """Names, times and sizes of the rule files and the accounts file: a cheap change test."""
    paths = list(Path(settings.rules.directory).glob("*.toml"))
    if settings.rules.accounts is not None:
        paths.append(Path(settings.rules.accounts))
    out = []
    for p in sorted(paths):
        try:
            st = p.stat()
        except OSError:
            continue
        out.append((str(p), st.st_mtime, st.st_size))
    return tuple(out)
