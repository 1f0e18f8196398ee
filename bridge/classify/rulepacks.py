"""Rule packs: tested rules for the tools an MSP runs, shipped inside the package (issue 18).

A pack is a directory `packs/<name>/` beside this module: `pack.toml` (a rule file with a
`[pack]` table naming the tool, its versions and the sources the rules were written against)
and `samples/` (mail rebuilt from the tool's own templates, with `expected.toml`). The loader
reads the administrator's rule files first, then the packs enabled in `[rules] packs`, in that
order. Two hooks are all it calls:

- `add_packs` renames every rule and tool of a pack to `<pack>/<name>`, fits the pack's
  neutral product groups, alert types, senders and account detection onto the MSP through
  `[packs.<name>]`, names what the catalogue lacks, and appends the pack as one more file;
- `place_replacements` puts an administrator's rule named `<pack>/<rule>` where the pack's
  rule of that name stood, and drops the pack's: replacement in place, so precedence holds.

Everything works on the parsed TOML before any rule compiles, so the rule language (v1 or
v2) stays the loader's business.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar

from bridge.classify.problems import LineMap, Problem

if TYPE_CHECKING:
    from bridge.config import PackSettings, Settings

PACKS_ROOT = Path(__file__).with_name("packs")
# Tables whose `name` is a rule's or a tool's: renamed `<pack>/<name>`.
NAMED_TABLES = ("tool", "detect", "skip", "account")
# Where product groups and alert types can be written (a tool's are its rules' defaults).
ROUTED_TABLES = ("tool", "detect")
CONFIG_LABEL = "[rules] packs"

Parsed = tuple[Path, dict[str, Any], LineMap]
T = TypeVar("T")


@dataclass(frozen=True)
class PackInfo:
    """The `[pack]` table of one pack: what it is for and what it was written against."""

    name: str
    tool: str
    versions: str
    sources: tuple[str, ...]
    doc: str
    path: Path  # the pack's directory

    @property
    def file(self) -> Path:
        return self.path / "pack.toml"


@dataclass(frozen=True)
class PackMapping:
    """`[packs.<name>]`: the pack fitted onto one MSP (every field optional)."""

    product_group: str | Mapping[str, str] | None = None
    alert_types: Mapping[str, str] = field(default_factory=dict)
    senders: tuple[str, ...] | None = None
    account: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None
    require_authentication: bool | None = None

    @classmethod
    def of(cls, s: PackSettings) -> "PackMapping":
        return cls(s.product_group, dict(s.alert_types),
                   tuple(s.senders) if s.senders is not None else None, s.account,
                   s.require_authentication)


@dataclass(frozen=True)
class PackSelection:
    """The packs a config enables, in order, with their mappings; `root` holds the packs."""

    names: tuple[str, ...] = ()
    mappings: Mapping[str, PackMapping] = field(default_factory=dict)
    root: Path = PACKS_ROOT

    @classmethod
    def from_settings(cls, settings: Settings, root: Path = PACKS_ROOT) -> "PackSelection":
        return cls(tuple(settings.rules.packs),
                   {n: PackMapping.of(p) for n, p in settings.packs.items()}, root)


def available(root: Path = PACKS_ROOT) -> list[str]:
    """The names of the packs present, sorted."""
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "pack.toml").is_file())


def read_info(name: str, root: Path = PACKS_ROOT) -> PackInfo:
    """The `[pack]` table of one pack; raises OSError / tomllib.TOMLDecodeError / KeyError."""
    path = root / name
    meta = tomllib.loads((path / "pack.toml").read_text(encoding="utf-8")).get("pack", {})
    if not isinstance(meta, dict):
        raise KeyError(f"{name}: [pack] must be a table")
    sources = meta.get("sources", ())
    return PackInfo(name=name, tool=str(meta.get("tool", name)),
                    versions=str(meta.get("versions", "")),
                    sources=tuple(str(s) for s in sources) if isinstance(sources, list) else (),
                    doc=str(meta.get("doc", "")), path=path)


# -- the loader's first hook -------------------------------------------------------------------
def add_packs(selection: PackSelection | None, catalogue: Mapping[str, frozenset[str]],
              parsed: list[Parsed], problems: list[Problem],
              digest: Callable[[bytes], object]) -> list[Path]:
    """Append each enabled pack to `parsed` (renamed and mapped); returns the pack files."""
    if selection is None:
        return []
    present = available(selection.root)
    files: list[Path] = []
    tool_entries = 0
    for name in selection.names:
        if name not in present:
            close = difflib.get_close_matches(name, present, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(Problem(CONFIG_LABEL, None, None, f"unknown pack {name!r}{hint}; "
                                    f"packs are: {', '.join(present) or '(none)'}"))
            continue
        if name in selection.names[:selection.names.index(name)]:
            problems.append(Problem(CONFIG_LABEL, None, None, f"pack {name!r} is listed twice"))
            continue
        path = selection.root / name / "pack.toml"
        raw = path.read_bytes()
        text = raw.decode("utf-8")
        digest(f"pack:{name}".encode() + b"\0" + raw + b"\0")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            problems.append(Problem(str(path), None, None, f"TOML syntax error: {exc}"))
            continue
        mapping = selection.mappings.get(name, PackMapping())
        data = fit(name, data, mapping)
        linemap = LineMap(text)
        problems.extend(unmapped(name, str(path), data, mapping, catalogue, linemap))
        # The pack's tools go before the administrator's files, its rules after them: an
        # administrator's rule replacing a pack rule may use the pack's tool, which a file
        # read earlier could not otherwise name (a tool is defined before its rules).
        tools = data.pop("tool", None)
        if tools is not None:
            head = {"format": data["format"]} if "format" in data else {}
            parsed.insert(tool_entries, (path, {**head, "tool": tools}, linemap))
            tool_entries += 1
        parsed.append((path, data, linemap))
        files.append(path)
    for name in selection.mappings:
        if name not in selection.names:
            problems.append(Problem(f"[packs.{name}]", None, None, f"pack {name!r} is mapped "
                                    "but not enabled in [rules] packs", "warning"))
    return files


def fit(pack: str, data: dict[str, Any], mapping: PackMapping) -> dict[str, Any]:
    """A pack's parsed file, renamed `<pack>/<name>` and fitted onto the MSP (a copy)."""
    data = copy.deepcopy(data)
    data.pop("pack", None)  # metadata for `mailbridge packs`, not a rule table
    for kind in NAMED_TABLES:
        tables = data.get(kind)
        if not isinstance(tables, list):
            continue
        for table in tables:
            if not isinstance(table, dict):
                continue
            _rename(pack, table)
            _route(table, kind, mapping)
    return data


