"""The v2 engine can say exactly what v1 says: each shipped rule file, rewritten mechanically
as v2 with v1's meaning spelled out (optional captures, `require = []`, status order open →
resolved → update, `body = "text"`), gives the same outcomes as the v1 original on samples/
and on the corpus. This holds the v2 evaluation to v1's on every construct the shipped rules
use; it is not `rules migrate` (issue 16, another branch), only its semantic floor."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from bridge.classify import RuleSet, classify, load_ruleset
from bridge.models import Classification
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE
from tests.test_samples import ACCOUNTS, CTX, ROOT, SAMPLES

# The v1 originals of the shipped rules (rules/ itself is v2 since issue 16's migration).
RULES = ROOT / "tests" / "rules_v1"
CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus" / "zammad-mail"
MESSAGES = sorted(SAMPLES.glob("*.eml")) + (sorted(CORPUS.glob("*.box")) if CORPUS.is_dir()
                                            else [])


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {_value(x)}" for k, x in v.items()) + " }"


def _as_v2(data: dict[str, Any]) -> str:
    out = ["format = 2"]
    for key, value in data.items():
        if isinstance(value, dict):
            out += [f"[{key}]"] + [f"{k} = {_value(v)}" for k, v in value.items()]
            continue
        for table in value:
            table = dict(table)
            if key == "detect":
                captures = []
                for k, field in (("subject_regex", "subject"), ("body_regex", "body")):
                    regexes = table.pop(k, [])
                    for rx in [regexes] if isinstance(regexes, str) else regexes:
                        captures.append({"in": field, "regex": rx, "optional": True})
                if captures:
                    table["capture"] = captures
                table["require"] = []
                status = {"order": ["open", "resolved", "update"]}
                status.update({k: table.pop(k) for k in ("open", "resolved", "update")
                               if k in table})
                if "status_in" in table:
                    status["in"] = table.pop("status_in")
                table["status"] = status
            if key in ("detect", "skip"):
                table["body"] = "text"
            out += [f"[[{key}]]"] + [f"{k} = {_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[RuleSet, RuleSet]:
    v2 = tmp_path_factory.mktemp("v2rules")
    for path in sorted(RULES.glob("*.toml")):
        (v2 / path.name).write_text(_as_v2(tomllib.loads(path.read_text("utf-8"))), "utf-8")
    return (load_ruleset(RULES, ACCOUNTS, CATALOGUE), load_ruleset(v2, ACCOUNTS, CATALOGUE))


def _outcome(c: Classification) -> tuple[Any, ...]:
    return (c.kind, c.rule, c.reason, c.alert, c.forward_to, c.account_how)


@pytest.mark.parametrize("path", MESSAGES, ids=[p.name for p in MESSAGES])
def test_v2_spelling_of_the_shipped_rules_gives_v1_outcomes(
        both: tuple[RuleSet, RuleSet], path: Path) -> None:
    v1, v2 = both
    message = parse(path.read_bytes())
    assert _outcome(classify(message, v2, CTX)) == _outcome(classify(message, v1, CTX))


def test_simulate_runs_the_v2_spelling_through_the_worker_pool(tmp_path: Path, psa_sim,
                                                              smtp_sink) -> None:
    from tests.helpers import ROOT, cli, write_config

    v2 = tmp_path / "v2rules"
    v2.mkdir()
    for path in sorted(RULES.glob("*.toml")):
        (v2 / path.name).write_text(_as_v2(tomllib.loads(path.read_text("utf-8"))), "utf-8")
    config = write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port)
    config.write_text(config.read_text().replace(f'directory = "{ROOT / "rules"}"',
                                                 f'directory = "{v2}"'))
    assert f'directory = "{v2}"' in config.read_text()
    result = cli("simulate", "--config", str(config), "--json",
                 str(SAMPLES / "01-nagios-problem.eml"), str(SAMPLES / "05-zabbix-problem.eml"))
    assert result.returncode == 0, result.stderr.decode()
    first, second = json.loads(result.stdout)
    assert (first["outcome"], first["alert_key"]) == ("created", "nagios:ACME-001:web01:HTTP")
    assert (second["outcome"], second["alert_key"]) == ("created", "zabbix:48213")
    assert psa_sim.calls() == []
