"""Benchmark 2: latency under IDLE — APPEND to the simulator receiving the call.

The daemon (`mailbridge run`, through bench.child) runs in a child process, waiting in IDLE.
Messages are appended one by one with IMAP APPEND (one kept imaplib connection, so Dovecot
tells the IDLE session at once) at `rate` per second for `seconds`; each is a new alert (its own
ticket, a title that names it). The simulator logs the arrival time of every call (`at`, taken
before its injected latency); latency = that time minus the moment the APPEND was sent. Both
clocks are this process's `time.time()`.

Each latency is also split at the moment mailbridge staged the message (`messages.staged_at`
in the daemon's store, joined to the call through the `sent` event's title): APPEND -> staged
is Dovecot's notification plus the IMAP exchange that fetches the message, staged -> call is
mailbridge's own processing and delivery.

So many new alerts from one account within a minute are a storm by mailbridge's rules (10 per
account per minute by default): the caps are raised for this benchmark, which measures the path
of an alert, not storm grouping (benchmark 5 does that).
"""

from __future__ import annotations

import contextlib
import imaplib
import json
import os
import signal
import statistics
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import corpus
from bench.harness import BenchSettings, Servers, child_env, mailbridge_args, make_config

NO_STORM = {"account_cap": 1_000_000, "global_cap": 1_000_000, "burst_threshold": 1_000_000}


def _percentile(values: list[float], p: float) -> float:
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(p / 100 * len(s) + 0.5) - 1))
    return s[k]


def _wait_calls(s: Servers, titles: set[str], timeout: float) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        seen = {c["title"]: c["at"] for c in s.sync_calls() if c.get("title") in titles}
        if len(seen) == len(titles) or time.monotonic() > deadline:
            return seen
        time.sleep(0.1)  # polling the simulator's log for a condition


def staged_times(db: Path, titles: set[str]) -> dict[str, float]:
    """Title -> when the daemon staged that message (from its store)."""
    con = sqlite3.connect(str(db))
    try:
        out: dict[str, float] = {}
        for detail, staged in con.execute(
                "SELECT e.detail, m.staged_at FROM events e JOIN messages m"
                " ON m.id = e.message_ref WHERE e.kind = 'sent'"):
            title = json.loads(detail or "{}").get("title")
            if title in titles:
                out.setdefault(title, staged)
        return out
    finally:
        con.close()


def bare_idle(s: Servers, count: int, rate: float) -> list[float]:
    """The server's own share: APPEND -> untagged EXISTS seen by a bare IDLE session (imaplib,
    folder "IdleRef"), at the same rate. Dovecot batches IDLE notifications (it reports a change
    up to 0.5 s after it happened), which no client can undercut."""
    import threading

    folder = "IdleRef"
    s.dovecot.append(b"Subject: x\n\nx\n", folder)  # create the folder, message 1
    watcher = imaplib.IMAP4(s.dovecot.host, s.dovecot.port, timeout=30)
    watcher.login(s.dovecot.user, s.dovecot.password)
    watcher.select(folder)
    watcher.send(b"i1 IDLE\r\n")
    if not watcher.readline().startswith(b"+"):
        raise RuntimeError("IDLE refused")
    seen: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            line = watcher.readline()
            if not line:
                return
            parts = line.split()
            if len(parts) == 3 and parts[2] == b"EXISTS":
                seen.setdefault(int(parts[1]), time.time())
            if line.startswith(b"i1 "):
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    appender = imaplib.IMAP4(s.dovecot.host, s.dovecot.port, timeout=30)
    appender.login(s.dovecot.user, s.dovecot.password)
    sent: list[float] = []
    next_at = time.monotonic()
    for i in range(count):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # the arrival schedule
        sent.append(time.time())
        appender.append(folder, None, None, f"Subject: ref {i}\n\nref\n".encode())
        next_at += 1.0 / rate
    deadline = time.monotonic() + 10
    while max(seen, default=0) < count + 1 and time.monotonic() < deadline:
        time.sleep(0.05)  # polling for the last notification
    done.set()
    watcher.send(b"DONE\r\n")
    reader.join(timeout=5)
    appender.logout()
    with contextlib.suppress(Exception):
        watcher.logout()
    out = []
    for i, t0 in enumerate(sent):
        n = i + 2  # message 1 was there before
        hits = [t for k, t in seen.items() if k >= n]
        if hits:
            out.append((min(hits) - t0) * 1000)
    return out


