"""Real arms behind the Robot interface: UR (ur-rtde), Franka (pylibfranka), SO-100/101 (LeRobot's follower).

Without an arm: the real ur-rtde and pylibfranka libraries are driven as far as they go (a refused connection), the
unit and frame conversions are checked, and the adapters' command paths run against fakes at the library boundary
(LeRobot's follower class: ``tests/fake_lerobot.py``, read from lerobot 0.4.4). With an arm: the ``hardware`` tests
at the end (``ROBOT_STACK_UR_HOST``, ``ROBOT_STACK_FRANKA_HOST``, ``ROBOT_STACK_SO101_PORT``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import fake_lerobot
import numpy as np
import pytest

from robot_stack.arms import franka, so_follower, ur_rtde
from robot_stack.errors import ConfigError, RobotError, SafetyError, ShapeError
from robot_stack.kinematics.ik import ik_for
from robot_stack.robots import panda, so101, ur5
from robot_stack.types import Pose

# ------------------------------------------------------------------------------------------------------ UR


def test_ur_connection_refused_by_the_real_library_names_host_port_and_what_to_check() -> None:
    t0 = time.monotonic()
    with pytest.raises(RobotError, match=r"127\.0\.0\.1:30004.*remote control"):
        ur_rtde.connect("127.0.0.1")
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(ConfigError, match="host is empty"):
        ur_rtde.connect("")
    with pytest.raises(ConfigError, match="not a Universal Robots arm"):
        ur_rtde.connect("127.0.0.1", model="so101")


def test_ur_servo_parameters_are_checked() -> None:
    assert ur_rtde.ServoJConfig().rate_hz == 125.0  # the CB3 cycle
    for bad in ({"lookahead_time_s": 0.01}, {"gain": 50.0}, {"rate_hz": 1000.0}, {"stop_deceleration": 0.0}):
        with pytest.raises(ConfigError):
            ur_rtde.ServoJConfig(**bad)


def test_ur_tcp_pose_from_the_controller_frame() -> None:
    """UR's ``base`` is the URDF's ``base_link`` turned 180 deg about z; RTDE rotations are axis-angle vectors."""
    pose = ur_rtde.tcp_from_rtde([0.4, 0.1, 0.3, 0.0, np.pi, 0.0])  # tool pointing down in UR's base frame
    np.testing.assert_allclose(pose.translation, [-0.4, -0.1, 0.3])
    np.testing.assert_allclose(pose.rotation @ [0, 0, 1], [0, 0, -1], atol=1e-12)
    rng = np.random.default_rng(0)
    for _ in range(5):
        rtde = [*rng.uniform(-0.5, 0.5, 3), *rng.uniform(-1.0, 1.0, 3)]
        np.testing.assert_allclose(ur_rtde.rtde_from_tcp(ur_rtde.tcp_from_rtde(rtde)), rtde, atol=1e-9)
    with pytest.raises(RobotError, match="6 finite numbers"):
        ur_rtde.tcp_from_rtde([0.1, 0.2])


class _FakeRTDE:
    """``RTDEControlInterface`` + ``RTDEReceiveInterface`` methods the adapter calls, recording them."""

    def __init__(self, q: np.ndarray) -> None:
        self.q = np.array(q, dtype=np.float64)
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.connected = True
        self.servo_ok = True

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any) -> Any:
            self.calls.append((name, args))
            return True

        return record

    def isConnected(self) -> bool:  # noqa: N802 - ur_rtde's name
        return self.connected

    def servoJ(self, q: list[float], *args: float) -> bool:  # noqa: N802
        self.calls.append(("servoJ", (q, *args)))
        self.q = np.array(q)
        return self.servo_ok

    def getActualQ(self) -> list[float]:  # noqa: N802
        return self.q.tolist()

    def getActualQd(self) -> list[float]:  # noqa: N802
        return [0.0] * len(self.q)

    def getActualTCPPose(self) -> list[float]:  # noqa: N802
        return ur_rtde.rtde_from_tcp(ik_for(ur5.EMBODIMENT).fk(self.q))


def test_ur_servoj_path_units_and_refusals() -> None:
    rtde = _FakeRTDE(ur5.HOME_Q)
    arm = ur_rtde.URArm(rtde, rtde)
    assert ("setTcp", ([0.0, 0.0, 0.06, 0.0, 0.0, 0.0],)) in rtde.calls  # the description's TCP on the controller
    state = arm.read_state()
    np.testing.assert_allclose(state.q, ur5.HOME_Q)
    np.testing.assert_allclose(state.ee_pose.translation, ik_for(ur5.EMBODIMENT).fk(ur5.HOME_Q).translation, atol=1e-9)
    target = ur5.HOME_Q + 0.01
    arm.command(target, 0.5)
    name, args = rtde.calls[-1]
    assert name == "servoJ" and args[1:] == (0.0, 0.0, 1 / 125.0, 0.1, 300.0)
    np.testing.assert_allclose(args[0], target)
    with pytest.raises(SafetyError, match="outside limits"):
        arm.command(ur5.HOME_Q + np.array([0, 0, 0, 0, 0, 5.5]))
    with pytest.raises(ShapeError):
        arm.command(np.zeros(7))
    assert arm.rejected == 2 and rtde.calls[-1][0] == "servoJ" and arm.commands == 1
    rtde.servo_ok = False
    with pytest.raises(RobotError, match="rejected servoJ"):
        arm.command(target)
    rtde.connected = False
    with pytest.raises(RobotError, match="connection lost"):
        arm.read_state()
    arm.close()
    assert [c[0] for c in rtde.calls[-4:]] == ["servoStop", "stopScript", "disconnect", "disconnect"]


# ---------------------------------------------------------------------------------------------------- Franka


def test_franka_connection_refused_by_the_real_library() -> None:
    with pytest.raises(RobotError, match=r"127\.0\.0\.1 \(NetworkException.*FCI"):
        franka.connect("127.0.0.1", realtime=False)


def test_franka_pose_is_column_major() -> None:
    T = np.eye(4)
    T[:3, :3] = Pose.from_quat_xyz(np.array([0.9, 0.1, -0.3, 0.2]), np.zeros(3)).rotation
    T[:3, 3] = [0.3, -0.1, 0.5]
    pose = franka.pose_from_o_t_ee(T.flatten(order="F"))  # libfranka's layout
    np.testing.assert_allclose(pose.matrix, T, atol=1e-12)
    with pytest.raises(RobotError):
        franka.pose_from_o_t_ee(np.zeros(12))


class _FrankaState:
    def __init__(self, q: np.ndarray) -> None:
        self.q = list(q)
        self.dq = [0.0] * 7
        self.O_T_EE = ik_for(panda.EMBODIMENT).fk(np.asarray(q)).matrix.flatten(order="F").tolist()


class _FakeFrankaControl:
    """libfranka's active control: ``readOnce`` paced at 1 kHz, ``writeOnce`` with the real ``JointPositions``."""

    def __init__(self, robot: _FakeFrankaRobot) -> None:
        self.robot = robot

    def readOnce(self) -> tuple[_FrankaState, float]:  # noqa: N802
        time.sleep(0.001)
        if self.robot.reflex is not None:
            raise self.robot.reflex
        return _FrankaState(self.robot.q), 0.001

    def writeOnce(self, command: Any) -> None:  # noqa: N802
        import pylibfranka

        assert isinstance(command, pylibfranka.JointPositions)
        self.robot.q = np.array(command.q)
        self.robot.written.append(np.array(command.q))


