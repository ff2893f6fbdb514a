"""Plans keep the workspace box by construction: the safety filter's box model applied by the planner.

The regression of the HIL scenario ``workspace-box`` (a policy driving the TCP toward a target outside the box):
decoder targets were clamped into the box, but the plans approached its faces faster than the filter's braking model
allows, came to rest past their last step and caught up with moving chunks at full acceleration near a face, so the
filter braked them (about 90 interventions in the fault window, some after it). Deterministic: FakeClock, the
kinematic twin, the stack's own decoder, executor and scheduler.
"""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.box_guard import BoxGuard
from robot_stack.control.motion import MotionPlanner
from robot_stack.control.plan import JointState
from robot_stack.control.safety import SafetyFilter, WorkspaceBox
from robot_stack.errors import ShapeError
from robot_stack.kinematics.ik import ik_for
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.stack import build_decoder, load_stack_config
from robot_stack.stack.build import build_executor, build_scheduler
from robot_stack.types import ActionChunk, JointTrajectory

MS = 1_000_000
BOX = ([0.15, -0.45, 0.01], [0.70, 0.45, 0.80])  # scenarios/workspace-box.yaml
OUTSIDE = np.array([0.82, 0.0, 0.08])  # the scenario's reach target, beyond the box's +x face


def _box_config():
    return load_stack_config(
        "demo",
        [f"control.workspace_lower={BOX[0]}", f"control.workspace_upper={BOX[1]}", "control.executor=thread"],
    )


def _reach(tcp: np.ndarray, horizon: int = 8, step_m: float = 0.05) -> np.ndarray:
    """The HIL ``reach`` policy fault: steps walking the TCP toward OUTSIDE (ee_delta_xyz, m)."""
    to_go = OUTSIDE - tcp
    frac = np.minimum(1.0, np.arange(1, horizon + 1) * step_m / np.linalg.norm(to_go))
    return frac[:, None] * to_go[None, :]


@pytest.mark.parametrize("latency_s", [0.06, 0.25])
def test_a_policy_driving_out_of_the_box_is_never_braked(latency_s):
    # 1.6 s of chunks driving 0.5 m/s toward a target outside the box, then 0.8 s of "stay here", then silence (the
    # extension and the watchdog stop): the TCP reaches the face, the filter never intervenes
    config = _box_config()
    clock = FakeClock(start_ns=1_000 * MS)
    robot = KinematicRobot(clock=clock)
    decoder, _ = build_decoder(config, "continuous", "ee_delta_xyz")
    executor = build_executor(config, robot, clock)
    scheduler = build_scheduler(config, executor)
    assert executor.box_guard is not None and scheduler.planner.box is executor.box_guard
    box = WorkspaceBox(np.array(BOX[0]), np.array(BOX[1]))
    fk = ik_for(config.embodiment).fk_xyz

    def tick_for(seconds: float) -> float:
        """Advance the clock; returns the TCP's worst distance outside the box shrunk by the filter's margin."""
        worst = 0.0
        for _ in range(round(seconds * 1e9 / executor.period_ns)):
            clock.advance(executor.period_ns)
            executor.tick(clock.now_ns())
            worst = max(worst, box.outside_by(np.clip(fk(robot.read_state().q), box.lower + 0.01, box.upper - 0.01)))
        return worst

    executor.tick(clock.now_ns())
    worst, x_max = 0.0, 0.0
    for step in range(24):
        state = robot.read_state()
        actions = _reach(state.ee_pose.translation) if step < 16 else np.zeros((8, 3))
        chunk = ActionChunk(state.t_ns, 0.1, actions.astype(np.float32), "ee_delta_xyz")
        traj = decoder.decode(chunk, state)
        worst = max(worst, tick_for(latency_s))  # the inference latency: the chunk arrives late
        assert scheduler.submit(traj).accepted
        worst = max(worst, tick_for(0.1))
        x_max = max(x_max, float(robot.read_state().ee_pose.translation[0]))
    worst = max(worst, tick_for(0.6))  # the policy falls silent: come to rest and hold
    stats = executor.safety.stats()
    assert stats["total"] == 0, stats
    assert x_max > 0.66  # it did drive up to the face (targets are kept 3 cm inside it)
    assert worst == 0.0


