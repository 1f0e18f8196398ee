"""Building v2 `[[tool]]`, `[[detect]]` and `[[skip]]` rules from their tables.

A tool is read once as if it were a detect rule (types, regexes, templates' syntax; problems on
the tool's own lines), then every rule that names it is read over its table merged with the
tool's defaults — which is where fields are checked, because a tool's title may name a capture
only its rules define. See docs/rules-v2-format.md.
"""

from __future__ import annotations

from dataclasses import replace

from bridge.classify.account_rule import AccountRule
from bridge.classify.captures import Capture
from bridge.classify.fields import V2_BUILTINS
from bridge.classify.matchers import Matcher
from bridge.classify.model import DetectRule, SkipRule, StatusPhrases, read_matcher
from bridge.classify.reader import TableReader
from bridge.classify.templates import Template
from bridge.classify.tool import Tool, account_tables
from bridge.classify.v2read import (check_template, known_fields, read_captures,
                                    read_conditions, read_keys, read_map, read_status)
from bridge.classify.view import BODY_CHOICES

_V2 = {
    "tool": "name of the [[tool]] whose defaults this rule inherits",
    "capture": "list of { in, regex, optional, case_sensitive }: named groups become fields",
    "body": "which body the rule reads: auto (default), text or html",
}
DETECT_KEYS = {**DetectRule.KEYS, **_V2,
               "require": "captures that must be non-empty (default: those of the last key)",
               "status": "status table: order, from, map, open, resolved, update, in, default"}
SKIP_KEYS = {**SkipRule.KEYS, **_V2}
TOOL_KEYS = {**{k: v for k, v in DETECT_KEYS.items() if k != "tool"},
             "name": "unique name of the tool (rules say tool = \"name\")",
             "account": "account rule tables for this tool's mail only"}
ACCOUNT_KEYS = {k: v for k, v in AccountRule.KEYS.items() if k not in ("name", "for_rules")}


def _resolve(r: TableReader, tools: dict[str, Tool]) -> Tool | None:
    name = r.table.get("tool")
    if name is None:
        return None
    tool = tools.get(name) if isinstance(name, str) else None
    if tool is None:
        r.problem(f"tool {name!r} is not defined (a [[tool]] must come before the rules "
                  "that use it: earlier in the file or in an earlier file)", "tool")
    elif tool.file == r.rule_file and (tool.line or 0) > (r.line() or 0):
        r.problem(f"tool {name!r} is defined after this rule; move its [[tool]] up", "tool")
        return None
    return tool


def _detect(r: TableReader, status: StatusPhrases, tool: str, tool_mode: bool) -> DetectRule:
    captures = read_captures(r)
    key_regex = r.regex("key_regex")
    if key_regex is not None:  # as in v1, its named groups are fields too
        captures += (Capture("subject", key_regex, optional=True),)
    names = frozenset(n for c in captures for n in c.names)
    matcher = read_matcher(r, read_conditions(r, names))
    product_group, pg_map = read_map(r, "product_group", required=not tool_mode)
    alert_type, at_map = read_map(r, "alert_type", required=not tool_mode)
    keys = read_keys(r)
    title = r.template("title", "{subject}") or Template.parse("{subject}")
    summary = r.template("summary", "{body}") or Template.parse("{body}")
    device = r.template("device")
    spec, _ = read_status(r, status, names)
    require = _require(r, keys, names)
    if not tool_mode:
        late = known_fields(names, decided=True, account=True)
        for key, template in (("title", title), ("summary", summary), ("device", device)):
            check_template(r, key, template, late)
        for template in keys:
            check_template(r, "key", template, late)
        early = known_fields(names, decided=False, account=True)
        for key, fmap in (("product_group", pg_map), ("alert_type", at_map)):
            check_template(r, key, fmap.source if fmap else None, early, ".from")
        for clash in sorted(names & V2_BUILTINS):
            r.problem(f"capture {clash!r} would hide the built-in field of that name",
                      "capture")
        if matcher.empty and not captures and r.errors == 0:
            r.problem("matches nothing: give sender, subject, conditions, capture, "
                      "ates_source or a tool with a sender")
    return DetectRule(
        name=r.label, file=r.rule_file, line=r.line(), matcher=matcher,
        product_group=product_group, alert_type=alert_type, title=title, summary=summary,
        device=device, key=None, key_regex=key_regex, status=spec.phrases,
        own_status=bool(spec.phrases.resolved or spec.mapping or spec.tables
                        or "status" in r.table or "resolved" in r.table),
        status_in=spec.where, require_authentication=r.flag("require_authentication"),
        coalesce_window=r.seconds("coalesce_window"),
        min_duration=r.seconds("min_duration") or 0.0, version=2, tool=tool,
        body=BODY_CHOICES[r.choice("body", tuple(BODY_CHOICES), "auto")], captures=captures,
        require=require, keys=keys, alert_type_map=at_map, product_group_map=pg_map, spec=spec)


