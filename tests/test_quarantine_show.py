"""`quarantine show` and the dashboard read stored mail with the pipeline's bounded decoder
(issue 13): hostile charsets, deep nesting and quadratic codecs answer quickly, never a traceback.

Each mail is stored as received and shown through the real CLI, under a subprocess timeout so
that the old decoder (35 s for the punycode body) fails rather than hangs the suite.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.models import RawMessage
from bridge.operator import views
from bridge.store import Store
from tests.helpers import MAILBRIDGE, write_config


def idna_mail() -> bytes:
    long_label = b"x" * 200  # a label over 63 characters: the idna codec raises UnicodeError
    return (b"From: monitor@example.com\r\nSubject: =?idna?q?" + long_label + b"?= and"
            b" =?undefined?q?boom?=\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
            b"--b\r\nContent-Type: text/plain; charset=idna\r\n\r\n" + long_label + b".example\r\n"
            b"--b\r\nContent-Type: text/plain; charset=undefined\r\n\r\nDisk full on SRV01\r\n"
            b"--b\r\nContent-Type: application/octet-stream;"
            b" name=\"=?undefined?q?x?=.bin\"\r\n\r\nxx\r\n--b--\r\n")


def deep_mail(depth: int = 1000) -> bytes:
    head = b"From: monitor@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    opening = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                       for i in range(depth))
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth + 1)))
    return (head + b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + opening
            + b"--b%d\r\nContent-Type: text/plain\r\n\r\ninnermost\r\n" % depth + closing)


def punycode_mail(size: int = 400_000) -> bytes:
    # All after the last "-" is punycode's extended part: each character is one insertion
    # into the decoded list, quadratic in the body (80 KB 0.4 s, 400 KB tens of seconds).
    body = b"-" + b"ba" * (size // 2)
    return (b"From: monitor@example.com\r\nSubject: puny\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=punycode\r\n\r\n" + body)


MAILS = {"idna": idna_mail, "deep": deep_mail, "punycode": punycode_mail}


@pytest.fixture
def stored(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    config = write_config(tmp_path, SimpleNamespace(url="http://127.0.0.1:9"))
    store = Store(tmp_path / "mailbridge.db")
    try:
        ids = {name: store.stage(RawMessage(make(), "pipe", None, time.time())).id
               for name, make in MAILS.items()}
    finally:
        store.close()
    return config, ids


@pytest.mark.parametrize("name", list(MAILS))
def test_quarantine_show_answers_quickly_without_a_traceback(stored, name: str) -> None:
    config, ids = stored
    started = time.monotonic()
    done = subprocess.run([MAILBRIDGE, "quarantine", "--config", str(config), "show",
                           str(ids[name])], capture_output=True, timeout=30)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Traceback" not in done.stderr + done.stdout
    assert elapsed < 2.0, f"{name}: {elapsed:.1f} s"
    out = done.stdout.decode()
    if name == "idna":
        assert "Disk full on SRV01" in out  # an undecodable label falls back, the text stays
    if name == "deep":
        assert "multipart" in out or "deep" in out


@pytest.mark.parametrize("name", list(MAILS))
def test_views_of_hostile_mail_are_bounded_in_process(tmp_path: Path, name: str) -> None:
    store = Store(tmp_path / "db")
    try:
        mid = store.stage(RawMessage(MAILS[name](), "pipe", None, time.time())).id
        started = time.perf_counter()
        shown = views.quarantine_show(store, mid)
        listed = views.messages_view(store, 50)  # what the dashboard shows
        assert time.perf_counter() - started < 2.0
    finally:
        store.close()
    assert shown is not None and listed[0]["id"] == mid
    json.dumps(shown)  # JSON-ready: no surrogates or bytes slipped through
    texts = [p.get("text") or "" for p in shown["parts"]]
    assert sum(len(t) for t in texts) <= 65536
    if name == "punycode":
        assert texts and texts[0].startswith("-babababa")  # read as text, never as punycode
    if name == "idna":
        # Forbidden codecs are never run: the words are read as plain text instead.
        assert ("Subject", "x" * 200 + " and boom") in shown["headers"]
        assert texts[:2] == ["x" * 200 + ".example", "Disk full on SRV01"]
        assert shown["parts"][2]["filename"] == "x.bin"
    if name == "deep":
        assert "innermost" not in json.dumps(shown)  # nesting is cut at max_depth, no recursion
