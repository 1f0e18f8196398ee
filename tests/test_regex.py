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
    r"[^\W\s]+",                # an intersection that is not one of the "letters" idioms
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


KNOWN = "".join(chr(c) for c in range(0x40000) if not 0xD800 <= c < 0xE000
                and unicodedata.category(chr(c)) not in ("Cn", "Co"))


@pytest.mark.parametrize("case_sensitive", [False, True])
@pytest.mark.parametrize("cls", [r"\w", r"\d", r"\s", r"\S", r"[\W\d]", r"[^\w\s]", r"[\w.-]",
                                 r"[^\W\d_]", r"[^_\W]", r"[^\d\W]"])
def test_classes_match_pythons_code_point_by_code_point(cls: str, case_sensitive: bool) -> None:
    # Every character Python's class takes, and none it refuses, on each kind of text (ASCII,
    # Latin-1, the rest each run their own program). Only characters newer than Python's
    # Unicode database may differ (they are not in KNOWN) and, folded, U+0345: a combining
    # mark whose case fold is the letter iota (docs/rules.md).
    py = re.compile(cls, 0 if case_sensitive else re.IGNORECASE)
    known = KNOWN if case_sensitive else KNOWN.replace("\u0345", "")
    ours, every = (compile_regex(p, case_sensitive=case_sensitive) for p in (cls, f"^{cls}+$"))
    assert ours.engine == "re2"
    for chars in (known[:128], known[:256], known):
        inside = "".join(c for c in chars if py.fullmatch(c))
        outside = "".join(c for c in chars if not py.fullmatch(c))
        wrong_out = every.search(inside) is None
        wrong_in = outside and ours.search(outside) is not None
        if wrong_out or wrong_in:
            differ = [hex(ord(c)) for c in chars
                      if (ours.search(c) is None) != (py.fullmatch(c) is None)]
            pytest.fail(f"{cls} differs from Python's on {differ[:10]}")


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


def test_case_folding_of_literals_agrees_code_point_by_code_point() -> None:
    # Each kind of text (ASCII, Latin-1, beyond) runs its own program: fold through all.
    differ = []
    for cp in (*range(0x250), *range(0x370, 0x460), 0x1E9E, 0x212A, 0x212B):
        c = chr(cp)
        variants = {v for v in (c.lower(), c.upper(), c.casefold()) if len(v) == 1 and v != c}
        for v in variants:
            ours = compile_regex(re.escape(c) + r"\w*").search(v + "é")
            py = re.compile(re.escape(c) + r"\w*", re.I).search(v + "é")
            if (ours is None) != (py is None) or (ours and py and ours.group() != py.group()):
                differ.append((hex(cp), hex(ord(v))))
    assert differ == [("0x131", "0x49")]  # dotless ı and I: documented in docs/rules.md


def test_the_one_class_difference_u0345_when_folded() -> None:
    assert re.fullmatch(r"\w", "\u0345", re.I) is None
    assert compile_regex(r"^\w$").search("\u0345") is not None
    assert compile_regex(r"^\w$", case_sensitive=True).search("\u0345") is None
