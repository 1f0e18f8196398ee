"""What every benchmark shares: servers on loopback, a config, mailbridge in a child process.

mailbridge always runs as its own process (`mailbridge run --once` or the daemon), so its
figures are its own: the PSA simulator (uvicorn in a thread of the benchmark process) and
Dovecot (its own processes) do not share its interpreter, and its peak RSS is read from the
kernel's accounting of that one child (`os.wait4`).

A benchmark measures the tree it is run from: `python -m bench.backlog` puts the current
directory first on `sys.path`, and the child gets this tree's root first on its PYTHONPATH. To
compare two trees, `cd` into each one and run it there; PYTHONPATH pointing elsewhere does not
change which code runs.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fixtures.dovecot import DovecotServer  # noqa: E402
from tests.fixtures.psa import SimulatorServer  # noqa: E402
from tests.helpers import write_config  # noqa: E402



@dataclass
class BenchSettings:
    """The knobs a benchmark run sets in mailbridge's config (reported with the figures)."""

    concurrency: int = 64          # [psa] concurrency (default 4)
    # [psa] rate_limit, requests/s (default 10). Far above what one process can send, so the
    # benchmark's own setting is never its ceiling (2000/s alone put 9,271 calls at >= 4.6 s).
    rate_limit: float = 100_000.0
    storm: dict[str, Any] = field(default_factory=dict)   # [storm] overrides
    imap: dict[str, Any] = field(default_factory=dict)    # [[imap]] overrides
    log_level: str = "WARNING"

    def describe(self) -> str:
        parts = [f"psa.concurrency={self.concurrency}", f"psa.rate_limit={self.rate_limit:g}"]
        parts += [f"storm.{k}={v}" for k, v in self.storm.items()] or [
            "storm settings of config.example.toml"]
        parts += [f"imap.{k}={v}" for k, v in self.imap.items()]
        return ", ".join(parts)


def imap_section(dovecot: DovecotServer, **extra: Any) -> str:
    lines = [f'\n[[imap]]\nname = "alerts"\nhost = "127.0.0.1"\nport = {dovecot.port}',
             'security = "none"', f'username = "{dovecot.user}"',
             f'password = "{dovecot.password}"', "timeout = 30.0"]
    for k, v in extra.items():
        lines.append(f"{k} = {v!r}" if isinstance(v, str) else
                     f"{k} = {str(v).lower() if isinstance(v, bool) else v}")
    return "\n".join(lines) + "\n"


def make_config(tmp: Path, psa: SimulatorServer, dovecot: DovecotServer, bs: BenchSettings,
                accounts: Path | None = None) -> Path:
    """tests.helpers.write_config (shipped rules, demo partner), adjusted for a benchmark."""
    path = write_config(tmp, psa, imap=imap_section(dovecot, **bs.imap))
    text = path.read_text()
    text = text.replace("rate_limit = 500.0", f"rate_limit = {bs.rate_limit}\n"
                        f"concurrency = {bs.concurrency}")
    if accounts is not None:
        text = re.sub(r'accounts = ".*"', f'accounts = "{accounts}"', text, count=1)
    # Storm tickets under the product group and alert type of config.example.toml (without
    # them a storm ticket takes those of its first alert).
    storm_values = {"storm_product_group": "storm", "storm_alert_type": "Alert Storm"}
    storm_values |= bs.storm
    storm = "".join(f"{k} = {v!r}\n" if not isinstance(v, str) else f'{k} = "{v}"\n'
                    for k, v in storm_values.items())
    text += f"\n[storm]\n{storm}\n[log]\nlevel = \"{bs.log_level}\"\nformat = \"human\"\n"
    path.write_text(text)
    return path


@dataclass
class ChildRun:
    seconds: float
    returncode: int
    max_rss_kib: int
    stderr_tail: str
    cpu_s: float = 0.0          # the child's user + system CPU
    host_cpu_s: float = 0.0     # this process's CPU meanwhile (the simulator's threads)
    tree_rss_kib: int = -1      # peak RSS summed over the child and its worker processes
    stages: dict[str, Any] | None = None  # CPU per stage (bench/stages.py), when asked for


