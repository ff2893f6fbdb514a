"""SafetyFilter: each limit kind clamps, is counted exactly and logged; bad input never passes."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from robot_stack.control.safety import SafetyFilter, WorkspaceBox
from robot_stack.errors import ConfigError, SafetyError
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda

LIM = panda.LIMITS
DT = 0.002


def _filter(**kw) -> SafetyFilter:
    f = SafetyFilter(LIM, margin_rad=0.02, period_s=DT, **kw)
    f.reset(panda.HOME_Q)
    return f


def _derivatives(qs: np.ndarray, q0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q = np.vstack([q0, q0, q0, qs])  # at rest before the first command
    v = np.diff(q, axis=0) / DT
    a = np.diff(v, axis=0) / DT
    j = np.diff(a, axis=0) / DT
    return v, a, j


def test_small_smooth_commands_pass_unchanged():
    f = _filter()
    for k in range(1, 200):
        q_cmd = panda.HOME_Q + 0.05 * (1 - np.cos(2 * np.pi * k * DT))  # slow, smooth
        np.testing.assert_allclose(f.filter(q_cmd), q_cmd, atol=1e-12)
    assert f.stats()["total"] == 0 and f.stats()["calls"] == 199


def test_position_limit_clamped_with_margin_and_counted(caplog):
    f = _filter()
    q_cmd = LIM.upper + 1.0  # far outside
    with caplog.at_level(logging.WARNING, logger="robot_stack.control.safety"):
        outs = np.array([f.filter(q_cmd) for _ in range(3000)])
    assert np.all(outs <= LIM.upper - 0.02 + 1e-12)
    np.testing.assert_allclose(outs[-1], LIM.upper - 0.02, atol=1e-6)  # it got there, and stopped
    st = f.stats()
    assert st["position"] == 3000  # every call clamped, counted exactly
    assert any("position" in r.getMessage() for r in caplog.records)
    assert len([r for r in caplog.records if "position" in r.getMessage()]) < 10  # rate-limited logging
    v, a, j = _derivatives(outs, panda.HOME_Q)
    assert np.all(np.abs(v) <= LIM.velocity + 1e-6)
    assert np.all(np.abs(a) <= LIM.acceleration + 1e-6)  # braking bound: stopped before the limit, no slam


def test_velocity_acceleration_and_jerk_limits_each_enforced_and_counted():
    f = _filter()
    target = panda.HOME_Q + np.array([0.5, -0.5, 0.5, -0.5, 0.5, 0.5, 0.5])  # a step command
    outs = np.array([f.filter(target) for _ in range(1500)])
    v, a, j = _derivatives(outs, panda.HOME_Q)
    assert np.all(np.abs(v) <= LIM.velocity * (1 + 1e-9))
    assert np.all(np.abs(a) <= LIM.acceleration * (1 + 1e-6))
    assert np.all(np.abs(j) <= LIM.jerk * (1 + 1e-6))  # differencing positions thrice: float noise
    st = f.stats()
    # the step itself is limited (its own velocity, then its own deceleration: counted); the ticks after it only
    # close the lag the step left while the command is feasible (standing still): catch-up, not interventions
    assert st["velocity"] == 1 and 1 <= st["acceleration"] <= 2 and st["position"] == 0
    assert st["catch_up_ticks"] > 100 and st["total"] <= 4
    np.testing.assert_allclose(outs[-1], target, atol=1e-3)  # it still arrives


def test_a_ramp_too_fast_is_limited_on_every_tick_it_is_too_fast():
    f = _filter()
    speed = 2.0 * LIM.velocity  # every joint commanded at twice its velocity limit for 100 ticks
    cmds = [panda.HOME_Q + speed * DT * k for k in range(1, 101)]
    outs = np.array([f.filter(c) for c in cmds])
    v, a, j = _derivatives(outs, panda.HOME_Q)
    assert np.all(np.abs(v) <= LIM.velocity * (1 + 1e-9)) and np.all(np.abs(j) <= LIM.jerk * (1 + 1e-6))
    st = f.stats()
    assert st["velocity"] == 100  # the command itself breaks the velocity limit on every tick: each counted
    assert st["catch_up_ticks"] == 0
    more = [f.filter(cmds[-1]) for _ in range(2000)]  # then it stands still: the output catches up, uncounted
    np.testing.assert_allclose(more[-1], cmds[-1], atol=1e-3)
    st2 = f.stats()
    assert st2["velocity"] == 100 and st2["catch_up_ticks"] > 100 and st2["total"] - st["total"] <= 2


def test_jerk_counted_alone_when_only_jerk_is_exceeded():
    f = _filter()
    # joint 2 (index 1): accel limit 7.5 rad/s^2, jerk 3750 rad/s^3. Accelerate at +6, then ask for -6 in one
    # tick: |da/dt| = 12 / 0.002 = 6000 > 3750, while acceleration and velocity stay within limits.
    cmd, v = panda.HOME_Q.copy(), np.zeros(7)
    for acc in (6.0, 6.0, 6.0, -6.0):
        v[1] += acc * DT
        cmd = cmd + v * DT
        f.filter(cmd)
    st = f.stats()
    assert st["jerk"] == 1 and st["acceleration"] == 0 and st["velocity"] == 0 and st["position"] == 0


@pytest.mark.parametrize("bad", [np.full(7, np.nan), np.r_[np.zeros(6), np.inf], np.zeros(6), np.zeros((7, 1))])
def test_nonfinite_or_wrong_shape_rejected_and_counted(bad):
    f = _filter()
    before = f.previous
    with pytest.raises(SafetyError, match="refused"):
        f.filter(bad)
    st = f.stats()
    assert st["rejected_nonfinite"] + st["rejected_shape"] == 1
    after = f.previous
    assert before is not None and after is not None
    np.testing.assert_array_equal(before[0], after[0])  # state untouched


def test_first_call_needs_a_state_or_reset():
    f = SafetyFilter(LIM, period_s=DT)
    with pytest.raises(SafetyError, match="reset"):
        f.filter(panda.HOME_Q)


def test_workspace_box_stops_tcp_at_the_boundary():
    ik = panda_ik()
    home_xyz = ik.fk_xyz(panda.HOME_Q)
    box = WorkspaceBox(lower=home_xyz - 0.2, upper=home_xyz + np.array([0.2, 0.2, 0.01]))  # ceiling 1 cm up
    f = _filter(workspace=box, fk_xyz=ik.fk_xyz)
    up = panda.HOME_Q + np.array([0.0, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0])  # joint 2 back: TCP goes up
    assert ik.fk_xyz(up)[2] > box.upper[2]
    for _ in range(500):
        q = f.filter(up)
        assert ik.fk_xyz(q)[2] <= box.upper[2] + 1e-9
    assert f.stats()["workspace"] > 0


def test_workspace_margin_keeps_the_commanded_tcp_that_far_inside_and_is_validated():
    ik = panda_ik()
    home_xyz = ik.fk_xyz(panda.HOME_Q)
    box = WorkspaceBox(lower=home_xyz - 0.2, upper=home_xyz + np.array([0.2, 0.2, 0.03]))  # ceiling 3 cm up
    f = _filter(workspace=box, fk_xyz=ik.fk_xyz, workspace_margin_m=0.01)
    up = panda.HOME_Q + np.array([0.0, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0])  # joint 2 back: TCP goes up
    zs = [ik.fk_xyz(f.filter(up))[2] for _ in range(600)]
    assert max(zs) <= box.upper[2] - 0.01 + 1e-3  # stopped 1 cm below the face (braking tolerance 1 mm)
    assert max(zs) >= box.upper[2] - 0.012  # ... and got there
    with pytest.raises(ConfigError, match="margin"):
        _filter(workspace=box, fk_xyz=ik.fk_xyz, workspace_margin_m=0.3)
    with pytest.raises(ConfigError, match="margin"):
        _filter(workspace=box, fk_xyz=ik.fk_xyz, workspace_margin_m=-0.01)


def test_a_tcp_inside_the_margin_band_may_move_back_inward_but_not_further_out():
    # the arm can end up between the face and the margin (reset to a measured posture that lags the commands, a
    # push): every motion from there used to count as leaving the box and was braked, freezing the arm in the band
    ik = panda_ik()
    home_xyz = ik.fk_xyz(panda.HOME_Q)
    box = WorkspaceBox(lower=home_xyz - 0.2, upper=home_xyz + np.array([0.2, 0.2, 0.005]))  # ceiling 5 mm up
    f = _filter(workspace=box, fk_xyz=ik.fk_xyz, workspace_margin_m=0.01)  # home is inside the 1 cm band
    down = panda.HOME_Q + np.array([0.0, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])  # joint 2 forward: TCP goes down
    zs = [ik.fk_xyz(f.filter(down))[2] for _ in range(300)]
    assert zs[-1] < home_xyz[2] - 0.05  # it moved away from the face
    f.reset(panda.HOME_Q)
    up = panda.HOME_Q + np.array([0.0, -0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
    zs = [ik.fk_xyz(f.filter(up))[2] for _ in range(300)]
    assert max(zs) <= home_xyz[2] + 1e-3  # ... but never further out than it was
    assert f.stats()["workspace"] > 0


#: How far (m) the filter's TCP may pass a box face: the braking plans in the linearised (one-tick) TCP motion.
BOX_TOLERANCE_M = 1e-3


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_commands_pushing_through_a_box_hold_every_limit_and_stay_inside(seed):
    """Commands far outside a tight box around home (random joint targets, and random jumps between them):
    no output breaks a position/velocity/acceleration/jerk limit and the TCP never leaves the box."""
    ik = panda_ik()
    rng = np.random.default_rng(seed)
    home_xyz = ik.fk_xyz(panda.HOME_Q)
    box = WorkspaceBox(lower=home_xyz - np.array([0.1, 0.12, 0.08]), upper=home_xyz + np.array([0.12, 0.1, 0.06]))
    f = _filter(workspace=box, fk_xyz=ik.fk_xyz)
    outs = []
    for _ in range(6):  # a new random target every 0.3 s, most of them drive the TCP out of the box
        target = panda.HOME_Q + rng.uniform(-1.2, 1.2, 7)
        outs.extend(f.filter(target) for _ in range(150))
    qs = np.array(outs)
    v, a, j = _derivatives(qs, panda.HOME_Q)
    assert np.all(qs >= LIM.lower) and np.all(qs <= LIM.upper)
    assert np.all(np.abs(v) <= LIM.velocity * (1 + 1e-6))
    assert np.all(np.abs(a) <= LIM.acceleration * (1 + 1e-6))
    assert np.all(np.abs(j) <= LIM.jerk * (1 + 1e-6))
    outside = max(box.outside_by(ik.fk_xyz(q)) for q in qs)
    assert outside <= BOX_TOLERANCE_M, f"TCP left the box by {outside * 1e3:.2f} mm"
    assert f.stats()["workspace"] > 0


def test_config_errors():
    with pytest.raises(ConfigError):
        SafetyFilter(LIM, workspace=WorkspaceBox(np.zeros(3), np.ones(3)))  # no fk
    with pytest.raises(ConfigError):
        SafetyFilter(LIM, margin_rad=5.0)


@pytest.mark.parametrize("rate_hz", [500.0, 1000.0])
def test_random_steps_settle_without_overshoot_within_every_limit(rate_hz):
    dt = 1.0 / rate_hz
    rng = np.random.default_rng(int(rate_hz))
    for _ in range(3):
        q0 = rng.uniform(LIM.lower + 0.1, LIM.upper - 0.1)
        target = rng.uniform(LIM.lower - 0.5, LIM.upper + 0.5)  # some beyond the limits
        f = SafetyFilter(LIM, margin_rad=0.02, period_s=dt)
        f.reset(q0)
        outs = np.array([f.filter(target) for _ in range(int(3.5 * rate_hz))])
        q = np.vstack([q0, q0, q0, outs])
        v = np.diff(q, axis=0) / dt
        a = np.diff(v, axis=0) / dt
        j = np.diff(a, axis=0) / dt
        assert np.all(np.abs(v) <= LIM.velocity * (1 + 1e-6))
        assert np.all(np.abs(a) <= LIM.acceleration * (1 + 1e-6))
        assert np.all(np.abs(j) <= LIM.jerk * (1 + 1e-6))
        goal = np.clip(target, LIM.lower + 0.02, LIM.upper - 0.02)
        np.testing.assert_allclose(outs[-1], goal, atol=1e-9)
        overshoot = np.sign(goal - q0) * (outs - goal)  # > 0 means past the goal
        assert overshoot.max() < 1e-6
