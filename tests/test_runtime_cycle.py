"""The robot-side policy cycle: stale data never reaches the policy, failures never reach the executor."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor
from robot_stack.cycle import GuardConfig, ObservationGuard, PolicyCycle
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.errors import CameraError
from robot_stack.sim.camera import SimCamera
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.world import SimWorld
from robot_stack.transport.client import PolicyClient
from robot_stack.transport.server import PolicyServer
from robot_stack.types import Frame


def _frame(seq: int, t_ns: int, depth_value: int = 800) -> Frame:
    color = np.full((48, 64, 3), seq % 255, np.uint8)
    return Frame(color, np.full((48, 64), depth_value, np.uint16), 0.001, t_ns, "front", seq)


def test_guard_flags_late_frozen_and_depthless_frames() -> None:
    guard = ObservationGuard(GuardConfig(max_age_s=0.1))
    assert guard.check(_frame(1, 0), now_ns=50_000_000) is None
    assert guard.check(_frame(2, 10_000_000), now_ns=200_000_000) == "late"
    assert guard.check(_frame(2, 10_000_000), now_ns=20_000_000) == "frozen"  # same seq and capture time again
    assert guard.check(_frame(3, 30_000_000, depth_value=0), now_ns=40_000_000) == "no_depth"
    assert guard.check(_frame(4, 50_000_000), now_ns=60_000_000) is None
    assert guard.rejections == {"late": 1, "frozen": 1, "no_depth": 1}


def test_guard_pixel_comparison_catches_a_restamped_frozen_image() -> None:
    guard = ObservationGuard(GuardConfig(compare_pixels=True))
    first = _frame(1, 0)
    assert guard.check(first, 1) is None
    restamped = dataclasses.replace(first, seq=2, t_capture_ns=10)
    assert guard.check(restamped, 11) == "frozen"


class _Camera(SimCamera):
    """The real sim camera, with switchable faults."""

    fault: str | None = None
    _held: Frame | None = None

    def read(self) -> Frame:
        if self.fault == "unplugged":
            raise CameraError("camera 'front' disconnected")
        if self.fault == "frozen" and self._held is not None:
            return self._held
        self._held = super().read()
        if self.fault == "no_depth":
            return dataclasses.replace(self._held, depth=np.zeros_like(self._held.depth))
        return self._held


@pytest.fixture()
def rig():
    clock = FakeClock(start_ns=1_000_000_000)
    world = SimWorld(clock=clock)
    world.reset(seed=3)
    robot = SimRobot(world)
    camera = _Camera(world)
    camera.start()
    projector = load_calibration("sim_tabletop", "front").projector()
    mode = {"answer": "good"}
    requests = []

    def handler(arrays, meta):
        requests.append(meta)
        actions = np.cumsum(np.full((8, 3), [0.002, 0.0, -0.002], np.float32), axis=0) - [0.002, 0.0, -0.002]
        if mode["answer"] == "nan":
            actions[3, 1] = np.nan
        if mode["answer"] == "wrong_shape":
            actions = actions[:, :2].copy()
        if mode["answer"] == "slow":
            time.sleep(0.15)  # a slow model (real time: the cycle measures its reply time on perf_counter)
        return {"actions": actions}, {"dt_s": 0.1, "horizon": 8, "action_space": "ee_delta_xyz", "model_id": "t"}

    server = PolicyServer(handler, bind="tcp://127.0.0.1:*").start()
    client = PolicyClient(server.endpoint, robot_id="test", timeout_s=2.0)
    executor = Executor(robot, clock)
    cycle = PolicyCycle([(camera, projector)], robot, client, EeDeltaXyzDecoder(orientation="down"), executor, clock)
    yield cycle, camera, mode, requests, server, clock
    client.close()
    server.close()
    camera.stop()


def test_a_good_cycle_hands_a_trajectory_to_the_executor(rig) -> None:
    cycle, _, _, requests, _, _ = rig
    result = cycle.run({"step": 0})
    assert result.ok, result
    assert result.trajectory is not None and len(result.trajectory) == 8
    assert result.observation.cameras[0].xyz_base.shape == (480, 640, 3)
    assert len(requests) == 1 and requests[0]["t_obs_ns"] == result.observation.t_obs_ns
    for stage in ("capture", "xyz", "network", "inference", "decode", "overhead_beyond_inference"):
        assert cycle.times.summary()[stage]["n"] == 1


@pytest.mark.parametrize("fault,outcome", [("frozen", "stale:frozen"), ("no_depth", "stale:no_depth")])
def test_stale_camera_data_never_reaches_the_policy(rig, fault: str, outcome: str) -> None:
    cycle, camera, _, requests, _, clock = rig
    assert cycle.run().ok
    camera.fault = fault
    clock.advance(20_000_000)
    result = cycle.run()
    assert result.outcome == outcome and result.trajectory is None
    assert len(requests) == 1  # only the good cycle asked the server


def test_an_observation_that_ages_while_it_is_encoded_is_never_sent(rig) -> None:
    # the guard passes a fresh frame; packing and encoding then take long enough (a loaded host) for the
    # observation to pass its age limit: its age is measured at the moment the request would leave (not estimated
    # from earlier encodings), so the first such request is refused and nothing reaches the server
    cycle, _, _, requests, _, clock = rig
    client = cycle.client
    real_infer = client.infer

    def slow_encoding(arrays, meta=None, timeout_s=None, before_send=None):
        clock.advance(300_000_000)  # 0.3 s pass between the guard and the send: older than the 0.25 s limit
        return real_infer(arrays, meta, timeout_s, before_send)

    client.infer = slow_encoding
    result = cycle.run()
    assert result.outcome == "stale:late" and "when sent" in result.detail
    assert requests == [] and client.refused_stale == 1 and cycle.guard.rejections["late"] == 1


def test_late_frame_is_refused(rig) -> None:
    cycle, camera, _, requests, _, clock = rig
    camera.fault = "frozen"
    assert cycle.run().ok  # first frame is fresh
    clock.advance(400_000_000)  # the held frame is now 0.4 s old
    assert cycle.run().outcome == "stale:late"
    assert len(requests) == 1


def test_unplugged_camera_is_a_reported_outcome_not_a_crash(rig) -> None:
    cycle, camera, *_ = rig
    camera.fault = "unplugged"
    result = cycle.run()
    assert result.outcome == "camera" and "disconnected" in result.detail
    camera.fault = None
    assert cycle.run().ok  # recovers when the camera returns


@pytest.mark.parametrize("answer,outcome", [("nan", "decode"), ("wrong_shape", "decode")])
def test_bad_policy_answers_never_reach_the_executor(rig, answer: str, outcome: str) -> None:
    cycle, _, mode, _, _, _ = rig
    mode["answer"] = answer
    result = cycle.run()
    assert result.outcome == outcome and result.trajectory is None
    assert cycle.executor.stats()["trajectories_accepted"] == 0
    assert cycle.outcomes[outcome] == 1


def test_dead_server_is_a_transport_outcome(rig) -> None:
    cycle, _, _, _, server, _ = rig
    server.close()
    cycle.timeout_s = 0.3
    result = cycle.run()
    assert result.outcome == "transport" and result.trajectory is None


def _advancing(camera, clock, step_ns: int = 5_000_000) -> None:
    """Every capture happens ``step_ns`` later on the fake clock (a real camera's frames are never simultaneous)."""
    read = camera.read

    def later() -> Frame:
        clock.advance(step_ns)
        return read()

    camera.read = later


@pytest.mark.parametrize("send_ahead", [False, True])
def test_pipelined_cycle_captures_the_next_observation_while_the_request_is_in_flight(rig, send_ahead) -> None:
    cycle, camera, _, requests, _, clock = rig
    cycle.timing.period_s = 1e-6  # every cycle is "slower than the period": prefetch from the second one on
    cycle.timing.send_ahead = send_ahead
    _advancing(camera, clock)
    seqs, sent = [], []
    for step in range(4):
        result = cycle.run({"step": step}, step)
        assert result.ok, result
        seqs.append(result.observation.t_obs_ns)
        sent.append(len(requests))
        clock.advance(10_000_000)
    cycle.close()
    assert cycle.prefetch_counts["used"] >= 2
    assert len(set(seqs)) == 4  # every cycle acted on a different capture
    assert [r["t_obs_ns"] for r in requests[:4]] == seqs
    if send_ahead:
        # from the first slow cycle on, the next request is sent as soon as an answer is back, before it is
        # decoded: one request in flight, whose answer the next cycle uses; the last one is dropped by close()
        assert len(requests) == 5
    else:
        assert sent == [1, 2, 3, 4]


def test_prefetched_frame_too_old_is_replaced_by_a_fresh_capture(rig) -> None:
    cycle, camera, _, requests, _, clock = rig
    from robot_stack.cycle.pipelining import Prefetch as _Prefetch

    _advancing(camera, clock)
    assert cycle.run().ok
    cycle._prefetch = _Prefetch(cycle._capture, 0.0)  # as a slow cycle schedules it
    cycle._prefetch.take()  # the capture is done before the clock jumps
    clock.advance(200_000_000)  # the prefetched frame is now older than 0.6 of the guard's max age
    result = cycle.run()
    assert result.ok and cycle.prefetch_counts["discarded_old"] == 1
    assert clock.now_ns() - result.observation.t_obs_ns < 50_000_000


def test_reach_policy_raises_targets_below_the_floor() -> None:
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.kinematics.ik import panda_ik
    from robot_stack.kinematics.reach import ReachPolicy, solve_pose_sequence_checked
    from robot_stack.robots.panda import HOME_Q
    from robot_stack.types import Pose

    ik = panda_ik()
    targets = [Pose(R_DOWN, np.array([0.45, 0.0, z]), "base", "tcp") for z in (0.10, 0.02, -0.05)]
    solved = solve_pose_sequence_checked(ik, targets, HOME_Q, 100, "test", ReachPolicy(floor_z_m=0.02))
    assert list(solved.kept) == [0, 1, 2] and solved.clamped == (2,)
    assert ik.fk_xyz(solved.positions[2])[2] == pytest.approx(0.02, abs=1e-3)


def test_reach_policy_keeps_targets_inside_a_workspace_box() -> None:
    # a workspace box the safety filter enforces is kept by the plan itself: targets outside are moved onto it
    # before the IK (counted as changed steps, like the floor), so the filter only watches the box
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.kinematics.ik import panda_ik
    from robot_stack.kinematics.reach import ReachPolicy, ReachStats, solve_pose_sequence_checked
    from robot_stack.robots.panda import HOME_Q
    from robot_stack.types import Pose

    ik = panda_ik()
    stats = ReachStats()
    reach = ReachPolicy(box_lower=(0.2, -0.3, 0.05), box_upper=(0.6, 0.3, 0.6), stats=stats)
    targets = [Pose(R_DOWN, np.array([x, 0.0, 0.3]), "base", "tcp") for x in (0.45, 0.58, 0.75)]
    solved = solve_pose_sequence_checked(ik, targets, HOME_Q, 100, "test", reach)
    assert list(solved.kept) == [0, 1, 2] and solved.clamped == (2,)
    assert ik.fk_xyz(solved.positions[2])[0] == pytest.approx(0.6, abs=1e-3)
    assert stats.last_fraction == pytest.approx(1 / 3) and stats.last_tcp_goal[1][0] == pytest.approx(0.6)


def test_the_stack_keeps_decoder_targets_inside_the_filters_braking_margin() -> None:
    from robot_stack.stack import build_decoder, load_stack_config
    from robot_stack.stack.build import TARGET_BOX_SLACK_M

    config = load_stack_config(
        "demo", ["control.workspace_lower=[0.15, -0.45, 0.01]", "control.workspace_upper=[0.70, 0.45, 0.80]"]
    )
    decoder, _ = build_decoder(config, "continuous", "ee_delta_xyz")
    inset = config.control.workspace_margin_m + TARGET_BOX_SLACK_M
    np.testing.assert_allclose(decoder.reach.box_upper, np.array([0.70, 0.45, 0.80]) - inset)
    np.testing.assert_allclose(decoder.reach.box_lower, np.array([0.15, -0.45, 0.01]) + inset)
    assert build_decoder(load_stack_config("demo"), "continuous", "ee_delta_xyz")[0].reach.box_upper is None


def test_reply_estimate_follows_a_slowdown_at_once_and_a_speedup_gradually(rig) -> None:
    # a prefetch timed by a lagging estimate at the onset of a slow model finishes long before the reply and is
    # discarded as too old (an extra capture on the critical path); the estimate must jump to the slow reply time
    cycle, _, mode, _, _, clock = rig
    assert cycle.run().ok
    fast = cycle.timing.reply_s
    mode["answer"] = "slow"
    clock.advance(20_000_000)
    assert cycle.run().ok
    slow = cycle.timing.reply_s
    assert slow >= 0.15 > fast
    mode["answer"] = "good"
    clock.advance(20_000_000)
    assert cycle.run().ok
    assert 0.5 * slow <= cycle.timing.reply_s < slow


def test_reach_stats_record_the_changed_steps_of_each_sequence() -> None:
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.kinematics.ik import panda_ik
    from robot_stack.kinematics.reach import ReachPolicy, ReachStats, solve_pose_sequence_checked
    from robot_stack.robots.panda import HOME_Q
    from robot_stack.types import Pose

    stats = ReachStats()
    assert stats.last_fraction == 0.0
    targets = [Pose(R_DOWN, np.array([0.45, 0.0, z]), "base", "tcp") for z in (0.10, 0.05, -0.05, -0.08)]
    solve_pose_sequence_checked(panda_ik(), targets, HOME_Q, 100, "test", ReachPolicy(floor_z_m=0.02, stats=stats))
    assert stats.last_fraction == 0.5 and (stats.sequences, stats.steps, stats.changed) == (1, 4, 2)
    # the goal is the last target raised to the floor, measured from the TCP the sequence started at
    tcp, goal = stats.last_tcp_goal
    np.testing.assert_allclose(tcp, panda_ik().fk_xyz(HOME_Q))
    np.testing.assert_allclose(goal, [0.45, 0.0, 0.02])
    assert stats.last_goal_distance_m == pytest.approx(np.linalg.norm(goal - tcp))


def test_retreat_is_rest_to_rest_within_the_fraction_of_every_limit() -> None:
    # the retreat's waypoints (for sinks that take waypoints, e.g. a ROS topic) sample ruckig's time-optimal
    # jerk-limited move: rest to rest, every derivative within the fraction of its limit, no slower than that allows
    from robot_stack.control.audit import stream_ratios
    from robot_stack.cycle import retreat_trajectory
    from robot_stack.robots import panda

    q_from = panda.HOME_Q + np.array([0.8, -0.3, 0.5, 0.4, -0.6, 0.3, 1.2])
    traj = retreat_trajectory(panda.ARM_JOINTS, q_from, panda.HOME_Q, panda.LIMITS, 10**9, 0.5, dt_s=0.002)
    np.testing.assert_allclose(traj.positions[0], q_from, atol=1e-12)
    np.testing.assert_allclose(traj.positions[-1], panda.HOME_Q, atol=1e-12)
    ratios = stream_ratios(traj.t_ns, traj.positions, panda.LIMITS)
    assert max(ratios.values()) <= 0.5 + 1e-6, ratios
    assert ratios["velocity"] == pytest.approx(0.5, rel=0.02)  # the longest joint cruises at its velocity cap
    dt = np.diff(traj.t_ns) * 1e-9
    v = np.diff(traj.positions, axis=0) / dt[:, None]
    edge = 0.5 * panda.LIMITS.acceleration * 0.002  # at rest at both ends: one tick of acceleration at most
    assert np.all(np.abs(v[0]) <= edge) and np.all(np.abs(v[-1]) <= edge)


def test_recovery_config_is_validated() -> None:
    from robot_stack.cycle import RecoveryConfig
    from robot_stack.errors import ConfigError
    from robot_stack.robots.panda import HOME_Q

    for bad in (
        {"blocked_cycles": 0},
        {"min_changed_fraction": 0.0},
        {"speed_fraction": 1.5},
        {"resume_lead_s": -1},
        {"near_goal_m": -0.1},
    ):
        with pytest.raises(ConfigError):
            RecoveryConfig(HOME_Q, **bad)


def test_a_policy_stuck_at_a_limit_is_taken_back_to_its_start_posture_then_resumed(rig) -> None:
    from robot_stack.cycle import RecoveryConfig
    from robot_stack.kinematics.reach import ReachPolicy, ReachStats
    from robot_stack.robots.panda import HOME_Q

    old, camera, _, requests, _, clock = rig
    stats = ReachStats()
    # a floor above the arm: every step the policy asks for is changed (raised) before execution
    decoder = EeDeltaXyzDecoder(orientation="down", reach=ReachPolicy(floor_z_m=0.9, clamp_m=1.0, stats=stats))
    home = HOME_Q + 0.1
    recovery = RecoveryConfig(home, reach_stats=stats, blocked_cycles=3, resume_lead_s=0.1)
    cycle = PolicyCycle(
        [(camera, old.cameras[0][1])], old.robot, old.client, decoder, old.executor, clock, recovery=recovery
    )
    for step in range(3):
        clock.advance(50_000_000)
        assert cycle.run({}, step).ok
    assert cycle.recoveries == 1 and stats.last_fraction == 1.0
    retreat = old.executor._pending  # the retreat: a ruckig move to rest at the start posture (a MotionPlan)
    np.testing.assert_allclose(retreat.end_state.q, home, atol=1e-9)
    assert retreat.ends_at_rest() and retreat.policy_end_ns is None  # the watchdog never cuts it short
    n_requests = len(requests)
    clock.advance(50_000_000)
    assert cycle.run({}, 3).outcome == "recovering" and len(requests) == n_requests  # no policy request
    clock.advance(int(retreat.end_ns) - 50_000_000 - clock.now_ns())  # within the last 0.1 s: the policy runs again
    assert cycle.run({}, 4).ok and len(requests) == n_requests + 1
    assert cycle.outcomes["recovering"] == 1


def test_a_policy_near_its_goal_or_getting_closer_is_not_stuck(rig) -> None:
    # a policy touching down on its target asks for steps below the floor (raised: most of the chunk changed), and
    # one sliding along a limit towards its goal has most of its chunk clamped: neither may be sent home
    from robot_stack.cycle import RecoveryConfig
    from robot_stack.kinematics.reach import ReachStats
    from robot_stack.robots.panda import HOME_Q

    old, camera, *_ = rig
    stats = ReachStats()
    recovery = RecoveryConfig(HOME_Q, reach_stats=stats, blocked_cycles=3, near_goal_m=0.05, progress_m=0.02)
    cycle = PolicyCycle(
        [(camera, old.cameras[0][1])], old.robot, old.client, old.decoder, old.executor, old.clock, recovery=recovery
    )
    goal = np.array([0.5, 0.0, 0.015])
    for step in range(10):  # at the goal: every step changed (raised over the floor), the TCP 2 cm from the goal
        stats.record(8, 8, goal + [0.02, 0.0, 0.0], goal)
        cycle.recovery.check(step)
    assert cycle.recoveries == 0
    for step in range(10):  # far, but the TCP 3 cm closer every cycle
        stats.record(8, 8, goal + [0.5 - 0.03 * step, 0.0, 0.0], goal)
        cycle.recovery.check(step)
    assert cycle.recoveries == 0
    cycle.recovery._safety_limited_fraction = lambda: 1.0  # the safety filter holds the arm at the box face ...
    for step in range(3):  # ... right where the policy aims: stuck all the same
        stats.record(8, 8, goal + [0.02, 0.0, 0.0], goal)
        cycle.recovery.check(step)
    assert cycle.recoveries == 1
    cycle.recovery._safety_limited_fraction = lambda: 0.0
    for step in range(3):  # far, the TCP following a goal that wanders along the limit: stuck
        stats.record(8, 8, goal + [0.3, 0.05 * step, 0.0], goal + [0.25, 0.1 * step, 0.0])
        cycle.recovery.check(step)
    assert cycle.recoveries == 2


def test_a_long_blocked_run_triggers_the_retreat_even_with_few_cycles(rig) -> None:
    # on a loaded host cycles slow down: an arm stuck for blocked_s is stuck however few cycles that took
    from robot_stack.cycle import RecoveryConfig
    from robot_stack.errors import ConfigError
    from robot_stack.kinematics.reach import ReachStats
    from robot_stack.robots.panda import HOME_Q

    old, camera, *_, clock = rig
    stats = ReachStats()
    recovery = RecoveryConfig(HOME_Q, reach_stats=stats, blocked_cycles=100, blocked_s=1.0)
    cycle = PolicyCycle(
        [(camera, old.cameras[0][1])], old.robot, old.client, old.decoder, old.executor, clock, recovery=recovery
    )
    far = np.array([0.7, 0.0, 0.015])
    for step in range(3):
        stats.record(8, 8, far + [-0.3, 0.0, 0.3], far)
        cycle.recovery.check(step)
        assert cycle.recoveries == (1 if step == 2 else 0)  # 3 cycles over 1.2 s
        clock.advance(600_000_000)
    with pytest.raises(ConfigError):
        RecoveryConfig(HOME_Q, blocked_s=-1.0)


def test_the_instruction_and_the_depth_form_travel_with_the_request() -> None:
    """A model that takes the depth form and a batch axis (its metadata says so): the robot sends uint16 depth + the
    calibration (versioned) with a leading axis of 1, computes no XYZ, sends the instruction text; the one-row chunk
    of the answer is unpacked."""
    from robot_stack.cycle import RequestLayout

    clock = FakeClock(start_ns=1_000_000_000)
    world = SimWorld(clock=clock)
    robot = SimRobot(world)
    camera = SimCamera(world)
    camera.start()
    calibration = load_calibration("sim_tabletop", "front")
    seen = []

    def handler(arrays, meta):
        seen.append(({k: (v.shape, v.dtype.name) for k, v in arrays.items()}, dict(meta)))
        return {"actions": np.zeros((1, 8, 3), np.float32)}, {"dt_s": 0.1, "horizon": 8, "action_space": "ee_delta_xyz"}

    metadata = {
        "request_inputs": [{"name": "front/depth", "shape": [-1, 480, 640]}, {"name": "state", "shape": [-1, 11]}]
    }
    layout = RequestLayout.from_metadata(metadata)
    assert layout == RequestLayout(depth_form=True, batched=True)
    assert RequestLayout.from_metadata({"request_inputs": [{"name": "state", "shape": [11]}]}) == RequestLayout()
    with PolicyServer(handler, bind="tcp://127.0.0.1:*") as server:
        client = PolicyClient(server.endpoint, robot_id="test", timeout_s=2.0)
        cycle = PolicyCycle(
            [(camera, calibration.projector())],
            robot,
            client,
            EeDeltaXyzDecoder(orientation="down"),
            Executor(robot, clock),
            clock,
            task="touch the blue cylinder",
            layout=layout,
        )
        result = cycle.run({"step": 0})
        client.close()
    camera.stop()
    assert result.ok, result
    arrays, meta = seen[0]
    assert arrays == {
        "state": ((1, 11), "float32"),
        "front/rgb": ((1, 480, 640, 3), "uint8"),
        "front/depth": ((1, 480, 640), "uint16"),
        "front/calib": ((1, 17), "float32"),
    }
    assert meta["task"] == "touch the blue cylinder"
    assert meta["calibration"] == {"front": calibration.version}
    assert result.observation.cameras[0].xyz_base is None  # the robot did not project the depth
    assert result.chunk is not None and result.chunk.actions.shape == (8, 3)
