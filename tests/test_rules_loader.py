"""Loading rule files: every error names the file and the line (or the rule); warnings."""

from pathlib import Path

import pytest

from bridge.classify import Problem, RuleSetError, check_ruleset, load_ruleset
from tests.test_rules_support import ACCOUNTS_CSV, CATALOGUE, write_rules

GOOD = """\
[[detect]]
name = "nagios"
sender = "nagios@monitor.msp.example"
subject = "PROBLEM"
product_group = "servers"
alert_type = "Service Critical"
resolved = ["RECOVERY"]
"""


def problems(tmp_path: Path, text: str, accounts: str | None = ACCOUNTS_CSV,
             **more: str) -> list[Problem]:
    rules, acc = write_rules(tmp_path, {"10-test.toml": text, **more}, accounts)
    return check_ruleset(rules, acc, CATALOGUE)


def errors(tmp_path: Path, text: str, **kw) -> list[str]:
    return [str(p) for p in problems(tmp_path, text, **kw) if p.is_error]


def warnings(tmp_path: Path, text: str, **kw) -> list[str]:
    return [str(p) for p in problems(tmp_path, text, **kw) if not p.is_error]


def test_good_file_loads_with_version_and_files(tmp_path: Path) -> None:
    rules, acc = write_rules(tmp_path, {"10-test.toml": GOOD})
    rs = load_ruleset(rules, acc, CATALOGUE)
    assert [p.name for p in rs.files] == ["10-test.toml"]
    assert len(rs.version) == 12 and rs.rule_count() == 1 and len(rs.accounts) == 5
    (rules / "10-test.toml").write_text(GOOD.replace("PROBLEM", "PROBLEMS"))
    assert load_ruleset(rules, acc, CATALOGUE).version != rs.version


def test_toml_syntax_error_has_the_parsers_line(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + '\n[[detect]]\nname = "x\n')
    assert len(found) == 1 and found[0].startswith(f"{tmp_path}/rules/10-test.toml:10: ")
    assert "TOML syntax error" in found[0]


def test_unknown_key_names_file_line_rule_and_suggests(tmp_path: Path) -> None:
    text = GOOD.replace('subject = "PROBLEM"', 'subjet = "PROBLEM"')
    found = errors(tmp_path, text)
    assert found == [f"{tmp_path}/rules/10-test.toml:4: nagios: unknown key 'subjet' "
                     "(did you mean 'subject'?)"]


def test_unknown_table_is_an_error(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + "\n[[detection]]\nname = 'x'\n")
    assert len(found) == 1 and ":9: unknown table or key 'detection'" in found[0]
    assert "did you mean [[detect]]" in found[0]


def test_bad_regex_points_at_its_line(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + "key_regex = '(unclosed'\n")
    assert len(found) == 1 and "10-test.toml:8: nagios: bad regex in key_regex" in found[0]


def test_undefined_product_group_and_alert_type(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD.replace('"servers"', '"servrs"'))
    assert len(found) == 1 and ":5: nagios: product group 'servrs' is not in the catalogue" in found[0]
    found = errors(tmp_path, GOOD.replace('"Service Critical"', '"Backup Failed"'))
    assert len(found) == 1 and ":6: nagios: alert type 'Backup Failed' is not in product group" in found[0]


def test_missing_required_keys_and_wrong_types(tmp_path: Path) -> None:
    found = errors(tmp_path, '[[detect]]\nsender = 3\nrequire_authentication = "yes"\n')
    text = "\n".join(found)
    assert "10-test.toml:1: detect #1: missing key 'name'" in text
    assert ":2: detect #1: sender must be a string or a list" in text
    assert ":3: detect #1: require_authentication must be true or false" in text
    assert "missing key 'product_group'" in text and "missing key 'alert_type'" in text


def test_rule_that_matches_nothing(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD.replace('sender = "nagios@monitor.msp.example"\n', "")
                   .replace('subject = "PROBLEM"\n', ""))
    assert len(found) == 1 and "matches nothing" in found[0]


def test_shadowed_detection_rule(tmp_path: Path) -> None:
    later = GOOD.replace('"nagios"', '"nagios-host"').replace('"PROBLEM"', '"PROBLEM Host Alert"')
    found = errors(tmp_path, GOOD + "\n" + later)
    assert len(found) == 1
    assert found[0].startswith(f"{tmp_path}/rules/10-test.toml:9: nagios-host: unreachable: ")
    assert "matched first by 10-test.toml:nagios" in found[0]
    # the other way round both are reachable
    assert errors(tmp_path, later + "\n" + GOOD) == []


