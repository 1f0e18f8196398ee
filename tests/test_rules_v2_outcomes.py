"""The shipped rules keep their outcomes through v2 (issue 16).

Three rule sets classify the same mail: the v1 originals (tests/rules_v1/), the hand-written
v2 files that ship (rules/), and `rules migrate` of the originals. Their outcomes — kind, the
rule's short name, account, alert key, status, product group, alert type, title, forward
address — must be identical on

- every sample of samples/,
- the 116 messages of ../shared/corpus (real mail clients, spam, bounces, broken MIME), and
- the corpus bodies under each tool's sample headers: a sample's headers (sender, subject,
  authentication) with a corpus message's MIME body, so the detect rules really fire on
  HTML-only, multipart, stub-text and badly encoded bodies. The hand-written files differ in
  one place, on purpose: their Zabbix rule requires the event id (a Zabbix mail without it
  cannot be matched to its recovery), so a body without one is left to the tool's sender and
  ends `unmatched` where v1 opened an alert keyed by the subject.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.classify import RuleSet, check_ruleset, classify, load_ruleset
from bridge.classify.migrate import migrate_files
from bridge.models import Classification, Kind, ParsedMessage
from bridge.parse.mime import parse
from tests.test_rules_support import CATALOGUE
from tests.test_samples import ACCOUNTS, CTX, ROOT, RULES, SAMPLES

V1 = ROOT / "tests" / "rules_v1"
CORPUS = next((p for base in (ROOT.parent, ROOT.parent.parent)
               if (p := base / "shared" / "corpus" / "zammad-mail").is_dir()), None)
# One sample per tool whose headers carry the corpus bodies.
CARRIERS = ("01-nagios-problem.eml", "05-zabbix-problem.eml", "07-prtg-sensor-down.eml",
            "09-veeam-failed.eml", "15-fortigate-firewall.eml", "16-nsight-html-only.eml",
            "19-nagios-unknown-account.eml")
_MIME_HEADER = re.compile(rb"^(content-|mime-version)", re.IGNORECASE)

Outcome = tuple[object, ...]


def outcome(c: Classification) -> Outcome:
    a = c.alert
    rule = c.rule.rpartition(":")[2] if c.rule else None
    if a is None:
        return (c.kind, rule, c.forward_to)
    return (c.kind, rule, c.forward_to, a.account_id, a.alert_key, a.status, a.product_group,
            a.alert_type, a.title)


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("migrated")
    files = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(V1.glob("*.toml"))]
    for m in migrate_files(files):
        (out / m.name).write_text(m.text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def rulesets(migrated: Path) -> dict[str, RuleSet]:
    return {"v1": load_ruleset(V1, ACCOUNTS, CATALOGUE),
            "hand": load_ruleset(RULES, ACCOUNTS, CATALOGUE),
            "migrated": load_ruleset(migrated, ACCOUNTS, CATALOGUE)}


def test_all_three_sets_check_without_errors_or_warnings(migrated: Path) -> None:
    for directory in (V1, RULES, migrated):
        assert check_ruleset(directory, ACCOUNTS, CATALOGUE) == [], directory


def _split(raw: bytes) -> tuple[list[bytes], bytes]:
    """Header lines (unfolded into whole fields) and the body of a raw message."""
    m = re.search(rb"\r?\n\r?\n", raw)
    head, body = (raw[:m.start()], raw[m.end():]) if m else (raw, b"")
    fields: list[bytes] = []
    for line in re.split(rb"\r?\n", head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += b"\n" + line
        else:
            fields.append(line)
    return fields, body


def carried(sample: bytes, corpus: bytes) -> bytes:
    """The sample's headers, the corpus message's MIME headers and body."""
    s_fields, _ = _split(sample)
    c_fields, c_body = _split(corpus)
    fields = [f for f in s_fields if not _MIME_HEADER.match(f)]
    fields += [f for f in c_fields if _MIME_HEADER.match(f)]
    return b"\n".join(fields) + b"\n\n" + c_body


def _compare(rulesets: dict[str, RuleSet], messages: list[tuple[str, ParsedMessage]],
             names: tuple[str, ...]) -> None:
    diffs = []
    for label, parsed in messages:
        seen = {n: outcome(classify(parsed, rulesets[n], CTX)) for n in ("v1", *names)}
        diffs += [f"{label} [{n}]: v1 {seen['v1']} != {seen[n]}"
                  for n in names if seen[n] != seen["v1"]]
    assert diffs == []


def test_samples_keep_their_outcomes(rulesets: dict[str, RuleSet]) -> None:
    messages = [(p.name, parse(p.read_bytes())) for p in sorted(SAMPLES.glob("*.eml"))]
    _compare(rulesets, messages, ("hand", "migrated"))


@pytest.mark.corpus
@pytest.mark.skipif(CORPUS is None, reason="../shared/corpus is not beside the checkout")
def test_corpus_keeps_its_outcomes(rulesets: dict[str, RuleSet]) -> None:
    assert CORPUS is not None
    files = sorted(CORPUS.glob("*.box"))
    assert len(files) == 116
    _compare(rulesets, [(p.name, parse(p.read_bytes())) for p in files], ("hand", "migrated"))


@pytest.mark.corpus
@pytest.mark.skipif(CORPUS is None, reason="../shared/corpus is not beside the checkout")
@pytest.mark.parametrize("carrier", CARRIERS)
def test_corpus_bodies_under_tool_headers_keep_their_outcomes(
        rulesets: dict[str, RuleSet], carrier: str) -> None:
    assert CORPUS is not None
    sample = (SAMPLES / carrier).read_bytes()
    messages = [(f"{carrier}+{p.name}", parse(carried(sample, p.read_bytes())))
                for p in sorted(CORPUS.glob("*.box"))]
    detected = sum(1 for _, m in messages if classify(m, rulesets["v1"], CTX).rule)
    assert detected >= 100, "the carrier's rule must fire on nearly every body"
    _compare(rulesets, messages, ("migrated",))
    differ = []
    for label, m in messages:
        old, new = classify(m, rulesets["v1"], CTX), classify(m, rulesets["hand"], CTX)
        if outcome(old) != outcome(new):
            differ.append(label)
            assert carrier.startswith("05-zabbix") and "Original problem ID" not in m.body
            assert (old.kind, new.kind) == (Kind.ALERT, Kind.UNMATCHED)
            assert "mail from tool zabbix matched none of its detect rules" in new.reason
    assert len(differ) == (109 if carrier.startswith("05-zabbix") else 0)
