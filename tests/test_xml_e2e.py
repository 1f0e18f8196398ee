"""XML transactions and sender authenticity end to end: mail in Dovecot, tickets in the
simulator, responses captured by a real SMTP server."""

from __future__ import annotations

from email import message_from_bytes

import pytest

from bridge.config import load_settings
from bridge.daemon import Bridge
from tests.helpers import SAMPLES, outcomes, write_config
from tests.test_daemon import imap_section

pytestmark = pytest.mark.dovecot

PASSWORD = "correct horse battery staple"
XML_CONFIG = f"""
[xml_api]
enabled = true
password = "{PASSWORD}"
bcc = "archive@msp.example"
"""


def mail(body: str, *, sender="rmm@acme.example", extra_headers="", mid="x1") -> bytes:
    return (f"From: Acme RMM <{sender}>\r\nTo: alerts@msp.example\r\n"
            f"Subject: transaction\r\nMessage-ID: <{mid}@acme.example>\r\n{extra_headers}"
            f"Content-Type: application/xml; charset=utf-8\r\n\r\n{body}").encode()


def tx(actions: str, password: str = PASSWORD, respond: str | None = "noc-robot@acme.example",
       tx_id: str = "T-1") -> str:
    head = f"<password>{password}</password>" if password else ""
    if respond:
        head += f"<respond-to>{respond}</respond-to>"
    return (f'<?xml version="1.0" encoding="UTF-8"?><mailbridge-transaction version="1">'
            f"<application>Acme RMM</application>{head}<transaction-id>{tx_id}</transaction-id>"
            f"{actions}</mailbridge-transaction>")


OPEN = ("<open><alert-id>srv01-disk</alert-id><title>Disk C: low on SRV01</title>"
        "<account>ACME-001</account><product-group>servers</product-group>"
        "<alert-type>Disk Space</alert-type><device>SRV01</device></open>")


async def run_once(config) -> int:
    bridge = Bridge(load_settings(config))
    try:
        return await bridge.run_once()
    finally:
        await bridge.close()


@pytest.fixture
def config(tmp_path, dovecot, psa_sim, smtp_sink):
    # A resolve closes its ticket at once: no flap damping (default 120 s since issue 15).
    return write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port,
                        extra=XML_CONFIG + "\n[storm]\nresolve_delay = 0.0\n",
                        imap=imap_section(dovecot))


async def test_open_then_update_and_resolve_with_responses_to_the_xml_address(
        config, dovecot, psa_sim, smtp_sink):
    dovecot.append(mail(tx(OPEN)))
    assert await run_once(config) == 0
    [ticket] = psa_sim.tickets()
    assert ticket["accountId"] == "ACME-001" and ticket["alertType"] == "Disk Space"
    [reply] = smtp_sink.wait_for(1)
    # To the address in the XML, not the sender; BCC to the archive, no Bcc header.
    assert sorted(reply.rcpt_tos) == ["archive@msp.example", "noc-robot@acme.example"]
    assert b"rmm@acme.example" not in b" ".join(r.encode() for r in reply.rcpt_tos)
    assert b"\nBcc:" not in reply.content and b"\nbcc:" not in reply.content
    parsed = message_from_bytes(reply.content)
    parts = {p.get_content_type(): p.get_payload(decode=True) for p in parsed.walk()
             if not p.is_multipart()}
    xml = next(v for k, v in parts.items() if "xml" in k)
    assert b"<outcome>created</outcome>" in xml
    assert ticket["correlationId"].encode() in xml
    assert parsed["Auto-Submitted"] == "auto-replied" or parsed["Auto-Submitted"]
    more = ("<update><alert-id>srv01-disk</alert-id><summary>2 % left</summary></update>"
            "<resolve><alert-id>srv01-disk</alert-id></resolve>")
    dovecot.append(mail(tx(more, tx_id="T-2"), mid="x2"))
    assert await run_once(config) == 0
    [ticket] = psa_sim.tickets()
    assert [h["incidentStatus"] for h in ticket["history"]] == ["OPEN", "UPDATE", "RESOLVED"]
    replies = smtp_sink.wait_for(2)
    second = replies[1].content
    assert b"appended" in second and b"resolved" in second and b"T-2" in second
    assert [o for o, _ in outcomes(config.parent / "mailbridge.db").values()] == ["xml", "xml"]


