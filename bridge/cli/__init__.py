"""The `mailbridge` command line (SPEC §4). Each command is a thin shell over a stage."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

import click

from bridge.config import ConfigError, Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])

EX_TEMPFAIL = 75


def _default_config() -> str:
    env = os.environ.get("MAILBRIDGE_CONFIG")
    if env:
        return env
    if Path("config.toml").exists():
        return "config.toml"
    return "/etc/mailbridge/config.toml"


_config_option = click.option("--config", "config_path", default=_default_config,
                              show_default="$MAILBRIDGE_CONFIG, ./config.toml or"
                              " /etc/mailbridge/config.toml", type=click.Path(dir_okay=False),
                              help="the TOML config file")
_json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


# Declared functions rather than bare `click.option(...)` values, so that modules importing
# them from here (cli_claims, imported at the end of this one) see their type.
def config_option(f: F) -> F:
    return _config_option(f)


def json_option(f: F) -> F:
    return _json_option(f)


def _settings(config_path: str) -> Settings:
    try:
        return load_settings(config_path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


def _setup_logging(settings: Settings) -> Any:
    """Logging through the process's one redactor, which is returned for the store."""
    from bridge.operator.audit import Redactor, setup_logging

    redactor = Redactor(settings.secrets())
    setup_logging(settings.log, redactor)
    return redactor


def _bridge(settings: Settings, config_path: str | None = None, **kw: Any) -> Any:
    from bridge.daemon import Bridge

    try:
        return Bridge(settings, config_path=Path(config_path) if config_path else None, **kw)
    except Exception as exc:  # an invalid rule set at start-up names its files and lines
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(2)


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, default=str, ensure_ascii=False))


@click.group()
@click.version_option(package_name="mailbridge")
def main() -> None:
    """mailbridge: monitoring alert mail in, PSA tickets out."""


# -- running ------------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--once", is_flag=True, help="drain sources and outbox, then exit (0 done, 3 pending)")
@click.option("--flush", is_flag=True, help="with --once: send held work (coalesced appends,"
              " delayed resolves) now")
def run(config_path: str, once: bool, flush: bool) -> None:
    """Run the daemon (or one pass with --once)."""
    if flush and not once:
        click.echo("--flush goes with --once", err=True)
        sys.exit(2)
    settings = _settings(config_path)
    redactor = _setup_logging(settings)
    bridge = _bridge(settings, config_path, redactor=redactor)

    async def go() -> int:
        if once:
            try:
                return await bridge.run_once(flush=flush)
            finally:
                await bridge.close()
        return await bridge.run()

    sys.exit(asyncio.run(go()))


@main.command()
@config_option
def ingest(config_path: str) -> None:
    """Pipe source: stage the message on stdin durably (exit 75 if that fails), then process."""
    from bridge.ingest import ingest as do_ingest

    raw = sys.stdin.buffer.read()
    try:
        settings = load_settings(config_path, lenient_secrets=True)
    except ConfigError as exc:
        click.echo(f"mailbridge ingest: {exc}", err=True)
        sys.exit(EX_TEMPFAIL)  # the MTA keeps the message and retries
    sys.exit(do_ingest(raw, settings))


# -- rules ----------------------------------------------------------------------------------------


@main.command()
@config_option
@click.option("--online", is_flag=True, help="also log in to IMAP/SMTP and ask the PSA")
def check(config_path: str, online: bool) -> None:
    """Validate config, rules and accounts; with --online, reach every peer."""
    from bridge.operator.checks import run_checks

    settings = _settings(config_path)
    sys.exit(run_checks(settings, online=online, echo=click.echo))


@main.command()
@config_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--mailbox", is_flag=True, help="the messages now in the IMAP mailbox(es),"
              " read-only")
@click.option("--limit", default=1000, show_default=True, help="with --mailbox: at most")
@click.option("--fresh", is_flag=True, help="start from an empty state, not the live one")
@click.option("--at", "at", help="the clock: which holds are due (epoch seconds or ISO time;"
              " default now)")
