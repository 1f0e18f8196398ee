"""The `mailbridge` command line (SPEC §4). Each command is a thin shell over a stage.

The commands live by group: `running` (run, ingest, check, simulate, test-alert, psa-sim,
demo), `operate` (the operator's views and fixes), `claims` (processing, migrate), `install`
(init), `rules` (the `rules` group: diff, migrate); `common` and `output` hold what they
share. This module only gathers them under `main`, the console script, with what every
command has: -h/--help, -v/-q, help texts that are never cut, lines of at most 100 columns.
"""

from __future__ import annotations

from typing import Any

import click

from bridge.cli import claims, expect, install, operate, packs, rules, running
from bridge.cli.common import VERBOSITY, HelpGroup

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"],
                                    "max_content_width": 100}


@click.group(cls=HelpGroup, context_settings=CONTEXT_SETTINGS)
@click.version_option(package_name="mailbridge")
@click.option("-v", "--verbose", count=True,
              help="more log on stderr: -v info, -vv debug (one-shot commands show warnings"
                   " and errors only)")
@click.option("-q", "--quiet", is_flag=True, help="errors only on stderr")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """mailbridge: monitoring alert mail in, PSA tickets out."""
    ctx.meta[VERBOSITY] = -1 if quiet else verbose


for _command in (running.run, running.ingest, running.check, running.simulate,
                 running.psa_sim, running.demo, operate.status, operate.events,
                 operate.tickets, operate.replay, operate.outbox, running.test_alert,
                 operate.reconcile, operate.quarantine, operate.backup, claims.processing,
                 claims.migrate, install.init_command, expect.expect, packs.packs,
                 rules.rules):
    main.add_command(_command)
