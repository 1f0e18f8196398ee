"""No mail loop (issue 14): the forward address delivers back into the watched mailbox.

A real Dovecot, the daemon, the PSA simulator and an aiosmtpd relay whose handler appends every
message it accepts into the Dovecot INBOX by IMAP APPEND — the forward address is an alias of
the mailbox mailbridge reads. With `regular_mail = "forward"` and, in the mailbox, one human
mail, a bounce, an auto-reply, our own returning forward and mail from the watched mailbox's
own address, plus the same loop signs on a mail a detect rule matches (a Zabbix problem): the
relay receives exactly one forward (of the human mail), no ticket is opened, and the mailbox
count is stable over the next three polls.
"""

from __future__ import annotations

import re

import pytest

from bridge.deliver.mailcompose import compose_forward, to_bytes
from bridge.parse.mime import parse
from tests.fixtures.smtp_scripted import ScriptedSink
from tests.helpers import SAMPLES, outcomes, write_config
from tests.test_daemon import Running, imap_section, until

pytestmark = pytest.mark.dovecot

LOOP_ADDRESS = "helpdesk-alias@msp.example"  # not listed anywhere: it just delivers back


def sample(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def with_headers(raw: bytes, n: int, *headers: str) -> bytes:
    """`raw` with a fresh Message-ID and `headers` put on top (as an MTA adds them)."""
    raw = re.sub(rb"(?im)^Message-ID:.*$", f"Message-ID: <loop-{n}@test.example>".encode(),
                 raw, count=1)
    return "".join(h + "\r\n" for h in headers).encode() + raw


# Only its report type gives this one away (the others carry the sender and header signs).
BOUNCE = b"""From: Mail Delivery System <bounces@mx.acme.example>
To: alerts@msp.example
Subject: Undelivered Mail Returned to Sender
Message-ID: <bounce-1@mx.acme.example>
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="dsn"

--dsn
Content-Type: text/plain

This is the mail system at host mx.acme.example. Your message could not be delivered.

--dsn
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.acme.example
Final-Recipient: rfc822; nobody@acme.example
Action: failed
Status: 5.1.1

--dsn--
"""

AUTO_REPLY = b"""From: Bob Builder <bob@acme.example>
To: alerts@msp.example
Subject: Out of office: Printer on the 2nd floor is jammed again
Message-ID: <ooo-1@acme.example>
Auto-Submitted: auto-replied
X-Autoreply: yes
Content-Type: text/plain

I am out of the office until Monday.
"""


async def test_a_forward_to_an_alias_of_the_watched_mailbox_does_not_loop(
        tmp_path, dovecot, psa_sim):
    from_address = "alerts@msp.example"
    own_forward = to_bytes(compose_forward(
        sample("19-nagios-unknown-account.eml"), parse(sample("19-nagios-unknown-account.eml")),
        LOOP_ADDRESS, "regular: earlier run", from_address))
    zabbix = sample("05-zabbix-problem.eml")
    mailbox = [
        sample("20-regular-human.eml"),
        BOUNCE,
        AUTO_REPLY,
        own_forward,
        # The watched mailbox's own address is ours without being listed anywhere.
        with_headers(sample("20-regular-human.eml").replace(
            b"From: Jane Doe <jane.doe@acme.example>", f"From: {dovecot.user}".encode()), 1),
        # A Zabbix problem the detect rules match, with each loop sign on it.
        with_headers(zabbix, 2, "Return-Path: <>"),
        with_headers(zabbix, 3, "Auto-Submitted: auto-replied"),
        with_headers(zabbix, 4, "X-Mailbridge: forward"),
        with_headers(zabbix.replace(b"From: Zabbix <zabbix@zabbix.msp.example>",
                                    b"From: Zabbix <MAILER-DAEMON@zabbix.msp.example>"), 5),
    ]
    with ScriptedSink(deliver=dovecot.append_imap) as sink:
        config = write_config(tmp_path, psa_sim, smtp_port=sink.port,
                              imap=imap_section(dovecot, poll_interval=0.5, idle=False))
        config.write_text(config.read_text().replace(
            "[routing]\n", f'[routing]\nregular_mail = "forward"\n'
            f'regular_forward_to = "{LOOP_ADDRESS}"\n', 1))
        for raw in mailbox:
            dovecot.append(raw)
        total = len(mailbox) + 1  # and our forward of the human mail, delivered back
        async with Running(config) as r:
            await until(lambda: len(outcomes(tmp_path / "mailbridge.db")) == total,
                        timeout=30, what="every message, the returned forward included")
            state = r.bridge.runtime.sources["imap:alerts"]
            counts = []
            for _ in range(3):  # the next three polls
                before = state.last_poll
                await until(lambda: state.last_poll != before, timeout=10, what="a poll")
                counts.append(dovecot.count("INBOX") + dovecot.count("Processed"))
    assert counts == [total] * 3
    assert sink.count() == 1
    [forward] = sink.messages
    msg = forward.message
    assert forward.rcpt_tos == (LOOP_ADDRESS,)
    assert msg["Subject"] == "[mailbridge] Fwd: Printer on the 2nd floor is jammed again"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Mailbridge"] == "forward"
    assert psa_sim.calls() == [] and psa_sim.tickets() == []
    got = outcomes(tmp_path / "mailbridge.db")
    assert sorted(o for o, _ in got.values()) == ["regular"] + ["rejected"] * (total - 1)
    reasons = " | ".join(r or "" for o, r in got.values() if o == "rejected")
    for expected in ("mailbridge itself", "own addresses", "bounce", "auto-reply",
                     "multipart/report", "empty Return-Path"):
        assert expected in reasons, reasons
