"""`mailbridge init`: the first installation (bridge/operator/install.py does the work)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bridge.operator.install import DEFAULT_DIR, DEFAULT_SYSTEMD_DIR, InitError, InitOptions, init

# flag -> (table, key) of the config; the flag's value replaces the example's.
_VALUES = {
    "imap_host": ("imap", "host"), "imap_port": ("imap", "port"),
    "imap_security": ("imap", "security"), "imap_user": ("imap", "username"),
    "smtp_host": ("smtp", "host"), "smtp_port": ("smtp", "port"),
    "smtp_security": ("smtp", "security"), "from_address": ("smtp", "from_address"),
    "psa_url": ("psa", "base_url"), "psa_client_id": ("psa", "client_id"),
    "psa_integration_id": ("psa", "integration_id"),
    "admin_address": ("routing", "admin_address"),
    "internal_address": ("routing", "internal_address"),
    "http_port": ("http", "port"),
}


@click.command("init", short_help="Write a first installation: config, rules, accounts,"
               " credentials and the unit's drop-in.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path),
                default=DEFAULT_DIR)
@click.option("--imap-host", help="the IMAP server mailbridge reads")
@click.option("--imap-port", type=int)
@click.option("--imap-security", type=click.Choice(["tls", "starttls", "none"]))
@click.option("--imap-user", help="the mailbox to log in as")
@click.option("--smtp-host", help="the relay for forwards and admin mail")
@click.option("--smtp-port", type=int)
@click.option("--smtp-security", type=click.Choice(["starttls", "tls", "none"]))
@click.option("--smtp-user", help='the relay login; "" for a relay without login')
@click.option("--from-address", help="the sender of mailbridge's mail")
@click.option("--psa-url", help="the PSA's API base URL")
@click.option("--psa-client-id")
@click.option("--psa-integration-id")
@click.option("--admin-address", help="who is told about mailbridge's own trouble")
@click.option("--internal-address", help="where skipped and unmatched alerts are forwarded")
@click.option("--http-port", type=int, help="/healthz, /metrics and the dashboard")
@click.option("--store", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("/var/lib/mailbridge/mailbridge.db"), show_default=True,
              help="the SQLite store; its directory is made for the service user")
@click.option("--secret", "secrets", multiple=True, metavar="NAME=VALUE|@FILE|-",
              help="a credential's value (@FILE: read from FILE; -: one line of stdin);"
                   " credentials not given are written empty, to fill in later")
@click.option("--user", default="mailbridge", show_default=True,
              help="the service user (owns the store's directory when run as root)")
@click.option("--group", help="the group that may read the config (default: the user's)")
@click.option("--systemd-dir", type=click.Path(file_okay=False, path_type=Path),
              default=DEFAULT_SYSTEMD_DIR, show_default=True,
              help="where the unit's drop-in goes (mailbridge.service.d/10-init.conf)")
@click.option("--no-systemd", is_flag=True, help="write no drop-in")
@click.option("--pack", "packs", multiple=True, metavar="NAME",
              help="enable a shipped rule pack (repeat for several; `mailbridge packs` lists them)")
def init_command(directory: Path, store: Path, secrets: tuple[str, ...], user: str,
                 group: str | None, systemd_dir: Path, no_systemd: bool,
                 smtp_user: str | None, packs: tuple[str, ...],
                 **values: str | int | None) -> None:
    """Write a first installation into DIRECTORY (default /etc/mailbridge): a commented
    config, the shipped rules, an accounts file, a root-only credentials directory with one
    0600 file per secret, and the unit's drop-in that loads them. Never overwrites a file."""
    chosen: dict[tuple[str, str], str | int | list[str] | None] = {
        _VALUES[k]: v for k, v in values.items() if v is not None}
    if packs:
        from bridge.classify.rulepacks import available

        unknown = sorted(set(packs) - set(available()))
        if unknown:
            click.echo(f"init: no rule pack named {', '.join(unknown)} (there are: "
                       f"{', '.join(available())})", err=True)
            sys.exit(1)
        chosen[("rules", "packs")] = list(dict.fromkeys(packs))
    if smtp_user is not None:
        chosen[("smtp", "username")] = smtp_user or None
        if not smtp_user:
            chosen[("smtp", "password")] = None  # a relay without login: no password either
    options = InitOptions(directory=directory.absolute(), values=chosen,
                          secrets=dict(_secret(s) for s in secrets), store=store.absolute(),
                          user=user, group=group,
                          systemd_dir=None if no_systemd else systemd_dir.absolute())
    try:
        written = init(options)
    except (InitError, OSError) as exc:
        click.echo(f"init: {exc}", err=True)
        sys.exit(1)
    for path in written:
        click.echo(f"wrote {path}")
    config = options.directory / "config.toml"
    click.echo(f"\nNext: edit {config} and the rules, put each secret into"
               f" {options.directory / 'credentials'}/NAME, then\n"
               f"  runuser -u {user} -- mailbridge check --config {config}\n"
               f"  mailbridge check --online --config {config}   (as root: reads the secrets)")


def _secret(spec: str) -> tuple[str, str]:
    name, sep, value = spec.partition("=")
    if not sep or not name:
        raise click.BadParameter(f"{spec!r}: write NAME=VALUE, NAME=@FILE or NAME=-",
                                 param_hint="--secret")
    if value == "-":
        value = sys.stdin.readline().rstrip("\n")
    elif value.startswith("@"):
        value = Path(value[1:]).read_text().strip()
    return name, value
