"""`rules migrate` as a pure transform: what each v1 construct becomes, comments, tools.

The outcomes of migrated files are compared with the v1 originals in
tests/test_rules_v2_outcomes.py; here the emitted TOML is read back with tomllib and its
structure checked.
"""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.classify import tomlwrite
from bridge.classify.migrate import FALLBACK_KEY, V1_ORDER, MigrateError, migrate_files
from bridge.classify.migrate_source import read_source

V1_DIR = Path(__file__).resolve().parent / "rules_v1"
ORDER = {"order": V1_ORDER}


def one(text: str, **more: str) -> dict:
    """Migrate one file (plus others by name); the migrated first file, read back."""
    files = [("10-test.toml", textwrap.dedent(text)),
             *((n, textwrap.dedent(t)) for n, t in more.items())]
    return tomllib.loads(migrate_files(files)[0].text)


def text_of(text: str) -> str:
    return migrate_files([("10-test.toml", textwrap.dedent(text))])[0].text


def test_every_shipped_v1_file_migrates_and_reads_back() -> None:
    files = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(V1_DIR.glob("*.toml"))]
    result = migrate_files(files)
    assert [m.name for m in result] == [n for n, _ in files]
    for m in result:
        data = tomllib.loads(m.text)
        assert m.changed and data["format"] == 2, m.name
        for rule in data.get("detect", []):
            assert rule.get("body") == "text" or "tool" in rule
            assert not {"subject_regex", "body_regex", "open", "resolved", "update",
                        "status_in"} & set(rule)
            if "key" in rule:
                assert rule["key"][-1] == FALLBACK_KEY
    assert migrate_files([(m.name, m.text) for m in result]) == [
        type(m)(m.name, m.text, False) for m in result], "migrating twice changes nothing"


def test_status_order_and_lists_move_into_a_status_table() -> None:
    data = one("""
        [[detect]]
        name = "a"
        sender = "a@x.example"
        product_group = "servers"
        alert_type = "Host Down"
        open = ["PROBLEM"]
        status_in = "both"
        """)
    assert data["detect"][0]["status"] == {**ORDER, "in": "both", "open": ["PROBLEM"]}
    plain = one('[[detect]]\nname = "b"\nsender = "b@x.example"\nproduct_group = "p"\n'
                'alert_type = "t"\n')
    assert plain["detect"][0]["status"] == ORDER, "the global lists, in the v1 order"


def test_regexes_become_optional_captures_in_the_v1_order() -> None:
    rule = one("""
        [[detect]]
        name = "a"
        sender = "a@x.example"
        product_group = "p"
        alert_type = "t"
        body_regex = ['Host:\\s*(?P<host>\\S+)', 'ID:\\s*(?P<id>\\d+)']
        key_regex = 'on (?P<dev>\\S+)'
        key = "a:{id}"
        subject_regex = 'is (?P<state>\\w+)'
        """)["detect"][0]
    assert rule["capture"] == [
        {"in": "subject", "regex": r"is (?P<state>\w+)", "optional": True},
        {"in": "body", "regex": r"Host:\s*(?P<host>\S+)", "optional": True},
        {"in": "body", "regex": r"ID:\s*(?P<id>\d+)", "optional": True},
        {"in": "subject", "regex": r"on (?P<dev>\S+)", "optional": True},
    ]
    assert rule["key"] == ["a:{id}", FALLBACK_KEY] and "key_regex" not in rule


def test_a_key_regex_that_makes_the_key_stays() -> None:
    rule = one('[[detect]]\nname = "a"\nsender = "a@x.example"\nproduct_group = "p"\n'
               "alert_type = \"t\"\nkey_regex = 'job (\\S+)'\n")["detect"][0]
    assert rule["key_regex"] == r"job (\S+)" and "capture" not in rule and "key" not in rule
    unnamed = one('[[detect]]\nname = "a"\nsender = "a@x.example"\nproduct_group = "p"\n'
                  "alert_type = \"t\"\nkey = \"k:{subject}\"\nkey_regex = 'job (\\S+)'\n")
    assert "key_regex" not in unnamed["detect"][0] and "capture" not in unnamed["detect"][0]


RULES = """
    # header comment of the file

    [[detect]]
    name = "nagios-service"
    sender = "nagios@mon.example"
    subject = "Service Alert:"
    require_authentication = true   # forged recoveries
    product_group = "servers"
    alert_type = "Service Critical"
    key = "n:{account}:{host}"
    key_regex = 'Service Alert: (?P<host>[^/]+)'
    open = ["PROBLEM"]
    resolved = ["RECOVERY"]         # only this

    # hosts
    [[detect]]
    name = "nagios-host"
    sender = "nagios@mon.example"
    subject = "Host Alert:"
    require_authentication = true
    product_group = "servers"
    alert_type = "Host Down"
    key = "n:{account}:{host}:host"
    key_regex = 'Host Alert: (?P<host>\\S+)'
    open = ["PROBLEM"]
    resolved = ["RECOVERY"]         # only this

    [[account]]
    name = "group"   # kept as written
    for_rules = ["nagios-service", "nagios-host"]
    regex = '(?P<account>[^/]+)/'
    """


