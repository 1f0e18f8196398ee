"""The `mailbridge` command line (SPEC §4). Each command is a thin shell over a stage.

The commands live by group: `running` (run, ingest, check, simulate, test-alert, psa-sim,
demo), `operate` (the operator's views and fixes), `claims` (processing, migrate); `common`
holds what they share. This module only gathers them under `main`, the console script.
"""

from __future__ import annotations

import click

from bridge.cli import claims, expect, operate, packs, rules_migrate, running


@click.group()
@click.version_option(package_name="mailbridge")
def main() -> None:
    """mailbridge: monitoring alert mail in, PSA tickets out."""


for _command in (running.run, running.ingest, running.check, running.simulate,
                 running.psa_sim, running.demo, operate.status, operate.events,
                 operate.tickets, operate.replay, operate.outbox, running.test_alert,
                 operate.reconcile, operate.quarantine, operate.backup, claims.processing,
                 claims.migrate, expect.expect, packs.packs, rules_migrate.rules):
    main.add_command(_command)
