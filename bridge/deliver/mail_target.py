"""Mail as a delivery target: forwards, XML replies and admin alerts through the SMTP relay.

Done on success, dead on a permanent refusal, retried with backoff otherwise; an SMTP
configuration problem (or no SMTP server at all) holds the row instead of dead-lettering every
message one by one. No mail goes to one of our own addresses, and no forward carries a message
the safety stage rejects (`bridge.classify.safety`): either would feed a mail loop, so such a
row goes dead with the reason. A forward is streamed with its secrets cut out
(`bridge.deliver.forward`); when the relay refuses it as too big, it is sent again at once
without the original, saying why. An XML reply waits until its transaction's calls settled.
One instance, "default", from `[smtp]`.
"""

from __future__ import annotations

import asyncio

from dataclasses import replace
from email import policy
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from typing import TYPE_CHECKING, Mapping

from bridge.config import Settings
from bridge.deliver.mailcompose import (ComposeError, compose_admin_alert, compose_reply,
                                        envelope_of)
from bridge.deliver.settle import HOLD_DELAY, TargetEnv, backoff, dead, done, retry, wait_until
from bridge.deliver.smtpdata import OutgoingMail
from bridge.seams import Effect, Event, Settlement
from bridge.store.db import OutboxRow

if TYPE_CHECKING:
    from bridge.deliver.smtp import SendResult, SmtpSender


