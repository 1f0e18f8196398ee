"""`mailbridge expect suggest`: senders that mail at a regular rhythm, as `[[expect]]` rules.

Reports are grouped by sender and subject pattern (digits and bracketed status tags such as
`[Success]` taken out, so a job's success and failure reports are one series). A series is
regular when it has at least `MIN_REPORTS` reports over at least `MIN_DAYS` days and most
gaps agree: about a day (then a daily deadline at the usual arrival time, local time zone) or a
steady N hours (then `every`). Anything else — a one-off, an irregular sender — proposes
nothing: a wrong expectation would open tickets for mail that was never promised.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass
from datetime import datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr
from zoneinfo import ZoneInfo

MIN_REPORTS = 5
MIN_DAYS = 4.0
DAY = 86400.0
_TAG = re.compile(r"\[[^\]]{0,40}\]|\(\s*[^)]{0,40}\)")
_DIGITS = re.compile(r"\d+")
_SPACE = re.compile(r"\s+")
_SLUG = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Report:
    at: float
    sender: str
    subject: str
    rule: str | None


@dataclass(frozen=True)
class Suggestion:
    sender: str
    pattern: str
    count: int
    rhythm: str          # "daily" | "every"
    daily: str | None    # "HH:MM"
    every_hours: int | None
    grace: str
    rule: str | None
    toml: str


def read_report(at: float, rule: str | None, head: bytes) -> Report:
    """Sender and subject from a mail's head (compat32: never raises on odd headers)."""
    msg = BytesHeaderParser(policy=compat32).parsebytes(head, headersonly=True)
    sender = parseaddr(str(msg.get("From", "") or ""))[1].strip().lower()
    subject = _SPACE.sub(" ", str(msg.get("Subject", "") or "")).strip()
    return Report(at, sender, subject[:300], (rule or "").rpartition(":")[2] or None)


def pattern_of(subject: str) -> str:
    return _SPACE.sub(" ", _DIGITS.sub("#", _TAG.sub(" ", subject))).strip()


def _quarter_up(minutes: float) -> str:
    m = int(math.ceil(minutes / 15.0) * 15) % (24 * 60)
    return f"{m // 60:02d}:{m % 60:02d}"


def _literal(pattern: str) -> str:
    runs = [r.strip(" -:'\"") for r in pattern.split("#")]
    best = max(runs, key=len, default="")
    return best if len(best) >= 4 else ""


def _toml(name: str, s: Report, pattern: str, schedule: str, grace: str, zone: str,
          rule: str | None, note: str, routing: tuple[str, str] | None) -> str:
    lines = [f"# {note}", "[[expect]]", f'name = "{name}"']
    if rule:
        lines += [f'rule = "{rule}"', 'per = "key"']
    else:
        lines.append(f'sender = "{s.sender}"')
        lit = _literal(pattern)
        if lit:
            lines.append(f'subject = {json_str(lit)}')
        lines += ['per = "once"', 'account = ""            # the customer these reports are for']
    lines.append(schedule)
    if schedule.startswith("daily"):
        lines.append(f'timezone = "{zone}"')
    lines.append(f'grace = "{grace}"')
    if routing is not None:  # the detect rule's own routing: change it if you like
        lines += [f"product_group = {json_str(routing[0])}",
                  f"alert_type = {json_str(routing[1])}"]
    else:
        lines += ['product_group = ""      # from your catalogue',
                  'alert_type = ""         # from your catalogue']
    return "\n".join(lines) + "\n"


def json_str(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _mostly(values: list[float], centre: float, tolerance: float) -> bool:
    near = sum(1 for v in values if abs(v - centre) <= tolerance)
    return near >= 0.8 * len(values)


def suggest(reports: list[Report], zone: str = "UTC",
            routing: dict[str, tuple[str, str]] | None = None) -> list[Suggestion]:
    """`routing`: each detect rule's product group and alert type, for its suggestions."""
    routing = routing or {}
    tz = ZoneInfo(zone)
    series: dict[tuple[str, str], list[Report]] = {}
    for r in reports:
        if r.sender:
            series.setdefault((r.sender, pattern_of(r.subject)), []).append(r)
    out: list[Suggestion] = []
    for (sender, pattern), items in sorted(series.items()):
        items.sort(key=lambda r: r.at)
        times = [r.at for r in items]
        if len(times) < MIN_REPORTS or times[-1] - times[0] < MIN_DAYS * DAY - 3600:
            continue
        gaps = [b - a for a, b in zip(times, times[1:]) if b - a > 300]  # resends: one report
        if len(gaps) < MIN_REPORTS - 1:
            continue
        typical = statistics.median(gaps)
        rules = {r.rule for r in items}
        rule = rules.pop() if len(rules) == 1 else None
        slug = _SLUG.sub("-", f"{sender.partition('@')[0]} {_literal(pattern) or 'reports'}"
                         .lower()).strip("-")[:48]
        if _mostly(gaps, DAY, 3 * 3600):
            minutes = sorted((datetime.fromtimestamp(t, tz).hour * 60
                              + datetime.fromtimestamp(t, tz).minute) for t in times)
            centre = statistics.median(minutes)
            if max(abs(m - centre) for m in minutes) > 180:  # the same gap, any time of day
                continue
            late = minutes[max(0, int(math.ceil(0.9 * len(minutes))) - 1)]
            spread = statistics.pstdev(minutes)
            grace = "2h" if spread > 30 else "1h"
            daily = _quarter_up(late)
            note = (f"{sender}: {len(times)} reports, daily around "
                    f"{int(centre) // 60:02d}:{int(centre) % 60:02d} {zone}")
            toml = _toml(slug, items[-1], pattern, f'daily = "{daily}"', grace, zone, rule, note,
                         routing.get(rule or ""))
            out.append(Suggestion(sender, pattern, len(times), "daily", daily, None, grace,
                                  rule, toml))
        elif 3600 - 600 <= typical <= 12 * 3600 and _mostly(gaps, typical, 0.1 * typical):
            hours = max(1, round(typical / 3600))
            grace_min = max(15, int(15 * math.ceil(hours * 60 * 0.25 / 15)))
            grace = f"{grace_min}m"
            note = f"{sender}: {len(times)} reports, every {hours} h"
            toml = _toml(slug, items[-1], pattern, f'every = "{hours}h"', grace, zone, rule,
                         note, routing.get(rule or ""))
            out.append(Suggestion(sender, pattern, len(times), "every", None, hours, grace,
                                  rule, toml))
    return out
