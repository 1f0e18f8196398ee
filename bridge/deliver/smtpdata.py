"""The SMTP DATA stream, produced piece by piece: what a big forward is sent as.

aiosmtplib's `data()` normalises line ends and dot-stuffs the whole message with two regex
substitutions, each a full copy (a 60 MB forward cost four copies at once). `OutgoingMail`
holds a message as segments (memoryview slices of the stored original plus small composed
pieces); `data_chunks` turns them into the DATA bytes one MiB at a time — line ends made CRLF
and leading dots doubled exactly as aiosmtplib does, across chunk boundaries — and `wire_size`
gives the RFC 1870 SIZE of the result without building it. `send_data` writes the chunks with
the transport's flow control, so the kernel buffer, not Python, holds what is in flight.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator, Sequence, Union

import aiosmtplib

Segment = Union[bytes, memoryview]

CHUNK = 1024 * 1024
_LINE_END = re.compile(rb"\r\n|\n|\r")
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n")
_INNER_DOT = re.compile(rb"(?<=\n)\.")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")


@dataclass(frozen=True)
class OutgoingMail:
    """One message to send: envelope and content as segments, never joined."""

    sender: str
    recipients: tuple[str, ...]
    segments: tuple[Segment, ...]

    @property
    def size(self) -> int:
        return sum(len(s) for s in self.segments)

    @property
    def eight_bit(self) -> bool:
        return any(_EIGHT_BIT.search(s) for s in self.segments)


def wire_size(segments: Sequence[Segment]) -> int:
    """Octets of the message as DATA carries it (CRLF line ends; RFC 1870 SIZE)."""
    size = 0
    last = b""
    for seg in segments:
        # Each bare CR or LF becomes two octets; a CR LF split across segments is rare and
        # at most overestimates by one, which SIZE allows.
        size += len(seg) + sum(1 for _ in _BARE.finditer(seg))
        if len(seg):
            last = bytes(seg[-1:])
    # A final bare CR was counted as CR LF already; anything else gets a CR LF added.
    return size if last in (b"\n", b"\r") else size + 2


def data_chunks(segments: Sequence[Segment], chunk: int = CHUNK) -> Iterator[bytes]:
    """The DATA payload including the final `.` line, in pieces of about `chunk` bytes."""
    carry = b""
    line_start = True
    sent = False
    for seg in segments:
        view = memoryview(seg)
        for offset in range(0, len(view), chunk):
            piece = carry + bytes(view[offset:offset + chunk])
            carry = b""
            if piece.endswith(b"\r"):  # may be the first half of CR LF: decide next time
                carry, piece = b"\r", piece[:-1]
            if not piece:
                continue
            out = _INNER_DOT.sub(b"..", _LINE_END.sub(b"\r\n", piece))
            if line_start and out.startswith(b"."):
                out = b"." + out
            line_start = out.endswith(b"\n")
            sent = True
            yield out
    if carry or not sent:
        yield b"\r\n"
        line_start = True
    if not line_start:
        yield b"\r\n"
    yield b".\r\n"


async def send_data(smtp: aiosmtplib.SMTP, segments: Sequence[Segment],
                    timeout: float | None) -> aiosmtplib.SMTPResponse:
    """DATA, the streamed content, and the server's final reply (SMTPDataError if not 250).

    Mirrors aiosmtplib's `execute_data_command`, writing chunk by chunk and waiting on the
    protocol's flow control between them. It uses two protocol internals (`_response_pending`,
    `_drain_helper`), hence the `<6` bound on aiosmtplib in pyproject; tests/test_safety.py and
    tests/test_forward_size.py fail loudly if they change.
    """
    start = await smtp.execute_command(b"DATA", timeout=timeout)
    if start.code != 354:
        raise aiosmtplib.SMTPDataError(start.code, start.message)
    protocol = smtp.protocol
    if protocol is None:
        raise aiosmtplib.SMTPServerDisconnected("Connection lost")
    # An early refusal (some servers answer 552 before the end of DATA) must not be dropped as
    # unsolicited: the reply is expected from the first byte on.
    protocol._response_pending = True
    for piece in data_chunks(segments):
        protocol.write(piece)
        await protocol._drain_helper()
    reply = await protocol.read_response(timeout=timeout)
    if reply.code != 250:
        raise aiosmtplib.SMTPDataError(reply.code, reply.message)
    return reply
