"""The fork server the worker pool forks its workers from, started as soon as `run` knows it
will need one.

A fork server is a fresh interpreter that imports the parsers (the preload) before it forks
its first worker: 0.3-0.5 s on a quiet machine. Started when the parts are assembled, that
came after the daemon's own imports and assembly, and the first batch waited for it (on the
backlog benchmark its evaluation finished 0.37 s after the batch was claimed, while mail was
already staged). Started first thing, its imports run beside the daemon's, on the other core.

`multiprocessing` keeps one fork server per process, so the pool uses the one started here
(with the same preload) or starts it itself.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

# The parsers are preloaded in the fork server, not the daemon: every worker forked from it
# shares their pages, and the daemon never pays for them.
PRELOAD = ["bridge.process.isolation", "lxml.html", "bridge.parse.xmlsafe", "html_text"]


def context() -> multiprocessing.context.ForkServerContext:
    # forkserver, not fork: a worker (started lazily, or as a replacement at any time) must
    # not inherit the daemon's descriptors — an inherited client socket would keep a
    # connection the daemon closed open for the peer — nor its signal set-up.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start() -> None:
    """Start the fork server now (it does its imports on its own; this does not wait)."""
    context()
    multiprocessing.forkserver.ensure_running()
