"""Rule files on disk -> one validated, immutable RuleSet, or every problem at once.

Every `*.toml` in the rule directory is read in file-name order (so `10-nagios.toml` runs
before `90-skip.toml`); the accounts file is read beside them (and skipped if it sits in the
same directory). Syntax errors carry tomllib's line; semantic errors the line of the key or
of the rule's `[[table]]` header. `load_ruleset` refuses a set with any error — a reload then
keeps the old set — and `check_ruleset` returns errors and warnings for `mailbridge check`.
"""

from __future__ import annotations

import difflib
import hashlib
import tomllib
from pathlib import Path
from typing import Any, Mapping

from bridge.classify import checks
from bridge.classify.account_rule import AccountRule
from bridge.classify.accounts import AccountsDirectory, load_accounts
from bridge.classify.checks_v2 import check_detect_v2, check_tool_skips
from bridge.classify.expect import ExpectRule, check_expect
from bridge.classify.model import (DEFAULT_STATUS, STATUS_KEYS, DetectRule, SkipRule,
                                   StatusPhrases, read_status)
from bridge.classify.rulepacks import PackSelection, add_packs, place_replacements
from bridge.classify.problems import LineMap, Problem, RuleSetError, toml_error_line
from bridge.classify.reader import TableReader
from bridge.classify.ruleset import RuleSet
from bridge.classify.tool import Tool
from bridge.classify.v2rules import read_detect, read_skip, read_tool

RULE_KINDS: dict[str, type[DetectRule] | type[SkipRule] | type[AccountRule] | type[ExpectRule]] = {
    "detect": DetectRule, "skip": SkipRule, "account": AccountRule, "expect": ExpectRule}
TABLES = (*RULE_KINDS, "status", "tool", "format")

__all__ = ["RULE_KINDS", "RuleSetError", "Problem", "check_ruleset", "load_ruleset"]


def _rule_files(directory: Path, accounts_path: Path | None) -> list[Path]:
    skip = accounts_path.resolve() if accounts_path is not None else None
    return sorted((p for p in directory.glob("*.toml")
                   if p.is_file() and p.resolve() != skip), key=lambda p: p.name)


def _read_status(parsed: list[tuple[Path, dict[str, Any], LineMap]],
                 problems: list[Problem]) -> StatusPhrases:
    status, first = DEFAULT_STATUS, None
    for path, data, linemap in parsed:
        if "status" not in data:
            continue
        if first is not None:
            problems.append(Problem(str(path), linemap.line("status"), None,
                                    f"[status] is already defined in {first}; keep one"))
            continue
        first = path.name
        table = data["status"]
        if not isinstance(table, dict):
            problems.append(Problem(str(path), linemap.top_level_key("status"), None,
                                    "status must be a table: [status]"))
            continue
        r = TableReader(table, "status", 0, str(path), linemap, problems)
        r.label = "[status]"
        status, _ = read_status(r, DEFAULT_STATUS)
        r.finish(STATUS_KEYS)
    return status


