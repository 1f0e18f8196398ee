"""What every `mailbridge` command shares: the `--config` and `--json` options, loading the
settings (exit 1 on a bad file), logging through the one redactor (quiet for one-shot
commands unless -v), the daemon's `Bridge`, the store as views open it, and output: JSON
(epoch times with ISO 8601 beside them), tables that fit 100 columns, colour on a terminal
(not with NO_COLOR), progress bars for long work. New commands reuse these (`output.py`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click

from bridge.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from bridge.daemon import Bridge
    from bridge.operator.audit import Redactor
    from bridge.store.db import Store

F = TypeVar("F", bound=Callable[..., Any])

EX_TEMPFAIL = 75


class HelpGroup(click.Group):
    """A group whose command list shows each command's whole first sentence (click cuts it
    at 45 characters with "…")."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


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


# Declared functions rather than bare `click.option(...)` values, so that the command modules
# importing them see their type.
def config_option(f: F) -> F:
    return _config_option(f)


def json_option(f: F) -> F:
    return _json_option(f)


class _Since(click.ParamType):
    """`--since` of `events` and `rules diff`: seconds ago (3600), a duration ago (90s, 15m,
    12h, 7d) or an ISO time; the one parser is `views.parse_since`."""

    name = "since"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> float:
        from bridge.operator.views import parse_since

        if isinstance(value, float):
            return value
        try:
            got = parse_since(str(value))
        except ValueError:
            self.fail(f"{value!r} is not seconds ago (3600), a duration (90s, 15m, 12h, 7d)"
                      " nor an ISO time", param, ctx)
        assert got is not None
        return got


SINCE = _Since()
SINCE_HELP = "seconds ago (3600), a duration (15m, 12h, 7d) or an ISO time"


def load_or_exit(config_path: str, lenient_secrets: bool = False) -> Settings:
    """The settings, or exit 1 saying why. `lenient_secrets` for commands that send nothing
    (`simulate` of files): a secret only the service can read is then empty, not an error."""
    try:
        return load_settings(config_path, lenient_secrets=lenient_secrets)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)


VERBOSITY = "mailbridge.verbosity"  # ctx.meta key: -v counts up, -q down (main's options)


def verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get(VERBOSITY, 0)) if ctx is not None else 0


def start_logging(settings: Settings | None, one_shot: bool = True) -> Redactor:
    """Logging through the process's one redactor, which is returned for the store.

    A one-shot command (run --once, replay, test-alert, demo, …) prints its answer on
    stdout; its log goes to stderr at WARNING and above only (-v: INFO, -vv: DEBUG, -q:
    ERROR). The daemon keeps the config's level unless -v or -q is given."""
    from bridge.config import LogSettings
    from bridge.operator.audit import Redactor, setup_logging

    redactor = Redactor(settings.secrets() if settings is not None else [])
    log = settings.log if settings is not None else LogSettings()
    level, v = log.level, verbosity()
    if v > 0:
        level = "DEBUG" if v > 1 else "INFO"
    elif v < 0:
        level = "ERROR" if one_shot else "WARNING"
    elif one_shot:
        level = "WARNING" if log.level in ("DEBUG", "INFO") else log.level
    setup_logging(log.model_copy(update={"level": level}), redactor)
    return redactor


def open_bridge(settings: Settings, config_path: str | None = None, **kw: Any) -> Bridge:
    from bridge.daemon import Bridge

    try:
        return Bridge(settings, config_path=Path(config_path) if config_path else None, **kw)
    except Exception as exc:  # an invalid rule set at start-up names its files and lines
        click.echo(f"cannot start: {exc}", err=True)
        sys.exit(2)


def dump(obj: Any) -> None:
    """JSON on stdout: epoch times stay, each with its ISO 8601 form beside it."""
    from bridge.cli.output import with_iso_times

    click.echo(json.dumps(with_iso_times(obj), indent=2, default=str, ensure_ascii=False))


def open_store(settings: Settings, write: bool = False) -> Store:
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
