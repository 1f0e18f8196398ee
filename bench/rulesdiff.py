"""Benchmark 6: `mailbridge rules diff` over a day of staged mail (issue 19: < 30 s for 10,000).

The history is real: `n` messages of the backlog mix (bench.corpus) go through Dovecot and
`mailbridge run --once` into the store and the PSA simulator. Then, each in a child process
(wall time; the CPU of both its processes, as `rules diff --json` reports it; the load average
of the machine when it started — on a shared machine the wall time follows it):
1. a candidate that moves the Zabbix alerts to another alert type: both replays run, and the
   diff must name exactly the Zabbix messages (exit 1);
2. an unchanged copy: the candidate classifies every message alike, so one replay (exit 0).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from pathlib import Path
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
            load = os.getloadavg()[0]
            child = run_child(mailbridge_args("rules", "diff", "--config", str(config),
                                              "--rules", str(candidate), "--since", "2d",
                                              "--json"), s.tmp)
            if child.returncode != expected:
                raise RuntimeError(f"rules diff ({name}) exited {child.returncode}, not"
                                   f" {expected}:\n{child.stderr_tail}")
            report = _report(s.tmp)
            if name == "changed" and report["changed"] != zabbix:
                raise RuntimeError(f"rules diff named {report['changed']} messages, not the"
                                   f" {zabbix} Zabbix ones")
            runs[name] = {"seconds": child.seconds, "diff_seconds": report["seconds"],
                          "cpu_s": report["cpu_seconds"], "replays": report["replays"],
                          "max_rss_mib": child.max_rss_kib / 1024, "load": load}
    return {"messages": staged, "changes": zabbix, "changed": runs["changed"],
            "same": runs["same"]}


def _report(tmp: Path) -> dict[str, Any]:
    """The JSON report of the newest child (its log holds its stdout)."""
    text = sorted(tmp.glob("child-*.log"))[-1].read_text(errors="replace")
    return dict(json.loads(text[text.index("{"):]))