def _guard() -> tuple[BoxGuard, SafetyFilter]:
    ik = ik_for("panda")
    box = WorkspaceBox(np.array(BOX[0]), np.array(BOX[1]))
    safety = SafetyFilter(
        panda.LIMITS, workspace=box, fk_xyz=ik.fk_xyz, fk_xyz_many=ik.fk_xyz_many, workspace_margin_m=0.01
    )
    assert safety.box_braking is not None
    return BoxGuard(safety.box_braking, 0.002), safety


def _filtered(plan, safety: SafetyFilter) -> int:
    """Interventions of a fresh copy of ``safety``'s filter over ``plan`` sampled at 500 Hz."""
    fresh = SafetyFilter(
        safety.limits,
        safety.margin_rad,
        safety.workspace,
        safety.box_braking.fk_xyz,
        workspace_margin_m=safety.workspace_margin_m,
    )
    t = np.arange(plan.start_ns, plan.end_ns + 100 * MS, 2 * MS)
    q, v, _ = plan.sample_many(t)
    fresh.reset(q[0], v[0])
    for qk in q[1:]:
        fresh.filter(qk)
    return fresh.stats()["total"]


def test_a_chunk_racing_at_a_face_is_slowed_only_as_much_as_the_filter_needs():
    # steps at about 0.5 m/s straight toward the box's +x face, the last one 1 cm inside where the filter brakes
    # (the decoder's target box): timed without the box model the arm arrives too fast and glides on past it; with
    # it, TOPP-RA slows the approach, the extension stops in time and the filter stays silent
    guard, safety = _guard()
    ik = ik_for("panda")
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.types import Pose

    q = [ik.solve(Pose(R_DOWN, np.array([0.40, 0.0, 0.20]), "base", "tcp"), panda.HOME_Q)]
    for k in range(1, 8):
        target = np.array([0.40 + 0.04 * k, 0.0, 0.20])
        q.append(ik.solve(Pose(R_DOWN, target, "base", "tcp"), q[-1]))
    traj = JointTrajectory(panda.ARM_JOINTS, 1_000 * MS + np.arange(8) * 100 * MS, np.array(q))
    blind = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS)
    guarded = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS, box=guard)
    fast = blind.chunk_plan(traj)
    safe = guarded.chunk_plan(traj)
    assert guard.plan_excess(fast)[0] > 0.0 and _filtered(fast, safety) > 0
    assert guard.accepts(safe) and _filtered(safe, safety) == 0
    assert safe.duration_s < 1.5 * fast.duration_s  # slowed near the face, not everywhere


def test_a_join_that_must_catch_up_near_a_face_stays_within_the_model():
    # the arm at rest behind a chunk that already moves toward the face (a late chunk after a stop): the fastest
    # join overshoots the model; the guarded planner lands later, more gently, or stops first
    guard, safety = _guard()
    ik = ik_for("panda")
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.types import Pose

    q0 = ik.solve(Pose(R_DOWN, np.array([0.45, 0.0, 0.30]), "base", "tcp"), panda.HOME_Q)
    q = [q0]
    for k in range(1, 8):
        target = np.array([0.48 + min(0.04 * k, 0.19), 0.0, 0.30])
        q.append(ik.solve(Pose(R_DOWN, target, "base", "tcp"), q[-1]))
    t0 = 1_000 * MS
    traj = JointTrajectory(panda.ARM_JOINTS, t0 + np.arange(8) * 100 * MS, np.array(q))
    guarded = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS, box=guard)
    target = guarded.chunk_plan(traj)
    assert guard.accepts(target)
    join = guarded.join(JointState.at_rest(q0), t0 + 150 * MS, target)
    assert guard.accepts(join) and _filtered(join, safety) == 0
    blind = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS).join(JointState.at_rest(q0), t0 + 150 * MS, target)
    assert guard.plan_excess(blind)[0] > 0.0  # the case is real: the fastest join would be braked


