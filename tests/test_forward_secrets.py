"""Secrets never leave in forwards (issue 14): the ATES PW and XML passwords are cut out.

Skipped and unmatched mail carrying ATES tokens — in plain text, HTML-escaped, quoted-printable
and base64 — and XML transactions go through the real CLI (`mailbridge ingest`) to a real
aiosmtpd. Every mail the server received is searched, raw and decoded (every MIME part, the
attached originals included), for each password in clear, base64 at all three alignments,
quoted-printable, HTML-escaped, URL- and JSON-encoded form.
"""

from __future__ import annotations

import base64
import html
import json
import quopri
import urllib.parse
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.helpers import SAMPLES, cli, outcomes, write_config

ATES_PW = "Q7x&Pw+9/zK="
XML_PW = "Xml&Secret+Pw/42="
OTHER_XML_PW = "Other<Xml>Pw#77"  # a transaction's own password, not the configured one
SECRETS = (ATES_PW, XML_PW, OTHER_XML_PW)

TOKEN = f"""<Autotask>
<ID name="msp.example"/>
<PW name="{ATES_PW}"/>
<CustomerID source="XYZ Monitoring Application" name="{{customer}}"/>
<AlertID source="XYZ Monitoring Application" name="8932"/>
</Autotask>"""


def xml_transaction(password: str) -> str:
    return f"""<?xml version="1.0" encoding="utf-8"?>
<mailbridge-transaction version="1">
  <application>Acme RMM</application>
  <password>{html.escape(password, quote=False)}</password>
  <respond-to>noc-robot@acme.example</respond-to>
  <transaction-id>T-1</transaction-id>
  <open>
    <alert-id>srv01-disk-c</alert-id>
    <title>Disk C: below 5 % free on SRV01</title>
    <account>ACME-001</account>
    <product-group>servers</product-group>
    <alert-type>Disk Space</alert-type>
  </open>
</mailbridge-transaction>
"""


def _mail(n: int, subject: str, sender: str = "XYZ Monitoring <alerts@xyz-monitor.example>"
          ) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "alerts@msp.example"
    msg["Subject"] = subject
    msg["Message-ID"] = f"<secret-{n}@xyz-monitor.example>"
    msg["Date"] = "Tue, 04 Mar 2025 17:00:00 +0000"
    return msg


def mails() -> list[bytes]:
    healed = "Alert Self Healed - CPU load high on GLOBEX-SQL01"  # the XYZ skip rule
    text = "The condition healed by itself.\n\n" + TOKEN.format(customer="1002") + "\n"
    out = []
    for n, cte in enumerate(("7bit", "quoted-printable", "base64")):
        msg = _mail(n, healed)
        msg.set_content(text, cte=cte)
        out.append(bytes(msg))
    msg = _mail(3, healed)  # HTML only, the token HTML-escaped, quoted-printable
    msg.set_content("<html><body><p>Healed.</p><p style='font-size:1px'>"
                    + html.escape(TOKEN.format(customer="1002")).replace("\n", "<br>\n")
                    + "</p></body></html>", subtype="html", cte="quoted-printable")
    out.append(bytes(msg))
    msg = _mail(4, "XYZ alert: disk full on UNKNOWN-HOST")  # a customer we do not know
    msg.set_content(text.replace("1002", "99999"), cte="base64")
    out.append(bytes(msg))
    msg = _mail(5, "Transaction", "Acme RMM <noc-robot@acme.example>")
    msg.set_content(xml_transaction(XML_PW))
    out.append(bytes(msg))
    msg = _mail(6, "Transaction with its own password", "Acme RMM <noc-robot@acme.example>")
    msg.set_content("See the attached transaction.\n")
    msg.add_attachment(xml_transaction(OTHER_XML_PW).encode(), maintype="application",
                       subtype="xml", filename="tx.xml")
    out.append(bytes(msg))
    return out