def test_rules_of_one_sender_share_a_tool() -> None:
    data = one(RULES)
    assert data["tool"] == [{"name": "nagios", "require_authentication": True,
                             "product_group": "servers", "body": "text",
                             "status": {**ORDER, "open": ["PROBLEM"], "resolved": ["RECOVERY"]}}]
    service, host = data["detect"]
    assert service["tool"] == host["tool"] == "nagios"
    # a tool's sender is a catch-all: hoisting it would make other nagios mail automated
    assert service["sender"] == host["sender"] == "nagios@mon.example"
    assert "product_group" not in service and service["alert_type"] == "Service Critical"


def test_the_sender_moves_to_the_tool_only_when_a_rule_takes_all_its_mail() -> None:
    data = one("""
        [[detect]]
        name = "z-special"
        sender = "z@x.example"
        subject = "disk"
        product_group = "monitoring"
        alert_type = "Problem"
        title = "{subject}!"
        [[detect]]
        name = "z-all"
        sender = "z@x.example"
        product_group = "monitoring"
        alert_type = "Problem"
        title = "{subject}!"
        """)
    assert data["tool"][0]["sender"] == "z@x.example" and data["tool"][0]["name"] == "z"
    special, everything = data["detect"]
    assert "sender" not in special
    assert everything["sender"] == "z@x.example", "a rule keeps a match key of its own"


def test_no_tool_when_it_would_make_the_file_longer() -> None:
    data = one("""
        [[detect]]
        name = "a"
        ates_source = "Datto RMM"
        product_group = "rmm"
        alert_type = "Alert"
        resolved = ["x"]
        [[detect]]
        name = "b"
        ates_source = "Datto RMM"
        product_group = "rmm"
        alert_type = "Agent Offline"
        resolved = ["y"]
        """)
    assert "tool" not in data and "tool" not in data["detect"][0]


def test_comments_stay_with_their_file_rule_and_key() -> None:
    text = text_of(RULES)
    assert text.startswith("# header comment of the file\n\nformat = 2\n")
    assert "# hosts\n[[detect]]\nname = \"nagios-host\"" in text
    assert "require_authentication = true  # forged recoveries" in text
    assert 'resolved = ["RECOVERY"]  # only this' in text, "a status key's comment"
    assert 'name = "group"   # kept as written' in text, "account tables are copied"


def test_tool_names_are_unique_across_the_directory() -> None:
    first = migrate_files([("10-a.toml", textwrap.dedent(RULES)),
                           ("20-b.toml", textwrap.dedent(RULES).replace("nagios-", "nagios2-")
                            .replace('"group"', '"group2"'))])
    names = [tomllib.loads(m.text)["tool"][0]["name"] for m in first]
    assert names == ["nagios", "nagios2"]
    again = migrate_files([("05-v2.toml", 'format = 2\n[[tool]]\nname = "nagios"\n'),
                           ("10-a.toml", textwrap.dedent(RULES))])
    assert tomllib.loads(again[1].text)["tool"][0]["name"] == "nagios-2"


def test_v2_files_and_accounts_files_are_left_alone() -> None:
    v2 = 'format = 2\n[[detect]]\nname = "a"\n'
    accounts = '[[accounts]]\nid = "A-1"\nname = "A"\n'
    result = migrate_files([("05-v2.toml", v2), ("accounts.toml", accounts),
                            ("10-v1.toml", 'format = 1\n[[skip]]\nname = "s"\nsubject = "x"\n')])
    assert [(m.text, m.changed) for m in result[:2]] == [(v2, False), (accounts, False)]
    assert result[2].text == 'format = 2\n\n[[skip]]\nname = "s"\nsubject = "x"\n'


def test_a_skip_rule_reading_the_body_keeps_the_text_part() -> None:
    data = one("""
        [[skip]]
        name = "s"
        conditions = [{ field = "body", op = "contains", value = "weekly report" }]
        """)
    assert data["skip"][0]["body"] == "text"


def test_source_scanner_is_not_fooled_by_strings() -> None:
    src = read_source(textwrap.dedent('''\
        [[detect]]
        name = "a"   # real comment
        subject_regex = '#(?P<n>\\d+) \\[x\\]'
        summary = """
        [[detect]]
        # not a comment
        """
        [[detect]]
        name = "b"
        '''))
    assert [(t.kind, t.index, t.start) for t in src.tables] == [("detect", 0, 0), ("detect", 1, 7)]
    assert src.tables[0].key_comments == {"name": "# real comment"}


def test_inline_rule_arrays_fall_back_to_tables_without_comments() -> None:
    data = one('detect = [{ name = "a", sender = "a@x.example", product_group = "p", '
               'alert_type = "t" }]\n')
    assert data["detect"][0]["name"] == "a" and data["detect"][0]["status"] == ORDER


