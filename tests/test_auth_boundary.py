"""Forged recoveries against the RFC 8601 trust boundary: real mail in Dovecot, the real
pipeline, tickets in the PSA simulator. Every mail carries the local delivery hop Dovecot's
LMTP writes on top, as in production; the boundary must see through it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from bridge.classify.authres import (parse_results, received_words, tokenize,
                                     trusted_trace)
from bridge.config import load_settings
from bridge.daemon import Bridge
from bridge.parse.mime import parse
from tests.helpers import SAMPLES, outcomes, write_config
from tests.test_daemon import imap_section

LMTP = (b"Received: from mx.msp.example ([192.0.2.1])\r\n\tby imap.msp.example with LMTP\r\n"
        b"\tid 9Ku3MjHXBGCYJgAAIDkTkQ\r\n\t(envelope-from <nagios@monitor.msp.example>)\r\n"
        b"\tfor <alerts@msp.example>; Tue, 04 Mar 2025 10:05:01 +0000\r\n")
MX = (b"Received: from unknown (unknown [203.0.113.66])\r\n\tby mx.msp.example (Postfix) "
       b"with ESMTPS id 4Z7FORGED2\r\n\tfor <alerts@msp.example>; Tue, 04 Mar 2025 10:05:00 "
       b"+0000\r\n")


def body_of(name: str) -> bytes:
    """A sample without its trace headers (they are rebuilt per test)."""
    raw = (SAMPLES / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    head, _, body = raw.partition(b"\r\n\r\n")
    keep, skipping = [], False
    for line in head.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if not skipping:
                keep.append(line)
            continue
        skipping = line.lower().startswith((b"received:", b"authentication-results:"))
        if not skipping:
            keep.append(line)
    return b"\r\n".join(keep) + b"\r\n\r\n" + body


def delivered(name: str, above: bytes = b"", below: bytes = b"", mid: bytes = b"",
              sender: bytes | None = None) -> bytes:
    """LMTP hop, then what our MX wrote (`above` + its Received), then the sender's part."""
    rest = body_of(name)
    if sender is not None:
        start = rest.index(b"From: ")
        rest = rest[:start] + b"From: " + sender + rest[rest.index(b"\r\n", start):]
    if mid:
        rest = rest.replace(b"Message-ID: <", b"Message-ID: <" + mid, 1)
    return LMTP + above + MX + below + rest


FAIL_NAGIOS = (b"Authentication-Results: mx.msp.example;\r\n\tdkim=none;\r\n"
               b"\tspf=fail smtp.mailfrom=nagios@monitor.msp.example\r\n")
PASS_NAGIOS = (b"Authentication-Results: mx.msp.example;\r\n\tdkim=pass "
               b"header.d=monitor.msp.example header.s=mail2025\r\n")

FORGED = {
    # The sender's own header claims our authserv-id, below our MX's spf=fail.
    "injected-below-ours": ("01-nagios-problem.eml", delivered(
        "04-nagios-recovery.eml", above=FAIL_NAGIOS, mid=b"f1.",
        below=b"Authentication-Results: mx.msp.example; dkim=pass "
              b"header.d=monitor.msp.example\r\n"), "not authenticated"),
    # Our MX's genuine spf=fail, with a quoted ";" in the envelope sender it recorded.
    "quoted-semicolon": ("01-nagios-problem.eml", delivered(
        "04-nagios-recovery.eml", mid=b"f2.",
        above=b'Authentication-Results: mx.msp.example; spf=fail smtp.mailfrom='
              b'"x;dkim=pass header.d=monitor.msp.example "@evil.example\r\n'),
        "not authenticated"),
    # The display name carries the Zabbix address; our MX says spf=fail for the real one.
    "display-name-from": ("05-zabbix-problem.eml", delivered(
        "06-zabbix-resolved.eml", mid=b"f3.",
        sender=b"zabbix@zabbix.msp.example <evil@attacker.example>",
        above=b"Authentication-Results: mx.msp.example; spf=fail "
              b"smtp.mailfrom=evil@attacker.example\r\n"), "display name"),
    # The Zabbix rule does not require authentication; our MX's results fail for its domain.
    "rule-without-auth-mx-fail": ("05-zabbix-problem.eml", delivered(
        "06-zabbix-resolved.eml", mid=b"f4.",
        above=b"Authentication-Results: mx.msp.example; dkim=fail "
              b"header.d=zabbix.msp.example; spf=fail smtp.mailfrom=zabbix@zabbix.msp.example"
              b"\r\n"), "did not authenticate"),
}


async def run_once(config, flush: bool = False) -> None:
    bridge = Bridge(load_settings(config))
    try:
        await bridge.run_once(flush=flush)
    finally:
        await bridge.close()


