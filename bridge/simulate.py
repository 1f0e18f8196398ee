"""`mailbridge simulate`: a dry run over .eml files (seed 000 "alert preview/simulation").

Shows, per message, the precedence steps, the deciding rule, the account and how it was found,
the alert key, the status and the exact sync payload. Reads the correlation store (if there is
one) to say whether it would create or append, and writes nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from bridge.config import Settings
from bridge.decide import decide
from bridge.pipeline import Pipeline, RuleSetHolder, preview_payloads


class _ReadOnlyStore:
    """Enough of a Store for `Pipeline.evaluate` and `decide`: correlations, no writes."""

    def __init__(self, path: Path):
        self.store = None
        if path.exists():
            from bridge.store import Store

            self.store = Store(path)

    def open_correlation(self, key: str) -> Any:
        return self.store.open_correlation(key) if self.store else None


def simulate_files(settings: Settings, files: list[Path], as_json: bool,
                   echo: Callable[[str], None] = print, names: list[str] | None = None) -> int:
    rules = RuleSetHolder(settings)
    try:
        rules.reload()
    except Exception as exc:
        echo(f"rules are invalid:\n{exc}")
        return 1
    ro = _ReadOnlyStore(Path(settings.store.path))
    pipeline = Pipeline(ro, settings, rules)  # type: ignore[arg-type]
    results = [simulate_one(pipeline, ro, f, names[i] if names else None)
               for i, f in enumerate(files)]
    if as_json:
        echo(json.dumps(results, indent=2, ensure_ascii=False, default=str))
        return 0
    for r in results:
        echo(f"== {r['file']}")
        echo(f"   subject : {r['subject']}")
        echo(f"   sender  : {r['sender']}")
        for step in r["steps"]:
            echo(f"   step    : {step}")
        for k in ("rule", "account", "account_how", "alert_key", "status"):
            if r.get(k):
                echo(f"   {k:<8}: {r[k]}")
        echo(f"   outcome : {r['outcome']} — {r['reason']}")
        for p in r["payloads"]:
            echo("   payload : " + json.dumps(p, ensure_ascii=False))
    echo("")
    width = max((len(r["file"]) for r in results), default=4)
    echo(f"{'file':<{width}}  {'outcome':<18}  {'rule':<32}  alert key")
    for r in results:
        echo(f"{r['file']:<{width}}  {r['outcome']:<18}  {(r['rule'] or '-'):<32}  "
             f"{r['alert_key'] or '-'}")
    return 0


def simulate_mailbox(settings: Settings, as_json: bool, limit: int,
                     echo: Callable[[str], None] = print) -> int:
    """Dry run over what is in the IMAP mailboxes now; nothing there changes."""
    import asyncio
    import tempfile

    from bridge.sources.imap import ImapSource

    if not settings.imap:
        echo("no [[imap]] mailbox is configured")
        return 1

    async def nothing(msgs: list[Any]) -> list[bool]:
        return [False] * len(msgs)

    async def fetch() -> list[tuple[str, bytes, int | None]]:
        got = []
        for imap in settings.imap:
            for m in await ImapSource(imap, nothing).peek(limit):
                got.append((f"{m.source}/{m.source_uid}", m.raw, m.oversize))
        return got

    messages = asyncio.run(fetch())
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (name, raw, _) in enumerate(messages):
            path = Path(tmp) / f"{i:05d}.eml"
            path.write_bytes(raw)
            files.append(path)
        code = simulate_files(settings, files, as_json, echo=echo,
                              names=[n for n, _, _ in messages])
    return code


def simulate_one(pipeline: Pipeline, store: Any, path: Path,
                 name: str | None = None) -> dict[str, Any]:
    preview = pipeline.evaluate(path.read_bytes())
    c = preview.classification
    decision = preview.decision
    outcome, reason = preview.outcome, preview.reason
    if decision is None and c is not None and c.alert is not None:
        decision = decide(c.alert, store.open_correlation(c.alert.alert_key),
                          new_id=lambda: "<new correlationId>")
        outcome = {"OPEN": "would create", "UPDATE": "would append",
                   "RESOLVED": "would resolve"}.get(decision.outbox[0].action or "", "pending") \
            if decision.outbox else (decision.outcome.value if decision.outcome else "pending")
        reason = decision.reason
    alert = c.alert if c else None
    return {
        "file": name or str(path), "subject": preview.parsed.subject, "sender": preview.parsed.sender,
        "kind": c.kind.value if c else None, "steps": list(c.steps) if c else [],
        "rule": c.rule if c else None,
        "account": alert.account_id if alert else None,
        "account_how": c.account_how if c else None,
        "alert_key": alert.alert_key if alert else None,
        "status": alert.status if alert else None,
        "outcome": outcome, "reason": reason, "payloads": preview_payloads(decision),
    }
