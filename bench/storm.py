"""Benchmark 5: an alert storm — `n` new alerts for `sites` sites within one minute.

The alerts (distinct Nagios problems, bench.corpus.storm) arrive, by their INTERNALDATE, within
one minute that ended `age` seconds ago, so the storm windows are judged on those arrival times
and appends held for the coalescing window are due when `mailbridge run --once` drains. The
accounts directory lists the sites. Counted: tickets the simulator holds and sync calls it
received, for the default [storm] settings and any variants given.
"""

from __future__ import annotations

import time
from typing import Any

from bench import corpus
from bench.harness import (BenchSettings, Servers, db_summary, load_mailbox, mailbridge_once,
                           make_config)


def run_one(n: int, sites: int, bs: BenchSettings, age: float = 900.0) -> dict[str, Any]:
    start = time.time() - age - 60
    mails = corpus.storm(n, sites, start, 60.0)
    with Servers(extra_accounts=[(f"SITE-{i:03d}", f"Storm Site {i:03d}")
                                 for i in range(sites)]) as s:
        load_mailbox(s.dovecot, mails)
        accounts = s.tmp / "storm-accounts.csv"
        accounts.write_text(corpus.storm_accounts_csv(sites))
        config = make_config(s.tmp, s.psa, s.dovecot, bs, accounts=accounts)
        child = mailbridge_once(config, s.tmp)
        if child.returncode != 0:
            raise RuntimeError(f"mailbridge run --once exited {child.returncode}:\n"
                               f"{child.stderr_tail}")
        calls = s.sync_calls()
        tickets = s.tickets()
        summary = db_summary(s.tmp / "mailbridge.db")
    storm_tickets = sum(1 for t in tickets if t.get("alertType") == "Alert Storm")
    return {"messages": n, "sites": sites, "settings": bs.describe(), "calls": len(calls),
            "calls_pct": 100.0 * len(calls) / n, "tickets": len(tickets),
            "storm_tickets": storm_tickets, "outcomes": summary["outcomes"],
            "calls_by_status": _count(c.get("incidentStatus") for c in calls),
            "seconds": child.seconds}


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return out


def run(n: int = 5000, sites: int = 20,
        variants: tuple[BenchSettings, ...] = ()) -> list[dict[str, Any]]:
    return [run_one(n, sites, bs) for bs in (BenchSettings(), *variants)]


if __name__ == "__main__":
    import json

    print(json.dumps(run(variants=(BenchSettings(storm={"account_cap": 5}),)), indent=2))
