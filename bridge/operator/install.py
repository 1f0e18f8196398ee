"""`mailbridge init [DIR]`: a first installation that `check` accepts as it is.

Writes, from the files shipped with mailbridge: a commented starter config (the example
config, with the values the flags give), the shipped rules, an accounts file with a header
comment, a root-only credentials directory with one 0600 file per secret the config names,
and the unit's drop-in that hands those files to the service with `LoadCredential=`. Flags
instead of questions, so it can be scripted; it never overwrites a file (everything is checked
before the first write). Ownership follows systemd/README.md when run as root: the config
root:GROUP 0640, the credentials root 0700/0600, the store's directory USER:GROUP 0750.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DIR = Path("/etc/mailbridge")
DEFAULT_SYSTEMD_DIR = Path("/etc/systemd/system")
DROPIN = Path("mailbridge.service.d") / "10-init.conf"
ACCOUNTS_HEADER = """\
# The accounts directory: who the customers are (docs/rules.md, "The accounts directory").
# One row per customer. id: the account id as the PSA knows it; name and aliases (;-separated):
# how alerts name the customer; foreign_ids: ids the monitoring tools use; senders: addresses
# or @domains (subdomains included) that send for this customer only.
# Lines starting with # are comments. The rows below are examples: replace them with yours,
# then `mailbridge check` (a rule that can never match an account is reported).
"""


class InitError(Exception):
    """init cannot go on; nothing has been written when this is raised before writing."""


@dataclass
class InitOptions:
    """What the flags of `mailbridge init` set; None keeps the example config's value."""

    directory: Path = DEFAULT_DIR
    values: dict[tuple[str, str], str | int | list[str] | None] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # credential name -> value
    store: Path = Path("/var/lib/mailbridge/mailbridge.db")
    user: str | None = "mailbridge"
    group: str | None = None  # default: the user's group
    systemd_dir: Path | None = DEFAULT_SYSTEMD_DIR
    command: str | None = None  # the mailbridge command the unit runs; default: this one


def shipped_dir() -> Path:
    """Where the example config and the rules are: the source checkout, else the wheel's
    data files (share/mailbridge under the environment's prefix)."""
    candidates = [Path(__file__).resolve().parents[2],
                  Path(sysconfig.get_path("data")) / "share" / "mailbridge",
                  Path(sys.prefix) / "share" / "mailbridge"]
    for base in candidates:
        if (base / "config.example.toml").is_file() and (base / "rules").is_dir():
            return base
    raise InitError("the example config and rules are not installed (looked in "
                    + ", ".join(map(str, candidates)) + ")")


def set_value(text: str, table: str, key: str, value: str | int | list[str] | None) -> str:
    """`key = value` in the first [table] / [[table]] of a TOML text, keeping the line's
    comment; None comments the key out. The example config stays the documentation."""
    head = re.compile(rf"^\[\[?{re.escape(table)}\]\]?\s*(#.*)?$", re.M)
    start = head.search(text)
    if start is None:
        raise InitError(f"[{table}] is not in the example config")
    end_match = re.compile(r"^\[", re.M).search(text, start.end())
    end = end_match.start() if end_match else len(text)
    line = re.compile(rf"^{re.escape(key)}\s*=\s*(\S.*?)(\s+#.*)?$", re.M)
    found = line.search(text, start.end(), end)
    if found is None:
        raise InitError(f"{table}.{key} is not in the example config")
    if value is None:
        new = f"# {found.group(0)}"
    else:
        rendered = str(value) if isinstance(value, int) else _toml_string(value) \
            if isinstance(value, str) else "[" + ", ".join(map(_toml_string, value)) + "]"
        new = f"{key} = {rendered}{found.group(2) or ''}"
    return text[:found.start()] + new + text[found.end():]


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def credential_names(config_text: str) -> list[str]:
    names = re.findall(r'^[^#\n]*\{\s*credential\s*=\s*"([^"]+)"\s*\}', config_text, re.M)
    return list(dict.fromkeys(names))