def test_an_arm_far_behind_a_chunk_near_a_face_joins_it_gently():
    # the arm at rest 33 cm behind a chunk that decelerates onto the box's +x face (a chunk computed from a stale
    # frame, seen live under load): every fast landing breaks the model, and the gentler joins must land after the
    # stretch where the chunk decelerates harder than they may (before: ruckig refused those target states, no
    # join was accepted, the fastest was executed and braked, 49.5 mm past the model)
    guard, safety = _guard()
    ik = ik_for("panda")
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.types import Pose

    q0 = ik.solve(Pose(R_DOWN, np.array([0.38, 0.08, 0.33]), "base", "tcp"), panda.HOME_Q)
    steps = [np.array([0.55 + 0.03 * k, 0.02, 0.25 - 0.03 * k]) for k in range(5)] + [np.array([0.67, 0.02, 0.13])] * 3
    q = [ik.solve(Pose(R_DOWN, steps[0], "base", "tcp"), q0)]
    for p in steps[1:]:
        q.append(ik.solve(Pose(R_DOWN, p, "base", "tcp"), q[-1]))
    t0 = 1_000 * MS
    planner = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS, box=guard)
    target = planner.chunk_plan(JointTrajectory(panda.ARM_JOINTS, t0 + np.arange(8) * 100 * MS, np.array(q)))
    t_join = t0 + 400 * MS
    assert np.max(np.abs(target.sample(t_join).a) / panda.LIMITS.acceleration) > 0.5  # it brakes hard there
    join = planner.join(JointState.at_rest(q0), t_join, target)
    assert guard.accepts(join) and _filtered(join, safety) == 0
    blind = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS).join(JointState.at_rest(q0), t_join, target)
    assert guard.plan_excess(blind)[0] > 0.01


def test_a_chunk_clamped_onto_a_face_does_not_overshoot_it_between_steps():
    # a policy diving at 1 m/s into the table, its steps clamped onto a floor 9 mm above where the filter brakes:
    # the C2 spline through them overshoots the corner by about a centimetre, out of the box, where no timing
    # helps; the guarded planner takes the shape-preserving path there
    guard, safety = _guard()
    ik = ik_for("panda")
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.types import Pose

    floor = 0.03
    q = [ik.solve(Pose(R_DOWN, np.array([0.50, 0.0, floor + 0.5]), "base", "tcp"), panda.HOME_Q)]
    for z in (0.4, 0.3, 0.2, 0.1, 0.0, 0.0, 0.0):
        q.append(ik.solve(Pose(R_DOWN, np.array([0.50, 0.0, floor + z]), "base", "tcp"), q[-1]))
    traj = JointTrajectory(panda.ARM_JOINTS, 1_000 * MS + np.arange(8) * 100 * MS, np.array(q))
    assert guard.points_outside(traj.positions) == 0.0
    cubic = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS).time(traj).plan
    assert guard.path_outside(cubic) > 0.001
    safe = MotionPlanner(panda.ARM_JOINTS, panda.LIMITS, box=guard).chunk_plan(traj)
    assert guard.path_outside(safe) == 0.0 and guard.accepts(safe) and _filtered(safe, safety) == 0


@pytest.mark.parametrize("robot", ["panda", "ur5", "so101"])
def test_batched_forward_kinematics_matches_pinocchio(robot):
    ik = ik_for(robot)
    from robot_stack.robots.registry import get_embodiment

    lim = get_embodiment(robot).limits
    q = np.random.default_rng(3).uniform(lim.lower, lim.upper, (64, ik.nq))
    np.testing.assert_allclose(ik.fk_xyz_many(q), np.array([ik.fk_xyz(row) for row in q]), atol=1e-12)


def test_the_real_time_process_judges_the_box_at_the_arms_own_tcp():
    # the process executor's filter is built in the child from a spec: it must carry the arm's kinematics (the
    # spec's default is the Panda's) and the configured joint-limit margin
    from robot_stack.control.rt_process import SafetySpec
    from robot_stack.robots.registry import get_embodiment
    from robot_stack.stack.build import process_safety_spec

    config = load_stack_config(
        "demo",
        [
            "control.workspace_lower=[0.10, -0.25, 0.01]",
            "control.workspace_upper=[0.30, 0.25, 0.35]",
            "control.limit_margin_rad=0.03",
        ],
        robot="so101",
    )
    so101 = get_embodiment("so101")
    spec = process_safety_spec(config)
    safety = spec.build(so101.limits)
    assert safety.margin_rad == 0.03 and safety.box_braking is not None
    q = so101.home_q
    np.testing.assert_allclose(safety.box_braking.fk_xyz(q), ik_for("so101").fk_xyz(q))
    assert safety.box_braking.fk_xyz_many is not None
    default = SafetySpec(workspace=spec.workspace)  # what the stack built before: the Panda's kinematics
    with pytest.raises(ShapeError, match=r"\(7,\)"):  # the Panda's forward kinematics: the wrong arm
        default.build(so101.limits).box_braking.fk_xyz(q)
