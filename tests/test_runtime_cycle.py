"""The robot-side policy cycle: stale data never reaches the policy, failures never reach the executor."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.errors import CameraError
from robot_stack.runtime import GuardConfig, ObservationGuard, PolicyCycle
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


def test_pipelined_cycle_captures_the_next_observation_while_the_request_is_in_flight(rig) -> None:
    cycle, camera, _, requests, _, clock = rig
    cycle.pipeline_period_s = 1e-6  # every cycle is "slower than the period": prefetch from the second one on
    _advancing(camera, clock)
    seqs = []
    for step in range(4):
        result = cycle.run({"step": step}, step)
        assert result.ok, result
        seqs.append(result.observation.t_obs_ns)
        clock.advance(10_000_000)
    cycle.close()
    assert cycle.prefetch_counts["used"] >= 2
    assert len(requests) == 4 and len(set(seqs)) == 4  # every cycle sent a different capture


def test_prefetched_frame_too_old_is_replaced_by_a_fresh_capture(rig) -> None:
    cycle, camera, _, requests, _, clock = rig
    cycle.pipeline_period_s = 1e-6
    _advancing(camera, clock)
    assert cycle.run().ok
    assert cycle.run().ok  # starts a prefetch for the next cycle
    cycle._prefetch.take()  # the capture is done before the clock jumps
    clock.advance(200_000_000)  # the prefetched frame is now older than half the guard's max age
    result = cycle.run()
    assert result.ok and cycle.prefetch_counts["discarded_old"] == 1
    assert clock.now_ns() - result.observation.t_obs_ns < 50_000_000


def test_reach_policy_raises_targets_below_the_floor() -> None:
    from robot_stack.control.ik import panda_ik
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.decoders.geometry import ReachPolicy, solve_pose_sequence_checked
    from robot_stack.robots.panda import HOME_Q
    from robot_stack.types import Pose

    ik = panda_ik()
    targets = [Pose(R_DOWN, np.array([0.45, 0.0, z]), "base", "tcp") for z in (0.10, 0.02, -0.05)]
    solved = solve_pose_sequence_checked(ik, targets, HOME_Q, 100, "test", ReachPolicy(floor_z_m=0.02))
    assert list(solved.kept) == [0, 1, 2] and solved.clamped == (2,)
    assert ik.fk_xyz(solved.positions[2])[2] == pytest.approx(0.02, abs=1e-3)


def test_reply_estimate_follows_a_slowdown_at_once_and_a_speedup_gradually(rig) -> None:
    # a prefetch timed by a lagging estimate at the onset of a slow model finishes long before the reply and is
    # discarded as too old (an extra capture on the critical path); the estimate must jump to the slow reply time
    cycle, _, mode, _, _, clock = rig
    assert cycle.run().ok
    fast = cycle._reply_est_s
    mode["answer"] = "slow"
    clock.advance(20_000_000)
    assert cycle.run().ok
    slow = cycle._reply_est_s
    assert slow >= 0.15 > fast
    mode["answer"] = "good"
    clock.advance(20_000_000)
    assert cycle.run().ok
    assert 0.5 * slow <= cycle._reply_est_s < slow
