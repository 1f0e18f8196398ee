"""The operator's commands: `status`, `events`, `tickets`, `replay`, `outbox`, `reconcile`,
`quarantine` and `backup` (views open the store read-only; see `common.open_store`)."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click

from bridge.cli.common import (SINCE, SINCE_HELP, HelpGroup, config_option, dump,
                               json_option, load_or_exit, open_store, start_logging)
from bridge.cli.output import echo_table, progress, store_summary

@click.command()
@config_option
@json_option
def status(config_path: str, as_json: bool) -> None:
    """Backlog, outbox depth, failures, rule-set version, PSA state."""
    from bridge.operator import views

    from bridge.operator.status import load_runtime

    settings = load_or_exit(config_path)
    store = open_store(settings)
    from bridge.operator.audit import Redactor

    # The status holds server text (errors); it passes the redactor whatever the daemon did.
    data = Redactor(settings.secrets()).redact_obj(views.status_view(store, load_runtime(store)))
    if as_json:
        dump(data)
    else:
        from bridge.cli.output import paint

        head, _, rest = views.format_status(data).partition("\n")
        state = "ready" if data["healthy"] else "DEGRADED"
        click.echo(head.replace(state, paint(state, fg="green" if data["healthy"] else "red",
                                             bold=True)) + "\n" + rest)


@click.command()
@config_option
@click.option("--message", type=int, help="only events of this message id")
@click.option("--key", help="only events of this alert key")
@click.option("--since", type=SINCE, help=f"only newer events: {SINCE_HELP}")
@click.option("--outcome", help="only events with this outcome")
@click.option("--limit", default=200, show_default=True)
@json_option
def events(config_path: str, message: int | None, key: str | None, since: float | None,
           outcome: str | None, limit: int, as_json: bool) -> None:
    """The audit trail."""
    from bridge.operator import views

    settings = load_or_exit(config_path)
    rows = views.events_view(open_store(settings), message=message, key=key,
                             since=since, outcome=outcome, limit=limit)
    if as_json:
        dump(rows)
    else:
        echo_table(rows, ["id", "at", "kind", ("message_ref", "msg"), "alert_key", "outcome",
                          "detail"])


@click.command()
@config_option
@click.option("--remote", is_flag=True, help="list the PSA's tickets instead")
@json_option
def tickets(config_path: str, remote: bool, as_json: bool) -> None:
    """Open correlations (alert key -> ticket), or the PSA's own list with --remote."""
    from bridge.operator import views

    settings = load_or_exit(config_path)
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
            dump(rows)
        else:
            echo_table(rows, _remote_columns(rows))
        return
    rows = views.tickets_view(open_store(settings))
    if as_json:
        dump(rows)
    else:
        echo_table(rows, list(rows[0]) if rows else ["alert_key"])


@click.command()
@config_option
@click.argument("message_ids", metavar="MESSAGE_ID...", nargs=-1, required=True, type=int)
def replay(config_path: str, message_ids: tuple[int, ...]) -> None:
    """Re-run quarantined or failed messages through the current rules."""
    from bridge.replay import replay as do_replay

    settings = load_or_exit(config_path)
    start_logging(settings)
    started, worst = time.time() - 1, 0
    with progress("replaying", len(message_ids) if len(message_ids) > 1 else None) as advance:
        for message_id in message_ids:
            worst = max(worst, do_replay(settings, message_id, echo=click.echo))
            advance(1)
    click.echo(store_summary(open_store(settings), started))
    sys.exit(worst)


def _remote_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The PSA's ticket list: the columns people read first, then what else is plain."""
    first = ["ticketNumber", "status", "accountId", "productGroup", "alertType", "title",
             "updatedAt", "correlationId"]
    have = {k for r in rows for k in r if not isinstance(r[k], (list, dict))}
    return [k for k in first if k in have] or sorted(have)


