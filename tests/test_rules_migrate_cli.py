"""`mailbridge rules migrate`: preview, --out, --in-place and --check on a copy of the v1
originals; nothing is written when any file cannot be migrated."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from bridge.cli import main
from bridge.classify.migrate import Migrated, migrate_files
from tests.helpers import CATALOGUE
from tests.test_samples import ACCOUNTS

V1 = Path(__file__).resolve().parent / "rules_v1"


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    """A v1 rule directory with its accounts file inside, as many installations keep it."""
    directory = tmp_path / "rules"
    shutil.copytree(V1, directory)
    shutil.copy(ACCOUNTS, directory / "accounts.csv")
    (directory / "10-nagios.toml").chmod(0o640)
    return directory


def run(*args: str) -> Result:
    return CliRunner().invoke(main, ["rules", "migrate", *args])


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def expected(directory: Path) -> dict[str, str]:
    files = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(directory.glob("*.toml"))]
    return {m.name: m.text for m in migrate_files(files)}


def test_preview_prints_and_writes_nothing(rules: Path) -> None:
    before = snapshot(rules)
    result = run("--rules", str(rules))
    assert result.exit_code == 0, result.output
    assert "# ---- 10-nagios.toml ----" in result.stdout and "format = 2" in result.stdout
    assert "10-nagios.toml: v1 -> v2 (45 -> " in result.stderr
    assert "(preview; nothing written)" in result.stderr
    assert snapshot(rules) == before


def test_out_writes_a_whole_rule_directory(rules: Path, tmp_path: Path) -> None:
    out = tmp_path / "v2"
    want = expected(rules)
    result = run("--rules", str(rules), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {*want, "accounts.csv"}
    for name, text in want.items():
        assert (out / name).read_text(encoding="utf-8") == text
        assert tomllib.loads(text)["format"] == 2
    assert run("--rules", str(out), "--check").exit_code == 0
    again = run("--rules", str(rules), "--out", str(out))
    assert again.exit_code == 2 and "is not empty" in again.stderr


def test_in_place_then_check(rules: Path) -> None:
    assert run("--rules", str(rules), "--check").exit_code == 1
    want = expected(rules)
    result = run("--rules", str(rules), "--in-place")
    assert result.exit_code == 0, result.output
    assert {n: (rules / n).read_text(encoding="utf-8") for n in want} == want
    assert (rules / "10-nagios.toml").stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in rules.iterdir() if p.name.startswith(".")) == []
    check = run("--rules", str(rules), "--check")
    assert check.exit_code == 0 and "unchanged" in check.stderr


def test_one_bad_file_and_nothing_is_written(rules: Path) -> None:
    (rules / "99-broken.toml").write_text("[[detect]\n", encoding="utf-8")
    before = snapshot(rules)
    result = run("--rules", str(rules), "--in-place")
    assert result.exit_code == 2
    assert "nothing written: 99-broken.toml: TOML syntax error" in result.stderr
    assert snapshot(rules) == before


def test_options_exclude_each_other(rules: Path, tmp_path: Path) -> None:
    result = run("--rules", str(rules), "--in-place", "--out", str(tmp_path / "x"))
    assert result.exit_code == 2 and "one of --out, --in-place and --check" in result.stderr
    assert not (tmp_path / "x").exists()


def config_for(rules: Path, tmp_path: Path) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(f'[rules]\ndirectory = "{rules}"\naccounts = "{rules / "accounts.csv"}"\n'
                      + CATALOGUE, encoding="utf-8")
    return config


def test_the_rule_directory_comes_from_the_config(rules: Path, tmp_path: Path) -> None:
    config = config_for(rules, tmp_path)
    result = CliRunner().invoke(main, ["rules", "migrate", "--config", str(config), "--check"])
    assert result.exit_code == 1, result.output
    assert "20-zabbix.toml: v1 -> v2" in result.stderr
    assert "not loaded to verify" not in result.stderr


def test_a_migrated_set_that_would_not_load_is_not_written(rules: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader is the last word: were migrate ever to write a set that does not load
    (simulated here by a migrate that forgets every product group), nothing is written."""
    from bridge.cli import rules_migrate

    def broken(files: list[tuple[str, str]]) -> list[Migrated]:
        return [Migrated(m.name, m.text.replace('product_group = "servers"\n', ""), m.changed)
                for m in migrate_files(files)]

    monkeypatch.setattr(rules_migrate, "migrate_files", broken)
    before = snapshot(rules)
    result = CliRunner().invoke(main, ["rules", "migrate", "--config",
                                       str(config_for(rules, tmp_path)), "--in-place"])
    assert result.exit_code == 2, result.output
    assert "nothing written: the migrated files do not load" in result.stderr
    assert "10-nagios.toml: " in result.stderr and "product_group" in result.stderr
    assert snapshot(rules) == before
