"""Micro-benchmark: CPU per message of parse+classify on the backlog's mix, in this process.

What a worker process does per message (`Pipeline.evaluate`, then `_slim` and pickling the
result back), without Dovecot, the store or the pool: the pipeline is built as
`bench.backlog` configures mailbridge (bench.harness.make_config: the shipped rules, the demo
partner), over the mails of `bench.corpus.backlog`. The end-to-end figure (the `workers=` CPU
of the backlog benchmark) moves with this one, but this one is quiet enough to compare a
change in one sitting: `time.process_time` over all the mails, best of `rounds`.

    python -m bench.evaluate [-n 3000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import corpus  # noqa: E402
from bench.harness import BenchSettings, make_config  # noqa: E402
from bridge.assembly import load_rules  # noqa: E402
from bridge.config import load_settings  # noqa: E402
from bridge.decide.decider import Decider  # noqa: E402
from bridge.process.isolation import _slim  # noqa: E402
from bridge.process.pipeline import Pipeline, classify_context  # noqa: E402
from tests.fixtures.dovecot import PASSWORD, USER  # noqa: E402

# A fixed clock: the same mails on every run (their dates, their Received lines).
NOW = 1_765_000_000.0


def pipeline(tmp: Path) -> Pipeline:
    """The benchmark's pipeline; the servers are never contacted, only named in the config."""
    psa = SimpleNamespace(url="http://127.0.0.1:9")
    dovecot = SimpleNamespace(port=1, user=USER, password=PASSWORD)
    settings = load_settings(make_config(tmp, psa, dovecot, BenchSettings()))  # type: ignore[arg-type]
    decider = Decider.from_settings(settings, lambda: "cid")
    return Pipeline(settings, load_rules(settings), classify_context(settings), decider)


def mails(n: int) -> list[bytes]:
    return [m.raw for m in corpus.backlog(n, NOW - 86400, NOW - 600)]


def one_round(p: Pipeline, raws: list[bytes], text_chars: int) -> float:
    started = time.process_time()
    for i, raw in enumerate(raws):
        pickle.dumps(_slim(p.evaluate(raw, message_ref=i), text_chars))
    return time.process_time() - started


def run(n: int = 3000, rounds: int = 5) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="mb-eval-") as tmp:
        p = pipeline(Path(tmp))
        raws = mails(n)
        text_chars = p.settings.processing.text_chars
        one_round(p, raws[:200], text_chars)  # warm: first-use caches, lazy imports
        times = [one_round(p, raws, text_chars) for _ in range(rounds)]
    best = min(times)
    return {"messages": n, "rounds": rounds, "best_s": best, "ms_per_message": best / n * 1000,
            "all_s": [round(t, 3) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    r = run(args.n, args.rounds)
    print(f"evaluate: {r['messages']} messages, best of {r['rounds']}: {r['best_s']:.3f} s ="
          f" {r['ms_per_message']:.4f} ms/message (rounds: {r['all_s']})")


if __name__ == "__main__":
    main()
