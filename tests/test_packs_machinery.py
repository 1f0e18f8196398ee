"""The pack machinery on small packs of its own: order, `<pack>/<rule>` names, replacement in
place by full name, the mapping onto an MSP's catalogue and senders, and what `check` names.

The shipped packs are exercised end to end in tests/test_packs.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.classify import ClassifyContext, RuleSetError, check_ruleset, classify, load_ruleset
from bridge.classify.rulepacks import PackMapping, PackSelection, available
from bridge.config import settings_from_dict
from tests.helpers import cli
from tests.test_rules_support import msg

NEUTRAL = {"monitoring": frozenset({"Service Critical", "Host Down"})}

PACK = """
[pack]
name = "demo"
tool = "Demo Monitor"
versions = "Demo 1.x"
sources = ["example/demo src/mail.c@0000000"]
doc = "Alert key: host and check."

[[detect]]
name = "service"
sender = "demo@monitor.example"
subject = "Service"
product_group = "monitoring"
alert_type = "Service Critical"
open = ["PROBLEM"]
resolved = ["RECOVERY"]

[[detect]]
name = "host"
sender = "demo@monitor.example"
subject = "Host"
product_group = "monitoring"
alert_type = "Host Down"
open = ["PROBLEM"]
resolved = ["RECOVERY"]

[[skip]]
name = "digest"
sender = "demo@monitor.example"
subject = "Daily digest"
"""

ADMIN = """
[[detect]]
name = "own-rule"
sender = "ops@msp.example"
subject = "Backup"
product_group = "monitoring"
alert_type = "Service Critical"
open = ["failed"]
resolved = ["succeeded"]
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "packs" / "demo").mkdir(parents=True)
    (tmp_path / "packs" / "demo" / "pack.toml").write_text(PACK)
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "10-own.toml").write_text(ADMIN)
    return tmp_path


def select(root: Path, **mapping: object) -> PackSelection:
    maps = {"demo": PackMapping(**mapping)} if mapping else {}  # type: ignore[arg-type]
    return PackSelection(("demo",), maps, root / "packs")


def test_packs_load_after_the_admins_files_with_full_names(root: Path) -> None:
    rs = load_ruleset(root / "rules", None, NEUTRAL, select(root))
    assert [r.name for r in rs.detect.rules] == ["own-rule", "demo/service", "demo/host"]
    assert [r.name for r in rs.skip.rules] == ["demo/digest"]
    assert available(root / "packs") == ["demo"]
    # Without the pack enabled, only the admin's rule.
    assert [r.name for r in load_ruleset(root / "rules", None, NEUTRAL).detect.rules] == \
        ["own-rule"]


def test_an_admin_rule_with_the_full_name_replaces_the_pack_rule_in_place(root: Path) -> None:
    (root / "rules" / "20-replace.toml").write_text("""
[[detect]]
name = "demo/service"
sender = "demo@monitor.example"
subject = "Service Alert"
product_group = "monitoring"
alert_type = "Host Down"
open = ["PROBLEM"]
resolved = ["RECOVERY", "OK"]
""")
    rs = load_ruleset(root / "rules", None, NEUTRAL, select(root))
    assert [(r.name, r.file) for r in rs.detect.rules] == [
        ("own-rule", "10-own.toml"), ("demo/service", "20-replace.toml"),
        ("demo/host", "pack.toml")]
    assert rs.detect.rules[1].alert_type == "Host Down"
    problems = check_ruleset(root / "rules", None, NEUTRAL, select(root))
    assert not [p for p in problems if p.is_error]


def test_a_pack_is_mapped_onto_the_msps_catalogue_and_senders(root: Path) -> None:
    msp = {"servers": frozenset({"Critical", "Down"})}
    with pytest.raises(RuleSetError) as err:
        load_ruleset(root / "rules", None, msp, select(root))
    text = str(err.value)
    assert "pack 'demo': product group 'monitoring' is not in the catalogue" in text
    assert "[packs.demo] product_group" in text

    (root / "rules" / "10-own.toml").unlink()
    sel = select(root, product_group="servers",
                 alert_types={"Service Critical": "Critical", "Host Down": "Down"},
                 senders=("nagios@mon.acme.example",))
    rs = load_ruleset(root / "rules", None, msp, sel)
    assert [(r.name, r.product_group, r.alert_type) for r in rs.detect.rules] == [
        ("demo/service", "servers", "Critical"), ("demo/host", "servers", "Down")]
    result = classify(msg("PROBLEM Service web01/HTTP", "nagios@mon.acme.example"), rs,
                      ClassifyContext())
    assert result.rule is not None and result.rule.endswith("demo/service")


def test_check_names_each_unmapped_alert_type_once(root: Path) -> None:
    msp = {"servers": frozenset({"Critical"})}
    problems = check_ruleset(root / "rules", None, msp,
                             select(root, product_group="servers",
                                    alert_types={"Service Critical": "Critical",
                                                 "Disk Full": "Critical"}))
    found = [p.message for p in problems if p.rule == "demo"]
    assert any("alert type 'Host Down' is not in product group 'servers'" in m for m in found)
    assert any("'Disk Full', which pack 'demo' does not use" in m for m in found)
    assert sum("'Host Down'" in m for m in found) == 1


def test_an_unknown_pack_is_an_error_with_a_hint(root: Path) -> None:
    problems = check_ruleset(root / "rules", None, NEUTRAL,
                             PackSelection(("dem",), {}, root / "packs"))
    [p] = [p for p in problems if p.is_error]
    assert p.file == "[rules] packs" and "unknown pack 'dem' (did you mean 'demo'?)" in p.message


def test_config_reads_packs_and_their_mappings() -> None:
    s = settings_from_dict({"rules": {"packs": ["nagios", "zabbix"]},
                            "packs": {"nagios": {"product_group": "servers",
                                                 "alert_types": {"Host Down": "Down"},
                                                 "senders": ["nagios@mon.acme.example"],
                                                 "require_authentication": False}}})
    sel = PackSelection.from_settings(s)
    assert sel.names == ("nagios", "zabbix")
    assert sel.mappings["nagios"].alert_types == {"Host Down": "Down"}
    assert sel.mappings["nagios"].senders == ("nagios@mon.acme.example",)


def test_packs_command_lists_the_shipped_packs() -> None:
    listed = cli("packs", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    names = [p["name"] for p in json.loads(listed.stdout)]
    assert names == available()
    unknown = cli("packs", "show", "no-such-pack")
    assert unknown.returncode == 1 and b"unknown pack" in unknown.stderr
