"""Admission control of the policy server: who may queue what, how much of it, and in which order it runs.

* **Identity.** A request belongs to a *client*: its CURVE public key (z85) when the server runs CURVE, otherwise
  its connection (the ROUTER routing id). A :class:`ClientGrant` from the allow-list may restrict the robot ids a
  key may use.
* **Latest wins per (client, robot id).** A newer ``infer`` of the same client and robot replaces a queued older
  one (the older is answered ``superseded``). Two clients that happen to use the same robot id never touch each
  other's requests.
* **Caps** (:class:`AdmissionLimits`): queued requests in all, per connection, and their declared (decoded) bytes
  in all. A request over a cap is refused with :class:`~robot_stack.errors.ServerBusyError` (the server answers
  ``busy``) before anything of it is decoded, so no client can make the server hold more than the caps allow.
* **Rejection budget** (:class:`RejectionBudget`): a connection that keeps sending what has to be refused is muted
  for a while (its messages dropped unanswered) instead of costing the server a decoded header and an error
  answer each.
* **Order.** The worker takes decoded requests earliest deadline first (no deadline last, ties by arrival); work
  whose deadline has passed is handed back as expired. Compressed requests wait for the decoder thread, which
  serves connections round robin (:class:`FairQueue`): one client's expensive streams delay only that client.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from robot_stack.errors import ConfigError, ServerBusyError
from robot_stack.transport.protocol import Header

__all__ = [
    "ANY_ROBOT",
    "AdmissionLimits",
    "ClientGrant",
    "FairQueue",
    "PendingQueue",
    "QueuedRequest",
    "RejectionBudget",
]

#: Robot-id entry of a grant that allows any robot id.
ANY_ROBOT = "*"


@dataclass(frozen=True)
class AdmissionLimits:
    """Caps on queued ``infer`` work (decoded or waiting to be).

    Attributes:
        max_pending: requests queued in all.
        max_pending_per_connection: requests queued by one connection (a :class:`PolicyClient` has one in
            flight; the slack covers a few robots multiplexed on one socket).
        max_pending_bytes: declared (decoded) array bytes queued in all; must be at least the message cap so
            that one largest request can always be queued.
        rejections_per_s, rejection_burst: each connection's budget of rejected messages (any error answer its
            own input caused: malformed, refused, ``busy``...), a token bucket. A connection over budget is
            *muted*: its messages are dropped unread and unanswered (counted as ``muted``) until the budget
            refills. Answering a flood costs the server ~0.1 ms of Python per message; dropping one costs a few
            microseconds, so a flooding peer cannot buy a large share of the server's CPU.
    """

    max_pending: int = 64
    max_pending_per_connection: int = 4
    max_pending_bytes: int = 256 * 1024 * 1024
    rejections_per_s: int = 100
    rejection_burst: int = 400

    def __post_init__(self) -> None:
        for name in (
            "max_pending",
            "max_pending_per_connection",
            "max_pending_bytes",
            "rejections_per_s",
            "rejection_burst",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"AdmissionLimits.{name} must be a positive int, got {value!r}")
        if self.max_pending_per_connection > self.max_pending:
            raise ConfigError(
                f"AdmissionLimits: max_pending_per_connection ({self.max_pending_per_connection}) exceeds "
                f"max_pending ({self.max_pending})"
            )


@dataclass(frozen=True)
class ClientGrant:
    """What one allow-listed CURVE key may do.

    Attributes:
        name: the key's identity name (its file name in the allow-list folder), for logs.
        robot_ids: the robot ids the key may send as; None = any (a plain allow-list entry).
    """

    name: str
    robot_ids: frozenset[str] | None = None

    def allows(self, robot: str) -> bool:
        """True if this key may send requests as ``robot``."""
        return self.robot_ids is None or robot in self.robot_ids

    @classmethod
    def of(cls, name: str, robot_ids: Collection[str] | None) -> ClientGrant:
        """A grant from a name and robot ids (``"*"`` among them = any id, like None)."""
        if robot_ids is None or ANY_ROBOT in robot_ids:
            return cls(name, None)
        return cls(name, frozenset(robot_ids))


@dataclass(eq=False)
class QueuedRequest:
    """One admitted ``infer`` request.

    Attributes:
        envelope: ROUTER routing frames (routing id, plus the empty delimiter of a REQ peer).
        header: the validated header; frames: the received frames after the envelope (header + arrays); they
            are released once decoded.
        t_recv_ns, deadline_ns: server monotonic clock, ns (deadline None = none).
        client: the sender's identity (CURVE key z85, or ``conn:<routing id hex>``); connection: routing id.
        arrays: the decoded arrays; None until decoded.
    """

    envelope: list[Any]
    header: Header
    frames: list[Any]
    t_recv_ns: int
    deadline_ns: int | None
    client: str
    connection: bytes
    arrays: Mapping[str, np.ndarray] | None = None
    t_decoded_ns: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        """(client, robot id): the unit of latest-wins."""
        return self.client, self.header.robot

    @property
    def nbytes(self) -> int:
        """Declared decoded bytes: the most this request can hold in memory once decoded."""
        return self.header.declared_bytes

    def edf_key(self) -> tuple[float, int]:
        """Earliest deadline first; no deadline sorts last; ties by arrival."""
        return (self.deadline_ns if self.deadline_ns is not None else float("inf"), self.t_recv_ns)


class PendingQueue:
    """The server's queue of admitted requests (thread-safe; see the module docstring for the rules).

    Args:
        limits: the caps.
        clock: monotonic ns (for deadlines).
    """

    def __init__(self, limits: AdmissionLimits, clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.limits = limits
        self._clock = clock
        self._cond = threading.Condition()
        self._items: dict[tuple[str, str], QueuedRequest] = {}
        self._per_connection: collections.Counter[bytes] = collections.Counter()
        self._bytes = 0
        self._peak_bytes = 0
        self._closed = False

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    @property
    def queued_bytes(self) -> int:
        """Declared bytes of everything queued."""
        with self._cond:
            return self._bytes

    @property
    def peak_bytes(self) -> int:
        """Most declared bytes queued at once since :meth:`reset_peak` (or creation)."""
        with self._cond:
            return self._peak_bytes

    def reset_peak(self) -> None:
        with self._cond:
            self._peak_bytes = self._bytes

    def _add(self, item: QueuedRequest) -> None:
        self._items[item.key] = item
        self._per_connection[item.connection] += 1
        self._bytes += item.nbytes
        self._peak_bytes = max(self._peak_bytes, self._bytes)

    def _remove(self, item: QueuedRequest) -> None:
        item.frames = []  # superseded, expired, dropped or taken: its received frames are needed no more (decoded
        # arrays keep what they view alive); rebinding, not clearing, so a decode in progress keeps its list
        del self._items[item.key]
        self._per_connection[item.connection] -= 1
        if self._per_connection[item.connection] <= 0:
            del self._per_connection[item.connection]
        self._bytes -= item.nbytes

    def admit(self, item: QueuedRequest) -> QueuedRequest | None:
        """Queue ``item``; return the request of the same (client, robot) it superseded, if any.

        Raises:
            ServerBusyError: a cap would be exceeded (nothing changed; the superseded request stays queued).
        """
        lim = self.limits
        with self._cond:
            old = self._items.get(item.key)
            same_conn = old is not None and old.connection == item.connection
            n_conn = self._per_connection[item.connection] - int(same_conn)
            if n_conn >= lim.max_pending_per_connection:
                raise ServerBusyError(
                    f"this connection already has {n_conn} requests queued (cap {lim.max_pending_per_connection}); "
                    "wait for their answers before sending more"
                )
            n_all = len(self._items) - int(old is not None)
            if n_all >= lim.max_pending:
                raise ServerBusyError(f"the server has {n_all} requests queued (cap {lim.max_pending}); retry later")
            total = self._bytes - (old.nbytes if old is not None else 0) + item.nbytes
            if total > lim.max_pending_bytes:
                raise ServerBusyError(
                    f"queued requests would hold {total} bytes (cap {lim.max_pending_bytes}); retry later or send "
                    "smaller arrays"
                )
            if old is not None:
                self._remove(old)
            self._add(item)
            if item.arrays is not None:
                self._cond.notify()
            return old

    def is_current(self, item: QueuedRequest) -> bool:
        """True while ``item`` is queued (not superseded, expired, taken or dropped)."""
        with self._cond:
            return self._items.get(item.key) is item

    def mark_decoded(self, item: QueuedRequest, arrays: Mapping[str, np.ndarray]) -> bool:
        """Attach the decoded arrays; False (arrays not kept) if the item left the queue meanwhile."""
        with self._cond:
            if self._items.get(item.key) is not item:
                return False
            item.arrays = arrays
            item.frames = []
            item.t_decoded_ns = self._clock()
            self._cond.notify()
            return True

    def drop(self, item: QueuedRequest) -> bool:
        """Remove ``item`` (e.g. it failed to decode); False if it had already left the queue."""
        with self._cond:
            if self._items.get(item.key) is not item:
                return False
            self._remove(item)
            return True

    def close(self) -> None:
        """Wake every waiter; :meth:`take` returns None from now on."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(
        self, max_batch: int, timeout_s: float | None = None
    ) -> tuple[list[QueuedRequest], list[QueuedRequest]] | None:
        """Block until decoded work or expired work exists; return (up to ``max_batch`` decoded requests by EDF,
        every expired request), both removed from the queue; None once closed. ``timeout_s``: wait at most this
        long (then both lists may be empty; 0 = only sweep out what has expired); None = until there is work."""
        t_give_up = None if timeout_s is None else self._clock() + round(timeout_s * 1e9)
        with self._cond:
            while not self._closed:
                now = self._clock()
                batch: list[QueuedRequest] = []
                expired: list[QueuedRequest] = []
                next_deadline: int | None = None
                for item in sorted(self._items.values(), key=QueuedRequest.edf_key):
                    if item.deadline_ns is not None and now > item.deadline_ns:
                        expired.append(item)
                    elif item.arrays is not None and len(batch) < max_batch:
                        batch.append(item)
                    elif item.arrays is None and item.deadline_ns is not None:
                        next_deadline = (
                            item.deadline_ns if next_deadline is None else min(next_deadline, item.deadline_ns)
                        )
                for item in batch + expired:
                    self._remove(item)
                if batch or expired:
                    return batch, expired
                wake_ns = next_deadline
                if t_give_up is not None:
                    if now >= t_give_up:
                        return [], []
                    wake_ns = t_give_up if wake_ns is None else min(wake_ns, t_give_up)
                timeout = None if wake_ns is None else max(0.0, (wake_ns - now) / 1e9) + 1e-4
                self._cond.wait(timeout)
            return None


