"""Reading the v2 constructs of one rule table: captures, nested conditions, key lists, maps
and the status table (docs/rules-v2-format.md). Problems go through the rule's TableReader,
so they carry the file, line and rule like every v1 problem.

Which fields a place may name is decided here, once, at load: conditions and captures run at
detection (no account, device, status, alert type or product group yet); a map's or status's
`from` runs before those are decided; templates see everything. A name that is neither built
in nor captured by the rule or its tool is a load error, so nothing is unknown at run time.
"""

from __future__ import annotations

from typing import Any, Callable

from bridge.classify.captures import Capture, compile_regex
from bridge.classify.conditions import Condition, ConditionGroup
from bridge.classify.fieldmap import FieldMap
from bridge.classify.fields import ACCOUNT_FIELDS, DECIDED, is_builtin
from bridge.classify.model import StatusPhrases
from bridge.classify.reader import TableReader
from bridge.classify.status import MODES, STATUSES, V2_ORDER, StatusSpec, TablePhrase
from bridge.classify.templates import Template, TemplateError
from bridge.classify.text import PhraseSet, fold
from bridge.models import Status

MAX_DEPTH = 8
Known = Callable[[str], bool]


def known_fields(captures: frozenset[str], *, decided: bool, account: bool) -> Known:
    """Which field names a place may use."""
    def ok(name: str) -> bool:
        if name in captures:
            return True
        if not is_builtin(name):
            return False
        return (decided or name not in DECIDED) and (account or name not in ACCOUNT_FIELDS)
    return ok


def check_template(r: TableReader, key: str, template: Template | None, known: Known,
                   where: str = "") -> None:
    if template is None:
        return
    bad = sorted(f for f in template.fields if not known(f))
    if bad:
        r.problem(f"{key}{where} uses unknown or not-yet-decided field(s) {', '.join(bad)} "
                  "(built-in fields, header.<Name>, or the rule's and its tool's captures)",
                  key)


def parse_template(r: TableReader, key: str, source: object) -> Template | None:
    if not isinstance(source, str) or not source.strip():
        r.problem(f"{key} must be a non-empty template string", key)
        return None
    try:
        return Template.parse(source.strip())
    except TemplateError as exc:
        r.problem(f"{key}: {exc}", key)
        return None


def read_captures(r: TableReader) -> tuple[Capture, ...]:
    """`capture` entries, then v1's subject_regex/body_regex, which are required in v2."""
    found: list[Capture] = []
    raw = r.table.get("capture", [])
    entries = raw if isinstance(raw, list) else [raw]
    names: set[str] = set()
    for i, e in enumerate(entries, start=1):
        if not isinstance(e, dict) or not isinstance(e.get("regex"), str) or \
                set(e) - {"in", "regex", "optional", "case_sensitive"} or \
                not isinstance(e.get("in", "subject"), str) or \
                not all(isinstance(e.get(k, False), bool) for k in ("optional", "case_sensitive")):
            r.problem(f"capture {i} must be {{ in = \"subject\", regex = '…', optional = false, "
                      "case_sensitive = false }", "capture")
            continue
        field = e.get("in", "subject").strip()
        if not known_fields(frozenset(names), decided=False, account=False)(field):
            r.problem(f"capture {i}: in = {field!r} is not a field (subject, body, "
                      "header.<Name>, an earlier capture …)", "capture")
            continue
        rx = _regex(r, "capture", e["regex"], e.get("case_sensitive", False), f"capture {i}")
        if rx is not None:
            found.append(Capture(field, rx, e.get("optional", False)))
            names |= set(rx.groupindex)
    for key, field in (("subject_regex", "subject"), ("body_regex", "body")):
        for rx in r.regexes(key):
            found.append(Capture(field, rx))
    return tuple(found)


def _regex(r: TableReader, key: str, source: str, case_sensitive: bool, what: str
           ) -> Any:
    try:
        rx = compile_regex(source, case_sensitive)
    except Exception as exc:  # re.error, or the RE2 layer's error
        r.problem(f"{what}: bad regex: {exc}", key)
        return None
    if rx.search("") is not None:
        r.problem(f"{what} matches the empty string, so it matches every message", key,
                  "warning")
    return rx


