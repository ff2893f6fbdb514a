"""``build_stack()``: the one place a robot-side stack is assembled from a :class:`StackConfig`.

The demo, the hardware-in-the-loop harness, the lockstep evaluation and recording, the ROS policy-client node and
``robot-stack up`` all build their stack here, so what HIL rehearses is what the demo ships. The pieces are also
available one by one (:func:`build_decoder`, :func:`build_executor`, :func:`build_scheduler`, :func:`build_cycle`)
for drivers that own some of them (a ROS node receives its camera and arm state over topics).

A built :class:`Stack` owns what lives for the whole run (robot, cameras with their calibrated projectors, decoder,
policy client, a local policy-server process) and makes the per-episode executor, scheduler and policy cycle
(:meth:`Stack.new_episode`). It is a context manager: every process and camera it started is stopped on every exit
path (an exception, Ctrl-C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np

from robot_stack.calibration.projection import DepthProjector
from robot_stack.calibration.store import load_calibration
from robot_stack.cameras.base import Camera
from robot_stack.clock import Clock, MonotonicClock
from robot_stack.control.executor import Executor
from robot_stack.control.rt_process import ProcessExecutor, RealtimeConfig, RobotSpec, SafetySpec
from robot_stack.control.safety import SafetyFilter, WorkspaceBox
from robot_stack.control.scheduler import ChunkScheduler, SchedulerConfig
from robot_stack.cycle import (
    GuardConfig,
    ObservationGuard,
    PolicyCycle,
    RecoveryConfig,
    RequestLayout,
    RtcPrefix,
    TrajectorySink,
)
from robot_stack.decoders.base import Decoder
from robot_stack.decoders.registry import decoder_name_for, get_decoder
from robot_stack.errors import ConfigError
from robot_stack.kinematics.reach import ReachPolicy, ReachStats
from robot_stack.metrics import StageTimes
from robot_stack.policy.process import start_server, stop_server
from robot_stack.robots.base import Robot
from robot_stack.stack.config import IK_LIMIT_SLACK_RAD, StackConfig
from robot_stack.transport.client import PolicyClient

log = logging.getLogger("robot_stack.stack")

__all__ = [
    "Cell",
    "EpisodeStack",
    "Stack",
    "build_cell",
    "build_cycle",
    "build_decoder",
    "build_executor",
    "build_process_executor",
    "build_scheduler",
    "process_safety_spec",
    "build_stack",
    "terminate_on_signals",
]

#: Decoders whose targets go through the TCP reach policy (IK of end-effector positions).
_EE_DECODERS = ("ee_delta_xyz", "binned", "latent_vq")


# ------------------------------------------------------------------------------------------------ pieces


def build_decoder(
    config: StackConfig, action_head: str, action_space: str, decoder_name: str | None = None
) -> tuple[Decoder, ReachStats]:
    """The decoder for a model's action head and space, with the config's reach policy; returns it with the
    :class:`ReachStats` the recovery reads. ``decoder_name`` overrides the name derived from head and space.

    Everything arm-specific comes from the arm's description (``config.embodiment``): the IK, the neutral posture
    the IK restarts from, the "tool down" orientation, the robot type a latent-token decoder is conditioned on, the
    joint names of joint-space decoders. A ``latent_vq`` policy's tokenizer is ``decoder.options.manifest``,
    else ``<model_id>-tokenizer.yaml`` next to the policy manifest when there is one, else the shipped default."""
    from robot_stack.kinematics.ik import ik_for

    name = decoder_name or decoder_name_for(action_head, action_space)
    dc = config.decoder
    embodiment = config.embodiment
    stats = ReachStats()
    kwargs: dict[str, Any] = dict(dc.options)
    if name in _EE_DECODERS:
        ik_limits = embodiment.limits.tightened(config.control.limit_margin_rad + IK_LIMIT_SLACK_RAD)
        kwargs.setdefault("ik", ik_for(embodiment, limits=ik_limits))
        kwargs.setdefault("orientation", embodiment.tool_down if dc.orientation == "down" else dc.orientation)
        box = _target_box(config)
        kwargs.setdefault(
            "reach",
            ReachPolicy(
                embodiment.home_q,
                best_effort_m=dc.best_effort_m,
                best_effort_rad=dc.best_effort_rad,
                clamp_m=dc.clamp_m,
                drop_unreachable=dc.drop_unreachable,
                floor_z_m=dc.floor_z_m,
                box_lower=None if box is None else box[0],
                box_upper=None if box is None else box[1],
                stats=stats,
            ),
        )
        if name == "latent_vq":
            kwargs.setdefault("robot_type", embodiment.name)
            tokenizer = _tokenizer_next_to(config)
            if tokenizer is not None:
                kwargs.setdefault("manifest", tokenizer)
    elif name == "motion_tracks":
        kwargs.setdefault("scene", config.calibration.scene)
        kwargs.setdefault("calibration_root", config.calibration.root)
        kwargs.setdefault("ik", ik_for(embodiment))
    elif name in ("joint_position", "joint_delta"):
        kwargs.setdefault("joint_names", embodiment.arm_joints)
    return get_decoder(name, **kwargs), stats


#: TCP targets are kept this far (m) inside the safety filter's braking margin of a workspace box. Speed near the
#: faces is not this slack's business: the planner keeps every plan within the filter's braking model
#: (:mod:`robot_stack.control.box_guard`: chunks slowed near a face, extensions, joins). The slack covers where the
#: plan's *positions* may lie beyond the clamped targets, which no timing can undo: the IK's accepted residual
#: (``decoder.best_effort_m``, 5 mm in the demo preset), the joint-space path between steps (1.7 mm measured on the
#: Panda for a 0.6-1.2 m/s dive clamped onto the floor, with the shape-preserving path the planner takes there) and
#: the guard's own 1 mm tolerance: 7.7 mm, well inside 2 cm.
TARGET_BOX_SLACK_M = 0.02


def _target_box(config: StackConfig) -> tuple[tuple[float, float, float], tuple[float, float, float]] | None:
    """The box the decoder keeps TCP targets in: the workspace box shrunk by the filter's braking margin and
    :data:`TARGET_BOX_SLACK_M`, so plans respect the box by construction and the filter only watches it."""
    box = _workspace(config)
    if box is None:
        return None
    inset = config.control.workspace_margin_m + TARGET_BOX_SLACK_M
    lower, upper = box.lower + inset, box.upper - inset
    if np.any(lower >= upper):
        raise ConfigError(
            f"control.workspace: the box {box.lower.tolist()}..{box.upper.tolist()} m leaves no room for targets "
            f"{inset:.3f} m inside its faces; enlarge it or lower control.workspace_margin_m"
        )
    return tuple(lower.tolist()), tuple(upper.tolist())  # type: ignore[return-value]


def _tokenizer_next_to(config: StackConfig) -> Path | None:
    """``<model_id>-tokenizer.yaml`` beside the policy manifest (how ``robot-stack train`` ships a latent_vq policy's
    tokenizer), or None when the manifest is not a local file or has no tokenizer beside it."""
    path = config.policy.manifest_path()
    if not Path(path).is_file():
        return None
    from robot_stack.policy.manifest import PolicyManifest

    candidate = Path(path).parent / f"{PolicyManifest.load(path).model_id}-tokenizer.yaml"
    return candidate if candidate.is_file() else None


def _workspace(config: StackConfig) -> WorkspaceBox | None:
    box = config.workspace
    return None if box is None else WorkspaceBox(np.array(box.lower), np.array(box.upper))


#: What a stack's executor is: the in-process thread, or the real-time process behind the same interface.
AnyExecutor = Executor | ProcessExecutor


def build_executor(config: StackConfig, robot: Robot, clock: Clock) -> Executor:
    """The in-process control-rate executor (``control.executor: thread``; lock-step loops tick it themselves) at
    the arm's rate unless ``control.rate_hz`` says otherwise, with its safety filter: the robot's joint limits and the
    workspace box when there is one (``control.workspace_*``, or the arm's with ``control.workspace_from_robot``),
    with the arm's own forward kinematics (the executor thread must not share the decoder's)."""
    box = _workspace(config)
    fk = fk_many = None
    if box is not None:
        from robot_stack.kinematics.ik import ik_for

        kinematics = ik_for(config.embodiment)
        fk, fk_many = kinematics.fk_xyz, kinematics.fk_xyz_many
    safety = SafetyFilter(
        robot.limits,
        margin_rad=config.control.limit_margin_rad,
        workspace=box,
        fk_xyz=fk,
        workspace_margin_m=config.control.workspace_margin_m,
        fk_xyz_many=fk_many,
    )
    return Executor(
        robot, clock, rate_hz=config.control_rate_hz, safety=safety, watchdog_timeout_s=config.control.watchdog_s
    )


def build_process_executor(
    config: StackConfig, robot: Robot, clock: Clock, world: Any = None
) -> tuple[ProcessExecutor, Callable[[], None]]:
    """The executor in its own real-time process (``control.executor: process``; docs/realtime.md) for ``robot``,
    which stays in this process: the loop writes each set-point with its tick's trace into a shared-memory ring
    (:class:`~robot_stack.control.setpoints.RingRobot`) and a :class:`~robot_stack.control.setpoints.SetpointRelay`
    applies them to ``robot`` at their own times — drained by ``world`` before every sync (the simulator: physics
    integrates exactly what the loop produced), else by a relay thread every 2 ms (a robot driver in this
    process: its commands then see this process's scheduling; a driver built in the real-time process itself is a
    :class:`~robot_stack.control.rt_process.RobotSpec` away). The process is spawned here and kept alive between
    episodes (one session per ``start``). Returns it and the function that ends it and frees the ring."""
    from robot_stack.control.setpoints import SetpointRelay, SetpointRing

    cc = config.control
    names = tuple(robot.joint_names)
    ring = SetpointRing(len(names))
    relay = SetpointRelay(robot, ring)
    executor = ProcessExecutor(
        RobotSpec(
            "robot_stack.control.setpoints:RingRobot",
            {"ring_name": ring.name, "joint_names": names, "limits": robot.limits, "capacity": ring.capacity},
        ),
        names,
        robot.limits,
        clock,
        rate_hz=config.control_rate_hz,
        watchdog_timeout_s=cc.watchdog_s,
        safety=process_safety_spec(config),
        realtime=RealtimeConfig(cpu=cc.realtime_cpu, fifo_priority=cc.realtime_priority),
        keep_alive=True,
        relay=relay,
    )
    if world is not None:
        relay.attach(world)
    else:
        relay.start(0.002)

    def close() -> None:
        try:
            executor.close()
        finally:
            if world is not None and getattr(world, "pre_sync", None) == relay.drain:
                relay.drain()
                world.pre_sync = None
            relay.stop()
            ring.close()

    # spawn it now, with one empty session: spawning takes seconds on a loaded host, and an episode's clock, task
    # timer and fault schedule start before its executor's start() (which then costs a message)
    try:
        executor.start()
        executor.stop()
    except BaseException:
        close()
        raise
    return executor, close


def process_safety_spec(config: StackConfig) -> SafetySpec:
    """The safety filter the real-time process builds: the config's joint-limit margin and workspace box, the box
    judged at this arm's TCP (its own forward kinematics, by name: the spec crosses the process boundary)."""
    box = _workspace(config)
    return SafetySpec(
        margin_rad=config.control.limit_margin_rad,
        workspace=None if box is None else (tuple(box.lower.tolist()), tuple(box.upper.tolist())),  # type: ignore[arg-type]
        workspace_margin_m=config.control.workspace_margin_m,
        fk_factory="robot_stack.kinematics.ik:ik_for",
        fk_args=(config.embodiment.name,),
    )


