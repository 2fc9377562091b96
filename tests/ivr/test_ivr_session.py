"""IvrSession on a virtual clock: what a caller hears and where the call goes."""

from __future__ import annotations

import math

import pytest

from ivr import (
    Hangup,
    IvrConfigError,
    IvrSession,
    IvrStateError,
    Menu,
    Option,
    Play,
    Route,
    RouteTo,
    SessionState,
    StartTimer,
    StopPlaying,
)
from ivr.session import MAX_DIAL_DIGITS
from tests.ivr.menus import (
    GOODBYE,
    INVALID,
    TOP_PROMPTS,
    UNAVAILABLE,
    WELCOME,
    known,
    menu,
    text,
    tree,
    with_submenu,
)

SUPPORT_PROMPTS = (text("For Hardware, press 1."), text("For Software, press 2."))
HARDWARE_PROMPTS = (text("For Disks, press 1."), text("For Software, press 2."))


def waiting(session: IvrSession, now: float) -> None:
    """Let the current prompts finish at ``now``: the session then waits for a key."""
    assert session.state is SessionState.PLAYING
    assert session.prompt_done(now) == [StartTimer(now + session.menu.timeout)]


def started(root: Menu | None = None) -> IvrSession:
    session = IvrSession(root if root is not None else tree(), known)
    session.start(0.0)
    return session


# -- prompts --------------------------------------------------------------------------------


def test_start_plays_welcome_then_options_in_keypad_order_then_waits_timeout() -> None:
    session = IvrSession(tree(), known)
    assert session.start(100.0) == [Play((WELCOME, *TOP_PROMPTS), barge_in=True)]
    assert session.get_timer() is None  # the timeout runs from the end of the prompts
    assert session.prompt_done(112.5) == [StartTimer(117.5)]
    assert session.get_timer() == 117.5
    assert session.path == ""


def test_keypad_order_puts_zero_after_nine_then_star_and_pound() -> None:
    options = {k: Option(f"o{k}", route=Route("user", k)) for k in "#0*91"}
    session = IvrSession(Menu("main", options=options), known)
    [play] = session.start(0.0)
    assert isinstance(play, Play)
    assert [p.value for p in play.prompts] == [
        "For o1, press 1.", "For o9, press 9.", "For o0, press 0.",
        "For o*, press *.", "For o#, press #.",
    ]


def test_option_prompt_template_is_per_menu() -> None:
    root = tree(option_prompt="Press {key} to reach {label}.")
    [play] = IvrSession(root, known).start(0.0)
    assert isinstance(play, Play)
    assert play.prompts[1:] == (
        text("Press 1 to reach Sales."), text("Press 2 to reach Support."),
        text("Press 3 for billing."),  # the option's own prompt wins over the template
        text("Press 0 to reach the operator."),
    )


def test_welcome_plays_only_on_first_entry_to_a_menu() -> None:
    session = started()
    assert session.key("3", 1.0) == [StopPlaying(), Play((text("Billing."), text(
        "For Invoices, press 1.")), barge_in=True)]
    assert session.key("*", 2.0) == [StopPlaying(), Play(TOP_PROMPTS, barge_in=True)]
    # Back into billing: its welcome is not repeated.
    assert session.key("3", 3.0) == [StopPlaying(), Play((text("For Invoices, press 1."),),
                                                          barge_in=True)]


# -- barge-in and type-ahead ----------------------------------------------------------------


def test_type_ahead_during_the_welcome_walks_two_levels() -> None:
    session = started()
    # The caller knows the tree: 3 then 1 while the welcome is still playing.
    assert session.key("3", 0.4) == [
        StopPlaying(), Play((text("Billing."), text("For Invoices, press 1.")), barge_in=True)]
    assert session.path == "3"
    assert session.key("1", 0.6) == [StopPlaying(), RouteTo(Route("user", "alice"), "31")]
    assert session.state is SessionState.ROUTED
    assert session.path == "31"


def test_barge_in_stops_the_prompt_and_the_key_counts() -> None:
    session = started()
    assert session.key("1", 2.0) == [StopPlaying(), RouteTo(Route("ring_group", "sales"), "1")]


def test_without_barge_in_keys_during_prompts_are_ignored() -> None:
    session = started(tree(barge_in=False))
    assert session.key("1", 1.0) == []
    assert session.state is SessionState.PLAYING
    assert session.prompt_done(5.0) == [StartTimer(10.0)]
    assert session.key("1", 6.0) == [RouteTo(Route("ring_group", "sales"), "1")]


def test_submenu_without_barge_in_plays_with_barge_in_false() -> None:
    root = with_submenu(tree(), "3", barge_in=False)
    session = started(root)
    [stop, play] = session.key("3", 1.0)
    assert stop == StopPlaying()
    assert isinstance(play, Play) and play.barge_in is False


