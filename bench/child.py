"""`mailbridge` as the benchmarks run it: the real CLI, plus its own peak RSS at exit.

A child's ru_maxrss from wait4 is not its own on Linux: it starts from the RSS of the parent
at fork time (the benchmark process holds the generated mail and the simulator). So the child
writes the kernel's high-water mark of its own address space (VmHWM, /proc/self/status) to the
file named by MB_BENCH_HWM when it exits, followed by the peak RSS summed over itself and its
descendants (the worker pool), sampled.

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


def _tree_rss_kib() -> int:
    """Memory of this process and every descendant (the worker pool's forkserver and
    workers), as proportional set sizes."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    mine, total = {os.getpid()}, 0
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in mine and pid not in mine:
                mine.add(pid)
                changed = True
    for pid in mine:
        total += _pss_kib(pid)
    return total


def _sample_tree() -> None:
    """Peak summed RSS, sampled every 0.2 s (a sampled peak: a spike shorter than that can
    be missed; the main process's own VmHWM is exact)."""
    while True:
        _tree_peak[0] = max(_tree_peak[0], _tree_rss_kib())
        time.sleep(0.2)


def _report() -> None:
    target = os.environ.get("MB_BENCH_HWM")
    hwm = _vm("VmHWM")
    if target and hwm is not None:
        Path(target).write_text(f"{hwm} {_tree_peak[0] or hwm}")


def main() -> None:
    atexit.register(_report)
    threading.Thread(target=_sample_tree, daemon=True).start()
    if os.environ.get("MB_BENCH_SWITCH"):  # experiments: the GIL switch interval, seconds
        sys.setswitchinterval(float(os.environ["MB_BENCH_SWITCH"]))
    from bridge.cli import main as cli

    sys.argv = ["mailbridge", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
