"""DigitCollector: which sources each DTMF mode listens to, and one key press reported twice."""

from __future__ import annotations

import pytest

from media.digits import DigitCollector, DigitEvent, DigitSource, DtmfMode
from media.dtmf import DtmfDigit

RFC: DigitSource = "rfc4733"
INFO: DigitSource = "info"
INBAND: DigitSource = "inband"


def _d(digit: str, source: str, ms: int = 100) -> DtmfDigit:
    return DtmfDigit(digit, ms, source)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mode", "te", "listened"),
    [
        ("auto", True, {RFC, INFO}),
        ("auto", False, {INBAND, INFO}),
        ("rfc4733", True, {RFC}),
        ("rfc4733", False, {RFC}),
        ("info", True, {INFO}),
        ("inband", True, {INBAND}),
        ("inband", False, {INBAND}),
    ],
)
def test_each_mode_listens_to_its_sources(mode: str, te: bool, listened: set[str]) -> None:
    collector = DigitCollector(mode, te)
    assert collector.mode == DtmfMode(mode)
    got = {s for s in (RFC, INFO, INBAND) if collector.listens(s)}
    assert got == listened
    for i, source in enumerate((RFC, INFO, INBAND)):
        # Different digits, far apart: only the listened sources produce events.
        collector.offer(_d("123"[i], source), 10.0 * i)
    assert {e.source for e in collector.drain()} == listened
    assert collector.ignored == 3 - len(listened)


def test_unknown_mode_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown DTMF mode 'tones'.*auto, rfc4733, info, inband"):
        DigitCollector("tones")
    with pytest.raises(ValueError, match="window"):
        DigitCollector("auto", window=-1)


def test_auto_follows_a_renegotiated_telephone_event() -> None:
    collector = DigitCollector(DtmfMode.AUTO, telephone_event=False)
    assert collector.offer(_d("5", RFC), 1.0) is None
    assert collector.offer(_d("5", INBAND), 2.0) is not None
    collector.set_telephone_event(True)
    assert collector.telephone_event
    assert collector.offer(_d("6", INBAND), 3.0) is None
    assert collector.offer(_d("6", RFC), 4.0) is not None
    assert [e.digit for e in collector.drain()] == ["5", "6"]


def test_event_carries_source_time_and_duration() -> None:
    collector = DigitCollector("auto", True)
    event = collector.offer(_d("#", RFC, 280), 12.5)
    assert event == DigitEvent("#", RFC, 12.5, 280)
    assert len(collector) == 1
    assert collector.drain() == [event]
    assert collector.drain() == [] and len(collector) == 0


@pytest.mark.parametrize(("first", "second"), [(INFO, RFC), (RFC, INFO)])
def test_rfc4733_plus_info_is_one_key_press(first: str, second: str) -> None:
    collector = DigitCollector("auto", True)
    assert collector.offer(_d("7", first), 1.00) is not None
    assert collector.offer(_d("7", second), 1.15) is None
    assert [(e.digit, e.source) for e in collector.drain()] == [("7", first)]
    assert collector.duplicates == 1


def test_long_press_reported_at_key_down_and_key_up_is_one() -> None:
    # INFO when the key goes down, the RFC 4733 end packet 1.5 s later when it comes up.
    collector = DigitCollector("auto", True)
    collector.offer(_d("0", INFO, 250), 5.0)
    assert collector.offer(_d("0", RFC, 1500), 6.5) is None
    assert len(collector.drain()) == 1


def test_fast_repeated_key_sent_two_ways_gives_each_press_once() -> None:
    # An auto-dialler sends "11" 200 ms apart, each press as RFC 4733 and INFO.
    collector = DigitCollector("auto", True)
    for t, source in [(0.10, INFO), (0.18, RFC), (0.30, INFO), (0.38, RFC)]:
        collector.offer(_d("1", source), t)
    events = collector.drain()
    assert [(e.digit, e.source, e.at) for e in events] == [("1", INFO, 0.10), ("1", INFO, 0.30)]
    assert collector.duplicates == 2


def test_same_source_is_never_merged() -> None:
    collector = DigitCollector("auto", True)
    for t in (0.0, 0.05, 0.1):
        assert collector.offer(_d("9", RFC), t) is not None
    assert len(collector.drain()) == 3


def test_other_digits_and_late_reports_are_new_presses() -> None:
    collector = DigitCollector("auto", True)
    collector.offer(_d("1", RFC), 1.0)
    assert collector.offer(_d("2", INFO), 1.1) is not None  # another key
    assert collector.offer(_d("1", INFO), 3.0) is not None  # long after: a new press
    assert [e.digit for e in collector.drain()] == ["1", "2", "1"]


def test_offer_info_parses_the_body() -> None:
    collector = DigitCollector("info")
    event = collector.offer_info("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", 2.0)
    assert event == DigitEvent("5", INFO, 2.0, 160)
    assert collector.offer_info("application/dtmf", b"#", 3.0) == DigitEvent("#", INFO, 3.0, 250)
    assert collector.offer_info("text/plain", b"5", 4.0) is None
    assert collector.offer_info("application/dtmf-relay", b"\xff\xfe", 5.0) is None
    assert collector.offer_info("application/dtmf-relay", b"Signal=Z", 6.0) is None
    assert len(collector.drain()) == 2


def test_history_is_bounded() -> None:
    collector = DigitCollector("auto", True)
    for i in range(1000):
        collector.offer(_d("0123456789"[i % 10], RFC), i * 0.1)
    assert len(collector.drain()) == 1000
    assert len(collector._recent) <= 32
