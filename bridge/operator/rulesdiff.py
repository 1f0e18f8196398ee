"""`mailbridge rules diff`: past mail replayed against the live rules and a candidate rule
directory; what would change, message by message, and in the totals.

The staged messages that arrived in the period go, in arrival order, twice through the whole
pipeline `run` uses (`bridge.simulate.run_scratch`: the same assembly, Pipeline and Delivery,
with dry-run peers and the live policy) — once with the live rules, once with the candidate's —
each in a scratch store seeded as of the start of the period (`Store.seed_history`: the
correlations open then, no outbox rows). The clock stands at the start of the diff, so a hold
still running then (a coalescing window, a resolve delay) stays held on both sides.

Each message is parsed once, in this process, and classified with both rule sets (parsing and
classifying 10,000 alerts costs about 2.5 s here; shipping them to the worker pool and back
cost more — docs/rules.md). Messages the live run quarantined for breaking a processing
budget are not replayed. When the candidate classifies every message exactly as the live rules
do, its replay would repeat the first one step for step, so it is not run.
"""

from __future__ import annotations

import asyncio
import collections
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from bridge.assembly import assemble
from bridge.classify.loader import check_ruleset
from bridge.config import Settings
from bridge.deliver.dryrun import DryRunLog, dry_run_peers
from bridge.parse.mime import parse
from bridge.process.pipeline import Evaluation, Evaluator, Pipeline, Result
from bridge.simulate import Clock, run_scratch
from bridge.store.db import Store
from bridge.store.readonly import RawReader
from bridge.store.staging import StagedRow

# The totals the report names first (the rest follow when they occur).
TOTALS = ("created", "appended", "resolved", "unmatched", "skipped", "rejected")
SIDES = ("live", "candidate")
DRY_RUN_CONCURRENCY = 64  # the configuration's maximum of psa.concurrency
# Told (what is running, messages done, messages in all) after each batch.
Progress = Callable[[str, int, int], None]


class CandidateInvalid(Exception):
    """The candidate rule directory cannot be loaded; `errors` as `mailbridge check` says them."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class Line:
    """One message's result on one side: what the diff compares."""

    outcome: str
    rule: str | None = None
    account: str | None = None
    alert_key: str | None = None
    product_group: str | None = None
    alert_type: str | None = None


@dataclass(frozen=True)
class Change:
    message: int
    arrived_at: float
    subject: str
    before: Line
    after: Line

    def fields(self) -> list[str]:
        """The names of the fields that differ."""
        a, b = asdict(self.before), asdict(self.after)
        return [k for k in a if a[k] != b[k]]


@dataclass
class Report:
    since: float
    until: float
    replayed: int
    left_out: int
    changes: list[Change] = field(default_factory=list)
    before: dict[str, int] = field(default_factory=dict)
    after: dict[str, int] = field(default_factory=dict)
    replays: int = 2
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "replayed": self.replayed,
                "left_out": self.left_out, "replays": self.replays,
                "seconds": round(self.seconds, 3), "changed": len(self.changes),
                "totals": {"before": self.before, "after": self.after},
                "changes": [{"message": c.message, "arrived_at": c.arrived_at,
                             "subject": c.subject, "fields": c.fields(),
                             "before": asdict(c.before), "after": asdict(c.after)}
                            for c in self.changes]}


def candidate_settings(settings: Settings, directory: Path) -> Settings:
    """The live settings with the candidate's rules. An accounts file kept inside the live rule
    directory is taken from the candidate's, when it has one (a rules repository holds both)."""
    accounts = settings.rules.accounts
    if accounts is not None and accounts.is_relative_to(settings.rules.directory):
        own = Path(directory) / accounts.relative_to(settings.rules.directory)
        if own.exists():
            accounts = own
    rules = settings.rules.model_copy(update={"directory": Path(directory),
                                              "accounts": accounts})
    return settings.model_copy(update={"rules": rules})


def check_candidate(settings: Settings, directory: Path) -> list[str]:
    """The candidate's errors, each naming its file and line, as `mailbridge check` prints
    them; empty when it loads."""
    s = candidate_settings(settings, directory).rules
    if not Path(directory).is_dir():
        return [f"error: {directory}: not a directory"]
    return [f"{p.severity}: {p}" for p in check_ruleset(s.directory, s.accounts,
                                                         settings.catalogue_map())
            if p.is_error]


def diff_rules(settings: Settings, candidate: Path, since: float, *,
               until: float | None = None, progress: Progress | None = None) -> Report:
    """Replay the period against both rule sets; raises CandidateInvalid for a broken
    candidate. The live store is only read."""
    errors = check_candidate(settings, candidate)
    if errors:
        raise CandidateInvalid(errors)
    started = time.perf_counter()
    until = time.time() if until is None else until
    live_path = Path(settings.store.path)
    both = _BothSides()
    log = _NoLog()
    sides = [assemble(_dry_run_window(s), peers=lambda s: dry_run_peers(s, log),
                      evaluator=both.side(i))
             for i, s in enumerate((settings, candidate_settings(settings, candidate)))]
    results: list[dict[int, dict[str, Any]]] = []
    counts = {"replayed": 0, "left_out": 0}
    with tempfile.TemporaryDirectory(prefix="mailbridge-rules-diff-") as tmp:
        for i, parts in enumerate(sides):
            if i == 1 and both.same():
                results.append(results[0])  # the same evaluations: the same replay
                asyncio.run(parts.peers.aclose())
                break
            scratch = Store(Path(tmp) / f"{SIDES[i]}.db", clock=Clock(until))
            scratch.scratch_mode()
            if i == 0:
                counts = scratch.history_counts(live_path, since, until)
            scratch.seed_history(live_path, since, until)
            results.append(asyncio.run(_replay(parts, scratch, SIDES[i], counts["replayed"],
                                               progress)))
    both.close()
    report = Report(since, until, counts["replayed"], counts["left_out"],
                    replays=len({id(r) for r in results}))
    _compare(report, results, both)
    report.seconds = time.perf_counter() - started
    return report


