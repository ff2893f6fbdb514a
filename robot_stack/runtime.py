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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.calibration.projection import DepthProjector
from robot_stack.cameras.base import Camera
from robot_stack.clock import Clock
from robot_stack.control.executor import Executor
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.decoders.base import Decoder
from robot_stack.decoders.geometry import ReachStats
from robot_stack.errors import CameraError, ConfigError, RobotStackError, TransportError
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
class RecoveryConfig:
    """When the policy counts as stuck at a limit, and the retreat that gets it going again.

    A cycle is *blocked* when the stack had to change most of what the policy asked for: at least
    ``min_changed_fraction`` of the chunk's steps were raised over the floor, clamped or dropped by the decoder's
    reach policy (``reach_stats``), or the safety filter held the arm at a position limit or the workspace box on
    at least that fraction of the control ticks since the previous cycle — *and* the arm is neither at the policy's
    goal nor getting closer to it. With ``reach_stats`` recording the TCP and each chunk's last target (the goal,
    raised over the floor), a cycle whose TCP is within ``near_goal_m`` of its goal, with the safety filter not
    holding the arm at a limit or the box, does not count (a policy
    touching down on its target asks for steps below the floor: raised, but the arm is where the policy wants it;
    such a cycle does not end a blocked run either), and a blocked run starts over when the TCP is ``progress_m``
    closer to the goal than the TCP was when the run began while the goal stayed within ``2 * progress_m`` of the
    run's first goal (a policy wandering along a limit after a moving goal is not making progress).
    After ``blocked_cycles`` blocked cycles in a row the policy has driven
    the arm where it cannot act from (a state outside what it was trained on; its chunks only push into the limit).
    The cycle then retreats: a straight joint-space move from the commanded posture to ``home_q``, quintic-timed
    within ``speed_fraction`` of every velocity/acceleration/jerk limit, handed
    over like a chunk (spliced in by the scheduler, so the motion stays continuous). No policy request is made
    while it runs (outcome ``"recovering"``); the policy resumes ``resume_lead_s`` before the retreat ends, so its
    first chunk takes over without a stop. Every retreat is logged and counted (:attr:`PolicyCycle.recoveries`).

    Attributes:
        home_q: (n,) float64 rad, the posture the policy starts from (e.g. ``panda.HOME_Q``).
        reach_stats: the decoder's :class:`~robot_stack.decoders.geometry.ReachStats` (None: only the safety
            filter's signal is used).
        blocked_cycles: consecutive blocked cycles that trigger a retreat.
        min_changed_fraction: a cycle is blocked from this fraction (0..1] of changed steps or limited ticks.
        speed_fraction: fraction (0..1] of the joint limits the retreat uses.
        resume_lead_s: the policy runs again this long (s) before the retreat ends.
        near_goal_m: a cycle whose TCP is within this distance (m) of the policy's goal does not count as blocked
            (unless the safety filter held the arm on ``min_changed_fraction`` of the ticks).
        progress_m: a blocked run starts over when the TCP got this much (m) closer to a steady goal during it.
        blocked_s: a blocked run this long (s, process clock) of at least 3 cycles also triggers the retreat, however
            few cycles it had (on a loaded host cycles slow down; the arm is stuck all the same); None = cycles only.
    """

    home_q: np.ndarray
    reach_stats: ReachStats | None = field(default=None, compare=False)
    blocked_cycles: int = 15
    min_changed_fraction: float = 0.5
    speed_fraction: float = 0.7
    resume_lead_s: float = 0.3
    near_goal_m: float = 0.03
    progress_m: float = 0.02
    blocked_s: float | None = None

    def __post_init__(self) -> None:
        if self.blocked_cycles < 1 or not 0 < self.min_changed_fraction <= 1 or not 0 < self.speed_fraction <= 1:
            raise ConfigError(
                "RecoveryConfig: expected blocked_cycles >= 1, min_changed_fraction and speed_fraction in (0, 1], "
                f"got {self.blocked_cycles}, {self.min_changed_fraction}, {self.speed_fraction}"
            )
        if not (np.isfinite(self.resume_lead_s) and self.resume_lead_s >= 0):
            raise ConfigError(f"RecoveryConfig.resume_lead_s: expected seconds >= 0, got {self.resume_lead_s}")
        for name in ("near_goal_m", "progress_m", "blocked_s"):
            value = getattr(self, name)
            if value is None and name == "blocked_s":
                continue
            if not (np.isfinite(value) and value >= 0):
                raise ConfigError(f"RecoveryConfig.{name}: expected metres >= 0, got {value}")


