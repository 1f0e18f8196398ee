"""Benchmark 3: classification cost per message as rules and accounts grow.

Rule sets are generated as rule files plus an accounts CSV and loaded with `load_ruleset`, the
way mailbridge loads them. Each *sender/phrase* detect rule names a sender address and a subject
phrase; one `[[account]]` rule finds the customer between "for site" and "," in the subject;
a skip rule and the shipped status phrases are there as in real use. Messages (parsed once,
beforehand: parsing does not depend on the rules) hit random rules and random accounts, and a
tenth match no rule at all (they fall through every candidate the index offers).

`regex` rule sets are N rules that each test the subject with a `regex` condition (conditions
cannot be indexed): a message matching rule k costs k regex evaluations, so the figure given is
for messages that match the *last* rule or none — the worst case — next to a message matching
the first.

`mixed` rule sets (issue 16) put half the rules in a `format = 2` file: one `[[tool]]` per ten
rules (its sender, an optional host capture and a required state capture, an alert type map, a
key list, a `[tool.status]` with `from` + `map` before the phrases), each rule `tool = …` plus
its own subject phrase; the other half stay v1. Messages hit both halves.

Timed with time.perf_counter around `classify()` only, best of `repeat` passes.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.classify.engine import ClassifyContext, classify
from bridge.classify.loader import load_ruleset
from bridge.models import Kind
from bridge.parse.mime import parse

CATALOGUE = {"servers": frozenset({"Host Down", "Service Critical"})}


def _write_rules(directory: Path, rules: int, accounts: int, regex: bool = False) -> None:
    lines = ['[status]\nresolved = ["RECOVERY", "OK", "Resolved"]\n']
    for i in range(rules):
        lines.append("[[detect]]")
        lines.append(f'name = "vendor-{i:05d}"')
        if regex:
            lines.append(f'conditions = [{{ field = "subject", op = "regex", value = '
                         f'\'^\\[V{i:05d}\\] .* is (down|critical)\' }}]')
        else:
            lines.append(f'sender = "monitor@vendor{i:05d}.example"')
            lines.append(f'subject = "Check {i:05d}"')
        lines.append('product_group = "servers"\nalert_type = "Service Critical"\n')
    lines.append('[[skip]]\nname = "maintenance"\nsubject = "maintenance window"\n')
    lines.append('[[account]]\nname = "site"\nafter = "for site"\nbefore = ","\n'
                 'search = ["name"]\n')
    (directory / "rules.toml").write_text("\n".join(lines))
    csv = ["id,name,aliases,foreign_ids,senders"]
    csv += [f"ACC-{a:06d},Customer {a:06d},,f{a:06d},@cust{a:06d}.example"
            for a in range(accounts)]
    (directory / "accounts.csv").write_text("\n".join(csv) + "\n")


def _write_v2(directory: Path, first: int, rules: int) -> None:
    """Rules first..rules-1 as v2: a tool per ten rules, maps and a status map in each."""
    lines = ["format = 2\n"]
    for t in range(first // 10, (rules + 9) // 10):
        lines += ["[[tool]]", f'name = "tool-{t:05d}"', f'sender = "monitor@tool{t:05d}.example"',
                  'product_group = "servers"',
                  'alert_type = { from = "{state}", map = { down = "Host Down", critical = '
                  '"Service Critical" }, default = "Service Critical" }',
                  "capture = [{ in = \"subject\", regex = 'host (?P<host>\\S+)', optional = true },"
                  " { in = \"body\", regex = 'State: (?P<state>\\w+)' }]",
                  f'key = ["t{t}:{{account}}:{{host}}:{{state}}", "t{t}:{{account}}"]',
                  "[tool.status]", 'from = "{state}"',
                  'map = { UP = "resolved", OK = "resolved", DOWN = "open" }',
                  'resolved = ["RECOVERY"]\n']
        for i in range(max(first, t * 10), min(rules, t * 10 + 10)):
            lines += ["[[detect]]", f'name = "vendor-{i:05d}"', f'tool = "tool-{t:05d}"',
                      f'subject = "Check {i:05d}"\n']
    (directory / "20-v2.toml").write_text("\n".join(lines))


def _message(rule: int, account: int, n: int, regex: bool = False, v2: bool = False) -> bytes:
    if v2:
        sender = f"monitor@tool{rule // 10:05d}.example"
        subject = f"Check {rule:05d} failed for site Customer {account:06d}, host web{n}"
        return (f"From: Monitor <{sender}>\nTo: alerts@msp.example\nSubject: {subject}\n"
                f"Message-ID: <scale.{n}@bench>\nDate: Tue, 04 Mar 2025 09:00:00 +0000\n"
                "Content-Type: text/plain; charset=us-ascii\n\n"
                f"Host web{n} is down.\nState: DOWN\n").encode()
    if regex:
        sender, subject = "monitor@any.example", f"[V{rule:05d}] web{n} for site Customer " \
                                                  f"{account:06d}, HTTP is down"
    else:
        sender = f"monitor@vendor{rule:05d}.example"
        subject = f"Check {rule:05d} failed for site Customer {account:06d}, host web{n}"
    return (f"From: Monitor <{sender}>\nTo: alerts@msp.example\nSubject: {subject}\n"
            f"Message-ID: <scale.{n}@bench>\nDate: Tue, 04 Mar 2025 09:00:00 +0000\n"
            "Content-Type: text/plain; charset=us-ascii\n\n"
            f"Host web{n} is down.\nChecked at 09:00.\n").encode()


def _time(ruleset: Any, parsed: list[Any], repeat: int) -> float:
    ctx = ClassifyContext()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for p in parsed:
            classify(p, ruleset, ctx)
        best = min(best, time.perf_counter() - t)
    return best / len(parsed)


def measure(rules: int, accounts: int, messages: int = 2000, repeat: int = 5,
            seed: int = 3, mixed: bool = False) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mb-scale-"))
    half = rules // 2 if mixed else rules
    try:
        _write_rules(tmp, half, accounts)
        if mixed:
            _write_v2(tmp, half, rules)
        t = time.perf_counter()
        ruleset = load_ruleset(tmp, tmp / "accounts.csv", CATALOGUE)
        load_s = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rng = random.Random(seed)
    raws = []
    for n in range(messages):
        rule = rng.randrange(rules) if n % 10 else rules + 7  # a tenth match no rule
        raws.append(_message(rule, rng.randrange(accounts), n, v2=half <= rule < rules))
    parsed = [parse(r) for r in raws]
    # Sanity: the matching messages become alerts for the account they name.
    ctx = ClassifyContext()
    kinds = [classify(p, ruleset, ctx).kind for p in parsed]
    alerts = sum(k is Kind.ALERT for k in kinds)
    if alerts != sum(1 for n in range(messages) if n % 10):
        raise RuntimeError(f"{alerts} alerts of {messages} messages: the rules do not match")
    return {"rules": rules, "accounts": accounts, "per_message_us": _time(ruleset, parsed,
            repeat) * 1e6, "load_s": load_s, "mixed": mixed}


def measure_regex(rules: int, messages: int = 500, repeat: int = 3) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mb-scale-"))
    try:
        _write_rules(tmp, rules, 100, regex=True)
        ruleset = load_ruleset(tmp, tmp / "accounts.csv", CATALOGUE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    first = [parse(_message(0, n % 100, n, regex=True)) for n in range(messages)]
    last = [parse(_message(rules - 1, n % 100, n, regex=True)) for n in range(messages)]
    ctx = ClassifyContext()
    if not str(classify(last[0], ruleset, ctx).rule).endswith(f"vendor-{rules - 1:05d}"):
        raise RuntimeError("the regex rules do not match as intended")
    return {"rules": rules, "first_us": _time(ruleset, first, repeat) * 1e6,
            "last_us": _time(ruleset, last, repeat) * 1e6}


def run(small: tuple[int, int] = (10, 100), large: tuple[int, int] = (1000, 50_000),
        messages: int = 2000, regex_sizes: tuple[int, ...] = (10, 100, 1000)) -> dict[str, Any]:
    s = measure(*small, messages=messages)
    big = measure(*large, messages=messages)
    regex = [measure_regex(n, messages=max(100, messages // 4)) for n in regex_sizes]
    ms = measure(*small, messages=messages, mixed=True)
    mbig = measure(*large, messages=messages, mixed=True)
    return {"small": s, "large": big, "ratio": big["per_message_us"] / s["per_message_us"],
            "regex": regex, "mixed_small": ms, "mixed_large": mbig,
            "mixed_ratio": mbig["per_message_us"] / ms["per_message_us"]}


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
