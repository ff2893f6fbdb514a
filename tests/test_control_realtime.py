"""The executor in its own real-time process, the shared-memory blocks and the set-point ring to a robot elsewhere.

The process tests are marked ``realtime`` (wall clock, a spawned process); they assert what the process does —
follows plans, adopts the scheduler's splices, stays within the limits with 0 interventions, stops at rest and
leaves nothing behind — never how fast (``robot-stack bench executor`` measures that).
"""

from __future__ import annotations

import os
import time
from multiprocessing import shared_memory

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.audit import DerivativeMonitor, stream_ratios
from robot_stack.control.executor import ExecutorState
from robot_stack.control.plan import MotionPlan
from robot_stack.control.rt_process import ProcessExecutor, RealtimeConfig, RobotSpec, resolve
from robot_stack.control.scheduler import ChunkScheduler
from robot_stack.control.setpoints import RingRobot, SetpointRelay, SetpointRing
from robot_stack.control.shared import ByteSlot, SeqlockBlock
from robot_stack.errors import ConfigError, RobotError, ShapeError
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.types import JointTrajectory

NAMES = panda.ARM_JOINTS
MS = 1_000_000


def _chunk(t0_ns: int, phase: float) -> JointTrajectory:
    t = np.arange(8) * 0.1
    q = panda.HOME_Q + 0.2 * np.sin(2 * np.pi * 0.3 * t + phase)[:, None] * np.ones(7)
    return JointTrajectory(NAMES, t0_ns + np.round(t * 1e9).astype(np.int64), q)


def _gone(name: str) -> bool:
    try:
        shared_memory.SharedMemory(name=name).close()
    except FileNotFoundError:
        return True
    return False


def test_seqlock_block_and_byte_slot_round_trip():
    block = SeqlockBlock(3, 2)
    other = SeqlockBlock(3, 2, block.name)
    block.begin_write()
    block.ints[:] = [1, 2, 3]
    block.floats[:] = [0.5, 1.5]
    with pytest.raises(ShapeError, match="consistent"):
        other.read(timeout_s=0.01)  # a write in progress is never read half-done
    block.end_write()
    ints, floats = other.read()
    assert ints.tolist() == [1, 2, 3] and floats.tolist() == [0.5, 1.5]
    slot = ByteSlot(64)
    assert slot.write(b"plan bytes") and not slot.write(b"x" * 65)
    assert ByteSlot(0, slot.name).read() == (1, b"plan bytes")
    name = block.name
    other.close()
    block.close()
    slot.close()
    assert _gone(name)


class _WriterDuringCopy:
    """Stands in for a payload array: the first ``copy()`` lets the writer publish ``writes`` versions and stalls
    ``stall_s`` (the reader descheduled mid-copy on a busy machine), then copies as usual."""

    def __init__(self, array: np.ndarray, seq: np.ndarray, writes: int, stall_s: float) -> None:
        self.array, self.seq, self.writes, self.stall_s = array, seq, writes, stall_s

    def _stall(self) -> None:
        if self.writes:
            self.seq[0] += 2 * self.writes  # complete writes: the writer is alive
            self.writes = 0
            time.sleep(self.stall_s)

    def copy(self) -> np.ndarray:
        self._stall()
        return self.array.copy()

    def __getitem__(self, index: object) -> np.ndarray:
        self._stall()
        return self.array[index]


def test_seqlock_reader_descheduled_mid_copy_retries_instead_of_failing():
    """Regression (bench motion at load 8, control.blend=ensemble): the policy cycle's reader of the real-time
    process' stats was descheduled for longer than the read timeout while the 500 Hz writer kept publishing; the
    torn copy was taken for a dead writer and the ShapeError ended the run. A moving sequence number means a live
    writer: the reader must retry, whatever the stall."""
    block = SeqlockBlock(2, 1)
    block.begin_write()
    block.ints[:] = [7, 8]
    block.floats[:] = [0.25]
    block.end_write()
    reader = SeqlockBlock(2, 1, block.name)
    reader.ints = _WriterDuringCopy(reader.ints, reader._seq, writes=3, stall_s=0.08)  # type: ignore[assignment]
    ints, floats = reader.read(timeout_s=0.05)
    assert ints.tolist() == [7, 8] and floats.tolist() == [0.25]
    slot = ByteSlot(32)
    slot.write(b"plan")
    attached = ByteSlot(0, slot.name)
    attached._data = _WriterDuringCopy(attached._data, attached._head, writes=1, stall_s=0.08)  # type: ignore[assignment]
    assert attached.read(timeout_s=0.05) == (1, b"plan")
    reader.ints = reader.ints.array  # type: ignore[attr-defined]
    attached._data = attached._data.array  # type: ignore[attr-defined]
    reader.close()
    block.close()
    attached.close()
    slot.close()


