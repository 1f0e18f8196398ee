"""`run` starts the fork server first thing (bridge.process.forkserver), and the worker pool
forks its workers from that same server rather than starting one of its own."""

from __future__ import annotations

import json
import subprocess
import sys

SCRIPT = r"""
import json, multiprocessing.forkserver, os
from bridge.process import forkserver
forkserver.start()
server = multiprocessing.forkserver._forkserver._forkserver_pid

from bridge.classify.engine import ClassifyContext
from bridge.classify.ruleset import RuleSet
from bridge.config import Settings
from bridge.decide.decider import Decider
from bridge.process.isolation import WorkerPool
from bridge.process.pipeline import Pipeline

settings = Settings()
pool = WorkerPool(Pipeline(settings, RuleSet(), ClassifyContext(),
                           Decider.from_settings(settings)), settings.processing)
parent = pool._pool.schedule(os.getppid).result(timeout=60)
pool.close()
print(json.dumps({"server": server, "parent": parent}))
"""


def test_the_pool_forks_its_workers_from_the_server_started_first() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["server"] and got["parent"] == got["server"]
