"""Time and memory of refusing (or accepting) each hostile XML document.

SPEC §3.3 says a billion-laughs or XXE document is rejected "in bounded time and memory"; this
is where that claim is measured instead of asserted in a timed test. Every case of
tests/data/hostile-xml/expectations.toml, plus the big ones generated here (10,000-deep nesting,
a 50 MB attribute, a 50 MB mail attachment), runs in a fresh child process so one case's
memory cannot hide another's. For each: wall time, the Python heap peak (tracemalloc), and the
growth of the process's peak RSS, which also counts libxml2's own C allocations (reset through
/proc/self/clear_refs on Linux).

    .venv/bin/python bench/bench_xml_hostile.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tomllib
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "hostile-xml"
sys.path.insert(0, str(ROOT))

MB = 1024 * 1024


def _generated() -> dict[str, tuple[str, object]]:
    """name -> (expected kind, maker returning (bytes, is_mail, parse_untrusted kwargs))."""
    def deep() -> tuple[bytes, bool, dict[str, int]]:
        return b"<a>" * 10_000 + b"</a>" * 10_000, False, {}

    def attr() -> tuple[bytes, bool, dict[str, int]]:
        return b'<a x="' + b"A" * (50 * MB) + b'"/>', False, {}

    def attr_cap_raised() -> tuple[bytes, bool, dict[str, int]]:
        data = b'<a x="' + b"A" * (50 * MB) + b'"/>'
        return data, False, {"max_bytes": len(data)}

    def quadratic_1mb() -> tuple[bytes, bool, dict[str, int]]:
        entity = b"x" * 100_000
        return (b'<!DOCTYPE k [<!ENTITY a "' + entity + b'">]><k>' + b"&a;" * 200_000 + b"</k>",
                False, {"max_bytes": 2 * MB})

    def mail_attachment() -> tuple[bytes, bool, dict[str, int]]:
        line = b"QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n"
        body = (b"From: rmm@acme.example\r\nSubject: big\r\n"
                b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
                b"--b\r\nContent-Type: application/xml\r\n\r\n<r/>\r\n"
                b"--b\r\nContent-Type: application/octet-stream\r\n"
                b"Content-Transfer-Encoding: base64\r\n\r\n"
                + line * (50 * MB // 57) + b"--b--\r\n")
        return body, True, {}

    return {
        "generated: 10,000-deep nesting": ("too deep", deep),
        "generated: 50 MB attribute": ("too large", attr),
        "generated: 50 MB attribute, size cap raised": ("attribute too long", attr_cap_raised),
        "generated: 20 GB quadratic blowup, cap 2 MB": ("document has a DOCTYPE", quadratic_1mb),
        "generated: 50 MB attachment beside XML": ("ok", mail_attachment),
    }


def _load(name: str) -> tuple[bytes, bool, dict[str, int]]:
    generated = _generated()
    if name in generated:
        return generated[name][1]()  # type: ignore[operator]
    return (CORPUS / name).read_bytes(), name.endswith(".eml"), {}


def _rss_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def run_one(name: str) -> dict[str, object]:
    """Runs in the child: one case, measured."""
    from bridge.parse import mime
    from bridge.parse.xmlsafe import UnsafeXml, parse_untrusted

    data, is_mail, limits = _load(name)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark
        rss_before = _rss_kib("VmRSS")
    except OSError:
        rss_before = None
    tracemalloc.start()
    start = time.perf_counter()
    try:
        if is_mail:
            parts = mime.parse(data).xml_parts
            xml = parts[0] if parts else b""
        else:
            xml = data
        parse_untrusted(xml, **limits)
        result = "ok"
    except UnsafeXml as exc:
        result = exc.kind
    seconds = time.perf_counter() - start
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    hwm = _rss_kib("VmHWM")
    growth = None if rss_before is None or hwm is None else max(0, hwm - rss_before)
    return {"result": result, "seconds": seconds, "py_peak": py_peak, "rss_growth_kib": growth,
            "input_bytes": len(data)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is shown")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one)))
        return

    cases = [(c["file"], c["expect"]) for c in tomllib.loads(
        (CORPUS / "expectations.toml").read_text())["case"]]
    cases += [(name, expected) for name, (expected, _) in _generated().items()]
    header = (f"{'case':46} {'input':>9} {'expected':>22} {'got':>22} {'ms':>8} "
              f"{'py peak':>9} {'RSS +':>9}")
    print(header)
    print("-" * len(header))
    failures = 0
    for name, expected in cases:
        runs = []
        for _ in range(args.repeat):
            out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True,
                                 text=True, check=True)
            runs.append(json.loads(out.stdout))
        best = min(runs, key=lambda r: r["seconds"])
        ok = best["result"] == expected
        failures += not ok
        rss = "n/a" if best["rss_growth_kib"] is None else f"{best['rss_growth_kib'] / 1024:.1f} MB"
        print(f"{name[:46]:46} {best['input_bytes'] / MB:>7.2f}MB {expected[:22]:>22} "
              f"{str(best['result'])[:22]:>22} {best['seconds'] * 1000:>8.2f} "
              f"{best['py_peak'] / MB:>7.2f}MB {rss:>9}{'' if ok else '  << UNEXPECTED'}")
    print(f"\n{len(cases)} cases, {failures} unexpected")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