def test_specs_resolve_importable_factories_only():
    assert resolve("robot_stack.sim.kinematic:KinematicRobot") is KinematicRobot
    for bad in ("nomodule", "robot_stack.sim.kinematic:Nope", "no_such_module_xyz:thing"):
        with pytest.raises(ConfigError):
            resolve(bad)
    with pytest.raises(ConfigError):
        RealtimeConfig(fifo_priority=0)


def test_setpoint_ring_replays_setpoints_at_their_own_times_into_the_sim_world():
    # the sim world lives in the main process; set-points from the real-time process are applied at the times they
    # were sent, before any sync passes them (here written by hand, as RingRobot would)
    from robot_stack.sim.robot import SimRobot
    from robot_stack.sim.world import SimWorld

    clock = FakeClock(1_000 * MS)
    world, twin = SimWorld(clock=clock), SimWorld(clock=clock)
    robot, twin_robot = SimRobot(world), SimRobot(twin)
    ring = SetpointRing(7, capacity=64)
    relay = SetpointRelay(robot, ring)
    relay.attach(world)
    relay.publish_state()
    sink = RingRobot(ring.name, NAMES, panda.LIMITS, capacity=64)
    np.testing.assert_allclose(sink.read_state().q, panda.HOME_Q)
    t0 = clock.now_ns()
    targets = [(t0 + k * 10 * MS, panda.HOME_Q + 0.01 * k) for k in range(1, 6)]
    for t, q in targets:
        ring.write(t, q, None)
    clock.advance(80 * MS)
    world.sync_now()  # a render or a state read: the relay applies the 5 set-points first, each at its time
    assert relay.applied == 5 and relay.lost == 0
    for t, q in targets:  # the same sequence applied by hand
        twin_robot.command_at(t, q)
    twin.sync_now()
    np.testing.assert_array_equal(world.arm_q(), twin.arm_q())
    # a reader more than the capacity behind loses the oldest set-points, counted
    for k in range(100):
        sink.command(panda.HOME_Q + 1e-4 * k)
    relay.drain()
    assert relay.lost == 100 - 63 and relay.applied == 5 + 63
    with pytest.raises(RobotError):
        sink.command(np.full(7, np.nan))
    sink.ring.close()
    ring.close()


def test_derivative_monitor_agrees_with_the_batch_computation():
    rng = np.random.default_rng(1)
    t = np.cumsum(rng.choice([2, 2, 2, 4, 6], 500)) * MS
    q = np.cumsum(rng.normal(0, 1e-3, (500, 7)), axis=0)
    mon = DerivativeMonitor(panda.LIMITS, batch=16)
    for tt, qq in zip(t, q, strict=True):
        mon.update(int(tt), qq)
    want = stream_ratios(t, q, panda.LIMITS)
    assert mon.peak == pytest.approx(want, rel=1e-12)


