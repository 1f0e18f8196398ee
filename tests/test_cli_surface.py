"""The command line as a person meets it (issue 17): -h everywhere, help never cut, what the
README shows resolves, a man page that matches the commands and ships in the wheel, tables of
100 columns, JSON times, colour rules, the summary line, quiet one-shot commands."""

from __future__ import annotations

import io
import re
import shlex
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Iterator

import click
import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.cli.manpage import PAGE, render
from bridge.cli.output import colour_on, summary_line, with_iso_times
from bridge.operator.views import format_table
from tests.helpers import ROOT, cli, write_config

SHELL_BREAKS = {"|", "||", "&&", ";", "<", ">", ">>", "2>", "&"}


def every_command(group: click.Group = main, path: tuple[str, ...] = ()) -> Iterator[
        tuple[str, ...]]:
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from every_command(command, (*path, name))


def test_dash_h_works_for_every_command() -> None:
    runner = CliRunner()
    paths = [(), *every_command()]
    assert len(paths) > 20
    for path in paths:
        result = runner.invoke(main, [*path, "-h"])
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: "), path


def test_help_texts_are_never_cut() -> None:
    for path in [(), ("outbox",), ("quarantine",), ("processing",), ("expect",), ("packs",),
                 ("rules",)]:
        out = CliRunner().invoke(main, [*path, "--help"], terminal_width=100).output
        assert "…" not in out and "..." not in out.split("Commands:")[-1], out
        assert max(len(line) for line in out.splitlines()) <= 100


def test_simulate_help_says_at_most_what() -> None:
    out = CliRunner().invoke(main, ["simulate", "-h"]).output
    assert "at most this many messages" in " ".join(out.split())


# -- the README --------------------------------------------------------------------------------


def readme_commands(text: str) -> list[list[str]]:
    """Every `mailbridge …` command line in the fenced code blocks, as argv after `mailbridge`."""
    found: list[list[str]] = []
    blocks = re.findall(r"^```(?:sh|bash|shell|console)\n(.*?)^```", text, re.M | re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            try:
                tokens = shlex.split(line, comments=True)
            except ValueError:
                continue
            for i, token in enumerate(tokens):
                before = tokens[:i]
                if Path(token).name != "mailbridge":
                    continue
                if before and before[-1] not in ("--", "sudo") and \
                        not all(re.fullmatch(r"\w+=\S*", t) for t in before):
                    continue
                args: list[str] = []
                for t in tokens[i + 1:]:
                    if t in SHELL_BREAKS:
                        break
                    args.append(t)
                found.append(args)
                break
    return found


def resolve(args: list[str]) -> None:
    """Parse like the real command line would (options, their types, commands), failing on an
    unknown command or option; nothing is invoked. (Run from the checkout: files exist.)"""
    if not args:
        return
    command: click.Command = main
    ctx: click.Context | None = None
    name, rest = "mailbridge", list(args)
    try:
        while True:
            ctx = command.make_context(name, rest, parent=ctx)
            with warnings.catch_warnings():  # click 9 folds protected_args into args
                warnings.simplefilter("ignore", DeprecationWarning)
                left = [*ctx.protected_args, *ctx.args]
            if not isinstance(command, click.Group) or not left:
                return
            name, *rest = left
            sub = command.get_command(ctx, name)
            if sub is None:
                raise click.UsageError(f"no such command {name!r}")
            command = sub
    except click.exceptions.Exit:
        return  # -h / --version answered


def test_every_command_line_in_the_readmes_resolves(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    lines = []
    for readme in (ROOT / "README.md", ROOT / "systemd" / "README.md"):
        lines += [(readme.name, args) for args in readme_commands(readme.read_text())]
    assert len(lines) >= 25
    for name, args in lines:
        try:
            resolve(args)
        except click.ClickException as exc:
            pytest.fail(f"{name}: mailbridge {shlex.join(args)}: {exc.format_message()}")


def test_the_resolver_fails_on_an_unknown_command_or_option() -> None:
    with pytest.raises(click.UsageError):
        resolve(["outbox", "forget", "9"])
    with pytest.raises(click.NoSuchOption):
        resolve(["check", "--onlinne"])
    assert readme_commands("```sh\nrunuser -u x -- mailbridge check -h  # c\n```\n") == \
        [["check", "-h"]]


# -- the man page ------------------------------------------------------------------------------


def test_the_shipped_man_page_matches_the_commands() -> None:
    assert PAGE.read_text(encoding="utf-8") == render(), \
        "regenerate: python -m bridge.cli.manpage --write"
    for path in every_command():
        assert f".SS mailbridge {' '.join(path)}".replace("-", "\\-") in render()


def test_the_wheel_ships_the_man_page(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path), str(ROOT)], capture_output=True, text=True,
                           timeout=600)
    assert built.returncode == 0, built.stderr
    [wheel] = tmp_path.glob("mailbridge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "bridge/cli/mailbridge.1" in names
    assert any(n.endswith(".data/data/share/man/man1/mailbridge.1") for n in names)
    # What `mailbridge init` copies comes along too.
    assert any(n.endswith("share/mailbridge/config.example.toml") for n in names)
    assert any(n.endswith("share/mailbridge/rules/accounts.csv") for n in names)


# -- output ------------------------------------------------------------------------------------


def test_tables_fit_100_columns_with_local_times() -> None:
    rows = [{"correlationId": "9b640b2d-282f-49e9-abd4-69b738a73d23", "title": "x" * 300,
             "summary": "y" * 200, "updatedAt": 1796515853.66, "accountId": "ACME-001"}]
    text = format_table(rows, list(rows[0]), max_total=100)
    assert max(len(line) for line in text.splitlines()) <= 100
    assert "1796515853" not in text and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text)