def _prefixed(pack: str, value: Any) -> Any:
    return f"{pack}/{value}" if isinstance(value, str) and value else value


def _rename(pack: str, table: dict[str, Any]) -> None:
    for key in ("name", "tool"):
        if key in table:
            table[key] = _prefixed(pack, table[key])
    if isinstance(table.get("for_rules"), list):
        table["for_rules"] = [_prefixed(pack, v) for v in table["for_rules"]]


def _route(table: dict[str, Any], kind: str, mapping: PackMapping) -> None:
    if kind in ROUTED_TABLES:
        groups = mapping.product_group
        if "product_group" in table and groups is not None:
            table["product_group"] = _map_value(
                table["product_group"],
                (lambda _: groups) if isinstance(groups, str) else groups.get)
        if "alert_type" in table and mapping.alert_types:
            table["alert_type"] = _map_value(table["alert_type"], mapping.alert_types.get)
        if mapping.require_authentication is not None and \
                (kind == "tool" or "require_authentication" in table):
            table["require_authentication"] = mapping.require_authentication
    # A tool always takes the MSP's senders (some tools have no fixed default sender); a
    # rule's own sender is replaced only where the pack wrote one.
    if mapping.senders is not None and (kind == "tool" or "sender" in table):
        table["sender"] = list(mapping.senders)
    if kind == "tool" and mapping.account is not None:
        table["account"] = copy.deepcopy(mapping.account)