def child_env() -> dict[str, str]:
    env = os.environ.copy()
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"]
                                     if env.get("PYTHONPATH") else "")
    return env


def run_child(args: list[str], cwd: Path, timeout: float = 600.0,
              env: dict[str, str] | None = None, stages: bool = False) -> ChildRun:
    """Run a command, wait for it with wait4: wall time, CPU, and its peak RSS — the VmHWM
    that bench.child reports (wait4's ru_maxrss includes the parent's RSS at fork time)."""
    stamp = int(time.time() * 1000)
    log = cwd / f"child-{stamp}.log"
    hwm_file = cwd / f"child-{stamp}.hwm"
    env = dict(env or child_env())
    env["MB_BENCH_HWM"] = str(hwm_file)
    stages_file = cwd / f"child-{stamp}.stages.json"
    if stages:
        env["MB_BENCH_STAGES"] = str(stages_file)
    profile = os.environ.get("MB_BENCH_PROFILE")
    if profile:  # py-spy samples every thread of the child (raw = collapsed stacks), and
        # with MB_BENCH_PROFILE_ALL set its worker processes too
        args = [str(Path(sys.executable).parent / "py-spy"), "record", "--format", "raw",
                "--rate", "250", "--threads", "--nonblocking",
                *(["--subprocesses"] if os.environ.get("MB_BENCH_PROFILE_ALL") else []), "-o",
                f"{profile}.{stamp}.txt", "--", *args]
    host0 = resource.getrusage(resource.RUSAGE_SELF)
    with open(log, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, cwd=cwd, stdout=err, stderr=err, env=env)
        # A blocking wait4 (with a timer for the timeout): polling it every few ms from this
        # process would keep taking the GIL from the simulator's thread and slow its answers.
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        seconds = time.perf_counter() - start
    host1 = resource.getrusage(resource.RUSAGE_SELF)
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace")[-3000:]
    host_cpu = (host1.ru_utime + host1.ru_stime) - (host0.ru_utime + host0.ru_stime)
    try:
        figures = [int(v) for v in hwm_file.read_text().split()]
    except (OSError, ValueError):
        figures = []  # not a bench.child (or it died before exit): no figure
    hwm = figures[0] if figures else -1
    tree = figures[1] if len(figures) > 1 else hwm
    try:
        stage_cpu = json.loads(stages_file.read_text()) if stages else None
    except (OSError, ValueError):
        stage_cpu = None
    return ChildRun(seconds, proc.returncode, hwm, tail,
                    usage.ru_utime + usage.ru_stime, host_cpu, tree, stage_cpu)


def mailbridge_args(*args: str) -> list[str]:
    """The mailbridge CLI, through bench.child (same code, plus its peak RSS at exit)."""
    return [sys.executable, "-m", "bench.child", *args]


def mailbridge_once(config: Path, cwd: Path, timeout: float = 600.0,
                    stages: bool = False) -> ChildRun:
    return run_child(mailbridge_args("run", "--once", "--config", str(config)), cwd, timeout,
                     stages=stages)


def load_mailbox(dovecot: DovecotServer, mails: Iterable[Any]) -> int:
    """Deliver into the Maildir with each message's arrival time as its INTERNALDATE."""
    n = 0
    for m in mails:
        dovecot.append(m.raw, date=m.at)
        n += 1
    return n


