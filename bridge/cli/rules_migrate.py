"""`mailbridge rules migrate`: rewrite v1 rule files as v2 (bridge/classify/migrate.py).

Every file is migrated in memory first; nothing is written when any file fails. Without
`--out` or `--in-place` the migrated text is printed (a preview); `--check` writes nothing
and exits 1 while a v1 file is left, for CI and upgrade scripts.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import click

from bridge.classify.migrate import MigrateError, Migrated, migrate_files
from bridge.cli.common import config_option, load_or_exit
from bridge.config import ConfigError, Settings, load_settings


def _read(directory: Path) -> list[tuple[str, str]]:
    files = sorted(p for p in directory.glob("*.toml") if p.is_file())
    return [(p.name, p.read_text(encoding="utf-8")) for p in files]


def _write(path: Path, text: str) -> None:
    """Atomically, keeping the file's mode: a reload never sees half a rule file."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _new_errors(settings: Settings, directory: Path, result: list[Migrated]) -> list[str]:
    """Load errors of the migrated set that the original set has not — a migrate bug, so
    nothing is written. Checked with the config's catalogue, accounts and packs."""
    from bridge.classify import check_ruleset
    from bridge.classify.rulepacks import PackSelection

    args = (settings.rules.accounts, settings.catalogue_map(),
            PackSelection.from_settings(settings))
    before = {(p.rule, p.message) for p in check_ruleset(directory, *args) if p.is_error}
    with tempfile.TemporaryDirectory() as tmp:
        for m in result:
            Path(tmp, m.name).write_text(m.text, encoding="utf-8")
        return [f"{Path(p.file).name}: {p.rule}: {p.message}"
                for p in check_ruleset(Path(tmp), *args)
                if p.is_error and (p.rule, p.message) not in before]


def _settings(config_path: str, required: bool) -> Settings | None:
    if required:
        return load_or_exit(config_path)
    try:
        return load_settings(config_path) if Path(config_path).is_file() else None
    except ConfigError:
        return None


def _summary(m: Migrated, before: str) -> str:
    if not m.changed:
        return f"{m.name}: unchanged (already v2, or not a rule file)"
    return f"{m.name}: v1 -> v2 ({len(before.splitlines())} -> {m.lines} lines)"


@click.command("migrate")
@config_option
@click.option("--rules", "rules_dir", type=click.Path(exists=True, file_okay=False),
              help="the rule directory (default: [rules] directory of the config)")
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="write the whole migrated directory here (must be new or empty)")
@click.option("--in-place", is_flag=True, help="rewrite the v1 files where they are")
@click.option("--check", is_flag=True, help="write nothing; exit 1 if a v1 file is left")
def migrate(config_path: str, rules_dir: str | None, out_dir: str | None, in_place: bool,
            check: bool) -> None:
    """Rewrite v1 rule files as v2 (format = 2) with identical outcomes."""
    if sum((out_dir is not None, in_place, check)) > 1:
        click.echo("use one of --out, --in-place and --check", err=True)
        sys.exit(2)
    settings = _settings(config_path, required=rules_dir is None)
    if rules_dir is not None:
        directory = Path(rules_dir)
    else:
        assert settings is not None      # required: load_or_exit exits without one
        directory = settings.rules.directory
    if not directory.is_dir():
        click.echo(f"rule directory not found: {directory}", err=True)
        sys.exit(2)
    files = _read(directory)
    try:
        result = migrate_files(files)
    except MigrateError as exc:
        click.echo(f"nothing written: {exc}", err=True)
        sys.exit(2)
    before = dict(files)
    changed = [m for m in result if m.changed]
    for m in result:
        click.echo(_summary(m, before[m.name]), err=True)
    if settings is None:
        click.echo("not loaded to verify: no readable config (its catalogue is needed)",
                   err=True)
    elif changed:
        errors = _new_errors(settings, directory, result)
        if errors:
            click.echo("nothing written: the migrated files do not load (please report):",
                       err=True)
            for error in errors:
                click.echo(f"  {error}", err=True)
            sys.exit(2)
    if check:
        sys.exit(1 if changed else 0)
    if in_place:
        for m in changed:
            _write(directory / m.name, m.text)
    elif out_dir is not None:
        target = Path(out_dir)
        if target.exists() and any(target.iterdir()):
            click.echo(f"{target} is not empty; nothing written", err=True)
            sys.exit(2)
        target.mkdir(parents=True, exist_ok=True)
        for p in sorted(directory.iterdir()):   # the accounts file and the rest come along
            if p.is_file() and p.name not in before:
                shutil.copy2(p, target / p.name)
        for m in result:
            _write(target / m.name, m.text)
    else:
        for m in changed:
            click.echo(f"# ---- {m.name} ----")
            click.echo(m.text, nl=False)
    click.echo(f"{len(changed)} of {len(result)} file(s) migrated"
               + ("" if in_place or out_dir else " (preview; nothing written)"), err=True)