def _map_value(value: Any, lookup: Callable[[str], str | None]) -> Any:
    """A routing value (a name, or a `{ from, map, default }` table) with its names mapped."""
    if isinstance(value, str):
        return lookup(value) or value
    if isinstance(value, dict):
        out = dict(value)
        if isinstance(out.get("default"), str):
            out["default"] = lookup(out["default"]) or out["default"]
        if isinstance(out.get("map"), dict):
            out["map"] = {k: (lookup(v) or v) if isinstance(v, str) else v
                          for k, v in out["map"].items()}
        return out
    return value


def _names(value: Any) -> list[str]:
    """The names a routing value can produce."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        found = [v for v in value.get("map", {}).values() if isinstance(v, str)] \
            if isinstance(value.get("map"), dict) else []
        default = value.get("default")
        return list(dict.fromkeys([*found, *([default] if isinstance(default, str) else [])]))
    return []


def routes(data: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    """(kind, index, product group, alert type) of every pair a fitted pack's detect rules
    (with their tool's defaults) can produce."""
    tools = {t.get("name"): t for t in data.get("tool", []) if isinstance(t, dict)}
    out: list[tuple[str, int, str, str]] = []
    for index, rule in enumerate(data.get("detect", [])):
        if not isinstance(rule, dict):
            continue
        tool = tools.get(rule.get("tool"), {})
        groups = _names(rule.get("product_group", tool.get("product_group")))
        types = _names(rule.get("alert_type", tool.get("alert_type")))
        out += [("detect", index, g, a) for g in groups for a in types]
    return out


def unmapped(pack: str, file: str, data: dict[str, Any], mapping: PackMapping,
             catalogue: Mapping[str, frozenset[str]], linemap: LineMap) -> list[Problem]:
    """One problem per product group or alert type of the pack the catalogue lacks, naming
    the `[packs.<pack>]` key that maps it; a warning per mapping key the pack never uses."""
    found: list[Problem] = []
    seen: set[tuple[str, str]] = set()
    used_types: set[str] = set()
    for kind, index, group, alert_type in routes(data):
        used_types.add(alert_type)
        line = linemap.line(kind, index)
        if group not in catalogue:
            if (group, "") not in seen:
                seen.add((group, ""))
                found.append(Problem(file, line, pack, f"pack {pack!r}: product group "
                                     f"{group!r} is not in the catalogue: map it with "
                                     f"[packs.{pack}] product_group = \"…\""))
        elif alert_type not in catalogue[group] and (group, alert_type) not in seen:
            seen.add((group, alert_type))
            found.append(Problem(file, line, pack, f"pack {pack!r}: alert type {alert_type!r} "
                                 f"is not in product group {group!r}: map it with "
                                 f"[packs.{pack}] alert_types = {{ \"…\" = \"…\" }}"))
    mapped_to = set(mapping.alert_types.values())
    for neutral in mapping.alert_types:
        if neutral not in used_types and neutral not in mapped_to:
            found.append(Problem(f"[packs.{pack}]", None, pack, f"alert_types maps "
                                 f"{neutral!r}, which pack {pack!r} does not use", "warning"))
    return found


# -- the loader's second hook ------------------------------------------------------------------
def place_replacements(loaded: Sequence[tuple[T, Any]], pack_files: Sequence[Path],
                       name_of: Callable[[T], str], file_of: Callable[[Any], str]
                       ) -> list[tuple[T, Any]]:
    """An administrator's rule named like a pack's rule of the same kind takes its place.

    `loaded` is the loader's list of (rule, reader) in file order; `file_of(reader)` names the
    file a rule came from. The pack's rule is dropped; the admin's moves to where it stood.
    """
    packs = {str(p) for p in pack_files}
    in_pack = {(type(rule), name_of(rule)): i for i, (rule, r) in enumerate(loaded)
               if file_of(r) in packs}
    moved: dict[int, tuple[T, Any]] = {}
    dropped: set[int] = set()
    for i, (rule, r) in enumerate(loaded):
        at = in_pack.get((type(rule), name_of(rule)))
        if at is not None and file_of(r) not in packs and at not in moved:
            moved[at] = (rule, r)
            dropped.add(i)
    return [moved.get(i, item) for i, item in enumerate(loaded) if i not in dropped]
