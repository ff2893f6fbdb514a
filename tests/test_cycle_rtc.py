"""Robot side of real-time chunking: the executing plan's prefix in the model's action space, the online delay
estimate, and a policy cycle that sends both (the real server and client, the sim cell, FakeClock)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor
from robot_stack.control.motion import MotionPlanner
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.cycle import DelayEstimator, PolicyCycle, RtcPrefix
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.errors import ConfigError
from robot_stack.kinematics.ik import panda_ik
from robot_stack.policy.rtc import RTC_DELAY_STEPS, RTC_PREFIX
from robot_stack.robots import panda
from robot_stack.sim.camera import SimCamera
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.world import SimWorld
from robot_stack.transport.client import PolicyClient
from robot_stack.transport.server import PolicyServer
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

MS = 1_000_000
NAMES = panda.ARM_JOINTS


def _plan(t0: int):
    """A chunk plan moving every joint at 0.3 rad/s from HOME for 0.5 s (policy part), then its extension."""
    steps = np.arange(6) * 0.1
    traj = JointTrajectory(
        NAMES, t0 + np.round(steps * 1e9).astype(np.int64), panda.HOME_Q + np.outer(steps, 0.3 * np.ones(7))
    )
    return MotionPlanner(NAMES, panda.LIMITS).chunk_plan(traj)


def _state(q: np.ndarray) -> RobotState:
    ik = panda_ik()
    return RobotState(0, q, np.zeros(7), ik.fk(q), 1.0)


def test_the_delay_estimate_is_a_high_quantile_raised_at_once() -> None:
    est = DelayEstimator(window=10, quantile=0.9)
    assert est.estimate_s is None and est.steps(0.1, 8) == 0
    for d in (0.12, 0.11, 0.13, 0.12):
        est.add(d)
    assert 0.12 <= est.estimate_s <= 0.13 and est.steps(0.1, 8) == 2
    est.add(0.42)  # the model just got slow: the next request already assumes it
    assert est.estimate_s == pytest.approx(0.42) and est.steps(0.1, 8) == 5
    est.add(float("nan"))
    est.add(-1.0)
    assert est.count == 5
    assert est.steps(0.1, 3) == 3  # never more than the horizon
    with pytest.raises(ConfigError):
        DelayEstimator(quantile=0.0)


def test_only_flow_models_and_vlas_that_accept_rtc_get_a_prefix() -> None:
    meta = {"action_space": "joint_position", "horizon": 8, "dt_s": 0.1}
    assert RtcPrefix.for_model(meta) is None
    assert RtcPrefix.for_model({**meta, "flow_matching": {"rtc": False}}) is None
    assert RtcPrefix.for_model({**meta, "action_space": "tokens", "flow_matching": {"rtc": True}}) is None
    assert RtcPrefix.for_model({**meta, "flow_matching": {"rtc": True}}) == RtcPrefix("joint_position", 8, 0.1)
    # a VLA (manifest section vla:) advertises it in its own section; the prefix is then in its ee_delta_xyz space
    ee = {**meta, "action_space": "ee_delta_xyz"}
    fk = panda_ik().fk_xyz
    assert RtcPrefix.for_model({**ee, "vla": {"steps": 10, "rtc": False}}, fk) is None
    assert RtcPrefix.for_model({**ee, "vla": {"steps": 10}}, fk) is None
    assert RtcPrefix.for_model({**ee, "vla": {"steps": 10, "rtc": True}}, fk) == RtcPrefix("ee_delta_xyz", 8, 0.1, fk)
    with pytest.raises(ConfigError, match="fk_xyz"):
        RtcPrefix("ee_delta_xyz", 8, 0.1)


def test_a_joint_prefix_is_the_plan_at_the_chunks_step_times_while_it_carries_the_policy() -> None:
    t0 = 10_000 * MS
    plan = _plan(t0)
    rtc = RtcPrefix("joint_position", 8, 0.1)
    t_obs = t0 + 120 * MS
    prefix = rtc.prefix(plan, _state(panda.HOME_Q), t_obs)
    steps = [t_obs + k * 100 * MS for k in range(8) if t_obs + k * 100 * MS <= plan.policy_end_ns]
    assert prefix.shape == (len(steps), 7) and prefix.dtype == np.float32
    np.testing.assert_allclose(prefix, plan.sample_many(np.array(steps))[0], atol=1e-6)
    delta = RtcPrefix("joint_delta", 8, 0.1).prefix(plan, _state(panda.HOME_Q + 0.01), t_obs)
    np.testing.assert_allclose(delta, prefix - (panda.HOME_Q + 0.01), atol=1e-6)
    arrays, meta = rtc.request_fields(plan, _state(panda.HOME_Q), t_obs, delay_steps=9)
    assert meta[RTC_DELAY_STEPS] == len(steps) and arrays[RTC_PREFIX].shape[0] == len(steps)  # d <= P
    assert rtc.request_fields(None, _state(panda.HOME_Q), t_obs, 2) == ({}, {})
    assert rtc.prefix(plan, _state(panda.HOME_Q), plan.policy_end_ns + 1) is None  # the policy part is over


def test_steps_before_the_plan_began_follow_its_start_state_back() -> None:
    t0 = 10_000 * MS
    plan = _plan(t0).after(t0 + 200 * MS)  # handed over after the observation was taken
    prefix = RtcPrefix("joint_position", 8, 0.1).prefix(plan, _state(panda.HOME_Q), t0 + 150 * MS)
    full = _plan(t0)
    np.testing.assert_allclose(prefix[0], full.sample(t0 + 150 * MS).q, atol=1e-4)  # 50 ms back along the motion


def test_an_ee_delta_prefix_decodes_back_to_the_plan() -> None:
    t0 = 10_000 * MS
    plan = _plan(t0)
    ik = panda_ik()
    state = _state(panda.HOME_Q)
    rtc = RtcPrefix("ee_delta_xyz", 8, 0.1, ik.fk_xyz)
    prefix = rtc.prefix(plan, state, t0)
    chunk = ActionChunk(t0, 0.1, prefix.astype(np.float64), "ee_delta_xyz", np.ones(len(prefix), np.float32))
    decoded = EeDeltaXyzDecoder(orientation="keep").decode(chunk, state)
    tcp = np.array([ik.fk_xyz(q) for q in decoded.positions])
    want = np.array([ik.fk_xyz(q) for q in plan.sample_many(decoded.t_ns)[0]])
    np.testing.assert_allclose(tcp, want, atol=2e-4)  # the same TCP path, metres


@pytest.fixture()
def rtc_rig():
    clock = FakeClock(start_ns=1_000_000_000)
    world = SimWorld(clock=clock)
    world.reset(seed=3)
    robot = SimRobot(world)
    camera = SimCamera(world)
    camera.start()
    projector = load_calibration("sim_tabletop", "front").projector()
    seen = []

    def handler(arrays, meta):
        seen.append((dict(arrays), dict(meta)))
        actions = np.cumsum(np.full((8, 3), [0.004, 0.0, -0.002], np.float32), axis=0)
        return {"actions": actions}, {"dt_s": 0.1, "horizon": 8, "action_space": "ee_delta_xyz", "model_id": "rtc"}

    server = PolicyServer(handler, bind="tcp://127.0.0.1:*").start()
    client = PolicyClient(server.endpoint, robot_id="rtc", timeout_s=2.0)
    executor = Executor(robot, clock)
    scheduler = ChunkScheduler(executor)
    rtc = RtcPrefix("ee_delta_xyz", 8, 0.1, panda_ik().fk_xyz)
    cycle = PolicyCycle(
        [(camera, projector)],
        robot,
        client,
        EeDeltaXyzDecoder(orientation="down"),
        executor,
        clock,
        scheduler=scheduler,
        rtc=rtc,
    )
    yield cycle, executor, clock, seen
    client.close()
    server.close()
    camera.stop()


def test_a_cycle_sends_its_executing_prefix_and_the_estimated_delay(rtc_rig) -> None:
    cycle, executor, clock, seen = rtc_rig
    executor.tick(clock.now_ns())
    assert cycle.run({}, 0).ok
    assert RTC_PREFIX not in seen[0][0]  # nothing executing yet: no prefix
    assert cycle.delay.count == 1
    for _ in range(40):  # 80 ms of executing the first chunk
        clock.advance(2 * MS)
        executor.tick(clock.now_ns())
    assert cycle.run({}, 1).ok
    arrays, meta = seen[1]
    plan_now = executor.active_plan
    assert arrays[RTC_PREFIX].shape[1] == 3 and 1 <= arrays[RTC_PREFIX].shape[0] <= 8
    assert 0 <= meta[RTC_DELAY_STEPS] <= arrays[RTC_PREFIX].shape[0]
    # the prefix is the executing plan's TCP path relative to the observed TCP
    t_obs = meta["t_obs_ns"]
    ik = panda_ik()
    p0 = ik.fk_xyz(cycle.robot.read_state().q)  # the arm is where the plan put it (FakeClock, sim at rest)
    q_obs = plan_now.sample(t_obs).q
    np.testing.assert_allclose(arrays[RTC_PREFIX][0], ik.fk_xyz(q_obs) - p0, atol=5e-3)
    assert cycle.rtc_requests == 1


def test_rtc_end_to_end_a_flow_policy_continues_the_plan_the_robot_executes(tmp_path) -> None:
    # the robot side (sim cell, policy cycle, scheduler, executor on FakeClock) against the real server serving a
    # flow-matching model over ZeroMQ: from the second cycle on, every request carries the executing plan's prefix
    # and the server inpaints it; the chunks are spliced in within the limits, the filter never intervenes
    from robot_stack.control.audit import stream_ratios
    from robot_stack.control.safety import SafetyFilter
    from robot_stack.decoders.joint import JointPositionDecoder
    from robot_stack.policy.flow_toy import build_gaussian_flow_model
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.service import PolicyService

    model = build_gaussian_flow_model(tmp_path, goal=panda.HOME_Q + 0.15, cameras=("front",), std=0.02, seed=3)
    service = PolicyService.from_manifest(PolicyManifest.load(model.manifest), "cpu", threads=1)
    server = PolicyServer(service, bind="tcp://127.0.0.1:*").start()
    client = PolicyClient(server.endpoint, robot_id="rtc", timeout_s=5.0)
    clock = FakeClock(start_ns=1_000_000_000)
    world = SimWorld(clock=clock)
    world.reset(seed=3)
    robot = SimRobot(world)
    camera = SimCamera(world)
    camera.start()
    try:
        executor = Executor(robot, clock, safety=SafetyFilter(panda.LIMITS), history=100_000)
        rtc = RtcPrefix.for_model(client.metadata())
        assert rtc is not None and rtc.action_space == "joint_position"
        cycle = PolicyCycle(
            [(camera, load_calibration("sim_tabletop", "front").projector())],
            robot,
            client,
            JointPositionDecoder(),
            executor,
            clock,
            scheduler=ChunkScheduler(executor),
            rtc=rtc,
        )
        executor.tick(clock.now_ns())
        for step in range(5):
            assert cycle.run({}, step).ok
            for _ in range(50):  # 100 ms between cycles
                clock.advance(2 * MS)
                executor.tick(clock.now_ns())
        assert cycle.rtc_requests == 4 and service.policy.rtc_runs == 4  # every request after the first
        t = np.array([r.t_ns for r in executor.history])
        ratios = stream_ratios(t, np.array([r.q_plan for r in executor.history]), panda.LIMITS)
        assert max(ratios.values()) <= 1.0 and executor.safety.stats()["total"] == 0
        assert executor.stats()["adopted"] >= 3  # the splices continued exactly what was executing
    finally:
        client.close()
        server.close()
        camera.stop()
