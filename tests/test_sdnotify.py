"""sd_notify against real AF_UNIX datagram sockets (a path and the abstract namespace)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from bridge.operator import sdnotify


def _receive(sock: socket.socket) -> str:
    sock.settimeout(2.0)
    return sock.recv(4096).decode()


@pytest.fixture
def path_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # A short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can exceed it.
    directory = Path(tempfile.mkdtemp(prefix="sdn-"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / "notify"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(directory / "notify"))
    yield sock
    sock.close()
    shutil.rmtree(directory)


@pytest.fixture
def abstract_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    name = f"mailbridge-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    yield sock
    sock.close()


def test_without_notify_socket_everything_is_a_noop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.ready() is False and sdnotify.watchdog() is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert sdnotify.ready() is False


def test_each_message_on_a_path_socket(path_socket: socket.socket) -> None:
    assert sdnotify.ready()
    assert _receive(path_socket) == "READY=1"
    assert sdnotify.status("connected;\n12 messages\tqueued")
    assert _receive(path_socket) == "STATUS=connected; 12 messages queued"
    assert sdnotify.watchdog()
    assert _receive(path_socket) == "WATCHDOG=1"
    assert sdnotify.stopping()
    assert _receive(path_socket) == "STOPPING=1"
    assert sdnotify.extend_timeout(2.5)
    assert _receive(path_socket) == "EXTEND_TIMEOUT_USEC=2500000"
    assert sdnotify.reloading()
    first, second = _receive(path_socket).split("\n")
    assert first == "RELOADING=1" and second.startswith("MONOTONIC_USEC=")
    assert int(second.split("=")[1]) > 0


def test_abstract_namespace_socket(abstract_socket: socket.socket) -> None:
    assert sdnotify.notify("READY=1\nSTATUS=up")
    assert _receive(abstract_socket) == "READY=1\nSTATUS=up"


def test_a_vanished_socket_returns_false_not_an_exception(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert sdnotify.ready() is False


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None),
    ({"WATCHDOG_USEC": "60000000"}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({"WATCHDOG_USEC": "60000000", "WATCHDOG_PID": "x"}, None),
])
def test_watchdog_interval(env: dict[str, str], expected: float | None) -> None:
    assert sdnotify.watchdog_interval(env) == expected


def test_watchdog_interval_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 1.0
