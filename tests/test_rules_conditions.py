"""OpsRamp-style conditions: every operator, every kind of field, any/all."""

import pytest

from bridge.classify.conditions import Condition, ConditionGroup
from bridge.classify.view import MessageView
from tests.test_rules_support import msg, token

M = msg(subject="[PRTG] Sensor Ping is Down", sender="PRTG@prtg.msp.example",
        body="Device: core-sw01\nLast message: timeout",
        headers={"X-Mailer": ("FortiGate FG100F", "second value"), "X-Empty": ""},
        recipients=("Alerts@msp.example", "noc@msp.example"))


def check(field: str, op: str, value: str, message=M, token_=None) -> bool:
    view = MessageView(message, token_, "Datto RMM" if token_ else None)
    return Condition.compile(field, op, value).test(view)


@pytest.mark.parametrize("op,value,expected", [
    ("contains", "sensor ping", True), ("contains", "nothing", False),
    ("not_contains", "nothing", True), ("not_contains", "PING", False),
    ("equals", "[prtg] sensor ping is down", True), ("equals", "[PRTG] Sensor", False),
    ("not_equals", "[PRTG] Sensor", True), ("not_equals", "[PRTG] SENSOR PING IS DOWN", False),
    ("starts_with", "[prtg]", True), ("starts_with", "sensor", False),
    ("ends_with", "is down", True), ("ends_with", "is up", False),
    ("regex", r"is (down|up)$", True), ("regex", r"^sensor", False),
])
def test_every_operator_on_the_subject(op: str, value: str, expected: bool) -> None:
    assert check("subject", op, value) is expected


@pytest.mark.parametrize("spelling", ["Not Contains", "not-contains", "NOT_CONTAINS"])
def test_opsramp_spellings_of_operators(spelling: str) -> None:
    assert check("subject", spelling, "nothing")


def test_sender_body_and_recipients() -> None:
    assert check("sender", "equals", "prtg@PRTG.msp.example")
    assert check("sender", "ends_with", "@prtg.msp.example")
    assert check("body", "contains", "core-sw01")
    assert check("body", "regex", r"^Last message: \w+$") is False  # no MULTILINE: whole body
    assert check("body", "regex", r"(?m)^Last message: \w+$")
    assert check("to", "equals", "noc@msp.example")          # any recipient
    assert check("to", "not_equals", "noc@msp.example") is False


def test_headers_any_value_and_missing_header() -> None:
    assert check("header:X-Mailer", "starts_with", "fortigate")
    assert check("header:x-mailer", "equals", "second value")        # any of the values
    assert check("header:X-Mailer", "not_contains", "second") is False  # negation: none may
    assert check("header:X-Missing", "equals", "")                  # absent = empty
    assert check("header:X-Missing", "contains", "x") is False
    assert check("header:X-Missing", "not_contains", "x")


def test_token_fields_only_of_a_trusted_token() -> None:
    t = token(customer="C-77", alert="AL-5", device="DEV-1")
    assert check("token.customer_id", "equals", "c-77", token_=t)
    assert check("token.alert_id", "starts_with", "AL", token_=t)
    assert check("token.device_id", "regex", r"^DEV-\d$", token_=t)
    assert check("token.source", "equals", "datto rmm", token_=t)
    assert check("token.customer_id", "equals", "C-77") is False   # no trusted token


@pytest.mark.parametrize("field,op,value,error", [
    ("subjekt", "contains", "x", "unknown field"),
    ("header:", "contains", "x", "unknown field"),
    ("token.password", "contains", "x", "unknown field"),
    ("subject", "like", "x", "unknown operator"),
    ("subject", "regex", "(unclosed", "bad regex"),
])
def test_invalid_conditions_say_why(field: str, op: str, value: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        Condition.compile(field, op, value)


def test_match_all_and_any() -> None:
    view = MessageView(M)
    yes = Condition.compile("subject", "contains", "ping")
    no = Condition.compile("body", "contains", "absent")
    assert ConditionGroup((yes, no)).test(view) is None
    assert ConditionGroup((yes, yes)).test(view) == "subject contains 'ping' AND subject contains 'ping'"
    assert ConditionGroup((no, yes), match_any=True).test(view) == "subject contains 'ping'"
    assert ConditionGroup((no, no), match_any=True).test(view) is None


@pytest.mark.parametrize("op,value,insensitive,sensitive", [
    ("contains", "Sensor Ping", True, True), ("contains", "sensor ping", True, False),
    ("not_contains", "sensor ping", False, True), ("equals", "[prtg] sensor ping is down",
                                                   True, False),
    ("not_equals", "[PRTG] Sensor Ping is Down", False, False),
    ("starts_with", "[prtg]", True, False), ("starts_with", "[PRTG]", True, True),
    ("ends_with", "DOWN", True, False), ("regex", r"is Down$", True, True),
    ("regex", r"is DOWN$", True, False), ("regex", r"(?i)is DOWN$", True, True),
])
def test_case_sensitivity_per_condition(op: str, value: str, insensitive: bool,
                                        sensitive: bool) -> None:
    view = MessageView(M)
    loose = Condition.compile("subject", op, value)
    strict = Condition.compile("subject", op, value, case_sensitive=True)
    assert loose.test(view) is insensitive and strict.test(view) is sensitive
    assert not loose.case_sensitive and strict.describe().endswith("(case-sensitive)")


def test_case_sensitive_conditions_still_compare_nfc_text() -> None:
    composed = msg(subject="Störung: Caf\u00e9 down", headers={"X-Site": ("Caf\u0065\u0301",)})
    view = MessageView(composed)
    assert Condition.compile("subject", "contains", "Cafe\u0301", case_sensitive=True).test(view)
    assert Condition.compile("header:X-Site", "equals", "Café", case_sensitive=True).test(view)
    assert not Condition.compile("subject", "contains", "STÖRUNG", case_sensitive=True).test(view)
    assert Condition.compile("subject", "contains", "STÖRUNG").test(view)
