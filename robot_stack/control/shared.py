"""Shared-memory blocks between the real-time executor process and the rest of the stack.

* :class:`SeqlockBlock` — one writer, any number of readers, no locks: the writer makes the sequence number odd,
  writes, makes it even again; a reader copies the payload and retries if the sequence number was odd or changed
  meanwhile. The writer (the 500 Hz loop) never waits for a reader.
* :class:`ByteSlot` — a variable-length byte payload (a serialized :class:`~robot_stack.control.plan.MotionPlan`)
  under its own seqlock, with a fixed capacity.

Both live in :class:`multiprocessing.shared_memory.SharedMemory` segments created by the main process and attached
by name in the real-time process. Only numbers and raw bytes cross; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from multiprocessing import shared_memory
from typing import TypeVar

import numpy as np

from robot_stack.errors import ConfigError, ShapeError

_T = TypeVar("_T")

__all__ = ["ByteSlot", "SeqlockBlock", "close_segment", "open_segment"]

#: How long (s) a sequence number may stay odd at one value before the reader concludes the writer died mid-write.
#: Only a write in progress that never ends counts: a sequence number that moves means a live writer, and the
#: reader retries however long it was itself descheduled (a busy machine can stall it for tens of ms).
STUCK_WRITER_S = 0.5


def _consistent_read(seq: np.ndarray, copy: Callable[[], _T], what: str, timeout_s: float) -> _T:
    """``copy()`` taken while ``seq[0]`` stayed even and unchanged. Retries while the writer is alive (the sequence
    number moves); raises ShapeError when it stays at one odd value for ``timeout_s`` (a writer stopped mid-write)."""
    stuck_at, stuck_since = -1, 0.0
    while True:
        s1 = int(seq[0])
        if s1 % 2 == 0:
            value = copy()
            if int(seq[0]) == s1:
                return value
            continue  # the writer wrote while we copied: it is alive, take the next version
        now = time.monotonic()
        if s1 != stuck_at:
            stuck_at, stuck_since = s1, now
        elif now - stuck_since > timeout_s:
            raise ShapeError(
                f"{what}: no consistent read: the sequence number stayed odd ({s1}) for over {timeout_s} s, the "
                "writer stopped mid-write (is the real-time process alive?)"
            )


def open_segment(size: int, name: str | None) -> tuple[shared_memory.SharedMemory, bool]:
    """A new segment of ``size`` bytes (``name`` None; returns owner True) or the existing one called ``name``
    (owner False; ConfigError if it is smaller than ``size``)."""
    if name is None:
        return shared_memory.SharedMemory(create=True, size=size), True
    shm = shared_memory.SharedMemory(name=name)
    if shm.size < size:
        shm.close()
        raise ConfigError(f"shared memory {name!r} has {shm.size} bytes, expected at least {size}")
    return shm, False


def close_segment(shm: shared_memory.SharedMemory, owner: bool) -> None:
    """Detach from ``shm`` and, on the side that created it, remove it."""
    shm.close()
    if owner:
        with contextlib.suppress(FileNotFoundError):
            shm.unlink()


class SeqlockBlock:
    """``n_int`` int64 and ``n_float`` float64 values under one seqlock (int slot 0 is the sequence number).

    Args:
        n_int, n_float: payload sizes (the int payload excludes the sequence number).
        name: attach to this existing segment (None: create one).
    """

    def __init__(self, n_int: int, n_float: int, name: str | None = None) -> None:
        self.shm, self.owner = open_segment(8 * (1 + n_int + n_float), name)
        buf = self.shm.buf
        self._seq = np.ndarray((1,), dtype=np.int64, buffer=buf, offset=0)
        self.ints = np.ndarray((n_int,), dtype=np.int64, buffer=buf, offset=8)
        self.floats = np.ndarray((n_float,), dtype=np.float64, buffer=buf, offset=8 * (1 + n_int))
        if self.owner:
            self._seq[0] = 0
            self.ints[:] = 0
            self.floats[:] = 0.0

    @property
    def name(self) -> str:
        return self.shm.name

    def begin_write(self) -> None:
        self._seq[0] += 1  # odd: a write is in progress

    def end_write(self) -> None:
        self._seq[0] += 1  # even: consistent

    def read(self, timeout_s: float = STUCK_WRITER_S) -> tuple[np.ndarray, np.ndarray]:
        """A consistent copy of (ints, floats). Raises ShapeError if a write stays in progress for ``timeout_s``
        (a writer that died mid-write); a reader that was itself descheduled just retries."""
        return _consistent_read(self._seq, lambda: (self.ints.copy(), self.floats.copy()), "shared block", timeout_s)

    def close(self) -> None:
        """Detach (and remove the segment if this side created it)."""
        del self._seq, self.ints, self.floats
        close_segment(self.shm, self.owner)


class ByteSlot:
    """A byte payload of up to ``capacity`` bytes with a seqlock and a version counter.

    Layout: int64 sequence, int64 version, int64 length, then the bytes."""

    _HEADER = 24

    def __init__(self, capacity: int, name: str | None = None) -> None:
        self.shm, self.owner = open_segment(self._HEADER + int(capacity), name)
        self.capacity = self.shm.size - self._HEADER
        self._head = np.ndarray((3,), dtype=np.int64, buffer=self.shm.buf, offset=0)
        self._data = np.ndarray((self.capacity,), dtype=np.uint8, buffer=self.shm.buf, offset=self._HEADER)
        if self.owner:
            self._head[:] = 0

    @property
    def name(self) -> str:
        return self.shm.name

    @property
    def version(self) -> int:
        return int(self._head[1])

    def write(self, payload: bytes) -> bool:
        """Store ``payload`` (a new version); False if it exceeds the capacity (nothing written)."""
        n = len(payload)
        if n > self.capacity:
            return False
        self._head[0] += 1
        self._data[:n] = np.frombuffer(payload, dtype=np.uint8)
        self._head[2] = n
        self._head[1] += 1
        self._head[0] += 1
        return True

    def read(self, timeout_s: float = STUCK_WRITER_S) -> tuple[int, bytes]:
        """(version, payload) consistently; raises ShapeError if a write stays in progress for ``timeout_s``."""

        def copy() -> tuple[int, bytes]:
            n = int(self._head[2])
            return int(self._head[1]), self._data[: max(0, min(n, self.capacity))].tobytes()

        return _consistent_read(self._head, copy, "shared byte slot", timeout_s)

    def close(self) -> None:
        del self._head, self._data
        close_segment(self.shm, self.owner)