def _require(r: TableReader, keys: tuple[Template, ...], names: frozenset[str]
             ) -> frozenset[str]:
    if "require" not in r.table:
        return keys[-1].fields & names if keys else frozenset()
    given = r.texts("require") if r.table["require"] != [] else ()
    unknown = sorted(set(given) - names)
    if unknown:
        r.problem(f"require names no capture: {', '.join(unknown)}", "require")
    return frozenset(given) & names


def read_tool(r: TableReader, status: StatusPhrases) -> tuple[Tool, list[AccountRule]]:
    before = r.errors
    probe = _detect(r, status, r.label, tool_mode=True)
    accounts = account_tables(r)
    r.finish(TOOL_KEYS)
    senders = probe.matcher.senders
    tool = Tool(r.label, r.rule_file, r.line(),
                {k: v for k, v in r.table.items() if k not in ("name", "account")},
                Matcher(senders), had_errors=r.errors > before,
                capture_names=probe.capture_names)
    rules = []
    for n, table in enumerate(accounts, start=1):
        ar = r.over(table, frozenset(), "", False)
        ar.label = f"{tool.name}/account-{n}"
        rule = AccountRule.read_v2(ar, status)
        ar.finish(ACCOUNT_KEYS)
        rules.append(replace(rule, name=ar.label, for_tool=tool.name))
    return tool, rules


def read_detect(r: TableReader, status: StatusPhrases, tools: dict[str, Tool]
                ) -> tuple[DetectRule, TableReader]:
    tool = _resolve(r, tools)
    if tool is None:
        rule = _detect(r, status, "", tool_mode=False)
        r.finish(DETECT_KEYS)
        return rule, r
    table, inherited = tool.merged(r.table, "detect")
    merged = r.over(table, inherited, tool.name, tool.had_errors)
    rule = _detect(merged, status, tool.name, tool_mode=False)
    if not {"sender", "subject", "conditions", "ates_source", "capture", "subject_regex",
            "body_regex"} & set(r.table):
        r.problem(f"no match key, capture or condition of its own: it takes all mail of tool "
                  f"{tool.name!r} (rules after it that use the tool are then unreachable)",
                  severity="warning")
    r.finish(DETECT_KEYS)
    r.errors += merged.errors
    return rule, merged


def read_skip(r: TableReader, status: StatusPhrases, tools: dict[str, Tool]) -> SkipRule:
    tool = _resolve(r, tools)
    own_keys = {"sender", "subject", "conditions", "ates_source", "capture"} & set(r.table)
    table, inherited = tool.merged(r.table, "skip") if tool is not None else (r.table, frozenset())
    m = r.over(table, inherited, tool.name, tool.had_errors) if tool is not None else r
    captures = read_captures(m)
    matcher = read_matcher(m, read_conditions(m, frozenset(n for c in captures
                                                           for n in c.names)))
    forward = m.text("forward_to")
    if forward is not None and "@" not in forward:
        m.problem(f"forward_to {forward!r} is not an e-mail address", "forward_to")
    only_tool = None
    if tool is not None:
        if "sender" in r.table and tool.senders:
            matcher = replace(matcher, gate=tool.senders)
        elif not tool.senders:
            only_tool = tool.name
        if not own_keys:
            r.problem(f"no match key of its own: it skips all mail of tool {tool.name!r}",
                      severity="warning")
    elif matcher.empty and not captures and r.errors == 0:
        r.problem("matches nothing: give sender, subject, conditions, capture or ates_source")
    r.finish(SKIP_KEYS)
    r.errors += m.errors if m is not r else 0
    return SkipRule(name=r.label, file=r.rule_file, line=r.line(), matcher=matcher,
                    forward_to=forward, version=2, tool=tool.name if tool else "",
                    body=BODY_CHOICES[m.choice("body", tuple(BODY_CHOICES), "auto")],
                    captures=captures, only_tool=only_tool)
