"""Admin regexes: RE2 where it can, Python's re where it cannot, one meaning for both."""

from __future__ import annotations

import pickle
import re
import shutil
import time
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import pytest

from bridge.classify.regex import compile_regex
from tests.helpers import ROOT, cli, write_config


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    rx = compile_regex(r"(a+)+$")
    assert rx.engine == "re2"
    text = "a" * 50_000 + "b"
    started = time.perf_counter()
    assert rx.search(text) is None
    assert time.perf_counter() - started < 0.5  # Python's re would not finish this century


@pytest.mark.parametrize("pattern", [
    r"(\w+) \1",                # backreference
    r"(?P<x>a)(?P=x)",          # named backreference
    r"foo(?=bar)", r"(?<!x)y",  # lookaround
    r"a++", r"(?>a+)b",         # possessive, atomic
    r"(?x) a b  # spaced",      # verbose
    r"(?a)\w+",                 # ASCII flag
    r"end$|x\Z",                # Python's $ and \Z at once
])
def test_what_re2_cannot_express_falls_back_to_re(pattern: str) -> None:
    rx = compile_regex(pattern)
    assert rx.engine == "re" and rx.why
    assert (rx.search("A a foobar ay aab a b x") is not None) == \
        (re.search(pattern, "A a foobar ay aab a b x", re.I) is not None)


def test_invalid_pattern_raises_pythons_error() -> None:
    with pytest.raises(re.error, match="missing \\)"):
        compile_regex("(unclosed")


CASES = [
    # (pattern, text): both engines must agree on the match and every group
    (r"is (?P<state>\w+)\W*$", "Service X is CRITICAL!!"),
    (r"is (?P<state>\w+)\W*$", "Kunde Müller is GESTÖRT\n"),
    (r"(?P<name>\w+) (?P<n>\d+)", "Straße ٣٤ and x 12"),
    (r"\bon (?P<host>[\w-]+)", "disk full on srv-01.example"),
    (r"^Host:\s*(?P<host>\S+)$", "Host:\u00a0web1\n"),
    (r"(?m)^State: (?P<s>\w+)$", "a\nState: DOWN\nb"),
    (r"[\W_]+", "abc__--é"),
    (r"x[\S]y", "x y x-y"),
    (r"[[:alpha:]]+", "ab:[la]"),
    (r"a{,2}b", "aaab"),
    (r"\u00e9(?P<r>\N{LATIN SMALL LETTER A})", "Éa"),
    (r"\x41\0\101", "A\x00A"),
    (r"end\Z", "the end\n"),
    (r"end$", "the end\n"),
    (r"(?P<opt>zzz)?tail", "tail"),
    (r"[]^a]+", "]^a"),
    (r"CRIT", "crit"),
]


@pytest.mark.filterwarnings("ignore:Possible nested set:FutureWarning")
@pytest.mark.parametrize("case_sensitive", [False, True])
@pytest.mark.parametrize(("pattern", "text"), CASES)
def test_re2_keeps_pythons_meaning(pattern: str, text: str, case_sensitive: bool) -> None:
    rx = compile_regex(pattern, case_sensitive=case_sensitive)
    assert rx.engine == "re2", rx.why
    py = re.compile(pattern, 0 if case_sensitive else re.IGNORECASE).search(text)
    got = rx.search(text)
    assert (got is None) == (py is None)
    if got is not None and py is not None:
        assert got.group() == py.group() and got.groups() == py.groups()
        assert got.groupdict() == py.groupdict() and (got.start(), got.end()) == py.span()
    assert rx.groupindex == dict(re.compile(pattern).groupindex)


@pytest.mark.parametrize("case_sensitive", [False, True])
def test_unicode_classes_match_pythons_code_point_by_code_point(case_sensitive: bool) -> None:
    # Only characters Python's Unicode database does not know yet may differ — and, folded,
    # U+0345 (a combining mark whose case fold is the letter iota: docs/rules.md).
    known = [chr(c) for c in range(0x40000) if not 0xD800 <= c < 0xE000
             and unicodedata.category(chr(c)) not in ("Cn", "Co")]
    flags = 0 if case_sensitive else re.IGNORECASE
    for cls in (r"\w", r"\d", r"\s", r"\S", r"[\W\d]", r"[^\w\s]"):
        ours = compile_regex(f"^{cls}$", case_sensitive=case_sensitive)
        py = re.compile(f"^{cls}$", flags)
        assert ours.engine == "re2"
        differ = {hex(ord(ch)) for ch in known
                  if (ours.search(ch) is None) != (py.search(ch) is None)}
        assert differ <= (set() if case_sensitive else {"0x345"}), (cls, sorted(differ)[:10])


def test_case_folding_agrees_except_dotless_i() -> None:
    assert compile_regex("é").search("É") and compile_regex("k").search("\u212a")
    assert compile_regex("ß").search("ẞ") and compile_regex("s").search("ſ")
    assert re.search("ı", "I", re.I) and compile_regex("ı").search("I") is None  # documented
    assert compile_regex("crit", case_sensitive=True).search("CRIT") is None


def test_a_regex_survives_pickling_to_a_worker() -> None:
    rx = compile_regex(r"(?P<h>\w+)", case_sensitive=True)
    back = pickle.loads(pickle.dumps(rx))
    assert back.engine == "re2" and back.case_sensitive and back.groupindex == {"h": 1}
    m = back.search("Müller")
    assert m is not None and m.group("h") == "Müller"


def test_re2_is_not_slower_than_re_on_typical_rules() -> None:
    pattern = r"Service Alert: [^/]+/(?P<host>[^/]+)/(?P<service>.+?) is \w+"
    subject = "** PROBLEM Service Alert: ACME/web01/HTTP is CRITICAL **"
    rx, py = compile_regex(pattern), re.compile(pattern, re.I)
    assert rx.engine == "re2"

    def clock(fn: object) -> float:
        started = time.perf_counter()
        for _ in range(2000):
            fn(subject)  # type: ignore[operator]
        return time.perf_counter() - started

    # RE2's wrapper pays UTF-8 encoding and span decoding per call: a few µs, never seconds.
    assert clock(rx.search) < 0.5
    assert clock(py.search) < clock(rx.search) * 10


def test_check_flags_a_pattern_that_falls_back_to_re(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", rules)
    (rules / "15-echo.toml").write_text(
        '[[detect]]\nname = "echo"\nsender = "echo@mon.msp.example"\n'
        'product_group = "servers"\nalert_type = "Service Critical"\nresolved = ["OK"]\n'
        "conditions = [ { field = \"subject\", op = \"regex\", value = '(\\w+) \\1' } ]\n"
        "subject_regex = 'host (?P<host>[\\w.-]+)'\n")
    config = write_config(tmp_path, SimpleNamespace(url="http://127.0.0.1:9"), smtp_port=9)
    config.write_text(config.read_text().replace(f'"{ROOT / "rules"}"', f'"{rules}"'))
    result = cli("check", "--config", str(config))
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()
    [warning] = [line for line in out.splitlines() if "not linear-time" in line]
    assert "15-echo.toml:7: echo: condition 1" in warning and repr(r"(\w+) \1") in warning
    assert "subject_regex" not in out  # the RE2 pattern beside it is not flagged
