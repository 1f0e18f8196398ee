"""Sending mail over SMTP (aiosmtplib): the I/O edge of forwards, replies and admin alerts.

`SmtpSender.send` transmits one composed message and returns a `SendResult` whose verdict the
outbox worker acts on: `ok`, `transient` (retry later: connection refused, timeouts, 4xx) or
`permanent` (5xx, or a configuration problem such as an untrusted certificate, a refused login
or a server that offers no STARTTLS; `config_error` tells those apart, since every other
message would fail the same way until the admin fixes the config). TLS is always explicit:
aiosmtplib's default `start_tls=None` quietly sends plain text when a server (or an attacker in
the path) does not offer STARTTLS, so it is never used. Composition lives in `mailcompose` and
is re-exported here, so callers import one module.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any, Literal, Protocol

import aiosmtplib
from aiosmtplib.email import parse_address

from bridge.auth.oauth2 import OAuth2Error
from bridge.config import SmtpSettings
from bridge.deliver.mailcompose import (  # noqa: F401  (re-exported for callers)
    ComposeError,
    Envelope,
    compose_admin_alert,
    compose_forward,
    compose_reply,
    envelope_of,
    loop_reason,
    to_bytes,
)
from bridge.deliver.smtpdata import OutgoingMail, send_data, wire_size

Verdict = Literal["ok", "transient", "permanent"]

# RFC 3463: 5.3.4 "message too big for system", 5.2.3 "message length exceeds administrative
# limit". With 552 ("exceeded storage allocation") at MAIL FROM (RFC 1870 SIZE) or after DATA,
# these are how relays refuse a message for its size (Microsoft 365, Gmail: 552 5.3.4 / 5.2.3).
_TOO_BIG = re.compile(r"\b5\.(?:3\.4|2\.3)\b")
# A whole send may take this long per byte on top of the command timeouts (256 KiB/s).
_SECONDS_PER_BYTE = 1 / (256 * 1024)


class TokenSource(Protocol):
    """What `SmtpSender` needs from `bridge.auth.oauth2.TokenProvider` for XOAUTH2."""

    async def token(self) -> str: ...

    def invalidate(self) -> None: ...


@dataclass(frozen=True)
class SendResult:
    """The outcome of one send. `detail` is for logs and the audit trail; it holds no secret.

    `refused` lists recipients the server refused while it accepted others (the message went
    out, so it must not be retried). `config_error` marks failures no retry can fix until the
    configuration changes. `too_big` marks a refusal for the message's size: the same message
    will never pass, a smaller one may (a forward then goes without its original).
    """

    verdict: Verdict
    detail: str
    code: int | None = None
    config_error: bool = False
    refused: tuple[str, ...] = ()
    too_big: bool = False

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"


class SmtpCheckError(Exception):
    """`SmtpSender.check()` failed; the message says what and where, without secrets."""

    def __init__(self, result: SendResult):
        super().__init__(result.detail)
        self.result = result


def _is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_too_big(code: int, message: str) -> bool:
    return code == 552 or (code >= 500 and _TOO_BIG.search(message) is not None)


def _size_limit(smtp: aiosmtplib.SMTP) -> int:
    """The server's EHLO SIZE limit in bytes (0: none announced)."""
    value = smtp.esmtp_extensions.get("size", "").strip()
    return int(value) if value.isdigit() else 0