def run(seconds: float = 60.0, rate: float = 10.0, latency_ms: int = 20,
        bs: BenchSettings | None = None) -> dict[str, Any]:
    bs = bs or BenchSettings(storm=NO_STORM)
    count = max(1, int(seconds * rate))
    with Servers(latency_ms=latency_ms) as s:
        ref = bare_idle(s, min(count, max(20, int(10 * rate))), rate)
        config = make_config(s.tmp, s.psa, s.dovecot, bs)
        log = open(s.tmp / "daemon.log", "wb")
        daemon = subprocess.Popen(mailbridge_args("run", "--config", str(config)), cwd=s.tmp,
                                  stdout=log, stderr=log, env=child_env())
        try:
            imap = imaplib.IMAP4(s.dovecot.host, s.dovecot.port, timeout=30)
            imap.login(s.dovecot.user, s.dovecot.password)
            # Warm-up: one alert through the whole path, so the daemon is connected and idle.
            raw, title = corpus.latency_alert(0, time.time(), tag="warm")
            imap.append("INBOX", None, None, raw)
            if not _wait_calls(s, {title}, 60.0):
                raise RuntimeError("the daemon did not deliver the warm-up alert:\n"
                                   + (s.tmp / "daemon.log").read_text(errors="replace")[-2000:])
            sent: dict[str, float] = {}
            append_s: list[float] = []
            next_at = time.monotonic()
            for i in range(count):
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # the arrival schedule: one message every 1/rate s
                raw, title = corpus.latency_alert(i + 1, time.time())
                t0 = time.time()
                imap.append("INBOX", None, None, raw)
                append_s.append(time.time() - t0)
                sent[title] = t0
                next_at += 1.0 / rate
            imap.logout()
            seen = _wait_calls(s, set(sent), 30.0)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()
        missing = len(sent) - len(seen)
        lat = [(seen[t] - sent[t]) * 1000 for t in seen]
        staged = staged_times(s.tmp / "mailbridge.db", set(seen))
        to_stage = [(staged[t] - sent[t]) * 1000 for t in seen if t in staged]
        own = [(seen[t] - staged[t]) * 1000 for t in seen if t in staged]
    if not lat:
        raise RuntimeError("no call arrived")
    return {"messages": count, "seconds": seconds, "rate": rate, "missing": missing,
            "p50_ms": statistics.median(lat), "p90_ms": _percentile(lat, 90),
            "p99_ms": _percentile(lat, 99), "max_ms": max(lat), "min_ms": min(lat),
            "append_p50_ms": statistics.median(append_s) * 1000,
            "idle_ref_p50_ms": statistics.median(ref) if ref else None,
            "idle_ref_p99_ms": _percentile(ref, 99) if ref else None,
            "idle_ref_max_ms": max(ref) if ref else None,
            "staged_p50_ms": statistics.median(to_stage) if to_stage else None,
            "staged_p99_ms": _percentile(to_stage, 99) if to_stage else None,
            "own_p50_ms": statistics.median(own) if own else None,
            "own_p99_ms": _percentile(own, 99) if own else None,
            "settings": bs.describe(), "latency_ms": latency_ms, "pid": os.getpid()}


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser()
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=float, default=10.0)
    a = p.parse_args()
    print(json.dumps(run(a.seconds, a.rate), indent=2))
