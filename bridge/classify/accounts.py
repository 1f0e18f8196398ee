"""The accounts directory: who the customers are and every way an alert may name them.

An account has an id (the PSA's account id, also the "record id" of seed 002), a name, other
names (site names, short names), foreign-system ids (what an RMM calls the customer: ATES
CustomerID), and sender addresses or `@domains`. The admin keeps it as CSV (multi-valued
cells separated by ";") or TOML (`[[accounts]]` tables). Every way of naming an account is put
into a dict at load — case-folded, trimmed, white space collapsed — so a lookup costs the same
for 100 accounts as for 50,000. Two accounts claiming the same name, foreign id or sender
would make lookups ambiguous and are load errors.
"""

from __future__ import annotations

import csv
import io
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

from bridge.classify.problems import LineMap, Problem, toml_error_line
from bridge.classify.text import fold

SearchBy = Literal["name", "foreign-id", "record-id"]
SEARCH_BY: tuple[SearchBy, ...] = ("name", "foreign-id", "record-id")
COLUMNS = ("id", "name", "aliases", "foreign_ids", "senders")
_HOW = {"name": "name", "foreign-id": "foreign id", "record-id": "record id"}


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    aliases: tuple[str, ...] = ()
    foreign_ids: tuple[str, ...] = ()
    senders: tuple[str, ...] = ()  # "alerts@acme.example" or "@acme.example"


class AccountsDirectory:
    """Dict indexes over the accounts; built by `load_accounts` or directly in tests."""

    def __init__(self, accounts: Iterable[Account] = ()):
        self._all: list[Account] = []
        self.index: dict[SearchBy, dict[str, Account]] = {k: {} for k in SEARCH_BY}
        self.by_sender: dict[str, Account] = {}
        self.by_domain: dict[str, Account] = {}
        # The most words of any key: a longer run of words can name no account, which bounds
        # the after/before phrase search of account rules (account_rule.py).
        self.longest: dict[SearchBy, int] = {k: 0 for k in SEARCH_BY}
        self.conflicts: list[tuple[Account, str]] = []  # (account, what it clashes on)
        for account in accounts:
            self.add(account)

    def add(self, a: Account) -> None:
        if fold(a.id) in self.index["record-id"]:
            self.conflicts.append((a, f"account id {a.id!r} is listed twice"))
            return
        self._all.append(a)
        self._put("record-id", a.id, a, "id")
        for name in (a.name, *a.aliases):
            self._put("name", name, a, "name")
        for fid in a.foreign_ids:
            self._put("foreign-id", fid, a, "foreign id")
        for s in a.senders:
            s = s.strip().lower()
            table, key = (self.by_domain, s[1:]) if s.startswith("@") else (self.by_sender, s)
            self._claim(table, key, a, f"sender {s}")

    def _put(self, by: SearchBy, text: str, a: Account, what: str) -> None:
        key = fold(text)
        if key:
            self._claim(self.index[by], key, a, f"{what} {text.strip()!r}")
            self.longest[by] = max(self.longest[by], key.count(" ") + 1)

    def _claim(self, table: dict[str, Account], key: str, a: Account, what: str) -> None:
        other = table.get(key)
        if other is None:
            table[key] = a
        elif other.id != a.id:
            self.conflicts.append((a, f"{what} is also claimed by account {other.id}"))

    # -- lookups -----------------------------------------------------------------------------
    def all(self) -> list[Account]:
        return list(self._all)

    def __len__(self) -> int:
        return len(self._all)

    def get(self, account_id: str) -> Account | None:
        return self.index["record-id"].get(fold(account_id))

    def find(self, text: str, search: Iterable[SearchBy] = SEARCH_BY) -> tuple[Account, str] | None:
        """Look text up by name, foreign id and/or record id; returns (account, "via name")."""
        key = fold(text)
        if not key:
            return None
        for by in search:
            found = self.index[by].get(key)
            if found is not None:
                return found, f"via {_HOW[by]}"
        return None

    def max_words(self, search: Iterable[SearchBy] = SEARCH_BY) -> int:
        """The most words of any name, foreign id or record id `search` looks through."""
        return max((self.longest[by] for by in search), default=0)

    def find_sender(self, sender: str) -> tuple[Account, str] | None:
        """The account of a sender address, else of its domain or a parent domain."""
        sender = sender.strip().lower()
        found = self.by_sender.get(sender)
        if found is not None:
            return found, f"via sender address {sender}"
        domain = sender.rpartition("@")[2] if "@" in sender else ""
        labels = domain.split(".")
        for i in range(len(labels) - 1):  # fw.initech.example -> initech.example, not example
            candidate = ".".join(labels[i:])
            found = self.by_domain.get(candidate)
            if found is not None:
                return found, f"via sender domain {candidate}"
        return None

    def has(self, by: SearchBy | Literal["sender"]) -> bool:
        if by == "sender":
            return bool(self.by_sender or self.by_domain)
        return bool(self.index[by])