@pytest.fixture
def config(tmp_path, dovecot, psa_sim, smtp_sink):
    # A recovery closes at once (no resolve delay): these tests are about who may close.
    return write_config(tmp_path, psa_sim, smtp_port=smtp_sink.port, imap=imap_section(dovecot),
                        extra="\n[storm]\nresolve_delay = 0\n")


@pytest.mark.dovecot
@pytest.mark.parametrize("case", sorted(FORGED))
async def test_forged_recovery_leaves_the_ticket_open(case, config, dovecot, psa_sim):
    problem, forged, why = FORGED[case]
    dovecot.append(delivered(problem, above=PASS_NAGIOS if "nagios" in problem else b""))
    await run_once(config)
    [ticket] = psa_sim.tickets()
    assert ticket["status"] != "closed"
    dovecot.append(forged)
    await run_once(config)
    [ticket] = psa_sim.tickets()
    assert ticket["status"] != "closed", case
    got = list(outcomes(config.parent / "mailbridge.db").values())
    assert got[0][0] == "created" and got[1][0] == "rejected", got
    assert why in got[1][1], got[1][1]


@pytest.mark.dovecot
@pytest.mark.parametrize("problem,recovery,above", [
    ("01-nagios-problem.eml", "04-nagios-recovery.eml", PASS_NAGIOS),
    ("05-zabbix-problem.eml", "06-zabbix-resolved.eml", b""),  # no results: nothing failed
    ("05-zabbix-problem.eml", "06-zabbix-resolved.eml",
     b"Authentication-Results: mx.msp.example; spf=pass smtp.mailfrom=zabbix.msp.example\r\n"),
])
async def test_genuine_recovery_through_the_lmtp_hop_still_closes(
        problem, recovery, above, config, dovecot, psa_sim):
    dovecot.append(delivered(problem, above=above))
    await run_once(config)
    dovecot.append(delivered(recovery, above=above))
    await run_once(config, flush=True)  # the resolve is held `resolve_delay` (120 s) otherwise
    [ticket] = psa_sim.tickets()
    assert ticket["status"] == "closed"
    assert [o for o, _ in outcomes(config.parent / "mailbridge.db").values()] == \
        ["created", "resolved"]


# -- the boundary and the grammar, as pure functions ------------------------------------------

def trace(raw: bytes) -> tuple[tuple[str, str], ...]:
    return parse(raw).trace


def test_only_results_above_our_border_count() -> None:
    raw = delivered("04-nagios-recovery.eml", above=FAIL_NAGIOS,
                    below=b"Authentication-Results: mx.msp.example; dkim=pass header.d=x\r\n")
    hosts = frozenset({"mx.msp.example"})
    got = trusted_trace(trace(raw), hosts)
    assert len(got.results) == 1 and "spf=fail" in got.results[0]
    assert got.border is not None and "203.0.113.66" in got.border
    # No Received of ours: nothing is trusted, even the right authserv-id.
    assert trusted_trace(trace(body_of("04-nagios-recovery.eml")), hosts).results == ()
    # A foreign hop above ours ends the trusted block; an LMTP hop below ours is not ours.
    foreign = b"Received: from a by relay.other.example with ESMTP; Tue, 4 Mar 2025\r\n"
    assert trusted_trace(trace(foreign + FAIL_NAGIOS + MX), hosts).results == ()
    fake_lmtp = b"Received: from x by y with LMTP; Tue, 4 Mar 2025\r\n"
    forged = MX + PASS_NAGIOS + fake_lmtp + MX
    assert trusted_trace(trace(FAIL_NAGIOS + forged), hosts).results == (
        trace(FAIL_NAGIOS)[0][1],)


def test_quoted_semicolon_and_comments_do_not_make_a_pass() -> None:
    authserv, results = parse_results(
        'mx.msp.example; spf=fail smtp.mailfrom="x;dkim=pass header.d=a.example "@evil.example')
    assert authserv == "mx.msp.example"
    assert results == [("spf", "fail", {"smtp.mailfrom": "x;dkim=pass header.d=a.example @evil.example"})]
    _, results = parse_results('mx (x; dkim=pass header.d=a.example) 1; spf=pass (a \\( ;) '
                               'smtp.mailfrom=b.example')
    assert results == [("spf", "pass", {"smtp.mailfrom": "b.example"})]
    # Glued tokens are not a property value: the result is dropped, not guessed.
    assert parse_results('mx; spf=pass smtp.mailfrom=evil.example"@a.example"')[1] == []
    assert parse_results("mx; none") == ("mx", [])


