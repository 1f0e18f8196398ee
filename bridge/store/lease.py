"""`OwnerLease`: this process as the owner of the claims it makes, with a heartbeat lease.

    lease = OwnerLease(store)            # the Store whose claims the lease owns
    await lease.register(kind="daemon")  # OwnerConflict when a live daemon owns the store
    ...                                  # claims of `store` are recorded under lease.owner_id
    await lease.release()                # a clean stop: unfinished claims go back uncounted

The heartbeat runs on a thread of its own with a connection of its own, so it keeps beating
while the event loop or the store's thread is busy with a long step; only a process that is
gone (or frozen for the whole lease) loses its claims. One-shot commands register with
kind="once" and may run beside the daemon; a second daemon is refused.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from typing import Literal

from bridge.store.db import Store
from bridge.store.owners import HEARTBEAT, LEASE, OwnerConflict, this_process

__all__ = ["OwnerLease", "OwnerConflict", "HEARTBEAT", "LEASE"]

log = logging.getLogger("mailbridge.lease")

Kind = Literal["daemon", "once"]


class OwnerLease:
    def __init__(self, store: Store, *, heartbeat: float = HEARTBEAT):
        self.store = store
        self.heartbeat = heartbeat
        self.ident = this_process()
        self.owner_id: str | None = None
        self.kind: Kind | None = None
        self._own: Store | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    async def register(self, kind: Kind = "once") -> str:
        return await asyncio.to_thread(self.register_sync, kind)

    def register_sync(self, kind: Kind = "once") -> str:
        """Record this process as an owner and start the heartbeat; raises OwnerConflict for a
        second live daemon (nothing is registered then)."""
        if self.owner_id is not None:
            return self.owner_id
        owner_id = f"{kind}:{self.ident.host}:{self.ident.pid}:{secrets.token_hex(4)}"
        own = Store(self.store.path, migrate=False)
        try:
            own.register_owner(owner_id, kind, self.ident)
        except BaseException:
            own.close()
            raise
        self._own, self.owner_id, self.kind = own, owner_id, kind
        self.store.owner = owner_id
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="owner-lease", daemon=True)
        self._thread.start()
        return owner_id

    def _beat(self) -> None:
        assert self._own is not None and self.owner_id is not None
        while not self._stop.wait(self.heartbeat):
            try:
                if not self._own.heartbeat_owner(self.owner_id):
                    # Judged dead by another process (frozen past the lease): our claims may
                    # have been handed on. Register again so new claims are protected.
                    log.error("owner lease %s was lost (no heartbeat for %.0f s);"
                              " registering again", self.owner_id, LEASE)
                    self._own.register_owner(self.owner_id, self.kind or "once", self.ident)
            except OwnerConflict as exc:
                log.error("%s", exc)
            except Exception as exc:  # store busy past its timeout: the next beat tries again
                log.warning("owner heartbeat failed: %s", exc)

    async def release(self) -> None:
        await asyncio.to_thread(self.release_sync)

    def release_sync(self) -> None:
        if self.owner_id is None or self._own is None:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(35.0, 2 * self.heartbeat))
        try:
            self._own.release_owner(self.owner_id)
        finally:
            self._own.close()
            if self.store.owner == self.owner_id:
                self.store.owner = None
            self._own, self.owner_id, self._thread = None, None, None