async def test_wrong_password_is_rejected_and_never_answered(config, dovecot, psa_sim,
                                                             smtp_sink):
    dovecot.append(mail(tx(OPEN, password="guess")))
    dovecot.append(mail(tx(OPEN, password=""), mid="x2"))
    assert await run_once(config) == 0
    assert psa_sim.tickets() == [] and smtp_sink.messages == []
    got = list(outcomes(config.parent / "mailbridge.db").values())
    assert [o for o, _ in got] == ["rejected", "rejected"]
    assert all("password" in r and "guess" not in r for _, r in got)


async def test_action_errors_are_answered_per_action(config, dovecot, psa_sim, smtp_sink):
    bad = OPEN.replace("ACME-001", "NOBODY-999").replace("srv01-disk", "a2")
    dovecot.append(mail(tx(OPEN + bad)))
    assert await run_once(config) == 0
    assert len(psa_sim.tickets()) == 1
    [reply] = smtp_sink.wait_for(1)
    assert b"account-not-found" in reply.content and b"created" in reply.content


async def test_auto_submitted_transaction_is_processed_but_not_answered(config, dovecot,
                                                                        psa_sim, smtp_sink):
    dovecot.append(mail(tx(OPEN), extra_headers="Auto-Submitted: auto-generated\r\n"))
    assert await run_once(config) == 0
    assert len(psa_sim.tickets()) == 1
    assert smtp_sink.messages == []


@pytest.mark.parametrize("body", [
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
    '<mailbridge-transaction version="1"><application>&b;</application></mailbridge-transaction>',
    '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    '<mailbridge-transaction version="1"><application>&e;</application></mailbridge-transaction>',
    "<mailbridge-transaction version='1'>" + "<a>" * 5000 + "</a>" * 5000
    + "</mailbridge-transaction>",
])
async def test_hostile_xml_is_rejected_with_a_reason(config, dovecot, psa_sim, smtp_sink, body):
    dovecot.append(mail(body))
    assert await run_once(config) == 0
    [(outcome, reason)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "rejected" and reason
    assert "root:" not in reason  # no file content leaked into the record
    assert psa_sim.tickets() == [] and smtp_sink.messages == []


async def test_forged_recovery_is_rejected_while_the_authenticated_one_resolves(
        config, dovecot, psa_sim):
    for name in ("01-nagios-problem.eml", "03-nagios-forged-recovery.eml"):
        dovecot.append((SAMPLES / name).read_bytes())
    assert await run_once(config) == 0
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "open"
    dovecot.append((SAMPLES / "04-nagios-recovery.eml").read_bytes())
    assert await run_once(config) == 0
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "closed"
    got = [o for o, _ in outcomes(config.parent / "mailbridge.db").values()]
    assert got == ["created", "rejected", "resolved"]


async def test_a_human_mail_with_an_xml_attachment_is_regular_mail(config, dovecot, psa_sim):
    raw = (b"From: Jane <jane@customer.example>\r\nTo: alerts@msp.example\r\n"
           b"Subject: our export\r\nMessage-ID: <h1@customer.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain"
           b"\r\n\r\nSee attached.\r\n--b\r\nContent-Type: application/xml\r\n"
           b"Content-Disposition: attachment; filename=export.xml\r\n\r\n"
           b"<?xml version='1.0'?><inventory><item/></inventory>\r\n--b--\r\n")
    dovecot.append(raw)
    assert await run_once(config) == 0
    [(outcome, _)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "regular"
