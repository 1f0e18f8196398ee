"""Secrets in the config file: inline, `{ env = "NAME" }`, `{ file = "PATH" }` or
`{ credential = "NAME" }` (systemd's LoadCredential=: `$CREDENTIALS_DIRECTORY/NAME` in the
service, the `credentials/` directory beside the config outside it). `bridge.config` resolves
them while it validates; the context variables say how lenient to be and where the config is.
"""

from __future__ import annotations

import contextvars
import os
from pathlib import Path
from typing import Any

# `mailbridge ingest` runs from the MTA while the service (and its credential files) may be
# stopped: it only needs the store, so it may load the config with secrets it cannot read.
# Offline `check` does the same but is told which secrets it could not read (a list), to
# report them as warnings: they are loaded by systemd when the service starts.
LENIENT_SECRETS: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "lenient", default=None)
# The directory of the config file being read: `{ credential = "NAME" }` falls back to its
# `credentials/` subdirectory (what `mailbridge init` makes) outside the service.
CONFIG_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_dir",
                                                                          default=None)
CREDENTIALS_SUBDIR = "credentials"


class SecretUnavailable(ValueError):
    """A secret whose variable or file cannot be read now (as opposed to a malformed entry).
    `str()` says what to do about it; `what` only what could not be read."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what + hint)
        self.what = what


def resolve_secret(value: Any) -> Any:
    unread = LENIENT_SECRETS.get()
    if isinstance(value, dict) and unread is not None:
        try:
            return _resolve_strict(value)
        except SecretUnavailable as exc:
            unread.append(exc.what)
            return ""
    return _resolve_strict(value)


def credential_path(name: str, config_dir: Path | None = None) -> Path:
    """Where `{ credential = NAME }` is read: systemd's `$CREDENTIALS_DIRECTORY` while the
    service runs (LoadCredential=), else the `credentials/` directory beside the config."""
    run_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if run_dir:
        return Path(run_dir) / name
    base = config_dir or CONFIG_DIR.get() or Path.cwd()
    return base / CREDENTIALS_SUBDIR / name


def _read_secret_file(path: Path, hint: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise SecretUnavailable(f"cannot read secret file {path}: {exc.strerror}", hint) from None


def _resolve_strict(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"env"}:
            name = value["env"]
            if name not in os.environ:
                raise SecretUnavailable(f"environment variable {name} is not set")
            return os.environ[name]
        if set(value) == {"credential"}:
            name = str(value["credential"])
            if not name or "/" in name or name.startswith("."):
                raise ValueError(f"credential {name!r}: a credential is a plain file name")
            path = credential_path(name)
            hint = (" (systemd's LoadCredential= did not hand it over: add the line to the"
                    " unit's drop-in)" if os.environ.get("CREDENTIALS_DIRECTORY") else
                    f" (write the secret there, root-only 0600, as `mailbridge init` does; the"
                    f" service reads it through LoadCredential={name}:{path})")
            return _read_secret_file(path, hint)
        if set(value) == {"file"}:
            path = Path(value["file"])
            hint = (" (that directory exists only while mailbridge.service runs: write"
                    ' { credential = "NAME" } instead, which outside the service reads the'
                    " credentials directory beside the config)"
                    if str(path).startswith("/run/credentials/") else "")
            return _read_secret_file(path, hint)
        raise ValueError('a secret is a string, { env = "NAME" }, { file = "PATH" } or'
                         ' { credential = "NAME" }')
    return value
