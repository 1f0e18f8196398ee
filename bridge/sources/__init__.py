"""Sources: where raw mail comes from (IMAP with IDLE, Maildir; the pipe is `bridge.ingest`).

`build_sources` is the one place sources are made from settings; the daemon calls it at start
and again when a reload changed a mailbox.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING

from pydantic import SecretStr

from bridge.config import Settings
from bridge.seams import Source, StageFn

if TYPE_CHECKING:
    from bridge.operator.status import RuntimeStatus


def build_sources(settings: Settings, stage: StageFn, runtime: RuntimeStatus) -> list[Source]:
    from bridge.sources.maildir import MaildirSource

    sources: list[Source] = []
    for m in settings.maildir:
        maildir = MaildirSource(m, stage)
        maildir.on_polled = functools.partial(runtime.source_polled, maildir.name)
        runtime.source_connected(maildir.name)
        sources.append(maildir)
    if settings.imap:
        from bridge.sources.imap import ImapSource

        for imap in settings.imap:
            tokens = None
            if imap.oauth2 is not None:
                from bridge.auth.oauth2 import TokenProvider

                tokens = TokenProvider(imap.oauth2)
            sources.append(ImapSource(
                imap, stage, token_provider=tokens,
                on_event=functools.partial(runtime.on_source_event, f"imap:{imap.name}")))
    return sources


def sources_signature(settings: Settings) -> str:
    """What the sources were built from (a changed password included, hashed): a reload
    rebuilds them only when this changed."""
    def reveal(value: object) -> object:
        if isinstance(value, SecretStr):
            return hashlib.sha256(value.get_secret_value().encode()).hexdigest()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        return value

    return repr([reveal(m.model_dump()) for m in [*settings.maildir, *settings.imap]])
