"""Slow HTTP clients cannot starve the daemon (issue 13) and foreign Host names get 421 (issue 14).

The flood test starts `mailbridge run` with soft and hard RLIMIT_NOFILE at 1,024, opens 1,100
loopback connections that send half a request header and stall, and checks that the Maildir
source keeps staging, /healthz answers during and after the flood, the server drops the slow
connections by itself, and the log stays small.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from bridge.config import HttpSettings
from bridge.operator.httpserve import HttpLimits, _Throttle, free_port, raise_nofile_limit
from bridge.operator.web import create_app, host_allowed, serve
from bridge.store import Store
from tests.helpers import MAILBRIDGE, SAMPLES, outcomes, write_config
from tests.test_web import make_settings

HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "


def _poll(cond, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)  # polling a condition


def _open_slow(port: int, count: int, budget: float = 30.0) -> list[socket.socket]:
    """Up to `count` connections that each send half a request header; bounded in time."""
    socks: list[socket.socket] = []
    deadline = time.monotonic() + budget
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        s = socket.socket()
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
            s.sendall(HALF_REQUEST)
        except OSError:  # refused, reset or a full backlog: the server defends itself
            s.close()
            continue
        socks.append(s)
    return socks


def _closed_by_server(s: socket.socket) -> bool:
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:  # reset: closed too
        return True


def _close_all(socks: list[socket.socket]) -> None:
    for s in socks:
        s.close()


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture
def more_descriptors():
    """The test process itself holds 1,100 client sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip("the test process needs 2,048 descriptors")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096) if hard == resource.RLIM_INFINITY
                                                else min(hard, max(soft, 4096)), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_1100_slow_connections_against_a_daemon_limited_to_1024_descriptors(
        tmp_path: Path, psa_sim, more_descriptors) -> None:
    port = free_port()
    config = write_config(tmp_path, psa_sim, maildir=True)
    text = config.read_text().replace(
        "[http]\nenabled = false",
        f'[http]\nenabled = true\nport = {port}\n')
    config.write_text(text)
    new = tmp_path / "Maildir" / "new"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([MAILBRIDGE, "run", "--config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=_limit_descriptors)
    socks: list[socket.socket] = []
    try:
        _poll(lambda: _healthz(port) is not None, "the daemon's HTTP server", 30)
        socks = _open_slow(port, 1100)
        assert len(socks) >= 1000  # the flood really happened (the server accepts, then drops)
        # During the flood: a client that sends its request at once still gets an answer ...
        assert _healthz(port) is not None
        # ... and the Maildir source still reads files (descriptors are left for it).
        for i, name in enumerate(("01-nagios-problem.eml", "05-zabbix-problem.eml",
                                  "07-prtg-sensor-down.eml")):
            (new / f"flood{i}.eml").write_bytes((SAMPLES / name).read_bytes())
        _poll(lambda: not any(new.iterdir()), "the Maildir drained during the flood", 30)
        # The server drops the slow connections by itself (header deadline, 10 s by default).
        _poll(lambda: all(_closed_by_server(s) for s in socks), "slow connections dropped", 40)
        assert _healthz(port) == 200
    finally:
        _close_all(socks)
        proc.terminate()
        proc.wait(timeout=30)
    got = outcomes(tmp_path / "mailbridge.db")
    assert len(got) == 3
    assert not [o for o in got.values() if "open files" in (o[1] or "")]
    log_text = log_path.read_bytes()
    assert len(log_text) < 1024 * 1024
    assert b"Too many open files" not in log_text, [
        line for line in log_text.decode(errors="replace").splitlines()
        if "open files" in line][:5]


def _healthz(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5.0).status_code
    except httpx.HTTPError:
        return None


async def test_slow_clients_are_cut_at_the_header_deadline_and_capped(tmp_path: Path) -> None:
    Store(tmp_path / "db").close()
    app = create_app(lambda: Store(tmp_path / "db"), None, make_settings())
    stop = asyncio.Event()
    ports: list[int] = []
    limits = HttpLimits(max_connections=20, header_timeout=1.0, keepalive_timeout=1.0)
    task = asyncio.create_task(serve(app, "127.0.0.1", 0, stop, on_listening=ports.append,
                                     limits=limits))
    while not ports:  # serve() reports the bound port once the socket listens
        await asyncio.sleep(0.01)
    socks = await asyncio.to_thread(_open_slow, ports[0], 60)
    try:
        started = time.monotonic()
        # Over the cap: the oldest slow connections were evicted at once.
        await asyncio.to_thread(_poll, lambda: sum(_closed_by_server(s) for s in socks) >= 40,
                                "eviction over the cap", 5)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports[0]}") as c:
            assert (await c.get("/healthz")).status_code in (200, 503)
        await asyncio.to_thread(_poll, lambda: all(_closed_by_server(s) for s in socks),
                                "header deadline", 5)
        assert time.monotonic() - started < 4
        # A connection that stays idle after a response is closed by the keep-alive limit.
        assert await asyncio.to_thread(_idle_after_response_is_closed, ports[0])
    finally:
        _close_all(socks)
        stop.set()
        await asyncio.wait_for(task, 10)


def _idle_after_response_is_closed(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 ")
        _poll(lambda: _closed_by_server(s), "keep-alive limit", 5)
    return True


def test_connection_cap_leaves_three_quarters_of_the_descriptors() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        assert HttpLimits(max_connections=1000).connection_cap() == 50
        assert HttpLimits(max_connections=10).connection_cap() == 10
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_raise_nofile_limit_raises_the_soft_limit_to_the_hard_one() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import resource;"
         "from bridge.operator.httpserve import raise_nofile_limit;"
         "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024));"
         "print(raise_nofile_limit(), resource.getrlimit(resource.RLIMIT_NOFILE))"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[1])
    assert done.stdout.split()[0] == "1024" and "(1024, 1024)" in done.stdout
    assert raise_nofile_limit() >= resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_accept_errors_are_logged_at_most_once_a_second() -> None:
    throttle = _Throttle(interval=1.0)
    def record(n: int) -> logging.LogRecord:
        # asyncio's message: a fixed first line, then the socket's repr (differs each time).
        return logging.LogRecord("asyncio", logging.ERROR, __file__, 1,
                                 f"socket.accept() out of system resource\nsocket: <fd={n}>",
                                 None, None)
    passed = [throttle.filter(record(n)) for n in range(10_000)]
    assert passed.count(True) == 1
    other = logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1,
                              "Invalid HTTP request received.", None, None)
    assert throttle.filter(other)  # another message has its own allowance


