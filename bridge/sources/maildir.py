"""Maildir source: a message file in `new/` is staged, then moved to `cur/` (flag S).

Useful behind an MTA that delivers to a Maildir, and for the demo. The file's unique name is
its identity (`source_uid`), its modification time the arrival time.

The folder is not trusted (docs/hardening.md, "Maildir"): each file is opened relative to the
`new/` directory with `O_NOFOLLOW | O_NONBLOCK` and checked with `fstat` on the open descriptor,
so a symbolic link (to the PSA secret file, say), a FIFO or a device is never read — it is left
where it is and logged once. A file over `max_message_bytes` is staged as its header block only,
with `oversize` set, and so quarantined, as IMAP does. A batch holds at most `BATCH_BYTES` of
message data, so memory stays bounded whatever the folder holds.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterator

from bridge.config import MaildirSettings
from bridge.models import RawMessage

log = logging.getLogger("mailbridge.maildir")

StageFn = Callable[[list[RawMessage]], Awaitable[list[bool]]]

# Header block of an oversize message: enough for any sane header, bounded for an insane one
# (the same figure as IMAP's HEADER_BYTES).
HEADER_BYTES = 1024 * 1024
# Message bytes held by one staging batch (IMAP's FETCH_BYTES): a batch of big files is split.
BATCH_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 1024 * 1024
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def ensure_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


class Refused(Exception):
    """A directory entry that is not a regular file of its own (why in the message)."""


@dataclass
class _Read:
    name: str
    data: bytes
    mtime: float
    oversize: int | None  # the file's size when only its header block was read


def _read_all(fd: int, limit: int) -> bytes:
    """At most `limit` bytes from fd (fewer if the file is shorter)."""
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        chunk = os.read(fd, min(_READ_CHUNK, left))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def header_block(data: bytes) -> bytes:
    """The header block of a message prefix, its blank line included (all of it if none)."""
    ends = [i + len(sep) for sep in (b"\r\n\r\n", b"\n\n") if (i := data.find(sep)) >= 0]
    return data[: min(ends)] if ends else data


def read_message(dir_fd: int, name: str, max_bytes: int) -> _Read | None:
    """One file of new/, read without following links and within the size limit. None when
    another reader took it first; Refused when it must not be read at all."""
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise Refused("a symbolic link") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Refused("not a regular file")
        if st.st_size > max_bytes:
            return _Read(name, header_block(_read_all(fd, HEADER_BYTES)), st.st_mtime, st.st_size)
        data = _read_all(fd, max_bytes + 1)
        if len(data) > max_bytes:  # it grew while we read: still over the limit
            return _Read(name, header_block(data[:HEADER_BYTES]), st.st_mtime, len(data))
        return _Read(name, data, st.st_mtime, None)
    finally:
        os.close(fd)


class MaildirSource:
    def __init__(self, settings: MaildirSettings, stage: StageFn, batch_size: int = 200):
        self.settings = settings
        self.stage = stage
        self.batch_size = batch_size
        self.name = f"maildir:{settings.name}"
        self.path = Path(settings.path)
        self.on_polled: Callable[[], None] | None = None  # the daemon's runtime status
        self._refused: set[str] = set()  # names already logged, so each is logged once

    def _pending(self) -> list[str]:
        try:
            with os.scandir(self.path / "new") as entries:
                return sorted(e.name for e in entries if not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def _batches(self, dir_fd: int, names: list[str]) -> Iterator[list[_Read]]:
        """The readable files of `names`, in batches bounded in count and bytes."""
        batch: list[_Read] = []
        size = 0
        for name in names:
            try:
                got = read_message(dir_fd, name, self.settings.max_message_bytes)
            except Refused as exc:
                if name not in self._refused:
                    self._refused.add(name)
                    log.warning("maildir %s: new/%s is %s; not read, left in place",
                                self.path, name[:200], exc)
                continue
            if got is None:
                continue
            if got.oversize is not None:
                log.warning("maildir %s: new/%s has %d bytes, over max_message_bytes (%d);"
                            " staged as its header only", self.path, name[:200],
                            got.oversize, self.settings.max_message_bytes)
            if batch and (len(batch) >= self.batch_size or size + len(got.data) > BATCH_BYTES):
                yield batch
                batch, size = [], 0
            batch.append(got)
            size += len(got.data)
        if batch:
            yield batch

    async def drain(self) -> int:
        ensure_maildir(self.path)
        names = self._pending()
        taken = 0
        dir_fd = os.open(self.path / "new", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for batch in self._batches(dir_fd, names):
                msgs = [RawMessage(r.data, self.name, r.name.split(":", 1)[0], r.mtime,
                                   oversize=r.oversize) for r in batch]
                results = await self.stage(msgs)
                del msgs
                for r, ok in zip(batch, results):
                    if ok:  # only a durably staged message leaves new/
                        taken += self._to_cur(r.name)
        finally:
            os.close(dir_fd)
        if self.on_polled is not None:
            self.on_polled()
        return taken

    def _to_cur(self, name: str) -> int:
        target = self.path / "cur" / (name.split(":", 1)[0] + ":2,S")
        try:
            os.rename(self.path / "new" / name, target)  # rename never follows a link
        except FileNotFoundError:
            return 0
        return 1

    async def run(self, stop: asyncio.Event, ready: Callable[[], None] | None = None) -> None:
        if ready:
            ready()
        while not stop.is_set():
            try:
                await self.drain()
            except Exception:
                log.exception("maildir %s: pass failed", self.path)
            try:
                await asyncio.wait_for(stop.wait(), self.settings.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def close(self) -> None:
        """Nothing to close: the folder is read afresh on every pass."""
