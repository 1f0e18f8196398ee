"""`mailbridge simulate`: `run` without side effects (seed 000 "alert preview/simulation").

The files are staged, in arrival order (the Date header, else the file's mtime; ties in argument
order), into a scratch store in a temporary directory that starts as a copy of the live state
(open correlations, storm members, unfinished outbox rows — not raw mail or events) or empty
with `fresh`. Then the very parts `run` uses (`bridge.assembly`, with the live settings and
rules) process and deliver them, except that the peers are dry-run ones: the PSA accepts every
call, mail and webhooks are not sent, and each records the exact request it would have made.
The clock is injected: `at` (default now) decides which holds are due; `flush` lets every hold
fall due. The live store is only read (through a read-only URI); nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import tempfile
import time
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, Callable, ContextManager, TypeVar

from bridge.assembly import Parts, assemble
from bridge.classify.explain import explain as explain_rules
from bridge.config import Settings
from bridge.deliver.dryrun import DryRunLog, dry_run_peers
from bridge.deliver.outbox import Delivery
from bridge.deliver.psa import PsaClient, redact_payload
from bridge.models import RawMessage, TicketCall
from bridge.process.pipeline import Evaluation, Evaluator, Result
from bridge.process.isolation import WorkerPool
from bridge.decide.expectations import judge_in
from bridge.store.db import AsyncStore, Store
from bridge.store.staging import StagedRow

T = TypeVar("T")


def arrival_time(raw: bytes, path: Path) -> float:
    """When `run` would say the message arrived: its Date header, else the file's mtime."""
    date = BytesHeaderParser(policy=compat32).parsebytes(raw).get("Date")
    if date:
        try:
            return email.utils.parsedate_to_datetime(str(date)).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return path.stat().st_mtime


