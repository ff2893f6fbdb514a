"""Keyboard teleop an operator can use: raw terminal mode, key-down/key-up without Enter, tested through a pty."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from robot_stack.teleop.terminal import KITTY_DISABLE, KITTY_ENABLE, KeyParser, TerminalKeys


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def kitty(key: str, event: int) -> bytes:
    """kitty keyboard protocol: press 1, repeat 2, release 3."""
    return f"\x1b[{ord(key)};1:{event}u".encode()


def test_kitty_events_give_real_key_down_and_key_up() -> None:
    p = KeyParser(_Clock())
    assert p.feed(kitty("i", 1)) == [("i", "down")]
    assert p.feed(kitty("i", 2) + kitty("i", 2)) == []  # auto-repeat is not a new press
    assert p.held() == {"i"}
    assert p.feed(b"\x1b[?1u" + kitty("j", 1)) == [("j", "down")]  # the flags reply is skipped
    assert p.feed(kitty("i", 3)) == [("i", "up")]
    assert p.held() == {"j"}
    partial = kitty("j", 3)
    assert p.feed(partial[:4]) == [] and p.feed(partial[4:]) == [("j", "up")]  # split across reads
    assert p.expire() == []  # with kitty events nothing is guessed


def test_plain_characters_hold_while_auto_repeat_comes_and_release_after_silence() -> None:
    clock = _Clock()
    p = KeyParser(clock, release_after_s=0.12, first_repeat_s=0.6)
    assert p.feed(b"i") == [("i", "down")]
    clock.t = 0.5
    assert p.expire() == []  # waiting for the auto-repeat to start
    for _ in range(10):  # auto-repeat every 33 ms
        clock.t += 0.033
        assert p.feed(b"i") == []
    assert p.held() == {"i"}
    clock.t += 0.2
    assert p.expire() == [("i", "up")] and p.held() == set()
    assert p.feed(b"s") == [("s", "down")]
    clock.t += 0.7
    assert p.feed(b"") == [("s", "up")]  # a single press is released after the repeat delay


def test_terminal_keys_use_raw_mode_and_restore_it() -> None:
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        keys = TerminalKeys(fd=slave)
        keys.start()
        raw = termios.tcgetattr(slave)
        assert not raw[3] & termios.ICANON and not raw[3] & termios.ECHO and raw[3] & termios.ISIG
        assert os.read(master, 64).startswith(KITTY_ENABLE)
        os.write(master, kitty("u", 1))
        deadline = time.monotonic() + 5
        while "u" not in keys.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keys.held() == {"u"} and keys.poll() == ["u"]
        os.write(master, kitty("u", 3))
        while keys.held() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert keys.held() == set()
        keys.stop()
        assert termios.tcgetattr(slave)[3] == before[3]  # restored
        assert KITTY_DISABLE in os.read(master, 64)
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.realtime
def test_live_recording_jogs_while_a_key_is_held_through_a_pty(tmp_path: Path) -> None:
    """``robot-stack record --teleop keyboard --live`` in a pseudo-terminal: keys without Enter, the arm moves
    while ``i`` is held and stops at its key-up; a viewer recording of the session is saved."""
    out, rrd = tmp_path / "jog", tmp_path / "jog.rrd"
    master, slave = pty.openpty()
    cmd = [sys.executable, "-m", "robot_stack.cli", "record", "--teleop", "keyboard", "--live", "--out", str(out)]
    cmd += ["--cameras", "front", "--width", "160", "--height", "120", "--episodes", "1", "--save", str(rrd)]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=subprocess.PIPE, stderr=slave, close_fds=True)
    os.close(slave)
    screen = bytearray()

    def drain() -> None:  # the terminal's reader: a full pty buffer would block the program's stderr
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        # raw mode is on (and the kitty events asked for) once the cell is built and the loop about to run
        while KITTY_ENABLE not in screen and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert b"no Enter needed" in screen and KITTY_ENABLE in screen, bytes(screen)[-2000:]
        time.sleep(0.5)
        os.write(master, b"s")  # start: a plain character, no Enter
        time.sleep(1.0)
        os.write(master, kitty("i", 1))  # +x held ...
        time.sleep(1.5)
        os.write(master, kitty("i", 3))  # ... released
        time.sleep(1.5)
        os.write(master, b"e")  # stop, success
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert proc.returncode == 0
    summary = json.loads(stdout.decode().strip().splitlines()[-1])
    assert summary["committed"] == [0], summary
    from robot_stack.dataset.loader import load_dataset

    ep = load_dataset(out).load_episode(0, rgb=False, depth=False)
    x = ep.ee_pose[:, 0].astype(np.float64)
    fps = ep.fps
    held_end = int(round(2.5 * fps))  # ~1 s before the press + 1.5 s held (frames since start)
    assert x[min(held_end + 3, len(x) - 1)] - x[0] > 0.03  # moved forward while held (0.05 m/s for 1.5 s)
    tail = x[-int(0.8 * fps) :]
    assert np.ptp(tail) < 0.004, tail  # stopped after the key-up
    from robot_stack.viewer.readback import recording_contents

    entities = recording_contents(rrd)
    assert "/world/cameras/front/rgb" in entities and "time" in entities["/world/cameras/front/rgb"].timelines