@click.option("--flush", is_flag=True, help="let every hold fall due")
@json_option
def simulate(config_path: str, files: tuple[str, ...], mailbox: bool, limit: int,
             fresh: bool, at: str | None, flush: bool, as_json: bool) -> None:
    """`run` without side effects: these messages, in arrival order, through the same parts
    against a scratch copy of the live state. Sends and changes nothing."""
    from bridge.simulate import simulate_files, simulate_mailbox

    settings = _settings(config_path)
    options: dict[str, Any] = {"fresh": fresh, "flush": flush,
                               "at": _time_of(at) if at else None}
    if mailbox:
        sys.exit(simulate_mailbox(settings, as_json, limit, echo=click.echo, **options))
    if not files:
        click.echo("name .eml files, or use --mailbox", err=True)
        sys.exit(2)
    sys.exit(simulate_files(settings, [Path(f) for f in files], as_json, echo=click.echo,
                            **options))


def _time_of(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        from datetime import datetime

        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            raise click.BadParameter(f"{value!r} is neither epoch seconds nor an ISO time")


# -- the simulator and the demo -----------------------------------------------------------------


@main.command("psa-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=int)
@click.option("--partner", type=click.Path(exists=True, dir_okay=False),
              help="partner setup (TOML); default: the bundled demo partner")
@click.option("--state", type=click.Path(dir_okay=False), help="keep tickets in this file")
def psa_sim(host: str, port: int, partner: str | None, state: str | None) -> None:
    """Run the PSA simulator (the MSPCentric OEM alerts API) on HOST:PORT."""
    from bridge.psa_sim import PartnerError, run as run_sim

    try:
        run_sim(host, port, Path(partner) if partner else None, Path(state) if state else None)
    except PartnerError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


@main.command()
@click.option("--keep", type=click.Path(file_okay=False), help="keep the demo's files here")
def demo(keep: str | None) -> None:
    """The embedded default: samples -> rules -> PSA simulator; prints the tickets."""
    from bridge.demo import run_demo

    sys.exit(run_demo(Path(keep) if keep else None, echo=click.echo))


# -- audit views ----------------------------------------------------------------------------------


def _store(settings: Settings, write: bool = False) -> Any:
    """Views open the store read-only: no migration, no write lock, so they answer while the
    pipeline writes. Commands that change something open it for writing, never migrating."""
    from bridge.operator.audit import Redactor
    from bridge.store.db import Store, StoreNotReady

    try:
        store = Store(settings.store.path, migrate=False, readonly=not write)
    except StoreNotReady as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    store.redact = Redactor(settings.secrets()).redact
    return store


@main.command()
@config_option
@json_option
def status(config_path: str, as_json: bool) -> None:
    """Backlog, outbox depth, failures, rule-set version, PSA state."""
    from bridge.operator import views

    from bridge.operator.status import load_runtime

    settings = _settings(config_path)
    store = _store(settings)
    from bridge.operator.audit import Redactor

    # The status holds server text (errors); it passes the redactor whatever the daemon did.
    data = Redactor(settings.secrets()).redact_obj(views.status_view(store, load_runtime(store)))
    if as_json:
        _dump(data)
    else:
        click.echo(views.format_status(data))


@main.command()
@config_option
@click.option("--message", type=int, help="only events of this message id")
@click.option("--key", help="only events of this alert key")
@click.option("--since", help="only newer events: seconds ago (e.g. 3600) or ISO time")
@click.option("--outcome", help="only events with this outcome")
@click.option("--limit", default=200, show_default=True)
@json_option
def events(config_path: str, message: int | None, key: str | None, since: str | None,
           outcome: str | None, limit: int, as_json: bool) -> None:
    """The audit trail."""
    from bridge.operator import views

    settings = _settings(config_path)
    rows = views.events_view(_store(settings), message=message, key=key,
                             since=_since(since), outcome=outcome, limit=limit)
    if as_json:
        _dump(rows)
    else:
        click.echo(views.format_table(rows, ["id", "at", "kind", "message_ref", "alert_key",
                                             "outcome", "detail"]))


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return time.time() - float(value)
    except ValueError:
        from datetime import datetime

        return datetime.fromisoformat(value).timestamp()


@main.command()
@config_option
@click.option("--remote", is_flag=True, help="list the PSA's tickets instead")
@json_option
def tickets(config_path: str, remote: bool, as_json: bool) -> None:
    """Open correlations (alert key -> ticket), or the PSA's own list with --remote."""
    from bridge.operator import views

    settings = _settings(config_path)
    if remote:
        from bridge.assembly import build_peers

        async def fetch() -> list[dict[str, Any]]:
            peers = build_peers(settings)  # the same PSA client the daemon would use
            if peers.psa is None:
                raise click.ClickException("the PSA is disabled in the config ([psa] enabled)")
            try:
                return await peers.psa.list_alerts()
            finally:
                await peers.aclose()

        rows = asyncio.run(fetch())
        if as_json:
            _dump(rows)
        else:
            click.echo(views.format_table(rows, sorted({k for r in rows for k in r
                                                        if not isinstance(r[k], (list, dict))})))
        return
    rows = views.tickets_view(_store(settings))
    if as_json:
        _dump(rows)
    else:
        click.echo(views.format_table(rows, list(rows[0]) if rows else ["alert_key"]))


@main.command()
@config_option
@click.argument("message_id", type=int)
def replay(config_path: str, message_id: int) -> None:
    """Re-run a quarantined or failed message through the current rules."""
    from bridge.replay import replay as do_replay

    settings = _settings(config_path)
    _setup_logging(settings)
    sys.exit(do_replay(settings, message_id, echo=click.echo))


@main.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def outbox(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """List pending and dead outbox rows (subcommands: retry ID, drop ID)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bridge.operator import views

        rows = _store(_settings(config_path)).outbox_rows()
        if as_json:
            _dump(rows)
        else:
            click.echo(views.format_table(rows, ["id", "kind", "action", "ordering_key",
                                                 "state", "attempts", "last_error"]))


def _outbox_change(config_path: str, row_id: int, change: str, done: str) -> None:
    ok = getattr(_store(_settings(config_path), write=True), change)(row_id)
    click.echo(f"row {row_id} {done if ok else 'not found (or already done)'}")
    sys.exit(0 if ok else 1)


@outbox.command("retry")
@click.argument("row_id", type=int)
@click.pass_obj
def outbox_retry(config_path: str, row_id: int) -> None:
    """Send a dead or waiting row again now."""
    _outbox_change(config_path, row_id, "outbox_requeue", "queued again")


@outbox.command("drop")
@click.argument("row_id", type=int)
@click.pass_obj
def outbox_drop(config_path: str, row_id: int) -> None:
    """Give up on a row (its message ends failed)."""
    _outbox_change(config_path, row_id, "outbox_drop", "dropped")


@main.command("test-alert")
@config_option
@click.option("--account", required=True, help="the account id (as the PSA knows it)")
@click.option("--product-group", default="test", show_default=True)
@click.option("--alert-type", default="Test Alert", show_default=True)
@click.option("--resolve", is_flag=True, help="resolve the account's open test ticket")
def test_alert(config_path: str, account: str, product_group: str, alert_type: str,
               resolve: bool) -> None:
    """Send one test alert end to end and print the PSA's answer."""
    from bridge.testalert import send_test_alert

    settings = _settings(config_path)
    groups = settings.catalogue_map()
    if alert_type not in groups.get(product_group, ()):
        click.echo(f"{product_group}/{alert_type} is not in the catalogue of the config",
                   err=True)
        sys.exit(1)
    redactor = _setup_logging(settings)
    bridge = _bridge(settings, redactor=redactor)

    async def go() -> dict[str, Any]:
        try:
            return await send_test_alert(bridge, account, product_group, alert_type, resolve)
        finally:
            await bridge.close()

    result = asyncio.run(go())
    click.echo(f"test alert {result['alert_key']}: {result['outcome'] or result['state']}"
               f" — {result['reason']}")
    sys.exit(0 if result["outcome"] in ("created", "appended", "resolved",
                                        "nothing-to-resolve") else 1)


@main.command()
@config_option
@click.option("--fix", is_flag=True, help="close correlations whose ticket the PSA closed")
@json_option
def reconcile(config_path: str, fix: bool, as_json: bool) -> None:
    """Compare open correlations with the PSA's ticket list."""
    from bridge.assembly import build_peers
    from bridge.operator.reconcile import reconcile as do_reconcile
    from bridge.store import AsyncStore

    settings = _settings(config_path)

    async def go() -> Any:
        peers = build_peers(settings)  # the same PSA client the daemon would use
        if peers.psa is None:
            raise click.ClickException("the PSA is disabled in the config ([psa] enabled)")
        store = AsyncStore(_store(settings, write=fix))
        try:
            return await do_reconcile(store, peers.psa, fix=fix)
        finally:
            await peers.aclose()
            store.close()

    report = asyncio.run(go())
    if as_json:
        _dump(report.__dict__ | {"differences": report.differences})
    else:
        click.echo(f"checked {report.checked} open correlation(s)")
        for label, rows in (("closed at the PSA", report.closed_at_psa),
                            ("missing at the PSA", report.missing_at_psa),
                            ("open at the PSA, unknown here", report.unknown_open)):
            for row in rows:
                click.echo(f"  {label}: {row['correlation_id']} {row.get('alert_key', '')}"
                           f" {row.get('title') or ''}")
        click.echo(f"{report.differences} difference(s)"
                   + (f", {report.fixed} fixed" if fix else ""))
    sys.exit(0 if report.differences == 0 or fix else 1)


@main.group(invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def quarantine(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Quarantined messages (subcommands: show ID, release ID, delete ID)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bridge.operator import views

        rows = views.quarantine_list(_store(_settings(config_path)))
        if as_json:
            _dump(rows)
        else:
            click.echo(views.format_table(rows, list(rows[0]) if rows else ["id", "reason"]))


@quarantine.command("show")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_show(config_path: str, message_id: int) -> None:
    """Headers, reason, readable text and events of one message (secrets redacted)."""
    from bridge.operator import views
    from bridge.operator.audit import Redactor

    settings = _settings(config_path)
    shown = views.quarantine_show(_store(settings), message_id,
                                  redactor=Redactor(settings.secrets()))
    if shown is None:
        click.echo(f"no message {message_id}", err=True)
        sys.exit(1)
    _dump(shown)


@quarantine.command("release")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_release(config_path: str, message_id: int) -> None:
    """Process a quarantined message again with the current rules (same as replay)."""
    from bridge.replay import replay as do_replay

    settings = _settings(config_path)
    sys.exit(do_replay(settings, message_id, echo=click.echo))


@quarantine.command("delete")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_delete(config_path: str, message_id: int) -> None:
    """Drop a quarantined message's raw bytes (its row and outcome stay for the audit)."""
    ok = _store(_settings(config_path), write=True).forget_raw(message_id)
    click.echo(f"message {message_id}: {'raw bytes deleted' if ok else 'not quarantined'}")
    sys.exit(0 if ok else 1)


@main.command()
@config_option
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="replace an existing TARGET")
def backup(config_path: str, target: str, force: bool) -> None:
    """Online copy of the store (SQLite backup API), readable by its owner only."""
    from bridge.store.files import BackupError

    try:
        _store(_settings(config_path)).backup(target, force=force)
    except BackupError as exc:
        click.echo(f"backup: {exc}", err=True)
        sys.exit(1)
    click.echo(f"store copied to {target}")


# `processing` and `migrate` live in a module of their own (this one is long enough).
from bridge.cli.claims import migrate, processing  # noqa: E402

main.add_command(processing)
main.add_command(migrate)

if __name__ == "__main__":
    main()
