"""How long one queue tick takes on a large call centre: the selection core alone.

The PBX ticks its queues every 250 ms (:data:`pbx.queues.TICK`): offers expire, waits end,
wrap-ups end, and new offers go out across every queue fairly (:func:`pbx.acd.tick_all`). This
drives that core with QUEUES queues of 25 waiting callers each and AGENTS agents spread over
them (each agent in two queues), agents answering, finishing and coming back at random, and
prints the time per tick (median, p99, worst) and the share of one core it costs at 4 ticks/s.

    python bench/acd_bench.py --queues 40 --agents 400 --seconds 60
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pbx.acd import (
    MAX_CALLERS,
    Agent,
    AgentState,
    Connected,
    Offer,
    OfferExpired,
    QueueParams,
    QueueState,
    tick_all,
)

TICK = 0.25


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queues", type=int, default=40)
    parser.add_argument("--agents", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=60.0, help="simulated time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    agents = [Agent(f"a{i}") for i in range(args.agents)]
    strategies = ("longest_idle", "round_robin", "fewest_calls", "simultaneous")
    queues: list[QueueState] = []
    for q in range(args.queues):
        members = [a for i, a in enumerate(agents) if i % args.queues in (q, (q + 1) % args.queues)]
        params = QueueParams(f"q{q}", strategy=strategies[q % 4],  # type: ignore[arg-type]
                             ring_timeout=15.0, wrap_up=5.0)
        queues.append(QueueState(params, members))
    serial = 0
    talking: dict[str, tuple[QueueState, float]] = {}
    ringing: dict[tuple[str, str], float] = {}
    times: list[float] = []
    now = 0.0
    offers = answers = 0
    while now < args.seconds:
        now += TICK
        # Keep every queue full, as on a bad day.
        for q in queues:
            while len(q) < MAX_CALLERS:
                serial += 1
                q.arrive(f"c{serial}", f"+8190{serial:08d}", now)
        # Agents answer some offers and finish some calls (the host's side, not timed).
        for (call_id, agent), since in list(ringing.items()):
            if (call_id, agent) in ringing and now - since > rng.uniform(2.0, 20.0):
                del ringing[(call_id, agent)]
                queue = next((q for q in queues if q.has(call_id)), None)
                if queue is None or agent not in {v for w in queue.waiting(now)
                                                  if w.call_id == call_id
                                                  for v in w.offered_to}:
                    continue
                outcome = "answered" if rng.random() < 0.85 else "rejected"
                for action in queue.offer_result(call_id, agent, outcome, now):
                    if isinstance(action, Connected):
                        talking[action.agent] = (queue, now + rng.uniform(20.0, 120.0))
                        answers += 1
                    ringing.pop((action.call_id, getattr(action, "agent", "")), None)
        for agent, (queue, until) in list(talking.items()):
            if until <= now:
                del talking[agent]
                queue.call_ended(agent, now)
        start = time.perf_counter()
        actions = tick_all(queues, now)
        times.append(time.perf_counter() - start)
        for action in actions:
            if isinstance(action, OfferExpired):
                ringing.pop((action.call_id, action.agent), None)
            elif isinstance(action, Offer):
                offers += 1
                for agent in action.agents:
                    ringing[(action.call_id, agent)] = now
    times.sort()
    states = {s.value: sum(1 for a in agents if a.state is s) for s in AgentState}
    p99 = times[int(len(times) * 0.99) - 1]
    print(f"{args.queues} queues x {MAX_CALLERS} waiting, {args.agents} agents, "
          f"{len(times)} ticks of {TICK * 1000:.0f} ms simulated")
    print(f"offers {offers}, answered {answers}; agents now {states}")
    print(f"tick: median {statistics.median(times) * 1000:.3f} ms, p99 {p99 * 1000:.3f} ms, "
          f"worst {times[-1] * 1000:.3f} ms; at 4 ticks/s "
          f"{statistics.mean(times) * 4 * 100:.2f} % of a core")


if __name__ == "__main__":
    main()
