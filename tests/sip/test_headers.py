"""Quoted strings (RFC 3261 25.1): what goes into a display name comes back out whole, and
nothing in it can end the header."""

from __future__ import annotations

import pytest

from sip.headers import quote, unquote


@pytest.mark.parametrize("text", ['Ichiro "Ichi" Tanaka', "back\\slash", "Müller", "", "田中"])
def test_quote_then_unquote_gives_the_text_back(text: str) -> None:
    assert unquote(quote(text)) == text


def test_line_breaks_and_controls_cannot_end_the_header() -> None:
    quoted = quote("Evil\r\nVia: SIP/2.0/UDP attacker\x00")
    assert "\r" not in quoted and "\n" not in quoted and "\x00" not in quoted
    assert unquote(quoted) == "Evil  Via: SIP/2.0/UDP attacker "