class _FakeFrankaRobot:
    def __init__(self) -> None:
        self.q = panda.HOME_Q.copy()
        self.written: list[np.ndarray] = []
        self.reflex: Exception | None = None
        self.stopped = False
        self.mode: Any = None

    def read_once(self) -> _FrankaState:
        return _FrankaState(self.q)

    def start_joint_position_control(self, mode: Any) -> _FakeFrankaControl:
        self.mode = mode
        return _FakeFrankaControl(self)

    def stop(self) -> None:
        self.stopped = True


def test_franka_1khz_loop_interpolates_set_points_and_stops_on_a_reflex() -> None:
    import pylibfranka

    robot = _FakeFrankaRobot()
    arm = franka.FrankaArm(robot, pylibfranka)
    try:
        assert robot.mode == pylibfranka.ControllerMode.JointImpedance
        q1 = panda.HOME_Q + 0.01
        for k in range(20):  # 500 Hz set-points along a straight line
            arm.command(panda.HOME_Q + 0.01 * (k + 1) / 20)
            time.sleep(0.002)
        deadline = time.monotonic() + 5.0  # the loop runs beside (1 kHz on the arm's computer; slower on a busy CI)
        while time.monotonic() < deadline and not np.allclose(robot.written[-1], q1, atol=1e-12):
            time.sleep(0.01)
        assert arm.loop_cycles > 1
        written = np.array(robot.written)
        np.testing.assert_allclose(written[-1], q1, atol=1e-12)  # settled on the last set-point
        progress = (written - panda.HOME_Q)[:, 0] / 0.01  # every write lies on the line, moving forward only
        np.testing.assert_allclose(written - panda.HOME_Q, progress[:, None] * 0.01 * np.ones(7), atol=1e-12)
        assert np.all(np.diff(progress) >= -1e-12) and progress.min() >= 0 and progress.max() <= 1 + 1e-12
        # the state the loop read lags its last write by one cycle (as on the arm): wait for the next read
        while time.monotonic() < deadline and not np.allclose(arm.read_state().q, q1, atol=1e-12):
            time.sleep(0.01)
        state = arm.read_state()
        np.testing.assert_allclose(state.q, q1)
        np.testing.assert_allclose(state.ee_pose.translation, ik_for(panda.EMBODIMENT).fk(q1).translation, atol=1e-9)
        robot.reflex = pylibfranka.ControlException("communication_constraints_violation")
        time.sleep(0.05)
        with pytest.raises(RobotError, match="communication_constraints_violation"):
            arm.command(q1)
    finally:
        arm.close()
    assert robot.stopped


