"""The jitter buffer: ordering, loss, duplicates, late packets, sequence wrap and resync."""

from __future__ import annotations

from itertools import islice, pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.jitter import JitterBuffer, JitterFrame


def add(jb: JitterBuffer, *seqs: int) -> list[bool]:
    return [jb.add(s, (s * 160) & 0xFFFFFFFF, bytes([s & 0xFF])) for s in seqs]


def drain(jb: JitterBuffer, ticks: int = 40) -> list[int | None]:
    """Pop *ticks* times; a present frame gives its seq, a missing one its negated seq - 1."""
    out: list[int | None] = []
    for _ in range(ticks):
        frame = jb.pop()
        if frame is None:
            out.append(None)
        elif frame.missing:
            out.append(-frame.sequence_number - 1)
        else:
            assert frame.payload == bytes([frame.sequence_number & 0xFF])
            out.append(frame.sequence_number)
    while out and out[-1] is None:
        out.pop()
    return out


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="capacity"):
        JitterBuffer(capacity=0)
    with pytest.raises(ValueError, match="prefetch"):
        JitterBuffer(capacity=4, prefetch=5)


def test_empty_buffer_pops_nothing() -> None:
    jb = JitterBuffer()
    assert jb.pop() is None
    assert len(jb) == 0


def test_prefetch_then_in_order() -> None:
    jb = JitterBuffer(capacity=4, prefetch=2)
    add(jb, 0)
    assert jb.pop() is None  # waiting for the second packet
    add(jb, 1)
    assert jb.pop() == JitterFrame(0, 0, b"\x00")
    assert jb.pop() == JitterFrame(1, 160, b"\x01")
    assert jb.pop() is None


def test_reorder_within_window() -> None:
    jb = JitterBuffer(capacity=8, prefetch=3)
    assert add(jb, 2, 0, 1, 4, 3) == [True] * 5
    assert drain(jb) == [0, 1, 2, 3, 4]


def test_duplicates_dropped() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    assert add(jb, 0, 1, 1, 0) == [True, True, False, False]
    assert jb.duplicates == 2
    assert jb.late == 0
    assert drain(jb) == [0, 1]
    assert add(jb, 1) == [False]  # already played: late
    assert jb.late == 1


def test_loss_reported_as_missing_frame_with_interpolated_timestamp() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 10, 11, 13, 14)
    assert jb.pop() == JitterFrame(10, 1600, b"\x0a")
    assert jb.pop() == JitterFrame(11, 1760, b"\x0b")
    assert jb.pop() == JitterFrame(12, 1920, b"", missing=True)
    assert drain(jb) == [13, 14]
    assert jb.missing == 1


def test_late_packet_after_its_slot_is_dropped() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 0, 1, 3)
    assert drain(jb, 3) == [0, 1, -3]
    assert add(jb, 2) == [False]
    assert jb.late == 1
    assert drain(jb) == [3]


def test_late_but_in_time_packet_is_played() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 0, 1)
    assert drain(jb, 1) == [0]
    add(jb, 3)
    add(jb, 2)  # arrived after 3, but before its playout time
    assert drain(jb) == [1, 2, 3]
    assert jb.missing == 0


def test_earlier_packet_before_playout_moves_start_back() -> None:
    jb = JitterBuffer(capacity=4, prefetch=3)
    add(jb, 5, 6)
    add(jb, 4)
    assert drain(jb) == [4, 5, 6]


def test_wrap_at_65535() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 65533, 65535, 65534, 1, 0, 3)
    assert drain(jb) == [65533, 65534, 65535, 0, 1, -3, 3]


def test_underrun_ticks_are_not_reported_twice() -> None:
    jb = JitterBuffer(capacity=16, prefetch=1)
    add(jb, 0)
    assert drain(jb, 1) == [0]
    # Three ticks with nothing: the caller conceals them.
    assert [jb.pop(), jb.pop(), jb.pop()] == [None, None, None]
    # Packets 1..3 were lost in that outage; 4 arrives. Only 0 frames are owed as missing.
    add(jb, 4, 5)
    assert drain(jb) == [4, 5]
    assert jb.missing == 0


def test_longer_gap_than_underrun_reports_the_rest_missing() -> None:
    jb = JitterBuffer(capacity=16, prefetch=1)
    add(jb, 0)
    assert drain(jb, 1) == [0]
    assert jb.pop() is None
    add(jb, 4)
    # One tick was concealed by the caller (seq 1); 2 and 3 are reported missing.
    assert drain(jb) == [-3, -4, 4]


def test_packet_beyond_window_pushes_oldest_out() -> None:
    jb = JitterBuffer(capacity=4, prefetch=4)
    add(jb, 0, 1, 2)
    add(jb, 5)  # the window becomes 2..5
    assert jb.overflowed == 2
    assert drain(jb) == [2, -4, -5, 5]


def test_resync_on_confirmed_large_jump() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 100, 101)
    assert drain(jb, 1) == [100]
    # A stray packet far away is held back until the next one confirms a new stream.
    assert add(jb, 30000) == [False]
    assert add(jb, 102) == [True]
    assert add(jb, 40000, 40001) == [False, True]
    assert jb.resyncs == 1
    assert drain(jb) == [40000, 40001]


def test_resync_backwards() -> None:
    jb = JitterBuffer(capacity=8, prefetch=1)
    add(jb, 5000, 5001)
    assert drain(jb) == [5000, 5001]
    assert add(jb, 7, 8) == [False, True]
    assert drain(jb) == [7, 8]


def test_prefetch_counts_sequence_numbers_not_packets() -> None:
    jb = JitterBuffer(capacity=8, prefetch=3)
    add(jb, 0, 2)  # 1 is lost: the span 0..2 is enough to start
    assert drain(jb) == [0, -2, 2]


@given(st.permutations(range(65530, 65530 + 12)), st.integers(0, 12))
def test_any_order_within_window_plays_in_order(order: list[int], prefetch: int) -> None:
    jb = JitterBuffer(capacity=16, prefetch=prefetch)
    assert all(add(jb, *(s & 0xFFFF for s in order)))
    assert drain(jb) == [s & 0xFFFF for s in range(65530, 65542)]
    assert (jb.missing, jb.late, jb.duplicates, jb.overflowed) == (0, 0, 0, 0)


@given(st.lists(st.integers(0, 0xFFFF), max_size=60), st.integers(1, 20), st.integers(0, 20))
def test_arbitrary_input_never_breaks_invariants(seqs: list[int], capacity: int, pf: int) -> None:
    jb = JitterBuffer(capacity=capacity, prefetch=min(pf, capacity))
    for seq in seqs:
        jb.add(seq, seq * 160, b"")
        assert len(jb) <= capacity
        jb.pop()
    frames = list(islice(iter(jb.pop, None), 200))
    for a, b in pairwise(frames):
        assert (b.sequence_number - a.sequence_number) & 0xFFFF == 1


def test_reset_starts_over_on_a_new_stream_at_once() -> None:
    jb = JitterBuffer(capacity=8, prefetch=2)
    add(jb, 100, 101, 102)
    assert drain(jb, 2) == [100, 101]
    jb.reset()
    assert len(jb) == 0 and jb.pop() is None
    # A new SSRC's first packet is taken at once, however far its sequence number is.
    assert add(jb, 40000, 40001, 40002) == [True, True, True]
    assert drain(jb) == [40000, 40001, 40002]
    assert jb.resyncs == 0 and jb.late == 0
