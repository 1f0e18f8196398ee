"""The `mailbridge rules` command group: what a rule change would do, before it goes live.

`rules diff` replays past mail against a candidate rule directory (bridge.operator.rulesdiff);
`rules migrate` (bridge/cli/rules_migrate.py) rewrites v1 rule files as v2. The group lives in
its own module so that other rule commands join it with one `rules.add_command` each.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import click

from bridge.cli.common import (SINCE, SINCE_HELP, HelpGroup, config_option, dump, json_option,
                               load_or_exit)
from bridge.cli.output import progress_bars
from bridge.cli.rules_migrate import migrate

EXIT_SAME, EXIT_CHANGED, EXIT_INVALID, EXIT_CANNOT = 0, 1, 2, 3


@click.group(cls=HelpGroup)
def rules() -> None:
    """Work on rule files: what a change would do before it goes live, v1 to v2."""


rules.add_command(migrate)


@rules.command()
@config_option
@click.option("--rules", "candidate", required=True,
              type=click.Path(file_okay=False, path_type=Path),
              help="the candidate rule directory (as [rules] directory would name it)")
@click.option("--since", type=SINCE, default="7d", show_default=True,
              help=f"replay the mail that arrived since: {SINCE_HELP}")
@json_option
def diff(config_path: str, candidate: Path, since: float, as_json: bool) -> None:
    """Replay the staged mail of the period through the whole pipeline with the live rules and
    with the --rules directory (dry run, scratch stores) and print what would change. Exit 0:
    nothing changes; 1: something does; 2: the candidate is invalid (its errors are printed); 3: no
    diff could be made (no store yet, or the live rules are invalid)."""
    from bridge.operator.audit import Redactor
    from bridge.operator.rulesdiff import CandidateInvalid, CannotDiff, diff_rules

    settings = load_or_exit(config_path, lenient_secrets=True)  # it sends nothing
    try:
        with progress_bars() as progress:
            report = diff_rules(settings, candidate, since, progress=progress)
    except CandidateInvalid as exc:
        if as_json:
            dump({"valid": False, "errors": exc.errors})
        else:
            click.echo(f"{candidate}: the candidate rules are invalid", err=True)
            for line in exc.errors:
                click.echo(line, err=True)
        sys.exit(EXIT_INVALID)
    except CannotDiff as exc:
        click.echo(f"rules diff: {exc}", err=True)
        sys.exit(EXIT_CANNOT)
    # Subjects are mail text: the configured secrets are masked, as in every view.
    data = Redactor(settings.secrets()).redact_obj(report.as_json())
    if as_json:
        dump({"valid": True, **data})
    else:
        click.echo(format_report(data))
    sys.exit(EXIT_CHANGED if report.changes else EXIT_SAME)


def _t(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def _pair(before: Any, after: Any) -> str:
    return f"{before or '-'} → {after or '-'}" if before != after else f"{before or '-'}"


def format_report(r: dict[str, Any]) -> str:
    """The report as text: each changed message (old → new), then the totals side by side."""
    from bridge.operator.rulesdiff import type_label

    out = [f"rules diff: {r['replayed']:,} messages since {_t(r['since'])}"
           + (f" ({r['left_out']:,} left out: raw mail pruned, over the size limit, or"
              " quarantined for breaking a processing budget)" if r["left_out"] else "")]
    if not r["changes"]:
        out.append("no change: every message ends as it does with the live rules")
    else:
        out.append(f"{r['changed']:,} message(s) change:")
    for c in r["changes"]:
        b, a = c["before"], c["after"]
        out.append(f"  #{c['message']}  {_t(c['arrived_at'])}  {c['subject'][:90]}")
        out.append(f"      outcome     {_pair(b['outcome'], a['outcome'])}")
        out.append(f"      rule        {_pair(b['rule'], a['rule'])}")
        out.append(f"      account     {_pair(b['account'], a['account'])}")
        out.append(f"      alert key   {_pair(b['alert_key'], a['alert_key'])}")
        out.append("      alert type  " + _pair(type_label(b), type_label(a)))
    before, after = r["totals"]["before"], r["totals"]["after"]
    out += ["", f"{'':<20}{'live':>10}{'candidate':>12}"]
    for name in before:
        mark = "" if before[name] == after[name] else "   *"
        out.append(f"{name:<20}{before[name]:>10,}{after[name]:>12,}{mark}")
    out.append(f"({r['seconds']:.1f} s, {r['cpu_seconds']:.1f} s of CPU,"
               f" {r['replays']} replay(s))")
    return "\n".join(out)