T = TypeVar("T")


@dataclass
class FairQueue(Generic[T]):
    """A blocking FIFO per connection, served round robin across connections (thread-safe)."""

    _queues: collections.OrderedDict[bytes, collections.deque[T]] = field(default_factory=collections.OrderedDict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _closed: bool = False

    def push(self, connection: bytes, item: T) -> None:
        with self._cond:
            self._queues.setdefault(connection, collections.deque()).append(item)
            self._cond.notify()

    def pop(self) -> T | None:
        """The next item (oldest of the connection whose turn it is); blocks; None once closed."""
        with self._cond:
            while not self._queues and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            connection, queue = next(iter(self._queues.items()))
            item = queue.popleft()
            if queue:
                self._queues.move_to_end(connection)
            else:
                del self._queues[connection]
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class RejectionBudget:
    """Per-connection token buckets of rejected messages (used by the I/O thread only: not thread-safe).

    Args:
        rate_per_s: tokens added per second; burst: bucket size (a fresh connection starts full).
        max_connections: connections remembered (least recently rejected forgotten first: they start full again).
        clock: monotonic ns.
    """

    def __init__(
        self, rate_per_s: float, burst: int, max_connections: int = 4096, clock: Callable[[], int] = time.monotonic_ns
    ) -> None:
        self.rate_per_ns = float(rate_per_s) / 1e9
        self.burst = float(burst)
        self.max_connections = int(max_connections)
        self._clock = clock
        self._buckets: collections.OrderedDict[bytes, tuple[float, int]] = collections.OrderedDict()

    def _level(self, connection: bytes, now: int) -> float:
        level, t = self._buckets.get(connection, (self.burst, now))
        return min(self.burst, level + (now - t) * self.rate_per_ns)

    def muted(self, connection: bytes) -> bool:
        """True while ``connection`` has no token left (its messages are to be dropped unread)."""
        if connection not in self._buckets:
            return False
        return self._level(connection, self._clock()) < 1.0

    def spend(self, connection: bytes) -> bool:
        """Take one token for a rejection; False if there was none (the connection is now muted)."""
        now = self._clock()
        level = self._level(connection, now)
        self._buckets.pop(connection, None)
        self._buckets[connection] = (max(0.0, level - 1.0), now)
        while len(self._buckets) > self.max_connections:
            self._buckets.popitem(last=False)
        return level >= 1.0