@pytest.mark.realtime
def test_process_executor_follows_spliced_plans_within_the_limits_and_leaves_nothing_behind():
    ex = ProcessExecutor(
        RobotSpec("robot_stack.sim.kinematic:KinematicRobot"),
        NAMES,
        panda.LIMITS,
        realtime=RealtimeConfig(start_timeout_s=120.0),
    )
    ex.start()
    pid = ex.pid
    try:
        assert ex.state == ExecutorState.IDLE and ex.commanded is not None
        sched = ChunkScheduler(ex)
        results = []
        for k in range(12):
            now = ex.clock.now_ns()
            results.append(sched.submit(_chunk(now, 0.3 * k)))
            time.sleep(0.08)
        assert all(r.accepted for r in results)
        assert ex.state == ExecutorState.TRACKING
        assert isinstance(ex.active_plan, MotionPlan)
        live = ex.stats()
        # the first chunk (nothing executing: "fresh") was joined in this process ahead of the loop; a splice made
        # from what it executes is adopted as sent (one that reached it after its hand-over prefix, on a loaded
        # host, is joined there instead: either way every plan was taken up, none refused)
        assert live["handovers_prepared"] >= 1 and live["adopted"] >= 1
        assert live["joins"] + live["adopted"] + live["trajectories_superseded"] == live["trajectories_accepted"] == 12
        assert live["trajectories_rejected"] == {}
        assert not ex.set_plan(_chunk(ex.clock.now_ns(), 0.0))  # type: ignore[arg-type]
    finally:
        ex.stop()
    st = ex.stats()
    assert ex.state == ExecutorState.STOPPED and ex.at_rest
    assert st["safety"]["total"] == 0 and st["faults"]["safety_interventions"] == 0
    assert max(st["prefilter_peak_ratio"].values()) <= 1.0
    assert st["plan_deviation_max_mrad"] == 0.0
    assert st["ticks"] > 400 and st["skipped_ticks"] >= 0 and "lateness_p99_ms" in st
    assert st["realtime"]["pid"] == pid
    # the process is gone and so is its shared memory
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert ex._block is None and ex._slot is None


@pytest.mark.realtime
def test_plans_that_do_not_continue_the_motion_are_joined_ahead_of_the_loop_never_inside_a_tick():
    # bench executor's publisher (and blend mode none, a chunk after a hold): each plan starts somewhere else than
    # what the loop commands. A ruckig join costs milliseconds of Python, more than a 2 ms tick: before, the loop
    # ran one per plan at pick-up (an overrun each under load). Now the main process prepares the hand-over and
    # the loop only adopts it (the margin here is generous so that a loaded host cannot make a plan arrive late).
    ex = ProcessExecutor(
        RobotSpec("robot_stack.sim.kinematic:KinematicRobot"),
        NAMES,
        panda.LIMITS,
        realtime=RealtimeConfig(start_timeout_s=120.0, handover_s=0.3),
    )
    ex.start()
    try:
        for k in range(8):
            assert ex.set_trajectory(_chunk(ex.clock.now_ns() + 50 * MS, 0.7 * k))
            assert ex.wait(lambda e, n=k + 1: e.stats()["trajectories_accepted"] == n, timeout_s=10.0)
            time.sleep(0.05)
        live = ex.stats()
    finally:
        ex.stop()
    assert live["trajectories_accepted"] == 8 and live["trajectories_rejected"] == {}
    assert live["handovers_prepared"] == 8
    assert live["joins"] == 0 and live["adopted"] == 8
    st = ex.stats()
    assert st["safety"]["total"] == 0 and max(st["prefilter_peak_ratio"].values()) <= 1.0


@pytest.mark.realtime
def test_process_executor_drives_a_robot_in_this_process_through_the_setpoint_ring():
    robot = KinematicRobot(history=10_000)
    ring = SetpointRing(7)
    relay = SetpointRelay(robot, ring)
    relay.publish_state()
    relay.start()
    ex = ProcessExecutor(
        RobotSpec(
            "robot_stack.control.setpoints:RingRobot",
            {"ring_name": ring.name, "joint_names": NAMES, "limits": panda.LIMITS},
        ),
        NAMES,
        panda.LIMITS,
        realtime=RealtimeConfig(start_timeout_s=120.0),
    )
    ex.start()
    try:
        target = panda.HOME_Q + 0.1
        t0 = ex.clock.now_ns()
        traj = JointTrajectory(NAMES, np.array([t0 + 100 * MS, t0 + 400 * MS]), np.stack([panda.HOME_Q, target]))
        assert ex.set_trajectory(traj)
        assert ex.wait(lambda e: e.stats()["ticks"] > 300 and e.at_rest, timeout_s=10.0)
    finally:
        ex.stop()
        relay.stop()
    np.testing.assert_allclose(robot.read_state().q, ex.commanded[0], atol=1e-12)
    assert np.abs(robot.read_state().q - target).max() < 0.06  # came to rest along the motion past the last step
    assert relay.applied == ring.written and relay.errors == 0
    t = np.array([c[0] for c in robot.commands])
    assert np.median(np.diff(t)) < 5 * MS  # a stream of set-points, not a few jumps
    ring.close()


