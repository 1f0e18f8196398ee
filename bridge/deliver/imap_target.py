"""The outcome-based second IMAP move as a delivery target (regular mail, quarantine).

A row names the IMAP source that fetched the message and the folder it goes to; the source
finds the message in its processed folder by Message-ID and moves it. IMAP down → retried
with backoff like any other delivery; a source the configuration no longer has → dead with
the reason (the mail stays where it is); no Message-ID → done, nothing to find.
One instance, "default", over the IMAP sources of the running configuration.
"""

from __future__ import annotations

from bridge.deliver.settle import TargetEnv, backoff, dead, done, retry
from bridge.seams import Event, Settlement
from bridge.store.db import OutboxRow


class ImapMoveTarget:
    kind = "imap"

    def __init__(self, env: TargetEnv, name: str = "default"):
        self.env = env
        self.name = name

    def __repr__(self) -> str:
        return f"ImapMoveTarget(sources={sorted(self.env.mailboxes)!r})"

    async def _message_id(self, row: OutboxRow) -> str | None:
        return await self.env.store.run(self.env.store.store.message_id_header,
                                        row.message_ref)

    async def render(self, row: OutboxRow) -> dict[str, object]:
        return {"kind": self.kind, "source": row.payload.get("source"),
                "folder": row.payload.get("folder"), "message_id": await self._message_id(row)}

    async def deliver(self, row: OutboxRow) -> Settlement:
        source = self.env.mailboxes.get(str(row.payload.get("source")))
        folder = str(row.payload.get("folder"))
        if source is None:
            return dead(f"no IMAP source {row.payload.get('source')!r}")
        message_id = await self._message_id(row)
        if not message_id:
            return done({"moved": 0, "why": "no Message-ID"})
        try:
            moved = await source.refile(message_id, folder)
        except Exception as exc:  # IMAP down: try again later, like any other delivery
            return retry(row, self.env.clock(), backoff(row.attempts), f"IMAP move: {exc}")
        return done({"moved": moved, "folder": folder},
                    Event("refiled", row.message_ref, None, None,
                          {"folder": folder, "moved": moved}))