# -- invalid keys, timeouts, retries --------------------------------------------------------


def test_invalid_key_plays_invalid_then_the_menu_again_without_welcome() -> None:
    session = started()
    waiting(session, 10.0)
    assert session.key("7", 11.0) == [Play((INVALID, *TOP_PROMPTS), barge_in=True)]
    assert session.failures == 1
    assert session.get_timer() is None
    waiting(session, 20.0)
    assert session.key("2", 21.0) == [Play(SUPPORT_PROMPTS, barge_in=True)]
    assert session.path == "2"
    assert session.failures == 0


def test_invalid_key_while_playing_stops_the_prompt_and_counts() -> None:
    session = started()
    assert session.key("9", 1.0) == [StopPlaying(), Play((INVALID, *TOP_PROMPTS), True)]
    assert session.failures == 1


@pytest.mark.parametrize("key", ["A", "B", "C", "D", "d"])
def test_keys_a_to_d_are_invalid_entries(key: str) -> None:
    session = started()
    waiting(session, 1.0)
    assert session.key(key, 2.0) == [Play((INVALID, *TOP_PROMPTS), True)]


def test_timeouts_replay_max_retries_times_then_go_to_on_failure() -> None:
    session = started(tree(on_failure=Route("user", "operator")))
    waiting(session, 10.0)
    assert session.timer(15.0) == [Play(TOP_PROMPTS, barge_in=True)]  # retry 1, no welcome
    waiting(session, 20.0)
    assert session.timer(25.0) == [Play(TOP_PROMPTS, barge_in=True)]  # retry 2
    waiting(session, 30.0)
    assert session.timer(35.0) == [RouteTo(Route("user", "operator"), "")]
    assert session.state is SessionState.ROUTED


def test_timeouts_without_on_failure_hang_up_with_goodbye() -> None:
    session = started()
    for t in (10.0, 20.0):
        waiting(session, t)
        assert session.timer(t + 5.0) == [Play(TOP_PROMPTS, True)]
    waiting(session, 30.0)
    assert session.timer(35.0) == [Hangup(GOODBYE)]
    assert session.state is SessionState.ENDED
    assert session.get_timer() is None


def test_invalid_entries_and_timeouts_share_the_retry_count() -> None:
    session = started()
    waiting(session, 10.0)
    session.key("8", 11.0)
    waiting(session, 20.0)
    session.timer(25.0)
    waiting(session, 30.0)
    assert session.key("8", 31.0) == [Hangup(GOODBYE)]


def test_max_retries_zero_fails_on_the_first_timeout() -> None:
    session = started(tree(max_retries=0, goodbye=None))
    waiting(session, 10.0)
    assert session.timer(15.0) == [Hangup(None)]


def test_failure_in_a_submenu_uses_that_menus_on_failure_and_path() -> None:
    root = with_submenu(tree(), "2", on_failure=Route("queue", "general"), max_retries=0)
    session = started(root)
    session.key("2", 1.0)
    waiting(session, 5.0)
    assert session.timer(10.0) == [RouteTo(Route("queue", "general"), "2")]


def test_early_and_stale_timers_do_nothing() -> None:
    session = started()
    assert session.timer(50.0) == []  # playing: no timer is due
    waiting(session, 10.0)
    assert session.timer(14.999) == []
    assert session.failures == 0
    session.key("2", 12.0)  # cancels the timeout
    assert session.get_timer() is None
    assert session.timer(15.0) == []
    assert session.path == "2"


def test_retries_reset_on_entering_a_submenu() -> None:
    session = started()
    waiting(session, 10.0)
    session.key("9", 11.0)
    session.key("9", 12.0)  # two failures on the top menu: one more would hang up
    assert session.failures == 2
    session.key("2", 13.0)
    waiting(session, 20.0)
    assert session.timer(25.0) == [Play(SUPPORT_PROMPTS, True)]
    assert session.failures == 1


# -- back and repeat ------------------------------------------------------------------------


def test_back_key_goes_one_level_up() -> None:
    session = started()
    session.key("2", 1.0)
    session.key("1", 2.0)
    assert session.path == "21"
    waiting(session, 10.0)
    assert session.key("*", 11.0) == [Play(SUPPORT_PROMPTS, True)]
    assert session.path == "2"
    assert session.key("*", 12.0) == [StopPlaying(), Play(TOP_PROMPTS, True)]
    assert session.path == ""


def test_back_key_at_the_top_replays_the_top_menu() -> None:
    session = started()
    waiting(session, 10.0)
    assert session.key("*", 11.0) == [Play(TOP_PROMPTS, True)]
    assert session.path == ""
    assert session.failures == 0


