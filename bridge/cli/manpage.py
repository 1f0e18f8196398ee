"""The man page, mailbridge(1), generated from the click command definitions.

`python -m bridge.cli.manpage --write` writes `bridge/cli/mailbridge.1`, which the wheel
ships (package data) and installs as share/man/man1/mailbridge.1; tests/test_cli_surface.py
fails when the shipped page no longer matches the commands, so a new command or option is
documented by regenerating. Forty lines of roff from click's own help records beat a
generator dependency (click-man is barely maintained and writes one page per command).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

PAGE = Path(__file__).with_name("mailbridge.1")


def _roff(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line
                     for line in text.splitlines())


def _command(ctx: click.Context, command: click.Command, path: str) -> list[str]:
    out = [f".SS {_roff(path)}"]
    usage = " ".join(command.collect_usage_pieces(ctx))
    out += [f".B {_roff(path)}", _roff(usage), ".PP"]
    if command.help:
        out += [_roff(click.unstyle(command.help).strip()), ".PP"]
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_text = record
        if isinstance(param, click.Argument) and not help_text:
            continue  # the usage line names it
        out += [".TP", f".B {_roff(names)}", _roff(help_text) or "\\&"]
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                out += _command(_context(sub, name, ctx), sub, f"{path} {name}")
    return out


def _context(command: click.Command, name: str,
             parent: click.Context | None = None) -> click.Context:
    """The context click itself would make (so -h, the widths and defaults are as in --help)."""
    return command.make_context(name, [], parent=parent, resilient_parsing=True)


def render() -> str:
    from bridge.cli import main

    ctx = _context(main, "mailbridge")
    lines = [".TH MAILBRIDGE 1 \"\" \"mailbridge\" \"User Commands\"",
             ".SH NAME", "mailbridge \\- monitoring alert mail in, PSA tickets out",
             ".SH SYNOPSIS", ".B mailbridge", "[\\-v|\\-q] COMMAND [OPTIONS] [ARGS]",
             ".SH DESCRIPTION",
             _roff("mailbridge reads alert mail from IMAP, a Maildir or an MTA pipe, "
                   "recognises monitoring alerts with rules, and creates, updates and "
                   "resolves PSA tickets. Every command accepts -h for its help."),
             ".SH OPTIONS"]
    for param in main.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is not None:
            lines += [".TP", f".B {_roff(record[0])}", _roff(record[1]) or "\\&"]
    lines.append(".SH COMMANDS")
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        if command is not None and not command.hidden:
            lines += _command(_context(command, name, ctx), command, f"mailbridge {name}")
    lines += [".SH ENVIRONMENT", ".TP", ".B MAILBRIDGE_CONFIG",
              "the config file when \\-\\-config is not given",
              ".TP", ".B CREDENTIALS_DIRECTORY",
              _roff("set by systemd (LoadCredential=): where { credential = \"NAME\" } "
                    "secrets are read"),
              ".TP", ".B NO_COLOR", "no colour in tables and status, even on a terminal",
              ".SH FILES", ".TP", ".B /etc/mailbridge/config.toml",
              "the config (mailbridge init writes it)",
              ".SH SEE ALSO", "systemd/README.md and docs/ in the source distribution"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(render(), encoding="utf-8")
    else:
        sys.stdout.write(render())
