"""The dashboard's read-only `/rules/diff` page: what `[rules] candidate_directory` would change
over the last week of mail (`rules diff`, bridge.operator.rulesdiff).

A diff replays every message of the period twice, so it is never computed for a page view:
`CandidateDiff` runs it in a process of its own (the daemon's event loop and its store thread
keep their core; stopping the daemon stops it), in the background, and keeps the last result.
A view serves the cache and starts a new computation only when the live or the candidate rule
files changed (names, times, sizes) or the result is older than `max_age`; the page says when
it was computed and refreshes itself while one runs.
"""

from __future__ import annotations

import functools
import multiprocessing
import re
import string
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from bridge.assembly import rules_signature
from bridge.config import Settings
from bridge.operator import views
from bridge.operator.audit import Redactor
from bridge.operator.dashboard import COLOURS, _badge, _e, _table, _template
from bridge.operator.rulesdiff import (CandidateInvalid, CannotDiff, candidate_settings,
                                       diff_rules, type_label)

PERIOD = 7 * 86400.0   # the page diffs the last week of mail
MAX_AGE = 15 * 60.0    # then new mail makes the result stale: computed again on the next view


def compute(settings: Settings, candidate: Path, since: float) -> dict[str, Any]:
    """One diff, as the page shows it (runs in the background process)."""
    try:
        return {"valid": True, **diff_rules(settings, candidate, since).as_json()}
    except CandidateInvalid as exc:
        return {"valid": False, "problem": "candidate", "errors": exc.errors}
    except CannotDiff as exc:
        return {"valid": False, "problem": "diff", "errors": [str(exc)]}


@dataclass
class _Result:
    key: tuple[Any, ...]
    at: float
    data: dict[str, Any]


class CandidateDiff:
    """The cached diff of the configured candidate, computed in the background."""

    def __init__(self, max_age: float = MAX_AGE, period: float = PERIOD):
        self.max_age, self.period = max_age, period
        self._lock = threading.Lock()
        self._result: _Result | None = None
        self._running: tuple[Any, ...] | None = None
        self._started = 0.0
        self._proc: BaseProcess | None = None

    def view(self, settings: Settings) -> dict[str, Any]:
        """What the page shows now; starts a computation when the cache is stale."""
        candidate = settings.rules.candidate_directory
        if candidate is None:
            return {"state": "off"}
        key = (str(candidate), rules_signature(settings),
               rules_signature(candidate_settings(settings, candidate)))
        with self._lock:
            result = self._result
            fresh = (result is not None and result.key == key
                     and time.time() - result.at < self.max_age)
            if not fresh and self._running is None:
                self._start(settings, candidate, key)
            out: dict[str, Any] = {"state": "ready" if fresh else "computing",
                                   "candidate": str(candidate),
                                   "computing_since": self._started if self._running else None}
            if result is not None and result.key[0] == key[0]:
                out |= {"computed_at": result.at, "result": result.data}
            return out

    def _start(self, settings: Settings, candidate: Path, key: tuple[Any, ...]) -> None:
        # forkserver, as the worker pool: the child inherits none of the daemon's sockets. A
        # plain process (not a pool) so that `close` can stop a diff still running.
        ctx = multiprocessing.get_context("forkserver")
        ours, theirs = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_compute_child, name="rules-diff-page",
                           args=(theirs, settings, candidate, time.time() - self.period))
        proc.start()
        theirs.close()
        self._running, self._started, self._proc = key, time.time(), proc
        threading.Thread(target=self._wait, args=(key, ours, proc), name="rules-diff-page",
                         daemon=True).start()

    def _wait(self, key: tuple[Any, ...], conn: Connection, proc: BaseProcess) -> None:
        try:
            data = conn.recv()
        except (EOFError, OSError):  # the process died, or `close` stopped it
            data = {"valid": False, "problem": "diff",
                    "errors": [f"the diff's process ended without a result (exit"
                               f" {proc.exitcode})"]}
        finally:
            conn.close()
            proc.join()
        with self._lock:
            self._result = _Result(key, time.time(), data)
            self._running = None

    def close(self) -> None:
        """Stops a diff still running (the daemon is stopping)."""
        proc = self._proc
        if proc is not None and proc.is_alive():
            proc.terminate()


