"""`mailbridge packs`: the rule packs shipped in the package, and one pack in detail.

`packs` lists every pack with its tool and versions; `packs show NAME` prints one pack's
header (sources, identity, states, account detection), its rules under their full names and
its sample mails' subjects with what each should become. Neither needs a config: the packs
are part of the package (docs/packs.md).
"""

from __future__ import annotations

import email.parser
import email.policy
import sys
import tomllib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click

from bridge.classify.rulepacks import NAMED_TABLES, PACKS_ROOT, PackInfo, available, read_info
from bridge.cli.common import HelpGroup, dump, json_option


def _info_or_exit(name: str) -> PackInfo:
    if name not in available(PACKS_ROOT):
        click.echo(f"unknown pack {name!r}; packs are: {', '.join(available(PACKS_ROOT))}",
                   err=True)
        sys.exit(1)
    return read_info(name, PACKS_ROOT)


def _subject(path: Path) -> str:
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    with path.open("rb") as fh:
        return str(parser.parse(fh).get("Subject", ""))


def pack_detail(info: PackInfo) -> dict[str, Any]:
    """One pack as `packs show --json` prints it."""
    data = tomllib.loads(info.file.read_text(encoding="utf-8"))
    rules = [{"kind": kind, "name": f"{info.name}/{table.get('name', '?')}"}
             for kind in NAMED_TABLES for table in data.get(kind, [])
             if isinstance(table, dict)]
    samples_dir = info.path / "samples"
    expected_path = samples_dir / "expected.toml"
    expected = tomllib.loads(expected_path.read_text(encoding="utf-8")).get("sample", []) \
        if expected_path.is_file() else []
    samples = [{**{k: v for k, v in e.items() if isinstance(v, str)},
                "subject": _subject(samples_dir / str(e.get("file", "")))}
               for e in expected if (samples_dir / str(e.get("file", ""))).is_file()]
    head = asdict(info)
    head["path"] = str(info.path)
    head["sources"] = list(info.sources)
    return {**head, "rules": rules, "samples": samples}


@click.group(cls=HelpGroup, invoke_without_command=True)
@json_option
@click.pass_context
def packs(ctx: click.Context, as_json: bool) -> None:
    """List the rule packs (enable them by name in the config: [rules] packs)."""
    if ctx.invoked_subcommand is not None:
        return
    infos = [read_info(n, PACKS_ROOT) for n in available(PACKS_ROOT)]
    if as_json:
        dump([{"name": i.name, "tool": i.tool, "versions": i.versions} for i in infos])
        return
    width = max((len(i.name) for i in infos), default=4)
    for i in infos:
        click.echo(f"{i.name:<{width}}  {i.tool} ({i.versions})")


@packs.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """One pack: its sources, identity and states, rules and sample subjects."""
    detail = pack_detail(_info_or_exit(name))
    if as_json:
        dump(detail)
        return
    click.echo(f"{detail['name']}: {detail['tool']} ({detail['versions']})")
    click.echo("sources:")
    for source in detail["sources"]:
        click.echo(f"  {source}")
    if detail["doc"]:
        click.echo(f"\n{detail['doc'].strip()}\n")
    click.echo("rules:")
    for rule in detail["rules"]:
        click.echo(f"  [[{rule['kind']}]] {rule['name']}")
    click.echo("samples:")
    for s in detail["samples"]:
        click.echo(f"  {s.get('file', '?')}: {s['subject']}  ->  {s.get('outcome', '?')}")
