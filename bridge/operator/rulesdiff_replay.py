"""How `rules diff` runs: every message evaluated once for both rule sets, then the two replays
side by side, the live one in a child process (bridge.operator.rulesdiff says what is compared).

1. `Evaluations.fill` parses each message of the period once and classifies it with both rule
   sets, in this process (10,000 alerts: about 3.5 s of CPU here; through the worker pool the
   same work cost more, for the pipes — docs/rules.md, "Changing rules safely").
2. When the two rule sets evaluate every message alike, the replays would be the same step for
   step: one runs. Otherwise the live replay runs in a child process (forkserver, as the worker
   pool: it inherits no descriptor of its parent) while this process runs the candidate's, so
   the two use both cores. Each is `bridge.simulate.run_scratch` on its own scratch store, with
   the evaluations of step 1 (`Given`), dry-run peers and the live policy.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from dataclasses import replace
from multiprocessing.connection import Connection
from typing import Any, Callable

from bridge.assembly import Parts, assemble
from bridge.classify.ruleset import RuleSet
from bridge.config import Settings
from bridge.deliver.dryrun import DryRunLog, dry_run_peers
from bridge.parse.mime import parse
from bridge.process.pipeline import Evaluation, Pipeline, Result
from bridge.simulate import Clock, run_scratch
from bridge.store.db import Store
from bridge.store.readonly import RawReader
from bridge.store.staging import StagedRow

DRY_RUN_CONCURRENCY = 64  # the configuration's maximum of psa.concurrency
# Told (what is running, messages done, messages in all) as the work goes on.
Progress = Callable[[str, int, int], None]
Outcomes = dict[int, dict[str, Any]]


class Evaluations:
    """Each message of the period parsed once and evaluated by both pipelines (0: live rules,
    1: candidate), kept as the worker pool would send it back (no body, no attachments)."""

    def __init__(self, pipelines: list[Pipeline], found: list[dict[int, Evaluation]]):
        self.pipelines, self.found = pipelines, found

    def fill(self, scratch: Store, progress: Progress | None = None) -> None:
        reader = RawReader()
        ids = scratch.staged_ids()
        for n, mid in enumerate(ids, start=1):
            parsed = parse(reader.read(scratch.path, mid))
            slim = replace(parsed, body="", attachments=(), xml_parts=())
            for found, pipeline in zip(self.found, self.pipelines):
                found[mid] = replace(pipeline.evaluate_parsed(parsed, message_ref=mid),
                                     parsed=slim)
            if progress is not None and (n % 500 == 0 or n == len(ids)):
                progress("reading", n, len(ids))

    def same(self) -> bool:
        """Whether both rule sets evaluate every message alike (then one replay is enough)."""
        live, cand = self.found
        return all(live[k] == cand[k] for k in live)


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

def _child(conn: Connection, settings: Settings, ruleset: RuleSet, scratch_path: str,
           until: float, found: dict[int, Evaluation], total: int) -> None:
    try:
        parts = assemble_side(settings, found, ruleset)
        scratch = Store(scratch_path, clock=Clock(until))
        scratch.scratch_mode()
        conn.send(("result", replay(parts, scratch, "live", total,
                                    lambda what, n, of: conn.send(("progress", what, n, of)))))
    except BaseException as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


class ChildReplay:
    """The live side's replay in a child process; `poll` passes its progress on, `result`
    waits for its outcomes (a failure in the child is raised here as RuntimeError)."""

    def __init__(self, settings: Settings, ruleset: RuleSet, scratch_path: str, until: float,
                 found: dict[int, Evaluation], total: int, progress: Progress | None):
        ctx = multiprocessing.get_context("forkserver")
        self._conn, theirs = ctx.Pipe(duplex=False)
        self._progress = progress
        self._result: Outcomes | None = None
        self._proc = ctx.Process(target=_child, name="rules-diff-live", args=(
            theirs, settings, ruleset, scratch_path, until, found, total))
        self._proc.start()
        theirs.close()

    def _take(self) -> None:
        message = self._conn.recv()
        if message[0] == "progress":
            if self._progress is not None:
                self._progress(*message[1:])
        elif message[0] == "result":
            self._result = message[1]
        else:
            raise RuntimeError(f"the live replay failed: {message[1]}")

    def poll(self) -> None:
        while self._result is None and self._conn.poll():
            self._take()

    def result(self) -> Outcomes:
        try:
            while self._result is None:
                self._take()
        except EOFError:
            raise RuntimeError(f"the live replay's process died (exit {self._proc.exitcode})"
                               ) from None
        finally:
            self._conn.close()
            self._proc.join()
        assert self._result is not None
        return self._result
