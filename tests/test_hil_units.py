"""HIL building blocks: scenario validation, the lossy proxy, the faulty camera, the command audit, answer faults."""

from __future__ import annotations

import time

import numpy as np
import pytest
from conftest import wait_until

from robot_stack.clock import FakeClock
from robot_stack.errors import CameraError, ConfigError, RequestTimeoutError
from robot_stack.hil.audit import RecordingRobot
from robot_stack.hil.faults import FaultyCamera, NetworkProxy, apply_push
from robot_stack.hil.metrics import _BOUNDS, evaluate, plan_audit
from robot_stack.hil.scenario import EXPECTATION_KEYS, Scenario
from robot_stack.hil.server import FaultInjectingService
from robot_stack.robots import panda
from robot_stack.sim.camera import SimCamera
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.world import SimWorld
from robot_stack.transport.client import PolicyClient
from robot_stack.transport.server import PolicyServer


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"name": "x", "faults": [{"kind": "quake"}]}, "kind"),
        ({"name": "x", "faults": [{"kind": "network", "delay": 5}]}, "unknown parameters"),
        ({"name": "x", "faults": [{"kind": "policy", "mode": "evil"}]}, "policy mode"),
        ({"name": "x", "faults": [{"kind": "policy", "mode": "reach"}]}, "target"),
        ({"name": "x", "faults": [{"kind": "network", "loss": 2}]}, "probability"),
        ({"name": "x", "faults": [{"kind": "partition", "start_s": 3, "end_s": 1}]}, "start_s < end_s"),
        ({"name": "x", "expect": {"unsafe_commands_max": 5}}, "unknown expectations"),
        ({"name": "x", "durration_s": 3}, "unknown keys"),
        ({"name": "x", "workspace": {"lower": [0, 0, 0], "upper": [1, -1, 1]}}, "below"),
    ],
)
def test_scenario_typos_and_bad_values_are_errors(raw: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Scenario.from_dict(raw, "test.yaml")


def test_every_expectation_key_is_checked() -> None:
    special = {"success", "success_after_faults", "stale_min", "safety_interventions_min", "warnings_min"}
    assert set(EXPECTATION_KEYS) == special | set(_BOUNDS)
    metrics = {metric: 1 for metric, _ in _BOUNDS.values()}
    metrics.update(
        unsafe_commands=0,
        actions_from_stale_data=0,
        commands=10,
        task_success=True,
        success_after_faults=True,
        stale={},
        safety_interventions={},
        injectors={},
        traced_commands=10,
        interventions_outside_faults=0,
    )
    scenario = Scenario("x", expect={"holds_min": 2, "time_to_recover_max_s": 5.0})
    checks = {c.name: c.ok for c in evaluate(scenario, metrics)}
    assert checks == {
        "unsafe_commands": True,
        "actions_from_stale_data": True,
        "commands_sent": True,
        "plan_audited": True,
        "interventions_outside_faults": True,
        "holds_min": False,
        "time_to_recover_max_s": True,
    }
    # plans are feasible by construction: one intervention outside the fault windows fails any scenario
    metrics["interventions_outside_faults"] = 1
    checks = {c.name: c.ok for c in evaluate(scenario, metrics)}
    assert checks["interventions_outside_faults"] is False


def test_the_plan_audit_sees_the_plan_before_the_filter_and_places_every_intervention_in_time() -> None:
    # the executor hands the audit each tick's trace: the plan's own set-point, its state, the filter's count. A plan
    # that leads past a joint limit (ruckig has no position limits) is clamped by the filter: fault events, inside
    # a fault window or not, and the plan-vs-sent deviation shows it
    from robot_stack.control.executor import Executor
    from robot_stack.control.plan import MotionPlan
    from robot_stack.sim.kinematic import KinematicRobot

    clock = FakeClock(start_ns=10**9)
    robot = RecordingRobot(KinematicRobot(clock=clock), clock.now_ns, 0.002)
    ex = Executor(robot, clock, 500.0, watchdog_timeout_s=5.0)

    def run(seconds: float) -> None:
        for _ in range(round(seconds / 0.002)):
            clock.advance(2_000_000)
            ex.tick(clock.now_ns())

    ex.tick(clock.now_ns())
    run(0.2)
    clean = plan_audit(robot)
    assert clean["traced_commands"] == 101 and clean["interventions"] == 0
    assert clean["plan_vs_executed_max_mrad"] == 0.0 and clean["prefilter_velocity_ratio"] == 0.0
    t_fault = clock.now_ns()
    beyond = panda.HOME_Q.copy()
    beyond[0] = panda.LIMITS.upper[0] + 0.2
    assert ex.set_plan(MotionPlan.hold(panda.ARM_JOINTS, beyond, t_fault + 10_000_000, 1.0))
    run(3.0)
    audit = plan_audit(robot)
    assert audit["interventions"] > 0 and audit["interventions"] == ex.safety.stats()["total"]
    assert audit["interventions_outside_faults"] == audit["interventions"]
    inside = plan_audit(robot, [(t_fault, clock.now_ns())])
    assert inside["interventions_outside_faults"] == 0
    assert audit["prefilter_acceleration_ratio"] <= 1.0  # the plan itself is within the dynamic limits
    assert audit["plan_vs_executed_max_mrad"] > 100.0  # the filter held the joint short of the limit


def test_a_time_bound_fails_when_the_event_never_happened() -> None:
    metrics = {
        "unsafe_commands": 0,
        "actions_from_stale_data": 0,
        "commands": 10,
        "time_to_safe_hold_s": None,
        "traced_commands": 10,
        "interventions_outside_faults": 0,
    }
    (*_, check) = evaluate(Scenario("x", expect={"time_to_safe_hold_max_s": 1.0}), metrics)
    assert not check.ok


@pytest.fixture()
def echo_server():
    server = PolicyServer(lambda arrays, meta: ({"y": np.asarray(arrays["x"]) * 2}, {}), "tcp://127.0.0.1:*").start()
    yield server
    server.close()


def test_proxy_forwards_delays_drops_and_partitions(echo_server) -> None:
    proxy = NetworkProxy(echo_server.endpoint, seed=1)
    client = PolicyClient(proxy.endpoint, "r", timeout_s=2.0)
    try:
        x = np.arange(4, dtype=np.float32)
        assert np.array_equal(client.infer({"x": x}).arrays["y"], 2 * x)
        proxy.set(delay_ms=60)
        assert client.infer({"x": x}).timing.round_trip_ms >= 120  # held 60 ms each way, never less
        proxy.set(partition=True)
        with pytest.raises(RequestTimeoutError):
            client.infer({"x": x}, timeout_s=0.3)
        # on a loaded host the proxy thread may reach the request only after the client gave up: switch the link
        # only once the proxy has handled it (a bounded wait for an event, not a timing assertion)
        assert wait_until(lambda: proxy.counts["dropped_up"] >= 1, poll_s=0.005), "condition not reached in time"
        proxy.set(loss=1.0)
        with pytest.raises(RequestTimeoutError):
            client.infer({"x": x}, timeout_s=0.3)
        assert wait_until(lambda: proxy.counts["dropped_up"] >= 2, poll_s=0.005), "condition not reached in time"
        proxy.set()
        assert np.array_equal(client.infer({"x": x}).arrays["y"], 2 * x)  # the link heals, the client reconnected
        # the proxy counts a reply once its send returned, which can be after the client already has it
        assert wait_until(lambda: proxy.counts["forwarded_down"] >= 3, poll_s=0.005), dict(proxy.counts)
        assert proxy.counts["dropped_up"] == 2
    finally:
        client.close()
        proxy.close()


def test_proxy_refuses_non_loopback_endpoints() -> None:
    with pytest.raises(ConfigError, match="loopback"):
        NetworkProxy("tcp://10.0.0.1:5555")


def test_faulty_camera_modes() -> None:
    clock = FakeClock(start_ns=1_000_000_000)
    world = SimWorld(clock=clock)
    cam = FaultyCamera(SimCamera(world, width=160, height=120))
    cam.start()
    try:
        good = cam.read()
        cam.set_mode("frozen")
        clock.advance(50_000_000)
        assert cam.read() is good
        cam.set_mode("no_depth")
        assert not np.any(cam.read().depth)
        cam.set_mode("drop")
        with pytest.raises(CameraError, match="dropped"):
            cam.read()
        cam.set_mode("late", late_ms=100)
        for _ in range(5):
            clock.advance(40_000_000)
            frame = cam.read()
        assert clock.now_ns() - frame.t_capture_ns >= 100_000_000
        assert cam.injected == {"frozen": 1, "no_depth": 1, "drop": 1, "late": 5}
    finally:
        cam.stop()


def test_recording_robot_flags_every_limit_breach() -> None:
    world = SimWorld(clock=FakeClock())
    robot = RecordingRobot(SimRobot(world), lambda: 0, period_s=0.002)
    q = panda.HOME_Q.copy()
    for _ in range(4):
        robot.command(q)  # at rest: safe
    assert robot.unsafe_total == 0
    step = q.copy()
    step[0] += 0.01  # 5 rad/s over 2 ms: velocity, acceleration and jerk all broken
    robot.command(step)
    assert robot.unsafe["velocity"] == 1 and robot.unsafe["acceleration"] == 1 and robot.unsafe["jerk"] == 1
    beyond = panda.LIMITS.upper + 0.1
    with pytest.raises(Exception):  # noqa: B017 - SimRobot's own refusal, after the audit counted it
        robot.command(beyond)
    assert robot.unsafe["position"] == 1 and robot.commands == 6


def test_recording_robot_forgets_its_record_but_not_its_audit() -> None:
    world = SimWorld(clock=FakeClock())
    robot = RecordingRobot(SimRobot(world), lambda: 0, period_s=0.002)
    q = panda.HOME_Q.copy()
    for _ in range(3):
        robot.command(q)
    robot.clear_record()
    assert robot.q_cmd == [] and robot.t_ns == [] and robot.states == [] and robot.episode_starts == [0]
    step = q.copy()
    step[0] += 0.01  # judged against the commands before the clear
    robot.command(step)
    assert robot.unsafe["velocity"] == 1 and robot.commands == 4 and len(robot.q_cmd) == 1


def test_recording_robot_monitor_latches_a_touch_between_policy_cycles() -> None:
    from robot_stack.sim.task import ReachTouchTask

    world = SimWorld(clock=FakeClock())
    task = ReachTouchTask(world)
    task.reset(3)
    robot = RecordingRobot(SimRobot(world), lambda: 0, period_s=0.002, state_every=5)
    robot.monitor = task.is_success
    with world.lock:
        offset = world.cube_top_center() - world.cube_pose().translation
        tcp = world.tcp_pose().translation
    world.set_cube_pose(tcp - offset)  # the cube's top face at the TCP: a touch
    q = panda.HOME_Q.copy()
    for _ in range(5):
        robot.command(q)
    world.set_cube_pose(tcp - offset + np.array([0.2, 0.0, 0.0]))  # gone again before anyone asked the task
    assert task.time_to_success_s is not None and task.tcp_distance_m() > task.touch_radius_m

    def broken() -> None:
        raise RuntimeError("monitor bug")

    robot.monitor = broken
    for _ in range(10):
        robot.command(q)  # the failure is logged, the monitor dropped, commands keep flowing
    assert robot.monitor is None and robot.commands == 15


def test_push_applies_and_clears_an_external_force() -> None:
    world = SimWorld(clock=FakeClock())
    apply_push(world, "panda_hand", [0.0, 50.0, 0.0])
    assert np.count_nonzero(world.data.xfrc_applied) == 1
    apply_push(world, "panda_hand", None)
    assert not np.any(world.data.xfrc_applied)


def test_answer_faults_wrap_the_real_model() -> None:
    from robot_stack.policy.manifest import DEMO_MANIFEST as DEFAULT_MANIFEST
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.service import PolicyService

    service = FaultInjectingService(
        PolicyService.from_manifest(PolicyManifest.load(DEFAULT_MANIFEST), "cpu", threads=1)
    )
    state = np.zeros(11, np.float32)
    state[7:10] = [0.3, 0.0, 0.5]
    arrays = {
        "front/rgb": np.zeros((480, 640, 3), np.uint8),
        "front/xyz": np.full((480, 640, 3), np.nan, np.float32),
        "state": state,
    }
    clean = np.asarray(service(arrays, {})[0]["actions"])
    assert np.all(np.isfinite(clean))
    service.set_faults({"mode": "nan"})
    assert np.isnan(service(arrays, {})[0]["actions"]).any()
    service.set_faults({"mode": "out_of_range"})
    assert np.all(service(arrays, {})[0]["actions"] == 5.0)
    service.set_faults({"mode": "reach", "target": [0.8, 0.0, 0.1], "speed_m_per_step": 0.05})
    reach = np.asarray(service(arrays, {})[0]["actions"])
    assert np.allclose(np.linalg.norm(reach[0]), 0.05, atol=1e-6)
    service.set_faults({"mode": "slow", "sleep_ms": 80})
    t = time.perf_counter()
    slow = np.asarray(service(arrays, {})[0]["actions"])
    assert time.perf_counter() - t >= 0.08 and np.allclose(slow, clean)
    with pytest.raises(ConfigError):
        service.set_faults({"mode": "evil"})