def read_conditions(r: TableReader, captures: frozenset[str]) -> ConditionGroup | None:
    """v1's list + match, or a nested { all = [...] } / { any = [...] } group."""
    raw = r.table.get("conditions")
    if raw is None:
        if "match" in r.table:
            r.problem("match only applies to conditions, and this rule has none", "match",
                      "warning")
        return None
    known = known_fields(captures, decided=False, account=False)
    match_any = r.choice("match", ("all", "any"), "all") == "any"
    if isinstance(raw, list):
        return _group(r, raw, match_any, known, 1)
    if isinstance(raw, dict) and len(raw) == 1 and set(raw) <= {"all", "any"}:
        if "match" in r.table:
            r.problem("match does not apply to a { all/any = [...] } group", "match")
        item = _item(r, raw, known, 1)
        return ConditionGroup((item,)) if isinstance(item, Condition) else item
    r.problem("conditions must be a list of { field, op, value } or { all = [...] } / "
              "{ any = [...] }", "conditions")
    return None


def _group(r: TableReader, items: list[Any], match_any: bool, known: Known, depth: int
           ) -> ConditionGroup | None:
    if depth > MAX_DEPTH:
        r.problem(f"conditions nest deeper than {MAX_DEPTH} groups", "conditions")
        return None
    if not items:
        r.problem("a condition group must not be empty", "conditions")
        return None
    built = [_item(r, c, known, depth) for c in items]
    parts = tuple(c for c in built if c is not None)
    return ConditionGroup(parts, match_any) if len(parts) == len(built) else None


def _item(r: TableReader, c: Any, known: Known, depth: int) -> Condition | ConditionGroup | None:
    if isinstance(c, dict) and len(c) == 1 and set(c) <= {"all", "any"}:
        (kind, items), = c.items()
        if not isinstance(items, list):
            r.problem(f"{kind} must be a list of conditions or groups", "conditions")
            return None
        return _group(r, items, kind == "any", known, depth + 1)
    op = c.get("op", c.get("operator")) if isinstance(c, dict) else None
    if not isinstance(c, dict) or set(c) - {"field", "op", "operator", "value",
                                            "case_sensitive"} or \
            not all(isinstance(c.get(k), str) for k in ("field", "value")) or \
            not isinstance(op, str) or not isinstance(c.get("case_sensitive", False), bool):
        r.problem("a condition is { field = \"…\", op = \"…\", value = \"…\", "
                  "case_sensitive = false } or a group { all/any = [...] }", "conditions")
        return None
    try:
        return Condition.compile(c["field"], op, c["value"],
                                 case_sensitive=c.get("case_sensitive", False), valid=known,
                                 help="a built-in field, header.<Name>, token.<attr> or a "
                                      "capture (account, device, status, alert_type and "
                                      "product_group are not known yet)")
    except ValueError as exc:
        r.problem(f"condition: {exc}", "conditions")
        return None


def read_keys(r: TableReader) -> tuple[Template, ...]:
    raw = r.table.get("key")
    if raw is None:
        return ()
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        r.problem("key must be a template or a non-empty list of templates", "key")
    found = (parse_template(r, "key", s) for s in items)
    return tuple(t for t in found if t is not None)


def read_map(r: TableReader, key: str, required: bool = True) -> tuple[str, FieldMap | None]:
    """A plain value, or { from, map, default }: (the plain value or default, the map)."""
    raw = r.table.get(key)
    if not isinstance(raw, dict):
        return r.text(key, required=required) or "", None
    if set(raw) - {"from", "map", "default"}:
        r.problem(f"{key} map takes from, map and default", key)
    default = raw.get("default")
    if not isinstance(default, str) or not default.strip():
        r.problem(f"{key} map needs a default (a map must never fail at run time)", key)
        default = ""
    source = parse_template(r, f"{key}.from", raw.get("from"))
    table = raw.get("map")
    if not isinstance(table, dict) or not all(isinstance(v, str) and v.strip()
                                              for v in table.values()):
        r.problem(f"{key} map needs map = {{ VALUE = \"result\", … }}", key)
        table = {}
    if source is None:
        return default.strip(), None
    folded = {fold(str(k)): v.strip() for k, v in table.items()}
    return default.strip(), FieldMap(source, folded, default.strip())


