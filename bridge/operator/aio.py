"""Which event loop and which HTTP parser mailbridge runs on: uvloop and httptools where they
are installed (both are dependencies; they are C implementations of what asyncio and h11 do
in Python), the standard library's loop and uvicorn's h11 otherwise.

`run` is the one entry from synchronous code into a coroutine (every command calls it where it
would call asyncio.run). MAILBRIDGE_EVENT_LOOP=asyncio forces the standard loop: an escape
hatch should a library misbehave under uvloop, and the A/B switch of the benchmarks.
"""

from __future__ import annotations

import asyncio
import os
from importlib.util import find_spec
from typing import Any, Callable, Coroutine, TypeVar

T = TypeVar("T")
LOOP_ENV = "MAILBRIDGE_EVENT_LOOP"


def uvloop_wanted() -> bool:
    return os.environ.get(LOOP_ENV, "auto") != "asyncio" and find_spec("uvloop") is not None


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when installed and not switched off; None = asyncio's default."""
    if not uvloop_wanted():
        return None
    import uvloop

    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run on uvloop when it is installed."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def uvicorn_http() -> str:
    """The uvicorn `http` option for a server that runs its own loop (the simulator and the
    other threaded test servers): httptools where installed. uvicorn would pick it itself on
    "auto"; naming it says that it matters (the simulator shares the benchmark's two cores
    with mailbridge, and httptools alone takes ~30 % off its CPU per call)."""
    return "httptools" if find_spec("httptools") is not None else "auto"


def uvicorn_loop() -> str:
    """The uvicorn `loop` option for those servers: uvloop unless switched off, as `run`."""
    return "uvloop" if uvloop_wanted() else "asyncio"
