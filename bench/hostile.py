"""Benchmark 1h: the backlog with budget-breaking mail in it.

The same backlog as benchmark 1, drained twice back to back by `mailbridge run --once`: clean,
then with `breakers` extra mails that break a worker's budget (half run away — the time budget
— and half allocate without end — the memory budget). The breakers use the worker's test-only
hooks (MAILBRIDGE_TEST_HOOKS, docs/hardening.md): since HTML converts in linear time, no mail
we know of breaks a budget honestly, and the point here is what a breaker costs the rest.

Pass: the hostile drain takes at most the clean drain + breakers × wall ÷ workers + 15 %, the
breakers and nothing else are quarantined.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench import corpus
from bench.harness import (BenchSettings, Servers, child_env, db_summary, load_mailbox,
                           make_config, mailbridge_args, run_child)

HOOKS = "hang=X-Bench-Hang;hog=X-Bench-Hog"
WALL, WORKERS = 5.0, max(1, (os.cpu_count() or 1) - 1)  # the default of [processing]


def breaker(i: int, at: float) -> corpus.Mail:
    marker = "X-Bench-Hang" if i % 2 == 0 else "X-Bench-Hog"
    raw = (f"{marker}: yes\r\nFrom: zabbix@zabbix.msp.example\r\nTo: alerts@msp.example\r\n"
           f"Subject: Problem: breaker {i} [Initech]\r\nMessage-ID: <breaker{i}@bench>\r\n"
           f"Content-Type: text/plain\r\n\r\nHost: breaker{i}\r\nOriginal problem ID: 9{i:04d}\r\n")
    return corpus.Mail(raw.encode(), at, "breaker", f"breaker{i}", "problem")


def drain(n: int, breakers: int, bs: BenchSettings) -> dict[str, Any]:
    now = time.time()
    mails = corpus.backlog(n, now - 86400, now - 600)
    step = max(1, len(mails) // (breakers + 1))
    for i in range(breakers):
        at = mails[(i + 1) * step].at
        mails.insert((i + 1) * step + i, breaker(i, at))
    with Servers(latency_ms=20) as s:
        load_mailbox(s.dovecot, mails)
        config = make_config(s.tmp, s.psa, s.dovecot, bs)
        config.write_text(config.read_text() + f"\n[processing]\nwall_seconds = {WALL}\n"
                          f"workers = {WORKERS}\n")
        child = run_child(mailbridge_args("run", "--once", "--config", str(config)), s.tmp,
                          env=child_env() | {"MAILBRIDGE_TEST_HOOKS": HOOKS})
        summary = db_summary(s.tmp / "mailbridge.db")
    if child.returncode != 0:
        raise RuntimeError(f"run --once exited {child.returncode}:\n{child.stderr_tail}")
    return {"messages": len(mails), "seconds": child.seconds,
            "quarantined": summary["outcomes"].get("quarantined", 0),
            "max_rss_mib": child.max_rss_kib / 1024, "tree_rss_mib": child.tree_rss_kib / 1024}


def run(n: int = 10_000, breakers: int = 10, bs: BenchSettings | None = None) -> dict[str, Any]:
    bs = bs or BenchSettings()
    clean = drain(n, 0, bs)
    hostile = drain(n, breakers, bs)
    bound = (clean["seconds"] + breakers * WALL / WORKERS) * 1.15
    return {"clean": clean, "hostile": hostile, "bound_s": bound, "breakers": breakers,
            "wall_s": WALL, "workers": WORKERS,
            "ok": hostile["seconds"] <= bound and hostile["quarantined"] == breakers
            and clean["quarantined"] == 0}


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser()
    p.add_argument("-n", type=int, default=10_000)
    p.add_argument("--breakers", type=int, default=10)
    args = p.parse_args()
    print(json.dumps(run(args.n, args.breakers), indent=2))
