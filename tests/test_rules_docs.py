"""docs/rules.md shows the shipped rule files and traces exactly, and documents every key."""

from __future__ import annotations

import re

from bridge.classify import classify, load_ruleset
from bridge.classify.account_rule import AccountRule
from bridge.classify.conditions import OPERATORS
from bridge.classify.model import STATUS_KEYS, DetectRule, SkipRule
from bridge.classify.templates import BUILTIN_FIELDS
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE
from tests.test_samples import ACCOUNTS, CTX, ROOT, RULES, SAMPLES

DOC = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
FILE_BLOCK = re.compile(r"File: `(rules/[^`]+)`\n\n```\w*\n(.*?)\n```", re.DOTALL)
TRACE_BLOCK = re.compile(r"trace (?:of|for) `samples/([\w.-]+\.eml)`[^\n]*:\n\n```\n(.*?)\n```",
                         re.DOTALL)


def test_every_shipped_rule_file_is_shown_verbatim() -> None:
    shown = dict(FILE_BLOCK.findall(DOC))
    shipped = {f"rules/{p.name}" for p in RULES.iterdir() if p.suffix in (".toml", ".csv")}
    assert set(shown) == shipped
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
    names = keys | set(OPERATORS) | BUILTIN_FIELDS
    missing = sorted(n for n in names if f"`{n}`" not in DOC)
    assert missing == []