@click.group(cls=HelpGroup, invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def outbox(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """List pending and dead outbox rows (subcommands: retry ID, drop ID, ack ID)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bridge.operator import views

        rows = open_store(load_or_exit(config_path)).outbox_rows()
        if as_json:
            dump(rows)
        else:
            for row in rows:  # an acknowledged dead row says so in its state
                if row.get("acknowledged_at") is not None:
                    row["state"] = "dead (acked)"
            echo_table(rows, ["id", "kind", "action", ("ordering_key", "key"), "state",
                              "attempts", "last_error"])


def _outbox_change(config_path: str, row_id: int, change: str, done: str) -> None:
    store = open_store(load_or_exit(config_path), write=True)
    ok = {"retry": store.outbox_requeue, "drop": store.outbox_drop,
          "ack": store.outbox_ack}[change](row_id)
    click.echo(f"row {row_id} {done if ok else 'not found (or already done)'}")
    sys.exit(0 if ok else 1)


@outbox.command("retry")
@click.argument("row_id", type=int)
@click.pass_obj
def outbox_retry(config_path: str, row_id: int) -> None:
    """Send a dead or waiting row again now."""
    _outbox_change(config_path, row_id, "retry", "queued again")


@outbox.command("drop")
@click.argument("row_id", type=int)
@click.pass_obj
def outbox_drop(config_path: str, row_id: int) -> None:
    """Give up on a row: it leaves the list and `degraded`; its message ends failed."""
    _outbox_change(config_path, row_id, "drop", "dropped")


@outbox.command("ack")
@click.argument("row_id", type=int)
@click.pass_obj
def outbox_ack(config_path: str, row_id: int) -> None:
    """Acknowledge a dead row: listed still, but no longer `degraded`."""
    _outbox_change(config_path, row_id, "ack", "acknowledged")


@click.command()
@config_option
@click.option("--fix", is_flag=True, help="close correlations whose ticket the PSA closed")
@json_option
def reconcile(config_path: str, fix: bool, as_json: bool) -> None:
    """Compare open correlations with the PSA's ticket list."""
    from bridge.assembly import build_peers
    from bridge.operator.reconcile import reconcile as do_reconcile
    from bridge.store import AsyncStore

    settings = load_or_exit(config_path)

    async def go() -> Any:
        peers = build_peers(settings)  # the same PSA client the daemon would use
        if peers.psa is None:
            raise click.ClickException("the PSA is disabled in the config ([psa] enabled)")
        store = AsyncStore(open_store(settings, write=fix))
        try:
            return await do_reconcile(store, peers.psa, fix=fix)
        finally:
            await peers.aclose()
            store.close()

    with progress("comparing with the PSA's tickets"):
        report = asyncio.run(go())
    if as_json:
        dump(report.__dict__ | {"differences": report.differences})
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


@click.group(cls=HelpGroup, invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def quarantine(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Quarantined messages (subcommands: show ID, release ID, delete ID)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bridge.operator import views

        rows = views.quarantine_list(open_store(load_or_exit(config_path)))
        if as_json:
            dump(rows)
        else:
            echo_table(rows, list(rows[0]) if rows else ["id", "reason"])


@quarantine.command("show")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_show(config_path: str, message_id: int) -> None:
    """Headers, reason, readable text and events of one message (secrets redacted)."""
    from bridge.operator import views
    from bridge.operator.audit import Redactor

    settings = load_or_exit(config_path)
    shown = views.quarantine_show(open_store(settings), message_id,
                                  redactor=Redactor(settings.secrets()))
    if shown is None:
        click.echo(f"no message {message_id}", err=True)
        sys.exit(1)
    dump(shown)


@quarantine.command("release")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_release(config_path: str, message_id: int) -> None:
    """Process a quarantined message again with the current rules (same as replay)."""
    from bridge.replay import replay as do_replay

    settings = load_or_exit(config_path)
    sys.exit(do_replay(settings, message_id, echo=click.echo))


@quarantine.command("delete")
@click.argument("message_id", type=int)
@click.pass_obj
def quarantine_delete(config_path: str, message_id: int) -> None:
    """Drop a quarantined message's raw bytes (its row and outcome stay for the audit)."""
    ok = open_store(load_or_exit(config_path), write=True).forget_raw(message_id)
    click.echo(f"message {message_id}: {'raw bytes deleted' if ok else 'not quarantined'}")
    sys.exit(0 if ok else 1)


@click.command()
@config_option
@click.argument("target", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="replace an existing TARGET")
def backup(config_path: str, target: str, force: bool) -> None:
    """Online copy of the store (SQLite backup API), readable by its owner only."""
    from bridge.store.files import BackupError

    try:
        with progress("copying the store", 100) as advance:
            open_store(load_or_exit(config_path)).backup(target, force=force,
                                                         progress=advance)
    except BackupError as exc:
        click.echo(f"backup: {exc}", err=True)
        sys.exit(1)
    click.echo(f"store copied to {target}")
