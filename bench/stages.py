"""CPU per stage of a mailbridge process, measured from inside it (bench.child, MB_BENCH_STAGES).

Each thread's CPU time is exact (the kernel's account, /proc/self/task/TID/schedstat); how it
divides between the stages comes from sampling the thread's Python stack every SAMPLE_S and
giving the CPU it used since the previous sample to the stage it is in. The worker processes' CPU is exact too (/proc/PID/stat of every descendant)
and is all parse+classify. Stages:

- fetch: the IMAP sources (bridge/sources, aioimaplib) on the event loop;
- stage: writing fetched messages to the store (`stage_many`, the spool);
- parse+classify: the worker processes, plus the parent's side of the pool (pebble's threads,
  the thread that waits for a batch's results and unpickles them);
- decide: claiming staged rows and `apply_batch` (decide, record, outbox rows) on the store thread;
- deliver: the outbox loop, the targets and the HTTP client on the event loop, and the outbox
  claims on the store thread;
- settle: writing what each call changed (`apply_settlement`, the group commit);
- startup: imports, configuration, assembling the parts; other: the rest (the event loop's own
  work between callbacks, the owner lease, the benchmark's samplers).

Resolution: a stage's share is exact to within the work done in the SAMPLE_S before a switch.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Callable

SAMPLE_S = 0.02
CPU_READ_S = 0.1  # the worker processes' CPU, read this often
TICK = os.sysconf("SC_CLK_TCK")
STAGES = ("fetch", "stage", "parse+classify", "decide", "deliver", "settle", "startup", "other")

# The store thread's work is named by the Store function the AsyncStore was asked to run.
STORE_CALLS = {
    "stage_many": "stage", "stage_spooled": "stage", "stage": "stage",
    "claim_staged": "decide", "apply_batch": "decide", "requeue_crashed": "decide",
    "apply_settlement": "settle", "apply_settlements": "settle",
}
# Elsewhere, the innermost frame whose file says which stage it is in.
FILE_STAGES = (
    ("/aioimaplib/", "fetch"), ("/bridge/sources/", "fetch"),
    ("/bridge/deliver/", "deliver"), ("/httpx/", "deliver"), ("/httpcore/", "deliver"),
    ("/h11/", "deliver"), ("/anyio/", "deliver"), ("/stamina/", "deliver"),
    ("/tenacity/", "deliver"), ("/aiohttp/", "deliver"),
    ("/pebble/", "parse+classify"), ("/bridge/process/isolation", "parse+classify"),
    ("/multiprocessing/", "parse+classify"),
    ("<frozen importlib", "startup"), ("/bridge/assembly", "startup"),
    ("/bridge/config", "startup"), ("/bridge/classify/ruleset", "startup"),
)
# A thread whose innermost Python frame is in one of these modules is waiting, not working.
IDLE_FILES = ("selectors.py", "threading.py", "queue.py", "concurrent/futures/thread.py",
              "multiprocessing/connection.py")


def classify_stack(frame: FrameType | None, store_thread: bool) -> str | None:
    """The stage a thread is working for, or None when it is idle."""
    if frame is None or frame.f_code.co_filename.endswith(IDLE_FILES):
        return None
    frames: list[FrameType] = []
    f: FrameType | None = frame
    while f is not None:
        frames.append(f)
        f = f.f_back
    if store_thread:
        # Outermost first: the function AsyncStore.run was given is the first frame below the
        # executor's and AsyncStore's own.
        for f in reversed(frames):
            code = f.f_code
            if code.co_filename.endswith(("threading.py", "concurrent/futures/thread.py",
                                          "store/thread.py")) or \
                    (code.co_name == "<lambda>" and code.co_filename.endswith("store/db.py")):
                continue
            name = code.co_name
            if name in STORE_CALLS:
                return STORE_CALLS[name]
            return "deliver" if any(w in name for w in ("outbox", "correlation", "arrived",
                                                        "reopen")) else "other"
        return None
    for f in frames:
        path = f.f_code.co_filename
        for mark, stage in FILE_STAGES:
            if mark in path:
                return stage
    return "other"


def _ticks(path: str) -> float:
    """utime + stime of a process, seconds (all its threads)."""
    try:
        fields = Path(path).read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, ValueError, IndexError):
        return -1.0


_fds: dict[int, int] = {}


def _run_ns(pid: int, tid: int) -> int:
    """Nanoseconds a thread has run on a CPU (schedstat: exact, unlike the 10 ms ticks). The
    file stays open and is read again with pread: the sampler must cost next to nothing."""
    try:
        fd = _fds.get(tid)
        if fd is None:
            fd = _fds[tid] = os.open(f"/proc/{pid}/task/{tid}/schedstat", os.O_RDONLY)
        return int(os.pread(fd, 100, 0).split()[0])
    except (OSError, ValueError, IndexError):
        return -1


class StageSampler:
    """Every SAMPLE_S, each thread's CPU since the last sample goes to the stage its stack
    is in (to the stage before, when the stack is now waiting: the thread worked for that
    one, then went idle). A thread waiting for the GIL uses no CPU and so counts nothing."""

    def __init__(self, descendants: Callable[[int], list[int]]) -> None:
        self._descendants = descendants
        self.stage_ns = dict.fromkeys(STAGES, 0)
        self.thread_ns: dict[str, int] = {}
        self.child_cpu: dict[int, float] = {}
        self._last: dict[int, tuple[int, str]] = {}  # tid -> (run ns, stage)
        self._me = 0

    def start(self) -> None:
        threading.Thread(target=self._loop, name="bench-stages", daemon=True).start()

    def _loop(self) -> None:
        self._me = threading.get_native_id()
        next_children = 0.0
        while True:
            self.sample()
            now = time.monotonic()
            if now >= next_children:
                next_children = now + CPU_READ_S
                self.read_children()
            time.sleep(SAMPLE_S)

    def sample(self) -> None:
        pid = os.getpid()
        threads = {t.ident: t for t in threading.enumerate()}
        for ident, frame in sys._current_frames().items():
            t = threads.get(ident)
            if t is None or t.native_id is None or t.native_id == self._me:
                continue
            tid = t.native_id
            ran = _run_ns(pid, tid)
            if ran < 0:
                continue
            before, previous = self._last.get(tid, (0, "startup"))
            stage = classify_stack(frame, t.name.startswith("store")) or previous
            delta = ran - before
            self._last[tid] = (ran, stage)
            if delta > 0:
                self.stage_ns[stage] += delta
                name = "store" if t.name.startswith("store") else t.name
                self.thread_ns[name] = self.thread_ns.get(name, 0) + delta

    def read_children(self) -> None:
        for child in self._descendants(os.getpid()):
            cpu = _ticks(f"/proc/{child}/stat")
            if cpu >= 0:
                self.child_cpu[child] = cpu

    def result(self) -> dict[str, object]:
        self.sample()
        self.read_children()
        own = _run_ns(os.getpid(), self._me) if self._me else 0
        stages = {k: v / 1e9 for k, v in self.stage_ns.items()}
        workers = sum(self.child_cpu.values())
        stages["parse+classify"] += workers
        return {"stages_cpu_s": {k: round(v, 3) for k, v in stages.items()},
                "main_process_cpu_s": round(sum(self.stage_ns.values()) / 1e9, 2),
                "workers_cpu_s": round(workers, 2), "sampler_cpu_s": round(own / 1e9, 2),
                "threads_cpu_s": {k: round(v / 1e9, 2) for k, v in self.thread_ns.items()}}


def write(sampler: StageSampler, target: str) -> None:
    Path(target).write_text(json.dumps(sampler.result()))
