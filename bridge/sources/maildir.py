"""Maildir source: a message file in `new/` is staged, then moved to `cur/` (flag S).

Useful behind an MTA that delivers to a Maildir, and for the demo. The file's unique name is
its identity (`source_uid`), its modification time the arrival time.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Awaitable, Callable

from bridge.config import MaildirSettings
from bridge.models import RawMessage

log = logging.getLogger("mailbridge.maildir")

StageFn = Callable[[list[RawMessage]], Awaitable[list[bool]]]


def ensure_maildir(path: Path) -> None:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


class MaildirSource:
    def __init__(self, settings: MaildirSettings, stage: StageFn, batch_size: int = 200):
        self.settings = settings
        self.stage = stage
        self.batch_size = batch_size
        self.name = f"maildir:{settings.name}"
        self.path = Path(settings.path)
        self.on_polled: Callable[[], None] | None = None  # the daemon's runtime status

    def _pending(self) -> list[Path]:
        try:
            return sorted((self.path / "new").iterdir(), key=lambda p: p.name)
        except FileNotFoundError:
            return []

    async def drain(self) -> int:
        ensure_maildir(self.path)
        files = [p for p in self._pending() if p.is_file()]
        taken = 0
        for start in range(0, len(files), self.batch_size):
            batch = files[start:start + self.batch_size]
            msgs, kept = [], []
            for f in batch:
                try:
                    data, mtime = f.read_bytes(), f.stat().st_mtime
                except FileNotFoundError:  # another reader took it
                    continue
                msgs.append(RawMessage(data, self.name, f.name.split(":", 1)[0], mtime))
                kept.append(f)
            if not msgs:
                continue
            results = await self.stage(msgs)
            for f, ok in zip(kept, results):
                if ok:  # only a durably staged message leaves new/
                    target = self.path / "cur" / (f.name.split(":", 1)[0] + ":2,S")
                    try:
                        os.rename(f, target)
                    except FileNotFoundError:
                        pass
                    taken += 1
        if self.on_polled is not None:
            self.on_polled()
        return taken

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