def _find(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` in the cause/context chain (aiosmtplib sometimes wraps)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


class SmtpSender:
    """Sends composed mail through the configured relay; one connection per message.

    A connection per message keeps the sender stateless (nothing to go stale between outbox
    rows, which may be minutes apart); mailbridge's outgoing volume is small.
    """

    def __init__(self, settings: SmtpSettings, token_provider: TokenSource | None = None,
                 *, local_hostname: str | None = None):
        self.settings = settings
        self._tokens = token_provider
        self._local_hostname = local_hostname
        self._tls: ssl.SSLContext | None = None
        # Per-command timeouts are aiosmtplib's; this bounds a whole send, so a server that
        # trickles replies cannot hold an outbox slot forever.
        self._overall_timeout = settings.timeout * 4

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # -- public -----------------------------------------------------------------------------

    async def send(self, message: EmailMessage | bytes) -> SendResult:
        """Send a composed message (or its `to_bytes` form, e.g. from the outbox)."""
        try:
            envelope = envelope_of(message)
        except ComposeError as exc:
            return SendResult("permanent", f"cannot send: {exc}")
        return await self.send_mail(OutgoingMail(envelope.sender, envelope.recipients,
                                                 (envelope.data,)))

    async def send_mail(self, mail: OutgoingMail) -> SendResult:
        """Send a message given as envelope and segments; DATA is streamed (`smtpdata`)."""
        problem = self._config_problem()
        if problem:
            return problem
        budget = self._overall_timeout + mail.size * _SECONDS_PER_BYTE
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(budget):
                    return await self._deliver(mail)
            except aiosmtplib.SMTPAuthenticationError as exc:
                # A cached OAuth2 token may have been revoked or expired early: fetch a new one
                # once before calling the credentials wrong.
                if self._tokens is not None and attempt == 1 and exc.code >= 500:
                    self._tokens.invalidate()
                    continue
                return self.classify(exc)
            except Exception as exc:  # noqa: BLE001 - classify() re-raises what it cannot map
                return self.classify(exc)
        raise AssertionError("unreachable")

    async def check(self) -> str:
        """Connect, EHLO, STARTTLS, log in and quit: `mailbridge check --online`."""
        problem = self._config_problem()
        if problem:
            raise SmtpCheckError(problem)
        smtp = self._client()
        try:
            async with asyncio.timeout(self._overall_timeout):
                await smtp.connect()
                if smtp.is_ehlo_or_helo_needed:
                    await smtp.ehlo()
                tls = smtp.get_transport_info("ssl_object")
                banner = (smtp.last_ehlo_response.message.splitlines() or [""])[0] \
                    if smtp.last_ehlo_response else ""
                await smtp.quit()
        except Exception as exc:  # noqa: BLE001
            smtp.close()
            raise SmtpCheckError(self.classify(exc)) from None
        mode = {"starttls": "STARTTLS", "tls": "implicit TLS", "none": "plain text"}[
            self.settings.security]
        version = f" {tls.version()}" if tls is not None else ""
        if self._tokens is not None:
            login = f"logged in as {self.settings.username} (XOAUTH2)"
        elif self.settings.username and self.settings.password is not None:
            login = f"logged in as {self.settings.username}"
        else:
            login = "no login configured"
        return f"SMTP {self.where}: {mode}{version}, {login}; server {banner}".rstrip()

    # -- internals --------------------------------------------------------------------------

    def _config_problem(self) -> SendResult | None:
        s = self.settings
        if s.security == "none" and not _is_loopback(s.host):
            return SendResult("permanent", f"smtp.security = \"none\" is allowed only for a "
                              f"loopback relay, not {s.host}; use \"starttls\" or \"tls\"",
                              config_error=True)
        if self._tokens is not None and not s.username:
            return SendResult("permanent", "XOAUTH2 needs smtp.username (the mailbox to send as)",
                              config_error=True)
        if s.security != "none" and self._tls is None:
            try:
                cafile = str(s.ca_file) if s.ca_file else None
                # With ca_file, only that CA is trusted (a private relay); else the system store.
                self._tls = ssl.create_default_context(cafile=cafile)
            except (OSError, ssl.SSLError) as exc:
                return SendResult("permanent", f"cannot load smtp.ca_file {s.ca_file}: {exc}",
                                  config_error=True)
        return None

    def _client(self) -> aiosmtplib.SMTP:
        s = self.settings
        kwargs: dict[str, Any] = {"hostname": s.host, "port": s.port, "timeout": s.timeout,
                                  "local_hostname": self._local_hostname}
        if s.security == "tls":
            kwargs |= {"use_tls": True, "start_tls": False, "tls_context": self._tls}
        elif s.security == "starttls":
            kwargs |= {"use_tls": False, "start_tls": True, "tls_context": self._tls}
        else:
            # Plain text on loopback only (checked above). False, not None: no opportunistic
            # STARTTLS whose certificate a local relay could not pass anyway.
            kwargs |= {"use_tls": False, "start_tls": False}
        if self._tokens is not None:
            kwargs |= {"username": s.username, "oauth_token_generator": self._tokens.token}
        elif s.username and s.password is not None:
            kwargs |= {"username": s.username, "password": s.password.get_secret_value()}
        return aiosmtplib.SMTP(**kwargs)

    async def _deliver(self, mail: OutgoingMail) -> SendResult:
        smtp = self._client()
        await smtp.connect()  # TCP, TLS or STARTTLS, EHLO, login
        try:
            if smtp.is_ehlo_or_helo_needed:
                await smtp.ehlo()
            size = wire_size(mail.segments)
            limit = _size_limit(smtp)
            if limit and size > limit:
                smtp.close()
                return SendResult("permanent", f"{self.where} accepts messages of at most "
                                  f"{limit} bytes (EHLO SIZE); this one has {size}", 552,
                                  too_big=True)
            options = []
            if smtp.supports_extension("size"):
                options.append(f"size={size}")  # RFC 1870: a too-big message fails at MAIL
            if mail.eight_bit and smtp.supports_extension("8bitmime"):
                options.append("BODY=8BITMIME")
            for address in (mail.sender, *mail.recipients):
                parse_address(address)  # ValueError before any command: no half envelope
            await smtp.mail(mail.sender, options=options)
            refused: dict[str, aiosmtplib.SMTPRecipientRefused] = {}
            for rcpt in mail.recipients:
                try:
                    await smtp.rcpt(rcpt)
                except aiosmtplib.SMTPRecipientRefused as exc:
                    refused[rcpt] = exc
            if len(refused) == len(mail.recipients):
                raise aiosmtplib.SMTPRecipientsRefused(list(refused.values()))
            reply = (await send_data(smtp, mail.segments, self.settings.timeout)).message
        except BaseException:
            smtp.close()
            raise
        # Accepted: from here on nothing may turn this into a failure (a retry would duplicate).
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            smtp.close()
        accepted = len(mail.recipients) - len(refused)
        detail = f"accepted by {self.where} for {accepted} recipient(s): {reply.strip()[:200]}"
        if refused:
            detail += "; refused: " + ", ".join(
                f"{rcpt} ({r.code} {r.message.strip()[:100]})" for rcpt, r in refused.items())
        return SendResult("ok", detail, 250, refused=tuple(refused))

    def classify(self, exc: BaseException) -> SendResult:
        """Map an exception from connecting or sending to a verdict (unknown ones re-raise)."""
        where = self.where
        cert = _find(exc, ssl.SSLCertVerificationError)
        if isinstance(cert, ssl.SSLCertVerificationError):
            return SendResult("permanent", f"TLS certificate of {where} is not trusted "
                              f"({cert.verify_message or cert.reason}); install its CA in the "
                              f"system store or set smtp.ca_file", config_error=True)
        tls_error = _find(exc, ssl.SSLError)
        if isinstance(tls_error, ssl.SSLError):
            why = tls_error.reason or str(tls_error)
            return SendResult("permanent", f"TLS with {where} failed ({why}); check "
                              f"smtp.security and smtp.port (\"tls\" is usually port 465, "
                              f"\"starttls\" 587)", config_error=True)
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            text = ", ".join(f"{r.recipient} ({r.code} {r.message.strip()[:100]})"
                             for r in exc.recipients)
            verdict: Verdict = "permanent" if all(c >= 500 for c in codes) else "transient"
            return SendResult(verdict, f"{where} refused every recipient: {text}",
                              max(codes, default=None))
        if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
            if 400 <= exc.code < 500:
                return SendResult("transient", f"{where} login failed temporarily: "
                                  f"{exc.code} {exc.message[:200]}", exc.code)
            return SendResult("permanent", f"{where} refused the login of "
                              f"{self.settings.username}: {exc.code} {exc.message[:200]}",
                              exc.code, config_error=True)
        if isinstance(exc, (aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)) and \
                _is_too_big(exc.code, exc.message):
            step = "MAIL FROM" if isinstance(exc, aiosmtplib.SMTPSenderRefused) else "DATA"
            return SendResult("permanent", f"{where} refused the message as too big at {step}: "
                              f"{exc.code} {exc.message[:200]}", exc.code, too_big=True)
        if isinstance(exc, aiosmtplib.SMTPSenderRefused):
            permanent = exc.code >= 500
            return SendResult("permanent" if permanent else "transient",
                              f"{where} refused sender {exc.sender} (smtp.from_address): "
                              f"{exc.code} {exc.message[:200]}", exc.code, config_error=permanent)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            verdict = "permanent" if exc.code >= 500 else "transient"
            return SendResult(verdict, f"{where} answered {exc.code} {exc.message[:200]}",
                              exc.code)
        if isinstance(exc, (aiosmtplib.SMTPTimeoutError, TimeoutError)):
            return SendResult("transient", f"{where} timed out ({exc or 'no answer'})")
        if isinstance(exc, OSError):  # SMTPConnectError, SMTPServerDisconnected, refused, DNS
            return SendResult("transient", f"cannot reach {where}: {exc}")
        if isinstance(exc, OAuth2Error):
            return SendResult("transient", f"no XOAUTH2 token for {where}: {exc}")
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return SendResult("permanent", f"{where}: {exc}", config_error=True)
        if isinstance(exc, aiosmtplib.SMTPException):
            text = str(exc)
            lower = text.lower()
            # aiosmtplib's AUTH message also mentions STARTTLS ("Try connecting via TLS (or
            # STARTTLS)"): the AUTH case is matched first, so the cause named is the real one.
            if "auth extension is not supported" in lower:
                return SendResult("permanent", f"{where} offers no AUTH, but smtp.username and"
                                  f" smtp.password are set (smtp.security = "
                                  f"\"{self.settings.security}\"): remove them for a relay that"
                                  " needs no login, or use the relay's submission port",
                                  config_error=True)
            if "no suitable authentication method" in lower:
                return SendResult("permanent", f"{where} offers no login method mailbridge can"
                                  " use (PLAIN, LOGIN, CRAM-MD5)", config_error=True)
            if "starttls extension not supported" in lower:
                return SendResult("permanent", f"{where} offers no STARTTLS; refusing to send "
                                  f"in plain text (smtp.security = \"starttls\")",
                                  config_error=True)
            if "xoauth2" in text.lower() or "username is required" in text:
                return SendResult("permanent", f"{where}: {text}", config_error=True)
            return SendResult("transient", f"{where}: {text}")
        if isinstance(exc, ValueError):  # aiosmtplib's address checks
            return SendResult("permanent", f"cannot send: {exc}")
        raise exc
