"""`mailbridge expect`: the expected-mail watch (issue 20) — what is watched, and rules to add."""

from __future__ import annotations

import time

import click

from bridge.cli.common import HelpGroup, config_option, dump, json_option, load_or_exit, \
    open_store


@click.group(cls=HelpGroup)
def expect() -> None:
    """Expected mail: reports that must keep arriving (docs/expect.md)."""


@expect.command("list")
@config_option
@json_option
def list_(config_path: str, as_json: bool) -> None:
    """Each watched expectation: last report, next deadline, or missing since when."""
    from bridge.operator import views

    settings = load_or_exit(config_path)
    rows = [vars(r).copy() for r in open_store(settings).expectations()]
    if as_json:
        dump(rows)
        return
    click.echo(views.format_table(rows, ["name", "scope", "account_id", "state", "last_seen_at",
                                         ("judge_at", "next due"), "missing_since"]))


@expect.command()
@config_option
@click.option("--days", default=None, type=float,
              help="look back this many days (default: the retention period)")
@click.option("--timezone", "zone", default=None,
              help="time zone of proposed daily deadlines (default: this machine's)")
@json_option
def suggest(config_path: str, days: float | None, zone: str | None, as_json: bool) -> None:
    """Senders that mailed at a regular rhythm, each with a proposed [[expect]] rule."""
    from bridge.operator.expectsuggest import read_report, suggest as propose

    settings = load_or_exit(config_path)
    look_back = (days if days is not None else settings.store.retention_days) * 86400
    history = open_store(settings).report_history(time.time() - look_back)
    reports = [read_report(at, rule, head) for at, rule, _, head in history]
    from bridge.assembly import load_rules

    try:
        rules = load_rules(settings)
        routing = {r.name: (r.product_group, r.alert_type) for r in rules.detect.rules}
    except Exception:  # noqa: BLE001 - suggestions work without a valid rule set, unrouted
        routing = {}
    found = propose(reports, zone or _local_zone(), routing)
    if as_json:
        dump([vars(s) for s in found])
        return
    if not found:
        click.echo(f"no sender mailed at a regular rhythm in {len(reports)} message(s)")
        return
    click.echo("\n".join(s.toml for s in found))


def _local_zone() -> str:
    """The machine's IANA zone name from /etc/timezone or /etc/localtime, else UTC."""
    from pathlib import Path

    try:
        name = Path("/etc/timezone").read_text().strip()
        if name:
            return name
    except OSError:
        pass
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"