def _split(cell: object) -> tuple[str, ...]:
    if isinstance(cell, list):
        return tuple(str(v).strip() for v in cell if str(v).strip())
    return tuple(v.strip() for v in str(cell or "").split(";") if v.strip())


def _unknown(keys: Iterable[str], where: str, line: int | None) -> list[Problem]:
    unknown = sorted(set(keys) - set(COLUMNS))
    return [Problem(where, line, None, f"unknown column/key {', '.join(unknown)}; "
                    f"known: {', '.join(COLUMNS)}")] if unknown else []


def _account(row: dict[str, object], where: str, line: int | None,
             problems: list[Problem]) -> Account | None:
    acc_id, name = str(row.get("id") or "").strip(), str(row.get("name") or "").strip()
    if not acc_id or not name:
        problems.append(Problem(where, line, acc_id or None, "an account needs an id and a name"))
        return None
    senders = _split(row.get("senders"))
    for s in senders:
        bare = s[1:] if s.startswith("@") else s.partition("@")[2]
        if not bare or " " in s or bare.count("@"):
            problems.append(Problem(where, line, acc_id,
                                    f"sender {s!r} is neither an address nor '@domain'"))
    return Account(acc_id, name, _split(row.get("aliases")), _split(row.get("foreign_ids")),
                   senders)


def load_accounts(path: Path) -> tuple[AccountsDirectory, list[Problem]]:
    """Read a .csv or .toml accounts file; problems name the file and line."""
    where = str(path)
    problems: list[Problem] = []
    directory = AccountsDirectory()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        hint = (" (create it: `mailbridge init` writes one with a header comment; docs/rules.md"
                " shows the CSV and TOML forms)" if isinstance(exc, FileNotFoundError) else "")
        return directory, [Problem(where, None, None,
                                   f"cannot read accounts file: {exc.strerror}{hint}")]
    lines: dict[str, int | None] = {}
    if path.suffix.lower() == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            line, msg = toml_error_line(str(exc))
            return directory, [Problem(where, line, None, msg)]
        linemap = LineMap(text)
        extra = sorted(set(data) - {"accounts"})
        if extra:
            problems.append(Problem(where, None, None, f"unknown table {', '.join(extra)}; "
                                    "accounts are [[accounts]] tables"))
        entries = data.get("accounts", [])
        rows = [(e, linemap.line("accounts", i)) for i, e in enumerate(entries)
                if isinstance(e, dict)]
        for row, line in rows:
            problems.extend(_unknown(row, where, line))
    else:
        # Lines starting with # are comments (the header comment `mailbridge init` writes):
        # blanked in place, so line numbers stay those of the file.
        lines_in = text.splitlines(keepends=True)
        skip = 0
        while skip < len(lines_in) and lines_in[skip].lstrip().startswith("#"):
            skip += 1
        text = "".join("\n" if ln.lstrip().startswith("#") else ln for ln in lines_in[skip:])
        reader = csv.DictReader(io.StringIO(text))
        if reader.fieldnames is None:
            return directory, [Problem(where, skip + 1, None, "empty accounts file: the first row "
                                       f"must name the columns ({', '.join(COLUMNS)})")]
        reader.fieldnames = [f.strip().lower() for f in reader.fieldnames]
        problems.extend(_unknown(reader.fieldnames, where, skip + 1))
        rows = []
        for row in reader:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue
            rows.append(({k: v for k, v in row.items() if k is not None},
                         reader.line_num + skip))
    for row, line in rows:
        account = _account(row, where, line, problems)
        if account is None:
            continue
        before = len(directory.conflicts)
        directory.add(account)
        lines[account.id] = line
        for _, what in directory.conflicts[before:]:
            problems.append(Problem(where, line, account.id, what))
    return directory, problems