def build_scheduler(config: StackConfig, executor: AnyExecutor) -> ChunkScheduler:
    """Latency compensation and chunk blending in front of ``executor`` (late chunks extend to rest over
    ``control.extend_s``, by default the watchdog window: a chunk that arrives before the deadline is spliced in
    without a stop)."""
    return ChunkScheduler(executor, SchedulerConfig(mode=config.control.blend, extend_s=config.control.extension_s))


def build_cycle(
    config: StackConfig,
    cameras: Sequence[tuple[Camera, DepthProjector]],
    robot: Robot,
    client: Any,
    decoder: Decoder,
    sink: TrajectorySink,
    clock: Clock,
    *,
    scheduler: ChunkScheduler | None = None,
    reach_stats: ReachStats | None = None,
    period_s: float | None = None,
    times: StageTimes | None = None,
    guard: ObservationGuard | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> PolicyCycle:
    """The policy cycle with the config's guard, pipelining and recovery. ``period_s`` is the caller's cycle period
    (pipelining needs it); ``sink`` takes the trajectories when there is no ``scheduler``. ``metadata``: the served
    model's; it sets the observation's wire form (:class:`~robot_stack.cycle.RequestLayout`), and a flow-matching
    model (``flow_matching:`` or ``vla:``) that accepts real-time chunking gets the executing plan's prefix with every
    request (``cycle.rtc``, when the sink is an executor that exposes its plan)."""
    cc = config.cycle
    recovery = None
    if cc.recovery:
        recovery = RecoveryConfig(config.embodiment.home_q, reach_stats=reach_stats, blocked_s=cc.recovery_blocked_s)
    rtc = None
    if cc.rtc and metadata is not None and hasattr(sink, "active_plan"):
        fk = None
        if metadata.get("action_space") == "ee_delta_xyz":
            from robot_stack.kinematics.ik import ik_for

            fk = ik_for(config.embodiment).fk_xyz
        rtc = RtcPrefix.for_model(metadata, fk)
    return PolicyCycle(
        cameras,
        robot,
        client,
        decoder,
        sink,
        clock,
        times,
        task=config.task.instruction,
        guard=guard if guard is not None else ObservationGuard(GuardConfig(max_age_s=cc.max_frame_age_s)),
        timeout_s=config.policy.request_timeout_s or config.policy.timeout_s,
        scheduler=scheduler,
        pipeline_period_s=period_s if cc.pipelining else None,
        recovery=recovery,
        send_ahead=cc.send_ahead,
        rtc=rtc,
        layout=RequestLayout.from_metadata(metadata) if metadata is not None else None,
    )


# ------------------------------------------------------------------------------------------------ stack


@dataclass
class Cell:
    """The robot's side of a stack: the arm, the cameras with their calibrated projectors, the simulated world (None
    on hardware). :meth:`close` stops the cameras."""

    config: StackConfig
    clock: Clock
    robot: Robot
    cameras: list[tuple[Camera, DepthProjector]]
    world: Any = None

    def close(self) -> None:
        for camera, _ in self.cameras:
            try:
                camera.stop()
            except Exception:  # every camera is stopped even if one fails
                log.exception("a camera did not stop cleanly")

    def __enter__(self) -> Cell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def build_cell(
    config: StackConfig,
    clock: Clock,
    *,
    robot_wrapper: Callable[[Robot], Robot] | None = None,
    camera_wrapper: Callable[[Camera], Camera] | None = None,
) -> Cell:
    """The robot, the cameras (started; simulated ones warmed up) and their projectors (calibrated intrinsics at each
    camera's configured size); the simulated world when ``robot.kind`` is ``sim``, with every camera the config
    names (the cell of ``calibration.scene``, which must be the arm's). A missing or stale calibration raises
    CalibrationError before any device is opened."""
    projectors = []
    for c in config.cameras:
        calibration = load_calibration(
            config.calibration.scene,
            c.camera_id,
            config.calibration.root,
            allow_stale=config.calibration.allow_stale,
        )
        projectors.append(
            DepthProjector(
                calibration.intrinsics_at(c.width, c.height), calibration.T_base_cam, version=calibration.version
            )
        )
    world = None
    if config.robot.kind == "sim":
        from robot_stack.sim.scene import scene_with_cameras
        from robot_stack.sim.tabletop import SCENE_OBJECTS
        from robot_stack.sim.world import SimWorld

        objects = SCENE_OBJECTS if config.task.suite == "tabletop" else ()
        cameras = [c.camera_id for c in config.cameras]
        scene = scene_with_cameras(cameras, config.calibration.scene, config.robot.model, objects)
        world = SimWorld(clock=clock, config=scene)
    robot = _build_robot(config, clock, world)
    if robot_wrapper is not None:
        robot = robot_wrapper(robot)
    cell = Cell(config, clock, robot, [], world)
    try:
        for i, projector in enumerate(projectors):
            camera = _build_camera(config, i, world)
            if camera_wrapper is not None:
                camera = camera_wrapper(camera)
            camera.start()
            cell.cameras.append((camera, projector))
        if world is not None:
            for camera, _ in cell.cameras:
                camera.read()  # warm-up: the first render creates the GL context and would arrive stale
    except BaseException:
        cell.close()
        raise
    return cell


@dataclass
class EpisodeStack:
    """What one episode runs: a fresh executor (safety filter, watchdog: a new :class:`Executor`, or a new session of
    the stack's real-time process), its scheduler and the policy cycle."""

    executor: AnyExecutor
    scheduler: ChunkScheduler
    cycle: PolicyCycle


@dataclass
class Stack:
    """A built robot-side stack (see the module docstring).

    Attributes:
        config: what it was built from.
        clock: the process clock.
        robot: the arm (possibly wrapped, e.g. by the HIL command audit).
        cameras: ``(camera, projector)`` pairs.
        decoder, reach_stats: the action decoder and the reach statistics the recovery reads.
        client: the policy endpoint (a :class:`~robot_stack.transport.client.PolicyClient` or compatible).
        metadata: the served model's metadata (``model_id``, ``action_head``, ``control_rate_hz``, ...).
        world: the simulated world (None on hardware).
        times: per-stage latency of every cycle.
        server: the local policy-server process (None when ``policy.endpoint`` names a running one).
    """

    config: StackConfig
    clock: Clock
    robot: Robot
    cameras: list[tuple[Camera, DepthProjector]]
    decoder: Decoder
    reach_stats: ReachStats
    client: Any
    metadata: dict[str, Any]
    world: Any = None
    times: StageTimes = field(default_factory=StageTimes)
    server: subprocess.Popen[str] | None = None
    _closers: list[Callable[[], None]] = field(default_factory=list)
    _process_executor: ProcessExecutor | None = None

    @property
    def period_s(self) -> float:
        """The policy's cycle period (s), from the served model's control rate (10 Hz if it names none)."""
        return 1.0 / float(self.metadata.get("control_rate_hz") or 10.0)

    def new_episode(self) -> EpisodeStack:
        """A fresh executor, scheduler and policy cycle for one episode (start the executor yourself). With
        ``control.executor: process`` the executor is the stack's real-time process (built at the first episode,
        stopped with the stack); each ``start()`` runs a fresh executor in it."""
        executor: AnyExecutor
        if self.config.control.executor == "process":
            if self._process_executor is None:
                self._process_executor, close = build_process_executor(self.config, self.robot, self.clock, self.world)
                self._closers.append(close)
            executor = self._process_executor
        else:
            executor = build_executor(self.config, self.robot, self.clock)
        scheduler = build_scheduler(self.config, executor)
        cycle = build_cycle(
            self.config,
            self.cameras,
            self.robot,
            self.client,
            self.decoder,
            executor,
            self.clock,
            scheduler=scheduler,
            reach_stats=self.reach_stats,
            period_s=self.period_s,
            times=self.times,
            metadata=self.metadata,
        )
        return EpisodeStack(executor, scheduler, cycle)

    def close(self) -> None:
        """Stop what the stack started, newest first; every step runs even if one fails."""
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except Exception:  # cleanup must reach every component
                log.exception("stack cleanup step failed")

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def terminate_on_signals() -> Iterator[None]:
    """Turn SIGTERM (and SIGHUP) into ``KeyboardInterrupt`` inside the block (main thread only), so ``finally``
    clauses and context managers stop child processes when the command is terminated as when it is interrupted."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _build_robot(config: StackConfig, clock: Clock, world: Any) -> Robot:
    rc = config.robot
    if rc.kind == "sim":
        from robot_stack.sim.robot import SimRobot

        return SimRobot(world)
    if rc.kind == "kinematic":
        from robot_stack.sim.kinematic import KinematicRobot

        return KinematicRobot(clock=clock, robot=rc.model)
    import importlib

    module_name, _, attr = rc.factory.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"robot.factory {rc.factory!r}: cannot load the robot factory: {exc}") from exc
    robot = factory(**dict(rc.options))
    joints, expected = tuple(robot.joint_names), config.embodiment.arm_joints
    if len(joints) != len(expected):
        raise ConfigError(
            f"robot.factory {rc.factory!r} returned an arm with {len(joints)} joints {joints}, but robot.model "
            f"{rc.model!r} has {len(expected)} {expected}; set robot.model to the connected arm (--robot)"
        )
    if joints != expected:
        log.warning(
            "robot %s names its joints %s; robot.model %s calls them %s", rc.factory, joints, rc.model, expected
        )
    return robot


def _build_camera(config: StackConfig, index: int, world: Any) -> Camera:
    cc = config.cameras[index]
    if cc.kind == "sim":
        from robot_stack.sim.camera import SimCamera

        if world is None:
            raise ConfigError(f"cameras[{cc.camera_id}]: a sim camera needs the simulated robot (robot.kind: sim)")
        return SimCamera(world, camera_id=cc.camera_id, width=cc.width, height=cc.height)
    from robot_stack.cameras.realsense import RealSenseCamera, RealSenseConfig

    return RealSenseCamera(
        RealSenseConfig(
            camera_id=cc.camera_id,
            serial=cc.serial or None,
            playback_path=cc.playback or None,
            width=cc.width,
            height=cc.height,
            fps=cc.fps,
        )
    )


def _client(config: StackConfig, endpoint: str, factory: Callable[..., Any] | None) -> Any:
    pc = config.policy
    kwargs: dict[str, Any] = {"robot_id": config.robot.robot_id, "timeout_s": pc.timeout_s}
    if pc.curve_server_key:
        from robot_stack.transport.keys import client_curve_kwargs

        kwargs.update(client_curve_kwargs(pc.curve_server_key, pc.curve_client_secret))
    if factory is None and endpoint.startswith(("ws://", "wss://")):
        from robot_stack.transport.openpi import OpenPIClient  # a remote openpi-protocol server

        return OpenPIClient(endpoint, **kwargs)
    return (factory or PolicyClient)(endpoint, **kwargs)


def build_stack(
    config: StackConfig,
    *,
    clock: Clock | None = None,
    endpoint: str | None = None,
    robot_wrapper: Callable[[Robot], Robot] | None = None,
    camera_wrapper: Callable[[Camera], Camera] | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> Stack:
    """Assemble the stack ``config`` describes; the caller closes it (``with build_stack(...) as stack:``).

    Args:
        clock: the process clock (default the monotonic clock).
        endpoint: a running policy server to use instead of ``policy.endpoint`` / a local server process (the HIL
            harness puts its fault-injecting proxy here).
        robot_wrapper, camera_wrapper: wrap the robot / each camera (e.g. the HIL command audit, a faulty camera).
        client_factory: ``factory(endpoint, robot_id=..., timeout_s=..., [CURVE keys])`` instead of
            :class:`PolicyClient` (e.g. the HIL client that records every call).

    Raises ConfigError for a bad config, CalibrationError for a missing or stale calibration, TransportError when
    the policy server does not start or answer; what was started before the failure is stopped.
    """
    clock = clock or MonotonicClock()
    # on a small machine the renderer, the model and the 500 Hz executor share the cores: keep the software
    # renderer (llvmpipe) to one thread so the control loop keeps its deadlines
    os.environ.setdefault("LP_NUM_THREADS", "1")
    closers: list[Callable[[], None]] = []
    try:
        manifest_path = config.policy.manifest_path()
        target = endpoint or config.policy.endpoint
        if not target and not Path(manifest_path).is_file():
            raise ConfigError(
                f"policy manifest {manifest_path} not found; build it with `robot-stack train-demo`, or name a "
                "manifest file or a running server (policy.endpoint)"
            )
        # the cell first: a missing or stale calibration stops the run before the server process is started
        cell = build_cell(config, clock, robot_wrapper=robot_wrapper, camera_wrapper=camera_wrapper)
        closers.append(cell.close)
        server = None
        if not target:
            engine = [] if config.policy.engine == "ort" else ["--engine", config.policy.engine]
            # the local server's start-up report (backend checks, bind) shows with -v; its warnings always do
            engine += [] if log.isEnabledFor(logging.DEBUG) else ["--quiet"]
            server, target = start_server(
                manifest_path, config.policy.provider, threads=config.policy.threads, extra_args=engine
            )
            closers.append(lambda: stop_server(server))
            log.info("policy server ready at %s (pid %d)", target, server.pid)
        client = _client(config, target, client_factory)
        closers.append(client.close)
        metadata = dict(client.metadata())
        head = str(metadata.get("action_head") or config.policy.action_head)
        space = str(metadata.get("action_space") or "ee_delta_xyz")
        decoder, reach_stats = build_decoder(config, head, space)
        offset_ns = client.sync_clock()
        log.info(
            "server model %s on %s; clock offset %.3f ms",
            metadata.get("model_id"),
            metadata.get("provider"),
            offset_ns / 1e6,
        )
        return Stack(
            config,
            clock,
            cell.robot,
            cell.cameras,
            decoder,
            reach_stats,
            client,
            metadata,
            cell.world,
            server=server,
            _closers=closers,
        )
    except BaseException:
        for closer in reversed(closers):
            try:
                closer()
            except Exception:
                log.exception("stack cleanup after a failed build")
        raise
