"""kill -9 at arbitrary moments: every alert still ends in exactly one outcome and one ticket.

The daemon runs as a real process against Dovecot and the simulator (with latency, so kills
land mid-delivery too). It is killed with SIGKILL several times while it works, and started
again; at the end every message has exactly one outcome and every alert key exactly one ticket.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from tests.helpers import MAILBRIDGE, SAMPLES, outcomes, write_config
from tests.test_daemon import imap_section

pytestmark = pytest.mark.dovecot
N = 40


def zabbix(event_id: int, resolved: bool = False) -> bytes:
    raw = (SAMPLES / ("06-zabbix-resolved.eml" if resolved else "05-zabbix-problem.eml")).read_bytes()
    src = b"48213"
    return raw.replace(src, str(event_id).encode()).replace(
        b"Message-ID: <", f"Message-ID: <{'r' if resolved else 'p'}{event_id}.".encode(), 1)


def test_kill_9_at_any_moment_loses_and_doubles_nothing(tmp_path, dovecot, psa_sim):
    # 40 new alerts of one account at once are a burst, which storm control would put on one
    # storm ticket (docs/storm.md); this test counts one ticket per alert, so it lifts the caps.
    config = write_config(tmp_path, psa_sim, imap=imap_section(dovecot, poll_interval=0.5),
                          extra="\n[storm]\nburst_threshold = 1000\naccount_cap = 1000\n"
                                "global_cap = 1000\n")
    psa_sim.control(latency_ms=40)
    for i in range(N):
        dovecot.append(zabbix(50_000 + i))
    kills = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        proc = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        target = len(psa_sim.calls()) + 7
        while proc.poll() is None and len(psa_sim.calls()) < target and \
                len(psa_sim.tickets()) < N:
            time.sleep(0.02)  # polling the simulator's call log
        if len(psa_sim.tickets()) >= N and kills >= 3:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
            break
        proc.kill()  # SIGKILL: no chance to tidy up
        proc.wait(timeout=10)
        kills += 1
    assert kills >= 3
    # Let one clean pass finish whatever the last kill interrupted.
    done = subprocess.run([MAILBRIDGE, "run", "--once", "--config", str(config)],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    tickets = psa_sim.tickets()
    titles = [t["correlationId"] for t in tickets]
    assert len(tickets) == N and len(set(titles)) == N
    got = outcomes(tmp_path / "mailbridge.db")
    assert len(got) == N and all(o == "created" for o, _ in got.values()), got
    assert dovecot.count("INBOX") == 0 and dovecot.count("Processed") == N
