"""Keys straight from the terminal, no Enter: raw (non-canonical, no echo) mode, key-down and key-up.

Terminals send characters, not key events. :class:`TerminalKeys` turns on the kitty keyboard protocol's event
reports (``CSI > 3 u``: press, repeat and release as ``CSI code ; mods : event u``), which kitty, foot, WezTerm,
Ghostty and recent Alacritty/iTerm2 honour; a terminal that ignores it keeps sending plain characters, and a key is
then taken as held while its auto-repeat keeps coming: released ``release_after_s`` after its last character (the
first character waits ``first_repeat_s``, the usual auto-repeat delay). Ctrl-C still interrupts (signals stay on).
The terminal is restored on :meth:`stop`, on exit and on errors.

Every key-down is also queued as a character (:class:`~robot_stack.teleop.keys.KeySource`), so episode keys work as
before; :meth:`held` says which keys are down now (the keyboard jog moves while they are).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from robot_stack.errors import ConfigError
from robot_stack.teleop.keys import KeySource

__all__ = ["KITTY_DISABLE", "KITTY_ENABLE", "KeyParser", "TerminalKeys"]

log = logging.getLogger("robot_stack.teleop.terminal")

#: Push kitty keyboard flags 1 (disambiguate) | 2 (report event types); pop them again.
KITTY_ENABLE = b"\x1b[>3u"
KITTY_DISABLE = b"\x1b[<u"

_KITTY_KEY = re.compile(rb"\x1b\[(\d+)(?::\d+)*(?:;(\d+)(?::(\d+))?)?u")
_CSI_ANY = re.compile(rb"\x1b\[[0-9;:?<>=]*[ -/]*[@-~]")


class KeyParser:
    """Bytes from the terminal -> ``(key, "down" | "up")`` events, with the held-key state.

    Args:
        clock: monotonic seconds.
        release_after_s: without kitty events, a held key is released this long after its last auto-repeat.
        first_repeat_s: ... and this long after its first character (terminals wait ~0.5 s before repeating).
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        release_after_s: float = 0.12,
        first_repeat_s: float = 0.6,
    ) -> None:
        self.clock = clock
        self.release_after_s = float(release_after_s)
        self.first_repeat_s = float(first_repeat_s)
        self.kitty = False  # the terminal sent a kitty key event: releases are real
        self._held: dict[str, tuple[float, bool]] = {}  # key -> (last seen, repeated since down)
        self._buf = b""

    def feed(self, data: bytes) -> list[tuple[str, str]]:
        """Parse ``data``; return the key events in it (and releases that are due)."""
        events = self.expire()
        self._buf += data
        buf = self._buf
        i = 0
        while i < len(buf):
            if buf[i : i + 1] == b"\x1b":
                m = _KITTY_KEY.match(buf, i)
                if m:
                    self.kitty = True
                    code = int(m.group(1))
                    kind = int(m.group(3) or 1)  # 1 press, 2 repeat, 3 release
                    key = chr(code) if 32 <= code < 127 else f"<{code}>"
                    events.extend(self._event(key, "up" if kind == 3 else "down", kind == 2))
                    i = m.end()
                    continue
                other = _CSI_ANY.match(buf, i)
                if other:  # another escape sequence (arrows, focus, the terminal's flag reply): ignored
                    i = other.end()
                    continue
                rest = buf[i:]
                if rest == b"\x1b" or (rest.startswith(b"\x1b[") and not re.search(rb"[@-~]", rest[2:])):
                    break  # an incomplete sequence: wait for the rest
                i += 1  # a lone Escape
                continue
            ch = buf[i : i + 1].decode("latin-1")
            i += 1
            if ch.isprintable() and not ch.isspace():
                events.extend(self._event(ch, "down", ch in self._held))
        self._buf = buf[i:]
        return events

    def _event(self, key: str, kind: str, repeat: bool) -> list[tuple[str, str]]:
        now = self.clock()
        if kind == "up":
            return [(key, "up")] if self._held.pop(key, None) is not None else []
        if key in self._held:
            self._held[key] = (now, True)
            return []  # an auto-repeat of a held key: no new key-down
        self._held[key] = (now, repeat)
        return [(key, "down")]

    def expire(self) -> list[tuple[str, str]]:
        """Releases inferred from silence (plain-character terminals only)."""
        if self.kitty:
            return []
        now = self.clock()
        out = []
        for key, (last, repeated) in list(self._held.items()):
            if now - last >= (self.release_after_s if repeated else self.first_repeat_s):
                del self._held[key]
                out.append((key, "up"))
        return out

    def held(self) -> set[str]:
        return set(self._held)