class MailTarget:
    kind = "smtp"

    def __init__(self, env: TargetEnv, sender: SmtpSender | None, name: str = "default"):
        self.env = env
        self.sender = sender
        self.name = name

    def __repr__(self) -> str:
        return f"MailTarget(name={self.name!r})"

    # -- the target ---------------------------------------------------------------------------

    async def deliver(self, row: OutboxRow) -> Settlement:
        if self.sender is None:
            return retry(row, self.env.clock(), HOLD_DELAY, "no SMTP server configured")
        ready = await self._with_results(row)
        if isinstance(ready, Settlement):
            return ready
        row = ready
        loop = own_recipient(self.env.settings, row.payload)
        if loop is not None:
            return dead(loop, Event("mailed", row.message_ref, None, "refused", {
                "outbox": row.id, "type": row.payload.get("type"),
                "to": row.payload.get("to"), "detail": loop}))
        effects: tuple[Effect, ...] = ()
        if row.payload.get("type") == "forward":
            sent = await self.forward(row)
            if isinstance(sent, Settlement):
                return sent
            result, effects = sent
        else:
            try:
                msg = self._compose(row)
            except ComposeError as exc:  # e.g. a reply address from untrusted XML
                return dead(f"cannot compose the mail: {exc}")
            result = await self.sender.send(msg)
        return self._settle(row, result, effects)

    async def render(self, row: OutboxRow) -> dict[str, object]:
        """Envelope and headers of the mail `deliver` would send now."""
        shown: dict[str, object] = {"kind": self.kind, "target": self.name,
                                    "type": row.payload.get("type")}
        ready = await self._with_results(row)
        if isinstance(ready, Settlement):
            return shown | {"waiting": ready.reason}
        row = ready
        loop = own_recipient(self.env.settings, row.payload)
        if loop is not None:
            return shown | {"refused": loop}
        try:
            if row.payload.get("type") == "forward":
                built = await self._build_forward(row)
                if isinstance(built, Settlement):
                    return shown | {"refused": built.reason}
                sender, recipients, head = built.sender, built.recipients, built.segments[0]
            else:
                envelope = envelope_of(self._compose(row))
                sender, recipients, head = envelope.sender, envelope.recipients, envelope.data
        except ComposeError as exc:
            return shown | {"refused": f"cannot compose the mail: {exc}"}
        headers = BytesHeaderParser(policy=policy.compat32).parsebytes(bytes(head))
        return shown | {"envelope": {"from": sender, "to": list(recipients)},
                        "headers": [[k, str(v)] for k, v in headers.items()]}

    # -- the parts ----------------------------------------------------------------------------

    async def _with_results(self, row: OutboxRow) -> OutboxRow | Settlement:
        """An XML reply with the final results of its transaction's calls, or the wait for
        them (an action's call is still waiting: answer when it settled)."""
        if row.payload.get("type") != "reply" or not row.payload.get("rows"):
            return row
        from bridge.decide.xmltx import final_results

        rows = await self.env.store.outbox_results(list(row.payload["rows"]))
        results = final_results(dict(row.payload), rows)
        if results is None:
            # Not before the earliest moment the waiting calls can settle (a call in flight
            # elsewhere gets a second).
            now = self.env.clock()
            waits = [r["next_attempt_at"] if r["state"] == "pending" else now + 1.0
                     for r in rows.values() if r["state"] in ("pending", "in_flight")]
            return wait_until(max([now, *waits]), "waiting for the transaction's calls")
        return replace(row, payload={**row.payload, "final": results})

    def _settle(self, row: OutboxRow, result: SendResult,
                effects: tuple[Effect, ...]) -> Settlement:
        p = row.payload
        mailed = Event("mailed", row.message_ref, None, result.verdict, {
            "outbox": row.id, "type": p.get("type"), "to": p.get("to"),
            "detail": result.detail})
        if result.verdict == "ok":
            return done({"sent_to": p.get("to")}, *effects, mailed)
        now = self.env.clock()
        if result.config_error:
            # Our SMTP settings are wrong (certificate, login): hold everything, do not
            # dead-letter every message one by one; the admin fixes the config and reloads.
            return retry(row, now, HOLD_DELAY, f"SMTP configuration problem: {result.detail}",
                         *effects, mailed)
        if result.verdict == "permanent":
            return dead(f"SMTP refused: {result.detail}", *effects, mailed)
        return retry(row, now, backoff(row.attempts), f"SMTP: {result.detail}", *effects,
                     mailed)

    async def forward(self, row: OutboxRow) -> Settlement | tuple[SendResult,
                                                                  tuple[Effect, ...]]:
        """Send a forward: its result and what it recorded on the way, or the settlement
        when it was refused before sending."""
        assert self.sender is not None
        built = await self._build_forward(row)
        if isinstance(built, Settlement):
            return built
        result = await self.sender.send_mail(built)
        if not result.too_big:
            return result, ()
        # The same message will never pass; the forward without its original will. Both
        # happen in this one attempt, so a size refusal is neither retried for ever nor lost.
        p = row.payload
        too_big = Event("mailed", row.message_ref, None, "too-big", {
            "outbox": row.id, "type": "forward", "to": p.get("to"), "detail": result.detail})
        del built
        why = (f"the mail relay refused the forward with the original attached as too big "
               f"({result.detail})")
        smaller = await self._build_forward(row, omit=why)
        if isinstance(smaller, Settlement):
            return smaller
        return await self.sender.send_mail(smaller), (too_big,)

    async def _build_forward(self, row: OutboxRow,
                             omit: str | None = None) -> OutgoingMail | Settlement:
        from bridge.classify.safety import own_addresses, unsafe_reason
        from bridge.deliver.forward import build_forward, secrets_of
        from bridge.parse.mime import parse

        p, s = row.payload, self.env.settings
        raw = (await self.env.store.message_raw(row.message_ref) or b"") \
            if row.message_ref is not None else b""

        def build() -> OutgoingMail | Settlement:
            parsed = parse(raw)
            unsafe = unsafe_reason(parsed, own_addresses(s))
            if unsafe is not None:
                return dead(f"not forwarded: {unsafe}; mail like this is never forwarded (it"
                            " would feed a mail loop)")
            configured = [x.get_secret_value() for x in (s.ates.password, s.xml_api.password)
                          if x]
            secrets = () if omit else secrets_of(parsed, configured)
            try:
                return build_forward(raw, parsed, p["to"], p.get("note", ""), _from(s),
                                     secrets, omit=omit)
            except ComposeError as exc:
                return dead(f"cannot compose the mail: {exc}")

        # Reading the stored original is work on untrusted bytes (bounded by the MIME limits):
        # it runs on a thread, so the event loop — IDLE, the web, other deliveries — goes on.
        return await asyncio.to_thread(build)

    def _compose(self, row: OutboxRow) -> EmailMessage:
        p = row.payload
        if p.get("type") != "reply":
            return compose_admin_alert(p["to"], p.get("subject", "mailbridge alert"),
                                       p.get("text", ""), _from(self.env.settings))
        from bridge.parse.xmlapi import build_response, response_text

        final = p.get("final")
        if final is None:
            from bridge.decide.xmltx import final_results

            final = final_results(dict(p), {})
        tx_id = p.get("transaction_id")
        return compose_reply(p["to"], p.get("bcc"), p.get("subject", ""),
                             response_text(tx_id, final or []),
                             build_response(tx_id, final or []),
                             _from(self.env.settings), p.get("in_reply_to"))


def _from(settings: Settings) -> str:
    return settings.smtp.from_address if settings.smtp else "mailbridge"


def own_recipient(settings: Settings, payload: Mapping[str, object]) -> str | None:
    """Why a mail row must not be sent: a recipient that is one of our own addresses."""
    from bridge.classify.safety import address_of, own_addresses

    own = own_addresses(settings)
    for key in ("to", "bcc"):
        value = payload.get(key)
        if value and address_of(str(value)) in own:
            return (f"not sent: {key} {value} is one of mailbridge's own addresses (smtp."
                    "from_address, routing.own_addresses or a watched mailbox); the mail would "
                    "come back and loop")
    return None
