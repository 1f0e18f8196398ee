"""`mailbridge rules diff`: past mail replayed against the live rules and a candidate rule
directory; what would change, message by message, and in the totals.

The staged messages that arrived in the period go, in arrival order, twice through the whole
pipeline `run` uses (`bridge.simulate.run_scratch`: the same assembly, Pipeline and Delivery,
with dry-run peers and the live policy) — once with the live rules, once with the candidate's —
each in a scratch store seeded as of the start of the period (`Store.seed_history`: the
correlations open then, no outbox rows). The clock stands at the start of the diff, so a hold
still running then (a coalescing window, a resolve delay) stays held on both sides. Messages
the live run quarantined for breaking a processing budget are not replayed. How the two
replays run (side by side; one when both rule sets read every message alike): rulesdiff_replay.

Compared per message: the outcome, the deciding rule, the account, the alert key, the product
group and the alert type (`Line`); the totals count the outcomes on each side.
"""

from __future__ import annotations

import collections
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bridge.assembly import load_rules
from bridge.classify.loader import check_ruleset
from bridge.classify.problems import RuleSetError
from bridge.classify.rulepacks import PackSelection
from bridge.config import Settings
from bridge.operator.rulesdiff_replay import ChildReplay, Outcomes, Period, Progress, run_side
from bridge.store.db import Store

# The totals the report names first (the rest follow when they occur).
TOTALS = ("created", "appended", "resolved", "unmatched", "skipped", "rejected")
SIDES = ("live", "candidate")


class CannotDiff(Exception):
    """The diff cannot run at all: no store yet, or the live rules themselves are invalid."""


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
    cpu_seconds: float = 0.0  # both processes

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "until": self.until, "replayed": self.replayed,
                "left_out": self.left_out, "replays": self.replays,
                "seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3),
                "changed": len(self.changes),
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
    packs = PackSelection.from_settings(settings)
    return [f"{p.severity}: {p}" for p in check_ruleset(s.directory, s.accounts,
                                                         settings.catalogue_map(), packs)
            if p.is_error]


def diff_rules(settings: Settings, candidate: Path, since: float, *,
               until: float | None = None, progress: Progress | None = None) -> Report:
    """Replay the period against both rule sets; raises CandidateInvalid for a broken
    candidate, CannotDiff when there is nothing to compare with. The live store is only
    read."""
    errors = check_candidate(settings, candidate)
    if errors:
        raise CandidateInvalid(errors)
    started, cpu = time.perf_counter(), time.process_time()
    until = time.time() if until is None else until
    live_path = Path(settings.store.path)
    if not live_path.exists():
        raise CannotDiff(f"no store at {live_path} yet: there is no mail to replay")
    try:
        ruleset = load_rules(settings)
    except RuleSetError as exc:
        raise CannotDiff(f"the live rules in {settings.rules.directory} are invalid"
                         f" (`mailbridge check`):\n{exc}") from None
    period = Period(str(live_path), since, until)
    with tempfile.TemporaryDirectory(prefix="mailbridge-rules-diff-") as tmp:
        paths = [str(Path(tmp) / f"{side}.db") for side in SIDES]
        # The live side starts first, in its child; each side seeds its own scratch store.
        child = ChildReplay(settings, ruleset, period, paths[0], progress)
        try:
            counter = Store(":memory:")
            counts = counter.history_counts(live_path, since, until)
            counter.close()

            def told(what: str, n: int, of: int) -> None:
                if progress is not None:
                    progress(what, n, of)
                child.poll()

            after = run_side(candidate_settings(settings, candidate), period, paths[1],
                             SIDES[1], told, lambda fp: fp != child.fingerprints())
            before = child.result()
        finally:
            child.close()
    total = counts["replayed"]
    report = Report(since, until, total, counts["left_out"], replays=1 if after is None else 2)
    _compare(report, before, before if after is None else after)
    report.seconds = time.perf_counter() - started
    report.cpu_seconds = time.process_time() - cpu + child.cpu_seconds
    return report


def _line(res: dict[str, Any], until: float) -> Line:
    outcome = res["outcome"] or res["state"]
    if res["state"] == "pending":
        held = res["held_until"]
        outcome = "held" if held is not None and held > until else "pending"
    return Line(outcome, res["rule"], res["account"], res["alert_key"], res["product_group"],
                res["alert_type"])


def _compare(report: Report, before: Outcomes, after: Outcomes) -> None:
    totals: list[collections.Counter[str]] = [collections.Counter(), collections.Counter()]
    for mid in sorted(before, key=lambda m: (before[m]["arrived_at"], m)):
        old = _line(before[mid], report.until)
        new = _line(after[mid], report.until) if mid in after else old
        totals[0][old.outcome] += 1
        totals[1][new.outcome] += 1
        if old != new:
            report.changes.append(Change(mid, before[mid]["arrived_at"],
                                         before[mid]["subject"], old, new))
    names = list(TOTALS) + sorted((set(totals[0]) | set(totals[1])) - set(TOTALS))
    report.before = {k: totals[0][k] for k in names}
    report.after = {k: totals[1][k] for k in names}


def type_label(line: dict[str, Any]) -> str | None:
    """"product group / alert type" of a line as `Report.as_json` gives it."""
    if not line["product_group"] and not line["alert_type"]:
        return None
    return f"{line['product_group'] or '-'} / {line['alert_type'] or '-'}"
