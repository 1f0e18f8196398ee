"""Summarise a py-spy raw profile (collapsed stacks): inclusive and self samples per frame.

    .venv/bin/python -m bench.profile_report PROFILE.txt [--top 40] [--filter TEXT]

`make bench` does not profile; set MB_BENCH_PROFILE=/some/prefix to have every mailbridge child
run under `py-spy record` (pip install py-spy into the venv first).
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    path = m["file"]
    for marker in ("site-packages/", "/bridge/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1] if marker != "/bridge/" else \
                "bridge/" + path.split(marker, 1)[1]
            break
    return f"{m['fn']} ({path})"


def summarise(path: Path, top: int = 40, needle: str | None = None,
              idle: bool = False) -> str:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_short(f) for f in stack.split(";")]
        if not idle and frames and any(w in frames[-1] for w in (
                "select (selectors", "wait (threading", "_worker (concurrent", "poll (")):
            continue
        if needle and not any(needle in f for f in frames):
            continue
        n = int(count)
        total += n
        for f in set(frames):
            inclusive[f] += n
        own[frames[-1]] += n
    out = [f"{total} busy samples" + (f" under {needle!r}" if needle else "")]
    out.append("\n-- inclusive --")
    out += [f"{n * 100 / max(total, 1):5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    out.append("\n-- self --")
    out += [f"{n * 100 / max(total, 1):5.1f}%  {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("profile", type=Path)
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--filter")
    p.add_argument("--idle", action="store_true", help="count waiting threads too")
    a = p.parse_args()
    print(summarise(a.profile, a.top, a.filter, a.idle))
