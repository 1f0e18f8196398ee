"""How `rules diff` runs its two replays side by side: the live one in a child process, the
candidate's in this one (bridge.operator.rulesdiff says what is compared).

Each side (`run_side`) first evaluates every message of the period — parse, then classify with
its rules, in the side's own process (10,000 alerts: 6.5 s against 9.2 s through the worker
pool, measured back to back: its pipes and pickling cost more than they spread) — then replays
them through `bridge.simulate.run_scratch` on its own scratch store with those evaluations
(`Given`), dry-run peers and the live policy. Between the two steps the sides compare
fingerprints of their evaluations: when the two rule sets evaluate every message alike, the
replays would be the same step for step, so the candidate's is not run and the live one stands
for both. The child is started with forkserver, as the worker pool: it inherits no descriptor
of its parent.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import pickle
import time
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from bridge.assembly import Parts, assemble
from bridge.classify.ruleset import RuleSet
from bridge.config import Settings
from bridge.deliver.dryrun import DryRunLog, dry_run_peers
from bridge.process.pipeline import Evaluation, Pipeline, Result
from bridge.simulate import Clock, run_scratch
from bridge.store.db import Store
from bridge.store.readonly import RawReader
from bridge.store.staging import StagedRow

DRY_RUN_CONCURRENCY = 64  # the configuration's maximum of psa.concurrency
# Told (what is running, messages done, messages in all) as the work goes on.
Progress = Callable[[str, int, int], None]
Outcomes = dict[int, dict[str, Any]]


def evaluate_all(pipeline: Pipeline, scratch: Store, name: str,
                 progress: Progress | None = None) -> dict[int, Evaluation]:
    """Every staged message of the scratch store evaluated, kept as the worker pool would send
    it back (no body, no attachments)."""
    reader = RawReader()
    ids = scratch.staged_ids()
    found: dict[int, Evaluation] = {}
    for n, mid in enumerate(ids, start=1):
        ev = pipeline.evaluate(reader.read(scratch.path, mid), message_ref=mid)
        found[mid] = replace(ev, parsed=replace(ev.parsed, body="", attachments=(),
                                                xml_parts=()))
        if progress is not None and (n % 500 == 0 or n == len(ids)):
            progress(f"{name} rules: reading", n, len(ids))
    return found


def fingerprints(found: dict[int, Evaluation]) -> dict[int, bytes]:
    """What the rules made of each message, as a digest (the parse is the same on both sides).
    Equal digests mean equal evaluations; unequal ones (even of equal values, e.g. a set in
    another order) only cost a replay that was not needed."""
    return {mid: hashlib.blake2b(pickle.dumps((ev.classification, ev.decision,
                                                ev.transaction)), digest_size=16).digest()
            for mid, ev in found.items()}


def annotate(outcomes: Outcomes, found: dict[int, Evaluation]) -> Outcomes:
    """Each outcome with what the report shows from the evaluation: subject, account, product
    group and alert type."""
    for mid, out in outcomes.items():
        ev = found.get(mid)
        c = ev.classification if ev is not None else None
        a = c.alert if c is not None else None
        out.update(subject=ev.parsed.subject if ev is not None else "",
                   account=a.account_id if a else None,
                   product_group=a.product_group if a else None,
                   alert_type=a.alert_type if a else None)
    return outcomes


@dataclass(frozen=True)
class Period:
    """The mail to replay: what arrived at the live store in [since, until]."""

    live_store: str
    since: float
    until: float


def run_side(settings: Settings, period: Period, scratch_path: str, name: str,
             progress: Progress | None, go_on: Callable[[dict[int, bytes]], bool],
             ruleset: RuleSet | None = None) -> Outcomes | None:
    """One side: seed its scratch store, evaluate, ask `go_on` (with the fingerprints)
    whether to replay, replay. None when told not to."""
    found: dict[int, Evaluation] = {}
    parts = assemble_side(settings, found, ruleset)
    scratch = Store(scratch_path, clock=Clock(period.until))
    try:
        scratch.scratch_mode()
        total = scratch.seed_history(Path(period.live_store), period.since, period.until)
        found.update(evaluate_all(parts.pipeline, scratch, name, progress))
        if not go_on(fingerprints(found)):
            close_peers(parts)
            scratch.close()
            return None
    except BaseException:
        close_peers(parts)
        scratch.close()
        raise
    return annotate(replay(parts, scratch, name, total, progress), found)


class Given:
    """An evaluator over evaluations made beforehand (the pipeline's `Evaluator`)."""

    def __init__(self, found: dict[int, Evaluation]):
        self.found = found

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
        return [self.found[r.id] for r in rows]

    def close(self) -> None:
        pass


class NoLog(DryRunLog):
    """The diff compares outcomes; the requests the dry-run peers would send are not kept."""

    def add(self, call: dict[str, Any]) -> None:
        pass


def dry_run_window(settings: Settings) -> Settings:
    """The dry-run PSA has no capacity to protect: delivery runs with the widest window the
    configuration allows, which halves its CPU here (per-key order is kept whatever the
    window, so no outcome depends on it)."""
    psa = settings.psa.model_copy(update={"concurrency": max(settings.psa.concurrency,
                                                             DRY_RUN_CONCURRENCY)})
    return settings.model_copy(update={"psa": psa})


def assemble_side(settings: Settings, found: dict[int, Evaluation],
                  ruleset: RuleSet | None = None) -> Parts:
    return assemble(dry_run_window(settings), peers=lambda s: dry_run_peers(s, NoLog()),
                    evaluator=lambda _: Given(found), ruleset=ruleset)


def replay(parts: Parts, scratch: Store, name: str, total: int,
           progress: Progress | None) -> Outcomes:
    """One side's replay; the outcome per message."""
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(f"{name} rules", done, total)

    if progress is not None:
        progress(f"{name} rules", 0, total)
    return asyncio.run(run_scratch(parts, scratch, parts.evaluator, Clock(scratch.clock()),
                                   lambda s: s.replay_results(), progress=step))


def close_peers(parts: Parts) -> None:
    asyncio.run(parts.peers.aclose())


# -- the live side in a child process ---------------------------------------------------------

def _child(conn: Connection, settings: Settings, ruleset: RuleSet, period: Period,
           scratch_path: str) -> None:
    def told(fp: dict[int, bytes]) -> bool:
        conn.send(("fingerprints", fp))
        return True

    try:
        outcomes = run_side(settings, period, scratch_path, "live",
                            lambda what, n, of: conn.send(("progress", what, n, of)), told,
                            ruleset)
        conn.send(("result", outcomes, time.process_time()))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class ChildReplay:
    """The live side in a child process; `poll` passes its progress on, `fingerprints` and
    `result` wait for what it sends (a failure in the child is raised here as RuntimeError)."""

    def __init__(self, settings: Settings, ruleset: RuleSet, period: Period, scratch_path: str,
                 progress: Progress | None):
        ctx = multiprocessing.get_context("forkserver")
        self._conn, theirs = ctx.Pipe(duplex=False)
        self._progress = progress
        self._result: Outcomes | None = None
        self._fingerprints: dict[int, bytes] | None = None
        self.cpu_seconds = 0.0  # the child's, told with its result
        self._proc = ctx.Process(target=_child, name="rules-diff-live", args=(
            theirs, settings, ruleset, period, scratch_path))
        self._proc.start()
        theirs.close()

    def _take(self) -> None:
        message = self._conn.recv()
        if message[0] == "progress":
            if self._progress is not None:
                self._progress(*message[1:])
        elif message[0] == "fingerprints":
            self._fingerprints = message[1]
        elif message[0] == "result":
            self._result, self.cpu_seconds = message[1], message[2]
        else:
            raise RuntimeError(f"the live replay failed: {message[1]}")

    def poll(self) -> None:
        while self._result is None and self._conn.poll():
            self._take()

    def fingerprints(self) -> dict[int, bytes]:
        """Waits for the live side's fingerprints (it sends them before it replays)."""
        try:
            while self._fingerprints is None:
                self._take()
        except EOFError:
            self.result()  # raises with the child's exit status
        assert self._fingerprints is not None
        return self._fingerprints

    def result(self) -> Outcomes:
        try:
            while self._result is None:
                self._take()
        except EOFError:
            self._proc.join()
            raise RuntimeError(f"the live replay's process died (exit {self._proc.exitcode})"
                               ) from None
        finally:
            self.close()
        return self._result

    def close(self) -> None:
        """The child ends; stopped if it still works (this side failed: nobody waits for it)."""
        self._conn.close()
        if self._result is None and self._proc.is_alive():
            self._proc.terminate()
        self._proc.join()
