"""Benchmark 1 (and 4a): drain a backlog of mixed alert mail into the simulator.

`n` messages (bench.corpus.backlog: arrivals spread over the past day, so coalescing windows are
judged as they happened and nothing is held for later) are written into Dovecot's Maildir.
Dovecot indexes them and the page cache is warmed by one untimed bare fetch; then
1. the limit: a bare aioimaplib loop UID FETCHes all of them (batches of 200), timed;
2. `mailbridge run --once` in a child process, timed from spawn to exit, its peak RSS from wait4.
Afterwards every message must have an outcome, INBOX must be empty, and the simulator's
received sync calls are counted. Phases (stage / process / deliver) come from the store.
"""

from __future__ import annotations

import time
from typing import Any

from bench import corpus
from bench.harness import (BenchSettings, Servers, bare_fetch, db_summary, load_mailbox,
                           mailbridge_once, make_config)


def run(n: int = 10_000, latency_ms: int = 20, bs: BenchSettings | None = None,
        limit_runs: int = 3) -> dict[str, Any]:
    bs = bs or BenchSettings()
    now = time.time()
    mails = corpus.backlog(n, now - 86400, now - 600)
    with Servers(latency_ms=latency_ms) as s:
        t = time.perf_counter()
        load_mailbox(s.dovecot, mails)
        load_s = time.perf_counter() - t
        bare_fetch(s.dovecot)  # untimed: Dovecot indexes the new files, the page cache warms
        limits = [bare_fetch(s.dovecot) for _ in range(limit_runs)]
        limit_s, fetched = min(limits)
        if fetched != n:
            raise RuntimeError(f"the bare fetch saw {fetched} of {n} messages")
        config = make_config(s.tmp, s.psa, s.dovecot, bs)
        child = mailbridge_once(config, s.tmp, stages=True)
        if child.returncode not in (0,):
            raise RuntimeError(f"mailbridge run --once exited {child.returncode}:\n"
                               f"{child.stderr_tail}")
        calls = s.sync_calls()
        tickets = s.tickets()
        left = s.dovecot.count("INBOX")
        summary = db_summary(s.tmp / "mailbridge.db")
    if summary["messages"] != n or left:
        raise RuntimeError(f"not drained: {summary['messages']} staged of {n}, {left} left")
    undone = {k: v for k, v in summary["outcomes"].items()
              if k in ("staged", "processing", "pending")}
    if undone:
        raise RuntimeError(f"messages without an outcome: {undone}")
    phases = {
        "stage": summary["staged_last"] - summary["staged_first"],
        "process_end": (summary["decided_last"] or 0) - summary["staged_first"],
        "deliver_end": (summary["sent_last"] or 0) - summary["staged_first"],
    }
    return {
        "messages": n, "bytes": sum(len(m.raw) for m in mails), "load_s": load_s,
        "seconds": child.seconds, "rate": n / child.seconds,
        "limit_s": limit_s, "limit_rate": n / limit_s, "ratio": child.seconds / limit_s,
        "max_rss_mib": child.max_rss_kib / 1024,
        "tree_rss_mib": child.tree_rss_kib / 1024,
        "child_cpu_s": child.cpu_s, "simulator_cpu_s": child.host_cpu_s, "calls": len(calls),
        "calls_by_status": _count(c.get("incidentStatus") for c in calls),
        "tickets": len(tickets), "outcomes": summary["outcomes"], "phases": phases,
        "settings": bs.describe(), "concurrency": bs.concurrency, "latency_ms": latency_ms,
        "mix": _count(m.kind for m in mails), "stages": child.stages,
        "timeline": summary["timeline"],
    }


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=BenchSettings().concurrency)
    p.add_argument("--latency", type=int, default=20)
    a = p.parse_args()
    print(json.dumps(run(a.n, a.latency, BenchSettings(concurrency=a.concurrency)), indent=2))