def test_repeat_key_replays_the_menu_and_clears_failures() -> None:
    session = started()
    waiting(session, 10.0)
    session.timer(15.0)
    assert session.failures == 1
    assert session.key("#", 16.0) == [StopPlaying(), Play(TOP_PROMPTS, True)]
    assert session.failures == 0
    waiting(session, 30.0)
    assert session.key("#", 31.0) == [Play(TOP_PROMPTS, True)]


def test_menu_without_back_or_repeat_key_treats_them_as_invalid() -> None:
    session = started(tree(back_key=None, repeat_key=None))
    waiting(session, 1.0)
    assert session.key("*", 2.0) == [Play((INVALID, *TOP_PROMPTS), True)]
    waiting(session, 3.0)
    assert session.key("#", 4.0) == [Play((INVALID, *TOP_PROMPTS), True)]


# -- a walk through three levels ------------------------------------------------------------


def test_three_level_walk_returns_the_route_and_the_path() -> None:
    session = started()
    waiting(session, 10.0)
    assert session.key("2", 11.0) == [Play(SUPPORT_PROMPTS, True)]
    waiting(session, 15.0)
    assert session.key("1", 16.0) == [Play((text("Hardware support."), *HARDWARE_PROMPTS), True)]
    waiting(session, 20.0)
    assert session.key("2", 21.0) == [RouteTo(Route("queue", "software"), "212")]
    assert session.path == "212"


def test_four_level_walk_with_a_wrong_turn_and_back() -> None:
    session = started()
    for i, key in enumerate("21*113"):
        session.key(key, float(i))
    assert session.state is SessionState.ROUTED
    assert session.path == "2113"


def test_keys_after_the_menu_ended_are_ignored() -> None:
    session = started()
    session.key("1", 1.0)
    assert session.key("2", 2.0) == []
    assert session.timer(100.0) == []
    assert session.prompt_done(3.0) == []
    assert session.path == "1"


# -- direct dialling ------------------------------------------------------------------------


def test_direct_dial_collects_digits_with_an_inter_digit_timeout() -> None:
    session = started(tree(direct_dial=True, inter_digit_timeout=2.0))
    assert session.key("1", 1.0) == [StopPlaying(), StartTimer(3.0)]  # typed over the welcome
    assert session.state is SessionState.COLLECTING
    assert session.key("0", 2.5) == [StartTimer(4.5)]
    assert session.timer(4.0) == []  # early
    assert session.key("1", 4.0) == [StartTimer(6.0)]
    assert session.timer(6.0) == [RouteTo(Route("extension", "101"), "101")]


def test_direct_dial_pound_ends_the_entry_at_once() -> None:
    session = started(tree(direct_dial=True))
    waiting(session, 10.0)
    session.key("1", 11.0)
    session.key("0", 11.2)
    session.key("2", 11.4)
    assert session.key("#", 11.6) == [RouteTo(Route("extension", "102"), "102")]


def test_direct_dial_single_digit_is_the_menu_option_after_the_pause() -> None:
    session = started(tree(direct_dial=True, inter_digit_timeout=2.0))
    waiting(session, 10.0)
    assert session.key("1", 11.0) == [StartTimer(13.0)]
    assert session.timer(13.0) == [RouteTo(Route("ring_group", "sales"), "1")]


def test_direct_dial_single_digit_extension_that_is_no_option() -> None:
    session = started(tree(direct_dial=True))
    waiting(session, 10.0)
    session.key("5", 11.0)
    assert session.key("#", 11.5) == [RouteTo(Route("extension", "5"), "5")]


def test_direct_dial_unknown_extension_is_an_invalid_entry() -> None:
    session = started(tree(direct_dial=True, inter_digit_timeout=2.0))
    waiting(session, 10.0)
    for i, digit in enumerate("199"):
        session.key(digit, 11.0 + i)
    assert session.timer(15.0) == [Play((INVALID, *TOP_PROMPTS), True)]
    assert session.failures == 1
    assert session.path == ""


def test_direct_dial_entry_ends_at_max_digits() -> None:
    session = started(tree(direct_dial=True))
    waiting(session, 10.0)
    actions: list[object] = []
    for i in range(MAX_DIAL_DIGITS):
        actions = list(session.key("9", 11.0 + i / 10))
    assert actions == [Play((INVALID, *TOP_PROMPTS), True)]


def test_direct_dial_applies_only_to_the_menu_that_has_it() -> None:
    session = started(tree(direct_dial=True))
    session.key("2", 1.0)
    session.timer(1.0 + 3.0)  # "2": Support
    assert session.path == "2"
    waiting(session, 10.0)
    session.key("1", 11.0)  # support has no direct dial: Hardware at once
    assert session.path == "21"


