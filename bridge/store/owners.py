"""Owners of claims: which processes hold messages in `processing` and outbox rows `in_flight`.

Each process that claims work registers an owner row (id, kind daemon|once, pid, host, the
host's boot id, the process's start time) and renews its `heartbeat_at` every 10 s (see
`bridge.store.lease.OwnerLease`). An owner is alive while its lease (60 s) runs; on the same host
a process that no longer exists (or a pid reused by another process, or a pid of an earlier
boot) is dead at once, so a restart after a crash takes its claims back immediately. Claims are
only ever taken back from dead owners, so a one-shot command beside a live daemon never hands
out what the daemon is sending. `OwnersMixin` relies on `conn`, `write()`, `query` of `Store`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Iterable

from bridge.store.base import StoreBase

HEARTBEAT = 10.0  # seconds between two heartbeats of a live owner
LEASE = 60.0      # an owner whose last heartbeat is older than this is gone


class OwnerConflict(RuntimeError):
    """A live daemon already owns this store."""


@dataclass(frozen=True)
class Identity:
    host: str
    boot_id: str | None
    pid: int
    proc_start: str | None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def proc_start(pid: int) -> str | None:
    """The start time of process `pid` in clock ticks since boot (Linux), None if unknown."""
    stat = _read(f"/proc/{pid}/stat")
    if stat is None:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None


def boot_id() -> str | None:
    value = _read("/proc/sys/kernel/random/boot_id")
    return value.strip() if value else None


def this_process() -> Identity:
    pid = os.getpid()
    return Identity(os.uname().nodename, boot_id(), pid, proc_start(pid))


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def process_gone(host: str, boot: str | None, pid: int, started: str | None,
                 me: Identity | None = None) -> bool:
    """True when the process is known to be gone; False when alive or not checkable (another
    host: there the lease decides alone)."""
    me = me or this_process()
    if host != me.host:
        return False
    if boot and me.boot_id and boot != me.boot_id:
        return True
    if not _pid_exists(pid):
        return True
    if started and proc_start(pid) not in (None, started):
        return True  # the pid now belongs to another process
    return False


def owner_alive(row: dict[str, Any], now: float | None = None, lease: float = LEASE,
                me: Identity | None = None) -> bool:
    now = time.time() if now is None else now
    if float(row["heartbeat_at"]) + lease < now:
        return False
    return not process_gone(row["host"], row["boot_id"], int(row["pid"]), row["proc_start"], me)


def describe(row: dict[str, Any], now: float | None = None) -> str:
    now = time.time() if now is None else now
    return (f"{row['kind']} pid {row['pid']} on {row['host']}, last heartbeat"
            f" {max(0.0, now - float(row['heartbeat_at'])):.0f} s ago")


_COLUMNS = "id, kind, pid, host, boot_id, proc_start, started_at, heartbeat_at"


class OwnersMixin(StoreBase):
    """The `owners` table (mixed into `Store`). Lease times are wall-clock time, never the
    store's injectable clock: a lease is about real processes."""

    def _owner_rows(self, ids: Iterable[str | None]) -> dict[str, dict[str, Any]]:
        wanted = sorted({i for i in ids if i is not None})
        if not wanted:
            return {}
        cur = self.conn.execute(f"SELECT {_COLUMNS} FROM owners WHERE id IN"
                                f" ({','.join('?' * len(wanted))})", wanted)
        names = [d[0] for d in cur.description]
        return {r[0]: dict(zip(names, r)) for r in cur.fetchall()}

    def owners(self) -> list[dict[str, Any]]:
        """Every registered owner with `alive` computed now (for views)."""
        cur = self.conn.execute(f"SELECT {_COLUMNS} FROM owners ORDER BY started_at")
        names = [d[0] for d in cur.description]
        me, now = this_process(), time.time()
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        return [r | {"alive": owner_alive(r, now, me=me)} for r in rows]

    def live_daemon(self) -> dict[str, Any] | None:
        return next((o for o in self.owners() if o["kind"] == "daemon" and o["alive"]), None)

    def gone_claimants(self, claimants: Iterable[str | None]) -> tuple[set[str], set[str | None]]:
        """(registered owners that are gone, claimants that never registered)."""
        ids = set(claimants)
        rows = self._owner_rows(ids)
        me, now = this_process(), time.time()
        gone = {i for i, r in rows.items() if not owner_alive(r, now, me=me)}
        return gone, {i for i in ids if i not in rows}

    def claimant_alive(self, claimant: str | None) -> bool | None:
        """True/False for a registered owner, None for a claimant without an owner row."""
        row = self._owner_rows([claimant]).get(claimant or "")
        return None if row is None else owner_alive(row)

    def register_owner(self, owner_id: str, kind: str, ident: Identity) -> None:
        """Record a new owner; a second live daemon is refused (OwnerConflict)."""
        now = time.time()
        with self.write() as conn:
            if kind == "daemon":
                cur = conn.execute(f"SELECT {_COLUMNS} FROM owners WHERE kind='daemon'"
                                   " AND id != ?", (owner_id,))
                names = [d[0] for d in cur.description]
                for r in cur.fetchall():
                    row = dict(zip(names, r))
                    if owner_alive(row, now, me=ident):
                        raise OwnerConflict(
                            f"another mailbridge daemon already runs on the store"
                            f" {self.path} ({describe(row, now)}); stop it"
                            " first (one-shot commands such as `run --once` may run beside it)")
            conn.execute(f"INSERT OR REPLACE INTO owners ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
                         (owner_id, kind, ident.pid, ident.host, ident.boot_id, ident.proc_start,
                          now, now))

    def heartbeat_owner(self, owner_id: str) -> bool:
        """Renew the lease; False when the row is gone (another process judged us dead)."""
        with self.write() as conn:
            return bool(conn.execute("UPDATE owners SET heartbeat_at=? WHERE id=?",
                                     (time.time(), owner_id)).rowcount)

    def release_owner(self, owner_id: str) -> None:
        """A clean stop: claims not finished go back uncounted (no crash, no poison charge)."""
        with self.write() as conn:
            conn.execute("UPDATE messages SET state='staged', claimed_by=NULL,"
                         " claims=max(claims-1, 0) WHERE state='processing' AND claimed_by=?",
                         (owner_id,))
            conn.execute("UPDATE outbox SET state='pending', claimed_by=NULL WHERE"
                         " state='in_flight' AND claimed_by=?", (owner_id,))
            conn.execute("DELETE FROM owners WHERE id=?", (owner_id,))

    def _prune_owners(self, conn: sqlite3.Connection, gone: set[str]) -> None:
        """Dead owners that hold nothing any more are forgotten."""
        for owner in gone:
            conn.execute("DELETE FROM owners WHERE id=? AND NOT EXISTS (SELECT 1 FROM messages"
                         " WHERE state='processing' AND claimed_by=?) AND NOT EXISTS (SELECT 1"
                         " FROM outbox WHERE state='in_flight' AND claimed_by=?)",
                         (owner, owner, owner))
