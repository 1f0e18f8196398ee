"""`mailbridge` as the benchmarks run it: the real CLI, plus its own peak RSS at exit.

A child's ru_maxrss from wait4 is not its own on Linux: it starts from the RSS of the parent
at fork time (the benchmark process holds the generated mail and the simulator). So the child
writes the kernel's high-water mark of its own address space (VmHWM, /proc/self/status) to the
file named by MB_BENCH_HWM when it exits.

    python -m bench.child run --once --config CONFIG
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path


def _vm(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _report() -> None:
    target = os.environ.get("MB_BENCH_HWM")
    hwm = _vm("VmHWM")
    if target and hwm is not None:
        Path(target).write_text(str(hwm))


def main() -> None:
    atexit.register(_report)
    if os.environ.get("MB_BENCH_SWITCH"):  # experiments: the GIL switch interval, seconds
        sys.setswitchinterval(float(os.environ["MB_BENCH_SWITCH"]))
    from bridge.cli import main as cli

    sys.argv = ["mailbridge", *sys.argv[1:]]
    cli()


if __name__ == "__main__":
    main()