def retreat_trajectory(
    joint_names: Sequence[str],
    q_from: np.ndarray,
    q_to: np.ndarray,
    limits: Any,
    t_start_ns: int,
    speed_fraction: float = 0.5,
    dt_s: float = 0.02,
) -> JointTrajectory:
    """A rest-to-rest straight joint-space move ``q_from`` -> ``q_to`` ((n,) rad) starting at ``t_start_ns``.

    Quintic timing ``s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5``; the duration is the shortest for which its peak
    velocity (``1.875 d / T``), acceleration (``5.774 d / T^2``) and jerk (``60 d / T^3``) stay within
    ``speed_fraction`` of every joint's limits (``limits``: a :class:`~robot_stack.robots.base.JointLimits`).
    Waypoints every ``dt_s`` seconds.
    """
    from robot_stack.control.scheduler import smoothstep5

    q_from = np.asarray(q_from, dtype=np.float64)
    d = np.abs(np.asarray(q_to, dtype=np.float64) - q_from)
    f = float(speed_fraction)
    duration = max(
        float(np.max(1.875 * d / (f * np.asarray(limits.velocity)))),
        float(np.max(np.sqrt(5.774 * d / (f * np.asarray(limits.acceleration))))),
        float(np.max(np.cbrt(60.0 * d / (f * np.asarray(limits.jerk))))),
        4 * dt_s,
    )
    n = int(np.ceil(duration / dt_s)) + 1
    tau = np.linspace(0.0, 1.0, n)
    positions = q_from[None, :] + smoothstep5(tau)[:, None] * (np.asarray(q_to, np.float64) - q_from)[None, :]
    t_ns = t_start_ns + np.round(tau * duration * 1e9).astype(np.int64)
    return JointTrajectory(tuple(joint_names), t_ns, positions)


