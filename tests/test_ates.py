"""bridge.parse.ates: ATES tokens as monitoring tools (and the vendor's docs) really write them."""

from __future__ import annotations

import html

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.models import AtesToken, TokenRef
from bridge.parse.ates import MAX_TOKEN_CHARS, find_tokens

# The sample of seed 001, verbatim (straight quotes).
SEED_SAMPLE = """The following is sample message data that includes a site id and device id:
<Autotask>
<ID name="acmemsp.com"/>
<PW name="zzZ3zZ/2Z1ZzzZZZ0zoZ9z=="/>
<CustomerID source="XYZ Monitoring Application" name="100"/>
<DeviceID source="XYZ Monitoring Application" name="123"/>
<AlertID source="XYZ Monitoring Application" name="8932"/>
</Autotask>"""

SEED_TOKEN = AtesToken(
    id="acmemsp.com",
    pw="zzZ3zZ/2Z1ZzzZZZ0zoZ9z==",
    customer_id=TokenRef("100", "XYZ Monitoring Application"),
    device_id=TokenRef("123", "XYZ Monitoring Application"),
    alert_id=TokenRef("8932", "XYZ Monitoring Application"),
)


def test_seed_sample() -> None:
    assert find_tokens(SEED_SAMPLE) == (SEED_TOKEN,)


def test_curly_quotes_as_in_the_seed_table() -> None:
    # The seed's table writes source=”[Partner Application Name]” with U+201D on both sides.
    text = ("<Autotask><CustomerID source=”Kaseya” name=”100”/>"
            "<AlertID source=“Kaseya” name=“A-1”/><TicketID source=‘Kaseya’ name=’T 9’/></Autotask>")
    (token,) = find_tokens(text)
    assert token.customer_id == TokenRef("100", "Kaseya")
    assert token.alert_id == TokenRef("A-1", "Kaseya")
    assert token.ticket_id == TokenRef("T 9", "Kaseya")
    assert token.problems == ()


def test_single_quotes_and_apostrophes_inside_double_quotes() -> None:
    (token,) = find_tokens("<Autotask><DeviceID source='N-able' name=\"O'Brien's PC\"/></Autotask>")
    assert token.device_id == TokenRef("O'Brien's PC", "N-able")


def test_case_insensitive_names_and_loose_spacing() -> None:
    text = "< autotask >\n< alertid  NAME = \"x1\"  Source='Nagios' / >\n</ AUTOTASK >"
    (token,) = find_tokens(text)
    assert token.alert_id == TokenRef("x1", "Nagios")


def test_html_escaped_token_in_html_body() -> None:
    escaped = html.escape(SEED_SAMPLE.split(":\n", 1)[1]).replace("\n", "<br>\n")
    body = f"<html><body><p>Alert on SRV01</p><p style='color:#fff'>{escaped}</p></body></html>"
    assert "&lt;Autotask&gt;" in body and "&quot;" in body
    assert find_tokens(body) == (SEED_TOKEN,)


def test_raw_token_inside_html_markup() -> None:
    body = ('<div><Autotask><br><span><AlertID source="PRTG" name="77"/></span>'
            '<CustomerID source="PRTG" name="C&amp;D"/></Autotask></div>')
    (token,) = find_tokens(body)
    assert token.alert_id == TokenRef("77", "PRTG")
    assert token.customer_id == TokenRef("C&D", "PRTG")


def test_escaped_ampersand_is_unescaped_exactly_once() -> None:
    # XML value "C&amp;D" means C&D; escaped into HTML it becomes C&amp;amp;D.
    body = html.escape('<Autotask><CustomerID source="x" name="C&amp;D"/></Autotask>')
    assert find_tokens(body)[0].customer_id == TokenRef("C&D", "x")


def test_missing_and_empty_attributes_are_problems() -> None:
    text = ('<Autotask><AlertID name="1"/><TicketID source="" name="5"/>'
            '<DeviceID source="s"/><ID/></Autotask>')
    (token,) = find_tokens(text)
    assert token.alert_id == TokenRef("1", None)
    assert token.ticket_id == TokenRef("5", None)
    assert token.device_id is None and token.id is None
    assert token.problems == (
        "AlertID has no source attribute",
        "TicketID has an empty source",
        "DeviceID has no name attribute",
        "ID has no name attribute",
    )


