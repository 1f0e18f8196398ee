"""docs/rules.md shows the shipped rule files, its worked examples and traces exactly, and
documents every key."""

from __future__ import annotations

import re

from bridge.classify import classify, load_ruleset
from bridge.classify.account_rule import AccountRule
from bridge.classify.conditions import OPERATORS
from bridge.classify.model import STATUS_KEYS, DetectRule, SkipRule
from bridge.classify.fields import V2_BUILTINS
from bridge.classify.status import MODES
from bridge.classify.templates import BUILTIN_FIELDS
from bridge.classify.v2read import STATUS_TABLE_KEYS
from bridge.classify.v2rules import DETECT_KEYS, SKIP_KEYS, TOOL_KEYS
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE
from tests.test_samples import ACCOUNTS, CTX, ROOT, RULES, SAMPLES

DOC = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
FILE_BLOCK = re.compile(r"File: `((?:rules|docs/examples/rules)/[^`]+)`\n\n```\w*\n(.*?)\n```",
                        re.DOTALL)
EXAMPLES = ROOT / "docs" / "examples" / "rules"
TRACE_BLOCK = re.compile(r"trace (?:of|for) `samples/([\w.-]+\.eml)`[^\n]*:\n\n```\n(.*?)\n```",
                         re.DOTALL)


def test_every_shipped_rule_file_and_example_is_shown_verbatim() -> None:
    shown = dict(FILE_BLOCK.findall(DOC))
    shipped = {f"rules/{p.name}" for p in RULES.iterdir() if p.suffix in (".toml", ".csv")}
    examples = {f"docs/examples/rules/{p.name}" for p in EXAMPLES.glob("*.toml")}
    assert set(shown) == shipped | examples
    for name, text in shown.items():
        assert text == (ROOT / name).read_text(encoding="utf-8").rstrip("\n"), name


def test_traces_in_the_docs_are_current() -> None:
    rules = load_ruleset(RULES, ACCOUNTS, CATALOGUE)
    traces = TRACE_BLOCK.findall(DOC)
    assert len(traces) == DOC.count("trace of `samples/") + DOC.count("trace for `samples/") == 4
    for name, shown in traces:
        c = classify(parse((SAMPLES / name).read_bytes()), rules, CTX)
        assert shown == "\n".join(c.steps), name


def test_every_key_operator_and_field_is_documented() -> None:
    keys = set(DetectRule.KEYS) | set(SkipRule.KEYS) | set(AccountRule.KEYS) | set(STATUS_KEYS)
    keys |= set(DETECT_KEYS) | set(SKIP_KEYS) | set(TOOL_KEYS) | set(STATUS_TABLE_KEYS)
    names = keys | set(OPERATORS) | BUILTIN_FIELDS | V2_BUILTINS | set(MODES)
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert missing == []
