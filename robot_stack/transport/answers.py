"""Answer bookkeeping shared by the policy clients (:class:`~robot_stack.transport.client.PolicyClient` over
ZeroMQ, :class:`~robot_stack.transport.openpi.OpenPIClient` over websockets): the refusal of stale observations
right before sending, the outages lived through (gaps between answers), and the NTP-style clock-offset estimate
from the servers' receipt/reply stamps."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Mapping
from typing import Any

from robot_stack.errors import StaleObservationError

log = logging.getLogger(__name__)

#: How many recent replies the clock-offset estimate is taken from (the lowest-delay one wins).
OFFSET_WINDOW = 16


class AnswerTracking:
    """Mixin: call :meth:`_init_answer_tracking` in ``__init__``; the class provides ``endpoint``.

    Attributes:
        refused_stale: requests not sent because ``before_send`` found the observation too old.
        gaps_s: outages the client lived through: seconds from the last answer before failures to the first after.
    """

    endpoint: str
    _server_label = "policy server"  # how log lines name the other side
    _log = log  # where outages are reported (each client names its own logger)

    def _init_answer_tracking(self) -> None:
        self._offset_samples: collections.deque[tuple[int, int]] = collections.deque(maxlen=OFFSET_WINDOW)
        self.refused_stale = 0
        self.gaps_s: list[float] = []
        self._last_answer_ns: int | None = None
        self._failures_since_answer = 0

    def _run_before_send(self, before_send: Callable[[], None] | None) -> None:
        """Run the caller's last check before the frames leave, counting stale refusals (the error propagates)."""
        if before_send is None:
            return
        try:
            before_send()
        except StaleObservationError:
            self.refused_stale += 1
            raise

    def _note_answer(self, t_ns: int) -> None:
        """An answer arrived at monotonic ``t_ns``: if requests failed since the previous one, record and report
        the outage."""
        if self._failures_since_answer and self._last_answer_ns is not None:
            gap_s = (t_ns - self._last_answer_ns) / 1e9
            self.gaps_s.append(gap_s)
            self._log.warning(
                "%s %s answering again after a %.2f s gap (%d requests failed meanwhile)",
                self._server_label,
                self.endpoint,
                gap_s,
                self._failures_since_answer,
            )
        self._failures_since_answer = 0
        self._last_answer_ns = t_ns

    def _server_span_ns(self, timing: Mapping[str, Any], t_send: int, t_recv: int) -> int:
        """The server's receipt -> reply time, ns (0 without ``t_recv_ns``/``t_reply_ns`` stamps); stamped replies
        also add a (delay, offset) sample to the clock-offset estimate."""
        if "t_recv_ns" not in timing or "t_reply_ns" not in timing:
            return 0
        t2, t3 = int(timing["t_recv_ns"]), int(timing["t_reply_ns"])
        server_ns = max(0, t3 - t2)
        delay = (t_recv - t_send) - server_ns
        offset = ((t2 - t_send) + (t3 - t_recv)) // 2
        self._offset_samples.append((max(0, delay), offset))
        return server_ns

    @property
    def clock_offset_ns(self) -> int | None:
        """Server clock minus client clock, ns (NTP-style, from the reply with the smallest network delay among
        the last 16); None before the first stamped reply. ``t_server = t_client + clock_offset_ns``."""
        if not self._offset_samples:
            return None
        return min(self._offset_samples)[1]

    @property
    def clock_offset_uncertainty_ns(self) -> int | None:
        """Half the network delay of the sample behind :attr:`clock_offset_ns`, ns (a bound on its error)."""
        if not self._offset_samples:
            return None
        return min(self._offset_samples)[0] // 2
