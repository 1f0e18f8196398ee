"""The commands that run mail through: `run`, `ingest`, `check`, `simulate`, `test-alert`, and
the PSA simulator and demo."""

from __future__ import annotations

import asyncio
import gc
import sys
import time
from pathlib import Path
from typing import Any

import click

from bridge.cli.common import (EX_TEMPFAIL, config_option, json_option, load_or_exit,
                               open_bridge, open_store, start_logging)
from bridge.config import ConfigError, load_settings

GC_YOUNG_THRESHOLD = 10_000  # allocations between two young collections (CPython: 700)


@click.command()
@config_option
@click.option("--once", is_flag=True,
              help="drain sources and outbox, then exit (0 done, 3 pending)")
@click.option("--flush", is_flag=True, help="with --once: send held work (coalesced appends,"
              " delayed resolves) now")
def run(config_path: str, once: bool, flush: bool) -> None:
    """Run the daemon (or one pass with --once)."""
    if flush and not once:
        click.echo("--flush goes with --once", err=True)
        sys.exit(2)
    from bridge.process import forkserver

    forkserver.start()  # its imports beside ours (bridge.process.forkserver)
    # Every message and call makes and drops many small containers (rows, events, payloads),
    # and the heap around them (modules, rules, compiled expressions) lives as long as the
    # process. At CPython's default threshold (700) the collector ran ~960 times per 10,000
    # mails, 7 of them over the whole heap: 0.4-0.9 s of the main process's CPU on the backlog
    # benchmark. At 10,000 it runs ~11 times (0.04 s); what it collects are reference cycles,
    # rare here, so the most that waits longer is a few MiB.
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    settings = load_or_exit(config_path)
    redactor = start_logging(settings, one_shot=once)
    started = time.time()
    bridge = open_bridge(settings, config_path, redactor=redactor)

    async def go() -> int:
        if once:
            try:
                return await bridge.run_once(flush=flush)
            finally:
                await bridge.close()
        return await bridge.run()

    code = asyncio.run(go())
    if once:
        from bridge.cli.output import store_summary

        click.echo(store_summary(open_store(settings), started))
    sys.exit(code)


@click.command()
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


@click.command()
@config_option
@click.option("--online", is_flag=True, help="also log in to IMAP/SMTP and ask the PSA")
def check(config_path: str, online: bool) -> None:
    """Validate config, rules and accounts; with --online, reach every peer."""
    from bridge.operator.checks import check_config_file

    sys.exit(check_config_file(config_path, online=online, echo=click.echo,
                               err=lambda line: click.echo(line, err=True)))


@click.command()
@config_option
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--mailbox", is_flag=True, help="the messages now in the IMAP mailbox(es),"
              " read-only")
@click.option("--limit", default=1000, show_default=True,
              help="with --mailbox: read at most this many messages per mailbox")
@click.option("--fresh", is_flag=True, help="start from an empty state, not the live one")
@click.option("--at", "at", help="the clock: which holds are due (epoch seconds or ISO time;"
              " default now)")
@click.option("--flush", is_flag=True, help="let every hold fall due")
@click.option("--explain", is_flag=True, help="for every rule tried, the first condition"
              " that failed")
@json_option
def simulate(config_path: str, files: tuple[str, ...], mailbox: bool, limit: int,
             fresh: bool, at: str | None, flush: bool, explain: bool, as_json: bool) -> None:
    """`run` without side effects: these messages, in arrival order, through the same parts
    against a scratch copy of the live state. Sends and changes nothing."""
    from bridge.simulate import simulate_files, simulate_mailbox

    # Files go to dry-run peers only: no secret is needed (the mailbox needs its login).
    settings = load_or_exit(config_path, lenient_secrets=not mailbox)
    options: dict[str, Any] = {"fresh": fresh, "flush": flush, "explain": explain,
                               "at": _time_of(at) if at else None}
    if mailbox:
        from bridge.cli.output import progress

        code = simulate_mailbox(settings, as_json, limit, echo=click.echo,
                                bar=lambda total: progress("simulating", total), **options)
        sys.exit(code)
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


@click.command("psa-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8089, show_default=True, type=int)
@click.option("--partner", type=click.Path(exists=True, dir_okay=False),
              help="partner setup (TOML); default: the bundled demo partner")
@click.option("--state", type=click.Path(dir_okay=False), help="keep tickets in this file")
def psa_sim(host: str, port: int, partner: str | None, state: str | None) -> None:
    """Run the PSA simulator (the MSPCentric OEM alerts API) on HOST:PORT; prints the [psa]
    settings to paste into the config first."""
    from bridge.psa_sim import PartnerError, run as run_sim

    try:
        run_sim(host, port, Path(partner) if partner else None, Path(state) if state else None,
                echo=click.echo)
    except PartnerError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


@click.command()
@click.option("--keep", type=click.Path(file_okay=False), help="keep the demo's files here")
def demo(keep: str | None) -> None:
    """The embedded default: samples -> rules -> PSA simulator; prints the tickets."""
    from bridge.demo import run_demo

    start_logging(None)  # warnings and errors on stderr only, never among the results
    sys.exit(run_demo(Path(keep) if keep else None, echo=click.echo))


@click.command("test-alert")
@config_option
@click.option("--account", required=True, help="the account id (as the PSA knows it)")
@click.option("--product-group", default="test", show_default=True)
@click.option("--alert-type", default="Test Alert", show_default=True)
@click.option("--resolve", is_flag=True, help="resolve the account's open test ticket")
def test_alert(config_path: str, account: str, product_group: str, alert_type: str,
               resolve: bool) -> None:
    """Send one test alert end to end and print the PSA's answer."""
    from bridge.testalert import send_test_alert

    settings = load_or_exit(config_path)
    groups = settings.catalogue_map()
    if alert_type not in groups.get(product_group, ()):
        click.echo(f"{product_group}/{alert_type} is not in the catalogue of the config",
                   err=True)
        sys.exit(1)
    redactor = start_logging(settings)
    bridge = open_bridge(settings, redactor=redactor)

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
