"""Benchmark 4b: peak RSS while one message with a large attachment goes through.

Two `mailbridge run --once` children against the same setup: one drains a mailbox holding one
small alert, the other a mailbox holding one alert of `size` bytes (the same Nagios problem
with a base64 attachment, under the default 64 MiB `max_message_bytes`, so it is downloaded,
staged, parsed and turned into a ticket like any other). The growth is the difference of the
two children's peak RSS (wait4), which cancels interpreter, imports and rules.
"""

from __future__ import annotations

import time
from typing import Any

from bench import corpus
from bench.harness import BenchSettings, Servers, db_summary, mailbridge_once, make_config


def _one(raw: bytes, bs: BenchSettings) -> tuple[Any, dict[str, Any], int]:
    with Servers() as s:
        s.dovecot.append(raw, date=time.time() - 600)
        config = make_config(s.tmp, s.psa, s.dovecot, bs)
        child = mailbridge_once(config, s.tmp)
        if child.returncode != 0:
            raise RuntimeError(f"mailbridge run --once exited {child.returncode}:\n"
                               f"{child.stderr_tail}")
        return child, db_summary(s.tmp / "mailbridge.db"), len(s.sync_calls())


def run(size: int = 50 * 1024 * 1024, bs: BenchSettings | None = None) -> dict[str, Any]:
    bs = bs or BenchSettings()
    small_raw, _ = corpus.latency_alert(1, time.time() - 600, tag="small")
    big_raw = corpus.big_attachment(size, time.time() - 600)
    small, _, _ = _one(small_raw, bs)
    big, summary, calls = _one(big_raw, bs)
    growth = (big.max_rss_kib - small.max_rss_kib) * 1024
    return {"size": len(big_raw), "baseline_rss_mib": small.max_rss_kib / 1024,
            "peak_rss_mib": big.max_rss_kib / 1024, "growth_mib": growth / 2**20,
            "growth_x": growth / len(big_raw), "seconds": big.seconds,
            "outcomes": summary["outcomes"], "calls": calls}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
