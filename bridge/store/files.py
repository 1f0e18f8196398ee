"""The store's files on disk: created 0600, backups that never clobber or follow a link.

The store holds every raw mail (tokens with their passwords included, SPEC §3.2), so its files
must be readable by the service user only, whatever umask the command that created them ran
with (docs/hardening.md, "Files"). SQLite creates `-wal` and `-shm` with the mode of the main
file, so creating the main file 0600 before SQLite opens it is enough.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Callable

STORE_MODE = 0o600
_SUFFIXES = ("", "-wal", "-shm", "-journal")


class BackupError(Exception):
    """A backup that could not be written; the message says why, for the administrator."""


def create_private(path: Path | str) -> None:
    """Create the store file 0600 if it does not exist yet (never through a symbolic link)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     STORE_MODE)
    except FileExistsError:
        return
    os.close(fd)


def readable_by_others(path: Path | str) -> list[str]:
    """The store files (main, -wal, -shm, -journal) whose mode lets group or others read."""
    found = []
    for suffix in _SUFFIXES:
        try:
            mode = os.stat(f"{path}{suffix}").st_mode
        except FileNotFoundError:
            continue
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            found.append(f"{path}{suffix} (mode {stat.S_IMODE(mode):04o})")
    return found


def backup(conn: sqlite3.Connection, target: Path | str, force: bool = False,
           progress: Callable[[int], None] | None = None) -> None:
    """Copy the store to `target` with SQLite's online backup, as a 0600 file.

    The copy is written to a new private file beside the target and then put in place: by a
    hard link (fails if anything, a symbolic link included, is at the target) or, with `force`,
    by rename (replaces the entry itself, never what a link points to). So an existing database
    is never overwritten by accident and no link is ever followed."""
    target = Path(target)
    if target.is_dir() and not target.is_symlink():
        raise BackupError(f"{target} is a directory")
    if not force and (target.exists() or target.is_symlink()):
        raise BackupError(f"{target} exists; use --force to replace it")
    try:
        fd, temp = _private_temp(target)
    except OSError as exc:
        raise BackupError(f"cannot create a file in {target.parent}: {exc.strerror}") from None
    os.close(fd)
    try:
        dest = sqlite3.connect(temp)
        try:
            done = [0]

            def step(status: int, remaining: int, total: int) -> None:
                percent = 100 if total == 0 else (total - remaining) * 100 // total
                if progress is not None and percent > done[0]:
                    progress(percent - done[0])
                    done[0] = percent

            with dest:
                # In steps of 1024 pages (4 MiB) so a big store shows its progress.
                conn.backup(dest, pages=1024, progress=step)
        finally:
            dest.close()
        with open(temp, "rb") as f:
            os.fsync(f.fileno())
        if force:
            os.replace(temp, target)
        else:
            try:
                os.link(temp, target, follow_symlinks=False)
            except FileExistsError:
                raise BackupError(f"{target} exists; use --force to replace it") from None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot write {target}: {exc}") from None
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        for suffix in _SUFFIXES:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{temp}{suffix}")


def _private_temp(target: Path) -> tuple[int, str]:
    for n in range(100):
        temp = str(target.parent / f".{target.name}.{os.getpid()}.{n}.tmp")
        try:
            return os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, STORE_MODE), temp
        except FileExistsError:
            continue
    raise OSError(errno.EEXIST, "no free temporary name")
