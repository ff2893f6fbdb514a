"""Teleop devices emit ActionChunks that the stack's own decoders (IK), executor and safety filter execute."""

from __future__ import annotations

import io

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor
from robot_stack.errors import DecodeError
from robot_stack.robots import panda
from robot_stack.sim.kinematic import KinematicRobot
from robot_stack.teleop import (
    ExpertTeleop,
    KeyboardJog,
    KeyEvent,
    LeaderArm,
    QueueKeySource,
    SpaceMouse,
    StdinKeySource,
    TeleopDecoder,
    episode_event,
    spacemouse_velocity,
)
from robot_stack.types import ActionChunk, Observation


def _obs(robot: KinematicRobot) -> Observation:
    st = robot.read_state()
    return Observation(st.t_ns, st, (), "test")


def _session(robot: KinematicRobot, clock: FakeClock, device, decoder: TeleopDecoder, seconds: float) -> None:
    """What a teleop session does: every device period, observe, ask the device, decode, hand to the executor."""
    executor = Executor(robot, clock)
    per_command = round(device.period_s / executor.period_s)
    for step in range(round(seconds / executor.period_s)):
        if step % per_command == 0:
            executor.set_trajectory(decoder.decode(device(_obs(robot)), robot.read_state()))
        clock.advance(executor.period_ns)
        executor.tick(clock.now_ns())


def test_keyboard_jog_moves_the_tcp_through_ik_and_executor():
    clock = FakeClock(1_000_000_000)
    robot = KinematicRobot(clock=clock)
    keys = QueueKeySource()
    jog = KeyboardJog(keys, step_m=0.01, period_s=0.1)
    p0 = robot.read_state().ee_pose.translation
    assert jog.command(_obs(robot)) is None  # nothing pressed: no new command
    keys.put("iiu")  # +2 cm x, +1 cm z
    chunk = jog.command(_obs(robot))
    np.testing.assert_allclose(chunk.actions[1], [0.02, 0.0, 0.01], atol=1e-7)
    decoder = TeleopDecoder()
    _session(robot, clock, jog, decoder, 1.0)  # idle afterwards: the device keeps aiming at its target
    np.testing.assert_allclose(robot.read_state().ee_pose.translation - p0, [0.02, 0.0, 0.01], atol=1e-3)
    keys.put("gx")  # gripper toggle + an episode key, kept for the session
    chunk = jog.command(_obs(robot))
    assert chunk.gripper is not None and chunk.gripper[1] == 0.0 and jog.episode_keys == ["x"]
    assert decoder.last is not None and decoder.last[2] is not None


def test_hold_chunk_when_device_is_idle():
    robot = KinematicRobot(clock=FakeClock())
    chunk = KeyboardJog(QueueKeySource())(_obs(robot))
    assert chunk.action_space == "ee_delta_xyz" and not np.any(chunk.actions)


def test_leader_arm_commands_joints_directly():
    clock = FakeClock(1_000_000_000)
    follower = KinematicRobot(clock=clock)
    leader = KinematicRobot(clock=clock, q0=panda.HOME_Q + 0.05)
    arm = LeaderArm(leader, period_s=0.05)
    chunk = arm.command(_obs(follower))
    assert chunk.action_space == "joint_position"
    np.testing.assert_allclose(chunk.actions[1], panda.HOME_Q + 0.05, atol=1e-6)
    _session(follower, clock, arm, TeleopDecoder(), 1.0)
    np.testing.assert_allclose(follower.read_state().q, panda.HOME_Q + 0.05, atol=1e-4)


def test_expert_device_heads_for_the_cube():
    robot = KinematicRobot(clock=FakeClock())
    cube_top = np.array([0.5, 0.1, 0.05])
    chunk = ExpertTeleop(lambda: cube_top).command(_obs(robot))
    tcp = robot.read_state().ee_pose.translation
    before = np.linalg.norm(tcp - cube_top)
    after = np.linalg.norm(tcp + chunk.actions[-1] - cube_top)
    assert chunk.action_space == "ee_delta_xyz" and after < before - 0.05


def test_decoder_refuses_unknown_action_space():
    robot = KinematicRobot(clock=FakeClock())
    chunk = ActionChunk(0, 0.1, np.zeros((2, 3)), "pixels")
    with pytest.raises(DecodeError, match="action space"):
        TeleopDecoder().decode(chunk, robot.read_state())


def test_spacemouse_velocity_mapping():
    v = spacemouse_velocity(np.array([0.0, 1.0, 0.0]), 0.1, 0.1)
    np.testing.assert_allclose(v, [0.1, 0.0, 0.0])
    np.testing.assert_allclose(spacemouse_velocity(np.array([0.05, -0.05, 0.09]), 0.1, 0.1), 0.0)
    np.testing.assert_allclose(spacemouse_velocity(np.array([1.0, 0.0, -1.0]), 0.2, 0.0), [0.0, -0.2, -0.2])


def test_episode_keys_from_a_terminal_stream():
    src = StdinKeySource(io.StringIO("s\ni k\ne\n"))
    src.start()
    src._thread.join(5)  # the reader ends with the stream and sends q
    keys = src.poll()
    assert keys == ["s", "i", "k", "e", "q"]
    events = [episode_event(k) for k in keys]
    assert events == [KeyEvent.START, None, None, KeyEvent.STOP_SUCCESS, KeyEvent.QUIT]


@pytest.mark.hardware
def test_spacemouse_reads_the_device():
    mouse = SpaceMouse()
    mouse.start()
    try:
        robot = KinematicRobot(clock=FakeClock())
        chunk = mouse.command(_obs(robot))
        assert chunk.action_space == "ee_delta_xyz" and chunk.horizon == 3
    finally:
        mouse.stop()
