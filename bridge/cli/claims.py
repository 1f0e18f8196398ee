"""`mailbridge processing [release|quarantine ID]` and `mailbridge migrate`.

`processing` lists the messages in processing with their claimant (alive, gone, or a process
without a lease) and acts on one: `release` puts it back to staged (it is then handed out
alone, its claim counted), `quarantine` ends it quarantined "by the administrator". A message
held by a live process is refused without `--force`, since that process would record its own
decision afterwards. `migrate` brings the store's schema up to date: the only commands that
migrate are this one and `run` (daemon and `--once`); views and the web never do.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bridge.cli.common import HelpGroup, config_option, dump, json_option, load_or_exit, open_store


@click.group(cls=HelpGroup, invoke_without_command=True)
@config_option
@json_option
@click.pass_context
def processing(ctx: click.Context, config_path: str, as_json: bool) -> None:
    """Messages in processing and who holds them (subcommands: release ID, quarantine ID)."""
    ctx.obj = config_path
    if ctx.invoked_subcommand is None:
        from bridge.operator import views

        rows = open_store(load_or_exit(config_path)).processing_rows()
        if as_json:
            dump(rows)
        else:
            click.echo(views.format_table(rows, ["id", "source", "claimed_by", "claimant",
                                                 "claimed_at", "claims"]))


def _change(config_path: str, message_id: int, change: str, force: bool, done: str) -> None:
    store = open_store(load_or_exit(config_path), write=True)
    if change == "release":
        refused = store.processing_release(message_id, force)
    else:
        refused = store.processing_quarantine(message_id, force)
    click.echo(refused or f"message {message_id} {done}", err=bool(refused))
    sys.exit(1 if refused else 0)


force_option = click.option("--force", is_flag=True,
                            help="even when a live process holds the claim")


@processing.command("release")
@click.argument("message_id", type=int)
@force_option
@click.pass_obj
def processing_release(config_path: str, message_id: int, force: bool) -> None:
    """Put a message back to staged (it is processed again, alone)."""
    _change(config_path, message_id, "release", force, "back to staged")


@processing.command("quarantine")
@click.argument("message_id", type=int)
@force_option
@click.pass_obj
def processing_quarantine(config_path: str, message_id: int, force: bool) -> None:
    """Quarantine a message in processing ("quarantined by the administrator")."""
    _change(config_path, message_id, "quarantine", force, "quarantined")


@click.command()
@config_option
def migrate(config_path: str) -> None:
    """Bring the store's schema up to date (`run` and `run --once` do it too)."""
    from bridge.store.db import Store
    from bridge.store.readonly import schema_version_at

    settings = load_or_exit(config_path)
    path = settings.store.path
    before = schema_version_at(path) if Path(path).exists() else 0
    store = Store(path)  # migrates what is missing (creates a new store)
    after = store.schema_version()
    store.close()
    click.echo(f"store {path}: schema version {after}"
               + ("" if before == after else f" (was {before})"))
