"""Benchmark 6: `mailbridge rules diff` over a day of staged mail (issue 19: < 30 s for 10,000).

The history is real: `n` messages of the backlog mix (bench.corpus) go through Dovecot and
`mailbridge run --once` into the store and the PSA simulator. Then, each in a child process
(wall time, CPU, peak RSS):
1. a candidate that moves the Zabbix alerts to another alert type: both replays run, and the
   diff must name exactly the Zabbix messages (exit 1);
2. an unchanged copy: the candidate classifies every message alike, so one replay (exit 0).
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from typing import Any

from bench import corpus
from bench.harness import (ROOT, BenchSettings, Servers, load_mailbox, mailbridge_args,
                           mailbridge_once, make_config, run_child)


def run(n: int = 10_000) -> dict[str, Any]:
    now = time.time()
    mails = corpus.backlog(n, now - 86400, now - 600)
    with Servers() as s:
        load_mailbox(s.dovecot, mails)
        config = make_config(s.tmp, s.psa, s.dovecot, BenchSettings())
        once = mailbridge_once(config, s.tmp)
        if once.returncode != 0:
            raise RuntimeError(f"run --once exited {once.returncode}:\n{once.stderr_tail}")
        db = sqlite3.connect(str(s.tmp / "mailbridge.db"))
        try:
            staged = db.execute("SELECT count(*) FROM messages").fetchone()[0]
            zabbix = db.execute("SELECT count(*) FROM messages WHERE rule ="
                                " '20-zabbix.toml:zabbix'").fetchone()[0]
        finally:
            db.close()
        changed_dir, same_dir = s.tmp / "rules-changed", s.tmp / "rules-same"
        shutil.copytree(ROOT / "rules", changed_dir)
        shutil.copytree(ROOT / "rules", same_dir)
        rules = changed_dir / "20-zabbix.toml"
        rules.write_text(rules.read_text().replace('alert_type = "Problem"',
                                                   'alert_type = "Trigger"'))
        runs = {}
        for name, candidate, expected in (("changed", changed_dir, 1), ("same", same_dir, 0)):
            child = run_child(mailbridge_args("rules", "diff", "--config", str(config),
                                              "--rules", str(candidate), "--since", "2d"),
                              s.tmp)
            if child.returncode != expected:
                raise RuntimeError(f"rules diff ({name}) exited {child.returncode}, not"
                                   f" {expected}:\n{child.stderr_tail}")
            if name == "changed" and f"{zabbix:,} message(s) change" not in _head(s.tmp):
                raise RuntimeError(f"rules diff did not name the {zabbix} Zabbix messages")
            runs[name] = {"seconds": child.seconds, "cpu_s": child.cpu_s,
                          "max_rss_mib": child.max_rss_kib / 1024}
    return {"messages": staged, "changes": zabbix, "changed": runs["changed"],
            "same": runs["same"]}


def _head(tmp: Any) -> str:
    """The first lines of the newest child log (run_child keeps only the tail)."""
    logs = sorted(tmp.glob("child-*.log"))
    return "\n".join(logs[-1].read_text(errors="replace").splitlines()[:3]) if logs else ""
