"""The Maildir source trusts nothing in its folder (issue 13).

Through the real CLI (`mailbridge run --once`, the simulator over HTTP, a real SMTP server
with `regular_mail = "forward"`): a symbolic link in new/ to a secret file is never read — its
content appears in no store file, no log, no PSA call and no mail — a FIFO does not hang the
pass, and an oversize file is staged as its header only and quarantined. Memory: a batch holds
at most BATCH_BYTES of message data.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from bridge.config import MaildirSettings
from bridge.models import RawMessage
from bridge.sources import maildir as maildir_mod
from bridge.sources.maildir import MaildirSource, Refused, header_block, read_message
from tests.helpers import SAMPLES, cli, outcomes, write_config

SECRET = "client_secret = PSA-SECRET-7f3a9c"


@pytest.fixture
def config(tmp_path: Path, psa_sim, smtp_sink) -> Path:
    path = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port, maildir=True)
    text = path.read_text().replace("[routing]\n", '[routing]\nregular_mail = "forward"\nregular_forward_to = "it@msp.example"\n', 1)
    path.write_text(text.replace(f'path = "{tmp_path / "Maildir"}"',
                                 f'path = "{tmp_path / "Maildir"}"\nmax_message_bytes = 4096'))
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "Maildir" / sub).mkdir(parents=True, exist_ok=True)
    return path


def _everything_written(tmp_path: Path) -> bytes:
    """Every file the run left beside the Maildir (store, -wal, -shm, logs) except the secret."""
    blobs = []
    for p in tmp_path.rglob("*"):
        if p.is_file() and not p.is_symlink() and p.name != "secret.conf":
            blobs.append(p.read_bytes())
    return b"\n".join(blobs)


def test_symlink_to_a_secret_file_is_never_staged(tmp_path, config, psa_sim, smtp_sink):
    secret = tmp_path / "secret.conf"
    # Shaped like a mail, so that if it were read it would be staged and forwarded.
    secret.write_text(f"From: a@b.example\nSubject: hello\n\n{SECRET}\n")
    new = tmp_path / "Maildir" / "new"
    os.symlink(secret, new / "1700000000.evil.host")
    (new / "1700000001.good.host").write_bytes((SAMPLES / "20-regular-human.eml").read_bytes())
    done = cli("run", "--once", "--config", str(config), timeout=120)
    assert done.returncode in (0, 3), done.stderr.decode()
    smtp_sink.wait_for(1)  # the human mail is forwarded: the pass really ran
    got = outcomes(tmp_path / "mailbridge.db")
    assert len(got) == 1
    assert (new / "1700000000.evil.host").is_symlink()  # left in place, not moved to cur/
    assert b"symbolic link" in done.stderr + done.stdout
    output = done.stdout + done.stderr
    sent = b"".join(m.content for m in smtp_sink.messages)
    calls = repr(psa_sim.calls()).encode()
    for blob in (output, sent, calls, _everything_written(tmp_path)):
        assert b"PSA-SECRET-7f3a9c" not in blob


def test_oversize_file_is_quarantined_by_its_header(tmp_path, config):
    new = tmp_path / "Maildir" / "new"
    body = b"A" * 100_000
    (new / "1700000002.big.host").write_bytes(
        b"From: monitor@example.com\r\nSubject: huge alert\r\n\r\n" + body)
    done = cli("run", "--once", "--config", str(config), timeout=120)
    assert done.returncode in (0, 3), done.stderr.decode()
    [(outcome, reason)] = outcomes(tmp_path / "mailbridge.db").values()
    assert outcome == "quarantined"
    assert "over the size limit" in reason and "100050" in reason
    from bridge.store import Store
    s = Store(tmp_path / "mailbridge.db")
    try:
        [row] = s.query("SELECT id, oversize FROM messages")
        raw = s.message_raw(row["id"])
    finally:
        s.close()
    assert row["oversize"] == 100_050
    assert raw == b"From: monitor@example.com\r\nSubject: huge alert\r\n\r\n"
    assert not any(new.iterdir())  # staged, so it left new/


def test_fifo_and_directory_in_new_are_refused_without_blocking(tmp_path: Path) -> None:
    new = tmp_path / "new"
    new.mkdir()
    os.mkfifo(new / "fifo")
    (new / "dir").mkdir()
    fd = os.open(new, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in ("fifo", "dir"):
            with pytest.raises(Refused, match="not a regular file"):
                read_message(fd, name, 1 << 20)
        assert read_message(fd, "gone", 1 << 20) is None
    finally:
        os.close(fd)


def test_file_that_grows_past_the_limit_is_read_as_oversize(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"Subject: x\n\nbody\n")
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        small = read_message(fd, "m", 1024)
        assert small is not None and small.oversize is None and small.data.endswith(b"body\n")
        cut = read_message(fd, "m", 5)
        assert cut is not None and cut.oversize == 17 and cut.data == b"Subject: x\n\n"
    finally:
        os.close(fd)
    assert header_block(b"A: b\r\n\r\nbody\n\nmore") == b"A: b\r\n\r\n"
    assert header_block(b"no blank line") == b"no blank line"


def test_batches_are_bounded_in_bytes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(maildir_mod, "BATCH_BYTES", 100_000)
    path = tmp_path / "Maildir"
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True)
    for i in range(10):
        (path / "new" / f"{i}.m.host").write_bytes(b"Subject: x\n\n" + b"x" * 40_000)
    seen: list[int] = []

    async def stage(msgs: list[RawMessage]) -> list[bool]:
        seen.append(sum(len(m.raw) for m in msgs))
        return [True] * len(msgs)

    source = MaildirSource(MaildirSettings(path=path), stage)
    assert asyncio.run(source.drain()) == 10
    assert len(seen) == 5 and max(seen) <= 100_000
    assert len(list((path / "cur").iterdir())) == 10
