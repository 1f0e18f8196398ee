"""The `mailbridge` command line (SPEC §4). Each command is a thin shell over a stage.

The commands live by group: `running` (run, ingest, check, simulate, test-alert, psa-sim,
demo), `operate` (the operator's views and fixes), `claims` (processing, migrate), `install`
(init), `rules` (the `rules` group: diff, migrate); `common` and `output` hold what they
share. This module only gathers them under `main`, the console script, with what every
command has: -h/--help, -v/-q, help texts that are never cut, lines of at most 100 columns.
"""

from __future__ import annotations

from typing import Any, Callable

import click

from bridge.cli.common import VERBOSITY, HelpGroup

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"],
                                    "max_content_width": 100}


def _running() -> list[click.Command]:
    from bridge.cli import running

    return [running.run, running.ingest, running.check, running.simulate, running.psa_sim,
            running.demo, running.test_alert]


def _operate() -> list[click.Command]:
    from bridge.cli import operate

    return [operate.status, operate.events, operate.tickets, operate.replay, operate.outbox,
            operate.reconcile, operate.quarantine, operate.backup]


def _claims() -> list[click.Command]:
    from bridge.cli import claims

    return [claims.processing, claims.migrate]


def _others() -> list[click.Command]:
    from bridge.cli import expect, install, packs, rules

    return [install.init_command, expect.expect, packs.packs, rules.rules]


# Each command's module is imported when the command runs (or a help lists it), so `run`, the
# daemon and the MTA's `ingest` do not load the operator views, `init` and the rule migrator
# (~25 ms of CPU at every start). Names here must be the commands' own (tests check -h of each).
_LOADERS: dict[str, Callable[[], list[click.Command]]] = {
    **dict.fromkeys(("run", "ingest", "check", "simulate", "psa-sim", "demo", "test-alert"),
                    _running),
    **dict.fromkeys(("status", "events", "tickets", "replay", "outbox", "reconcile",
                     "quarantine", "backup"), _operate),
    **dict.fromkeys(("processing", "migrate"), _claims),
    **dict.fromkeys(("init", "expect", "packs", "rules"), _others),
}


class _LazyGroup(HelpGroup):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *_LOADERS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _LOADERS:
            for command in _LOADERS[cmd_name]():
                self.add_command(command)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_LazyGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="mailbridge")
@click.option("-v", "--verbose", count=True,
              help="more log on stderr: -v info, -vv debug (one-shot commands show warnings"
                   " and errors only)")
@click.option("-q", "--quiet", is_flag=True, help="errors only on stderr")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """mailbridge: monitoring alert mail in, PSA tickets out."""
    ctx.meta[VERBOSITY] = -1 if quiet else verbose

