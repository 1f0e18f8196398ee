"""[[expect]] rules as pure parts: reading, schedules (time zones, daylight saving, weekdays)
and which classified mail satisfies which instance (issue 20)."""

from __future__ import annotations

from datetime import datetime, time as dtime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bridge.classify.expect import Schedule, parse_duration
from bridge.classify.loader import check_ruleset, load_ruleset

CATALOGUE = {"backup": frozenset({"Backup Failed"}), "servers": frozenset({"Host Down"})}
DETECT = """
[[detect]]
name = "veeam"
sender = "@backup.msp.example"
subject = "Backup job"
product_group = "backup"
alert_type = "Backup Failed"
resolved = ["[Success]"]

[[skip]]
name = "heartbeat"
subject = "heartbeat"
"""


def berlin(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo("Europe/Berlin")).timestamp()


def test_durations():
    assert parse_duration("90m") == 5400
    assert parse_duration("12h") == 43200
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration(3600) == 3600
    assert parse_duration("soon") is None and parse_duration(True) is None


def test_every_counts_from_the_last_report():
    s = Schedule(grace=600, every=3600)
    assert s.judge_at(1000.0) == 1000 + 3600 + 600


def test_daily_report_a_little_late_still_counts_for_its_own_day():
    s = Schedule(grace=2 * 3600, at=dtime(6, 0), zone="Europe/Berlin")
    # On time (05:30) and late within the grace (07:30): both answer Monday's slot.
    assert s.judge_at(berlin("2025-03-03T05:30")) == berlin("2025-03-04T08:00")
    assert s.judge_at(berlin("2025-03-03T07:30")) == berlin("2025-03-04T08:00")
    # After the grace it answers Tuesday's slot.
    assert s.judge_at(berlin("2025-03-03T09:00")) == berlin("2025-03-05T08:00")


def test_daily_follows_the_wall_clock_across_daylight_saving():
    s = Schedule(grace=3600, at=dtime(6, 0), zone="Europe/Berlin")
    # 2025-03-30: clocks go forward; the day has 23 hours, the deadline stays 07:00 local.
    judged = s.judge_at(berlin("2025-03-29T05:50"))
    assert judged == berlin("2025-03-30T07:00")
    assert judged - berlin("2025-03-29T07:00") == 23 * 3600


def test_weekdays_skip_the_weekend():
    s = Schedule(grace=3600, at=dtime(6, 0), zone="UTC", weekdays=frozenset(range(5)))
    friday = datetime(2025, 3, 7, 5, 0, tzinfo=timezone.utc).timestamp()
    monday = datetime(2025, 3, 10, 7, 0, tzinfo=timezone.utc).timestamp()
    assert s.judge_at(friday) == monday


def _load(tmp: Path, expect: str):
    d = tmp / "rules"
    d.mkdir(exist_ok=True)
    (d / "10.toml").write_text(DETECT + expect)
    return d


def test_a_valid_expectation_loads(tmp_path):
    d = _load(tmp_path, """
[[expect]]
name = "veeam-daily"
rule = "veeam"
daily = "06:00"
timezone = "Europe/Berlin"
weekdays = ["mon", "tue", "wed", "thu", "fri"]
grace = "2h"
product_group = "backup"
alert_type = "Backup Failed"
""")
    rs = load_ruleset(d, None, CATALOGUE)
    [e] = rs.expect
    assert e.schedule.describe() == "mon,tue,wed,thu,fri at 06:00 Europe/Berlin, grace 2h"


@pytest.mark.parametrize("body, fragment", [
    ('rule = "nope"\nevery = "24h"', "no [[detect]] or [[skip]] rule"),
    ('rule = "veeam"', "exactly one of every"),
    ('rule = "veeam"\nevery = "24h"\ndaily = "06:00"', "exactly one of every"),
    ('rule = "veeam"\ndaily = "6am"', "HH:MM"),
    ('rule = "veeam"\ndaily = "06:00"\ntimezone = "Mars/Olympus"', "unknown time zone"),
    ('rule = "veeam"\nevery = "often"', "every must be a duration"),
    ('rule = "heartbeat"\nevery = "1h"', "skip rule"),
    ('rule = "veeam"\nevery = "24h"\ntitle = "{nope}"', "unknown fields"),
    ('rule = "veeam"\nsender = "@x.example"\nevery = "24h"', "not both"),
])
def test_mistakes_are_named(tmp_path, body, fragment):
    d = _load(tmp_path, f'\n[[expect]]\nname = "e"\nproduct_group = "backup"\n'
                        f'alert_type = "Backup Failed"\n{body}\n')
    problems = [p for p in check_ruleset(d, None, CATALOGUE) if p.is_error]
    assert any(fragment in p.message for p in problems), [p.message for p in problems]


def test_routing_is_checked_against_the_catalogue(tmp_path):
    d = _load(tmp_path, '\n[[expect]]\nname = "e"\nrule = "veeam"\nevery = "1d"\n'
                        'product_group = "backup"\nalert_type = "Nope"\n')
    assert any("alert type 'Nope'" in p.message for p in check_ruleset(d, None, CATALOGUE))