def simulate_files(settings: Settings, files: list[Path], as_json: bool,
                   echo: Callable[[str], None] = print, names: list[str] | None = None, *,
                   fresh: bool = False, at: float | None = None, flush: bool = False,
                   explain: bool = False,
                   progress: Callable[[int], None] | None = None) -> int:
    """`progress` is told the size of each processed batch (a bar over len(files))."""
    log = DryRunLog()
    try:
        # The report shows the precedence steps, and --explain runs the rules again over
        # every header: the worker pool sends them back (`run` needs neither).
        parts = assemble(settings, peers=lambda s: dry_run_peers(s, log),
                         evaluator=lambda p: WorkerPool(p, settings.processing, detail=True))
    except Exception as exc:
        echo(f"rules are invalid:\n{exc}")
        return 1
    labels = names or [str(f) for f in files]
    with tempfile.TemporaryDirectory(prefix="mailbridge-simulate-") as tmp:
        results = asyncio.run(_simulate(parts, files, labels, Path(tmp) / "scratch.db", log,
                                        fresh=fresh, now=at if at is not None else time.time(),
                                        flush=flush, explain=explain, progress=progress))
    if as_json:
        echo(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    else:
        echo(format_results(results))
    return 0


async def _simulate(parts: Parts, files: list[Path], labels: list[str], scratch_path: Path,
                    log: DryRunLog, *, fresh: bool, now: float, flush: bool,
                    explain: bool = False,
                    progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:
    clock = Clock(now)
    scratch = Store(scratch_path, clock=clock)
    if not fresh:
        scratch.copy_live_state(Path(parts.settings.store.path))
    raws = [(f.read_bytes(), f, label) for f, label in zip(files, labels)]
    timed = sorted(((arrival_time(raw, f), i, raw, label) for i, (raw, f, label)
                    in enumerate(raws)), key=lambda t: (t[0], t[1]))
    staged = scratch.stage_many([RawMessage(raw, "simulate", f"file:{i}", t)
                                 for t, i, raw, _ in timed])
    ids = {r.id: label for r, (_, _, _, label) in zip(staged, timed)}
    recorder = _Recorder(parts.evaluator)

    def collect(store: Store) -> list[dict[str, Any]]:
        return [_result(store, mid, label, log, clock.now, parts.peers.psa,
                        recorder.found.get(mid)) for mid, label in ids.items()] \
            + _missing_mail(store, log)

    results = await run_scratch(parts, scratch, recorder, clock, collect, flush=flush,
                                progress=progress)
    if explain:  # every rule tried and what failed first (bridge/classify/explain.py)
        for r, mid in zip(results, ids):
            found = recorder.found.get(mid)
            r["explain"] = explain_rules(found.parsed, parts.ruleset,
                                         parts.pipeline.context) if found else []
    return results


async def run_scratch(parts: Parts, scratch: Store, evaluator: Evaluator, clock: Clock,
                      collect: Callable[[Store], T], *, flush: bool = False,
                      progress: Callable[[int], None] | None = None) -> T:
    """`run` on a scratch store: every staged message through `parts.pipeline` (`progress` is
    told each batch's size), then the outbox delivered by the parts' (dry-run) peers, the
    clock past every hold with `flush`. `collect` reads the result on the store's thread; the
    evaluator and the store are closed afterwards. `simulate` and `rules diff` run on it."""
    try:
        while (n := parts.pipeline.process_batch(scratch, "simulate", evaluator)) > 0:
            if progress is not None:
                progress(n)
    finally:
        evaluator.close()
    # Drained, as `run --once` is at this point: a report that has not come is missing.
    judge_in(scratch, parts.ruleset.expect, parts.decider, clock())
    store = AsyncStore(scratch)
    p = parts.peers
    delivery = Delivery(store, parts.settings, psa=p.psa, smtp=p.smtp,
                        webhooks=dict(p.webhooks), clock=clock)
    try:
        if flush:
            # Every hold falls due: the clock moves past the last one, as time would.
            while (due := await store.next_outbox_due()) is not None:
                clock.now = max(clock.now, due)
                if await delivery.drain() == 0:
                    break
        else:
            await delivery.drain()
        return await store.run(collect, scratch)
    finally:
        await delivery.aclose()
        store.close()


class Clock:
    """The scratch run's clock: fixed, moved on only by `flush`."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


class _Recorder:
    """The pool's evaluator, keeping what it found per message: the precedence steps, the
    sender and the status the preview shows (the audit trail records less, to stay cheap)."""

    def __init__(self, evaluator: Evaluator):
        self.evaluator = evaluator
        self.found: dict[int, Evaluation] = {}

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
        results = self.evaluator.evaluate(store_path, rows)
        for row, result in zip(rows, results):
            if isinstance(result, Evaluation):
                self.found[row.id] = result
        return results

    def close(self) -> None:
        self.evaluator.close()


def _result(store: Store, message_id: int, label: str, log: DryRunLog,
            now: float, psa: PsaClient | None, found: Evaluation | None) -> dict[str, Any]:
    view = store.preview_of(message_id)
    c = found.classification if found else None
    state, outcome, reason = view["state"], view["outcome"], view["reason"]
    if state == "pending":
        holds = [r["next_attempt_at"] for r in view["outbox"] if r["state"] == "pending"]
        when = min(holds) if holds else None
        outcome = (f"held until {_fmt(when)}" if when and when > now else "pending")
    return {
        "file": label, "message": message_id, "subject": view["subject"],
        "sender": found.parsed.sender if found else "", "kind": view["kind"],
        "steps": list(c.steps) if c else [],
        "rule": view["rule"], "account": view["account"], "account_how": view["how"],
        "alert_key": view["alert_key"], "status": c.alert.status if c and c.alert else None,
        "outcome": outcome or state, "reason": reason,
        "calls": [c for r in view["outbox"] for c in log.by_row(r["id"])],
        "payloads": [_render(r, psa) for r in view["outbox"]],
    }


def _render(row: dict[str, Any], psa: PsaClient | None) -> dict[str, Any]:
    """The request an outbox row makes (sent in the preview or still held), secrets masked."""
    if row["kind"] == "psa" and psa is not None:
        body = redact_payload(psa.build_payload(row["action"],
                                                TicketCall.from_payload(row["payload"]),
                                                row["correlation_id"]))
        return {"incidentStatus": row["action"], "correlationId": row["correlation_id"],
                "data": body["data"], "state": row["state"]}
    return {"kind": row["kind"], "action": row["action"], "state": row["state"],
            **row["payload"]}


def _fmt(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"


def _missing_mail(store: Store, log: DryRunLog) -> list[dict[str, Any]]:
    """The missing-mail tickets the run would open (no message stands behind them)."""
    return [{"file": f"[[expect]] {e['expectation']}", "subject": "", "sender": "",
             "steps": [f"expect: no report since {e['last_seen']}; due {e['due']}"],
             "rule": e["expectation"], "account": e["account"], "alert_key": e["alert_key"],
             "status": "open", "outcome": e["outcome"] or "pending",
             "reason": "expected mail missing: " + str(e["reason"]),
             "calls": [c for row in e["outbox"] for c in log.by_row(row)]}
            for e in store.expectation_events()]


def format_results(results: list[dict[str, Any]]) -> str:
    out: list[str] = []
    for r in results:
        out.append(f"== {r['file']}")
        out.append(f"   subject : {r['subject']}")
        out.append(f"   sender  : {r['sender']}")
        out += [f"   step    : {step}" for step in r["steps"]]
        out += [f"   explain : {line}" for line in r.get("explain", ())]
        for k in ("rule", "account", "account_how", "alert_key", "status"):
            if r.get(k):
                out.append(f"   {k:<8}: {r[k]}")
        out.append(f"   outcome : {r['outcome']} — {r['reason']}")
        for c in r["calls"]:
            out.append("   call    : " + json.dumps(c, ensure_ascii=False))
    out.append("")
    width = max((len(r["file"]) for r in results), default=4)
    out.append(f"{'file':<{width}}  {'outcome':<28}  {'rule':<32}  alert key")
    for r in results:
        out.append(f"{r['file']:<{width}}  {r['outcome']:<28}  {(r['rule'] or '-'):<32}  "
                   f"{r['alert_key'] or '-'}")
    return "\n".join(out)


def simulate_mailbox(settings: Settings, as_json: bool, limit: int,
                     echo: Callable[[str], None] = print,
                     bar: Callable[[int], ContextManager[Callable[[int], None]]] | None = None,
                     **options: Any) -> int:
    """Dry run over what is in the IMAP mailboxes now; nothing there changes. `bar(total)`
    gives the progress callback once the number of messages read is known."""
    from bridge.sources.imap import ImapSource

    if not settings.imap:
        echo("no [[imap]] mailbox is configured")
        return 1

    async def nothing(msgs: list[RawMessage]) -> list[bool]:
        return [False] * len(msgs)

    async def fetch() -> list[tuple[str, bytes]]:
        got = []
        for imap in settings.imap:
            for m in await ImapSource(imap, nothing).peek(limit):
                got.append((f"{m.source}/{m.source_uid}", m.raw))
        return got

    messages = asyncio.run(fetch())
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (_, raw) in enumerate(messages):
            path = Path(tmp) / f"{i:05d}.eml"
            path.write_bytes(raw)
            files.append(path)
        with bar(len(files)) if bar is not None else contextlib.nullcontext(None) as advance:
            return simulate_files(settings, files, as_json, echo=echo,
                                  names=[n for n, _ in messages], progress=advance, **options)

