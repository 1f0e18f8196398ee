"""`rules migrate`: v1 rule files rewritten as v2 (`format = 2`) with identical outcomes.

A pure function of the files' texts. What changes between v1 and v2 and what each v1 rule
becomes (docs/rules.md, "Migrating v1 files"):

- status order: v1 tries open → resolved → update, v2 resolved first; every detect rule gets
  an explicit `order = ["open", "resolved", "update"]` in its `status` table, beside its own
  phrase lists (`open`/`resolved`/`update`) and `status_in` (as `in`);
- `subject_regex`/`body_regex` are optional in v1 and required in v2: each becomes a
  `capture` entry with `optional = true`; a `key_regex` beside a `key` only ever gave fields
  in v1 (the template wins), so it becomes a capture too;
- a v1 key template is all-or-nothing and falls back to the default key: it becomes the list
  `[template, "{account}:{alert_type}:{subject_key}"]`, which ends where v1 fell back. Its
  last template uses no capture, so v2's default `require` is empty and the rule matches
  exactly when the v1 rule did (no `require = []` needed);
- v2 reads the HTML part when the text part is a stub; v1 always the text part: `body =
  "text"` on every detect rule (and on a skip rule with a condition on the body).

Detect rules of one sender (or one ATES source) are grouped under a `[[tool]]` holding what
all of them share — when that makes the file shorter. A tool's `sender` is hoisted only when
one of its rules matches every mail of that sender already: a tool's sender is also a
catch-all detect rule, and it must not make automated a mail that v1 left regular. Skip,
account and `[status]` tables keep their text, comments included. Every file written is read
back with tomllib and compared with the tables it was meant to hold.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any, Sequence

from bridge.classify.fields import is_builtin
from bridge.classify.migrate_render import (RuleDraft, is_table, render_file, rule_lines,
                                            tool_lines)
from bridge.classify.migrate_source import SourceFile, SourceTable, read_source
from bridge.classify.templates import BUILTIN_FIELDS

V1_ORDER = ["open", "resolved", "update"]
FALLBACK_KEY = "{account}:{alert_type}:{subject_key}"
# Tool keys a rule inherits (docs/rules.md, "[[tool]]"), in the order a tool block shows them.
HOISTABLE = ("sender", "product_group", "alert_type", "require_authentication", "body",
             "capture", "key", "title", "summary", "device", "coalesce_window",
             "min_duration", "status")
_MATCH_KEYS = ("subject", "conditions", "ates_source")
_STATUS_KEYS = {"open": "open", "resolved": "resolved", "update": "update", "status_in": "in"}
_REGEX_KEYS = ("subject_regex", "body_regex", "key_regex")
_SLUG = re.compile(r"[^a-z0-9]+")
_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>")
_FIELD = re.compile(r"\{\{|\}\}|\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")
_TEMPLATES = ("title", "summary", "device", "key")


class MigrateError(ValueError):
    """A file that cannot be migrated (not TOML), or a writer bug caught by the read-back."""


@dataclass(frozen=True)
class Migrated:
    name: str
    text: str
    changed: bool

    @property
    def lines(self) -> int:
        return len(self.text.splitlines())


def file_format(data: dict[str, Any]) -> int:
    value = data.get("format", 1)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_rule_file(data: dict[str, Any]) -> bool:
    """An accounts file of `[[accounts]]` may sit in the rule directory: it is no rule file."""
    return not ("accounts" in data and set(data) <= {"accounts"})


def migrate_files(files: Sequence[tuple[str, str]]) -> list[Migrated]:
    """Every file of a rule directory (name, text), in file-name order; v2 files, format 0
    files and non-rule files come back unchanged."""
    parsed = []
    for name, text in files:
        try:
            parsed.append((name, text, tomllib.loads(text)))
        except tomllib.TOMLDecodeError as exc:
            raise MigrateError(f"{name}: TOML syntax error: {exc}") from exc
    taken = {t["name"] for _, _, data in parsed if file_format(data) != 1
             for t in _tables(data.get("tool")) if isinstance(t.get("name"), str)}
    out = []
    for name, text, data in parsed:
        if file_format(data) != 1 or not is_rule_file(data):
            out.append(Migrated(name, text, False))
        else:
            out.append(migrate_file(name, text, data, taken))
    return out


def _tables(value: Any) -> list[dict[str, Any]]:
    return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []


# -- one detect rule ------------------------------------------------------------------------

def _regex_list(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _named_groups(pattern: str) -> bool:
    try:
        return bool(re.compile(pattern).groupindex)
    except re.error:
        return True       # keep it: the loader reports the bad regex with its line


def clashing_groups(table: dict[str, Any]) -> dict[str, str]:
    """Capture names that v2 made built-in fields (`to`, `tool`, `subject_key`, `token_id`):
    old name -> a free new one. v1 let a rule capture them; in v2 they would hide the
    built-in field, which is a load error."""
    names = {g for k in _REGEX_KEYS for rx in _regex_list(table.get(k)) or ()
             for g in _GROUP.findall(rx)}
    renames = {}
    for name in sorted(n for n in names if is_builtin(n) and n not in BUILTIN_FIELDS):
        new = f"{name}_captured"
        while new in names:
            new += "_"
        renames[name] = new
    return renames


def _renamed(table: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    def regex(rx: str) -> str:
        for old, new in renames.items():
            rx = rx.replace(f"(?P<{old}>", f"(?P<{new}>").replace(f"(?P={old})", f"(?P={new})")
        return rx

    def template(text: str) -> str:
        return _FIELD.sub(lambda m: "{" + renames[m.group(1)] + "}"
                          if m.group(1) in renames else m.group(0), text)
    out = dict(table)
    for k in _REGEX_KEYS:
        if isinstance(out.get(k), str):
            out[k] = regex(out[k])
        elif _regex_list(out.get(k)) is not None:
            out[k] = [regex(rx) for rx in out[k]]
    for k in _TEMPLATES:
        if isinstance(out.get(k), str):
            out[k] = template(out[k])
    return out


def convert_detect(table: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """A v1 [[detect]] table as v2, and which new key each moved key went to."""
    table = _renamed(table, clashing_groups(table))
    out: dict[str, Any] = {}
    moved: dict[str, str] = {}
    captures: dict[str, list[dict[str, Any]]] = {}
    status: dict[str, Any] = {"order": list(V1_ORDER)}
    for k, v in table.items():
        if k in _STATUS_KEYS:
            status[_STATUS_KEYS[k]] = v
            moved[k] = "status"
            continue
        regexes = _regex_list(v) if k in _REGEX_KEYS else None
        if regexes is None or (k == "key_regex" and "key" not in table):
            # not a regex key; or a key_regex that makes the key; or a bad value the
            # loader will report with its line
            if k == "key" and isinstance(v, str) and v.strip() != FALLBACK_KEY:
                v = [v, FALLBACK_KEY]
            out[k] = v
            continue
        moved[k] = "capture"
        out.setdefault("capture", None)        # keeps the captures where the regexes were
        if k == "key_regex" and not _named_groups(regexes[0]):
            continue                           # beside a key it only ever gave fields
        where = "body" if k == "body_regex" else "subject"
        # v1 read its regexes stripped, as every other text
        captures[k] = [{"in": where, "regex": r.strip(), "optional": True} for r in regexes]
    if "capture" in out:
        # v1 applies subject, then body, then key_regex captures, whatever the key order
        merged = [c for k in _REGEX_KEYS for c in captures.get(k, [])]
        if merged:
            out["capture"] = merged
        else:
            del out["capture"]
    out["body"] = "text"
    out["status"] = {k: status[k] for k in ("order", "in", "open", "resolved", "update")
                     if k in status}
    return out, moved


def _rule(table: dict[str, Any], source: SourceTable | None) -> RuleDraft:
    v2, moved = convert_detect(table)
    comments: dict[str, str] = {}
    notes: dict[str, list[str]] = {}
    if source is not None:
        for old, comment in source.key_comments.items():
            new = moved.get(old)
            if new is None:
                comments[old] = comment
            elif new == "status":
                comments[f"status.{_STATUS_KEYS[old]}"] = comment
            else:
                notes.setdefault(new, []).append(comment)
        for old, lines in source.key_notes.items():
            notes.setdefault(moved.get(old, old), []).extend(lines)
    for old, new in clashing_groups(table).items():
        where = "capture" if "capture" in v2 else "key_regex"
        notes.setdefault(where, []).append(
            f"# migrate: the capture {old!r} is now {new!r}: v2 has a built-in field {old!r}")
    return RuleDraft(v2, source, comments, notes)


# -- tools ----------------------------------------------------------------------------------

def _group_key(table: dict[str, Any]) -> tuple[str, ...] | None:
    senders = _regex_list(table.get("sender"))
    if senders:
        return ("sender", *sorted(s.strip().lower() for s in senders))
    source = table.get("ates_source")
    return ("ates", source.strip().casefold()) if isinstance(source, str) else None


def _tool_name(rules: list[RuleDraft], group: tuple[str, ...], taken: set[str]) -> str:
    words = [str(r.table.get("name", "")).split("-") for r in rules]
    common: list[str] = []
    for parts in zip(*words):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    base = "-".join(common)
    if not base and group[0] == "sender":
        local, _, domain = group[1].partition("@")
        base = local.strip("*") or domain.strip("*.").split(".")[0]
    elif not base:
        base = group[1]
    base = _SLUG.sub("-", base.lower()).strip("-") or "tool"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def _shared(rules: list[RuleDraft], group: tuple[str, ...]) -> dict[str, Any]:
    shared: dict[str, Any] = {}
    tables = [r.table for r in rules]
    for k in HOISTABLE:
        values = [t.get(k) for t in tables]
        if k == "capture":
            prefix = []
            for entries in zip(*values) if all(values) else ():
                if any(e != entries[0] for e in entries):
                    break
                prefix.append(entries[0])
            if prefix:
                shared[k] = prefix
        elif values[0] is not None and all(v == values[0] for v in values):
            shared[k] = values[0]
    # A tool's sender is also a catch-all detect rule: hoist it only when a rule of the tool
    # takes every mail of that sender already, so the catch-all can never be reached.
    if "sender" in shared and (group[0] != "sender" or not any(
            not any(k in t for k in _MATCH_KEYS) for t in tables)):
        del shared["sender"]
    return shared


def _tool(name: str, shared: dict[str, Any], rules: list[RuleDraft]) -> RuleDraft:
    """The tool block, with the comments its members wrote on the keys it took over."""
    tool = RuleDraft({"name": name, **shared}, None)
    for rule in rules:
        for k, comment in rule.comments.items():
            if k.partition(".")[0] not in shared:
                continue
            if tool.comments.setdefault(k, comment) != comment:
                tool.notes.setdefault(k.partition(".")[0], []).append(comment)
        for k, lines in rule.notes.items():
            if k in shared:   # the same comment above each rule's key is written once
                mine = tool.notes.setdefault(k, [])
                mine += [line for line in lines if line not in mine]
    return tool


def _under_tool(rule: RuleDraft, tool: str, shared: dict[str, Any]) -> RuleDraft:
    # A rule whose only match key is the sender keeps it: without any match key of its own
    # it would take all of the tool's mail, which check warns about.
    keep = {"sender"} if not any(k in rule.table for k in _MATCH_KEYS) else set()
    table: dict[str, Any] = {}
    for k, v in rule.table.items():
        if k == "capture" and "capture" in shared:
            rest = v[len(shared["capture"]):]
            if rest:
                table[k] = rest
        elif k not in shared or k in keep:
            table[k] = v
        if k == "name":
            table["tool"] = tool
    if "tool" not in table:
        table = {"tool": tool, **table}
    # the comments of the keys the tool took over went there with them
    moved = {k for k in shared if k not in table or k == "capture"}
    comments = {k: c for k, c in rule.comments.items() if k.partition(".")[0] not in moved}
    notes = {k: lines for k, lines in rule.notes.items() if k not in moved}
    return RuleDraft(table, rule.source, comments, notes)


# -- the file -------------------------------------------------------------------------------

def _matched(src: SourceFile, data: dict[str, Any]) -> bool:
    """Do the headers found in the text line up with tomllib's tables (every kind, so that
    a table written inline, `expect = [{ … }]`, is never left out of the copy)?"""
    kinds = {k for k, v in data.items() if is_table(v)} | {t.kind for t in src.tables}
    for kind in kinds:
        value = data.get(kind)
        expected = 1 if isinstance(value, dict) else len(_tables(value))
        if sum(1 for t in src.tables if t.kind == kind) != expected:
            return False
    return True


def _body_condition(table: dict[str, Any]) -> bool:
    return any(c.get("field") == "body" for c in _tables(table.get("conditions")))


def migrate_file(name: str, text: str, data: dict[str, Any], taken: set[str]) -> Migrated:
    src = read_source(text)
    if not _matched(src, data):
        src = SourceFile(src.lines, src.leading, src.top_end, [], src.trailing)
    by_kind = {(t.kind, t.index): t for t in src.tables}
    rules = [_rule(t, by_kind.get(("detect", i))) for i, t in enumerate(_tables(data.get("detect")))]
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, rule in enumerate(rules):
        key = _group_key(rule.table)
        if key is not None:
            groups.setdefault(key, []).append(i)
    tools: dict[int, RuleDraft] = {}               # first member's index -> its tool
    for group, members in groups.items():
        if len(members) < 2:
            continue
        shared = _shared([rules[i] for i in members], group)
        if not shared:
            continue
        tool = _tool(_tool_name([rules[i] for i in members], group, taken), shared,
                     [rules[i] for i in members])
        grouped = [_under_tool(rules[i], tool.table["name"], shared) for i in members]
        if _worth_it(tool, [rules[i] for i in members], grouped):
            tools[members[0]] = tool
            for i, rule in zip(members, grouped):
                rules[i] = rule
        else:
            taken.discard(tool.table["name"])
    skips = []
    for table in _tables(data.get("skip")):
        skips.append({**table, "body": "text"} if _body_condition(table) else table)
    expected = {k: v for k, v in data.items() if k != "format"}
    expected["format"] = 2
    for kind, tables in (("tool", [t.table for t in tools.values()]), ("detect", [r.table for r in rules]),
                         ("skip", skips)):
        if tables:
            expected[kind] = tables
    out = render_file(src, data, rules, tools, skips)
    try:
        back = tomllib.loads(out)
    except tomllib.TOMLDecodeError as exc:
        raise MigrateError(f"{name}: the migrated text is not TOML ({exc}); please report "
                           "this file") from exc
    if back != expected:
        raise MigrateError(f"{name}: the migrated text does not read back as written; "
                           "please report this file")
    return Migrated(name, out, out != text)


def _worth_it(tool: RuleDraft, before: list[RuleDraft], after: list[RuleDraft]) -> bool:
    """A tool block costs lines of its own: use it when the file gets no longer."""
    return len(tool_lines(tool)) + 1 + sum(len(rule_lines(r)) for r in after) <= \
        sum(len(rule_lines(r)) for r in before)
