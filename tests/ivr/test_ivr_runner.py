"""IvrRunner driven by a fake Channel: a caller who presses keys at given times."""

from __future__ import annotations

import asyncio
from collections import deque

import pytest

from ivr import Hangup, IvrError, IvrRunner, IvrSession, Menu, Option, Prompt, Route, RouteTo
from tests.ivr.menus import GOODBYE, TOP_PROMPTS, UNAVAILABLE, WELCOME, known, text, tree

SECONDS_PER_PROMPT = 2.0


class FakeChannel:
    """A caller on a virtual clock: each prompt lasts two seconds; ``presses`` are the times
    the caller presses keys. Keys pressed during a prompt without barge-in are lost, as the
    session expects."""

    def __init__(self, presses: list[tuple[float, str]] | None = None) -> None:
        self.now = 0.0
        self.presses = deque(sorted(presses or []))
        self.played: list[tuple[tuple[Prompt, ...], bool, float]] = []
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def _press_until(self, end: float) -> str | None:
        if self.presses and self.presses[0][0] <= end:
            at, key = self.presses.popleft()
            self.now = max(self.now, at)
            return key
        self.now = end
        return None

    async def play(self, prompts: tuple[Prompt, ...], barge_in: bool) -> str | None:
        self.played.append((prompts, barge_in, self.now))
        end = self.now + SECONDS_PER_PROMPT * len(prompts)
        if barge_in:
            return self._press_until(end)
        while self.presses and self.presses[0][0] <= end:
            self.presses.popleft()
        self.now = end
        return None

    async def key(self, timeout: float) -> str | None:
        self.waits.append(timeout)
        return self._press_until(self.now + timeout)


def runner(channel: FakeChannel, root: Menu | None = None) -> IvrRunner:
    return IvrRunner(IvrSession(root if root is not None else tree(), known), channel,
                     clock=channel.clock)


@pytest.mark.asyncio
async def test_type_ahead_over_the_welcome_reaches_a_submenu_option() -> None:
    channel = FakeChannel([(1.0, "3"), (1.5, "1")])
    outcome = await runner(channel).run()
    assert outcome == RouteTo(Route("user", "alice"), "31")
    assert [(p, b) for p, b, _ in channel.played] == [
        ((WELCOME, *TOP_PROMPTS), True),
        ((text("Billing."), text("For Invoices, press 1.")), True),
    ]
    assert channel.now == 1.5


@pytest.mark.asyncio
async def test_a_silent_caller_hears_the_menu_three_times_then_goodbye() -> None:
    channel = FakeChannel()
    outcome = await runner(channel).run()
    assert outcome == Hangup(GOODBYE)
    assert [(p, b, t) for p, b, t in channel.played] == [
        ((WELCOME, *TOP_PROMPTS), True, 0.0),   # 10 s of prompts, then 5 s of silence
        (TOP_PROMPTS, True, 15.0),              # retry 1: 8 s + 5 s
        (TOP_PROMPTS, True, 28.0),              # retry 2
        ((GOODBYE,), False, 41.0),              # the runner plays the goodbye to the end
    ]
    assert channel.waits == [5.0, 5.0, 5.0]
    assert channel.now == 43.0


@pytest.mark.asyncio
async def test_a_key_after_the_prompts_is_waited_for() -> None:
    channel = FakeChannel([(12.0, "2"), (30.0, "2")])
    outcome = await runner(channel).run()
    assert outcome == RouteTo(Route("queue", "software"), "22")
    assert channel.waits[0] == 5.0


@pytest.mark.asyncio
async def test_unavailable_target_returns_to_the_menu_and_runs_to_the_next_end() -> None:
    channel = FakeChannel([(1.0, "1")])
    ivr = runner(channel)
    assert await ivr.run() == RouteTo(Route("ring_group", "sales"), "1")
    channel.now = 30.0  # ringing the group took a while
    channel.presses.append((33.0, "0"))
    assert await ivr.target_unavailable() == RouteTo(Route("user", "operator"), "0")
    assert channel.played[-1] == ((UNAVAILABLE, *TOP_PROMPTS), True, 30.0)


@pytest.mark.asyncio
async def test_unavailable_that_ends_the_call_plays_its_prompt() -> None:
    channel = FakeChannel([(1.0, "1")])
    ivr = runner(channel, tree(after_unavailable="hangup"))
    await ivr.run()
    assert await ivr.target_unavailable() == Hangup(UNAVAILABLE)
    assert channel.played[-1][:2] == ((UNAVAILABLE,), False)


@pytest.mark.asyncio
async def test_direct_dial_through_the_runner() -> None:
    channel = FakeChannel([(1.0, "1"), (1.5, "0"), (2.0, "1")])
    outcome = await runner(channel, tree(direct_dial=True, inter_digit_timeout=2.0)).run()
    assert outcome == RouteTo(Route("extension", "101"), "101")
    assert channel.now == 4.0
    assert channel.waits == [2.0, 2.0, 2.0]  # each digit restarts the inter-digit timer


@pytest.mark.asyncio
async def test_without_barge_in_keys_during_the_prompt_are_lost() -> None:
    channel = FakeChannel([(1.0, "3"), (11.0, "1")])
    outcome = await runner(channel, tree(barge_in=False)).run()
    assert outcome == RouteTo(Route("ring_group", "sales"), "1")
    assert channel.played[0][1] is False


@pytest.mark.asyncio
async def test_a_caller_who_never_stops_pressing_repeat_is_bounded() -> None:
    channel = FakeChannel([(0.0, "#")] * 200)
    ivr = IvrRunner(IvrSession(tree(), known), channel, clock=channel.clock, max_steps=50)
    with pytest.raises(IvrError, match="did not end after 50 inputs"):
        await ivr.run()


class QueueChannel:
    """A channel on the real event loop: prompts take no time, keys come from a queue."""

    def __init__(self) -> None:
        self.keys: asyncio.Queue[str] = asyncio.Queue()
        self.waits: list[float] = []
        self.played: list[tuple[Prompt, ...]] = []

    async def play(self, prompts: tuple[Prompt, ...], barge_in: bool) -> str | None:
        self.played.append(prompts)
        return None

    async def key(self, timeout: float) -> str | None:
        self.waits.append(timeout)
        try:
            return await asyncio.wait_for(self.keys.get(), timeout)
        except TimeoutError:
            return None


@pytest.mark.asyncio
async def test_the_loop_clock_by_default() -> None:
    menu = Menu("main", options={"1": Option("Sales", route=Route("user", "alice"))},
                timeout=0.05, max_retries=1, goodbye=Prompt("text", "Bye."))
    channel = QueueChannel()
    loop = asyncio.get_running_loop()
    started = loop.time()
    outcome = await asyncio.wait_for(IvrRunner(IvrSession(menu, known), channel).run(), 5.0)
    assert outcome == Hangup(Prompt("text", "Bye."))
    assert loop.time() - started >= 0.1
    assert len(channel.waits) == 2 and all(0 < w <= 0.05 for w in channel.waits)
    assert channel.played[-1] == (Prompt("text", "Bye."),)


@pytest.mark.asyncio
async def test_keys_from_a_queue_route_the_call() -> None:
    menu = Menu("main", options={"1": Option("Sales", route=Route("user", "alice"))},
                timeout=5.0)
    channel = QueueChannel()
    channel.keys.put_nowait("1")
    outcome = await asyncio.wait_for(IvrRunner(IvrSession(menu, known), channel).run(), 5.0)
    assert outcome == RouteTo(Route("user", "alice"), "1")
