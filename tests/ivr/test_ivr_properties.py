"""Hypothesis: any tree, any keys, any timing: no crash, and a silent caller always leaves."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from ivr import (
    MAX_DEPTH,
    MENU_KEYS,
    Action,
    Hangup,
    IvrSession,
    IvrStateError,
    Menu,
    Option,
    Play,
    Prompt,
    Route,
    RouteTo,
    SessionState,
    StartTimer,
    StopPlaying,
    menu_problems,
)
from ivr.model import DTMF_KEYS

MAX_TEST_RETRIES = 3

_routes = st.builds(Route, st.sampled_from(["user", "queue", "ring_group"]),
                    st.sampled_from(["alice", "sales", "support"]))
_prompts = st.none() | st.builds(Prompt, st.just("text"), st.sampled_from(["a", "b"]))
_seconds = st.sampled_from([0.5, 1.0, 3.0, 5.0])


@st.composite
def menus(draw: st.DrawFn, depth: int = 1) -> Menu:
    """A valid menu tree, at most MAX_DEPTH levels deep."""
    back = draw(st.none() | st.sampled_from(MENU_KEYS))
    repeat = draw(st.none() | st.sampled_from([k for k in MENU_KEYS if k != back]))
    free = [k for k in MENU_KEYS if k not in (back, repeat)]
    direct_dial = draw(st.booleans())
    keys = draw(st.lists(st.sampled_from(free), unique=True, min_size=0 if direct_dial else 1,
                         max_size=3))
    options: dict[str, Option] = {}
    for key in keys:
        if depth < MAX_DEPTH and draw(st.booleans()):
            options[key] = Option(f"menu {key}", submenu=draw(menus(depth + 1)))
        else:
            options[key] = Option(f"route {key}", route=draw(_routes), prompt=draw(_prompts))
    return Menu(
        f"level{depth}", welcome=draw(_prompts), options=options, timeout=draw(_seconds),
        max_retries=draw(st.integers(0, MAX_TEST_RETRIES)),
        on_failure=draw(st.none() | _routes), back_key=back, repeat_key=repeat,
        direct_dial=direct_dial, inter_digit_timeout=draw(_seconds), invalid=draw(_prompts),
        goodbye=draw(_prompts), unavailable=draw(_prompts),
        after_unavailable=draw(st.sampled_from(["menu", "hangup"])),
        barge_in=draw(st.booleans()),
    )


_events = st.lists(
    st.one_of(
        st.sampled_from(DTMF_KEYS).map(lambda k: ("key", k)),
        st.just(("done", "")),
        st.just(("timer", "")),
        st.just(("unavailable", "")),
        st.sampled_from(["0.1", "1", "4"]).map(lambda dt: ("advance", dt)),
    ),
    max_size=80,
)


def _extensions(digits: str) -> bool:
    return digits in {"101", "2", "55"}


@dataclass
class _Driver:
    session: IvrSession
    now: float = 0.0

    def feed(self, kind: str, value: str) -> list[Action]:
        session = self.session
        before = session.state
        if kind == "advance":
            self.now += float(value)
            return []
        if kind == "key":
            actions = session.key(value, self.now)
        elif kind == "done":
            actions = session.prompt_done(self.now)
        elif kind == "timer":
            due = session.get_timer()
            self.now = max(self.now, due if due is not None else self.now)
            actions = session.timer(self.now)
        else:
            try:
                actions = session.target_unavailable(self.now)
            except IvrStateError:
                assert before is not SessionState.ROUTED
                assert session.state is before
                return []
        self._check(before, actions)
        return actions

    def _check(self, before: SessionState, actions: list[Action]) -> None:
        session = self.session
        for i, action in enumerate(actions):
            if isinstance(action, StopPlaying):
                assert before is SessionState.PLAYING and i == 0
            elif isinstance(action, Play):
                assert action.prompts
                assert session.state is SessionState.PLAYING
                assert session.get_timer() is None
            elif isinstance(action, StartTimer):
                assert action.at > self.now
                assert action.at == session.get_timer()
            elif isinstance(action, RouteTo):
                assert session.state is SessionState.ROUTED
                assert action.path_keys == session.path
                assert set(action.path_keys) <= set(MENU_KEYS)
            else:
                assert isinstance(action, Hangup)
                assert session.state is SessionState.ENDED
        if actions and isinstance(actions[-1], RouteTo | Hangup):
            assert session.get_timer() is None
        if before in (SessionState.ROUTED, SessionState.ENDED) and actions:
            # Only target_unavailable brings a routed caller back.
            assert before is SessionState.ROUTED


@settings(max_examples=300, deadline=None)
@given(root=menus(), events=_events)
def test_random_keys_never_crash_and_a_silent_caller_always_leaves(
    root: Menu, events: list[tuple[str, str]]
) -> None:
    assert menu_problems(root) == []
    driver = _Driver(IvrSession(root, _extensions))
    assert driver.session.start(0.0)
    for kind, value in events:
        driver.feed(kind, value)
    # From here on the caller is silent: each menu plays, times out, replays at most
    # max_retries times and fails; a collected extension ends at its inter-digit timer.
    bound = 2 * (MAX_TEST_RETRIES + 2) + 2
    for _ in range(bound):
        state = driver.session.state
        if state in (SessionState.ROUTED, SessionState.ENDED):
            break
        driver.feed("done" if state is SessionState.PLAYING else "timer", "")
    assert driver.session.state in (SessionState.ROUTED, SessionState.ENDED)


@settings(max_examples=200, deadline=None)
@given(root=menus(), keys=st.text(alphabet=DTMF_KEYS, max_size=40))
def test_a_caller_who_types_ahead_ends_like_one_who_waits(root: Menu, keys: str) -> None:
    """With barge-in, typing a sequence over the prompts reaches the same place as
    pressing the same keys after every prompt has played (timeouts aside)."""
    eager = IvrSession(root, _extensions)
    patient = IvrSession(root, _extensions)
    eager.start(0.0)
    patient.start(0.0)
    for key in keys:
        if eager.state in (SessionState.ROUTED, SessionState.ENDED):
            break
        eager.key(key, 0.0)
        if patient.state is SessionState.PLAYING:
            patient.prompt_done(0.0)
        patient.key(key, 0.0)
    if all(_menus_barge_in(root)):
        assert eager.path == patient.path
        assert eager.failures == patient.failures
        assert _in_menu(eager.state) is _in_menu(patient.state)


def _in_menu(state: SessionState) -> SessionState:
    # Playing or waiting, the caller is at the same menu; only the clock differs.
    return SessionState.WAITING if state is SessionState.PLAYING else state


def _menus_barge_in(menu: Menu) -> list[bool]:
    out = [menu.barge_in]
    for option in menu.options.values():
        if option.submenu is not None:
            out += _menus_barge_in(option.submenu)
    return out