class TerminalKeys(KeySource):
    """Key-down / key-up from a terminal in raw mode (see the module docstring), read by a daemon thread.

    Args:
        fd: the terminal's file descriptor (default: stdin when it is a terminal, else ``/dev/tty``).
        parser: the byte parser (tests pass one with a fake clock).
        on_event: called with ``(key, "down" | "up")`` for every event (e.g. to show it).
    """

    def __init__(
        self,
        fd: int | None = None,
        parser: KeyParser | None = None,
        on_event: Callable[[str, str], None] | None = None,
    ) -> None:
        super().__init__()
        self._own_fd = False
        if fd is None:
            if sys.stdin is not None and sys.stdin.isatty():
                fd = sys.stdin.fileno()
            else:
                try:
                    fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
                except OSError as exc:
                    raise ConfigError(
                        "keyboard teleop needs a terminal (stdin is not one and /dev/tty cannot be opened); run "
                        "`robot-stack record --teleop keyboard --live` in a terminal"
                    ) from exc
                self._own_fd = True
        self.fd = fd
        self.parser = parser or KeyParser()
        self.on_event = on_event
        self._lock = threading.Lock()
        self._saved: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Raw mode on, kitty key events asked for, reader thread started. Idempotent."""
        if self._thread is not None:
            return
        import termios

        try:
            self._saved = termios.tcgetattr(self.fd)
        except termios.error as exc:
            raise ConfigError(f"fd {self.fd} is not a terminal: {exc}") from exc
        mode = termios.tcgetattr(self.fd)
        mode[3] &= ~(termios.ICANON | termios.ECHO)  # lflags: no line buffering, no echo; ISIG kept (Ctrl-C)
        mode[6][termios.VMIN] = 0
        mode[6][termios.VTIME] = 0
        termios.tcsetattr(self.fd, termios.TCSANOW, mode)
        atexit.register(self._restore)
        with contextlib.suppress(OSError):
            os.write(self.fd, KITTY_ENABLE)
        self._thread = threading.Thread(target=self._run, name="robot_stack-terminal-keys", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self.closed.is_set():
                ready, _, _ = select.select([self.fd], [], [], 0.02)
                data = os.read(self.fd, 1024) if ready else b""
                if ready and not data:
                    self.put("q")  # end of input
                    return
                with self._lock:
                    events = self.parser.feed(data) if data else self.parser.expire()
                for key, kind in events:
                    if kind == "down":
                        self.put(key)
                    if self.on_event is not None:
                        self.on_event(key, kind)
        except OSError as exc:
            log.warning("terminal keys stopped: %s", exc)
            self.put("q")

    def held(self) -> set[str]:
        """The keys down now."""
        with self._lock:
            self.parser.expire()
            return self.parser.held()

    def _restore(self) -> None:
        if self._saved is None:
            return
        import termios

        with contextlib.suppress(OSError):
            os.write(self.fd, KITTY_DISABLE)
        with contextlib.suppress(termios.error, OSError):
            termios.tcsetattr(self.fd, termios.TCSANOW, self._saved)
        self._saved = None

    def stop(self) -> None:
        """Reader stopped, terminal restored. Idempotent."""
        super().stop()
        if self._thread is not None:
            self._thread.join(1.0)
        self._restore()
        if self._own_fd:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self._own_fd = False
