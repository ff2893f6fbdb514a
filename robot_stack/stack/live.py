"""The live policy loop of one episode, on the real clock: what the demo and the hardware-in-the-loop harness run.

Cycles start at absolute times ``t0 + k * period`` (never ``sleep(period)``); a cycle that overran does not make the
next ones burst to catch up. The executor runs in its own thread for the whole episode and is stopped (the arm
decelerated to rest within its limits) on every exit path.
"""

from __future__ import annotations

from collections.abc import Callable

from robot_stack.clock import Clock
from robot_stack.cycle import CycleResult
from robot_stack.stack.build import EpisodeStack

__all__ = ["run_live_episode"]


def run_live_episode(
    episode: EpisodeStack,
    clock: Clock,
    period_ns: int,
    *,
    done: Callable[[int, int], bool],
    max_steps: int,
    before_cycle: Callable[[int, int], None] | None = None,
    after_cycle: Callable[[int, CycleResult], None] | None = None,
    on_exit: Callable[[], None] | None = None,
    meta: Callable[[int], dict[str, int]] | None = None,
) -> int:
    """Run policy cycles until ``done(step, now_ns)`` or ``max_steps``; return the number of cycles run.

    Args:
        episode: the executor, scheduler and cycle of this episode (the executor is started and stopped here).
        clock: the process clock.
        period_ns: cycle period, ns.
        done: asked before every cycle with (step, now ns).
        max_steps: hard bound on the number of cycles.
        before_cycle: called with (step, now ns) before waiting for the cycle's start (e.g. fault switching).
        after_cycle: called with (step, result) after every cycle.
        on_exit: called after the last cycle, before the executor stops.
        meta: the request meta of a step (default ``{"step": step}``).
    """
    executor, cycle = episode.executor, episode.cycle
    executor.start()
    next_query = clock.now_ns()
    steps = 0
    try:
        for step in range(max_steps):
            now = clock.now_ns()
            if done(step, now):
                break
            if before_cycle is not None:
                before_cycle(step, now)
            clock.sleep_until(next_query)
            next_query = max(next_query + period_ns, clock.now_ns())  # never burst to catch up
            result = cycle.run(meta(step) if meta is not None else {"step": step}, step)
            steps += 1
            if after_cycle is not None:
                after_cycle(step, result)
    finally:
        cycle.close()
        if on_exit is not None:
            on_exit()
        executor.stop()
    return steps
