"""Injected faults: latency, failing, throttling and dropped connections, on demand.

The control endpoint arms these; each API call then takes what is armed, in a fixed order:
latency first, then a dropped connection, a 429, a plain failure — each consumed one call at a
time — and, after the call was applied, a "fail after apply" (the ticket changed, but the
caller sees a 500 or a dropped connection: the ambiguous failure an idempotent client must
survive). Dropping a connection needs the socket: ASGI gives no access to it, and uvicorn
answers 500 to an app that raises, so `attach_server` hands the simulator uvicorn's connection
set and `DropConnection` aborts the transport of the calling client.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

FaultScope = Literal["sync", "all"]


@dataclass
class Faults:
    latency_ms: int = 0
    fail_next: int = 0
    fail_status: int = 500
    throttle_next: int = 0
    retry_after: str = "1"  # sent verbatim: delta-seconds or an HTTP-date
    drop_next: int = 0
    fail_after_apply_next: int = 0
    fail_after_apply: Literal["500", "drop"] = "500"
    # "sync": faults hit only POST …/alert/sync; "all": every API endpoint (GETs too).
    applies_to: FaultScope = "sync"

    def update(self, changes: dict[str, Any]) -> None:
        for key, value in changes.items():
            if key not in self.__dataclass_fields__:
                raise ValueError(f"unknown control key {key!r}")
            current = getattr(self, key)
            setattr(self, key, str(value) if isinstance(current, str) else int(value))
        if self.fail_after_apply not in ("500", "drop"):
            raise ValueError("fail_after_apply is '500' or 'drop'")
        if self.applies_to not in ("sync", "all"):
            raise ValueError("applies_to is 'sync' or 'all'")
        if not 400 <= self.fail_status <= 599:
            raise ValueError("fail_status must be an HTTP error status (4xx/5xx)")

    def take(self, name: str) -> bool:
        """Consume one armed fault of this kind; True when the current call gets it."""
        left = getattr(self, name)
        if left > 0:
            setattr(self, name, left - 1)
            return True
        return False

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ServerHandle:
    """What the simulator needs from the uvicorn server it runs in (set by attach_server)."""

    connections: set[Any] = field(default_factory=set)


def attach_server(app: Any, server: Any) -> None:
    """Let `app` drop connections of the uvicorn `server` that serves it."""
    app.state.server_handle = ServerHandle(connections=server.server_state.connections)


class DropConnection(Response):
    """A "response" that closes the client's socket without sending a byte back."""

    def __init__(self, handle: ServerHandle | None):
        super().__init__(status_code=500)
        self._handle = handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = tuple(scope.get("client") or ())
        protocol = None
        if self._handle is not None:
            protocol = next((p for p in list(self._handle.connections)
                             if getattr(p, "client", None) == client), None)
        if protocol is None:
            # Not under an attached uvicorn: the nearest thing is a response that stops after
            # its headers (uvicorn closes the socket when an app returns mid-response).
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-length", b"100")]})
            return
        protocol.transport.abort()
        # Wait until uvicorn has noticed the loss, or it would write its own 500 into the void
        # and log an error; receive() returns http.disconnect once the connection is gone.
        try:
            while (await asyncio.wait_for(receive(), 5.0))["type"] != "http.disconnect":
                pass
        except asyncio.TimeoutError:
            pass