class _TracedSink(KinematicRobot):
    """A robot that takes the executor's tick traces (like the HIL audit)."""

    def __init__(self) -> None:
        super().__init__(history=100_000)
        self.traces: list[tuple[int, object]] = []

    def command_traced(self, t_ns, q, gripper, trace) -> None:
        self.traces.append((t_ns, trace))
        self.command(q, gripper)


def test_the_ring_carries_each_ticks_trace_to_a_robot_that_takes_it():
    from robot_stack.control.executor import TickTrace

    robot = _TracedSink()
    ring = SetpointRing(7, capacity=16)
    relay = SetpointRelay(robot, ring)
    sink = RingRobot(ring.name, NAMES, panda.LIMITS, capacity=16)
    q_plan = panda.HOME_Q + 0.01
    sink.command_traced(5 * MS, panda.HOME_Q, None, TickTrace(q_plan, ExecutorState.TRACKING, 3))
    sink.command_at(7 * MS, panda.HOME_Q)  # no trace: forwarded the plain way
    relay.drain()
    assert [t for t, _ in robot.traces] == [5 * MS] and len(robot.commands) == 2
    trace = robot.traces[0][1]
    np.testing.assert_array_equal(trace.q_plan, q_plan)
    assert trace.state == ExecutorState.TRACKING and trace.interventions == 3
    sink.ring.close()
    ring.close()


@pytest.mark.realtime
def test_a_kept_alive_process_runs_a_fresh_executor_per_session():
    # the demo's and HIL's episodes: one real-time process for the whole run, a new executor (seeded where the arm
    # is now, fresh counters and safety filter) per start(); the relay hands each tick's trace over
    robot = _TracedSink()
    ring = SetpointRing(7)
    relay = SetpointRelay(robot, ring)
    relay.start()
    ex = ProcessExecutor(
        RobotSpec(
            "robot_stack.control.setpoints:RingRobot",
            {"ring_name": ring.name, "joint_names": NAMES, "limits": panda.LIMITS},
        ),
        NAMES,
        panda.LIMITS,
        realtime=RealtimeConfig(start_timeout_s=120.0),
        keep_alive=True,
        relay=relay,
    )
    try:
        ex.start()
        pid = ex.pid
        t0 = ex.clock.now_ns()
        q = np.stack([panda.HOME_Q, panda.HOME_Q + 0.1])
        traj = JointTrajectory(NAMES, np.array([t0 + 50 * MS, t0 + 300 * MS]), q)
        assert ex.set_trajectory(traj)
        assert ex.wait(lambda e: e.stats()["ticks"] > 250 and e.at_rest, timeout_s=10.0)
        ex.stop()
        first = ex.stats()
        assert ex.state == ExecutorState.STOPPED and os.kill(pid, 0) is None  # the process waits for the next one
        assert not ex.set_plan(MotionPlan.hold(NAMES, panda.HOME_Q, ex.clock.now_ns(), 1.0))  # no session: refused
        robot.command(panda.HOME_Q - 0.05)  # the arm was moved between sessions (a new episode)
        ex.start()
        assert ex.pid == pid
        np.testing.assert_allclose(ex.commanded[0], panda.HOME_Q - 0.05, atol=1e-12)  # seeded where it is now
        assert ex.stats()["ticks"] < first["ticks"] and ex.stats()["trajectories_accepted"] == 0  # fresh counters
        ex.stop()
        assert relay.applied == ring.written  # stop() drained the last set-points into the robot
    finally:
        ex.close()
        relay.stop()
    assert first["safety"]["total"] == 0
    assert len(robot.traces) == relay.applied and all(tr.interventions == 0 for _, tr in robot.traces)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    ring.close()
