"""The robot-side policy cycle, independent of what drives it (demo, ROS node, hardware-in-the-loop harness).

One cycle: capture every camera → guard against stale data → base-frame XYZ (calibration) → ask the policy server
→ decode the action chunk into a timestamped joint trajectory → hand it to the executor. A cycle that cannot produce
a trustworthy trajectory produces none: the executor keeps following what it has, and its watchdog brings the arm
to a hold when that runs out. No action is ever computed from stale data.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.calibration.projection import DepthProjector
from robot_stack.cameras.base import Camera
from robot_stack.clock import Clock
from robot_stack.control.executor import Executor
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.decoders.base import Decoder
from robot_stack.errors import CameraError, RobotStackError, TransportError
from robot_stack.metrics import StageTimes
from robot_stack.robots.base import Robot
from robot_stack.transport.client import PolicyClient
from robot_stack.types import ActionChunk, Frame, JointTrajectory, Observation

log = logging.getLogger("robot_stack.runtime")

#: Name of the model output that carries the action chunk, per action head (manifest ``action_head``).
ACTION_OUTPUTS = {"continuous": "actions", "latent_vq": "tokens", "binned": "bins", "motion_tracks": "tracks"}


@dataclass(frozen=True)
class GuardConfig:
    """When a camera frame is too untrustworthy to act on.

    Attributes:
        max_age_s: a frame captured longer ago than this (robot clock) is late.
        min_valid_depth_fraction: fewer valid depth pixels than this fraction means the depth stream failed
            (e.g. all-zero depth).
        max_identical_frames: this many consecutive identical frames means the stream is frozen. Frames are identical
            when they repeat the sequence number or the capture time (the driver delivered nothing new) or, with
            ``compare_pixels``, the exact pixels.
        compare_pixels: also treat pixel-identical frames as repeats. Right for real sensors, whose noise makes two
            identical frames impossible; wrong for a noise-free simulator looking at a still scene.
    """

    max_age_s: float = 0.25
    min_valid_depth_fraction: float = 0.05
    max_identical_frames: int = 2
    compare_pixels: bool = False


class ObservationGuard:
    """Detects late, frozen and depth-less frames, per camera; counts every rejection by reason."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self.rejections: Counter[str] = Counter()
        self._last: dict[str, tuple[int, int, int]] = {}  # camera -> (seq, t_capture_ns, pixel fingerprint)
        self._repeats: dict[str, int] = {}

    @staticmethod
    def _fingerprint(frame: Frame) -> int:
        # a sparse sample of both images is enough to tell a frozen stream from a live one
        return hash((frame.color[::37, ::41].tobytes(), frame.depth[::37, ::41].tobytes()))

    def check(self, frame: Frame, now_ns: int) -> str | None:
        """Return why ``frame`` must not be acted on (``"late"``, ``"frozen"``, ``"no_depth"``), or None."""
        cfg = self.config
        key = (frame.seq, frame.t_capture_ns, self._fingerprint(frame) if cfg.compare_pixels else 0)
        previous = self._last.get(frame.camera_id)
        self._last[frame.camera_id] = key
        same = previous is not None and (
            key[0] == previous[0] or key[1] == previous[1] or (cfg.compare_pixels and key[2] == previous[2])
        )
        self._repeats[frame.camera_id] = self._repeats.get(frame.camera_id, 1) + 1 if same else 1
        reason = None
        if now_ns - frame.t_capture_ns > cfg.max_age_s * 1e9:
            reason = "late"
        elif self._repeats[frame.camera_id] >= cfg.max_identical_frames:
            reason = "frozen"
        elif np.count_nonzero(frame.depth) < cfg.min_valid_depth_fraction * frame.depth.size:
            reason = "no_depth"
        if reason is not None:
            self.rejections[reason] += 1
        return reason


@dataclass(frozen=True)
class CycleResult:
    """Outcome of one policy cycle.

    Attributes:
        outcome: ``"ok"`` or why no trajectory was produced: ``"stale:<late|frozen|no_depth>"``,
            ``"camera"``, ``"transport"``, ``"decode"``, ``"rejected"`` (executor refused the trajectory).
        detail: human-readable reason (empty when ok).
        observation: what the policy saw (None if capture failed).
        chunk: what the policy answered (None if no answer).
        trajectory: what went to the executor (None unless ``outcome == "ok"``).
        infer_ms: server-side model time of this cycle, ms (0 without an answer).
    """

    outcome: str
    detail: str = ""
    observation: Observation | None = None
    chunk: ActionChunk | None = None
    trajectory: JointTrajectory | None = None
    infer_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