def test_bad_toml_is_refused_with_the_file_name() -> None:
    with pytest.raises(MigrateError, match="10-test.toml: TOML syntax error"):
        migrate_files([("10-test.toml", "[[detect]\n")])


_TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30)


@settings(max_examples=300, deadline=None)
@given(_TEXT)
def test_any_string_is_written_as_toml_that_reads_back(text: str) -> None:
    assert tomllib.loads(f"v = {tomlwrite.string(text)}")["v"] == text
    assert tomllib.loads(f"{tomlwrite.key(text)} = 1") == {text: 1}


_NAME = st.from_regex(r"[a-z]{1,6}(-[a-z]{1,6}){0,2}", fullmatch=True)
_VALUE = st.one_of(_TEXT.filter(str.strip), st.lists(_TEXT.filter(str.strip), max_size=3))
_DETECT = st.fixed_dictionaries(
    {"name": _NAME, "product_group": _TEXT, "alert_type": _TEXT},
    optional={"sender": st.sampled_from(["a@x.example", "@y.example", ["a@x.example"]]),
              "subject": _VALUE, "ates_source": _TEXT, "title": _TEXT, "key": _TEXT,
              "key_regex": st.sampled_from([r"(?P<h>\S+)", r"(\d+)", "("]),
              "subject_regex": _VALUE, "body_regex": _VALUE, "open": _VALUE,
              "resolved": _VALUE, "update": st.lists(_TEXT, max_size=2),
              "status_in": st.sampled_from(["subject", "body", "both"]),
              "require_authentication": st.booleans(), "min_duration": st.integers(0, 9),
              "device": _TEXT, "coalesce_window": st.floats(0, 1e6)})


@settings(max_examples=150, deadline=None)
@given(st.lists(_DETECT, min_size=1, max_size=5))
def test_arbitrary_v1_rules_migrate_and_read_back(rules: list[dict]) -> None:
    lines: list[str] = []
    for rule in rules:
        lines.append("[[detect]]")
        lines += [line for k, v in rule.items() for line in tomlwrite.assignment(k, v)]
    result = migrate_files([("10-x.toml", "\n".join(lines) + "\n")])  # raises on a mismatch
    assert len(tomllib.loads(result[0].text)["detect"]) == len(rules)


def test_tables_migrate_does_not_know_are_copied_as_written() -> None:
    expect = ('# the nightly report\n[[expect]]\nname = "nightly"\nrule = "r"   # by name\n'
              'daily = "06:00"\n')
    text = text_of('[[detect]]\nname = "r"\nsender = "a@x.example"\nproduct_group = "p"\n'
                   'alert_type = "t"\n\n' + expect)
    assert text.endswith("\n\n" + expect)
    assert tomllib.loads(text)["expect"] == [{"name": "nightly", "rule": "r", "daily": "06:00"}]


def test_captures_named_like_a_v2_field_are_renamed_with_their_templates() -> None:
    text = text_of("""
        [[detect]]
        name = "a"
        sender = "a@x.example"
        product_group = "p"
        alert_type = "t"
        subject_regex = 'via (?P<tool>\\w+) to (?P<to>\\w+) (?P=tool)'
        title = "{tool} to {to}, {{tool}}"
        key = "k:{to}"
        """)
    rule = tomllib.loads(text)["detect"][0]
    assert rule["capture"][0]["regex"] == (
        r"via (?P<tool_captured>\w+) to (?P<to_captured>\w+) (?P=tool_captured)")
    assert rule["title"] == "{tool_captured} to {to_captured}, {{tool}}"
    assert rule["key"] == ["k:{to_captured}", FALLBACK_KEY]
    assert "# migrate: the capture 'tool' is now 'tool_captured'" in text


def test_a_table_written_inline_is_kept() -> None:
    data = one('expect = [{ name = "nightly", rule = "s", daily = "06:00" }]\n\n'
               '[[skip]]\nname = "s"\nsubject = "x"\n')
    assert data["expect"] == [{"name": "nightly", "rule": "s", "daily": "06:00"}]
    assert data["skip"] == [{"name": "s", "subject": "x"}]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_comments_and_blank_lines_anywhere_never_break_migrate(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(sorted(p.name for p in V1_DIR.glob("*.toml"))))
    lines = (V1_DIR / name).read_text(encoding="utf-8").splitlines()
    count = data.draw(st.integers(1, 8))
    for i in range(count):
        at = data.draw(st.integers(0, len(lines)))
        lines.insert(at, data.draw(st.sampled_from(["", f"# note {i}", f"  # note {i} [[detect]]"])))
        if data.draw(st.booleans()):   # and a trailing comment on some line of code
            at = data.draw(st.integers(0, len(lines) - 1))
            if lines[at].strip() and not lines[at].lstrip().startswith("#"):
                lines[at] += f"  # tail {i}"
    text = "\n".join(lines) + "\n"
    migrated = migrate_files([(name, text)])[0]     # raises if it does not read back
    for i in range(count):
        for word in ("note", "tail"):
            assert migrated.text.count(f"# {word} {i}") == text.count(f"# {word} {i}"), (
                word, i, text, migrated.text)
