"""A tiny run of the benchmark harness (`python -m bench.run --smoke`): it must work end to end.

The bars are `make bench`'s business, not this test's; here the figures only have to exist and
make sense (every message accounted for, calls received, a report written).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.dovecot import MISSING, dovecot_available

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.dovecot


def test_bench_harness_smoke(tmp_path):
    if not dovecot_available():
        pytest.skip(MISSING)
    report, raw = tmp_path / "performance.md", tmp_path / "results.json"
    done = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--write", str(report),
                           "--json", str(raw)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(raw.read_text())
    assert r["errors"] == {}

    b = r["backlog"]
    assert b["messages"] == 100 and 0 < b["calls"] <= 100 and b["limit_s"] > 0
    assert sum(b["outcomes"].values()) == 100
    assert not {"staged", "processing", "pending", "failed"} & set(b["outcomes"])
    assert 0 < b["max_rss_mib"] < 1024

    lat = r["latency"]
    assert lat["missing"] == 0 and 0 < lat["p50_ms"] <= lat["p99_ms"] < 30_000
    assert lat["idle_ref_p50_ms"] is not None

    sc = r["scaling"]
    assert sc["ratio"] > 0 and [x["rules"] for x in sc["regex"]] == [5, 20]

    m = r["memory"]
    assert m["outcomes"] == {"created": 1} and m["calls"] == 1 and m["peak_rss_mib"] > 0

    st = r["storm"][0]
    assert st["messages"] == 200 and st["storm_tickets"] >= 1 and st["calls"] < 200

    assert r["xml"]["returncode"] == 0 and "unexpected" in r["xml"]["table"]

    rd = r["rulesdiff"]  # the bench itself checks the exit codes and the change count
    assert rd["messages"] == 100 and 0 < rd["changes"] < 100
    assert rd["changed"]["seconds"] > 0 and rd["same"]["seconds"] > 0

    text = report.read_text()
    assert "## Machine" in text and "| nproc |" in text and "dovecot" in text
    for heading in ("1. Backlog drain", "2. Latency under IDLE", "3. Classification",
                    "4. Peak RSS", "5. Storm", "6. `rules diff`"):
        assert heading in text
