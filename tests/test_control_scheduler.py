"""Chunk scheduler: latency compensation, timing, RTC-style splice, temporal ensembling, composition with the
executor, and the closed-loop stream at 100 ms and 300 ms inference latency (FakeClock + KinematicRobot)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.audit import stream_ratios
from robot_stack.control.executor import Executor, ExecutorState
from robot_stack.control.safety import SafetyFilter
from robot_stack.control.scheduler import ChunkScheduler, SchedulerConfig, smoothstep5
from robot_stack.errors import ConfigError, ShapeError
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

MS = 1_000_000
PERIOD = 2 * MS  # 500 Hz
NAMES = panda.ARM_JOINTS
LIM = panda.LIMITS


def _rig(q0: np.ndarray | None = None, watchdog_s: float = 0.5):
    clock = FakeClock(start_ns=1_000 * MS)
    robot = KinematicRobot(clock=clock, q0=q0, history=100_000)
    ex = Executor(robot, clock, rate_hz=500.0, safety=SafetyFilter(LIM), watchdog_timeout_s=watchdog_s, history=100_000)
    return clock, robot, ex


def _chunk(t_obs_ns: int, q: np.ndarray, dt_s: float = 0.1) -> JointTrajectory:
    return JointTrajectory(NAMES, t_obs_ns + np.round(np.arange(len(q)) * dt_s * 1e9).astype(np.int64), q)


def _line(start: np.ndarray, horizon: int, step: float) -> np.ndarray:
    return start + np.outer(np.arange(horizon) * step, np.ones(7))


def _assert_feasible_and_unfiltered(ex: Executor) -> dict:
    t = np.array([r.t_ns for r in ex.history])
    q_plan = np.array([r.q_plan for r in ex.history])
    q_sent = np.array([r.q_sent for r in ex.history])
    ratios = stream_ratios(t, q_plan, LIM)
    assert max(ratios.values()) <= 1.0, ratios
    assert ex.safety.stats()["total"] == 0, ex.safety.stats()
    np.testing.assert_array_equal(q_plan, q_sent)
    return ratios


def test_smoothstep5_is_c2_ramp():
    s = np.linspace(-0.5, 1.5, 2001)
    w = smoothstep5(s)
    assert w[0] == 0.0 and w[-1] == 1.0 and np.all(np.diff(w) >= 0)
    h = s[1] - s[0]
    acc = np.diff(w, 2) / h**2
    assert np.abs(acc).max() < 5.78 + 0.05  # 10/sqrt(3) = peak second derivative of the quintic
    assert abs(acc[0]) < 1e-9 and abs(acc[-1]) < 1e-9


def test_config_and_input_validation():
    with pytest.raises(ConfigError, match="mode"):
        SchedulerConfig(mode="average")
    with pytest.raises(ConfigError):
        SchedulerConfig(resample_dt_s=0.0)
    with pytest.raises(ConfigError):
        SchedulerConfig(extend_s=-1.0)
    clock, _, ex = _rig()
    sched = ChunkScheduler(ex)
    with pytest.raises(ShapeError, match="JointTrajectory"):
        sched.submit(np.zeros((3, 7)))  # type: ignore[arg-type]
    other = JointTrajectory(tuple(f"j{i}" for i in range(7)), np.array([clock.now_ns()]), np.zeros((1, 7)))
    with pytest.raises(ShapeError, match="joints"):
        sched.submit(other)


@pytest.mark.parametrize("mode", ["splice", "ensemble", "none"])
def test_past_steps_are_skipped_and_never_shape_the_output(mode):
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(mode=mode))
    now = clock.now_ns()
    q = _line(panda.HOME_Q, 10, 0.01)
    res = sched.submit(_chunk(now - 300 * MS, q), now)  # 300 ms latency: steps 0, 1, 2 are in the past
    assert res.accepted and res.skipped_steps == 3 and res.timing == "nominal"
    # the past steps are irrelevant: corrupting them changes nothing
    clock2, _, ex2 = _rig()
    ex2.tick(clock2.now_ns())
    bad = q.copy()
    bad[:3] += 1.0
    res2 = ChunkScheduler(ex2, SchedulerConfig(mode=mode)).submit(_chunk(now - 300 * MS, bad), now)
    np.testing.assert_array_equal(res.plan.coeffs, res2.plan.coeffs)
    # nothing was executing: the plan is the timed chunk itself, through every future step at its time
    assert res.mode in ("fresh", "none") and res.plan.start_ns == now - 300 * MS + 300 * MS
    for k in range(3, 10):
        t_k = now - 300 * MS + k * 100 * MS
        np.testing.assert_allclose(res.plan.sample(t_k).q, q[k], atol=1e-12)
    assert res.plan.policy_end_ns == now + 600 * MS and res.plan.ends_at_rest()
    assert sched.stats()["steps_skipped"] == 3


def test_stale_chunk_is_refused_without_touching_the_executor(caplog):
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex)
    now = clock.now_ns()
    with caplog.at_level(logging.WARNING, logger="robot_stack.control.scheduler"):
        res = sched.submit(_chunk(now - 2_000 * MS, _line(panda.HOME_Q, 8, 0.01)), now)
    assert not res.accepted and res.reason == "stale" and res.plan is None and res.skipped_steps == 8
    assert ex.stats()["trajectories_accepted"] == 0
    assert "stale" in caplog.text and sched.stats()["stale"] == 1


def test_splice_keeps_the_executing_prefix_so_the_executor_adopts_it_unchanged():
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(mode="splice", handover_s=0.02))
    t0 = clock.now_ns()
    first = sched.submit(_chunk(t0, _line(panda.HOME_Q, 10, 0.02)))
    assert first.accepted and first.mode == "fresh"
    for _ in range(60):
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())
    now = clock.now_ns()
    executing = ex.active_plan  # the executor's own join from rest into the first chunk
    # the new chunk disagrees with the executing one by 0.1 rad
    new_chunk = _chunk(now - 100 * MS, _line(panda.HOME_Q + 0.1, 10, 0.02))
    second = sched.submit(new_chunk, now)
    assert second.accepted and second.mode == "splice" and second.skipped_steps == 1
    # up to the end of the hand-over prefix the new plan is the executing one
    freeze = now + 20 * MS
    t = np.arange(now - 4 * MS, freeze + 1, MS)
    np.testing.assert_allclose(second.plan.sample_many(t)[0], executing.sample_many(t)[0], atol=1e-12)
    # the executor adopts it at the next tick: the command stream continues unchanged, no second join
    before = executing.sample(now + PERIOD).q
    clock.advance(PERIOD)
    q_cmd = ex.tick(clock.now_ns())
    np.testing.assert_allclose(q_cmd, before, atol=1e-12)
    assert ex.stats()["adopted"] == 1 and ex.stats()["joins"] == 1
    # ... and the transition lands on the new chunk, then follows it
    late = int(new_chunk.t_ns[-1]) - 50 * MS
    target = ex.planner.time(JointTrajectory(NAMES, new_chunk.t_ns[1:], new_chunk.positions[1:])).plan
    np.testing.assert_allclose(second.plan.sample(late).q, target.sample(late).q, atol=1e-9)
    while clock.now_ns() < int(new_chunk.t_ns[-1]):
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())
    _assert_feasible_and_unfiltered(ex)


def test_ensemble_weights_follow_act_convention():
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    m = 0.7
    sched = ChunkScheduler(ex, SchedulerConfig(mode="ensemble", ensemble_m=m, taper_s=0.3))
    now = clock.now_ns()
    a = np.tile(panda.HOME_Q, (30, 1))
    b = a + 0.02
    sched.submit(_chunk(now, a))
    for _ in range(10):
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())
    res = sched.submit(_chunk(clock.now_ns(), b))
    assert res.mode == "ensemble"
    # well after the transition and before the older chunk fades out: (a + e^-m b) / (1 + e^-m), oldest first
    t = clock.now_ns() + 1_000 * MS
    want = (a[0] + np.exp(-m) * b[0]) / (1 + np.exp(-m))
    np.testing.assert_allclose(res.plan.sample(t).q, want, atol=1e-9)
    # after the older chunk ended, only the newest remains (the fade is gentle enough to keep the policy's timing)
    t_end_a = now + 2_900 * MS
    np.testing.assert_allclose(res.plan.sample(t_end_a + 30 * MS).q, b[0], atol=1e-4)
    assert sched.stats()["retimed"] == 0


# ------------------------------------------------------------------------------- the closed-loop stream

_A = np.array([0.3, 0.25, 0.3, 0.3, 0.3, 0.3, 0.4])  # rad
_F = 0.4  # Hz
_PHASE = np.arange(7) * 0.7


def _goal(t_s: float) -> np.ndarray:
    return panda.HOME_Q + _A * np.sin(2 * np.pi * _F * t_s + _PHASE)


def _goal_velocity(t_s: float) -> np.ndarray:
    return _A * 2 * np.pi * _F * np.cos(2 * np.pi * _F * t_s + _PHASE)


def stream(mode: str, latency_s: float, duration_s: float = 3.0, seed: int = 0, noise: float = 0.01) -> dict:
    """Closed loop: every chunk is computed from an observation ``latency`` earlier and arrives ``latency`` later.

    The "policy" sees the robot at t_obs and the moving target (a sinusoid per joint), and plans 10 steps of
    100 ms from the observed position toward the target's linear prediction (time constant 150 ms), with a
    per-chunk random offset (``noise`` rad) like a sampled generative policy. Inference is sequential: the next
    observation is taken when a chunk arrives (at least every 100 ms). The arm starts at rest.
    """
    rng = np.random.default_rng(seed)
    clock, robot, ex = _rig(q0=_goal(0.0))
    sched = ChunkScheduler(ex, SchedulerConfig(mode=mode))
    t_start = clock.now_ns()
    lat = round(latency_s * 1e9)
    horizon, dt, tau = 10, 0.1, 0.15

    def policy(t_obs: int, q_obs: np.ndarray) -> JointTrajectory:
        ts = (t_obs - t_start) * 1e-9
        g0 = _goal(ts) + rng.normal(0.0, noise, 7)
        k = np.arange(horizon)[:, None] * dt
        return _chunk(t_obs, g0 + _goal_velocity(ts) * k + (q_obs - g0) * np.exp(-k / tau), dt)

    pending: list[tuple[int, JointTrajectory]] = []
    next_obs = t_start
    results = []
    ex.tick(t_start)
    for _ in range(int(duration_s / 0.002)):
        clock.advance(PERIOD)
        now = clock.now_ns()
        if now >= next_obs:
            pending.append((now + lat, policy(now, robot.read_state().q)))
            next_obs = now + max(lat, 100 * MS)
        while pending and pending[0][0] <= now:
            _, traj = pending.pop(0)
            results.append(sched.submit(traj))
        ex.tick(now)
    t = np.array([r.t_ns for r in ex.history])
    q_plan = np.array([r.q_plan for r in ex.history])
    # plan vs executed: what the policy's (timed) chunks asked for at each tick vs what was commanded, after the
    # first join (the arm starts at rest, the first chunk is already moving)
    return {"ex": ex, "results": results, "t": t, "q_plan": q_plan, "sched": sched}


@pytest.mark.parametrize("latency_s", [0.1, 0.3])
@pytest.mark.parametrize("mode", ["splice", "ensemble", "none"])
def test_closed_loop_stream_is_within_the_limits_before_the_filter(mode, latency_s):
    run = stream(mode, latency_s)
    ex = run["ex"]
    ratios = _assert_feasible_and_unfiltered(ex)
    assert ratios == pytest.approx(ex.stats()["prefilter_peak_ratio"], abs=1e-6)
    assert len(run["results"]) >= 8
    # latency compensation: every chunk had its past steps skipped, none was executed
    expected_skip = round(latency_s / 0.1)
    assert all(r.accepted and r.skipped_steps in (expected_skip, expected_skip + 1) for r in run["results"])
    # the splice hands over plans the executor adopts as they are; "none" leaves every join to the executor
    st = ex.stats()
    if mode == "none":
        assert st["adopted"] == 0 and st["joins"] == len(run["results"])
    else:
        assert st["joins"] == 1 and st["adopted"] == len(run["results"]) - 1


def _speeds(robot_q: np.ndarray) -> np.ndarray:
    """Joint-0 velocity (rad/s) of consecutive 500 Hz set-points."""
    return np.diff(robot_q[:, 0]) / (PERIOD * 1e-9)


def test_extension_comes_to_rest_along_the_motion_and_the_watchdog_counts_from_the_last_policy_step():
    clock, _, ex = _rig()  # watchdog 0.5 s
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(extend_s=0.2))
    t0 = clock.now_ns()
    chunk = _chunk(t0, _line(panda.HOME_Q, 8, 0.01))  # 0.1 rad/s on every joint, last step at t0 + 0.7 s
    res = sched.submit(chunk, t0)
    end = int(chunk.t_ns[-1])
    assert res.accepted and res.plan.policy_end_ns == end and res.plan.end_ns >= end + 200 * MS
    out, states = [], []
    while clock.now_ns() < end + 480 * MS:
        clock.advance(PERIOD)
        out.append(ex.tick(clock.now_ns()))
        states.append((clock.now_ns(), ex.state))
    q = np.array(out)
    v = _speeds(q)
    t = np.array([s[0] for s in states])
    plan_end = ex.active_plan.end_ns
    # tracking through the last step and the extension; the arm is at rest when the extension ends
    assert all(st == ExecutorState.TRACKING for tt, st in states if tt <= plan_end)
    i_end = int(np.searchsorted(t, plan_end)) + 1
    assert abs(v[i_end]) < 1e-9 and abs(v[int(np.searchsorted(t, end))]) > 0.08  # moving at the last step
    # it came to rest beyond the last step, along the motion: about v * T / 2 further (0.1 rad/s * 0.2 s / 2)
    assert q[i_end, 0] - chunk.positions[-1, 0] == pytest.approx(0.01, abs=2e-3)
    i_last = int(np.searchsorted(t, end))
    assert np.all(np.abs(np.diff(v[i_last:])) / (PERIOD * 1e-9) <= LIM.acceleration[0] * 0.5 + 1e-6)  # gentle stop
    # the watchdog counts from the last policy step (0.5 s), not from the end of the extension
    assert ex.state == ExecutorState.STOPPING and ex.stats()["holds"] == 0 and ex.stats()["extensions"] == 1
    for _ in range(15):
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())
    assert ex.state == ExecutorState.HOLDING and ex.stats()["holds"] == 1
    _assert_feasible_and_unfiltered(ex)


def test_a_late_chunk_is_spliced_in_from_the_extension_so_the_arm_never_stops():
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(extend_s=0.25))
    t0 = clock.now_ns()
    first = _chunk(t0, _line(panda.HOME_Q, 8, 0.01))
    assert sched.submit(first, t0).accepted
    out, states = [], []

    def run_until(t_ns: int) -> None:
        while clock.now_ns() < t_ns:
            clock.advance(PERIOD)
            out.append(ex.tick(clock.now_ns()))
            states.append(ex.state)

    run_until(int(first.t_ns[-1]) + 120 * MS)  # the next chunk is 120 ms late
    # its observation was taken 0.4 s after the first one's; it continues the same motion
    t_obs = t0 + 400 * MS
    second = _chunk(t_obs, _line(panda.HOME_Q + 0.04, 8, 0.01))
    res = sched.submit(second)
    assert res.accepted and res.mode == "splice"
    run_until(int(second.t_ns[-1]))
    v = _speeds(np.array(out))
    assert all(st == ExecutorState.TRACKING for st in states)  # never ran out of trajectory
    assert ex.stats()["extensions"] == 1 and ex.stats()["holds"] == 0
    assert v[100:].min() > 0.02  # slowed while the chunk was late, never stopped
    _assert_feasible_and_unfiltered(ex)


def test_a_wild_chunk_is_retimed_within_the_limits_and_extended_by_a_bounded_distance():
    clock, _, ex = _rig()
    ex.tick(clock.now_ns())
    sched = ChunkScheduler(ex, SchedulerConfig(extend_s=0.25))
    t0 = clock.now_ns()
    wild = panda.HOME_Q + np.outer(0.3 * (-1.0) ** np.arange(8), np.ones(7))  # jumps 0.6 rad every step
    chunk = _chunk(t0, wild)
    res = sched.submit(chunk, t0)
    assert res.accepted and res.timing == "toppra" and res.slowdown > 2.0
    plan = res.plan
    assert ex.planner.chunk_limits.admits(plan.until(plan.policy_end_ns))
    # every step is still visited, in order (later than asked)
    assert plan.policy_end_ns > int(chunk.t_ns[-1])
    np.testing.assert_allclose(plan.sample(plan.policy_end_ns).q, wild[-1], atol=1e-9)
    # the extension travels at most the distance of a stop from the chunk's end velocity over its duration
    v_end = np.abs(plan.sample(plan.policy_end_ns).v)
    t_ext = (plan.end_ns - plan.policy_end_ns) * 1e-9
    travel = np.abs(plan.end_state.q - wild[-1])
    assert np.all(travel <= v_end * t_ext + 1e-9)
    while clock.now_ns() < plan.end_ns + 100 * MS:
        clock.advance(PERIOD)
        ex.tick(clock.now_ns())
    _assert_feasible_and_unfiltered(ex)