def test_duplicate_element_first_counts() -> None:
    (token,) = find_tokens('<Autotask><AlertID source="a" name="1"/><AlertID source="a" name="2"/></Autotask>')
    assert token.alert_id == TokenRef("1", "a")
    assert token.problems == ("AlertID appears more than once; the first counts",)


def test_several_tokens_in_order() -> None:
    text = "\n".join(f'intro {i}<Autotask><AlertID source="s" name="{i}"/></Autotask>' for i in range(3))
    assert [t.alert_id.name for t in find_tokens(text) if t.alert_id] == ["0", "1", "2"]


def test_stray_opening_tag_does_not_swallow_the_real_token() -> None:
    text = ("Please put the <Autotask> token in every alert. " + "x" * 50
            + '<Autotask><AlertID source="s" name="9"/></Autotask>')
    (token,) = find_tokens(text)
    assert token.alert_id == TokenRef("9", "s")


def test_no_token_and_empty_token() -> None:
    assert find_tokens("") == ()
    assert find_tokens("Autotask is a PSA.") == ()
    assert find_tokens("<Autotask></Autotask> and <Autotask><br></Autotask>") == ()
    assert find_tokens('<Autotask><AlertID source="s" name="1"/>') == ()  # never closed


def test_entities_are_never_expanded() -> None:
    text = ('<!DOCTYPE a [<!ENTITY x "EXPANDED">]><Autotask>'
            '<AlertID source="&x;" name="&#65;&#x42;&lt;&amp;"/></Autotask>')
    (token,) = find_tokens(text)
    assert token.alert_id == TokenRef("AB<&", "&x;")


def test_oversized_token_is_skipped() -> None:
    padding = "y" * (MAX_TOKEN_CHARS + 1)
    assert find_tokens(f'<Autotask><AlertID source="s" name="1"/>{padding}</Autotask>') == ()


def test_long_value_is_cut_with_a_problem() -> None:
    (token,) = find_tokens(f'<Autotask><AlertID source="s" name="{"v" * 600}"/></Autotask>')
    assert token.alert_id is not None and len(token.alert_id.name) == 512
    assert token.problems == ("AlertID name is longer than 512 characters; cut",)


def test_many_unclosed_tags_stay_linear() -> None:
    # 200k opening tags without a close: a quadratic pairing would not finish in any sane time.
    assert find_tokens("<Autotask>" * 200_000 + "</Autotask>") == ()


_VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"),
                                        blacklist_characters="\"'<>&“”„‟″‘’‚‛"),
                 min_size=1, max_size=40).map(lambda s: " ".join(s.split())).filter(bool)


@settings(max_examples=200, deadline=None)
@given(prefix=st.text(max_size=200), suffix=st.text(max_size=200), alert=_VALUE,
       source=_VALUE, escaped=st.booleans())
def test_generated_token_round_trips(prefix: str, suffix: str, alert: str, source: str,
                                     escaped: bool) -> None:
    token = f'<Autotask><AlertID source="{source}" name="{alert}"/></Autotask>'
    text = prefix.replace("<", "") + (html.escape(token) if escaped else token) + suffix.replace("<", "")
    found = find_tokens(text)
    assert found and found[0].alert_id == TokenRef(alert, source)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=3000))
def test_arbitrary_text_never_raises(text: str) -> None:
    result = find_tokens(text)
    assert isinstance(result, tuple) and all(isinstance(t, AtesToken) for t in result)


_PIECES = st.sampled_from(["<Autotask>", "</Autotask>", "&lt;Autotask&gt;", "&lt;/autotask&gt;",
                           '<AlertID source="s" name="1"/>', "<ID name='x'>", "<PW name=”p”/>",
                           "&quot;", "&amp;", "&#0;", "&#x110000;", "<br>", "name=", '"', "”",
                           "source", "<", ">", "/", " ", "\n", "é", "\x00"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECES, max_size=60))
def test_token_soup_never_raises(pieces: list[str]) -> None:
    for token in find_tokens("".join(pieces)):
        assert isinstance(token, AtesToken)
        for ref in (token.customer_id, token.device_id, token.alert_id, token.ticket_id):
            assert ref is None or ref.name
