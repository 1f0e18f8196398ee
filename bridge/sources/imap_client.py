"""One IMAP connection, made safe to use from a long-running daemon.

A thin layer over aioimaplib 2.0.3 that fixes what LIBRARIES.md warns about: every command runs
under a timeout *and* races the connection-lost event (a BYE or a dropped socket never leaves an
await hanging); STARTTLS is implemented (connect plain, `STARTTLS`, upgrade the transport with
`loop.start_tls`, read capabilities again); XOAUTH2 answers the server's error challenge so a bad
token is a prompt `NO`, not a timeout (the adjusted aioimaplib classes are in `imap_wire`); an
EXISTS seen anywhere sets `changed`, so no arrival is missed between a SEARCH and the next IDLE. Any
failure marks the connection broken: the caller throws it away and reconnects, because late
replies corrupt aioimaplib's state. No password or token ever reaches a log line or an error.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from typing import Any, Awaitable, TypeVar

import aioimaplib
from aioimaplib.aioimaplib import AUTH, Command

from bridge.auth.oauth2 import OAuth2Error, TokenProvider, xoauth2_string
from bridge.config import ImapSettings
from bridge.operator.audit import Redactor
from bridge.sources import imap_parse as P
from bridge.sources.imap_errors import (ImapAuthError, ImapConfigError, ImapConnectionLost,
                                        ImapError, ImapTimeout, refuse_settings)
from bridge.sources.imap_wire import BodyFetchCommand, ImapClient, ImapProtocol, SaslCommand

log = logging.getLogger(__name__)
T = TypeVar("T")


class ImapConnection:
    """A logged-in connection to one mailbox. Create, `await open()`, use, `abort()`/`logout()`.

    `lost` is set when the server drops the connection; `broken` when any command failed or
    timed out. Either way the connection must not be used again."""

    def __init__(self, settings: ImapSettings, token_provider: TokenProvider | None = None):
        self.settings = settings
        self.token_provider = token_provider
        self.lost = asyncio.Event()
        self.broken = False
        self.capabilities: frozenset[str] = frozenset()
        self.tls_version: str | None = None
        self._client: ImapClient | None = None
        self._secrets: list[str] = []
        if settings.password is not None:
            self._secrets.append(settings.password.get_secret_value())

    # -- plumbing -----------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def proto(self) -> ImapProtocol:
        assert self._client is not None
        return self._client.protocol  # aioimaplib is untyped; we installed this protocol

    @property
    def usable(self) -> bool:
        return self._client is not None and not self.lost.is_set() and not self.broken

    @property
    def changed(self) -> asyncio.Event:
        return self.proto.changed

    def _redact(self, text: str) -> str:
        # The audit redactor also hides the secret's escaped, quoted and encoded forms.
        return Redactor(self._secrets).redact(text)

    def _on_lost(self, exc: Exception | None) -> None:
        self.lost.set()

    async def call(self, aw: Awaitable[T], what: str, timeout: float | None = None) -> T:
        """Await one IMAP operation under a timeout, racing the connection-lost event."""
        task = asyncio.ensure_future(aw)
        if self.lost.is_set():
            task.cancel()
            raise ImapConnectionLost(self._lost_message(what))
        lost = asyncio.ensure_future(self.lost.wait())
        try:
            done, _ = await asyncio.wait({task, lost}, timeout=timeout or self.settings.timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            self.broken = True
            raise
        finally:
            lost.cancel()
        if task in done:
            try:
                return task.result()
            except ImapError:
                self.broken = True
                raise
            except (aioimaplib.CommandTimeout, asyncio.TimeoutError):
                self.broken = True
                raise ImapTimeout(f"{self.where}: no answer to {what} within "
                                  f"{timeout or self.settings.timeout:g}s") from None
            except ssl.SSLCertVerificationError as exc:
                self.broken = True
                raise ImapError(
                    f"{self.where}: TLS certificate not trusted ({exc.verify_message}); set "
                    f"ca_file to the CA that signed the server's certificate") from None
            except (ssl.SSLError, OSError) as exc:
                self.broken = True
                reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
                raise ImapError(f"{self.where}: {what} failed: {self._redact(reason)}") from None
            except aioimaplib.AioImapException as exc:
                # aioimaplib's messages may quote the command (LOGIN carries the password).
                self.broken = True
                raise ImapError(f"{self.where}: {what} failed: "
                                f"{self._redact(str(exc))[:300]}") from None
            except Exception:
                self.broken = True  # whatever it was, this connection's state is unknown now
                raise
        task.cancel()
        self.broken = True
        if lost in done:
            raise ImapConnectionLost(self._lost_message(what))
        raise ImapTimeout(f"{self.where}: no answer to {what} within "
                          f"{timeout or self.settings.timeout:g}s")

    def _lost_message(self, what: str) -> str:
        bye = f" (BYE {self.proto.bye})" if self._client and self.proto.bye else ""
        return f"{self.where}: connection lost during {what}{bye}"

    async def _checked(self, aw: Awaitable[aioimaplib.Response], what: str,
                       timeout: float | None = None) -> aioimaplib.Response:
        resp = await self.call(aw, what, timeout)
        if resp.result != "OK":
            text = P.response_text(resp.lines, self._redact)
            raise ImapError(f"{self.where}: {what} refused: {text}")
        return resp

    # -- connect, TLS, login ------------------------------------------------------------------

    def _ssl_context(self) -> ssl.SSLContext:
        ca = self.settings.ca_file
        try:
            # Certificates and host names are verified; TLS 1.2 is the floor.
            return ssl.create_default_context(cafile=str(ca) if ca else None)
        except (OSError, ssl.SSLError) as exc:
            raise ImapConfigError(f"cannot load ca_file {ca}: {exc}") from None

    async def open(self) -> None:
        """Connect, secure, log in and read capabilities."""
        s = self.settings
        refuse_settings(s, oauth2=self.token_provider is not None)
        context = self._ssl_context() if s.security in ("tls", "starttls") else None
        self._client = ImapClient(s.host, s.port, timeout=s.timeout, conn_lost_cb=self._on_lost,
                               ssl_context=context if s.security == "tls" else None)
        # Set explicitly as LIBRARIES.md advises, whatever the constructor did with it.
        self._client.protocol.conn_lost_cb = self._on_lost
        await self.call(self._client.wait_hello_from_server(), "connect")
        if s.security == "tls":
            self._note_tls(self.proto.transport)
        elif s.security == "starttls":
            assert context is not None
            await self._starttls(context)
        await self._login()
        # Capabilities change after login (MOVE, IDLE...) and aioimaplib does not refresh them
        # after AUTHENTICATE: ask again.
        await self.call(self.proto.capability(), "CAPABILITY")
        self.capabilities = frozenset(c.upper() for c in self.proto.capabilities)

    def _note_tls(self, transport: Any) -> None:
        obj = transport.get_extra_info("ssl_object") if transport else None
        self.tls_version = obj.version() if obj is not None else None

    async def _starttls(self, context: ssl.SSLContext) -> None:
        proto = self.proto
        if "STARTTLS" not in proto.capabilities:
            raise ImapError(f"{self.where}: the server does not offer STARTTLS; use "
                            f"security = \"tls\" (usually port 993)")
        await self._checked(proto.execute(Command("STARTTLS", proto.new_tag(), loop=proto.loop)),
                            "STARTTLS")
        if proto.incomplete_line:
            # Bytes after the OK were sent in clear text before the handshake (response
            # injection): refuse rather than parse them as if they were protected.
            raise ImapError(f"{self.where}: unexpected data after STARTTLS; refusing")
        loop = asyncio.get_running_loop()
        transport = await self.call(loop.start_tls(
            proto.transport, proto, context, server_hostname=self.settings.host,
            ssl_handshake_timeout=self.settings.timeout), "TLS handshake")
        proto.transport = transport
        self._note_tls(transport)
        # Anything learnt before TLS is untrusted: read the capabilities again.
        await self.call(proto.capability(), "CAPABILITY")

    async def _login(self) -> None:
        if self.token_provider is not None:
            await self._xoauth2()
            return
        if "LOGINDISABLED" in self.proto.capabilities:
            raise ImapAuthError(f"{self.where}: the server refuses LOGIN on this connection "
                                f"(LOGINDISABLED); use security = \"tls\" or \"starttls\"")
        assert self.settings.password is not None
        password = P.quoted(self.settings.password.get_secret_value())
        self._secrets += [password, password[1:-1]]  # a server may echo either form
        proto = self.proto
        cmd = Command("LOGIN", proto.new_tag(), P.quoted(self.settings.username), password,
                      loop=proto.loop)
        # scrub= hides the password in aioimaplib's debug log; it must be the quoted form,
        # which is what goes on the wire.
        resp = await self.call(proto.execute(cmd, scrub=password), "LOGIN")
        if resp.result != "OK":
            raise ImapAuthError(f"{self.where}: login as {self.settings.username} refused: "
                                f"{P.response_text(resp.lines, self._redact)}")
        await self._set_authenticated()

    async def _set_authenticated(self) -> None:
        proto = self.proto
        async with proto.state_condition:  # as aioimaplib's own @change_state does
            proto.state = AUTH
            proto.state_condition.notify_all()

    async def _xoauth2(self) -> None:
        assert self.token_provider is not None
        if "AUTH=XOAUTH2" not in self.proto.capabilities:
            raise ImapAuthError(f"{self.where}: the server does not offer XOAUTH2 login")
        user = self.settings.username
        for attempt in (1, 2):
            try:
                token = await self.token_provider.token()
            except OAuth2Error as exc:
                raise ImapAuthError(f"cannot get an OAuth2 token for {user}: {exc}") from None
            self._secrets.append(token)
            initial = base64.b64encode(xoauth2_string(user, token).encode()).decode("ascii")
            self._secrets.append(initial)
            proto = self.proto
            cmd = SaslCommand(proto.new_tag(), proto, "XOAUTH2", initial,
                               sasl_ir="SASL-IR" in proto.capabilities)
            try:
                resp = await self.call(proto.execute(cmd, scrub=initial), "AUTHENTICATE XOAUTH2")
            except ImapTimeout:
                # Servers that never finish a refused XOAUTH2 exchange end up here.
                raise ImapAuthError(
                    f"{self.where}: XOAUTH2 login as {user} got no answer within "
                    f"{self.settings.timeout:g}s: the server most likely rejected the token"
                ) from None
            if resp.result == "OK":
                await self._set_authenticated()
                return
            detail = P.response_text(resp.lines, self._redact)
            if cmd.challenge:
                detail += f" ({cmd.challenge})"
            if attempt == 1:
                # The cached token may have been revoked or expired early: fetch a fresh one.
                log.info("imap %s: XOAUTH2 refused, retrying once with a new token", self.where)
                self.token_provider.invalidate()
                continue
            raise ImapAuthError(f"{self.where}: XOAUTH2 login as {user} refused: {detail}")

    # -- mailbox commands ---------------------------------------------------------------------

    async def select(self, folder: str, readonly: bool = False) -> P.SelectInfo:
        proto = self.proto
        name = "EXAMINE" if readonly else "SELECT"
        if readonly:
            aw = proto.simple_command("EXAMINE", P.mailbox_arg(folder))
        else:
            aw = proto.select(P.mailbox_arg(folder))
        resp = await self._checked(aw, f"{name} {folder}")
        if readonly:  # aioimaplib changes state on SELECT only; EXAMINE selects too
            proto.state = aioimaplib.SELECTED
        return P.parse_select(resp.lines)

    async def folder_exists(self, folder: str) -> bool:
        resp = await self._checked(self.proto.simple_command("LIST", '""', P.mailbox_arg(folder)),
                                   f"LIST {folder}")
        return any(bytes(line).strip() for line in resp.lines[:-1])

    async def ensure_folder(self, folder: str) -> bool:
        """Create `folder` if it is missing; True if it was created."""
        if await self.folder_exists(folder):
            return False
        resp = await self.call(self.proto.simple_command("CREATE", P.mailbox_arg(folder)),
                               f"CREATE {folder}")
        if resp.result != "OK" and b"ALREADYEXISTS" not in bytes(resp.lines[-1] if resp.lines
                                                                 else b""):
            raise ImapError(f"{self.where}: cannot create folder {folder}: "
                            f"{P.response_text(resp.lines, self._redact)}")
        return resp.result == "OK"

    async def noop(self) -> None:
        """Make the server look at the mailbox again (Dovecot reports new Maildir files only at
        such sync points, not to a bare SEARCH)."""
        await self._checked(self.proto.simple_command("NOOP"), "NOOP")

    async def search_undeleted(self) -> list[int]:
        resp = await self._checked(self.proto.search("UNDELETED", charset=None, by_uid=True),
                                   "UID SEARCH")
        return sorted(set(P.parse_search(resp.lines)))

    async def search_message_id(self, message_id: str) -> list[int]:
        """UIDs of the selected folder's messages with this Message-ID header."""
        quoted = '"' + message_id.replace("\\", "").replace('"', "") + '"'
        resp = await self._checked(self.proto.search("HEADER", "Message-ID", quoted,
                                                     charset=None, by_uid=True),
                                   "UID SEARCH HEADER Message-ID")
        return sorted(set(P.parse_search(resp.lines)))

    async def fetch(self, uids: list[int], items: str, expected_bytes: int = 0) -> list[P.FetchRecord]:
        proto = self.proto
        # No per-command timer (timeout=None): aioimaplib re-arms it with call_later for every
        # line received, 40% of the CPU of a large fetch. The bound below grows with the bytes
        # expected, so a large message on a slow link is not cut off half-way.
        cmd = BodyFetchCommand(proto.new_tag(), P.uid_set(uids), items, prefix="UID",
                            loop=proto.loop, timeout=None)
        budget = self.settings.timeout + expected_bytes / (256 * 1024)
        resp = await self._checked(proto.execute(cmd), f"UID FETCH {items}", timeout=budget)
        return P.parse_fetch(resp.lines)

    async def move(self, uids: list[int], folder: str) -> None:
        """Move messages out of the selected folder: UID MOVE, or COPY + \\Deleted + EXPUNGE."""
        proto = self.proto
        uidset, target = P.uid_set(uids), P.mailbox_arg(folder)
        if "MOVE" in self.capabilities:
            await self._checked(proto.move(uidset, target, by_uid=True), f"UID MOVE to {folder}")
            return
        await self._checked(proto.copy(uidset, target, by_uid=True), f"UID COPY to {folder}")
        await self._checked(proto.store(uidset, "+FLAGS.SILENT", r"(\Deleted)", by_uid=True),
                            "UID STORE \\Deleted")
        if "UIDPLUS" in self.capabilities:
            await self._checked(proto.expunge(uidset, by_uid=True), "UID EXPUNGE")
        else:
            # Without UIDPLUS only a plain EXPUNGE exists; it also removes other messages
            # someone flagged \Deleted in this folder, which is what that flag asks for.
            await self._checked(proto.expunge(), "EXPUNGE")

    async def idle(self, stop: asyncio.Event, duration: float) -> str:
        """IDLE until the mailbox changes ("changed"), `stop` is set ("stop") or `duration`
        passes ("timeout"); then leave IDLE cleanly. Raises if the connection is lost."""
        client = self._client
        assert client is not None
        proto = self.proto
        # aioimaplib's own re-IDLE timer is only a backstop behind ours.
        idle_task = await self.call(client.idle_start(timeout=duration + 60), "IDLE")
        waiters = {
            asyncio.ensure_future(proto.changed.wait()): "changed",
            asyncio.ensure_future(stop.wait()): "stop",
            asyncio.ensure_future(self.lost.wait()): "lost",
        }
        try:
            done, _ = await asyncio.wait(waiters, timeout=duration,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        reasons = {waiters[w] for w in done}
        if "lost" in reasons or self.lost.is_set():
            idle_task.cancel()
            self.broken = True
            raise ImapConnectionLost(self._lost_message("IDLE"))
        client.idle_done()
        await self._checked(idle_task, "IDLE DONE")
        while not proto.idle_queue.empty():  # we react to `changed`, not to queued pushes
            proto.idle_queue.get_nowait()
        if "stop" in reasons:
            return "stop"
        return "changed" if "changed" in reasons else "timeout"

    # -- closing ------------------------------------------------------------------------------

    async def logout(self, timeout: float = 1.0) -> None:
        """Say goodbye if the connection is healthy; close it in any case."""
        try:
            if self.usable:
                await self.call(self.proto.logout(), "LOGOUT", timeout=timeout)
        except ImapError:
            pass
        finally:
            self.abort()

    def abort(self) -> None:
        self.broken = True
        client, self._client = self._client, None
        if client is None:
            return
        for task in list(client.tasks) + list(client.protocol.tasks):
            task.cancel()
        if client._idle_waiter is not None:  # aioimaplib's re-IDLE timer holds the client
            client._idle_waiter.cancel()
        if not client._client_task.done():
            client._client_task.cancel()
        transport = client.protocol.transport
        if transport is not None:
            transport.abort()