def _build(directory: Path, accounts_path: Path | None,
           catalogue: Mapping[str, frozenset[str]],
           selection: PackSelection | None = None
           ) -> tuple[RuleSet | None, list[Problem]]:
    directory, problems = Path(directory), []
    if not directory.is_dir():
        return None, [Problem(str(directory), None, None, "rule directory not found")]
    files = _rule_files(directory, accounts_path)
    digest = hashlib.sha256()
    parsed: list[tuple[Path, dict[str, Any], LineMap]] = []
    for path in files:
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(path), None, None, f"cannot read: {exc}"))
            continue
        digest.update(path.name.encode() + b"\0" + raw + b"\0")
        try:
            parsed.append((path, tomllib.loads(text), LineMap(text)))
        except tomllib.TOMLDecodeError as exc:
            line, msg = toml_error_line(str(exc))
            problems.append(Problem(str(path), line, None, f"TOML syntax error: {msg}"))
    pack_files = add_packs(selection, catalogue, parsed, problems, digest.update)
    if not files and not pack_files:
        problems.append(Problem(str(directory), None, None, "no *.toml rule files: no mail "
                                "will be recognised as automated", "warning"))

    status = _read_status(parsed, problems)
    loaded: list[checks.Loaded] = []
    tools: dict[str, Tool] = {}
    tool_accounts: list[tuple[AccountRule, TableReader]] = []
    for path, data, linemap in parsed:
        version = _format(path, data, linemap, problems)
        if version == 2:
            tool_accounts += _read_tools(path, data, linemap, problems, status, tools)
        for key, value in data.items():
            kind = RULE_KINDS.get(key)
            if kind is None:
                if key == "tool" and version == 1:
                    problems.append(Problem(str(path), linemap.line("tool"), None,
                                            "[[tool]] needs format = 2 at the top of the file"))
                elif key not in ("status", "tool", "format"):
                    close = difflib.get_close_matches(key, TABLES, n=1)
                    hint = f" (did you mean [[{close[0]}]]?)" if close else ""
                    line = linemap.line(key) or linemap.top_level_key(key)
                    problems.append(Problem(str(path), line, None, f"unknown table or key "
                                            f"{key!r}{hint}; rule files hold "
                                            "[[detect]], [[skip]], [[account]], [[expect]] and [status]"))
                continue
            if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
                problems.append(Problem(str(path), linemap.top_level_key(key), None,
                                        f"{key} rules are tables: write [[{key}]]"))
                continue
            for index, table in enumerate(value):
                r = TableReader(table, key, index, str(path), linemap, problems)
                if r.name is None:
                    r.problem("missing key 'name' (every rule needs a unique name)", "name")
                if version == 2 and kind is DetectRule:
                    loaded.append(read_detect(r, status, tools))
                    continue
                if version == 2 and kind is SkipRule:
                    loaded.append((read_skip(r, status, tools), r))
                    continue
                if version == 2 and kind is AccountRule:
                    loaded.append((AccountRule.read_v2(r, status), r))
                    r.finish(AccountRule.KEYS)
                    continue
                rule = kind.read(r, status)
                r.finish(kind.KEYS)
                loaded.append((rule, r))
    loaded = place_replacements(loaded, pack_files, lambda rl: rl.name, lambda r: r.file)

    accounts: AccountsDirectory | None = None
    unreadable_accounts = False
    if accounts_path is not None:
        accounts, account_problems = load_accounts(Path(accounts_path))
        problems.extend(account_problems)
        # One root cause, one error: an accounts file that cannot be read is not also six
        # account rules that "can never match".
        unreadable_accounts = not accounts.index["record-id"] and any(
            p.is_error for p in account_problems)
        try:
            digest.update(b"accounts\0" + Path(accounts_path).read_bytes())
        except OSError:
            pass

    detect = [(rl, r) for rl, r in loaded if isinstance(rl, DetectRule)]
    skip = [(rl, r) for rl, r in loaded if isinstance(rl, SkipRule)]
    account_rules = [*tool_accounts,
                     *((rl, r) for rl, r in loaded if isinstance(rl, AccountRule))]
    expect_rules = [(rl, r) for rl, r in loaded if isinstance(rl, ExpectRule)]
    checks.check_names(loaded)
    for rule, r in detect:
        checks.check_detect(rule, r, catalogue)
        checks.check_matcher(rule, r)
    for rule, r in skip:
        checks.check_matcher(rule, r)
    checks.check_shadowed(detect, "error")
    checks.check_shadowed(skip, "warning")
    for rule, r in detect:
        if rule.version == 2:
            check_detect_v2(rule, r, tools, [a for a, _ in account_rules])
    check_tool_skips(skip, [rl for rl, _ in detect])
    detect_names = frozenset(rl.name for rl, _ in detect)
    captured = frozenset(n for rl, _ in detect for n in rl.capture_names)
    for rule, r in account_rules:
        checks.check_account_rule(rule, r, None if unreadable_accounts else accounts,
                                  detect_names)
        checks.check_account_field(rule, r, captured)
    check_expect(expect_rules, detect_names,
                        frozenset(rl.name for rl, _ in skip), catalogue)
    if accounts_path is None and (detect or account_rules):
        problems.append(Problem(str(directory), None, None, "no accounts directory is "
                                "configured: every automated message will be unmatched",
                                "warning"))
    problems[:] = _one_cause_per_unmapped_pack(problems)
    if any(p.is_error for p in problems):
        return None, problems
    ruleset = RuleSet.build(
        [rl for rl, _ in detect], [rl for rl, _ in skip], [rl for rl, _ in account_rules],
        accounts, status, files=(*files, *pack_files), version=digest.hexdigest()[:12],
        accounts_file=Path(accounts_path) if accounts_path is not None else None,
        warnings=tuple(p for p in problems if not p.is_error), tools=list(tools.values()),
        expect=[rl for rl, _ in expect_rules])
    return ruleset, problems


