"""Forwards of big mail (issue 13): size refusals and the memory a 60 MB forward costs.

A relay refuses a message for its size in three ways: its EHLO announces a SIZE the message is
over, it answers the declared SIZE at MAIL FROM with 552 5.3.4 (Microsoft 365), or it takes the
data and answers 552 after DATA (Gmail, Microsoft 365 without SIZE). Each time the forward is
sent again at once without the original, saying why; the row is done, never retried for ever
and never dead. Real CLI (`mailbridge ingest`), real aiosmtpd.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from email.message import EmailMessage
from pathlib import Path

import pytest

from tests.fixtures.smtp_scripted import ScriptedSink
from tests.helpers import ROOT, cli, outcomes, write_config

FORWARD = """
[routing]
regular_mail = "forward"
regular_forward_to = "helpdesk@msp.example"
"""


def _config(tmp_path: Path, psa_sim, port: int) -> Path:
    config = write_config(tmp_path, psa_sim, smtp_port=port)
    # write_config has its own [routing]; add the forward keys to it.
    text = config.read_text().replace(
        '[routing]\n', '[routing]\nregular_mail = "forward"\n'
        'regular_forward_to = "helpdesk@msp.example"\n', 1)
    config.write_text(text)
    return config


def big_human_mail(size: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane.doe@acme.example>"
    msg["To"] = "alerts@msp.example"
    msg["Subject"] = "The scan you asked for"
    msg["Message-ID"] = "<big.scan.1@acme.example>"
    msg.set_content("Hi team,\n\nhere is the scan of the contract.\n\nJane\n")
    msg.add_attachment(os.urandom(size), maintype="application", subtype="pdf",
                       filename="scan.pdf")
    return bytes(msg)


def _outbox(db: Path) -> list[dict]:
    from bridge.store import Store

    store = Store(db)
    try:
        return store.query("SELECT state, attempts, last_error FROM outbox")
    finally:
        store.close()


@pytest.mark.parametrize("where", ["ehlo-size", "mail-from", "after-data"])
def test_a_size_refusal_sends_the_forward_without_the_original(tmp_path, psa_sim, where):
    limit = 512 * 1024
    sink = {"ehlo-size": ScriptedSink(advertise_size=limit),
            "mail-from": ScriptedSink(advertise_size=100 * 1024 * 1024, refuse_mail_over=limit),
            "after-data": ScriptedSink(refuse_data_over=limit)}[where]
    with sink:
        config = _config(tmp_path, psa_sim, sink.port)
        raw = big_human_mail(2 * 1024 * 1024)
        done = cli("ingest", "--config", str(config), stdin=raw)
        assert done.returncode == 0, done.stderr.decode()
        [received] = sink.wait_for(1)
        # A second run has nothing left to send: the size refusal was answered, not parked.
        again = cli("run", "--once", "--config", str(config))
        assert again.returncode == 0, again.stderr.decode()
        assert sink.count() == 1
    expected_refusals = {"ehlo-size": [], "mail-from": ["MAIL"], "after-data": ["DATA"]}[where]
    assert [r.split()[0] for r in sink.refusals] == expected_refusals
    msg = received.message
    assert received.rcpt_tos == ("helpdesk@msp.example",)
    assert msg["X-Mailbridge-Original"] == "omitted"
    assert msg["Auto-Submitted"] == "auto-generated" and msg["X-Mailbridge"] == "forward"
    text = msg.get_content()
    assert "NOT attached" in text and "too big" in text
    assert ("552" in text) if where != "ehlo-size" else ("EHLO SIZE" in text)
    assert len(received.content) < 64 * 1024
    assert [row["state"] for row in _outbox(tmp_path / "mailbridge.db")] == ["done"]
    [(outcome, _)] = outcomes(tmp_path / "mailbridge.db").values()
    assert outcome == "regular"


def test_a_forward_that_fits_still_carries_its_original(tmp_path, psa_sim):
    with ScriptedSink(advertise_size=8 * 1024 * 1024, refuse_data_over=8 * 1024 * 1024) as sink:
        config = _config(tmp_path, psa_sim, sink.port)
        raw = big_human_mail(2 * 1024 * 1024)
        assert cli("ingest", "--config", str(config), stdin=raw).returncode == 0
        [received] = sink.wait_for(1)
    assert sink.refusals == []
    [original] = list(received.message.iter_attachments())
    assert original.get_content_type() == "message/rfc822"
    # The original arrives byte for byte (line ends as SMTP carries them: CRLF).
    assert raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") in received.content


# -- memory -----------------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import asyncio, gc, json, os, sys
    from bridge.config import settings_from_dict
    from bridge.deliver import smtp as mail
    from bridge.deliver.mail_target import MailTarget
    from bridge.deliver.settle import TargetEnv
    from bridge.models import RawMessage
    from bridge.store import Store
    from bridge.store.db import AsyncStore, OutboxRow

    db, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(key)

    def mail_of(n):
        import base64
        head = (b"From: Jane Doe <jane.doe@acme.example>\\r\\nTo: alerts@msp.example\\r\\n"
                b"Subject: scan\\r\\nMessage-ID: <m%d@acme.example>\\r\\nMIME-Version: 1.0\\r\\n"
                b"Content-Type: multipart/mixed; boundary=b\\r\\n\\r\\n--b\\r\\n"
                b"Content-Type: text/plain\\r\\n\\r\\nthe scan\\r\\n--b\\r\\n"
                b"Content-Type: application/pdf\\r\\nContent-Transfer-Encoding: base64\\r\\n\\r\\n"
                % n)
        body = base64.encodebytes(os.urandom(n * 3 // 4)).replace(b"\\n", b"\\r\\n")
        return head + body + b"--b--\\r\\n"

    settings = settings_from_dict({"store": {"path": db}, "smtp": {
        "host": "127.0.0.1", "port": port, "security": "none",
        "from_address": "alerts@msp.example"}})
    store = Store(db)
    ids = [r.id for r in store.stage_many([RawMessage(mail_of(n), "pipe", None, 0.0)
                                           for n in (4096, size)])]
    sizes = [len(store.message_raw(i)) for i in ids]
    gc.collect()

    target = MailTarget(TargetEnv(AsyncStore(store), settings, lambda: 0.0, lambda: "cid"),
                        mail.SmtpSender(settings.smtp))

    async def forward(message_ref):
        row = OutboxRow(1, "smtp", "k", message_ref, "forward", None,
                        {"type": "forward", "to": "helpdesk@msp.example", "note": "regular"}, 0)
        result, _ = await target.forward(row)
        return result

    first = asyncio.run(forward(ids[0]))   # warm up every code path on a small one
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")   # reset VmHWM to the current RSS
    base = status("VmRSS")
    result = asyncio.run(forward(ids[1]))
    peak = status("VmHWM")
    print(json.dumps({"size": sizes[1], "base": base, "peak": peak,
                      "verdicts": [first.verdict, result.verdict]}))
""")


def test_a_60mb_forward_grows_peak_rss_by_at_most_twice_its_size(tmp_path):
    size = 60 * 1024 * 1024
    with ScriptedSink(advertise_size=200 * 1024 * 1024) as sink:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "m.db"),
                               str(sink.port), str(size)], capture_output=True, env=env,
                              timeout=300)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        got = json.loads(done.stdout)
        assert got["verdicts"] == ["ok", "ok"]
        messages = sink.wait_for(2)
    growth = got["peak"] - got["base"]
    print(f"60 MB forward: size {got['size']}, peak RSS growth {growth / 2**20:.1f} MiB "
          f"({growth / got['size']:.2f}x)")
    assert got["size"] >= size
    assert growth <= 2 * got["size"], f"peak RSS grew {growth / got['size']:.2f}x the message"
    # The forward carried the whole original.
    assert len(messages[1].content) > got["size"]