STATUS_TABLE_KEYS = ("order", "from", "map", "open", "resolved", "update", "in", "default")
_FLAT = ("open", "resolved", "update", "status_in")


def read_status(r: TableReader, base: StatusPhrases, captures: frozenset[str]
                ) -> tuple[StatusSpec, bool]:
    """The `status` table (or v1's flat keys, which mean the same in v2): (spec, own)."""
    table = r.table.get("status")
    flat = {k: r.table[k] for k in _FLAT if k in r.table}
    if table is not None and flat:
        r.problem("give status as a `status` table or as open/resolved/update/status_in keys, "
                  "not both", "status")
    if table is None:
        table = {("in" if k == "status_in" else k): v for k, v in flat.items()}
    if not isinstance(table, dict):
        r.problem("status must be a table", "status")
        table = {}
    for k in set(table) - set(STATUS_TABLE_KEYS):
        r.problem(f"unknown status key {k!r}; known: {', '.join(STATUS_TABLE_KEYS)}", "status")
    order = table.get("order", list(V2_ORDER))
    if not isinstance(order, list) or not order or len(set(order)) != len(order) or \
            not set(order) <= set(STATUSES):
        r.problem("status order is a list of open, resolved, update (each at most once)",
                  "status")
        order = list(V2_ORDER)
    early = known_fields(captures, decided=False, account=True)
    where = table.get("in", "subject")
    if not isinstance(where, str) or not (where in ("subject", "body", "both") or early(where)):
        r.problem(f"status in = {where!r} is not subject, body, both or a field", "status")
        where = "subject"
    lists: dict[str, PhraseSet] = {}
    tables: list[tuple[Status, TablePhrase]] = []
    for status in STATUSES:
        if status in table:
            lists[status] = _phrases(r, status, table[status], early, tables)
    source = parse_template(r, "status.from", table["from"]) if "from" in table else None
    check_template(r, "status", source, early, ".from")
    mapping = None
    if "map" in table:
        raw = table["map"]
        if not isinstance(raw, dict) or not all(v in STATUSES for v in raw.values()):
            r.problem("status map values must be open, resolved or update", "status")
        else:
            mapping = {fold(str(k)): v for k, v in raw.items()}
        if source is None:
            r.problem("status map needs from = \"{field}\"", "status")
    default = table.get("default", "open")
    if default not in STATUSES:
        r.problem("status default must be open, resolved or update", "status")
        default = "open"
    phrases = StatusPhrases(lists.get("open", base.open), lists.get("resolved", base.resolved),
                            lists.get("update", base.update))
    return StatusSpec(phrases, tuple(order), tuple(tables), where, source, mapping,
                      default), bool(table)


def _phrases(r: TableReader, status: Status, raw: Any, known: Known,
             tables: list[tuple[Status, TablePhrase]]) -> PhraseSet:
    items = raw if isinstance(raw, list) else [raw]
    plain: list[str] = []
    for item in items:
        if isinstance(item, str) and item.strip():
            plain.append(item.strip())
            continue
        ok = isinstance(item, dict) and isinstance(item.get("phrase"), str) and \
            item["phrase"].strip() and not set(item) - {"phrase", "mode", "in",
                                                        "case_sensitive"} and \
            item.get("mode", "word") in MODES and \
            isinstance(item.get("case_sensitive", False), bool)
        where = item.get("in") if isinstance(item, dict) else None
        if ok and where is not None and not (isinstance(where, str) and (
                where in ("subject", "body", "both") or known(where))):
            r.problem(f"status phrase in = {where!r} is not subject, body, both or a field",
                      "status")
            continue
        if not ok:
            r.problem(f"{status} phrases are strings or {{ phrase = \"…\", mode = "
                      f"\"{'|'.join(MODES)}\", in = \"subject\", case_sensitive = false }}",
                      "status")
            continue
        assert isinstance(item, dict)
        tables.append((status, TablePhrase.build(item["phrase"].strip(),
                                                 item.get("mode", "word"), where,
                                                 item.get("case_sensitive", False))))
    return PhraseSet.of(plain)