def _format(path: Path, data: dict[str, Any], linemap: LineMap, problems: list[Problem]) -> int:
    """1 or 2: `format = 2` opts a file into rule language v2; absent or 1 is v1."""
    value = data.get("format", 1)
    if isinstance(value, bool) or value not in (1, 2):
        problems.append(Problem(str(path), linemap.top_level_key("format"), None,
                                "format must be 1 or 2"))
        return 1
    return int(value)


def _read_tools(path: Path, data: dict[str, Any], linemap: LineMap, problems: list[Problem],
                status: StatusPhrases, tools: dict[str, Tool]
                ) -> list[tuple[AccountRule, TableReader]]:
    raw = data.get("tool", [])
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        problems.append(Problem(str(path), linemap.top_level_key("tool"), None,
                                "tools are tables: write [[tool]]"))
        return []
    accounts: list[tuple[AccountRule, TableReader]] = []
    for index, table in enumerate(raw):
        r = TableReader(table, "tool", index, str(path), linemap, problems)
        if r.name is None:
            r.problem("missing key 'name' (every tool needs a unique name)", "name")
            continue
        if r.name in tools:
            first = tools[r.name]
            r.problem(f"duplicate tool name (first defined at {first.file}:{first.line})",
                      "name")
            continue
        tool, rules = read_tool(r, status)
        tools[tool.name] = tool
        accounts += [(rule, r) for rule in rules]
    return accounts


def _one_cause_per_unmapped_pack(problems: list[Problem]) -> list[Problem]:
    """A pack routed outside the catalogue is one error per value, naming the `[packs.NAME]`
    key that maps it; the same value is not reported again for each of the pack's rules."""
    unmapped = {p.rule for p in problems if p.rule and p.is_error and
                p.message.startswith(f"pack {p.rule!r}: ") and "map it with" in p.message}
    return [p for p in problems if not (
        p.is_error and p.rule and p.rule.partition("/")[0] in unmapped and "/" in p.rule
        and ("is not in product group" in p.message or "is not in the catalogue" in p.message))]


def load_ruleset(directory: Path, accounts_path: Path | None,
                 catalogue: Mapping[str, frozenset[str]],
                 packs: PackSelection | None = None) -> RuleSet:
    """The rule set of a directory and the enabled packs; raises RuleSetError listing every
    error (and warning)."""
    ruleset, problems = _build(Path(directory), accounts_path, catalogue, packs)
    if ruleset is None:
        raise RuleSetError(problems)
    return ruleset


def check_ruleset(directory: Path, accounts_path: Path | None,
                  catalogue: Mapping[str, frozenset[str]],
                  packs: PackSelection | None = None) -> list[Problem]:
    """Every error and warning, in file and line order (for `mailbridge check`)."""
    _, problems = _build(Path(directory), accounts_path, catalogue, packs)
    return sorted(problems, key=lambda p: (p.file, p.line or 0))