# ------------------------------------------------------------------------------------------------- SO-101


def test_so_follower_without_lerobot_says_how_to_install_it() -> None:
    import importlib.util

    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("lerobot is installed here; this checks the message where it is not")
    with pytest.raises(RobotError, match=r"pip install lerobot==0\.4\.4"):
        so_follower.connect("/dev/ttyACM0")


@pytest.fixture
def follower(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    fake_lerobot.install(monkeypatch)
    port = tmp_path / "ttyACM0"
    port.write_text("")  # the device node
    arm = so_follower.connect(str(port), id="follower_a")
    yield arm
    if arm.follower.is_connected:
        arm.close()


def test_so_follower_connect_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_lerobot.install(monkeypatch)
    with pytest.raises(RobotError, match="lerobot-find-port"):
        so_follower.connect("/dev/does-not-exist")
    module = fake_lerobot
    follower = module.SO101Follower(module.SO101FollowerConfig(port="/dev/null", use_degrees=False))
    follower.connect()
    with pytest.raises(ConfigError, match="use_degrees"):
        so_follower.SOFollowerArm(follower)
    idle = module.SO101Follower(module.SO101FollowerConfig(port="/dev/null"))
    with pytest.raises(RobotError, match="not connected"):
        so_follower.SOFollowerArm(idle)


def test_so_follower_units_degrees_and_gripper_percent(follower: Any) -> None:
    fake = follower.follower
    assert fake.config.use_degrees and fake.config.id == "follower_a"
    q = so101.HOME_Q
    follower.command(q, 0.3)
    sent = fake.writes[-1]
    np.testing.assert_allclose([sent[j] for j in so101.ARM_JOINTS], np.rad2deg(q))
    assert sent["gripper"] == pytest.approx(30.0)
    state = follower.read_state()
    np.testing.assert_allclose(state.q, q)
    assert state.gripper == pytest.approx(0.3)
    np.testing.assert_allclose(state.ee_pose.translation, ik_for(so101.EMBODIMENT).fk(q).translation)
    follower.command(q + 0.01)
    time.sleep(0.01)
    state2 = follower.read_state()
    assert np.all(state2.dq > 0)  # differentiated from successive reads
    assert "gripper" not in fake.writes[-1]  # no opening given: the gripper is not commanded
    with pytest.raises(SafetyError, match="outside limits"):
        follower.command(q + np.array([0, 0, 0, 1.0, 0]))
    with pytest.raises(SafetyError, match="gripper"):
        follower.command(q, 1.5)
    assert follower.rejected == 2 and len(fake.writes) == 2


def test_so_follower_counts_lerobot_clipping_and_maps_its_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    fake_lerobot.install(monkeypatch)
    port = tmp_path / "ttyACM1"
    port.write_text("")
    arm = so_follower.connect(str(port), max_relative_target=5)
    arm.command(np.deg2rad([20.0, 0.0, 0.0, 0.0, 0.0]))
    assert arm.clipped == 1 and arm.follower.present["shoulder_pan"] == pytest.approx(5.0)
    arm.close()
    with pytest.raises(RobotError, match="USB cable"):
        arm.read_state()


# ----------------------------------------------------------------------------------------------- hardware


@pytest.mark.hardware
def test_ur_live_state_and_hold() -> None:
    host = os.environ.get("ROBOT_STACK_UR_HOST")
    if not host:
        pytest.skip("set ROBOT_STACK_UR_HOST to the UR controller's IP")
    arm = ur_rtde.connect(host)
    try:
        state = arm.read_state()
        for _ in range(125):  # hold the present posture for one second
            arm.command(state.q)
            time.sleep(1 / 125)
        assert np.abs(arm.read_state().q - state.q).max() < 1e-3
    finally:
        arm.close()


@pytest.mark.hardware
def test_franka_live_state_and_hold() -> None:
    host = os.environ.get("ROBOT_STACK_FRANKA_HOST")
    if not host:
        pytest.skip("set ROBOT_STACK_FRANKA_HOST to the control box's IP")
    arm = franka.connect(host)
    try:
        state = arm.read_state()
        for _ in range(500):
            arm.command(state.q)
            time.sleep(0.002)
        assert np.abs(arm.read_state().q - state.q).max() < 1e-3
    finally:
        arm.close()


@pytest.mark.hardware
def test_so101_live_state_and_hold() -> None:
    port = os.environ.get("ROBOT_STACK_SO101_PORT")
    if not port:
        pytest.skip("set ROBOT_STACK_SO101_PORT to the follower's serial port (lerobot installed)")
    arm = so_follower.connect(port, id=os.environ.get("ROBOT_STACK_SO101_ID"))
    try:
        state = arm.read_state()
        for _ in range(100):
            arm.command(state.q)
            time.sleep(0.01)
        assert np.abs(arm.read_state().q - state.q).max() < np.deg2rad(2.0)
    finally:
        arm.close()


def test_franka_interpolation_starts_where_the_loop_is() -> None:
    """A new set-point starts a segment from the loop's current target (no jump), reached one period later."""
    import pylibfranka

    robot = _FakeFrankaRobot()
    arm = franka.FrankaArm(robot, pylibfranka)
    arm.close()  # the loop is not needed: target_at is a pure function of the stored segment
    q0 = panda.HOME_Q
    arm._prev, arm._last = (10.0, q0), (10.002, q0 + 0.002)
    np.testing.assert_allclose(arm.target_at(10.003), q0 + 0.001)  # halfway along the newest segment
    np.testing.assert_allclose(arm.target_at(10.010), q0 + 0.002)  # held at the set-point after one period
    np.testing.assert_allclose(arm.target_at(9.0), q0)
