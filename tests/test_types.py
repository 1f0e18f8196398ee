"""mypy runs as part of `make test`: zero errors under the pyproject configuration, few and
justified `# type: ignore`s, and no dynamic attribute proxies in bridge/."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

from tests.helpers import ROOT

BRIDGE = ROOT / "bridge"
IGNORE = re.compile(r"#\s*type:\s*ignore\b(\[[^\]]*\])?")
MAX_IGNORES = 10


def _python_files() -> list[Path]:
    return sorted(BRIDGE.rglob("*.py"))


def test_mypy_reports_no_errors() -> None:
    # From the repository root so that [tool.mypy] in pyproject.toml (files, plugins, strictness)
    # is what runs, exactly as a developer's `mypy` would.
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, f"mypy failed:\n{result.stdout}\n{result.stderr}"
    assert "Success: no issues found" in result.stdout, result.stdout


def test_mypy_configuration_is_strict_enough() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    mypy = config["tool"]["mypy"]
    assert mypy["files"] == ["bridge"]
    assert mypy["check_untyped_defs"] is True
    assert mypy["warn_unused_ignores"] is True
    assert "pydantic.mypy" in mypy["plugins"]
    assert "ignore_missing_imports" not in mypy and "ignore_errors" not in mypy
    for override in mypy.get("overrides", []):
        modules = override["module"]
        modules = [modules] if isinstance(modules, str) else modules
        assert "ignore_errors" not in override, override
        assert not any(m == "bridge" or m.startswith("bridge.") for m in modules), override
    extras = config["project"]["optional-dependencies"]["test"]
    assert any(re.match(r"mypy==\d", dep) for dep in extras), "mypy must be pinned in [test]"


def test_few_type_ignores_each_with_a_reason() -> None:
    found: list[str] = []
    unexplained: list[str] = []
    for path in _python_files():
        lines = path.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, start=1):
            match = IGNORE.search(line)
            if match is None:
                continue
            where = f"{path.relative_to(ROOT)}:{number}"
            found.append(where)
            if match.group(1) is None:
                unexplained.append(f"{where}: no error code")
                continue
            # The reason: a comment after the ignore, or a comment line just above.
            after = line[match.end():].strip()
            above = lines[number - 2].strip() if number > 1 else ""
            if not after.startswith("#") and not above.startswith("#"):
                unexplained.append(f"{where}: no reason given")
    assert len(found) <= MAX_IGNORES, found
    assert not unexplained, unexplained


def test_no_getattr_proxies() -> None:
    proxies = [f"{path.relative_to(ROOT)}:{node.lineno}"
               for path in _python_files()
               for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
               and node.name == "__getattr__"]
    assert not proxies, proxies
