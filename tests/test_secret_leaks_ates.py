"""The ATES password never reaches a ticket: the token is cut out of what title and summary
templates see, however the body was encoded; a token inside a document with a DOCTYPE or
entity declarations is rejected. Real CLI (`mailbridge ingest`), real PSA simulator."""

from __future__ import annotations

import base64
import html
import json
import quopri
import urllib.parse

import pytest

from bridge.parse.ates import cut_tokens, find_tokens
from tests.helpers import cli, outcomes, write_config

PW = "zzZ3zZ/2Z1ZzzZZZ0zoZ9z=="
ATES_ID = "msp.example"
TOKEN = (f'<Autotask>\n<ID name="{ATES_ID}"/>\n<PW name="{PW}"/>\n'
         '<CustomerID source="Datto RMM" name="SOYLENT-DRMM-8841"/>\n'
         '<DeviceID source="Datto RMM" name="SOY-WS-014"/>\n'
         '<AlertID source="Datto RMM" name="{alert}"/>\n</Autotask>')
CONFIG = f'\n[ates.password]\nenv = "MB_TEST_ATES_PW"\n'


def forms(secret: str) -> set[str]:
    """Every way the secret could show up in a request, a mail or a row."""
    raw = secret.encode()
    out = {secret, html.escape(secret), urllib.parse.quote(secret, safe=""),
           urllib.parse.quote_plus(secret), json.dumps(secret)[1:-1],
           quopri.encodestring(raw).decode().strip()}
    for shift in range(3):  # base64 at each of the three alignments
        chunk = base64.b64encode(b"x" * shift + raw).decode()
        out.add(chunk[4 * ((shift + 2) // 3):][:len(raw) * 4 // 3 - 4])
    return {f for f in out if len(f) >= 8}


def mail(body: bytes, cte: str, ctype: str, alert: str) -> bytes:
    return (b"Received: from mail.rmm.example (mail.rmm.example [198.51.100.25])\r\n"
            b"\tby mx.msp.example (Postfix) with ESMTPS id X\r\n\tfor <alerts@msp.example>; "
            b"Tue, 04 Mar 2025 16:00:00 +0000\r\nFrom: Datto RMM <noreply@rmm.example>\r\n"
            b"To: alerts@msp.example\r\nSubject: Datto RMM Alert: Disk usage above 90%\r\n"
            b"Message-ID: <" + alert.encode() + b"@rmm.example>\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: " + ctype.encode() + b"; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n\r\n" + body)


def variants() -> dict[str, bytes]:
    def text(alert: str) -> str:
        return f"Device: SOY-WS-014\nMonitor: Disk usage C: above 90%\n{TOKEN.format(alert=alert)}\n"

    escaped = "<p>Device: SOY-WS-014</p><p>" + html.escape(TOKEN.format(alert="a-html")) + "</p>"
    return {
        "plain": mail(text("a-plain").encode(), "7bit", "text/plain", "a-plain"),
        "escaped-in-plain": mail(html.escape(text("a-esc")).encode(), "7bit", "text/plain",
                                 "a-esc"),
        "quoted-printable": mail(quopri.encodestring(text("a-qp").encode()), "quoted-printable",
                                 "text/plain", "a-qp"),
        "base64": mail(base64.encodebytes(text("a-b64").encode()), "base64", "text/plain",
                       "a-b64"),
        "html-escaped": mail(escaped.encode(), "7bit", "text/html", "a-html"),
    }


def _config_with_id(tmp_path, psa_sim):
    path = write_config(tmp_path, psa_sim, extra=CONFIG)
    text = path.read_text().replace('[ates]\nsources', f'[ates]\nid = "{ATES_ID}"\nsources')
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(variants()))
def test_the_token_never_reaches_the_ticket(name, tmp_path, psa_sim, monkeypatch):
    monkeypatch.setenv("MB_TEST_ATES_PW", PW)
    config = _config_with_id(tmp_path, psa_sim)
    done = cli("ingest", "--config", str(config), stdin=variants()[name])
    assert done.returncode == 0, done.stderr.decode()
    [(outcome, reason)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "created", reason
    sent = json.dumps(psa_sim.calls(None)) + json.dumps(psa_sim.tickets())
    assert "SOY-WS-014" in sent  # the body did reach the ticket …
    for form in forms(PW):
        assert form not in sent, (name, form)  # … without its password
    assert "Autotask" not in sent and "&lt;PW" not in sent


def test_a_token_in_a_document_with_entity_declarations_is_rejected(tmp_path, psa_sim,
                                                                    monkeypatch):
    monkeypatch.setenv("MB_TEST_ATES_PW", PW)
    config = _config_with_id(tmp_path, psa_sim)
    token = TOKEN.format(alert="a-dtd").replace("SOYLENT-DRMM-8841", "&lol9;")
    body = ('<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
            '<!ENTITY lol9 "SOYLENT-DRMM-8841">\n]>\n' + token + "\n").encode()
    done = cli("ingest", "--config", str(config), stdin=mail(body, "7bit", "text/plain", "a-dtd"))
    assert done.returncode == 0, done.stderr.decode()
    [(outcome, reason)] = outcomes(config.parent / "mailbridge.db").values()
    assert outcome == "rejected" and "DOCTYPE or entity declarations" in reason, reason
    assert psa_sim.tickets() == []


def test_cut_tokens_unit() -> None:
    text = f"a\n&lt;Autotask&gt;&lt;PW name=&quot;{PW}&quot;/&gt;&lt;/Autotask&gt;\nb"
    assert cut_tokens(text) == "a\n[ATES token removed]\nb"
    stray = f'x <PW name="{PW}"/> y {PW}'
    assert PW not in cut_tokens(stray, (PW,))
    # An HTML page's own doctype is not a declaration; an internal subset is.
    plain = TOKEN.format(alert="1")
    assert not any("DOCTYPE" in p for t in find_tokens("<!DOCTYPE html>" + plain) for p in t.problems)
    assert any("DOCTYPE" in p for t in find_tokens("<!DOCTYPE html [ ]>" + plain) for p in t.problems)
    assert any("DOCTYPE" in p for t in find_tokens("&lt;!ENTITY x 'y'&gt;" + plain) for p in t.problems)
