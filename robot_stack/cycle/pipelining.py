"""Pipelining of the policy cycle: capture the next observation, or send the next request, while one is in flight.

Still one request in flight per robot (LeRobot-async style); what changes is that capture, projection and (with
``send_ahead``) decoding no longer add to the time between two answers. :class:`PipelineTiming` keeps the running
estimates that decide when a background capture must start to be ready, and young enough, when it is used.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from robot_stack.clock import Clock
from robot_stack.cycle.observation import Capture
from robot_stack.types import Observation

log = logging.getLogger("robot_stack.cycle.pipelining")

__all__ = ["InFlight", "PipelineTiming", "Prefetch", "Request"]


class Prefetch:
    """One background capture of the next observation, started at a given time (or earlier, on :meth:`take`)."""

    def __init__(self, capture: Any, delay_s: float) -> None:
        self._capture = capture
        self._go = threading.Event()
        self._delay_s = max(delay_s, 0.0)
        self.result: Capture | None = None
        self._thread = threading.Thread(target=self._run, name="policy-cycle-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.wait(self._delay_s)
        self.result = self._capture()

    def take(self, timeout_s: float = 5.0) -> Capture | None:
        """Start the capture now if it has not started, wait for it; None if it did not finish in time."""
        self._go.set()
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self.result


@dataclass(frozen=True)
class Request:
    """One observation sent to the policy server and what came back. ``outcome`` is empty when an answer arrived,
    else why not (``"camera"``, ``"stale:<reason>"``, ``"transport"``). ``t_capture_s``: capture + projection (s);
    ``t_start``: ``time.perf_counter()`` when the request's cycle began."""

    outcome: str
    detail: str = ""
    obs: Observation | None = None
    reply: Any = None
    t_capture_s: float = 0.0
    t_start: float = 0.0
    t_reply: float = 0.0


class InFlight:
    """A request (:meth:`~robot_stack.cycle.policy_cycle.PolicyCycle.request`) running in a background thread;
    :meth:`take` waits for it."""

    def __init__(self, request: Any, meta: Mapping[str, Any] | None) -> None:
        self.result: Request | None = None
        self._thread = threading.Thread(
            target=self._run, args=(request, meta), name="policy-cycle-request", daemon=True
        )
        self._thread.start()

    def _run(self, request: Any, meta: Mapping[str, Any] | None) -> None:
        try:
            self.result = request(meta)
        except Exception as exc:  # reported as the next cycle's outcome, never lost in the thread
            log.exception("pipelined policy request failed")
            self.result = Request("transport", f"{type(exc).__name__}: {exc}")

    def take(self) -> Request:
        """Wait for the request (bounded by the client's own deadline) and return what it got."""
        self._thread.join()
        assert self.result is not None
        return self.result


def _ema(old: float, new: float) -> float:
    return new if old <= 0.0 else 0.5 * old + 0.5 * new


class PipelineTiming:
    """Running estimates of a policy loop's stages and the prefetch / send-ahead decisions made from them.

    Args:
        period_s: the caller's cycle period (s); None = synchronous (no prefetch, no send-ahead).
        send_ahead: with slow cycles, send the next request as soon as an answer arrives.
        max_prefetch_age_s: a prefetched observation older than this when it is needed is discarded.
        clock: the process clock (capture times are on it).
    """

    def __init__(self, period_s: float | None, send_ahead: bool, max_prefetch_age_s: float, clock: Clock) -> None:
        self.period_s = period_s
        self.send_ahead = bool(send_ahead)
        self.max_prefetch_age_s = max_prefetch_age_s
        self.clock = clock
        self.counts: Counter[str] = Counter()  # prefetches used, discarded_old, failed
        self.capture_s = 0.0  # running estimates (s): capture + projection
        self.reply_s = 0.0  # send -> answer received
        self.post_s = 0.0  # answer received -> trajectory handed over (decode, schedule)

    def note_capture(self, seconds: float) -> None:
        self.capture_s = _ema(self.capture_s, seconds)

    def note_reply(self, send_to_reply_s: float) -> None:
        """A slower reply raises the estimate at once (the model or the network just became slow: a prefetch timed
        by the old estimate would finish long before the reply and be discarded as too old); a faster one lowers it
        gradually."""
        self.reply_s = max(send_to_reply_s, _ema(self.reply_s, send_to_reply_s))

    def note_post(self, seconds: float) -> None:
        self.post_s = _ema(self.post_s, seconds)

    def pipelined(self) -> bool:
        """Whether the next request is sent as soon as an answer arrives: ``send_ahead`` and cycles slower than the
        caller's period (slow model or network)."""
        if not self.send_ahead or self.period_s is None or self.reply_s <= 0.0:
            return False
        return self.capture_s + self.reply_s > self.period_s

    def prefetch_delay_s(self) -> float | None:
        """When (s from now) the next capture must start to be ready when the next cycle needs it: when this
        cycle's reply is due plus its decoding and hand-over; None when cycles are fast enough that a capture at
        the next cycle's start is fresher. Ready earlier, it would age while the reply is decoded and be discarded
        as too old (a second capture per cycle: on a loaded host it makes every cycle slower)."""
        if self.period_s is None or self.reply_s <= 0.0:
            return None
        if self.capture_s + self.reply_s <= self.period_s:
            return None
        lead = 0.0 if self.pipelined() else self.post_s
        return self.reply_s + lead - self.capture_s

    def take(self, prefetch: Prefetch | None, capture: Callable[[], Capture]) -> Capture:
        """The prefetched observation if it is ready and young enough, else a capture made now."""
        if prefetch is not None:
            got = prefetch.take()
            if got is None or got.error is not None:
                self.counts["failed"] += 1
            else:
                age_s = (self.clock.now_ns() - min(f.t_capture_ns for f in got.frames)) / 1e9
                if age_s <= self.max_prefetch_age_s:
                    self.counts["used"] += 1
                    return got
                self.counts["discarded_old"] += 1
                log.info("prefetched observation discarded: %.0f ms old when the cycle started", age_s * 1e3)
        return capture()
