"""What a call record's leg says about phones that did not answer, and how legs are numbered
(the legs themselves, on live calls, are tested in tests/integration/test_call_legs_e2e.py)."""

from __future__ import annotations

from itertools import count

import pytest

from pbx.callstate import leg_result, new_leg
from pbx.records import CallLeg


@pytest.mark.parametrize(("codes", "expected"), [
    ([486], ("busy", 486)),
    ([600], ("busy", 600)),
    ([603], ("rejected", 603)),
    ([480], ("no_answer", 480)),
    ([408], ("no_answer", 408)),
    ([487], ("no_answer", 487)),
    ([404], ("failed", 404)),
    ([500], ("failed", 500)),
    # Several phones of one user: the best answer says it (RFC 3261 16.7 step 6).
    ([408, 486], ("busy", 486)),
    ([480, 603], ("rejected", 603)),
    ([503, 480], ("no_answer", 480)),
])
def test_a_leg_nobody_answered_ends_as_its_phones_best_answer_says(
        codes: list[int], expected: tuple[str, int]) -> None:
    assert leg_result(codes) == expected


def test_legs_of_one_record_are_numbered_by_the_records_own_counter() -> None:
    numbers = count(1)
    first = new_leg("call-1", numbers, "queue", user="bob", queue="desk")
    second = new_leg("call-1", numbers, "callback", number="+819012345678", queue="desk")
    assert (first.id, second.id) == ("call-1:1", "call-1:2")
    event = second.event("call-1", "busy", 486, second.started_at)
    assert event == CallLeg("call-1", "call-1:2", "callback", None, "+819012345678",
                            second.started_at, None, second.started_at, "busy", 486, "desk")
