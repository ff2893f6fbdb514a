"""``robot-stack up``: run a graph as separate processes without ``ros2 launch`` — start, monitor, restart, stop.

Each :class:`~robot_stack.graph.spec.NodeLaunch` becomes one child process (its own session, so a terminal's
Ctrl-C reaches the supervisor only, which then stops the children one by one in reverse start order: SIGINT, then
SIGTERM after ``stop_timeout_s``, then SIGKILL). ROS nodes get their name, namespace, parameter files, inline parameters
(written to a parameter file) and remappings as ``--ros-args``, exactly what ``launch_ros`` would pass. A child that
exits on its own is restarted after ``respawn_delay_s`` when ``respawn`` is set (at most ``max_restarts`` times), except
after exit code :data:`~robot_stack.graph.spec.CONFIG_ERROR_EXIT_CODE` (it refused its configuration: a restart
cannot help); when it is ``required`` the whole graph stops.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from robot_stack.errors import ConfigError
from robot_stack.graph.spec import CONFIG_ERROR_EXIT_CODE, PACKAGE_DIR, NodeLaunch

log = logging.getLogger("robot_stack.graph.supervisor")

__all__ = ["ChildStatus", "Supervisor"]


@dataclass(frozen=True)
class ChildStatus:
    """One child's state: pid (None when not running), starts so far, last exit code, whether it runs, and why the
    supervisor gave up on it (None while it may still run: it refused its configuration, or used up its restarts)."""

    name: str
    pid: int | None
    running: bool
    starts: int
    exit_code: int | None
    gave_up: str | None = None


def _program(name: str) -> str:
    """``python``/``python3`` -> this interpreter; a console script installed beside it (``robot-stack`` of this
    virtual environment, even when another one is first on PATH); else ``name`` as given."""
    if name in ("python", "python3"):
        return sys.executable
    if os.sep not in name:
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            return str(beside)
    return name


class _Child:
    def __init__(self, node: NodeLaunch) -> None:
        self.node = node
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.exit_code: int | None = None
        self.restart_at: float | None = None
        self.stopping = False  # exit expected (stop/kill by the supervisor's user): no respawn, not "required"
        self.gave_up: str | None = None  # why the node stays down for good (config refused, restarts used up)
        self.pump: threading.Thread | None = None


class Supervisor:
    """Runs ``nodes`` as child processes.

    Args:
        nodes: processes in start order (from :meth:`GraphSpec.resolve`).
        log_dir: each child's stdout+stderr is appended to ``<log_dir>/<name>.log`` (None = a temporary folder).
        echo: also copy every child's output line to this process' stderr, prefixed ``[name]``.
        env: extra environment for every child (e.g. ``ROS_DOMAIN_ID``).
        stop_timeout_s: how long each stop signal is given before the next, harder one.
    """

    def __init__(
        self,
        nodes: Sequence[NodeLaunch],
        log_dir: str | Path | None = None,
        echo: bool = True,
        env: Mapping[str, str] | None = None,
        stop_timeout_s: float = 5.0,
    ) -> None:
        if not nodes:
            raise ConfigError("Supervisor: the graph has no nodes")
        self._children = {n.name: _Child(n) for n in nodes}
        self.log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="robot-stack-up-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._params_dir = Path(tempfile.mkdtemp(prefix="robot-stack-params-"))
        self.echo = echo
        self.env = dict(env or {})
        self.stop_timeout_s = stop_timeout_s
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self.failure: str | None = None  # why the graph stopped on its own (a required node exited)

    # ------------------------------------------------------------------------------------------- children
    def _environment(self, node: NodeLaunch) -> dict[str, str]:
        env = {**os.environ, **self.env, **node.env, "PYTHONUNBUFFERED": "1"}
        if node.is_ros_node and PACKAGE_DIR.is_dir():  # importable without colcon
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_DIR), env.get("PYTHONPATH", "")) if p)
        return env

    def _argv(self, node: NodeLaunch) -> list[str]:
        inline = None
        if node.is_ros_node and node.parameters:
            inline = str(self._params_dir / f"{node.name}.yaml")
            Path(inline).write_text(yaml.safe_dump(node.inline_params_document(), sort_keys=False), encoding="utf-8")
        argv = node.argv(inline)
        return [_program(argv[0]), *argv[1:]]

    def _pump(self, name: str, stream: IO[bytes], sink: IO[bytes]) -> None:
        with sink:
            for line in iter(stream.readline, b""):
                sink.write(line)
                sink.flush()
                if self.echo:
                    sys.stderr.write(f"[{name}] {line.decode(errors='replace')}")

    def _spawn(self, child: _Child) -> None:
        argv = self._argv(child.node)
        sink = open(self.log_dir / f"{child.node.name}.log", "ab")  # noqa: SIM115 - closed by the pump thread
        sink.write(f"--- start {child.starts + 1}: {' '.join(argv)}\n".encode())
        try:
            proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self._environment(child.node),
                start_new_session=True,
            )
        except OSError as exc:
            sink.close()
            raise ConfigError(f"cannot start {child.node.name!r} ({argv[0]}): {exc}") from exc
        assert proc.stdout is not None
        child.proc, child.starts, child.exit_code, child.stopping = proc, child.starts + 1, None, False
        child.pump = threading.Thread(target=self._pump, args=(child.node.name, proc.stdout, sink), daemon=True)
        child.pump.start()
        log.info("started %s (pid %d): %s", child.node.name, proc.pid, " ".join(argv))

    def start(self, monitor: bool = True) -> None:
        """Start every child in order; with ``monitor``, a background thread applies the restart policy."""
        with self._lock:
            for child in self._children.values():
                if child.proc is None or child.proc.poll() is not None:
                    self._spawn(child)
        if monitor and self._monitor is None:
            self._monitor = threading.Thread(target=self._monitor_loop, name="robot-stack-up-monitor", daemon=True)
            self._monitor.start()

    def _monitor_loop(self) -> None:
        while not self._stop.wait(0.1):
            self.poll()

    def poll(self) -> None:
        """One monitoring step: notice exits, schedule and perform restarts, stop the graph when a required node
        died (sets :attr:`failure`)."""
        with self._lock:
            now = time.monotonic()
            for child in self._children.values():
                proc, node = child.proc, child.node
                if proc is not None and proc.poll() is not None and child.exit_code is None:
                    child.exit_code = proc.returncode
                    if child.stopping:
                        continue
                    log.warning("%s exited on its own with code %s", node.name, proc.returncode)
                    if node.required:
                        self.failure = f"required node {node.name!r} exited with code {proc.returncode}"
                        log.error("%s: stopping the graph", self.failure)
                        self._stop.set()
                        return
                    if proc.returncode == CONFIG_ERROR_EXIT_CODE:
                        child.gave_up = f"refused its configuration (exit code {proc.returncode})"
                        log.error(
                            "%s refused its configuration (exit code %d): not restarted; the reason is in %s",
                            node.name, proc.returncode, self.log_dir / f"{node.name}.log",
                        )  # fmt: skip
                    elif node.respawn and child.starts <= node.max_restarts:
                        child.restart_at = now + node.respawn_delay_s
                    elif node.respawn:
                        child.gave_up = f"gave up after {node.max_restarts} restarts (exit code {proc.returncode})"
                        log.error("%s: gave up after %d restarts", node.name, node.max_restarts)
                    else:
                        child.gave_up = f"exited with code {proc.returncode} (not respawned)"
                if child.restart_at is not None and now >= child.restart_at and not self._stop.is_set():
                    child.restart_at = None
                    self._spawn(child)

    def _signal_and_wait(self, children: Sequence[_Child], sig: int, timeout_s: float) -> list[_Child]:
        """Send ``sig`` to the children still running; return those still running after ``timeout_s``."""
        live = [c for c in children if c.proc is not None and c.proc.poll() is None]
        for c in live:
            c.stopping = True
            assert c.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(c.proc.pid, sig)
        deadline = time.monotonic() + timeout_s
        for c in live:
            assert c.proc is not None
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(0.0, deadline - time.monotonic()))
        return [c for c in live if c.proc is not None and c.proc.poll() is None]

    def _stop_children(self, children: Sequence[_Child], timeout_s: float | None = None) -> None:
        """Stop ``children`` one after the other, in the given order: SIGINT, then SIGTERM, then SIGKILL, each
        given ``timeout_s`` (so a node that shuts down gracefully, e.g. the executor decelerating, does so
        before the nodes it depends on go away)."""
        t = self.stop_timeout_s if timeout_s is None else timeout_s
        for child in children:
            left = self._signal_and_wait([child], signal.SIGINT, t)
            if left:
                log.warning("%s ignored SIGINT for %.1f s: SIGTERM", child.node.name, t)
                left = self._signal_and_wait(left, signal.SIGTERM, t)
            if left:
                log.error("%s ignored SIGTERM for %.1f s: SIGKILL", child.node.name, t)
                self._signal_and_wait(left, signal.SIGKILL, t)
            if child.proc is not None and child.exit_code is None:
                child.exit_code = child.proc.poll()
            if child.pump is not None:
                child.pump.join(2.0)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop every child in reverse start order (SIGINT → SIGTERM → SIGKILL) and the monitor. Idempotent."""
        self._stop.set()
        monitor, self._monitor = self._monitor, None
        if monitor is not None:
            monitor.join(2.0)
        with self._lock:
            children = list(self._children.values())[::-1]
            for c in children:
                c.restart_at = None
            self._stop_children(children, timeout_s)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one child as a fault would (its restart policy applies, as for a crash)."""
        child = self._child(name)
        if child.proc is not None and child.proc.poll() is None:
            os.killpg(child.proc.pid, sig)
            child.proc.wait(self.stop_timeout_s)

    def stop_node(self, name: str) -> None:
        """Stop one child deliberately (no respawn, not counted as a failure)."""
        with self._lock:
            child = self._child(name)
            child.restart_at = None
            self._stop_children([child])

    def restart(self, name: str) -> None:
        """Stop one child if it runs, then start it again."""
        self.stop_node(name)
        with self._lock:
            self._spawn(self._child(name))

    def _child(self, name: str) -> _Child:
        if name not in self._children:
            raise ConfigError(f"no node {name!r} in the graph; nodes: {list(self._children)}")
        return self._children[name]

    def status(self) -> dict[str, ChildStatus]:
        """Every child's state."""
        with self._lock:
            out = {}
            for name, c in self._children.items():
                running = c.proc is not None and c.proc.poll() is None
                code = (
                    c.exit_code if c.exit_code is not None else (None if running or c.proc is None else c.proc.poll())
                )
                pid = c.proc.pid if running and c.proc else None
                out[name] = ChildStatus(name, pid, running, c.starts, code, c.gave_up)
            return out

    @property
    def given_up(self) -> dict[str, str]:
        """Nodes that stay down for good, with why (the graph ran without them)."""
        with self._lock:
            return {name: c.gave_up for name, c in self._children.items() if c.gave_up is not None}

    def summary(self) -> str:
        """A table of every node: starts, restarts, last exit code and how it ended (printed when ``up`` exits)."""
        rows = [f"{'node':<18}{'starts':>7}{'restarts':>9}{'exit':>6}  state"]
        for s in self.status().values():
            state = "running" if s.running else (f"GAVE UP: {s.gave_up}" if s.gave_up else "stopped")
            code = "-" if s.exit_code is None else str(s.exit_code)
            rows.append(f"{s.name:<18}{s.starts:>7}{max(0, s.starts - 1):>9}{code:>6}  {state}")
        if self.failure:
            rows.append(f"graph stopped: {self.failure}")
        return "\n".join(rows)

    def log_text(self, name: str) -> str:
        """Everything one child printed so far (all its starts)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    # ------------------------------------------------------------------------------------------ foreground
    def run(self, duration_s: float | None = None) -> int:
        """Start the graph and supervise it until SIGINT/SIGTERM, ``duration_s`` or a required node's exit;
        then stop it. Returns 0, or 1 when a required node exited on its own or the supervisor gave up on any node
        (the graph ran degraded: a configuration refused, restarts used up)."""
        previous: dict[int, Any] = {}

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("received %s: stopping the graph", signal.Signals(signum).name)
            self._stop.set()

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, on_signal)
        try:
            self.start(monitor=False)
            deadline = None if duration_s is None else time.monotonic() + duration_s
            while not self._stop.wait(0.1):
                self.poll()
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("duration %.1f s reached: stopping the graph", duration_s)
                    break
        finally:
            self.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 1 if self.failure or self.given_up else 0

    def __enter__(self) -> Supervisor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