@dataclass(frozen=True)
class _Capture:
    """One captured observation, before the stale-data guard: frames, base-frame views, the robot state read
    right after the frames, and how long capturing took (s). ``error`` is set instead when a camera failed."""

    frames: tuple[Frame, ...] = ()
    views: tuple[Any, ...] = ()
    state: Any = None
    duration_s: float = 0.0
    error: CameraError | None = None


class _Prefetch:
    """One background capture of the next observation, started at a given time (or earlier, on :meth:`take`)."""

    def __init__(self, capture: Any, delay_s: float) -> None:
        self._capture = capture
        self._go = threading.Event()
        self._delay_s = max(delay_s, 0.0)
        self.result: _Capture | None = None
        self._thread = threading.Thread(target=self._run, name="policy-cycle-prefetch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._go.wait(self._delay_s)
        self.result = self._capture()

    def take(self, timeout_s: float = 5.0) -> _Capture | None:
        """Start the capture now if it has not started, wait for it; None if it did not finish in time."""
        self._go.set()
        self._thread.join(timeout_s)
        return None if self._thread.is_alive() else self.result


class PolicyCycle:
    """Runs robot-side policy cycles against one executor.

    Args:
        cameras: the cameras whose frames the policy needs, each paired with its calibrated projector.
        robot: proprioception source.
        client: connection to the policy server.
        decoder: turns the chunk into a joint trajectory (chosen from the manifest's action space/head).
        executor: receives the trajectories.
        scheduler: optional chunk scheduler in front of the executor (latency compensation, splice/ensemble
            blending); without it trajectories go straight to ``executor.set_trajectory``.
        clock: the process clock (frame ages are measured on it).
        times: per-stage latency sink (capture, xyz, serialize, network, server_queue, inference, round_trip,
            decode, loop_total, overhead_beyond_inference).
        task: instruction text sent with every observation.
        guard: stale-data detector (default :class:`ObservationGuard`).
        timeout_s: per-request deadline for the server.
        pipeline_period_s: the caller's cycle period (s). When set and a cycle is expected to take longer than
            this (slow model, slow network), the next observation is captured in a background thread while the
            request is in flight, timed to be ready when the reply is due (LeRobot-async style: still one request
            in flight, but capture and projection no longer add to the cycle). A prefetched observation older
            than half the guard's ``max_age_s`` when the next cycle starts is discarded and a fresh one captured;
            every observation still passes the stale-data guard at the time it is used. None = synchronous.
    """

    def __init__(
        self,
        cameras: Sequence[tuple[Camera, DepthProjector]],
        robot: Robot,
        client: PolicyClient,
        decoder: Decoder,
        executor: Executor,
        clock: Clock,
        times: StageTimes | None = None,
        task: str = "",
        guard: ObservationGuard | None = None,
        timeout_s: float | None = None,
        scheduler: ChunkScheduler | None = None,
        pipeline_period_s: float | None = None,
    ) -> None:
        self.cameras = list(cameras)
        self.robot = robot
        self.client = client
        self.decoder = decoder
        self.executor = executor
        self.clock = clock
        self.times = times if times is not None else StageTimes()
        self.task = task
        self.guard = guard if guard is not None else ObservationGuard()
        self.timeout_s = timeout_s
        self.scheduler = scheduler
        self.outcomes: Counter[str] = Counter()
        self.pipeline_period_s = pipeline_period_s
        self.prefetch_counts: Counter[str] = Counter()  # used, discarded_old, failed
        self._prefetch: _Prefetch | None = None
        self._capture_est_s = 0.0  # running estimates (s): capture + projection, send -> trajectory handed over
        self._reply_est_s = 0.0

    def _capture(self) -> _Capture:
        """Capture every camera, project to base-frame XYZ, read the robot state (in this order)."""
        t0 = time.perf_counter()
        try:
            with self.times.measure("capture"):
                frames = tuple(camera.read() for camera, _ in self.cameras)
        except CameraError as exc:
            return _Capture(error=exc, duration_s=time.perf_counter() - t0)
        with self.times.measure("xyz"):
            views = tuple(projector.observe(frame) for frame, (_, projector) in zip(frames, self.cameras, strict=True))
        state = self.robot.read_state()
        return _Capture(frames, views, state, time.perf_counter() - t0)

    def _next_capture(self) -> _Capture:
        """The prefetched observation if one is ready and young enough, else a capture made now."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            got = prefetch.take()
            if got is None or got.error is not None:
                self.prefetch_counts["failed"] += 1
            else:
                age_s = (self.clock.now_ns() - min(f.t_capture_ns for f in got.frames)) / 1e9
                if age_s <= 0.5 * self.guard.config.max_age_s:
                    self.prefetch_counts["used"] += 1
                    return got
                self.prefetch_counts["discarded_old"] += 1
                log.info("prefetched observation discarded: %.0f ms old when the cycle started", age_s * 1e3)
        return self._capture()

    def _start_prefetch(self) -> None:
        """Schedule the next capture to be ready when this cycle's reply is due (only if cycles are slow)."""
        period = self.pipeline_period_s
        if period is None or self._reply_est_s <= 0.0:
            return
        if self._capture_est_s + self._reply_est_s <= period:
            return  # the caller waits between cycles anyway: a capture at its next start is fresher
        self._prefetch = _Prefetch(self._capture, self._reply_est_s - self._capture_est_s)

    @staticmethod
    def _ema(old: float, new: float) -> float:
        return new if old <= 0.0 else 0.5 * old + 0.5 * new

    def close(self) -> None:
        """Wait for a background capture still in progress (call before stopping the cameras)."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.take()

    def _finish(self, result: CycleResult, step: int) -> CycleResult:
        self.outcomes[result.outcome] += 1
        if not result.ok:
            log.warning("cycle %d: no new trajectory (%s): %s", step, result.outcome, result.detail)
        return result

    def run(self, meta: Mapping[str, Any] | None = None, step: int = 0) -> CycleResult:
        """One cycle; never raises for bad data, a dead server or an undecodable answer (see ``outcome``)."""
        t_loop = time.perf_counter()
        captured = self._next_capture()
        if captured.error is not None:
            return self._finish(CycleResult("camera", str(captured.error)), step)
        frames = captured.frames
        t_capture = time.perf_counter() - t_loop
        self._capture_est_s = self._ema(self._capture_est_s, captured.duration_s)
        now = self.clock.now_ns()
        for frame in frames:
            reason = self.guard.check(frame, now)
            if reason is not None:
                age_ms = (now - frame.t_capture_ns) / 1e6
                detail = f"camera {frame.camera_id!r} frame {frame.seq} is {reason} (age {age_ms:.0f} ms)"
                return self._finish(CycleResult(f"stale:{reason}", detail), step)
        views, state = captured.views, captured.state
        obs = Observation(min(f.t_capture_ns for f in frames), state, views, self.task)
        t_send = time.perf_counter()
        self._start_prefetch()
        try:
            reply = self.client.infer(obs.arrays(), {"t_obs_ns": obs.t_obs_ns, **(meta or {})}, self.timeout_s)
        except TransportError as exc:
            return self._finish(CycleResult("transport", str(exc), obs), step)
        tm = reply.timing
        self.times.add("serialize", (tm.serialize_ms + tm.deserialize_ms) / 1e3)
        self.times.add("network", tm.network_ms / 1e3)
        self.times.add("server_queue", tm.queue_ms / 1e3)
        self.times.add("inference", tm.infer_ms / 1e3)
        self.times.add("round_trip", tm.round_trip_ms / 1e3)
        try:
            horizon = int(reply.meta["horizon"])
            output = ACTION_OUTPUTS.get(str(reply.meta.get("action_head", "continuous")), "actions")
            chunk = ActionChunk(
                obs.t_obs_ns,
                float(reply.meta["dt_s"]),
                reply.arrays[output],
                str(reply.meta["action_space"]),
                np.ones(horizon, np.float32),
                str(reply.meta.get("model_id", "")),
            )
            with self.times.measure("decode"):
                trajectory = self.decoder.decode(chunk, state)
        except (RobotStackError, KeyError, ValueError) as exc:
            return self._finish(
                CycleResult("decode", f"{type(exc).__name__}: {exc}", obs, None, None, tm.infer_ms), step
            )
        if self.scheduler is not None:
            scheduled = self.scheduler.submit(trajectory)
            accepted, why = scheduled.accepted, scheduled.reason
            trajectory = scheduled.trajectory if scheduled.trajectory is not None else trajectory
        else:
            accepted, why = self.executor.set_trajectory(trajectory), "executor refused the trajectory"
        done = time.perf_counter()
        # a slower reply raises the estimate at once (the model or the network just became slow: a prefetch timed
        # by the old estimate would finish long before the reply and be discarded as too old); a faster one lowers
        # it gradually
        self._reply_est_s = max(done - t_send, self._ema(self._reply_est_s, done - t_send))
        if not accepted:
            return self._finish(CycleResult("rejected", why, obs, chunk), step)
        self.times.add("loop_total", done - t_loop)
        # what the stack adds on top of the sensor and the model: xyz, codec, network, queue, decode
        self.times.add("overhead_beyond_inference", done - t_loop - t_capture - tm.infer_ms / 1e3)
        return self._finish(CycleResult("ok", "", obs, chunk, trajectory, tm.infer_ms), step)