_WORD = st.from_regex(r"[a-z][a-z0-9-]{0,8}", fullmatch=True)
_NASTY = st.text(alphabet='ab;=()"\\ .@x-', min_size=1, max_size=12)


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@st.composite
def headers(draw):  # type: ignore[no-untyped-def]
    results = []
    for _ in range(draw(st.integers(1, 4))):
        props = {f"{draw(_WORD)}.{draw(_WORD)}": draw(st.one_of(_WORD, _NASTY))
                 for _ in range(draw(st.integers(0, 3)))}
        results.append((draw(_WORD), draw(_WORD), props))
    comment = st.sampled_from(["", " ", " (c; d=pass) ", "(x (y) \\) ;)", "\r\n\t"])
    text = draw(_WORD)
    for method, result, props in results:
        text += f"{draw(comment)};{draw(comment)}{method}{draw(comment)}={result}"
        for name, value in props.items():
            text += f" {draw(comment)}{name}={_quote(value)}{draw(comment)}"
    return text, results


@settings(max_examples=300, deadline=None)
@given(headers())
def test_property_rendered_results_parse_back(case) -> None:
    text, results = case
    authserv, parsed = parse_results(text)
    assert parsed == [(m, r, p) for m, r, p in results]
    assert authserv == text.split(" ")[0].split(";")[0].split("(")[0].split("\r")[0].lower()


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='ab;=()"\\ .@x-\r\n', max_size=80))
def test_property_any_text_parses_without_raising(text) -> None:
    authserv, results = parse_results(text)
    assert authserv == authserv.lower()
    for method, result, props in results:
        assert method and result and all("." in name for name in props)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["from", "by", "with", "id", "for", "via", "BY", " ", "\t",
                                 "\r\n ", "(", ")", "(c)", "(a (b) c)", '"', '"q r"', "\\",
                                 ";", "=", "/", "[192.0.2.1]", "mx.example", "x"]), max_size=16)
       .map("".join))
def test_property_received_words_are_the_tokenizer_s(value: str) -> None:
    """The fast path of `received_words` finds exactly the tokenizer's words."""
    assert received_words(value) == [t.text for t in tokenize(value)
                                     if t.kind in ("word", "qs")]


def test_check_warns_for_rules_that_resolve_without_authentication(tmp_path, psa_sim) -> None:
    from tests.helpers import cli

    config = write_config(tmp_path, psa_sim, smtp_port=2525)  # offline: never contacted
    done = cli("check", "--config", str(config))
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    warned = [line for line in out.splitlines() if "without require_authentication" in line]
    assert any("20-zabbix.toml:zabbix" in line for line in warned), out
    assert not any("nagios" in line for line in warned)
    # Without [auth] there is nothing to warn about.
    config.write_text(config.read_text().replace('authserv_ids = ["mx.msp.example"]', ""))
    assert b"without require_authentication" not in cli("check", "--config", str(config)).stdout


@pytest.mark.parametrize("header,sender", [
    (b"zabbix@zabbix.msp.example <evil@attacker.example>", "evil@attacker.example"),
    (b'"zabbix@zabbix.msp.example" <evil@attacker.example>', "evil@attacker.example"),
    (b"Zabbix (zabbix@zabbix.msp.example) <evil@attacker.example>", "evil@attacker.example"),
    (b"<@relay.example:evil@attacker.example>", "evil@attacker.example"),
    (b"=?utf-8?q?Doe,_John?= <j@acme.example>", "j@acme.example"),
    (b"Zabbix <zabbix@zabbix.msp.example>", "zabbix@zabbix.msp.example"),
    (b"zabbix@zabbix.msp.example", "zabbix@zabbix.msp.example"),
])
def test_the_sender_is_the_addr_spec_never_the_display_name(header: bytes, sender: str) -> None:
    assert parse(b"From: " + header + b"\r\nSubject: x\r\n\r\nx\r\n").sender == sender


def test_xml_resolve_without_a_password_is_refused_when_our_mx_failed(tmp_path) -> None:
    from dataclasses import replace

    from bridge.classify import classify
    from bridge.models import Kind
    from tests.test_rules_support import CTX, make_rules

    rules = make_rules(tmp_path, "")
    tx = (b'<mailbridge-transaction version="1"><application>a</application>'
          b"<resolve><alert-id>x</alert-id></resolve></mailbridge-transaction>")
    raw = (FAIL_NAGIOS + MX + b"From: rmm@acme.example\r\nSubject: tx\r\n"
           b"Content-Type: application/xml\r\n\r\n" + tx)
    msg = parse(raw)
    c = classify(msg, rules, CTX)
    assert c.kind is Kind.REJECTED and "did not authenticate" in c.reason
    assert classify(msg, rules, replace(CTX, xml_password_set=True)).kind is Kind.XML
    passing = parse(raw.replace(b"spf=fail smtp.mailfrom=nagios@monitor.msp.example",
                                b"spf=pass smtp.mailfrom=rmm@acme.example"))
    assert classify(passing, rules, CTX).kind is Kind.XML