def db_summary(db: Path) -> dict[str, Any]:
    """Outcomes and phase timestamps from mailbridge's own store."""
    con = sqlite3.connect(str(db))
    try:
        out: dict[str, Any] = {}
        out["outcomes"] = dict(con.execute(
            "SELECT coalesce(outcome, state), count(*) FROM messages GROUP BY 1").fetchall())
        out["messages"] = con.execute("SELECT count(*) FROM messages").fetchone()[0]
        out["staged_first"], out["staged_last"] = con.execute(
            "SELECT min(staged_at), max(staged_at) FROM messages").fetchone()
        out["decided_last"] = con.execute(
            "SELECT max(at) FROM events WHERE kind='decided'").fetchone()[0]
        out["sent_first"], out["sent_last"] = con.execute(
            "SELECT min(at), max(at) FROM events WHERE kind='sent'").fetchone()
        t0 = out["staged_first"] or 0
        # Cumulative counts per second from the first staging: where each stage stood when.
        out["timeline"] = [
            (sec, *con.execute(
                "SELECT (SELECT count(*) FROM messages WHERE staged_at < :t),"
                " (SELECT count(*) FROM events WHERE kind='decided' AND at < :t),"
                " (SELECT count(*) FROM events WHERE kind='sent' AND at < :t)",
                {"t": t0 + sec}).fetchone())
            for sec in range(0, int((out["sent_last"] or t0) - t0) + 2)]
        out["outbox"] = dict(con.execute(
            "SELECT state, count(*) FROM outbox GROUP BY 1").fetchall())
        out["outbox_actions"] = dict(con.execute(
            "SELECT action, count(*) FROM outbox WHERE kind='psa' GROUP BY 1").fetchall())
        return out
    finally:
        con.close()


class Servers:
    """Dovecot and the simulator for one benchmark; `with Servers() as s:`."""

    def __init__(self, latency_ms: int = 0, extra_accounts: list[tuple[str, str]] = ()) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mb-bench-"))
        self.latency_ms = latency_ms
        partner = None
        if extra_accounts:  # the demo partner, plus accounts mapped for this benchmark
            from bridge.psa_sim.partner import DEFAULT_PARTNER

            partner = self.tmp / "partner.toml"
            partner.write_text(DEFAULT_PARTNER.read_text() + "".join(
                f'\n[[accounts]]\nid = "{i}"\nname = "{n}"\n' for i, n in extra_accounts))
        self.psa = SimulatorServer(partner)
        self.dovecot = DovecotServer()

    def __enter__(self) -> "Servers":
        self.psa.start()
        if self.latency_ms:
            self.psa.control(latency_ms=self.latency_ms)
        self.dovecot.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.psa.stop()
        finally:
            self.dovecot.cleanup()
            shutil.rmtree(self.tmp, ignore_errors=True)

    def sync_calls(self) -> list[dict[str, Any]]:
        return self.psa.calls()

    def tickets(self) -> list[dict[str, Any]]:
        return self.psa.tickets()


# -- the limit: a bare aioimaplib loop --------------------------------------------------------


async def _bare_fetch(host: str, port: int, user: str, password: str, batch: int) -> int:
    import aioimaplib

    client = aioimaplib.IMAP4(host=host, port=port, timeout=60)
    await client.wait_hello_from_server()
    await client.login(user, password)
    await client.select("INBOX")
    resp = await client.uid_search("ALL")
    uids = [int(x) for x in resp.lines[0].split()] if resp.lines and resp.lines[0] else []
    got = 0
    for i in range(0, len(uids), batch):
        part = uids[i:i + batch]
        r = await client.uid("fetch", f"{part[0]}:{part[-1]}", "(BODY.PEEK[])")
        if r.result != "OK":
            raise RuntimeError(f"UID FETCH failed: {r}")
        got += sum(1 for line in r.lines if isinstance(line, bytearray))
    await client.logout()
    return got


def bare_fetch(dovecot: DovecotServer, batch: int = 200) -> tuple[float, int]:
    """Seconds a bare aioimaplib loop needs to UID FETCH every message of INBOX (batches of
    `batch`; 500 risks aioimaplib's recursion bug, 200 is mailbridge's default batch)."""
    start = time.perf_counter()
    got = asyncio.run(_bare_fetch(dovecot.host, dovecot.port, dovecot.user, dovecot.password,
                                  batch))
    return time.perf_counter() - start, got


# -- the machine ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        dovecot = subprocess.run(["/usr/sbin/dovecot", "--version"], capture_output=True,
                                 text=True, timeout=10).stdout.strip()
    except OSError:
        dovecot = "not installed"
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    import aioimaplib  # noqa: F401
    from importlib.metadata import version

    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem,
            "python": platform.python_version(), "os": platform.platform(),
            "dovecot": dovecot, "aioimaplib": version("aioimaplib"),
            "sqlite": sqlite3.sqlite_version, "load at start": load}


def self_peak_rss_kib() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
