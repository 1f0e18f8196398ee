"""XML that cannot open anything: padded declarations in UTF-7, UTF-16 and UTF-32 with a
DOCTYPE naming a FIFO are refused at once, and the FIFO never gets a reader."""

from __future__ import annotations

import base64
import codecs
import errno
import os
import threading
from pathlib import Path

import pytest

from bridge.parse.xmlapi import XmlApiError, parse_transaction
from bridge.parse.xmlsafe import UnsafeXml, parse_untrusted

PAD = " " * 300  # past the 200 characters the old encoding check looked at


def utf7(text: str) -> bytes:
    """UTF-7 the way an attacker writes it: every markup character base64-shifted, so no
    "<!DOCTYPE" appears in the bytes."""
    out = "".join(c if c.isalnum() or c == " " else
                  "+" + base64.b64encode(c.encode("utf-16-be")).decode().rstrip("=") + "-"
                  for c in text).encode("ascii")
    assert out.decode("utf-7") == text
    return out


def documents(fifo: Path) -> dict[str, bytes]:
    dtd = f'<!DOCTYPE mailbridge-transaction SYSTEM "file://{fifo}">'
    tx = '<mailbridge-transaction version="1"><application>x</application></mailbridge-transaction>'

    def decl(enc: str) -> str:
        return f'<?xml version="1.0"{PAD}encoding="{enc}"?>'

    return {
        "utf-7": decl("UTF-7").encode("ascii") + utf7(dtd + tx),
        "utf-7-whole": decl("UTF-7").encode("ascii") + utf7(dtd) + tx.encode("ascii"),
        "utf-16-bom": codecs.BOM_UTF16_LE + (decl("UTF-16") + dtd + tx).encode("utf-16-le"),
        "utf-16-be-bom": codecs.BOM_UTF16_BE + (decl("UTF-16") + dtd + tx).encode("utf-16-be"),
        "utf-16-nobom": (decl("UTF-16") + dtd + tx).encode("utf-16-le"),
        "utf-32-bom": codecs.BOM_UTF32_LE + (decl("UTF-32") + dtd + tx).encode("utf-32-le"),
        "utf-32-nobom": (decl("UTF-32") + dtd + tx).encode("utf-32-be"),
        "utf-8-declared-utf-7": (decl("UTF-7") + dtd + tx).encode("utf-8"),
        "utf-8-padded": (decl("UTF-8") + dtd + tx).encode("utf-8"),
        "huge-declaration": (f'<?xml version="1.0"{" " * 2000}encoding="UTF-8"?>' + tx).encode(),
    }


def has_reader(fifo: Path) -> bool:
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        assert exc.errno == errno.ENXIO, exc
        return False
    os.close(fd)
    return True


@pytest.fixture
def fifo(tmp_path: Path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    yield path
    # Free a parser stuck on the FIFO (old code) so the test process can end.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
    except OSError:
        pass


@pytest.mark.parametrize("name", sorted(documents(Path("/x"))))
@pytest.mark.parametrize("reader", ["parse_untrusted", "parse_transaction"])
def test_padded_declarations_with_a_fifo_doctype_are_refused_at_once(
        name: str, reader: str, fifo: Path) -> None:
    data = documents(fifo)[name]
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(parse_untrusted(data) if reader == "parse_untrusted"
                           else parse_transaction(data))
        except UnsafeXml as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(1.0)
    assert not has_reader(fifo), f"{name}: the parser opened the FIFO"
    assert not thread.is_alive(), f"{name}: not refused within 1 s"
    [result] = outcome
    assert isinstance(result, (UnsafeXml, XmlApiError)), result
    reason = result.reason if isinstance(result, UnsafeXml) else result.message
    assert reason.startswith(("invalid encoding", "document has a DOCTYPE")), reason
    if name == "huge-declaration":
        assert "longer than 1024 bytes" in reason
    assert not has_reader(fifo)


def test_a_long_but_bounded_declaration_and_utf16_still_parse() -> None:
    tx = '<r><a>é</a></r>'
    ok = [f'<?xml version="1.0"{" " * 900}encoding="ISO-8859-1"?>{tx}'.encode("latin-1"),
          codecs.BOM_UTF16_LE + f'<?xml version="1.0" encoding="UTF-16"?>{tx}'.encode("utf-16-le"),
          codecs.BOM_UTF8 + f'<?xml version="1.0"?>{tx}'.encode()]
    for data in ok:
        assert parse_untrusted(data).findtext("a") == "é"
    with pytest.raises(UnsafeXml, match="UTF-8 byte order mark but another"):
        parse_untrusted(codecs.BOM_UTF8 + b'<?xml version="1.0" encoding="UTF-7"?><r/>')
    with pytest.raises(UnsafeXml, match="DOCTYPE"):
        parse_untrusted(b'<?xml version="1.0" encoding="utf-8"?><!doctype r><r/>')


@pytest.mark.parametrize("name", ["utf-7-whole", "utf-16-bom", "utf-32-bom"])
def test_through_the_pipeline_the_mail_is_refused_and_the_fifo_stays_closed(
        name: str, fifo: Path, tmp_path: Path, psa_sim) -> None:
    from tests.helpers import cli, outcomes, write_config

    config = write_config(tmp_path, psa_sim, extra='\n[xml_api]\nenabled = true\n'
                          'password = "pw-for-the-test"\n')
    part = base64.encodebytes(documents(fifo)[name])
    raw = (b"From: rmm@acme.example\r\nTo: alerts@msp.example\r\nSubject: tx\r\n"
           b"Message-ID: <" + name.encode() + b"@acme.example>\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/xml\r\nContent-Transfer-Encoding: base64\r\n\r\n" + part)
    done = cli("ingest", "--config", str(config), stdin=raw, timeout=10)
    assert done.returncode == 0, done.stderr.decode()
    assert not has_reader(fifo)
    [(outcome, reason)] = outcomes(tmp_path / "mailbridge.db").values()
    if name == "utf-32-bom":  # not even recognised as a transaction: never parsed
        assert outcome == "regular", reason
    else:
        assert outcome == "rejected" and ("encoding" in reason or "DOCTYPE" in reason), reason
    assert psa_sim.tickets() == []
