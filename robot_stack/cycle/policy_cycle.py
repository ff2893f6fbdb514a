"""The robot-side policy cycle, independent of what drives it (demo, ROS node, hardware-in-the-loop harness).

One cycle: capture every camera → guard against stale data → base-frame XYZ (calibration) → ask the policy server
→ decode the action chunk into a timestamped joint trajectory → hand it to the executor. A cycle that cannot produce
a trustworthy trajectory produces none: the executor keeps following what it has, and its watchdog brings the arm
to a hold when that runs out. No action is ever computed from stale data.

The stages live in their own modules: the stale-data guard (:mod:`.guard`), the observation builder
(:mod:`.observation`), pipelining (:mod:`.pipelining`), the reply -> chunk conversion (:mod:`.chunks`) and the
recovery from a policy stuck at a limit (:mod:`.recovery`).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.calibration.projection import DepthProjector
from robot_stack.cameras.base import Camera
from robot_stack.clock import Clock
from robot_stack.control.plan import JointState
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.cycle.chunks import chunk_from_reply
from robot_stack.cycle.guard import ObservationGuard
from robot_stack.cycle.latency import DelayEstimator
from robot_stack.cycle.observation import Capture, ObservationSource
from robot_stack.cycle.pipelining import InFlight, PipelineTiming, Prefetch, Request
from robot_stack.cycle.ports import PolicyEndpoint, TrajectorySink
from robot_stack.cycle.recovery import RecoveryConfig, RecoveryMonitor, retreat_trajectory
from robot_stack.cycle.request import RequestLayout
from robot_stack.cycle.rtc import RtcPrefix
from robot_stack.decoders.base import Decoder
from robot_stack.errors import RobotStackError, StaleObservationError, TransportError
from robot_stack.metrics import StageTimes
from robot_stack.robots.base import Robot
from robot_stack.types import ActionChunk, JointTrajectory, Observation

log = logging.getLogger("robot_stack.cycle")

__all__ = ["CycleResult", "PolicyCycle"]


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


class PolicyCycle:
    """Runs robot-side policy cycles against one executor.

    Args:
        cameras: the cameras whose frames the policy needs, each paired with its calibrated projector.
        robot: proprioception source.
        client: the policy endpoint (:class:`~robot_stack.transport.client.PolicyClient` in production).
        decoder: turns the chunk into a joint trajectory (chosen from the manifest's action space/head).
        executor: receives the trajectories (a :class:`TrajectorySink`: the in-process
            :class:`~robot_stack.control.executor.Executor`, or e.g. a publisher to an executor elsewhere). With the
            in-process executor the recovery also reads what it commands and its safety filter.
        clock: the process clock (frame ages are measured on it).
        times: per-stage latency sink (capture, xyz, serialize, network, server_queue, inference, round_trip,
            decode, loop_total, overhead_beyond_inference).
        task: instruction text sent with every observation (request meta ``task``).
        guard: stale-data detector (default :class:`ObservationGuard`).
        timeout_s: per-request deadline for the server.
        scheduler: optional chunk scheduler in front of the executor (latency compensation, splice/ensemble
            blending); without it trajectories go straight to ``executor.set_trajectory``.
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
        layout: the wire form the served model wants (:class:`RequestLayout`: XYZ or depth form, batch axis);
            default the XYZ form, unbatched. In the depth form the robot does not compute the XYZ.
        rtc: real-time chunking (:class:`~robot_stack.cycle.rtc.RtcPrefix`, for a flow-matching model that takes
            it): every request carries the executing plan's prefix and the estimated delay in steps. None = off.

    Every accepted chunk's delay (observation -> hand-over) feeds :attr:`delay`, the online estimate of the
    inference delay (:class:`~robot_stack.cycle.latency.DelayEstimator`).
    """

    def __init__(
        self,
        cameras: Sequence[tuple[Camera, DepthProjector]],
        robot: Robot,
        client: PolicyEndpoint,
        decoder: Decoder,
        executor: TrajectorySink,
        clock: Clock,
        times: StageTimes | None = None,
        task: str = "",
        guard: ObservationGuard | None = None,
        timeout_s: float | None = None,
        scheduler: ChunkScheduler | None = None,
        pipeline_period_s: float | None = None,
        recovery: RecoveryConfig | None = None,
        send_ahead: bool = False,
        rtc: RtcPrefix | None = None,
        layout: RequestLayout | None = None,
    ) -> None:
        self.robot = robot
        self.client = client
        self.decoder = decoder
        self.executor = executor
        self.clock = clock
        self.times = times if times is not None else StageTimes()
        self.layout = layout or RequestLayout()
        self.source = ObservationSource(cameras, robot, self.times, xyz=not self.layout.depth_form)
        self.task = task
        self.guard = guard if guard is not None else ObservationGuard()
        self.timeout_s = timeout_s
        self.scheduler = scheduler
        self.rtc = rtc
        self.delay = DelayEstimator()
        self.rtc_requests = 0
        self.outcomes: Counter[str] = Counter()
        self.timing = PipelineTiming(pipeline_period_s, send_ahead, 0.6 * self.guard.config.max_age_s, clock)
        self._prefetch: Prefetch | None = None
        self._inflight: InFlight | None = None
        self.recovery = (
            None
            if recovery is None
            else RecoveryMonitor(
                recovery,
                clock,
                robot.joint_names,
                robot.limits,
                self._safety_limited_counts() if hasattr(executor, "safety") else None,
                self._retreat,
            )
        )

    # ----------------------------------------------------------------------------------------- properties
    @property
    def cameras(self) -> list[tuple[Camera, DepthProjector]]:
        """The ``(camera, projector)`` pairs observed each cycle."""
        return self.source.cameras

    @property
    def recoveries(self) -> int:
        """Retreats started so far (0 without recovery)."""
        return 0 if self.recovery is None else self.recovery.recoveries

    @property
    def prefetch_counts(self) -> Counter[str]:
        """Prefetched observations used, discarded as too old, failed."""
        return self.timing.counts

    # ------------------------------------------------------------------------------------------- helpers
    def _commanded_q(self) -> np.ndarray:
        """The posture being commanded now (the executor's, else the measured one), (n,) rad."""
        commanded = getattr(self.executor, "commanded", None)
        return commanded[0] if commanded is not None else self.robot.read_state().q

    def _retreat(self, q_target: np.ndarray, speed_fraction: float) -> int | None:
        """Hand over a move to rest at ``q_target``; return when it ends (ns) or None if refused. With a scheduler:
        its :meth:`~robot_stack.control.scheduler.ChunkScheduler.move_to` (ruckig from the executing plan's state);
        with an executor that takes plans: a ruckig move it joins from what it commands; else (a sink of waypoints,
        e.g. a ROS topic): the move as waypoints (:func:`~robot_stack.cycle.recovery.retreat_trajectory`)."""
        if self.scheduler is not None:
            result = self.scheduler.move_to(q_target, speed_fraction)
            return result.plan.end_ns if result.accepted and result.plan is not None else None
        planner = getattr(self.executor, "planner", None)
        if planner is not None and hasattr(self.executor, "set_plan"):
            start = JointState.at_rest(self._commanded_q())
            plan = planner.move_to(start, self.clock.now_ns(), q_target, speed_fraction)
            return plan.end_ns if self.executor.set_plan(plan) else None
        now = self.clock.now_ns()
        traj = retreat_trajectory(
            self.robot.joint_names, self._commanded_q(), q_target, self.robot.limits, now, speed_fraction
        )
        return int(traj.t_ns[-1]) if self.executor.set_trajectory(traj) else None

    def _safety_limited_counts(self) -> Any:
        safety = self.executor.safety  # type: ignore[attr-defined]  # an executor (in this process or its view)

        def counts() -> tuple[int, int]:
            st = safety.stats()
            return int(st.get("position", 0)) + int(st.get("workspace", 0)), int(st.get("calls", 0))

        return counts

    def _capture(self) -> Capture:
        return self.source.capture()

    def _start_prefetch(self) -> None:
        delay_s = self.timing.prefetch_delay_s()
        if delay_s is not None:
            self._prefetch = Prefetch(self._capture, delay_s)

    def close(self) -> None:
        """Wait for a background request and capture still in progress and drop them (call before stopping the
        cameras)."""
        inflight, self._inflight = self._inflight, None
        if inflight is not None:
            inflight.take()
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.take()

    def _finish(self, result: CycleResult, step: int) -> CycleResult:
        self.outcomes[result.outcome] += 1
        if result.outcome == "recovering":
            log.debug("cycle %d: %s", step, result.detail)
        elif not result.ok:
            log.warning("cycle %d: no new trajectory (%s): %s", step, result.outcome, result.detail)
        return result

    # ------------------------------------------------------------------------------------------- request
    def request(self, meta: Mapping[str, Any] | None) -> Request:
        """Capture (or take the prefetched observation), guard it, send it and wait for the answer."""
        t0 = time.perf_counter()
        prefetch, self._prefetch = self._prefetch, None
        captured = self.timing.take(prefetch, self._capture)
        if captured.error is not None:
            return Request("camera", str(captured.error))
        t_capture = time.perf_counter() - t0
        self.timing.note_capture(captured.duration_s)
        now = self.clock.now_ns()
        for frame in captured.frames:
            reason = self.guard.check(frame, now)
            if reason is not None:
                age_ms = (now - frame.t_capture_ns) / 1e6
                detail = f"camera {frame.camera_id!r} frame {frame.seq} is {reason} (age {age_ms:.0f} ms)"
                return Request(f"stale:{reason}", detail)
        obs = captured.observation(self.task)
        try:
            arrays = self.layout.arrays(obs)
        except RobotStackError as exc:  # e.g. the depth form asked of a camera with lens distortion
            return Request("camera", str(exc), obs)
        meta = dict(meta or {})
        if self.rtc is not None:
            plan = getattr(self.executor, "active_plan", None)
            steps = self.delay.steps(self.rtc.dt_s, self.rtc.horizon)
            extra_arrays, extra_meta = self.rtc.request_fields(plan, obs.state, obs.t_obs_ns, steps)
            if extra_arrays:
                arrays = {**arrays, **extra_arrays}
                meta.update(extra_meta)
                self.rtc_requests += 1
        t_send = time.perf_counter()
        self._start_prefetch()
        try:
            # the guard judged the frames before they were packed; on a loaded host packing and encoding can take
            # long enough for the observation to age past the limit: the client measures its age again at the
            # moment the request would leave, after encoding, and refuses to send it if it is too old
            reply = self.client.infer(
                arrays, {**self.layout.meta(obs), **meta}, self.timeout_s, lambda: self._check_age(obs)
            )
        except StaleObservationError as exc:
            self.guard.rejections["late"] += 1
            return Request("stale:late", str(exc), obs)
        except TransportError as exc:
            return Request("transport", str(exc), obs)
        t_reply = time.perf_counter()
        self.timing.note_reply(t_reply - t_send)
        return Request("", "", obs, reply, t_capture, t0, t_reply)

    def _check_age(self, obs: Observation) -> None:
        """Raise StaleObservationError if ``obs`` is past the guard's age limit now (process clock)."""
        age_ns = self.clock.now_ns() - obs.t_obs_ns
        if age_ns > self.guard.config.max_age_s * 1e9:
            raise StaleObservationError(
                f"observation would be {age_ns / 1e6:.0f} ms old when sent (limit "
                f"{self.guard.config.max_age_s * 1e3:.0f} ms); not sent"
            )

    # ----------------------------------------------------------------------------------------------- run
    def _record_timing(self, reply: Any) -> None:
        tm = reply.timing
        self.times.add("serialize", (tm.serialize_ms + tm.deserialize_ms) / 1e3)
        self.times.add("network", tm.network_ms / 1e3)
        self.times.add("server_queue", tm.queue_ms / 1e3)
        self.times.add("inference", tm.infer_ms / 1e3)
        self.times.add("round_trip", tm.round_trip_ms / 1e3)

    def _hand_over(self, trajectory: JointTrajectory) -> tuple[bool, str, JointTrajectory]:
        """Give the trajectory to the scheduler (or the executor); return (accepted, why not, what was handed)."""
        if self.scheduler is not None:
            scheduled = self.scheduler.submit(trajectory)
            handed = scheduled.trajectory if scheduled.trajectory is not None else trajectory
            return scheduled.accepted, scheduled.reason, handed
        return self.executor.set_trajectory(trajectory), "executor refused the trajectory", trajectory

    def run(self, meta: Mapping[str, Any] | None = None, step: int = 0) -> CycleResult:
        """One cycle; never raises for bad data, a dead server or an undecodable answer (see ``outcome``)."""
        t_loop = time.perf_counter()
        if self.recovery is not None and self.recovery.recovering(step):
            return self._finish(CycleResult("recovering", "retreat to the start posture in progress"), step)
        inflight, self._inflight = self._inflight, None
        req = inflight.take() if inflight is not None else None
        if req is None:
            req = self.request(meta)
        else:
            t_loop = req.t_start
        if req.outcome:
            return self._finish(CycleResult(req.outcome, req.detail, req.obs), step)
        obs, reply = req.obs, req.reply
        assert obs is not None and reply is not None
        if self.timing.pipelined():
            # send the next observation (prefetched to be ready about now) while this answer is decoded: still one
            # request in flight, but decoding and hand-over no longer delay the next request
            self._inflight = InFlight(self.request, meta)
        self._record_timing(reply)
        infer_ms = reply.timing.infer_ms
        try:
            chunk = chunk_from_reply(reply, obs.t_obs_ns)
            with self.times.measure("decode"):
                trajectory = self.decoder.decode(chunk, obs.state)
        except (RobotStackError, KeyError, ValueError) as exc:
            return self._finish(CycleResult("decode", f"{type(exc).__name__}: {exc}", obs, None, None, infer_ms), step)
        accepted, why, trajectory = self._hand_over(trajectory)
        done = time.perf_counter()
        if req.t_reply > 0.0:
            self.timing.note_post(done - req.t_reply)
        if not accepted:
            return self._finish(CycleResult("rejected", why, obs, chunk), step)
        self.delay.add((self.clock.now_ns() - obs.t_obs_ns) / 1e9)
        self.times.add("loop_total", done - t_loop)
        # what the stack adds on top of the sensor and the model: xyz, codec, network, queue, decode
        self.times.add("overhead_beyond_inference", done - t_loop - req.t_capture_s - infer_ms / 1e3)
        result = self._finish(CycleResult("ok", "", obs, chunk, trajectory, infer_ms), step)
        if self.recovery is not None and self.recovery.check(step):
            self.close()  # a prefetched observation from before the retreat is useless after it
        return result