def plan(options: InitOptions) -> dict[Path, str]:
    """Every file init writes, with its text (secrets included), before anything is written."""
    base = shipped_dir()
    text = (base / "config.example.toml").read_text(encoding="utf-8")
    text = text.replace("`mailbridge init` copies it to\n# /etc/mailbridge/config.toml",
                        "`mailbridge init` wrote it as\n# " + str(options.directory / "config.toml"))
    values = {("store", "path"): str(options.store), **options.values}
    for (table, key), value in values.items():
        text = set_value(text, table, key, value)
    d = options.directory
    files = {d / "config.toml": text}
    for rule in sorted((base / "rules").glob("*.toml")):
        files[d / "rules" / rule.name] = rule.read_text(encoding="utf-8")
    files[d / "rules" / "accounts.csv"] = ACCOUNTS_HEADER + (
        base / "rules" / "accounts.csv").read_text(encoding="utf-8")
    names = credential_names(text)
    unknown = sorted(set(options.secrets) - set(names))
    if unknown:
        raise InitError(f"--secret {', '.join(unknown)}: the config names no such credential"
                        f" (it names {', '.join(names)})")
    for name in names:
        files[d / "credentials" / name] = options.secrets.get(name, "")
    if options.systemd_dir is not None:
        files[options.systemd_dir / DROPIN] = dropin(options, names)
    return files


def dropin(options: InitOptions, names: list[str]) -> str:
    command = options.command or shutil.which("mailbridge") or \
        str(Path(sys.executable).with_name("mailbridge"))
    config = options.directory / "config.toml"
    lines = ["# Written by `mailbridge init`: where mailbridge and its config are, and the",
             "# credentials systemd hands to the service ($CREDENTIALS_DIRECTORY).",
             "[Service]", "ExecStart=", f"ExecStart={command} run --config {config}"]
    lines += [f"LoadCredential={n}:{options.directory / 'credentials' / n}" for n in names]
    return "\n".join(lines) + "\n"


def _ids(options: InitOptions) -> tuple[int | None, int | None]:
    """(uid of the service user, gid of its group) when run as root; None elsewhere."""
    if os.geteuid() != 0 or options.user is None:
        return None, None
    try:
        user = pwd.getpwnam(options.user)
    except KeyError:
        raise InitError(f"no user {options.user!r}: create it first (systemd/README.md step 1)"
                        " or name another with --user") from None
    if options.group is None:
        return user.pw_uid, user.pw_gid
    try:
        return user.pw_uid, grp.getgrnam(options.group).gr_gid
    except KeyError:
        raise InitError(f"no group {options.group!r}") from None


def init(options: InitOptions) -> list[Path]:
    """Write the installation; return the files written. Raises InitError, before writing
    anything, when a file is already there."""
    files = plan(options)
    # A credential file already there (systemd-tmpfiles makes them empty) is kept as it is
    # when init has no value for it; everything else present stops init.
    kept = {p for p in files if p.parent == options.directory / "credentials"
            and p.name not in options.secrets and p.is_file() and not p.is_symlink()}
    files = {p: t for p, t in files.items() if p not in kept}
    present = [p for p in files if p.exists() or p.is_symlink()]
    if present:
        raise InitError("already there, not overwritten: " + ", ".join(map(str, present)))
    uid, gid = _ids(options)
    d = options.directory
    _mkdir(d, 0o750, 0, gid)
    _mkdir(d / "rules", 0o750, 0, gid)
    _mkdir(d / "credentials", 0o700, 0, 0 if gid is not None else None)
    _mkdir(options.store.parent, 0o750, uid, gid)
    for path, text in files.items():
        secret = path.parent == d / "credentials"
        if options.systemd_dir is not None and path == options.systemd_dir / DROPIN:
            path.parent.mkdir(parents=True, exist_ok=True)
            _write(path, text, 0o644, None, None)
        elif secret:
            _write(path, text, 0o600, 0 if gid is not None else None, 0 if gid is not None else None)
        else:
            _write(path, text, 0o640, 0 if gid is not None else None, gid)
    return list(files)


def _mkdir(path: Path, mode: int, uid: int | None, gid: int | None) -> None:
    if path.is_dir():
        return
    path.mkdir(parents=True, mode=mode)
    os.chmod(path, mode)  # mkdir's mode passes through the umask
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)


def _write(path: Path, text: str, mode: int, uid: int | None, gid: int | None) -> None:
    # O_EXCL: a file that appeared since the check is still not overwritten.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        if uid is not None or gid is not None:
            os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
