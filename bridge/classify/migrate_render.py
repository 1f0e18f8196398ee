"""The text of a migrated rule file: tables in their old order, comments where they were.

Detect rules and tool blocks are written anew (their keys changed); `[status]`, `[[skip]]`
and `[[account]]` tables are copied line for line from the v1 text, so their formatting and
every comment in them survive. Without usable line positions (see migrate_source) tables are
written anew in kind order, without comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bridge.classify import tomlwrite
from bridge.classify.migrate_source import SourceFile, SourceTable

_ORDER = ("status", "detect", "skip", "account")


@dataclass
class RuleDraft:
    """A detect rule on its way to v2: its table, and its comments under the new key names
    (`comments`: trailing, by key, `status.<key>` for the status table's; `notes`: comment
    lines written above a key)."""

    table: dict[str, Any]
    source: SourceTable | None
    comments: dict[str, str] = field(default_factory=dict)
    notes: dict[str, list[str]] = field(default_factory=dict)


def _keys(table: dict[str, Any], kind: str, comments: dict[str, str],
          notes: dict[str, list[str]]) -> list[str]:
    """A table's keys; its `status` last, on one line when it fits and has no comments, else
    as the `[kind.status]` sub-table (which must follow every plain key)."""
    lines: list[str] = []
    for k, v in table.items():
        if k != "status" or not isinstance(v, dict):
            lines += notes.get(k, [])
            lines += tomlwrite.assignment(k, v, comments.get(k))
    # Comments of keys that went away (a key_regex that only ever gave fields) are kept too.
    lines += [line for k, more in notes.items() if k not in table for line in more]
    lines += [c for k, c in comments.items() if k.partition(".")[0] not in table]
    status = table.get("status")
    if not isinstance(status, dict):
        return lines
    own = {k.partition(".")[2]: c for k, c in comments.items() if k.startswith("status.")}
    lines += notes.get("status", [])
    one = tomlwrite.assignment("status", status)
    if len(one) == 1 and len(one[0]) <= tomlwrite.WIDTH and not own:
        return lines + one
    lines += ["", f"[{kind}.status]"]
    for k, v in status.items():
        lines += tomlwrite.assignment(k, v, own.get(k))
    return lines


def rule_lines(rule: RuleDraft) -> list[str]:
    src = rule.source
    header = "[[detect]]" + (f"  {src.header_comment}" if src and src.header_comment else "")
    return [*(src.comments if src else ()), header,
            *_keys(rule.table, "detect", rule.comments, rule.notes)]


def tool_lines(tool: RuleDraft) -> list[str]:
    return ["[[tool]]", *_keys(tool.table, "tool", tool.comments, tool.notes)]


def _generic(kind: str, value: Any, source: SourceTable | None) -> list[str]:
    header = f"[[{tomlwrite.key(kind)}]]" if isinstance(value, list) else \
        f"[{tomlwrite.key(kind)}]"
    tables = value if isinstance(value, list) else [value]
    lines: list[str] = list(source.comments) if source else []
    for i, table in enumerate(tables):
        if i:
            lines.append("")
        lines += [header, *_keys(table, kind, {}, {})]
    return lines


def is_table(value: Any) -> bool:
    return isinstance(value, dict) or (isinstance(value, list) and bool(value)
                                       and all(isinstance(v, dict) for v in value))


def render_file(src: SourceFile, data: dict[str, Any], rules: list[RuleDraft],
                tools: dict[int, RuleDraft], skips: list[dict[str, Any]]) -> str:
    blocks: list[list[str]] = []
    if src.leading:
        blocks.append(src.leading)
    top = ["format = 2"]
    for k, v in data.items():
        if k != "format" and not is_table(v):
            top += tomlwrite.assignment(k, v)
    blocks.append(top)

    def detect(i: int) -> None:
        if i in tools:
            blocks.append(tool_lines(tools[i]))
        blocks.append(rule_lines(rules[i]))

    if src.tables:
        for t in src.tables:
            if t.kind == "detect":
                detect(t.index)
            elif t.kind == "skip" and skips[t.index] != data["skip"][t.index]:
                blocks.append(_generic("skip", [skips[t.index]], t))
            else:
                blocks.append([*t.comments, *src.text(t)])
    else:
        kinds = [*_ORDER, *(k for k in data if k not in _ORDER)]
        for kind in kinds:
            value = data.get(kind)
            if kind == "detect":
                for i in range(len(rules)):
                    detect(i)
            elif kind == "skip" and skips:
                blocks.append(_generic("skip", skips, None))
            elif is_table(value):
                blocks.append(_generic(kind, value, None))
    if src.trailing:
        blocks.append(src.trailing)
    return "\n\n".join("\n".join(b) for b in blocks) + "\n"
