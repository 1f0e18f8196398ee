"""Outgoing mail, composed as plain data: forwards, XML-transaction replies, admin alerts.

Everything here is pure (no I/O): each function takes what the pipeline knows and returns an
`email.message.EmailMessage`, and `loop_reason` answers whether a received message must never
be answered. Every message we write carries `Auto-Submitted` and our own `X-Mailbridge`
header, so our own mail is recognised when it comes back (SPEC §3.7: never mail-loop).
`to_bytes` and `envelope_of` turn a composed message into the exact bytes and SMTP envelope the
sender transmits; the forwarded original travels inside as the bytes we received, never
re-generated, because a broken original re-serialised by the `email` package is no longer the
evidence the administrator needs to see.
"""

from __future__ import annotations

import email.policy
import email.utils
import re
from dataclasses import dataclass
from email.generator import BytesGenerator
from email.headerregistry import Address
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser
from io import BytesIO
from typing import Iterable

from bridge.classify.safety import MARKER, unsafe_reason
from bridge.models import ParsedMessage

# policy.SMTP: CRLF line ends, headers folded at 78, no "From " mangling.
POLICY = email.policy.SMTP

# A pragmatic RFC 5321 addr-spec: ASCII dot-atom local part, hostname domain. Stricter than
# the RFC on purpose: response addresses come from untrusted XML, and anything odder than this
# is more likely an injection attempt than a real mailbox.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_ADDR_SPEC = re.compile(rf"{_ATOM}(?:\.{_ATOM})*@{_LABEL}(?:\.{_LABEL})*")
_NAME_ADDR = re.compile(r"(?P<name>[^<>\x00-\x1f\x7f]*?)\s*<(?P<addr>[^<>]*)>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_MSG_ID = re.compile(r"<[^<>\s]{1,900}>")
_SUBJECT_MAX = 500


class ComposeError(ValueError):
    """A message cannot be written, e.g. the recipient is not a single valid address."""


@dataclass(frozen=True)
class Envelope:
    """What goes on the wire: MAIL FROM, RCPT TO (To + Cc + Bcc) and the bytes without Bcc."""

    sender: str
    recipients: tuple[str, ...]
    data: bytes


# -- addresses and header values ---------------------------------------------------------------


def parse_address(value: str, what: str = "address") -> Address:
    """One mailbox, as `local@domain` or `Display Name <local@domain>`; else ComposeError."""
    text = value.strip()
    if not text or _CONTROL.search(text):
        raise ComposeError(f"{what} {value!r} is empty or contains control characters")
    name = ""
    match = _NAME_ADDR.fullmatch(text)
    if match:
        name, text = match["name"].strip().strip('"').strip(), match["addr"].strip()
    if not _ADDR_SPEC.fullmatch(text):
        raise ComposeError(f"{what} {value!r} is not a single valid mail address")
    return Address(display_name=name, addr_spec=text)


def addr_spec(value: str) -> str:
    """The lower-cased `local@domain` of an address written either way ("" if unreadable)."""
    try:
        return parse_address(value).addr_spec.lower()
    except ComposeError:
        return value.strip().strip("<>").lower()


def one_line(text: str, limit: int = _SUBJECT_MAX) -> str:
    """A header-safe single line: control characters (CR/LF included) become spaces."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _base(from_address: str, to: str, subject: str, kind: str, auto: str) -> EmailMessage:
    sender = parse_address(from_address, "from address")
    msg = EmailMessage(policy=POLICY)
    msg["From"] = sender
    msg["To"] = parse_address(to, "recipient")
    msg["Subject"] = one_line(subject)
    msg["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = email.utils.make_msgid("mailbridge", domain=sender.domain or None)
    # RFC 3834: tells auto-responders (and our own loop_reason) this was not written by a person.
    msg["Auto-Submitted"] = auto
    # Asks Exchange not to send out-of-office or receipt replies to what we send.
    msg["X-Auto-Response-Suppress"] = "All"
    msg[MARKER] = kind
    return msg


def _set_text(part: EmailMessage, text: str) -> None:
    # Quoted-printable for non-ASCII so the note survives a relay without 8BITMIME.
    if text.isascii():
        part.set_content(text)
    else:
        part.set_content(text, cte="quoted-printable")


# -- forward -----------------------------------------------------------------------------------


def _rfc822_encoding(raw: bytes) -> str | None:
    """How the raw original can travel as message/rfc822 unchanged, or None if it cannot.

    RFC 2046 allows only 7bit/8bit/binary for message/rfc822. SMTP needs lines of at most 998
    octets and turns bare CR into CRLF; NUL is not allowed at all. An original that breaks these
    rules is attached as an opaque base64 file instead, which keeps every byte.
    """
    if b"\x00" in raw or re.search(rb"\r(?!\n)", raw):
        return None
    if any(len(line.rstrip(b"\r")) > 998 for line in raw.split(b"\n")):
        return None
    return "7bit" if raw.isascii() else "8bit"


def _original_part(raw: bytes) -> tuple[MIMEPart, str]:
    encoding = _rfc822_encoding(raw)
    part = MIMEPart(policy=POLICY)
    if encoding is None:
        part.set_content(raw, maintype="application", subtype="octet-stream",
                         disposition="attachment", filename="original.eml")
        return part, ("attached unchanged as original.eml (it cannot travel as an embedded "
                      "message: NUL, bare CR or lines over 998 bytes)")
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = 'attachment; filename="original.eml"'
    part["Content-Transfer-Encoding"] = encoding
    # A str payload on message/rfc822 is written out verbatim by the generator (the same path
    # HeaderParser results take); surrogateescape carries the 8-bit bytes through unchanged.
    part.set_payload(raw.decode("ascii", "surrogateescape"))
    return part, "attached unchanged"


def forward_note(parsed: ParsedMessage, reason: str, size: int) -> list[str]:
    """The lines at the top of every forward: why, and what the original was."""
    sender = f"{parsed.sender_name} <{parsed.sender}>" if parsed.sender_name else parsed.sender
    lines = [
        f"mailbridge forwarded this message because: {reason}",
        "",
        f"From:       {one_line(sender) or '(none)'}",
        f"Subject:    {one_line(parsed.subject) or '(none)'}",
        f"Date:       {parsed.date.isoformat() if parsed.date else '(none)'}",
        f"Message-ID: {one_line(parsed.message_id or '') or '(none)'}",
        f"Size:       {size} bytes",
    ]
    if parsed.parse_error:
        lines.append(f"Parse error: {one_line(parsed.parse_error, 300)}")
    if parsed.defects:
        lines.append(f"MIME defects: {one_line(', '.join(parsed.defects), 300)}")
    return lines


def compose_forward(raw: bytes, parsed: ParsedMessage, to: str, reason: str,
                    from_address: str) -> EmailMessage:
    """A forward of a received message to an internal address, with a note saying why."""
    reason = one_line(reason, 1000) or "no reason given"
    msg = _base(from_address, to, f"[mailbridge] Fwd: {parsed.subject or '(no subject)'}",
                "forward", "auto-generated")
    msg["X-Mailbridge-Reason"] = one_line(reason, 400)
    original, how = _original_part(raw)
    lines = forward_note(parsed, reason, len(raw))
    lines += ["", f"The original message is {how}.", ""]
    _set_text(msg, "\n".join(lines))
    msg.make_mixed()
    # typeshed wants attach(Self); a subpart is a plain MIMEPart on purpose (no MIME-Version).
    msg.attach(original)  # type: ignore[arg-type]
    return msg


# -- XML transaction reply and admin alert -----------------------------------------------------


def compose_reply(to: str, bcc: str | None, subject: str, text: str, xml: bytes | None,
                  from_address: str, in_reply_to: str | None) -> EmailMessage:
    """An XML-transaction response: a readable text part and the XML response document.

    `bcc` goes in a Bcc header: the envelope includes it, and `envelope_of` strips the header
    from the transmitted copy, so neither recipient sees the archive address.
    """
    msg = _base(from_address, to, subject or "mailbridge response", "reply", "auto-replied")
    if bcc:
        msg["Bcc"] = parse_address(bcc, "bcc address")
    if in_reply_to and _MSG_ID.fullmatch(in_reply_to.strip()):
        msg["In-Reply-To"] = in_reply_to.strip()
        msg["References"] = in_reply_to.strip()
    _set_text(msg, text if text.endswith("\n") else text + "\n")
    if xml is not None:
        msg.add_attachment(xml, maintype="application", subtype="xml", filename="response.xml")
    return msg


def compose_admin_alert(to: str, subject: str, text: str, from_address: str) -> EmailMessage:
    """Mail to the administrator when mailbridge itself is in trouble (SPEC §3.7)."""
    if not subject.startswith("[mailbridge]"):
        subject = f"[mailbridge] {subject}"
    msg = _base(from_address, to, subject, "admin-alert", "auto-generated")
    _set_text(msg, text if text.endswith("\n") else text + "\n")
    return msg


# -- mail loops --------------------------------------------------------------------------------

_BULK = frozenset({"bulk", "junk", "list"})


def loop_reason(parsed: ParsedMessage, own_addresses: Iterable[str],
                from_address: str) -> str | None:
    """Why this message must never be answered; None if it may.

    Everything the safety stage (`bridge.classify.safety.unsafe_reason`) rejects, and, for an
    answer only, any `Auto-Submitted` but `no` and the older `Precedence` bulk conventions
    (RFC 3834 §2: never auto-reply to automatic mail; forwarding it is another matter).
    """
    reason = unsafe_reason(parsed, [*own_addresses, from_address])
    if reason is not None:
        return reason
    auto = parsed.header("auto-submitted").split(";", 1)[0].strip().lower()
    if auto and auto != "no":
        return f"automatically submitted (Auto-Submitted: {one_line(auto, 40)})"
    precedence = parsed.header("precedence").strip().lower()
    if precedence in _BULK:
        return f"bulk or list mail (Precedence: {precedence})"
    return None


# -- bytes and envelope ------------------------------------------------------------------------


class _Generator(BytesGenerator):
    """BytesGenerator that writes a verbatim message/rfc822 payload with its 8-bit bytes."""

    def _encode(self, s: str) -> bytes:
        return s.encode("ascii", "surrogateescape")


def to_bytes(msg: EmailMessage) -> bytes:
    """The message as it is stored and sent (CRLF, Bcc still present: `envelope_of` strips it)."""
    buf = BytesIO()
    _Generator(buf, policy=POLICY).flatten(msg)
    return buf.getvalue()


_HEADER_END = re.compile(rb"\r?\n\r?\n")


def _strip_headers(data: bytes, names: frozenset[bytes]) -> bytes:
    """`data` without the named header fields (folded continuation lines included)."""
    end = _HEADER_END.search(data)
    if end is None:
        head, body = data, b""
    else:
        # Split after the last header line's own line end: the body starts at the blank line.
        cut = end.start() + (2 if data[end.start():end.start() + 1] == b"\r" else 1)
        head, body = data[:cut], data[cut:]
    kept: list[bytes] = []
    dropping = False
    for line in head.splitlines(keepends=True):
        if line[:1] in (b" ", b"\t"):  # a folded continuation belongs to the header above
            if not dropping:
                kept.append(line)
            continue
        dropping = line.split(b":", 1)[0].strip().lower() in names
        if not dropping:
            kept.append(line)
    return b"".join(kept) + body


def envelope_of(message: EmailMessage | bytes) -> Envelope:
    """MAIL FROM and RCPT TO from the headers (To, Cc, Bcc), and the data without Bcc."""
    data = to_bytes(message) if isinstance(message, EmailMessage) else message
    headers = BytesHeaderParser(policy=email.policy.compat32).parsebytes(data)
    froms = email.utils.getaddresses([str(v) for v in headers.get_all("from", [])])
    sender = next((a for _, a in froms if a), "")
    if not sender:
        raise ComposeError("message has no From address")
    fields = [str(v) for name in ("to", "cc", "bcc") for v in headers.get_all(name, [])]
    recipients: list[str] = []
    for _, address in email.utils.getaddresses(fields):
        if address and address.lower() not in (r.lower() for r in recipients):
            recipients.append(address)
    if not recipients:
        raise ComposeError("message has no recipient")
    for address in [sender, *recipients]:
        if not _ADDR_SPEC.fullmatch(address):
            raise ComposeError(f"{address!r} is not a valid mail address")
    return Envelope(sender, tuple(recipients),
                    _strip_headers(data, frozenset({b"bcc", b"resent-bcc"})))
