"""The forward of a received message, built as a stream: note, headers, and the original.

`build_forward` composes the forward's headers and note with the `email` package (as every
other message we write), but the original never goes through it: the composed message carries
a placeholder where the original belongs, and the result is the bytes before it, the original's
segments (after `redact` cut the secrets out), and the bytes after it. Nothing joins them; the
SMTP sender streams them (`smtpdata`). So a 60 MB original costs the 60 MB it already takes in
memory, not the six copies that `EmailMessage` → bytes → envelope → aiosmtplib made.

The original travels as `message/rfc822` when it may (7bit/8bit, no NUL, no bare CR, lines up to
998 octets — checked with regexes over the segments, no copy) and as a base64 attachment
otherwise, encoded chunk by chunk. `omit` builds the forward without the original, saying why
(a relay refused the full one as too big: docs/smtp.md).
"""

from __future__ import annotations

import base64
import re
import uuid
from email.message import MIMEPart
from typing import Iterator, Sequence

from bridge.deliver.mailcompose import (_base, _set_text, forward_note, one_line, parse_address,
                                       to_bytes)
from bridge.deliver.redact import REPLACEMENT, Redaction, redact
from bridge.deliver.smtpdata import OutgoingMail, Segment
from bridge.models import ParsedMessage

_BAD_FOR_RFC822 = re.compile(rb"\x00|\r(?!\n)|(?:\A|\n)[^\r\n]{999}")
_EIGHT_BIT = re.compile(rb"[\x80-\xff]")
_B64_BLOCK = 57 * 16 * 1024  # input bytes per base64 chunk: whole 76-character lines


def _rfc822_encoding(segments: Sequence[Segment]) -> str | None:
    if any(_BAD_FOR_RFC822.search(s) for s in segments):
        return None
    return "8bit" if any(_EIGHT_BIT.search(s) for s in segments) else "7bit"


def _base64_lines(segments: Sequence[Segment]) -> Iterator[bytes]:
    """Base64 in CRLF lines of 76 characters, produced a block at a time."""
    carry = b""
    for seg in segments:
        view = memoryview(seg)
        offset = 0
        while offset < len(view):
            take = _B64_BLOCK - len(carry)
            block = carry + bytes(view[offset:offset + take])
            offset += take
            if len(block) < _B64_BLOCK:
                carry = block
                continue
            carry = b""
            yield base64.encodebytes(block).replace(b"\n", b"\r\n")
    if carry:
        yield base64.encodebytes(carry).replace(b"\n", b"\r\n")


def secrets_of(parsed: ParsedMessage, configured: Sequence[str]) -> list[str]:
    """The secret values a forward of this message must not carry."""
    found = [s for s in configured if s]
    found += [t.pw for t in parsed.ates if t.pw]
    for part in parsed.xml_parts:
        try:
            from bridge.parse.xmlapi import Transaction, parse_transaction

            tx = parse_transaction(part)
        except Exception:  # noqa: BLE001 - the span search still finds <password> by position
            continue
        if isinstance(tx, Transaction) and tx.password is not None:
            found.append(tx.password.get_secret_value())
    return found


def build_forward(raw: bytes, parsed: ParsedMessage, to: str, reason: str, from_address: str,
                  secrets: Sequence[str] = (), omit: str | None = None) -> OutgoingMail:
    """The forward of `raw` to `to`, with a note saying why; see the module docstring."""
    reason = one_line(reason, 1000) or "no reason given"
    msg = _base(from_address, to, f"[mailbridge] Fwd: {parsed.subject or '(no subject)'}",
                "forward", "auto-generated")
    msg["X-Mailbridge-Reason"] = one_line(reason, 400)
    lines = forward_note(parsed, reason, len(raw))
    envelope = OutgoingMail(parse_address(from_address).addr_spec,
                            (parse_address(to).addr_spec,), ())
    if omit is not None:
        msg["X-Mailbridge-Original"] = "omitted"
        lines += ["", f"The original message ({len(raw)} bytes) is NOT attached: "
                  f"{one_line(omit, 600)}.", "It is kept in mailbridge's store "
                  "(`mailbridge events`, `mailbridge replay`).", ""]
        _set_text(msg, "\n".join(lines))
        return OutgoingMail(envelope.sender, envelope.recipients, (to_bytes(msg),))

    redacted: Redaction = redact(raw, secrets)
    encoding = _rfc822_encoding(redacted.segments)
    placeholder = f"mailbridge-original-{uuid.uuid4().hex}"
    part = MIMEPart()
    if encoding is None:
        part["Content-Type"] = "application/octet-stream"
        part["Content-Disposition"] = 'attachment; filename="original.eml"'
        part["Content-Transfer-Encoding"] = "base64"
        how = ("attached as original.eml (it cannot travel as an embedded message: NUL, bare "
               "CR or lines over 998 bytes)")
        body: Sequence[Segment] | Iterator[bytes] = _base64_lines(redacted.segments)
    else:
        part["Content-Type"] = "message/rfc822"
        part["Content-Disposition"] = 'attachment; filename="original.eml"'
        part["Content-Transfer-Encoding"] = encoding
        how = "attached"
        body = redacted.segments
    part.set_payload(placeholder)
    if redacted.changed:
        how += (f", unchanged except for {redacted.values} secret value(s) (the ATES token's PW,"
                f" an XML transaction password) replaced by \"{REPLACEMENT}\""
                f" ({redacted.parts} MIME part(s) re-encoded)")
        msg["X-Mailbridge-Redacted"] = str(redacted.values)
    else:
        how += " unchanged"
    lines += ["", f"The original message is {how}.", ""]
    _set_text(msg, "\n".join(lines))
    msg.make_mixed()
    # typeshed wants attach(Self); a subpart is a plain MIMEPart on purpose (no MIME-Version).
    msg.attach(part)  # type: ignore[arg-type]
    head, tail = to_bytes(msg).split(placeholder.encode(), 1)
    return OutgoingMail(envelope.sender, envelope.recipients, (head, *body, tail))
