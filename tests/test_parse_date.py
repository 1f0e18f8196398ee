"""The Date fast path (`builder._parse_date`) is `email.utils.parsedate_to_datetime`.

The parser computes the common RFC 5322 form itself (issue 21: less CPU per message); these
tests hold it to the library on that form and around it: the same value and type, the same
time zone (a naive time for "-0000"), the same exception where the library raises.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime

from hypothesis import given, settings, strategies as st

from bridge.parse.mime.builder import _DATE, _parse_date


def outcome(parse: object, text: str) -> tuple[str, object]:
    try:
        value = parse(text)  # type: ignore[operator]
    except Exception as exc:  # noqa: BLE001 - the exception's type is what is compared
        return "raises", type(exc).__name__
    assert isinstance(value, datetime)
    return "value", (value, value.tzinfo, value.utcoffset())


def assert_same(text: str) -> None:
    assert outcome(_parse_date, text) == outcome(parsedate_to_datetime, text), text


def test_common_forms_take_the_fast_path_and_agree() -> None:
    for text in ("Fri, 05 Dec 2025 05:50:22 GMT", "Fri, 05 Dec 2025 05:50:22 +0000",
                 "5 Dec 2025 05:50:22 -0000", "Mon, 31 Mar 2025 23:59:59 -0130 (EST)",
                 "Tue, 1 Jan 2030 00:00:00 UT", "Wed, 02 Jul 2025 12:00:00 UTC"):
        assert _DATE.fullmatch(text), text
        assert_same(text)
    naive = _parse_date("5 Dec 2025 05:50:22 -0000")
    assert naive.tzinfo is None


def test_out_of_range_values_raise_as_the_library_does() -> None:
    for text in ("Fri, 31 Feb 2025 05:50:22 +0000", "Fri, 05 Dec 2025 24:00:00 +0000",
                 "Fri, 05 Dec 2025 05:60:22 +0000", "Fri, 05 Dec 2025 05:50:60 +0000",
                 "Fri, 05 Dec 2025 05:50:22 +2400", "Fri, 05 Dec 2025 05:50:22 +0099",
                 "Fri, 05 Dec 2025 05:50:22 -9999", "Fri, 00 Dec 2025 05:50:22 +0000"):
        assert_same(text)


def test_other_forms_go_to_the_library() -> None:
    for text in ("Fri, 05 Dec 25 05:50:22 +0000", "05 Dec 0099 05:50:22 +0000",
                 "Friday, 05 Dec 2025 05:50:22 +0000", "Fri,05 Dec 2025 05:50:22 +0000",
                 "Fri, 05 dec 2025 05:50:22 +0000", "Fri, 05 Dec 2025 05:50 +0000",
                 "Fri, 05 Dec 2025 05:50:22 EST", "Fri, 05 Dec 2025 05:50:22 +0000(UTC)",
                 "Fri, 05 Dec 2025 ٠٥:50:22 +0000", "", "garbage"):
        assert_same(text)


_PIECES = st.sampled_from([
    "Fri, ", "Mon,", "Sun ", "05", "5", "31", "00", "99", " ", "  ", "Dec", "Feb", "dec", "2025",
    "0099", "1969", "25", "05:50:22", "23:59:60", "24:00:00", "5:5:5", "05:50", "+0000",
    "-0000", "+0130", "-0099", "+2400", "GMT", "UT", "UTC", "EST", "Z", "(UTC)", " (x)", "(",
    ")", ",", ":", "-", "+"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_PIECES, max_size=12).map("".join))
def test_any_text_gets_the_library_s_answer(text: str) -> None:
    assert_same(text)


@settings(max_examples=2000, deadline=None)
@given(st.integers(1, 9999), st.integers(0, 40),
       st.integers(0, 30), st.integers(0, 70), st.integers(0, 70), st.sampled_from("+-"),
       st.integers(0, 9999), st.booleans())
def test_the_fast_form_agrees_over_its_whole_range(year: int, day: int, hour: int,
                                                   minute: int, second: int, sign: str,
                                                   offset: int, weekday: bool) -> None:
    for month in ("Jan", "Feb", "Jun", "Dec"):
        text = (("Sat, " if weekday else "") + f"{day:02d} {month} {year:04d} "
                f"{hour:02d}:{minute:02d}:{second:02d} {sign}{offset:04d}")
        assert_same(text)
