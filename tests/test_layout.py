"""The layout shows the flow (docs/architecture.md): `bridge/`'s root holds only the entry
points, the shared models, seams and config, and the assembly; every other module lives in
the package of its stage. No module is over 400 lines."""

from __future__ import annotations

from pathlib import Path

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"

ENTRY_POINTS = {"__main__.py", "daemon.py", "demo.py", "ingest.py", "replay.py", "simulate.py",
                "testalert.py"}
SHARED = {"__init__.py", "assembly.py", "config.py", "models.py", "seams.py", "py.typed"}
STAGES = {"auth", "classify", "cli", "decide", "deliver", "operator", "parse", "process",
          "psa_sim", "sources", "store"}
MAX_LINES = 400


def test_the_root_holds_only_the_agreed_modules() -> None:
    files = {p.name for p in BRIDGE.iterdir() if p.is_file()}
    packages = {p.name for p in BRIDGE.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert files == ENTRY_POINTS | SHARED, "a module in bridge/ belongs in a stage package"
    assert packages == STAGES
    for name in packages:
        assert (BRIDGE / name / "__init__.py").is_file(), name


def test_no_module_is_over_400_lines() -> None:
    long = {str(p.relative_to(BRIDGE)): n for p in sorted(BRIDGE.rglob("*.py"))
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}
