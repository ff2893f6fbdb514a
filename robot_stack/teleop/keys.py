"""Episode keys (start / stop / discard / redo / quit) and jog keys from a terminal or a scripted queue.

A :class:`KeySource` yields single characters; :func:`episode_event` maps the episode keys to :class:`KeyEvent`
values, the other characters are left to a device (:class:`~robot_stack.teleop.keyboard.KeyboardJog`).

Episode keys: ``s`` start, ``e`` stop and label success, ``f`` stop and label failure, ``x`` discard,
``r`` redo (discard and start again), ``q`` quit. Hardware-free tests feed a :class:`QueueKeySource`.
"""

from __future__ import annotations

import enum
import logging
import queue
import sys
import threading
from collections.abc import Iterable
from typing import TextIO

log = logging.getLogger("robot_stack.teleop.keys")

__all__ = ["EPISODE_KEYS", "KeyEvent", "KeySource", "QueueKeySource", "StdinKeySource", "episode_event"]


class KeyEvent(str, enum.Enum):
    """What an operator asks the recording session to do."""

    START = "start"
    STOP_SUCCESS = "stop_success"
    STOP_FAILURE = "stop_failure"
    DISCARD = "discard"
    REDO = "redo"
    QUIT = "quit"


#: Character -> episode event.
EPISODE_KEYS: dict[str, KeyEvent] = {
    "s": KeyEvent.START,
    "e": KeyEvent.STOP_SUCCESS,
    "f": KeyEvent.STOP_FAILURE,
    "x": KeyEvent.DISCARD,
    "r": KeyEvent.REDO,
    "q": KeyEvent.QUIT,
}


def episode_event(key: str) -> KeyEvent | None:
    """The episode event of ``key``, or None for other keys (jog keys)."""
    return EPISODE_KEYS.get(key)


class KeySource:
    """Non-blocking source of key characters (thread-safe)."""

    def __init__(self) -> None:
        self._q: queue.Queue[str] = queue.Queue()
        self.closed = threading.Event()

    def put(self, keys: str | Iterable[str]) -> None:
        """Feed characters (what a terminal reader or a test does)."""
        for k in keys:
            self._q.put(k)

    def poll(self) -> list[str]:
        """Every character typed since the last poll, in order (never blocks)."""
        out = []
        while True:
            try:
                out.append(self._q.get_nowait())
            except queue.Empty:
                return out

    def start(self) -> None:  # noqa: B027 - optional hook
        """Begin reading the device. Idempotent."""

    def stop(self) -> None:
        self.closed.set()


class QueueKeySource(KeySource):
    """Keys fed by code (tests, GUIs, ROS services)."""


class StdinKeySource(KeySource):
    """Keys typed in a terminal: one line at a time (characters, then Enter), read by a daemon thread.

    Args:
        stream: text stream to read (default ``sys.stdin``); end of stream sends ``q`` (quit).
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__()
        self.stream = stream if stream is not None else sys.stdin
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="robot_stack-keys", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        for line in self.stream:
            if self.closed.is_set():
                return
            self.put(c for c in line if not c.isspace())
        self.put("q")
