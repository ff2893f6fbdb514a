"""CLI polish: an example in every --help, defaults shown, --version, -v/-q anywhere; quiet logs folded per cause."""

from __future__ import annotations

import argparse
import io
import logging
import subprocess
import sys

import pytest

from robot_stack import __version__
from robot_stack.cli import build_parser, iter_parsers, main, split_verbosity
from robot_stack.console import FoldByCause, OperatorHandler, Progress, cause_of, format_eta, summary_table


def _leaf_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    parsers = list(iter_parsers(build_parser()))
    has_sub = {
        name
        for name, p in parsers
        if any(isinstance(a, argparse._SubParsersAction) for a in p._actions)  # noqa: SLF001
    }
    return [(name, p) for name, p in parsers if name not in has_sub]


def test_every_command_help_has_an_example_and_shows_defaults() -> None:
    leaves = _leaf_parsers()
    assert len(leaves) >= 17  # doctor, demo, serve, ping, train, train-demo, evaluate, keys generate, compile, ...
    for name, parser in leaves:
        text = parser.format_help()
        assert "example" in (parser.epilog or ""), f"{name} --help has no example"
        assert f"{name} " in text or name in text, f"{name}: its example does not run the command"
        for action in parser._actions:  # noqa: SLF001
            d = action.default
            if not action.option_strings or d in (None, False, [], argparse.SUPPRESS) or action.help is None:
                continue
            assert str(d) in text, f"{name}: default {d!r} of {action.option_strings} not shown in --help"


def test_version_and_top_level_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "robot_stack.cli", "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == f"robot-stack {__version__}"
    assert "robot-stack doctor" in build_parser().format_help()


def test_verbosity_flags_anywhere_on_the_line() -> None:
    assert split_verbosity(["demo", "--episodes", "2", "-v"]) == (["demo", "--episodes", "2"], 1)
    assert split_verbosity(["-q", "bench", "ik"]) == (["bench", "ik"], -1)
    assert split_verbosity(["up", "sim", "--quiet"]) == (["up", "sim"], -1)
    assert split_verbosity(["demo", "-v", "-v"]) == (["demo"], 2)
    assert split_verbosity(["x", "--", "-v"]) == (["x", "--", "-v"], 0)  # after -- it is an argument
    # through main: `-q` after the subcommand makes info lines disappear, `-v` shows debug
    root = logging.getLogger()
    assert main(["keys", "generate", "/proc/nope", "--name", "x", "-q"]) == 1
    assert root.level == logging.WARNING
    assert main(["-v", "keys", "generate", "/proc/nope", "--name", "x"]) == 1
    assert root.level == logging.DEBUG


def test_calibration_hint_names_the_cli_flag_not_a_python_call(tmp_path) -> None:
    import datetime as dt

    from robot_stack.calibration.store import load_calibration, save_calibration
    from robot_stack.errors import CalibrationError

    cal = load_calibration("sim_tabletop", "front")
    old = type(cal)(**{**cal.__dict__, "created": cal.created - dt.timedelta(days=5000)})
    save_calibration(old, tmp_path)
    with pytest.raises(CalibrationError) as info:
        load_calibration("sim_tabletop", "front", tmp_path)
    text = str(info.value)
    assert "--allow-stale" in text and "robot-stack calibrate" in text
    assert "allow_stale=True" not in text


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_repeated_warnings_fold_per_cause_at_most_one_line_per_second() -> None:
    clock = _Clock()
    handler = OperatorHandler(1.0, clock)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    buf = io.StringIO()
    logger = logging.getLogger("test.operator.fold")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    old_stderr, sys.stderr = sys.stderr, buf
    try:
        for i in range(40):  # 5 s of per-cycle timeouts at 8 Hz, request ids all different
            logger.warning("no reply from policy server within 100 ms for infer request %d", 1000 + i)
            if i % 8 == 0:
                logger.warning("camera 'front' frame %d is late", i)
            clock.t += 0.125
        logger.info("episode done")
        handler.close()
    finally:
        sys.stderr = old_stderr
        logger.removeHandler(handler)
    lines = buf.getvalue().splitlines()
    timeouts = [line for line in lines if "no reply" in line]
    assert 5 <= len(timeouts) <= 6, lines  # one per second, not 50
    assert "(repeated 7 more times in the last 1.0 s)" in timeouts[1]
    counted = sum(int(line.split("repeated ")[1].split()[0]) for line in timeouts if "repeated" in line)
    assert counted + len(timeouts) == 40  # nothing lost: every occurrence is a line or counted in one
    assert sum("late" in line for line in lines) == 5  # another cause, its own budget (1 per second)
    assert lines[-1].endswith("episode done") or "episode done" in "\n".join(lines)