def test_direct_dial_star_while_collecting_is_the_back_key() -> None:
    root = with_submenu(tree(), "2", direct_dial=True)
    session = started(root)
    session.key("2", 1.0)
    session.key("1", 2.0)
    session.key("0", 2.5)
    assert session.key("*", 3.0) == [Play(TOP_PROMPTS, True)]
    assert session.path == ""
    assert session.state is SessionState.PLAYING


def test_direct_dial_in_a_submenu_reports_menu_keys_and_extension() -> None:
    root = with_submenu(tree(), "2", direct_dial=True)
    session = started(root)
    session.key("2", 1.0)
    for digit in "102#":
        actions = session.key(digit, 2.0)
    assert actions == [RouteTo(Route("extension", "102"), "2102")]


def test_direct_dial_menu_with_no_prompts_waits_at_once() -> None:
    session = IvrSession(Menu("dial", direct_dial=True, timeout=4.0), known)
    assert session.start(0.0) == [StartTimer(4.0)]
    assert session.state is SessionState.WAITING
    session.key("1", 1.0)
    session.key("0", 1.5)
    session.key("1", 2.0)
    assert session.key("#", 2.5) == [RouteTo(Route("extension", "101"), "101")]


# -- target unavailable ---------------------------------------------------------------------


def test_unavailable_target_plays_unavailable_and_returns_to_the_same_menu() -> None:
    session = started()
    session.key("2", 1.0)
    session.key("2", 2.0)
    assert session.path == "22"
    assert session.target_unavailable(30.0) == [Play((UNAVAILABLE, *SUPPORT_PROMPTS), True)]
    assert session.path == "2"
    assert session.state is SessionState.PLAYING
    waiting(session, 40.0)
    assert session.key("2", 41.0) == [RouteTo(Route("queue", "software"), "22")]


def test_unavailable_extension_returns_to_the_menu() -> None:
    session = started(tree(direct_dial=True))
    for digit in "101#":
        session.key(digit, 1.0)
    assert session.target_unavailable(5.0) == [Play((UNAVAILABLE, *TOP_PROMPTS), True)]
    assert session.path == ""


def test_unavailable_can_end_the_call_instead() -> None:
    session = started(tree(after_unavailable="hangup"))
    session.key("1", 1.0)
    assert session.target_unavailable(20.0) == [Hangup(UNAVAILABLE)]
    assert session.state is SessionState.ENDED


def test_unavailable_without_its_prompt_ends_with_goodbye() -> None:
    session = started(tree(after_unavailable="hangup", unavailable=None))
    session.key("1", 1.0)
    assert session.target_unavailable(20.0) == [Hangup(GOODBYE)]


def test_unavailable_failure_route_hangs_up_rather_than_loop() -> None:
    session = started(tree(max_retries=0, on_failure=Route("user", "operator")))
    waiting(session, 5.0)
    assert session.timer(10.0) == [RouteTo(Route("user", "operator"), "")]
    assert session.target_unavailable(11.0) == [Hangup(UNAVAILABLE)]


# -- bad input ------------------------------------------------------------------------------


def test_start_twice_is_a_state_error_and_changes_nothing() -> None:
    session = started()
    with pytest.raises(IvrStateError, match="state playing cannot take start"):
        session.start(1.0)
    assert session.state is SessionState.PLAYING


def test_target_unavailable_without_a_route_is_a_state_error() -> None:
    session = started()
    with pytest.raises(IvrStateError, match="target_unavailable"):
        session.target_unavailable(1.0)
    session.key("1", 1.0)
    session.target_unavailable(2.0)
    with pytest.raises(IvrStateError):
        session.target_unavailable(3.0)


def test_inputs_before_start_are_absorbed() -> None:
    session = IvrSession(tree(), known)
    assert session.key("1", 0.0) == []
    assert session.timer(0.0) == []
    assert session.prompt_done(0.0) == []
    assert session.state is SessionState.IDLE


@pytest.mark.parametrize("digit", ["", "11", "x", "E", " ", "١"])
def test_a_key_that_no_phone_sends_is_a_clear_error(digit: str) -> None:
    session = started()
    with pytest.raises(ValueError, match="not a phone key"):
        session.key(digit, 1.0)
    assert session.state is SessionState.PLAYING


@pytest.mark.parametrize("now", [math.nan, math.inf])
def test_now_must_be_finite(now: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        IvrSession(tree(), known).start(now)


def test_a_tree_with_problems_cannot_run() -> None:
    bad = menu("main", options={"1": Option("Sales")}, timeout=0)
    with pytest.raises(IvrConfigError) as info:
        IvrSession(bad, known)
    assert [str(p) for p in info.value.problems] == [
        "main.timeout: must be more than 0 and at most 300 seconds",
        "main.options.1: an option needs exactly one of a route or a submenu",
    ]
