"""The outbox's non-PSA targets: mail (forwards, XML replies, admin alerts), webhooks, IMAP moves.

`OtherTargets` is the part of `Delivery` (`bridge.deliver.outbox`) that sends rows of kind
`smtp`, `webhook` and `imap` and settles them: done on success, dead on a permanent refusal,
retried with backoff otherwise (an SMTP configuration problem holds everything instead). No
mail goes to one of our own addresses, and no forward carries a message the safety stage
rejects (`bridge.classify.safety`): either would feed a mail loop, so such a row goes dead with
the reason. A forward is streamed with its secrets cut out (`bridge.deliver.forward`); when the
relay refuses it as too big, it is sent again at once without the original, saying why. It
relies on what `Delivery` provides, declared below: `store`, `settings`, `smtp`, `webhooks`,
`mailboxes`, `runtime`, `clock` and `_retry`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Mapping

from bridge.config import Settings
from bridge.deliver.settle import HOLD_DELAY, Writes, backoff
from bridge.store.db import AsyncStore, OutboxRow

if TYPE_CHECKING:
    from bridge.deliver.smtp import SendResult, SmtpSender
    from bridge.deliver.webhook import WebhookTarget
    from bridge.sources.imap import ImapSource
    from bridge.status import RuntimeStatus


class OtherTargets:
    """Mail, webhook and IMAP-move delivery (mixed into `Delivery`)."""

    # Set by `Delivery.__init__` (and replaced by a reload's `Delivery.use`).
    store: AsyncStore
    settings: Settings
    smtp: SmtpSender | None
    webhooks: Mapping[str, WebhookTarget]
    mailboxes: Mapping[str, ImapSource]  # IMAP sources by name, for outcome-based moves
    runtime: RuntimeStatus | None
    clock: Callable[[], float]
    # Delivery's rescheduling with backoff, shared with the PSA target.
    _retry: Callable[[Writes, OutboxRow, float, str], None]

    # -- mail ---------------------------------------------------------------------------------

    async def _smtp(self, tx: Writes, row: OutboxRow) -> None:
        if self.smtp is None:
            self._retry(tx, row, HOLD_DELAY, "no SMTP server configured")
            return
        from bridge.deliver import smtp as mail

        if row.payload.get("type") == "reply" and row.payload.get("rows"):
            from bridge.xmltx import final_results

            rows = await self.store.outbox_results(list(row.payload["rows"]))
            results = final_results(dict(row.payload), rows)
            if results is None:  # an action's call is still waiting: answer when settled
                # Not before the earliest moment the waiting calls can settle (a call in
                # flight elsewhere gets a second).
                now = self.clock()
                waits = [r["next_attempt_at"] if r["state"] == "pending" else now + 1.0
                         for r in rows.values() if r["state"] in ("pending", "in_flight")]
                tx.outbox_retry(row.id, max([now, *waits]),
                                "waiting for the transaction's calls")
                return
            row = replace(row, payload={**row.payload, "final": results})
        loop = _own_recipient(self.settings, row.payload)
        if loop is not None:
            tx.event("mailed", row.message_ref, None, "refused", outbox=row.id,
                     type=row.payload.get("type"), to=row.payload.get("to"), detail=loop)
            tx.outbox_dead(row.id, loop)
            return
        if row.payload.get("type") == "forward":
            result = await self._forward(tx, row, mail)
            if result is None:
                return
        else:
            try:
                msg = await self._compose(row, mail)
            except mail.ComposeError as exc:  # e.g. a reply address from untrusted XML
                tx.outbox_dead(row.id, f"cannot compose the mail: {exc}")
                return
            result = await self.smtp.send(msg)
        self._settle_mail(tx, row, result)

    def _settle_mail(self, tx: Writes, row: OutboxRow, result: SendResult) -> None:
        p = row.payload
        tx.event("mailed", row.message_ref, None, result.verdict, outbox=row.id,
                 type=p.get("type"), to=p.get("to"), detail=result.detail)
        if result.verdict == "ok":
            tx.outbox_done(row.id, {"sent_to": p.get("to")})
        elif result.config_error:
            # Our SMTP settings are wrong (certificate, login): hold everything, do not
            # dead-letter every message one by one; the admin fixes the config and reloads.
            # The held rows show the reason in `status`.
            self._retry(tx, row, HOLD_DELAY, f"SMTP configuration problem: {result.detail}")
        elif result.verdict == "permanent":
            tx.outbox_dead(row.id, f"SMTP refused: {result.detail}")
        else:
            self._retry(tx, row, backoff(row.attempts), f"SMTP: {result.detail}")

    async def _forward(self, tx: Writes, row: OutboxRow, mail: Any) -> SendResult | None:
        """Send a forward; None when the row was settled here (refused before sending)."""
        from bridge.classify.safety import own_addresses, unsafe_reason
        from bridge.deliver.forward import build_forward, secrets_of
        from bridge.parse.mime import parse

        p = row.payload
        smtp = self.smtp
        if smtp is None:  # `_smtp` checked it; a reload may have removed it since
            self._retry(tx, row, HOLD_DELAY, "no SMTP server configured")
            return None
        raw = (await self.store.message_raw(row.message_ref)
               if row.message_ref is not None else None) or b""
        parsed = parse(raw)
        unsafe = unsafe_reason(parsed, own_addresses(self.settings))
        if unsafe is not None:
            tx.outbox_dead(row.id, f"not forwarded: {unsafe}; mail like this is never "
                           "forwarded (it would feed a mail loop)")
            return None
        s = self.settings
        configured = [x.get_secret_value() for x in (s.ates.password, s.xml_api.password) if x]
        secrets = secrets_of(parsed, configured)
        from_address = s.smtp.from_address if s.smtp else "mailbridge"
        try:
            out = build_forward(raw, parsed, p["to"], p.get("note", ""), from_address, secrets)
        except mail.ComposeError as exc:
            tx.outbox_dead(row.id, f"cannot compose the mail: {exc}")
            return None
        result = await smtp.send_mail(out)
        if not result.too_big:
            return result
        # The same message will never pass; the forward without its original will. Both
        # happen in this one attempt, so a size refusal is neither retried for ever nor lost.
        tx.event("mailed", row.message_ref, None, "too-big", outbox=row.id, type="forward",
                 to=p.get("to"), detail=result.detail)
        del out
        why = (f"the mail relay refused the forward with the original attached as too big "
               f"({result.detail})")
        out = build_forward(raw, parsed, p["to"], p.get("note", ""), from_address, (),
                            omit=why)
        return await smtp.send_mail(out)

    async def _compose(self, row: OutboxRow, mail: Any) -> Any:
        p = row.payload
        from_address = self.settings.smtp.from_address if self.settings.smtp else "mailbridge"
        if p.get("type") == "reply":
            from bridge.parse.xmlapi import build_response, response_text

            final = p.get("final")
            if final is None:
                from bridge.xmltx import final_results

                final = final_results(dict(p), {})
            tx_id = p.get("transaction_id")
            msg = mail.compose_reply(p["to"], p.get("bcc"), p.get("subject", ""),
                                     response_text(tx_id, final or []),
                                     build_response(tx_id, final or []),
                                     from_address, p.get("in_reply_to"))
        else:
            msg = mail.compose_admin_alert(p["to"], p.get("subject", "mailbridge alert"),
                                           p.get("text", ""), from_address)
        return msg

    async def _imap(self, tx: Writes, row: OutboxRow) -> None:
        await _refile(self, tx, row)

    # -- webhooks -----------------------------------------------------------------------------

    async def _webhook(self, tx: Writes, row: OutboxRow) -> None:
        name = str(row.payload.get("target", ""))
        target = self.webhooks.get(name)
        if target is None:
            # A reload removed or renamed it: hold the row (the admin may restore the target,
            # or give up with `mailbridge outbox drop ID`), never drop it silently.
            self._retry(tx, row, HOLD_DELAY, f"held: no webhook target named {name!r} in the"
                        " configuration (removed by a reload?)")
            return
        fields = dict(row.payload.get("fields", {}))
        result = await target.send(fields)
        tx.event("webhook", row.message_ref, row.ordering_key, result.verdict,
                 outbox=row.id, target=name, status=result.status,
                 detail=result.detail)
        if result.verdict == "ok":
            tx.outbox_done(row.id, {"status": result.status})
        elif result.verdict == "permanent":
            tx.outbox_dead(row.id, f"webhook {name}: {result.detail}")
        else:
            self._retry(tx, row, backoff(row.attempts), f"webhook {name}: {result.detail}")


def _own_recipient(settings: Any, payload: Any) -> str | None:
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


async def _refile(delivery: OtherTargets, tx: Writes, row: OutboxRow) -> None:
    source = delivery.mailboxes.get(str(row.payload.get("source")))
    folder = str(row.payload.get("folder"))
    if source is None:
        tx.outbox_dead(row.id, f"no IMAP source {row.payload.get('source')!r}")
        return
    rows = await delivery.store.query("SELECT message_id FROM messages WHERE id=?",
                                      [row.message_ref])
    message_id = rows[0]["message_id"] if rows else None
    if not message_id:
        tx.outbox_done(row.id, {"moved": 0, "why": "no Message-ID"})
        return
    try:
        moved = await source.refile(message_id, folder)
    except Exception as exc:  # IMAP down: try again later, like any other delivery
        delivery._retry(tx, row, backoff(row.attempts), f"IMAP move: {exc}")
        return
    tx.event("refiled", row.message_ref, None, None, folder=folder,
             moved=moved)
    tx.outbox_done(row.id, {"moved": moved, "folder": folder})