def _dry_run_window(settings: Settings) -> Settings:
    """The dry-run PSA has no capacity to protect: delivery runs with the widest window the
    configuration allows, which halves its CPU here (per-key order is kept whatever the
    window, so no outcome depends on it)."""
    psa = settings.psa.model_copy(update={"concurrency": max(settings.psa.concurrency,
                                                             DRY_RUN_CONCURRENCY)})
    return settings.model_copy(update={"psa": psa})


class _NoLog(DryRunLog):
    """The diff compares outcomes; the requests the dry-run peers would send are not kept."""

    def add(self, call: dict[str, Any]) -> None:
        pass


async def _replay(parts: Any, scratch: Store, name: str, total: int,
                  progress: Progress | None) -> dict[int, dict[str, Any]]:
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(f"{name} rules", done, total)

    if progress is not None:
        progress(f"{name} rules", 0, total)
    return await run_scratch(parts, scratch, parts.evaluator, Clock(scratch.clock()),
                             lambda s: s.replay_results(), progress=step)


class _BothSides:
    """Evaluates for both sides while the live side runs: each message is parsed once and
    classified with both rule sets; the candidate's replay then takes its evaluations from
    here (the same message ids on both sides)."""

    def __init__(self) -> None:
        self.pipelines: list[Pipeline] = []
        self.found: list[dict[int, Evaluation]] = [{}, {}]
        self._raw = RawReader()

    def side(self, index: int) -> Callable[[Pipeline], Evaluator]:
        """The evaluator factory for `assemble` of side `index` (0: live, 1: candidate)."""
        def make(pipeline: Pipeline) -> Evaluator:
            self.pipelines.insert(index, pipeline)
            return _Side(self, index)
        return make

    def evaluate(self, index: int, store_path: str, rows: list[StagedRow]) -> list[Result]:
        out: list[Result] = []
        for row in rows:
            got = self.found[index].get(row.id)
            if got is None:
                got = self._both(store_path, row)[index]
            out.append(got)
        return out

    def _both(self, store_path: str, row: StagedRow) -> tuple[Evaluation, Evaluation]:
        parsed = parse(self._raw.read(store_path, row.id))
        evs = [p.evaluate_parsed(parsed, oversize=row.oversize, message_ref=row.id)
               for p in self.pipelines]
        # Only what `apply` and the report read is kept (as the worker pool sends back).
        slim = replace(parsed, body="", attachments=(), xml_parts=())
        kept = [replace(ev, parsed=slim) for ev in evs]
        for i, ev in enumerate(kept):
            self.found[i][row.id] = ev
        return kept[0], kept[-1]

    def same(self) -> bool:
        live, cand = self.found
        return live.keys() == cand.keys() and all(live[k] == cand[k] for k in live)

    def close(self) -> None:
        self._raw.forget()


class _Side:
    def __init__(self, both: _BothSides, index: int):
        self.both, self.index = both, index

    def evaluate(self, store_path: str, rows: list[StagedRow]) -> list[Result]:
        return self.both.evaluate(self.index, store_path, rows)

    def close(self) -> None:
        pass


def _line(res: dict[str, Any], ev: Evaluation | None, until: float) -> Line:
    outcome = res["outcome"] or res["state"]
    if res["state"] == "pending":
        held = res["held_until"]
        outcome = "held" if held is not None and held > until else "pending"
    c = ev.classification if ev is not None else None
    a = c.alert if c is not None else None
    return Line(outcome, res["rule"], a.account_id if a else None, res["alert_key"],
                a.product_group if a else None, a.alert_type if a else None)


def _compare(report: Report, results: list[dict[int, dict[str, Any]]],
             evaluations: _BothSides) -> None:
    before, after = results[0], results[-1]
    totals: list[collections.Counter[str]] = [collections.Counter(), collections.Counter()]
    for mid in sorted(before, key=lambda m: (before[m].get("arrived_at") or 0, m)):
        old = _line(before[mid], evaluations.found[0].get(mid), report.until)
        new = _line(after[mid], evaluations.found[-1].get(mid) or
                    evaluations.found[0].get(mid), report.until) if mid in after else old
        totals[0][old.outcome] += 1
        totals[1][new.outcome] += 1
        if old != new:
            ev = evaluations.found[0].get(mid)
            report.changes.append(Change(mid, before[mid].get("arrived_at") or 0.0,
                                         ev.parsed.subject if ev else "", old, new))
    names = list(TOTALS) + sorted((set(totals[0]) | set(totals[1])) - set(TOTALS))
    report.before = {k: totals[0][k] for k in names}
    report.after = {k: totals[1][k] for k in names}


def type_label(line: dict[str, Any]) -> str | None:
    """"product group / alert type" of a line as `Report.as_json` gives it."""
    if not line["product_group"] and not line["alert_type"]:
        return None
    return f"{line['product_group'] or '-'} / {line['alert_type'] or '-'}"