@pytest.mark.parametrize("earlier,later,shadowed", [
    ('sender = "@acme.example"', 'sender = "ops@acme.example"', True),
    ('sender = "*@*.acme.example"', 'sender = "ops@eu.acme.example"', True),
    ('sender = "*@*.acme.example"', 'sender = "@eu.acme.example"', True),
    ('subject = "Alert"', 'sender = "x@y.example"\nsubject = "Alert for Site"', True),
    ('subject = "Alert"', 'sender = "x@y.example"', False),
    ('sender = "ops@acme.example"', 'sender = "@acme.example"', False),
    ('subject = "OK"', 'subject = "BOOK"', False),
    ('ates_source = "*"', 'ates_source = "Datto RMM"\nsubject = "offline"', True),
    ('ates_source = "Datto RMM"', 'ates_source = "XYZ"', False),
    ('conditions = [{ field = "subject", op = "contains", value = "x" }]', 'subject = "x"', False),
    ("sender = { regex = '^ops@acme\\.example$' }", 'sender = "ops@acme.example"', True),
    ("sender = { regex = '^ops@' }", 'sender = ["ops@acme.example", "ops@b.example"]', True),
    ("sender = { regex = '^ops@' }", 'sender = ["ops@acme.example", "x@b.example"]', False),
    ("sender = { regex = '@acme' }", 'sender = "@acme.example"', False),
    ("sender = { regex = '@acme' }", "sender = { regex = '@acme' }", True),
    ("sender = { regex = '@acme' }", "sender = { regex = '@acme\\.' }", False),
    ('sender = "*"', "sender = { regex = '@acme' }", True),
    ('sender = "*@*"', "sender = { regex = '@acme' }", False),
    ('sender = "@acme.example"', "sender = { regex = '^ops@acme\\.example$' }", False),
])
def test_shadowing_cases(tmp_path: Path, earlier: str, later: str, shadowed: bool) -> None:
    rule = 'name = "{n}"\nproduct_group = "servers"\nalert_type = "Disk Space"\nresolved = ["OK"]\n'
    text = f"[[detect]]\n{earlier}\n{rule.format(n='a')}\n[[detect]]\n{later}\n{rule.format(n='b')}"
    assert any("unreachable" in e for e in errors(tmp_path, text)) is shadowed


def test_duplicate_rule_names_across_files(tmp_path: Path) -> None:
    other = GOOD.replace('"PROBLEM"', '"Host Alert"').replace("nagios@", "other@")
    found = errors(tmp_path, GOOD, **{"20-more.toml": other})
    assert len(found) == 1 and "20-more.toml:2: nagios: duplicate rule name" in found[0]
    assert "10-test.toml:1" in found[0]


def test_template_with_unknown_field_and_clashing_group(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + 'title = "{hots} down"\n')
    assert len(found) == 1 and ":8: nagios: title uses unknown field(s) hots" in found[0]
    found = errors(tmp_path, GOOD + "key_regex = '(?P<subject>x)'\n")
    assert any("would hide the built-in field" in e for e in found)
    assert errors(tmp_path, GOOD + "key_regex = '(?P<host>\\w+)'\ntitle = \"{host}\"\n") == []


def test_impossible_account_rules(tmp_path: Path) -> None:
    found = errors(tmp_path, GOOD + '\n[[account]]\nname = "a"\nfor_rules = ["nagois"]\nafter = "x"\n')
    assert len(found) == 1 and ":11: a: can never match: for_rules names no [[detect]] rule 'nagois'" in found[0]
    no_ids = "id,name\nA-1,Alpha\n"
    found = errors(tmp_path, GOOD + '\n[[account]]\nname = "a"\nafter = "x"\nsearch = ["foreign-id"]\n',
                   accounts=no_ids)
    assert len(found) == 1 and "can never match: no account has a foreign-id" in found[0]
    found = errors(tmp_path, GOOD + '\n[[account]]\nname = "s"\nfrom = "sender"\n', accounts=no_ids)
    assert len(found) == 1 and "can never match: no account in the accounts directory lists a sender" in found[0]
    found = errors(tmp_path, GOOD + '\n[[account]]\nname = "n"\n')
    assert len(found) == 1 and "can never match: from = 'subject' needs after, before or regex" in found[0]
    found = errors(tmp_path, GOOD + "\n[[account]]\nname = 'r'\nregex = 'Site \\w+'\n")
    assert len(found) == 1 and "regex has no capture group" in found[0]