def test_json_keeps_epoch_and_adds_iso_8601() -> None:
    out = with_iso_times({"rows": [{"created_at": 1796515853.0, "attempts": 3}]})
    row = out["rows"][0]
    assert row["created_at"] == 1796515853.0 and row["attempts"] == 3
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", row["created_at_iso"])
    assert "attempts_iso" not in row


def test_colour_only_on_a_terminal_and_never_with_no_color(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert colour_on(Tty()) and not colour_on(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not colour_on(Tty())


def test_the_summary_line_words() -> None:
    assert summary_line({"created": 3, "appended": 1, "resolved": 2, "skipped": 1}) == \
        "created 3, appended 1, resolved 2, skipped 1, quarantined 0"
    line = summary_line({"failed": 1}, held=2, until=1796515853.0 + 0)
    assert line.startswith("created 0, appended 0, resolved 0, skipped 0, quarantined 0,"
                           " failed 1; held 2 until ")


def test_one_shot_commands_answer_on_stdout_and_keep_the_log_quiet(tmp_path, psa_sim):
    config = write_config(tmp_path, psa_sim)
    done = cli("test-alert", "--config", str(config), "--account", "ACME-001")
    assert done.returncode == 0
    assert len(done.stdout.decode().splitlines()) == 1 and done.stderr == b""
    once = cli("run", "--once", "--config", str(config))
    assert once.returncode == 0 and once.stderr == b"", once.stderr
    assert once.stdout.decode().startswith("created 0, appended 0, resolved 0,")
    loud = cli("-v", "test-alert", "--config", str(config), "--account", "ACME-001")
    assert b"outcome ->" in loud.stderr  # the events, as log lines


def test_make_demo_installs_the_runtime_and_the_demo_only(tmp_path: Path) -> None:
    dry = subprocess.run(["make", "-n", "-C", str(ROOT), "demo", f"VENV={tmp_path / 'v'}"],
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 0, dry.stderr
    assert "'.[demo]'" in dry.stdout and "[test]" not in dry.stdout
    tested = subprocess.run(["make", "-n", "-C", str(ROOT), "test", f"VENV={tmp_path / 'v'}"],
                            capture_output=True, text=True, timeout=60)
    assert "'.[test]'" in tested.stdout


def test_psa_sim_prints_the_config_snippet_to_paste(tmp_path: Path) -> None:
    from bridge.config import settings_from_dict
    from tests.fixtures.smtp import free_port

    port = free_port()
    sim = subprocess.Popen([sys.executable, "-m", "bridge.cli", "psa-sim", "--port", str(port)],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           cwd=ROOT)
    try:
        assert sim.stdout is not None
        lines = [sim.stdout.readline() for _ in range(7)]
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    snippet = "".join(lines)
    import tomllib

    psa = settings_from_dict(tomllib.loads(snippet)).psa  # it is valid config as printed
    assert psa.base_url == f"http://127.0.0.1:{port}" and psa.integration_id == "demo-integration"
    assert psa.client_secret.get_secret_value() == "demo-secret"
