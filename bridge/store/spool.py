"""The pipe's spool: where `ingest` puts a message durably when the store is busy.

`ingest` must answer the MTA quickly, but staging needs SQLite's write lock, which a long write
(a migration, a big batch) may hold for many seconds. When the lock does not come within
INGEST_BUSY_TIMEOUT, the message is written to `<store>.spool/new/` instead (written to `tmp/`,
fsynced, renamed, the directory fsynced: the Maildir way) and ingest exits 0: the message is
durable. `stage_spooled` moves spooled messages into the store (the daemon's processing loop,
`run --once` and the next `ingest` call it); a file is removed only after its staging commit,
and staging recognises a message staged twice, so a crash in between doubles nothing.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.models import RawMessage

if TYPE_CHECKING:
    from bridge.store.db import Store

INGEST_BUSY_TIMEOUT = 1.0  # seconds ingest waits for the write lock before it spools


def spool_dir(store_path: str | Path) -> Path:
    return Path(f"{store_path}.spool")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool(store_path: str | Path, raw: bytes, arrived_at: float) -> Path:
    """Write `raw` durably into the spool; the file name carries the arrival time."""
    base = spool_dir(store_path)
    tmp, new = base / "tmp", base / "new"
    for d in (base, tmp, new):
        d.mkdir(mode=0o700, exist_ok=True)
    name = f"{arrived_at:.6f}.{os.getpid()}.{secrets.token_hex(6)}.eml"
    fd = os.open(tmp / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(raw)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp / name, new / name)
    _fsync_dir(new)
    return new / name


def stage_spooled(store: Store, limit: int = 100) -> list[int]:
    """Stage what the spool holds (oldest first); ids of the messages newly staged."""
    new = spool_dir(store.path) / "new"
    try:
        names = sorted(os.listdir(new))[:limit]
    except FileNotFoundError:
        return []
    msgs, paths = [], []
    for name in names:
        path = new / name
        try:
            arrived = float(name.split(".", 2)[0] + "." + name.split(".", 2)[1])
        except (ValueError, IndexError):
            arrived = time.time()
        try:
            msgs.append(RawMessage(path.read_bytes(), "pipe", None, arrived))
        except FileNotFoundError:  # another process staged it meanwhile
            continue
        paths.append(path)
    if not msgs:
        return []
    results = store.stage_many(msgs)
    for path in paths:
        path.unlink(missing_ok=True)
    return [r.id for r in results if not r.duplicate]