@dataclass(frozen=True)
class CycleResult:
    """Outcome of one policy cycle.

    Attributes:
        outcome: ``"ok"`` or why no trajectory was produced: ``"stale:<late|frozen|no_depth>"``,
            ``"camera"``, ``"transport"``, ``"decode"``, ``"rejected"`` (executor refused the trajectory),
            ``"recovering"`` (a retreat from a blocked state is running, see :class:`RecoveryConfig`).
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


@dataclass(frozen=True)
class _Request:
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


class _InFlight:
    """A request (:meth:`PolicyCycle._request`) running in a background thread; :meth:`take` waits for it."""

    def __init__(self, request: Any, meta: Mapping[str, Any] | None) -> None:
        self.result: _Request | None = None
        self._thread = threading.Thread(
            target=self._run, args=(request, meta), name="policy-cycle-request", daemon=True
        )
        self._thread.start()

    def _run(self, request: Any, meta: Mapping[str, Any] | None) -> None:
        try:
            self.result = request(meta)
        except Exception as exc:  # reported as the next cycle's outcome, never lost in the thread
            log.exception("pipelined policy request failed")
            self.result = _Request("transport", f"{type(exc).__name__}: {exc}")

    def take(self) -> _Request:
        """Wait for the request (bounded by the client's own deadline) and return what it got."""
        self._thread.join()
        assert self.result is not None
        return self.result


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
            request is in flight, timed to be ready when the next cycle needs it (LeRobot-async style: still one request
            in flight, but capture and projection no longer add to the cycle). A prefetched observation older than
            0.6 of the guard's ``max_age_s`` when it is needed is discarded and a fresh one captured; every
            observation still passes the stale-data guard, and its age is checked again right before it is sent.
            None = synchronous.
        send_ahead: with ``pipeline_period_s`` and slow cycles, also *send* the next observation as soon as an
            answer has arrived, from a background thread, before that answer is decoded and handed over (still one
            request in flight; decoding no longer adds to the time between two answers; the request carries the
            ``meta`` of the cycle that sent it and its outcome is the next cycle's). Needs a spare core: on a
            saturated 2-core host the capture then competes with decoding for the interpreter and frames arrive
            late more often (measured in the HIL network-latency scenario), so it is off by default.
        recovery: retreat to the start posture when the policy is stuck at a limit (:class:`RecoveryConfig`);
            None = never.
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
        recovery: RecoveryConfig | None = None,
        send_ahead: bool = False,
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
        self._inflight: _InFlight | None = None
        self._capture_est_s = 0.0  # running estimates (s): capture + projection, send -> trajectory handed over
        self._reply_est_s = 0.0
        self._post_est_s = 0.0  # reply received -> trajectory handed over (decode, schedule), s
        self._encode_est_s = 0.0  # client-side encoding of a request (s), recent maximum-biased estimate
        self.recovery = recovery
        self.send_ahead = bool(send_ahead)
        self.recoveries = 0
        self._blocked = 0
        self._blocked_since_ns = 0  # process clock when the current blocked run began
        self._blocked_start: tuple[np.ndarray, np.ndarray] | None = None  # (TCP, goal) m when the blocked run began
        self._recover_until_ns: int | None = None
        self._limited_prev: tuple[int, int] | None = None  # safety filter (position + workspace, calls) counts

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
                if age_s <= 0.6 * self.guard.config.max_age_s:
                    self.prefetch_counts["used"] += 1
                    return got
                self.prefetch_counts["discarded_old"] += 1
                log.info("prefetched observation discarded: %.0f ms old when the cycle started", age_s * 1e3)
        return self._capture()

    def _start_prefetch(self) -> None:
        """Schedule the next capture to be ready when the next cycle needs it: when this cycle's reply is due plus
        its decoding and hand-over (only if cycles are slow). Ready earlier, it would age while the reply is decoded
        and be discarded as too old (a second capture per cycle: on a loaded host it makes every cycle slower)."""
        period = self.pipeline_period_s
        if period is None or self._reply_est_s <= 0.0:
            return
        if self._capture_est_s + self._reply_est_s <= period:
            return  # the caller waits between cycles anyway: a capture at its next start is fresher
        lead = 0.0 if self._pipelined() else self._post_est_s
        self._prefetch = _Prefetch(self._capture, self._reply_est_s + lead - self._capture_est_s)

    @staticmethod
    def _ema(old: float, new: float) -> float:
        return new if old <= 0.0 else 0.5 * old + 0.5 * new

    def close(self) -> None:
        """Wait for a background request and capture still in progress and drop them (call before stopping the
        cameras)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.take()
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.take()

    def _safety_limited_fraction(self) -> float:
        """Fraction of control ticks since the last call on which the safety filter held the arm at a position
        limit or the workspace box (0 without a filter)."""
        safety = getattr(self.executor, "safety", None)
        if safety is None:
            return 0.0
        st = safety.stats()
        now = (int(st.get("position", 0)) + int(st.get("workspace", 0)), int(st.get("calls", 0)))
        prev, self._limited_prev = self._limited_prev, now
        if prev is None or now[1] <= prev[1]:
            return 0.0
        return min(1.0, (now[0] - prev[0]) / (now[1] - prev[1]))

    def _check_blocked(self, step: int) -> None:
        """Count blocked cycles (see :class:`RecoveryConfig`); start a retreat after enough in a row."""
        cfg = self.recovery
        if cfg is None:
            return
        changed = cfg.reach_stats.last_fraction if cfg.reach_stats is not None else 0.0
        limited = self._safety_limited_fraction()
        pair = cfg.reach_stats.last_tcp_goal if cfg.reach_stats is not None else None
        if max(changed, limited) < cfg.min_changed_fraction:
            self._blocked = 0
            return
        if pair is not None:
            tcp, goal = pair
            if limited < cfg.min_changed_fraction and np.linalg.norm(goal - tcp) <= cfg.near_goal_m:
                # at the goal, the safety filter not holding the arm: touching down on the target, neither blocked
                # nor free (held at a limit or the workspace box, the arm is stuck wherever the policy aims)
                return
            start = self._blocked_start
            if self._blocked == 0 or start is None:
                self._blocked_start = (tcp, goal)
                self._blocked_since_ns = self.clock.now_ns()
            elif (
                np.linalg.norm(goal - start[1]) <= 2.0 * cfg.progress_m
                and np.linalg.norm(goal - start[0]) - np.linalg.norm(goal - tcp) >= cfg.progress_m
            ):
                # the arm got closer to a goal the policy kept since the run began: progress, the run starts over
                self._blocked, self._blocked_start = 0, (tcp, goal)
                self._blocked_since_ns = self.clock.now_ns()
        if self._blocked == 0:
            self._blocked_since_ns = self.clock.now_ns()
        self._blocked += 1
        long_enough = (
            cfg.blocked_s is not None
            and self._blocked >= 3
            and self.clock.now_ns() - self._blocked_since_ns >= cfg.blocked_s * 1e9
        )
        if self._blocked < cfg.blocked_cycles and not long_enough:
            return
        n_blocked, self._blocked = self._blocked, 0
        commanded = getattr(self.executor, "commanded", None)
        q_from = commanded[0] if commanded is not None else self.robot.read_state().q
        start = self.clock.now_ns() + 20_000_000  # leaves the scheduler's hand-over prefix to the old trajectory
        traj = retreat_trajectory(
            self.robot.joint_names, q_from, cfg.home_q, self.robot.limits, start, cfg.speed_fraction
        )
        accepted = (
            self.scheduler.submit(traj).accepted if self.scheduler is not None else (self.executor.set_trajectory(traj))
        )
        if not accepted:
            log.error("cycle %d: the policy is stuck at a limit but the retreat was refused; policy continues", step)
            return
        self.close()  # a prefetched observation from before the retreat is useless after it
        self.recoveries += 1
        duration_s = (int(traj.t_ns[-1]) - start) / 1e9
        self._recover_until_ns = int(traj.t_ns[-1]) - round(cfg.resume_lead_s * 1e9)
        log.warning(
            "cycle %d: the policy is stuck at a limit (%d cycles in a row with >= %.0f%% of its chunk changed: "
            "reach %.0f%%, safety-limited ticks %.0f%%); retreating to the start posture over %.2f s, then resuming "
            "(recovery %d)",
            step,
            n_blocked,
            cfg.min_changed_fraction * 100,
            changed * 100,
            limited * 100,
            duration_s,
            self.recoveries,
        )

    def _finish(self, result: CycleResult, step: int) -> CycleResult:
        self.outcomes[result.outcome] += 1
        if result.outcome == "recovering":
            log.debug("cycle %d: %s", step, result.detail)
        elif not result.ok:
            log.warning("cycle %d: no new trajectory (%s): %s", step, result.outcome, result.detail)
        return result

    def _request(self, meta: Mapping[str, Any] | None) -> _Request:
        """Capture (or take the prefetched observation), guard it, send it and wait for the answer."""
        t0 = time.perf_counter()
        captured = self._next_capture()
        if captured.error is not None:
            return _Request("camera", str(captured.error))
        t_capture = time.perf_counter() - t0
        self._capture_est_s = self._ema(self._capture_est_s, captured.duration_s)
        now = self.clock.now_ns()
        for frame in captured.frames:
            reason = self.guard.check(frame, now)
            if reason is not None:
                age_ms = (now - frame.t_capture_ns) / 1e6
                detail = f"camera {frame.camera_id!r} frame {frame.seq} is {reason} (age {age_ms:.0f} ms)"
                return _Request(f"stale:{reason}", detail)
        obs = Observation(min(f.t_capture_ns for f in captured.frames), captured.state, captured.views, self.task)
        arrays = obs.arrays()
        # the guard judged the frames before they were packed; on a loaded host packing and encoding can take long
        # enough for the observation to age past the limit: checked again right before it is handed to the client,
        # with the client's recent encoding time added (the request leaves after encoding)
        age_ns = self.clock.now_ns() - obs.t_obs_ns + round(self._encode_est_s * 1e9)
        if age_ns > self.guard.config.max_age_s * 1e9:
            self.guard.rejections["late"] += 1
            return _Request("stale:late", f"observation would be {age_ns / 1e6:.0f} ms old when sent")
        t_send = time.perf_counter()
        self._start_prefetch()
        try:
            reply = self.client.infer(arrays, {"t_obs_ns": obs.t_obs_ns, **(meta or {})}, self.timeout_s)
        except TransportError as exc:
            return _Request("transport", str(exc), obs)
        t_reply = time.perf_counter()
        encode_s = reply.timing.serialize_ms / 1e3
        self._encode_est_s = max(encode_s, self._ema(self._encode_est_s, encode_s))
        # a slower reply raises the estimate at once (the model or the network just became slow: a prefetch timed
        # by the old estimate would finish long before the reply and be discarded as too old); a faster one lowers
        # it gradually
        self._reply_est_s = max(t_reply - t_send, self._ema(self._reply_est_s, t_reply - t_send))
        return _Request("", "", obs, reply, t_capture, t0, t_reply)

    def _pipelined(self) -> bool:
        """Whether the next request is sent as soon as an answer arrives: ``send_ahead`` and cycles slower than the
        caller's period (slow model or network)."""
        period = self.pipeline_period_s
        if not self.send_ahead or period is None or self._reply_est_s <= 0.0:
            return False
        return self._capture_est_s + self._reply_est_s > period

    def run(self, meta: Mapping[str, Any] | None = None, step: int = 0) -> CycleResult:
        """One cycle; never raises for bad data, a dead server or an undecodable answer (see ``outcome``)."""
        t_loop = time.perf_counter()
        if self._recover_until_ns is not None:
            if self.clock.now_ns() < self._recover_until_ns:
                return self._finish(CycleResult("recovering", "retreat to the start posture in progress"), step)
            self._recover_until_ns = None
            self._limited_prev = None
            log.info("cycle %d: retreat nearly done; the policy runs again", step)
        inflight, self._inflight = self._inflight, None
        req = inflight.take() if inflight is not None else None
        if req is None:
            req = self._request(meta)
        else:
            t_loop = req.t_start
        if req.outcome:
            return self._finish(CycleResult(req.outcome, req.detail, req.obs), step)
        obs, reply = req.obs, req.reply
        assert obs is not None and reply is not None
        if self._pipelined():
            # send the next observation (prefetched to be ready about now) while this answer is decoded: still one
            # request in flight, but decoding and hand-over no longer delay the next request
            self._inflight = _InFlight(self._request, meta)
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
                trajectory = self.decoder.decode(chunk, obs.state)
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
        if req.t_reply > 0.0:
            self._post_est_s = self._ema(self._post_est_s, done - req.t_reply)
        if not accepted:
            return self._finish(CycleResult("rejected", why, obs, chunk), step)
        self.times.add("loop_total", done - t_loop)
        # what the stack adds on top of the sensor and the model: xyz, codec, network, queue, decode
        self.times.add("overhead_beyond_inference", done - t_loop - req.t_capture_s - tm.infer_ms / 1e3)
        result = self._finish(CycleResult("ok", "", obs, chunk, trajectory, tm.infer_ms), step)
        self._check_blocked(step)
        return result
