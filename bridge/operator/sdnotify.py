"""The systemd notification protocol (sd_notify), by hand: one datagram to `$NOTIFY_SOCKET`.

With `Type=notify`, systemd waits for `READY=1` before it calls the service started, shows the
latest `STATUS=` line in `systemctl status`, and restarts the service when `WATCHDOG=1` pings
stop arriving within `WatchdogSec=`. The protocol is a datagram of newline-separated
`KEY=VALUE` lines to an AF_UNIX socket whose path is in `$NOTIFY_SOCKET` (a leading `@` means
the Linux abstract namespace). About ten lines, as gunicorn and Synapse do it: the `sdnotify`
package is unmaintained and `systemd-python` needs a C build. Outside systemd (no
`NOTIFY_SOCKET`) every call is a no-op returning False, and no call ever raises: a failed
status report must not take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Mapping


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, or a kind we do not speak (vsock: needs systemd >= 254 anyway)


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `state` (e.g. "READY=1\\nSTATUS=ok"); True if it was handed to the socket."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode("utf-8", "replace"), address)
    except OSError:
        return False
    return True


def ready() -> bool:
    """Start-up (or a reload) is complete: systemd marks the unit active."""
    return notify("READY=1")


def status(text: str) -> bool:
    """A one-line status for `systemctl status` (newlines would end the field)."""
    return notify("STATUS=" + " ".join(text.split()))


def stopping() -> bool:
    """Shutdown has begun (SIGTERM): systemd shows "deactivating" instead of a hang."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """A reload (SIGHUP) has begun; send `ready()` when it is done.

    MONOTONIC_USEC lets systemd >= 253 match this to the reload it asked for; older versions
    ignore the field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def watchdog() -> bool:
    """The main loop is alive and making progress; send at least every `watchdog_interval()`."""
    return notify("WATCHDOG=1")


def extend_timeout(seconds: float) -> bool:
    """Ask for more time to start or stop (e.g. a slow drain) before systemd gives up."""
    return notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of `WatchdogSec=`), or None when not watched.

    systemd sets WATCHDOG_PID to the process it watches; when it names another process (a
    child that inherited the environment), this one must not ping.
    """
    env = os.environ if env is None else env
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 2 / 1_000_000