def test_status_table_once_and_its_keys_checked(tmp_path: Path) -> None:
    found = errors(tmp_path, "[status]\nresolved = ['x']\n", **{"20-b.toml": "[status]\nupdate = ['y']\n"})
    assert len(found) == 1 and "20-b.toml:1: [status] is already defined in 10-test.toml" in found[0]
    found = errors(tmp_path / "second", "[status]\nresolvd = ['x']\n")
    assert len(found) == 1 and "10-test.toml:2: [status]: unknown key 'resolvd'" in found[0]


def test_accounts_file_inside_the_rule_directory_is_not_a_rule_file(tmp_path: Path) -> None:
    rules, _ = write_rules(tmp_path, {"10-test.toml": GOOD}, accounts=None)
    acc = rules / "accounts.toml"
    acc.write_text('[[accounts]]\nid = "A-1"\nname = "Alpha"\nsenders = ["@alpha.example"]\n')
    rs = load_ruleset(rules, acc, CATALOGUE)
    assert [p.name for p in rs.files] == ["10-test.toml"] and len(rs.accounts) == 1


def test_load_refuses_errors_and_lists_them_all(tmp_path: Path) -> None:
    rules, acc = write_rules(tmp_path, {"10-a.toml": GOOD.replace("servers", "nope"),
                                        "20-b.toml": "[[skip]]\nname = 'x'\nsubjet = 'y'\n"})
    with pytest.raises(RuleSetError) as info:
        load_ruleset(rules, acc, CATALOGUE)
    text = str(info.value)
    assert text.startswith("3 error(s) in the rule files:")
    assert "10-a.toml:5: nagios: product group 'nope'" in text
    assert "20-b.toml:3: x: unknown key 'subjet'" in text
    assert all(isinstance(p, Problem) for p in info.value.problems)


def test_missing_directory(tmp_path: Path) -> None:
    found = check_ruleset(tmp_path / "nope", None, CATALOGUE)
    assert [str(p) for p in found] == [f"{tmp_path}/nope: rule directory not found"]


def test_warnings_for_likely_mistakes(tmp_path: Path) -> None:
    text = """
        [[detect]]
        name = "broad"
        sender = "*@*.com"
        subject = "OK"
        product_group = "servers"
        alert_type = "Disk Space"

        [[detect]]
        name = "never-resolves"
        sender = "a@b.example"
        product_group = "servers"
        alert_type = "Disk Space"
        resolved = []
        key_regex = '.*'
    """
    found = warnings(tmp_path, text)
    joined = "\n".join(found)
    assert "broad: sender wildcard '*@*.com' is very broad" in joined
    assert "broad: subject phrase 'OK' is very short" in joined
    assert "broad: no status phrases of its own" in joined
    assert "never-resolves: no resolved phrases: its alerts can never resolve" in joined
    assert "never-resolves: key_regex matches the empty string" in joined
    assert errors(tmp_path, text) == []
    rules, _ = write_rules(tmp_path, {"10-test.toml": text})
    assert len(load_ruleset(rules, None, CATALOGUE).warnings) == len(found) + 1  # + no accounts


def test_shadowed_skip_rule_is_a_warning(tmp_path: Path) -> None:
    text = "[[skip]]\nname = 'a'\nsubject = 'Healed'\n\n[[skip]]\nname = 'b'\nsubject = 'Self Healed'\n"
    assert any("b: unreachable" in w for w in warnings(tmp_path, text))
    assert errors(tmp_path, text) == []


def test_coalesce_window_is_read_and_checked(tmp_path):
    from bridge.classify.loader import RuleSetError, load_ruleset

    base = ('[[detect]]\nname = "n"\nsender = "a@b.example"\nproduct_group = "servers"\n'
            'alert_type = "Host Down"\n')
    (tmp_path / "10.toml").write_text(base + "coalesce_window = 45\n")
    rules = load_ruleset(tmp_path, None, {"servers": frozenset({"Host Down"})})
    assert rules.detect.rules[0].coalesce_window == 45.0
    (tmp_path / "10.toml").write_text(base + 'coalesce_window = "soon"\n')
    try:
        load_ruleset(tmp_path, None, {"servers": frozenset({"Host Down"})})
    except RuleSetError as exc:
        assert "coalesce_window" in str(exc) and "10.toml:6" in str(exc)
    else:
        raise AssertionError("a non-number window was accepted")