def test_cause_masks_numbers_and_keeps_loggers_apart() -> None:
    a = logging.LogRecord("a", logging.WARNING, "", 0, "request %d late by %.1f ms", (3, 2.5), None)
    b = logging.LogRecord("a", logging.WARNING, "", 0, "request 4 late by 7.5 ms", None, None)
    c = logging.LogRecord("b", logging.WARNING, "", 0, "request %d late by %.1f ms", (3, 2.5), None)
    assert cause_of(a) == ("a", logging.WARNING, "request %d late by %.#f ms".replace("%.#f", "%.#f"))
    assert cause_of(b) == ("a", logging.WARNING, "request # late by # ms")
    assert cause_of(a) != cause_of(c)
    f = FoldByCause(1.0, _Clock())
    assert f.filter(b) and not f.filter(
        logging.LogRecord("a", logging.WARNING, "", 0, "request 5 late by 1 ms", None, None)
    )


def test_progress_plain_lines_with_k_of_n_and_eta() -> None:
    clock = _Clock()
    out = io.StringIO()
    with Progress(4, "record", "episodes", stream=out, live=False, every_s=5.0, clock=clock) as bar:
        for _ in range(4):
            clock.t += 3.0
            bar.advance(status="success 1/1")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("record: 1/4 episodes (25 %), 3 s elapsed, ETA 9 s")
    assert lines[-1].startswith("record: 4/4 episodes (100 %), 12 s elapsed, ETA 0 s")
    assert len(lines) == 3  # at 3 s, at 9 s (>= 5 s later), and the last one
    assert format_eta(185) == "3 min 05 s" and format_eta(None) == "?"


def test_progress_bar_on_a_terminal_draws_k_of_n() -> None:
    import os
    import pty

    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as tty, Progress(3, "train", "epochs", stream=tty, live=True) as bar:
        assert bar.live
        for _ in range(3):
            bar.advance()
    data = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
        if b"3/3" in data:
            break
    os.close(master)
    assert b"train" in data and b"3/3" in data


def test_summary_table_keeps_brackets_and_aligns_numbers() -> None:
    text = summary_table("t", ["name", "n"], [("pip install 'robot-stack[gpu]'", 3), ("b", 12)])
    assert "robot-stack[gpu]" in text
    assert "│  3 │" in text or " 3 │" in text


def test_allow_stale_and_endpoint_are_flags_of_the_stack_commands() -> None:
    from robot_stack.demo.loop import demo_config
    from robot_stack.stack.cli import stack_overrides

    args = build_parser().parse_args(
        ["demo", "--allow-stale", "--endpoint", "ws://gpu-box:8000", "--set", "control.rate_hz=1000"]
    )
    assert stack_overrides(args) == [
        "control.rate_hz=1000",
        "calibration.allow_stale=true",
        "policy.endpoint=ws://gpu-box:8000",
    ]
    config = demo_config("demo", stack_overrides(args))
    assert config.calibration.allow_stale and config.policy.endpoint == "ws://gpu-box:8000"
    assert config.control.rate_hz == 1000


def test_the_demo_runs_the_vla_unless_a_reach_only_flag_asks_for_the_reach_policies() -> None:
    """The VLA met its success floor (issue 14), so ``demo`` serves it by default; ``--manifest``,
    ``--action-head``, ``--robot`` and ``--endpoint`` configure the reach preset's cell and select it; an explicit
    ``--policy`` always wins."""
    from robot_stack.demo.cli import default_policy

    def policy(*argv: str) -> str:
        return default_policy(build_parser().parse_args(["demo", *argv]))

    assert policy() == "vla"
    assert policy("--task", "touch the blue cylinder") == "vla"
    assert policy("--policy", "reach") == "reach"
    for flags in (["--manifest", "m.yaml"], ["--action-head", "latent_vq"], ["--robot", "so101"], ["--endpoint", "x"]):
        assert policy(*flags) == "reach", flags
    assert policy("--policy", "vla", "--manifest", "my-vla.yaml") == "vla"
