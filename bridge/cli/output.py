"""How commands show things, shared by every command (and by commands still to come): tables
that fit 100 columns with local, readable times, JSON whose epoch times carry ISO 8601 beside
them, colour on a terminal unless NO_COLOR is set, a summary line in outcome words, and a
progress bar for long work (rich: a well-kept library made for exactly that, which also
knows when it is not on a terminal)."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Iterator, Sequence

import click

TABLE_WIDTH = 100
# Outcome words of the summary line, always shown (others only when they happened).
SUMMARY_WORDS = ("created", "appended", "resolved", "skipped", "quarantined")


def with_iso_times(obj: Any) -> Any:
    """For JSON: next to every epoch time an ISO 8601 one (`at` -> `at_iso`), in local time
    with its offset; the epoch stays, so scripts keep working."""
    from bridge.operator.views import is_time_key  # here: `mailbridge -h` stays light

    if isinstance(obj, dict):
        out: dict[Any, Any] = {}
        for key, value in obj.items():
            out[key] = with_iso_times(value)
            if isinstance(key, str) and is_time_key(key) and isinstance(value, (int, float)) \
                    and not isinstance(value, bool) and value > 0:
                out[f"{key}_iso"] = datetime.fromtimestamp(value).astimezone().isoformat(
                    timespec="seconds")
        return out
    if isinstance(obj, (list, tuple)):
        return [with_iso_times(v) for v in obj]
    return obj


def colour_on(stream: Any = None) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (no-color.org)."""
    if os.environ.get("NO_COLOR"):
        return False
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)())


def paint(text: str, **style: Any) -> str:
    return click.style(text, **style) if colour_on() else text


def echo_table(rows: Iterable[dict[str, Any]],
               columns: Sequence[str | tuple[str, str]]) -> None:
    """A table on stdout: 100 columns at most, the heading bold on a terminal."""
    from bridge.operator.views import format_table

    text = format_table(list(rows), columns, max_total=TABLE_WIDTH)
    head, _, rest = text.partition("\n")
    click.echo(paint(head, bold=True) + ("\n" + rest if rest else ""))


def summary_line(counts: dict[str, int], held: int = 0, until: float | None = None) -> str:
    """`created 3, appended 1, resolved 2, skipped 1, quarantined 0; held 2 until 14:05`:
    outcomes in words, then what is held back and until when."""
    words = [f"{w} {counts.get(w, 0)}" for w in SUMMARY_WORDS]
    words += [f"{w} {n}" for w, n in sorted(counts.items()) if w not in SUMMARY_WORDS and n]
    line = ", ".join(words)
    if held:
        when = "" if until is None else " until " + time.strftime(
            "%H:%M" if until - time.time() < 86400 else "%Y-%m-%d %H:%M",
            time.localtime(until))
        line += f"; held {held}{when}"
    return line


def store_summary(store: Any, since: float) -> str:
    """The summary line of what a one-shot command did since `since`, read from the store."""
    held, until = store.held_outbox(time.time())
    return summary_line(store.outcome_counts(since), held, until)


def _nothing(n: int = 1) -> None:
    pass


@contextlib.contextmanager
def progress(label: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr while the work runs (nothing when stderr is no terminal);
    yields `advance(n)`. `total` None: a spinner with a count."""
    if not sys.stderr.isatty():
        yield _nothing
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, \
        TextColumn, TimeRemainingColumn

    console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)

        def advance(n: int = 1) -> None:
            bar.advance(task, n)

        yield advance


@contextlib.contextmanager
def progress_bars() -> Iterator[Callable[[str, int, int], None] | None]:
    """Several bars on stderr, one per phase, for work that reports `(what, done, total)` —
    from more than one process (`rules diff`); yields None when stderr is no terminal."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, \
        TextColumn, TimeElapsedColumn

    console = Console(stderr=True, no_color=bool(os.environ.get("NO_COLOR")))
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        tasks: dict[str, Any] = {}

        def update(what: str, done: int, total: int) -> None:
            if what not in tasks:
                tasks[what] = bar.add_task(what, total=total)
            bar.update(tasks[what], completed=done, total=total)

        yield update
