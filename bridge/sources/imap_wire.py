"""aioimaplib 2.0.3, adjusted: the protocol, command and client classes the IMAP source uses.

Subclasses, not patches, of aioimaplib's internals (so re-run the tests when upgrading it):
an iterative response parser (issue #118, RecursionError on large responses) that also notes
EXISTS and BYE; a FETCH command that checks completeness in linear time and hands literals over
without copying them; an AUTHENTICATE command that answers the server's challenges (aioimaplib
never does, so a refused XOAUTH2 token used to end in a timeout); and a client class that keeps
`conn_lost_cb` for plain and TLS connections alike (issue #107).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import ssl
from typing import Any, Callable

import aioimaplib
from aioimaplib.aioimaplib import (CRLF, Command, FetchCommand, IMAP4ClientProtocol,
                                   IncompleteRead, literal_data_re)

from bridge.sources import imap_parse as P

class ImapProtocol(IMAP4ClientProtocol):
    """aioimaplib's protocol plus: `changed` (an EXISTS arrived), `bye` (server said BYE), and
    an iterative response loop instead of one recursion per line (issue #118, RecursionError on
    large responses). The loop is aioimaplib 2.0.3's `_handle_responses` with its tail calls
    turned into a while loop; behaviour is otherwise identical."""

    def __init__(self, loop: asyncio.AbstractEventLoop,
                 conn_lost_cb: Callable[[Exception | None], None] | None = None) -> None:
        super().__init__(loop, conn_lost_cb)
        self.changed = asyncio.Event()
        self.bye: str | None = None

    def _untagged_response(self, line: bytes) -> Command:
        if line.endswith(b" EXISTS"):
            self.changed.set()
        elif line.startswith(b"* BYE"):
            # The server is closing the connection (or answering LOGOUT): treat it as lost at
            # once rather than wait for the socket to close.
            self.bye = line[5:].decode("utf-8", "replace").strip()[:200]
            if self.conn_lost_cb is not None:
                self.conn_lost_cb(None)
        return super()._untagged_response(line)

    def _handle_responses(self, data: bytes, line_handler: Callable[..., Any],
                          current_cmd: Command | None = None) -> None:
        while True:
            if not data:
                if self.pending_sync_command is not None:
                    self.pending_sync_command.flush()
                if current_cmd is not None and current_cmd.wait_data():
                    raise IncompleteRead(current_cmd)
                return
            if current_cmd is not None and current_cmd.wait_literal_data():
                data = current_cmd.append_literal_data(data)
                if current_cmd.wait_literal_data():
                    raise IncompleteRead(current_cmd)
            line, separator, tail = data.partition(CRLF)
            if not separator:
                raise IncompleteRead(current_cmd, data)
            cmd = line_handler(line, current_cmd)
            begin_literal = literal_data_re.match(line)
            if begin_literal:
                if cmd is None:
                    cmd = Command("NIL", "unused")
                cmd.begin_literal_data(int(begin_literal.group("size")))
                data, current_cmd = tail, cmd
            elif cmd is not None and cmd.wait_data():
                data, current_cmd = tail, cmd
            else:
                data, current_cmd = tail, None


class BodyFetchCommand(FetchCommand):
    """FETCH with two changes. Its "is the response complete?" test looks only at the lines
    since the last message start, instead of rescanning the whole response for every line
    (quadratic in the batch size in aioimaplib 2.0.3). And a literal is collected in a BytesIO
    and handed over as the `bytes` it grew in (BytesIO.getvalue() returns its buffer without
    copying), not as a bytearray that must be copied to bytes: a 50 MB message costs 50 MB of
    memory here, not 100."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._last_fetch = 0
        self._literal: io.BytesIO | None = None
        self._literal_got = 0

    def begin_literal_data(self, expected_size: int, literal_data: bytes = b"") -> bytes:
        self._expected_size = expected_size
        self._literal, self._literal_got = io.BytesIO(), 0
        return self.append_literal_data(literal_data)

    def wait_literal_data(self) -> bool:
        return self._expected_size != 0 and self._literal_got != self._expected_size

    def append_literal_data(self, data: bytes) -> bytes:
        missing = self._expected_size - self._literal_got
        chunk = data[:missing]
        if self._literal is None:
            self._literal = io.BytesIO()
        self._literal.write(chunk)
        self._literal_got += len(chunk)
        if self._literal_got == self._expected_size:
            literal, self._literal = self._literal, None
            self._expected_size = self._literal_got = 0
            self.append_to_resp(P.Literal(literal.getvalue()))
        self._reset_timer()
        return data[missing:]

    def append_to_resp(self, line: bytes | P.Literal, result: str = "Pending") -> None:
        if isinstance(line, bytes) and self.FETCH_MESSAGE_DATA_RE.match(line):
            self._last_fetch = len(self._resp_lines)
        super().append_to_resp(line, result)

    def wait_data(self) -> bool:
        text = b"".join(line for line in self._resp_lines[self._last_fetch:]
                        if isinstance(line, bytes))
        return text.count(b"(") != text.count(b")")


class SaslCommand(Command):
    """AUTHENTICATE with an initial response. aioimaplib never answers a continuation, so a
    server that rejects an XOAUTH2 token (it sends a `+ <base64 JSON error>` challenge and waits
    for an empty reply) left the client hanging until a timeout. Here the first challenge is
    answered with the initial response when the server lacks SASL-IR, and any further one with
    an empty line, which makes the server finish with a tagged NO."""

    def __init__(self, tag: str, proto: IMAP4ClientProtocol, mechanism: str, response: str,
                 sasl_ir: bool) -> None:
        args = (mechanism, response) if sasl_ir else (mechanism,)
        super().__init__("AUTHENTICATE", tag, *args, loop=proto.loop)
        self._proto = proto
        self._to_send: list[bytes] = [] if sasl_ir else [response.encode("ascii")]
        self.challenge: str | None = None

    def append_to_resp(self, line: bytes, result: str = "Pending") -> None:
        if result == "Pending" and isinstance(line, bytes) and line.startswith(b"+"):
            if self._to_send:
                reply = self._to_send.pop(0)
            else:
                reply = b""
                self.challenge = decode_challenge(line[1:].strip())
            if self._proto.transport is not None:
                self._proto.transport.write(reply + CRLF)
            return
        super().append_to_resp(line, result)


def decode_challenge(data: bytes) -> str:
    """XOAUTH2 error challenges are base64 JSON like {"status":"401","schemes":"bearer"}."""
    try:
        body = json.loads(base64.b64decode(data, validate=True))
        return ", ".join(f"{k}={v}" for k, v in body.items() if k in ("status", "schemes", "scope"))
    except (ValueError, TypeError, AttributeError):
        return ""


class ImapClient(aioimaplib.IMAP4):
    """IMAP4 with our protocol class. One class serves plain and implicit TLS (IMAP4_SSL only
    adds a default SSL context, and drops `conn_lost_cb`: issue #107)."""

    def create_client(self, host: str, port: int, loop: asyncio.AbstractEventLoop | None,
                      conn_lost_cb: Callable[[Exception | None], None] | None = None,
                      ssl_context: ssl.SSLContext | None = None) -> None:
        local_loop = loop or asyncio.get_running_loop()
        self.protocol = ImapProtocol(local_loop, conn_lost_cb)
        self._client_task = local_loop.create_task(local_loop.create_connection(
            lambda: self.protocol, host, port, ssl=ssl_context,
            ssl_handshake_timeout=self.timeout if ssl_context else None))
