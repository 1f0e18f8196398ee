"""HTML-only mail becomes text in linear time with bounded output (issue 13).

The hostile shapes are run in a child process with a hard timeout, so the old quadratic
converter (130 s for the 144 KB mail) fails the test in seconds instead of hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bridge.parse.mime import MimeLimits, parse


def html_mail(html: str) -> bytes:
    return (b"From: monitor@example.com\r\nSubject: alert\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/html; charset=utf-8\r\n\r\n" + html.encode("utf-8"))


CHILD = """
import json, sys, time
from bridge.parse.mime import parse
n = int(sys.argv[1]); shape = sys.argv[2]
html = {"ol": "<ol>" * n + "<li>x" * n,
        "table": "<table>" + "<tr><td>a</td><td>b</td></tr>" * n + "</table>",
        "inline": "<b>" * n + "x" * n}[shape]
raw = (b"From: m@example.com\\r\\nSubject: s\\r\\nContent-Type: text/html\\r\\n\\r\\n"
       + html.encode())
start = time.perf_counter()
msg = parse(raw)
print(json.dumps({"seconds": time.perf_counter() - start, "bytes": len(raw),
                  "body": len(msg.body), "defects": list(msg.defects)}))
"""


def convert_in_child(n: int, shape: str) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(n), shape], capture_output=True,
                          timeout=20, check=True)
    return dict(json.loads(done.stdout))


def test_nested_list_mail_of_144_kb_converts_in_under_a_second() -> None:
    got = convert_in_child(16000, "ol")
    assert 140_000 < int(got["bytes"]) < 150_000  # type: ignore[call-overload]
    assert float(got["seconds"]) < 1.0  # type: ignore[arg-type]
    assert any("nested deeper" in d for d in got["defects"])  # type: ignore[union-attr]


def test_nested_list_mail_of_1_mb_converts_in_under_a_second() -> None:
    got = convert_in_child(120000, "ol")
    assert int(got["bytes"]) > 1_000_000  # type: ignore[call-overload]
    assert float(got["seconds"]) < 1.0  # type: ignore[arg-type]


def test_big_table_and_deep_inline_markup_stay_linear() -> None:
    for n, shape in ((20000, "table"), (100000, "inline")):
        got = convert_in_child(n, shape)
        assert float(got["seconds"]) < 1.0, (shape, got)  # type: ignore[arg-type]


def test_alert_html_keeps_its_words_on_their_lines() -> None:
    msg = parse(html_mail(
        "<html><head><style>p {color: red}</style><script>alert('no')</script></head><body>"
        "<h1>PROBLEM</h1><p>Host <b>web01</b> is DOWN &amp; unreachable</p>"
        "<ul><li>Service: HTTP</li><li>State: CRITICAL</li></ul>"
        "<table><tr><td>Error</td><td>0x800f0922</td></tr></table></body></html>"))
    lines = msg.body.splitlines()
    assert "PROBLEM" in lines
    assert "Host web01 is DOWN & unreachable" in lines
    assert "Service: HTTP" in lines and "State: CRITICAL" in lines
    assert "0x800f0922" in msg.body
    assert "color" not in msg.body and "alert(" not in msg.body


def test_body_is_bounded_by_max_body_chars() -> None:
    limits = MimeLimits(max_body_chars=10_000)
    msg = parse(html_mail("<p>" + "word " * 50_000 + "</p>"), limits=limits)
    assert len(msg.body) == 10_000
    assert "body cut at 10000 characters" in msg.defects
    plain = parse(b"Subject: s\r\n\r\n" + b"line\r\n" * 5000, limits=limits)
    assert len(plain.body) == 10_000


def test_default_body_bound_is_one_mebibyte() -> None:
    start = time.perf_counter()
    msg = parse(html_mail("<div>alert</div>" * 100_000))  # 1.6 MB of HTML, cut at 512 Ki
    assert len(msg.body) <= 1024 * 1024
    assert time.perf_counter() - start < 2.0
    assert MimeLimits().max_body_chars == 1024 * 1024


def test_html_with_nul_bytes_and_garbage_does_not_lose_the_mail() -> None:
    msg = parse(html_mail("\x00<p>Disk \x00full</p><<<>>></broken"))
    assert "Disk full" in msg.body
    assert msg.parse_error is None


def test_nested_list_mails_go_through_ingest_in_seconds(tmp_path, psa_sim) -> None:
    """The real CLI and store: each hostile mail gets its outcome at once and the alert after it
    still becomes a ticket (before, the 144 KB mail alone held the store for 130 s)."""
    from tests.helpers import SAMPLES, cli, outcomes, write_config

    config = write_config(tmp_path, psa_sim)
    for n in (16000, 120000):
        started = time.monotonic()
        done = cli("ingest", "--config", str(config),
                   stdin=html_mail("<ol>" * n + "<li>x" * n), timeout=30)
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        assert time.monotonic() - started < 10
    done = cli("ingest", "--config", str(config),
               stdin=(SAMPLES / "05-zabbix-problem.eml").read_bytes(), timeout=30)
    assert done.returncode == 0
    got = list(outcomes(tmp_path / "mailbridge.db").values())
    assert len(got) == 3 and got[2][0] == "created"
    assert all(o is not None and o != "quarantined" for o, _ in got[:2])
    assert len(psa_sim.tickets()) == 1
