"""All SQL lives under bridge/store/ (issue 12, "the store owns SQL").

The test walks the syntax tree of every module of bridge/ outside bridge/store/ and fails on
any call of `.execute`, `.executemany`, `.executescript`, `.query` or `.scalar`: those are the
names of sqlite3's connection and cursor methods and of `Store`'s raw SQL helpers, so a caller
outside the store reaching for one is running SQL of its own. Such a read or write belongs in
a named store method (see bridge/store/operator.py and bridge/store/maintenance.py).

bridge/psa_sim/ is the separate simulator program, with its own state in a JSON file; it uses
no SQL at all, and it is walked like the rest (so it stays that way).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

BRIDGE = Path(__file__).resolve().parent.parent / "bridge"
SQL_CALLS = frozenset({"execute", "executemany", "executescript", "query", "scalar"})
# The start of an SQL statement in a string literal (upper case, as this project writes SQL):
# SQL handed to some other runner would escape the call check.
SQL_TEXT = re.compile(
    r"^\s*(SELECT\s.*\bFROM\b|INSERT\s+INTO\b|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\b|PRAGMA\s"
    r"|(ATTACH|DETACH)\s+DATABASE\b|SAVEPOINT\s|RELEASE\s+\w+$|ROLLBACK\b"
    r"|BEGIN(\s+(IMMEDIATE|EXCLUSIVE|DEFERRED))?\s*$|COMMIT\s*$|CREATE\s+(TABLE|INDEX)\b)", re.S)

# (module, receiver as written): calls of these names that are not database calls.
NOT_A_DATABASE = {
    # The IMAP protocol object of aioimaplib: `execute` sends an IMAP command.
    ("sources/imap_client.py", "proto"): "aioimaplib's IMAP4ClientProtocol.execute",
}

# SQL outside the store that another engineer owns and will move (a ratchet: the test fails
# when an entry is no longer needed, so the list can only shrink).
PENDING: dict[tuple[str, str], str] = {}


def sql_calls(path: Path) -> list[tuple[str, int, str]]:
    """(receiver, line, method) of every call with a SQL method's name in one module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in SQL_CALLS:
            found.append((ast.unparse(node.func.value), node.lineno, node.func.attr))
    return found


def sql_texts(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string literal (f-string parts too) that starts a statement."""
    return [(node.lineno, node.value[:60])
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and SQL_TEXT.search(node.value)]


def modules_outside_store() -> list[Path]:
    return sorted(p for p in BRIDGE.rglob("*.py") if "store" not in p.relative_to(BRIDGE).parts[:1])


def test_the_walk_sees_the_whole_package() -> None:
    names = {p.relative_to(BRIDGE).as_posix() for p in modules_outside_store()}
    assert {"operator/views.py", "operator/metrics.py", "operator/status.py",
            "operator/audit.py", "operator/reconcile.py", "operator/admin.py",
            "process/pipeline.py", "psa_sim/engine.py", "deliver/outbox.py"} <= names
    assert not any(n.startswith("store/") for n in names)


def test_the_walk_finds_a_sql_call(tmp_path: Path) -> None:
    """The detector itself: each form a stray SQL call takes is found."""
    sample = tmp_path / "sample.py"
    sample.write_text("def f(store, conn):\n"
                      "    store.conn.execute('SELECT 1')\n"
                      "    conn.executemany('INSERT', [])\n"
                      "    store.query('SELECT 1')\n"
                      "    return store.scalar('SELECT 1')\n")
    assert [(r, m) for r, _, m in sql_calls(sample)] == [
        ("store.conn", "execute"), ("conn", "executemany"), ("store", "query"),
        ("store", "scalar")]
    sample.write_text("SQL = f'SELECT a FROM t WHERE b={1}'\nX = 'UPDATE'\n"
                      "Y = 'Select the rows from here'\nZ = 'RELEASE msg'\n")
    assert sorted(line for line, _ in sql_texts(sample)) == [1, 4]


@pytest.mark.parametrize("path", modules_outside_store(),
                         ids=lambda p: p.relative_to(BRIDGE).as_posix())
def test_no_sql_outside_the_store(path: Path) -> None:
    module = path.relative_to(BRIDGE).as_posix()
    stray = [f"{module}:{line}: {receiver}.{method}(...)"
             for receiver, line, method in sql_calls(path)
             if (module, receiver) not in NOT_A_DATABASE and (module, receiver) not in PENDING]
    assert not stray, "SQL outside bridge/store/; give it a named store method:\n" + \
        "\n".join(stray)


@pytest.mark.parametrize("path", modules_outside_store(),
                         ids=lambda p: p.relative_to(BRIDGE).as_posix())
def test_no_sql_text_outside_the_store(path: Path) -> None:
    module = path.relative_to(BRIDGE).as_posix()
    if any(m == module for m, _ in PENDING):
        return
    stray = [f"{module}:{line}: {text!r}" for line, text in sql_texts(path)]
    assert not stray, "SQL text outside bridge/store/:\n" + "\n".join(stray)


@pytest.mark.parametrize("module, receiver", sorted({**NOT_A_DATABASE, **PENDING}))
def test_every_exception_is_still_needed(module: str, receiver: str) -> None:
    assert any(r == receiver for r, _, _ in sql_calls(BRIDGE / module)), \
        f"{module}: no call on {receiver} any more; drop its entry from this test"
