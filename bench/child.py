"""`mailbridge` as the benchmarks run it: the real CLI, plus its own peak RSS at exit.

A child's ru_maxrss from wait4 is not its own on Linux: it starts from the RSS of the parent
at fork time (the benchmark process holds the generated mail and the simulator). So the child
writes the kernel's high-water mark of its own address space (VmHWM, /proc/self/status) to the
file named by MB_BENCH_HWM when it exits, followed by the peak RSS summed over itself and its
descendants (the worker pool), sampled. With MB_BENCH_STAGES set it also writes the CPU per
stage there (bench/stages.py).

    python -m bench.child run --once --config CONFIG
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from pathlib import Path


def _vm(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


_tree_peak = [0]


def _pss_kib(pid: int) -> int:
    """Proportional set size: pages shared between the forkserver and its workers count once
    in all, not once per process as RSS would."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    """Child pids from /proc/PID/task/*/children (no walk over every process of the machine:
    the sampler runs inside the measured process and must cost it next to nothing)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                kids = [int(k) for k in (task / "children").read_text().split()]
            except (OSError, ValueError):
                continue
            out += kids
            todo += kids
    return out


def _tree_rss_kib() -> int:
    """Memory of this process and every descendant (the worker pool's forkserver and
    workers), as proportional set sizes."""
    me = os.getpid()
    return sum(_pss_kib(p) for p in [me, *_descendants(me)])


def _sample_tree() -> None:
    """Peak summed memory, sampled every second (a sampled peak: a spike shorter than that
    can be missed; the main process's own VmHWM is exact)."""
    while True:
        _tree_peak[0] = max(_tree_peak[0], _tree_rss_kib())
        time.sleep(1.0)


def _report() -> None:
    target = os.environ.get("MB_BENCH_HWM")
    hwm = _vm("VmHWM")
    if target and hwm is not None:
        Path(target).write_text(f"{hwm} {_tree_peak[0] or hwm}")


def main() -> None:
    atexit.register(_report)
    stages_file = os.environ.get("MB_BENCH_STAGES")
    if stages_file:  # CPU per stage (bench/stages.py); written at exit, after _report
        from bench import stages

        sampler = stages.StageSampler(_descendants)
        atexit.register(stages.write, sampler, stages_file)
        sampler.start()
    threading.Thread(target=_sample_tree, daemon=True).start()
    if os.environ.get("MB_BENCH_SWITCH"):  # experiments: the GIL switch interval, seconds
        sys.setswitchinterval(float(os.environ["MB_BENCH_SWITCH"]))
    from bridge.cli import main as cli

    sys.argv = ["mailbridge", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