def test_host_check_stays_on_whatever_the_bind_address() -> None:
    wide = HttpSettings(host="0.0.0.0", allowed_hosts=["bridge.msp.example"])
    assert host_allowed("bridge.msp.example:8025", wide)
    assert host_allowed("BRIDGE.msp.example.", wide)
    assert host_allowed("127.0.0.1:8025", wide) and host_allowed("[::1]:8025", wide)
    assert host_allowed("", wide)  # HTTP/1.0 probes without a Host header
    assert not host_allowed("attacker.example", wide)
    assert not host_allowed("0.0.0.0:8025", wide)
    one = HttpSettings(host="192.0.2.7")
    assert host_allowed("192.0.2.7:8025", one) and not host_allowed("rebind.example", one)


async def test_dashboard_on_a_wildcard_bind_refuses_foreign_hosts(tmp_path: Path) -> None:
    app = create_app(lambda: Store(tmp_path / "db"), None,
                     make_settings(host="0.0.0.0", allowed_hosts=["bridge.msp.example"]))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://bridge.msp.example") as c:
        assert (await c.get("/")).status_code == 200
        assert (await c.get("/metrics", headers={"Host": "evil.example"})).status_code == 421
        assert (await c.get("/", headers={"Host": "evil.example"})).status_code == 421
    app.state.close()