def forms(secret: str) -> set[bytes]:
    """Every form of `secret` that would count as a leak."""
    raw = secret.encode()
    found = {raw, html.escape(secret).encode(), html.escape(secret, quote=False).encode(),
             urllib.parse.quote(secret, safe="").encode(),
             urllib.parse.quote_plus(secret).encode(), json.dumps(secret)[1:-1].encode(),
             quopri.encodestring(raw).rstrip(b"\n")}
    for pad in range(3):
        encoded = base64.b64encode(b"\0" * pad + raw)
        start, end = (pad + 2) // 3 * 4, (pad + len(raw)) // 3 * 4
        found.add(encoded[start:end])
    return {f for f in found if len(f) >= 6}


def decoded_parts(data: bytes) -> list[bytes]:
    """Every part's decoded payload, attached messages walked into."""
    out = [data]
    msg = message_from_bytes(data, policy=policy.compat32)
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822" and isinstance(part.get_payload(), list):
            for inner in part.get_payload():
                out += decoded_parts(inner.as_bytes())
            continue
        payload = part.get_payload(decode=True)
        if payload:
            out.append(payload)
            if part.get_content_type() == "application/octet-stream":
                out += decoded_parts(payload)
    return out


def leaks(content: bytes) -> list[str]:
    unfolded = content.replace(b"\r\n", b"").replace(b"\n", b"")
    found = []
    for blob in [content, unfolded, *decoded_parts(content)]:
        for secret in SECRETS:
            for form in forms(secret):
                if form in blob:
                    found.append(f"{secret!r} as {form!r}")
    return found


@pytest.mark.parametrize("xml_enabled", [False, True], ids=["xml-off", "xml-on"])
def test_no_password_leaves_in_any_mail(tmp_path: Path, psa_sim, smtp_sink, xml_enabled):
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port, extra=f"""
[xml_api]
enabled = {str(xml_enabled).lower()}
password = "{XML_PW}"
""")
    text = config.read_text()
    text = text.replace('[routing]\n', '[routing]\nregular_mail = "forward"\n'
                        'regular_forward_to = "helpdesk@msp.example"\n', 1)
    text = text.replace('[ates]\n', f'[ates]\npassword = "{ATES_PW}"\n', 1)
    config.write_text(text)
    for raw in mails():
        assert leaks(raw), "the detector must see the secret in every input"
        done = cli("ingest", "--config", str(config), stdin=raw)
        assert done.returncode == 0, done.stderr.decode()
    got = [o for o, _ in outcomes(tmp_path / "mailbridge.db").values()]
    # With the XML API on, the transaction is carried out and answered; the one with a wrong
    # password is refused (and answered so) instead of forwarded.
    tx = ["xml", "rejected"] if xml_enabled else ["regular", "regular"]
    assert got == ["skipped"] * 4 + ["unmatched"] + tx
    drained = cli("run", "--once", "--config", str(config))
    assert drained.returncode == 0, drained.stderr.decode()
    received = list(smtp_sink.messages)
    kinds = sorted(message_from_bytes(m.content, policy=policy.default)["X-Mailbridge"]
                   for m in received)
    assert kinds == (["forward"] * 5 + ["reply"] if xml_enabled else ["forward"] * 7)
    redacted = 0
    for mail in received:
        assert leaks(mail.content) == [], mail.content[:3000]
        msg = message_from_bytes(mail.content, policy=policy.default)
        if msg["X-Mailbridge"] == "forward" and msg["X-Mailbridge-Redacted"]:
            redacted += 1
            assert "secret removed by mailbridge" in mail.content.decode("latin-1") or \
                b"base64" in mail.content
            assert "replaced by" in msg.get_body(("plain",)).get_content()
    assert redacted == (5 if xml_enabled else 7)


def test_the_redacted_original_keeps_everything_else(tmp_path: Path) -> None:
    from bridge.deliver.redact import REPLACEMENT, redact
    from bridge.parse.mime import parse

    raw = (SAMPLES / "12-datto-ates-alert.eml").read_bytes()
    pw = parse(raw).ates[0].pw
    result = redact(raw, [pw])
    out = b"".join(bytes(s) for s in result.segments)
    assert result.parts == 1 and result.values >= 1
    after = parse(out)
    assert after.ates and after.ates[0].pw == REPLACEMENT
    assert after.ates[0].customer_id == parse(raw).ates[0].customer_id
    # Only the HTML part changed: the headers and the plain-text part are byte for byte.
    cut = raw.index(b"Content-Type: text/html")
    assert out[:cut] == raw[:cut]
