"""Where things are in a rule file's text: tables, their comments, their keys' comments.

tomllib gives the values but forgets the comments and the order of tables of different
kinds, so `rules migrate` reads the text once more by line positions: one pass over the lines
that knows TOML's strings and brackets (a `#` or a `[` inside a regex is not a comment or a
header), finds every table header at the top level and every key at its start, and keeps

- the file's leading comment block,
- the comment lines right before each table header (its paragraph of explanation),
- each key's trailing comment (`require_authentication = true   # why`) and the comment lines
  above a key or inside its multi-line value.

The n-th `[[detect]]` header is the n-th detect rule of tomllib's list (the loader's LineMap
relies on the same fact); when the counts disagree (a file that writes `detect = [ {…} ]`)
the caller falls back to tables without comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_KEY = re.compile(r"""\s*([A-Za-z0-9_-]+|"[^"]*"|'[^']*')\s*[=.]""")
_HEADER = re.compile(r"""\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*$""")


@dataclass
class Line:
    depth: int          # bracket depth at the start of the line
    in_string: bool     # the line starts inside a multi-line string
    code: str           # the line without its comment
    comment: str | None
    header: bool


@dataclass
class SourceTable:
    """One top-level table of the file: `[[detect]]`, `[[skip]]`, `[[account]]`, `[status]`
    (or anything else, copied as it is)."""

    kind: str
    array: bool
    index: int                      # the n-th table of this kind in the file
    start: int                      # line index of the header
    end: int = 0                    # one past the table's last line of code
    comments: list[str] = field(default_factory=list)
    header_comment: str | None = None
    key_comments: dict[str, str] = field(default_factory=dict)
    key_notes: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class SourceFile:
    lines: list[str]
    leading: list[str]
    top_end: int                    # one past the last line of top-level keys (0: none)
    tables: list[SourceTable]
    trailing: list[str]

    def text(self, table: SourceTable) -> list[str]:
        """The table's own lines, exactly as written."""
        return self.lines[table.start:table.end]


def _skip_string(line: str, i: int, quote: str) -> int:
    """Index after the single-line string that starts at i."""
    i += 1
    while i < len(line) and line[i] != quote:
        i += 2 if quote == '"' and line[i] == "\\" else 1
    return i + 1


def scan(lines: list[str]) -> list[Line]:
    out: list[Line] = []
    depth, mode = 0, ""          # mode: the open multi-line string delimiter, if any
    for line in lines:
        start_depth, start_mode = depth, mode
        header = depth == 0 and not mode and line.lstrip().startswith("[")
        i, n, comment, end = 0, len(line), None, len(line)
        while i < n:
            if mode:
                if mode == '"""' and line[i] == "\\":
                    i += 2
                elif line.startswith(mode, i):
                    i += 3
                    while i < n and line[i] == mode[0]:   # '''' ends with a quote in it
                        i += 1
                    mode = ""
                else:
                    i += 1
                continue
            c = line[i]
            if c == "#":
                comment, end = line[i:].rstrip(), i
                break
            if line.startswith('"""', i) or line.startswith("'''", i):
                mode, i = line[i:i + 3], i + 3
            elif c in "\"'":
                i = _skip_string(line, i, c)
            else:
                if not header and c in "[{":
                    depth += 1
                elif not header and c in "]}":
                    depth = max(0, depth - 1)
                i += 1
        out.append(Line(start_depth, bool(start_mode), line[:end], comment, header))
    return out


def _trim(block: list[str]) -> list[str]:
    while block and not block[0].strip():
        block = block[1:]
    while block and not block[-1].strip():
        block = block[:-1]
    return block


def _split_leading(pending: list[str]) -> tuple[list[str], list[str]]:
    """Comments above the first table: the file's own block, and the paragraph that sits
    right on the header (when there is more than one paragraph)."""
    block = _trim(pending)
    if not pending or not pending[-1].strip() or "" not in [b.strip() for b in block]:
        return block, []
    cut = max(i for i, b in enumerate(block) if not b.strip())
    return _trim(block[:cut]), block[cut + 1:]


def _unquote(name: str) -> str:
    return name.strip().strip("\"'")


def read_source(text: str) -> SourceFile:
    lines = text.splitlines()
    infos = scan(lines)
    tables: list[SourceTable] = []
    counts: dict[str, int] = {}
    leading: list[str] | None = None
    pending: list[str] = []
    top_end = 0
    current: SourceTable | None = None
    sub = ""                      # the dotted sub-table we are in ("" = the table itself)
    last_key = ""
    for no, (raw, info) in enumerate(zip(lines, infos)):
        own_line = not info.code.strip()
        if info.in_string or info.depth > 0:     # inside a multi-line value
            if current is None:
                top_end = no + 1
                continue
            if info.comment and last_key:
                current.key_notes.setdefault(last_key, []).append(info.comment.strip())
            current.end = no + 1
            continue
        if own_line:
            pending.append(raw.strip() if info.comment else "")
            continue
        if info.header:
            m = _HEADER.match(info.code)
            name = _unquote(m.group(2)) if m else info.code.strip()
            kind, _, rest = name.partition(".")
            if current is not None and rest and kind == current.kind:
                sub, last_key = rest, rest
                current.key_notes.setdefault(rest, []).extend(_trim(pending))
            else:
                if leading is None:
                    leading, pending = _split_leading(pending)
                array = bool(m and m.group(1) == "[[")
                current = SourceTable(kind, array, counts.get(kind, 0), no, no + 1,
                                      comments=_trim(pending))
                counts[kind] = current.index + 1
                tables.append(current)
                sub, last_key = "", ""
            if info.comment and not sub:
                current.header_comment = info.comment
            elif info.comment:
                current.key_notes.setdefault(sub, []).append(info.comment)
            pending = []
            current.end = no + 1
            continue
        m = _KEY.match(info.code)
        name = _unquote(m.group(1)) if m else ""
        if leading is None:
            leading, pending = _trim(pending), []
        if current is None:
            top_end = no + 1
        else:
            owner = sub or name
            last_key = owner
            notes = [p for p in pending if p]
            if notes:
                current.key_notes.setdefault(owner, []).extend(notes)
            if info.comment and not sub:
                current.key_comments[name] = info.comment
            elif info.comment:
                current.key_notes.setdefault(owner, []).append(info.comment)
            current.end = no + 1
        pending = []
    if leading is None:
        leading, pending = _trim(pending), []
    return SourceFile(lines, leading, top_end, tables, _trim(pending))