def _compute_child(conn: Connection, settings: Settings, candidate: Path, since: float) -> None:
    try:
        conn.send(compute(settings, candidate, since))
    except Exception as exc:  # the diff itself failed: shown, tried again when stale
        conn.send({"valid": False, "problem": "diff",
                   "errors": [f"the diff failed: {type(exc).__name__}: {exc}"]})
    finally:
        conn.close()


@functools.cache
def _style() -> str:
    """The dashboard's own style sheet, so both pages look alike."""
    text = _template().template
    style = re.search(r"<style>.*?</style>", text, re.S)
    css = style.group(0) if style else ""
    return string.Template(css).safe_substitute(
        outcome_css="\n".join(f"  .o-{k} {{ background:{v}; }}" for k, v in COLOURS.items()))


def _pair(before: Any, after: Any) -> str:
    if before == after:
        return _e(before or "-")
    return f'<del>{_e(before or "-")}</del> → <ins>{_e(after or "-")}</ins>'


def render_rules_diff(view: dict[str, Any], red: Redactor, refresh: int = 30) -> str:
    state = view["state"]
    body: list[str] = []
    if state == "off":
        body.append('<p class="empty">No candidate rule directory is configured'
                    " (<span class=mono>[rules] candidate_directory</span>).</p>")
    result = view.get("result")
    if state == "computing":
        body.append(f'<p id="computing">Computing the diff of {_e(view["candidate"])} (started'
                    f' {_e(views.fmt_time(view["computing_since"]))}); this page refreshes'
                    " itself.</p>")
    if result is not None and not result["valid"]:
        heading = ("The candidate rules are invalid" if result.get("problem") == "candidate"
                   else "The diff could not be made")
        body.append(f'<section id="invalid"><h2>{heading}</h2><ul>'
                    + "".join(f"<li class=mono>{_e(red.redact(e))}</li>"
                              for e in result["errors"]) + "</ul></section>")
    elif result is not None:
        body.append(_report(result, red, view["computed_at"]))
    title = "rules diff" + (f" — {view['candidate']}" if "candidate" in view else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="{5 if state == "computing" else int(refresh)}">
<meta name="referrer" content="no-referrer"><link rel="icon" href="data:,">
<title>mailbridge — {_e(title)}</title>
{_style()}
</head><body>
<header><h1>mailbridge</h1><span class="meta">{_e(title)} · <a href="/"
style="color:#bcccdc">dashboard</a></span></header>
<main>
{"".join(body)}
</main>
<footer>read-only · generated {_e(views.fmt_time(time.time()))}</footer>
</body></html>
"""


def _report(r: dict[str, Any], red: Redactor, computed_at: float) -> str:
    before, after = r["totals"]["before"], r["totals"]["after"]
    totals = _table([{"name": k, "b": before[k], "a": after[k]} for k in before], [
        ("outcome", lambda x: _badge(x["name"]), ""),
        ("live rules", lambda x: _e(x["b"]), "num"),
        ("candidate", lambda x: f"<b>{_e(x['a'])}</b>" if x["a"] != x["b"] else _e(x["a"]),
         "num")], "")
    changes = _table(r["changes"], [
        ("#", lambda c: _e(c["message"]), "num"),
        ("arrived", lambda c: _e(views.fmt_time(c["arrived_at"])), "t"),
        ("subject", lambda c: _e(red.redact(c["subject"])), "wrap"),
        ("outcome", lambda c: _pair(c["before"]["outcome"], c["after"]["outcome"]), ""),
        ("rule", lambda c: _pair(c["before"]["rule"], c["after"]["rule"]), "mono"),
        ("account", lambda c: _pair(c["before"]["account"], c["after"]["account"]), ""),
        ("alert key", lambda c: _pair(c["before"]["alert_key"], c["after"]["alert_key"]),
         "mono wrap"),
        ("product group / alert type",
         lambda c: _pair(type_label(c["before"]), type_label(c["after"])), "")],
        "no message would end differently")
    head = (f'<p id="summary">{_e(r["replayed"])} messages since'
            f' {_e(views.fmt_time(r["since"]))} replayed; <b>{_e(r["changed"])}</b> would'
            f' change. Computed {_e(views.fmt_time(computed_at))} in {_e(r["seconds"])} s.</p>')
    return (f"{head}<section id=\"totals\"><h2>Totals</h2>{totals}</section>"
            f"<section id=\"changes\"><h2>Messages that would change</h2>{changes}</section>")

