"""Body choice: the HTML alternative's text beside the plain body, the stub heuristic, and
MessageView.body_for (v1 reads "text"; v2 rules may say "html" or "auto")."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from bridge.classify.view import MessageView
from bridge.parse.mime import MimeLimits, parse
from bridge.parse.mime.stub import could_be_stub, text_is_stub

RICH = ("<html><body><h1>Backup job 'Nightly' failed</h1><table>"
        "<tr><td>Server</td><td>fs01.acme.example</td></tr>"
        "<tr><td>Error</td><td>Cannot connect to the repository: timeout after 300 s</td></tr>"
        "<tr><td>Customer</td><td>Acme Corp</td></tr>"
        "<tr><td>Last success</td><td>2026-12-04 23:00, 412 GB in 2 h 13 min</td></tr>"
        "<tr><td>Next run</td><td>2026-12-06 23:00 (retry in 30 minutes)</td></tr>"
        "</table></body></html>")


def alternative(text: str, html: str = RICH, inner: str = "multipart/alternative") -> bytes:
    return (f"From: backup@acme.example\r\nSubject: job failed\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: {inner}; boundary="b"\r\n\r\n'
            f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
            f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--b--\r\n"
            ).encode()


@pytest.mark.parametrize("text", [
    "",
    "See the HTML part.",
    "This is an HTML message. Please use an HTML mail reader to read it.",
    "Your mail program does not support HTML. View this email in your browser:\n"
    "https://example.com/v/123",
    "Diese Nachricht ist HTML-formatiert. Bitte im Browser anzeigen.",
    "This email was sent in HTML format. Please enable an HTML-capable email client.",
])
def test_a_stub_text_part_makes_auto_read_the_html(text: str) -> None:
    msg = parse(alternative(text))
    assert msg.text_is_stub and not msg.body_is_html
    assert msg.body == text.replace("\r\n", "\n").strip("\n")  # v1's body is unchanged
    assert "fs01.acme.example" in msg.html_body and "<td>" not in msg.html_body
    view = MessageView(msg)
    assert view.body_for("text") == view.body
    assert "Cannot connect to the repository" in view.body_for("auto")
    assert view.body_for("html") == view.body_for("auto")


def test_a_real_text_part_stays_the_body_under_auto() -> None:
    full = ("Backup job 'Nightly' failed\nServer: fs01.acme.example\n"
            "Error: Cannot connect to the repository: timeout after 300 s\nCustomer: Acme Corp")
    msg = parse(alternative(full))
    assert msg.html_body and not msg.text_is_stub
    view = MessageView(msg)
    assert view.body_for("auto") == view.body == full
    assert "fs01.acme.example" in view.body_for("html") and view.body_for("html") != full
    # A short but complete text beside an HTML that says the same: not a stub either.
    short = parse(alternative("Job Nightly failed on fs01", "<p>Job Nightly failed on fs01</p>"))
    assert short.html_body and not short.text_is_stub


def test_html_only_and_text_only_mail() -> None:
    html_only = parse(b"From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + RICH.encode())
    assert html_only.body_is_html and html_only.html_body == "" and not html_only.text_is_stub
    view = MessageView(html_only)
    assert "fs01" in view.body and {view.body_for(c) for c in ("text", "html", "auto")} == \
        {view.body}
    text_only = MessageView(parse(b"From: a@b.example\r\n\r\nDisk full on fs01\r\n"))
    assert text_only.body_for("html") == text_only.body_for("auto") == "Disk full on fs01"


def test_mixed_parts_take_the_first_html_part_and_keep_v1_defects() -> None:
    deep = RICH.replace("</body>", "<p>" + "<b>" * 300 + "deep</p></body>")
    msg = parse(alternative("", deep, inner="multipart/mixed"))
    assert msg.body == "" and msg.html_body  # text/plain and text/html both inline
    # The alternative's conversion problems are not the v1 body's: no new defect.
    assert not any("nested deeper" in d for d in msg.defects)
    alone = parse(b"From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + deep.encode())
    assert any("nested deeper" in d for d in alone.defects)


def test_the_html_alternative_is_cut_as_the_body_is() -> None:
    limits = MimeLimits(max_body_chars=1000, max_html_chars=50_000)
    big = "<p>" + "word " * 5000 + "</p>"
    msg = parse(alternative("", big), limits=limits)
    assert len(msg.html_body) == 1000 and msg.text_is_stub
    assert not any("cut" in d for d in msg.defects)


@pytest.mark.parametrize("text,html,stub", [
    ("", "x" * 99, False),              # the HTML must carry at least 100 more characters
    ("", "x" * 100, True),
    ("a" * 39, "x" * 150, True),       # under 40 characters: a stub whatever it says
    ("a" * 40, "x" * 150, False),
    ("use an HTML mail reader " * 4, "x" * 300, True),
    ("use an HTML mail reader " * 4, "x" * 150, False),  # HTML not twice as long
    ("View this email in your browser\n" + "news " * 400, "x" * 5000, True),
    ("View this email in your browser\n" + "news " * 400, "x" * 3000, False),
    ("plain alert text " * 10, "x" * 5000, False),
])
def test_stub_heuristic(text: str, html: str, stub: bool) -> None:
    assert text_is_stub(text, html) is stub


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from("ab \nHTML mail reader view this email in your browser"),
               max_size=300), st.integers(0, 3000))
def test_only_a_text_that_could_be_a_stub_is_one(text: str, rich: int) -> None:
    """The parser skips the HTML alternative when `could_be_stub` says no (a rule set without
    `body = "html"`): no HTML text may then have made the text part a stub."""
    if text_is_stub(text, "x" * rich):
        assert could_be_stub(text)


@pytest.mark.parametrize("text", ["See the HTML part.", "Backup job 'Nightly' failed\n"
                                  "Server: fs01.acme.example\nError: timeout after 300 s"])
def test_without_html_rules_auto_reads_the_same_body(text: str) -> None:
    """`html_alternative=False` (what the pipeline passes for a rule set without `body =
    "html"`) converts the HTML only for a possible stub; "text" and "auto" read the same."""
    lazy, eager = parse(alternative(text), html_alternative=False), parse(alternative(text))
    assert lazy.text_is_stub == eager.text_is_stub and lazy.body == eager.body
    assert bool(lazy.html_body) == could_be_stub(text)
    for choice in ("text", "auto"):
        assert MessageView(lazy).body_for(choice) == MessageView(eager).body_for(choice)


def test_a_rule_set_reads_the_html_alternative_only_with_a_body_html_rule() -> None:
    from bridge.classify import load_ruleset
    from tests.test_rules_support import CATALOGUE
    from tests.test_samples import ACCOUNTS, ROOT, RULES

    # The examples' proxmox tool says body = "html"; its rules inherit it.
    assert load_ruleset(ROOT / "docs" / "examples" / "rules", None, CATALOGUE).reads_html
    assert not load_ruleset(RULES, ACCOUNTS, CATALOGUE).reads_html
