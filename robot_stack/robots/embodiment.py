"""What robot-stack knows about one arm model: its :class:`Embodiment` (one source of truth per robot).

An embodiment is a frozen value: the URDF the simulator *and* the IK load (so both share the kinematics), the arm
joints, the tool-centre point, the joint limits the planner and the safety filter enforce, the home posture, the
gripper, the simulated servos, the control rate, the TCP speed limit, the workspace box, where its tasks put objects
and how its hand-eye calibration is collected. Everything robot-specific in the stack is read from here
(``robot_stack.robots.get_embodiment(name)``); nothing downstream hard-codes one arm's numbers.

Frames: the robot base frame is the URDF's root link, x pointing towards the workspace, z up; the TCP frame's z
axis points out of the tool (``R_DOWN``: tool pointing down at the table). Units: metres, radians, seconds.
"""

from __future__ import annotations

import functools
import importlib.metadata
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.robots.base import JointLimits

__all__ = [
    "EXAMPLE_ROBOT_DATA_PACKAGE",
    "Box",
    "Embodiment",
    "GripperSpec",
    "HandEyeSpec",
    "ServoSpec",
    "example_robot_data_dir",
    "locate_robot_data",
]

#: The distribution that ships the URDFs and meshes.
ROBOT_DATA_DISTRIBUTION = "example-robot-data"
#: How example-robot-data's URDFs name their meshes.
EXAMPLE_ROBOT_DATA_PACKAGE = "package://example-robot-data/robots/"


_ROBOTS_IN_RECORD = "/example-robot-data/robots/"
_ROBOTS_GUESS = "cmeel.prefix/share/example-robot-data/robots"


def locate_robot_data(
    relative: str = "",
    marker: str = "",
    *,
    distribution: str = ROBOT_DATA_DISTRIBUTION,
    what: str = "robots folder",
) -> Path:
    """``robots/<relative>`` of the installed example-robot-data distribution (URDFs and meshes, no download),
    found through the distribution's own metadata (the first one on ``sys.path``, as ``import`` would find) wherever
    it was installed (virtual environment, ``--user``, ``--target`` / ``PYTHONPATH``): the folder its RECORD lists
    URDFs under, else its known layout (``cmeel.prefix/share/...``). Not cached (see :func:`example_robot_data_dir`).

    Args:
        relative: a folder below ``robots`` (``""``: ``robots`` itself).
        marker: a file that must exist below the result (``""``: the folder must exist).
        distribution: the distribution's name.
        what: how error messages name what was looked for.

    Raises:
        ConfigError: the distribution is not installed, or holds no such folder.
    """
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"{what} not found: the {distribution} distribution is not installed for this Python (searched "
            f"sys.path); install it with `pip install {distribution}`"
        ) from None
    roots = dict.fromkeys(
        posix[: posix.index(_ROBOTS_IN_RECORD) + len(_ROBOTS_IN_RECORD) - 1]
        for posix in (entry.as_posix() for entry in dist.files or ())
        if posix.endswith(".urdf") and _ROBOTS_IN_RECORD in posix
    )
    tried = []
    for root in [*roots, _ROBOTS_GUESS]:
        path = Path(str(dist.locate_file(root)))
        if relative:
            path = path / relative
        check = path / marker if marker else path
        tried.append(str(check))
        if check.is_file() if marker else check.is_dir():
            return path
    raise ConfigError(
        f"{what} not found in the installed {distribution} {dist.version} (looked at: {', '.join(tried)}); reinstall "
        f"it with `pip install --force-reinstall {distribution}`"
    )


@functools.lru_cache(maxsize=1)
def example_robot_data_dir() -> Path:
    """The ``robots`` folder of the installed example-robot-data distribution (see :func:`locate_robot_data`);
    cached for the process.

    Raises:
        ConfigError: the distribution is not installed, or holds no ``robots`` folder.
    """
    return locate_robot_data()


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in the robot base frame: ``lower`` and ``upper`` (3,) metres."""

    lower: tuple[float, float, float]
    upper: tuple[float, float, float]

    def __post_init__(self) -> None:
        lo, hi = np.asarray(self.lower, np.float64), np.asarray(self.upper, np.float64)
        if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(lo <= hi)):
            raise ConfigError(f"Box: expected finite (3,) lower <= upper metres, got {self.lower}, {self.upper}")
        object.__setattr__(self, "lower", tuple(float(v) for v in lo))
        object.__setattr__(self, "upper", tuple(float(v) for v in hi))

    def contains(self, xyz: np.ndarray) -> bool:
        p = np.asarray(xyz, np.float64)
        return bool(np.all(p >= np.asarray(self.lower)) and np.all(p <= np.asarray(self.upper)))

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """(n, 3) float64 points drawn uniformly from the box."""
        return rng.uniform(np.asarray(self.lower), np.asarray(self.upper), (n, 3))


@dataclass(frozen=True)
class GripperSpec:
    """The tool at the end of the arm.

    Attributes:
        kind: ``fingers`` (two prismatic fingers, the second following the first: the Panda hand), ``jaw`` (one
            revolute moving jaw against a fixed one: the SO-101) or ``fixed`` (a rigid tool, no actuator: the UR5's
            two-prong tool here). A fixed tool ignores gripper commands and reads as open (1.0).
        joints: the gripper's URDF joints (the actuated one first); empty for ``fixed``.
        closed, open: joint value (m or rad) of opening 0 and opening 1 of the actuated joint.
        bodies: URDF links that may touch objects (fingers, jaws, the fixed tool); a contact of one of them with
            the target counts as a touch.
    """

    kind: str
    joints: tuple[str, ...] = ()
    closed: float = 0.0
    open: float = 1.0
    bodies: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("fingers", "jaw", "fixed"):
            raise ConfigError(f"GripperSpec.kind: {self.kind!r} unknown; expected fingers | jaw | fixed")
        if self.kind != "fixed" and (not self.joints or self.open == self.closed):
            raise ConfigError(f"GripperSpec ({self.kind}): needs its joints and distinct closed/open values")
        if self.kind == "fingers" and len(self.joints) != 2:
            raise ConfigError("GripperSpec (fingers): expected two finger joints, the second following the first")
        if not self.bodies:
            raise ConfigError("GripperSpec.bodies: name the links that touch objects")

    @property
    def actuated(self) -> bool:
        return self.kind != "fixed"

    def joint_value(self, opening: float) -> float:
        """Joint value (m or rad) of an opening in [0, 1] (clipped)."""
        return self.closed + float(np.clip(opening, 0.0, 1.0)) * (self.open - self.closed)

    def opening(self, joint_value: float) -> float:
        """Opening in [0, 1] of a joint value (clipped); 1.0 for a fixed tool."""
        if not self.actuated:
            return 1.0
        return float(np.clip((joint_value - self.closed) / (self.open - self.closed), 0.0, 1.0))


@dataclass(frozen=True)
class ServoSpec:
    """The simulated position servos of the arm (MuJoCo ``position`` actuators plus joint properties).

    Attributes:
        kp: (n,) N·m/rad; kv: (n,) N·m·s/rad; force_limit: (n,) N·m per arm joint.
        armature: (n,) kg·m² reflected rotor inertia; damping: (n,) N·m·s/rad passive joint damping;
            frictionloss: (n,) N·m dry friction.
        gripper_kp, gripper_kv, gripper_force_limit: the gripper actuator (N/m or N·m/rad, ..., N or N·m).
        source: where the numbers come from.
    """

    kp: tuple[float, ...]
    kv: tuple[float, ...]
    force_limit: tuple[float, ...]
    armature: tuple[float, ...]
    damping: tuple[float, ...] = ()
    frictionloss: tuple[float, ...] = ()
    gripper_kp: float = 0.0
    gripper_kv: float = 0.0
    gripper_force_limit: float = 0.0
    source: str = ""


@dataclass(frozen=True)
class HandEyeSpec:
    """How the eye-to-hand calibration of this arm is collected: a ChArUco board rigidly on the hand.

    Attributes:
        mount_link: URDF link the board is attached to.
        board_offset_m: (3,) board centre in the TCP frame, metres (along the tool z: in front of the tool).
        stations: box (base frame) the board centre visits.
        tilt_rad: largest tilt of the board normal away from facing the camera, rad.
        board_squares: (columns, rows) of the ChArUco board; square_m, marker_m: square and marker sides, metres
            (default: the 5 x 7 board of 30 mm squares).
    """

    mount_link: str
    board_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.03)
    stations: Box = field(default_factory=lambda: Box((0.38, -0.18, 0.30), (0.58, 0.18, 0.55)))
    tilt_rad: float = 0.52
    board_squares: tuple[int, int] = (5, 7)
    square_m: float = 0.03
    marker_m: float = 0.022


@dataclass(frozen=True)
class Embodiment:
    """One arm model (see the module docstring).

    Attributes:
        name: robot model name (``StackConfig.robot.model``, ``--robot``, the VQ decoder's robot type).
        urdf: path of the URDF relative to the example-robot-data ``robots`` folder.
        base_link: URDF root link (the robot base frame).
        arm_joints: the controlled arm joints, in kinematic order (every ``q``).
        tcp_frame: URDF frame of the tool-centre point.
        tcp_offset: when set, ``(parent_link, (x, y, z))``: the TCP frame is *added* to the URDF as a fixed child of
            ``parent_link`` at that offset (metres, parent frame), for URDFs without a TCP link.
        limits: joint limits (position from the datasheet or URDF, velocity, acceleration, jerk).
        home_q: (n,) rad ready posture (TCP above the workspace, tool pointing down).
        gripper: the tool.
        servo: simulated servo parameters.
        control_rate_hz: the executor rate for this arm (set-points per second).
        max_tcp_speed_mps: TCP speed its demonstrations and decoded motions keep to, m/s.
        workspace: TCP box the safety filter keeps the tool in (base frame).
        task_region: table area (x, y box at the table height z = 0) where its tasks place objects.
        handeye: how its hand-eye calibration is collected.
        tool_down: (3, 3) rotation ``R_base_tcp`` of "tool pointing down at the table" for this arm (the decoders'
            ``orientation: down``); default x along base +x, z down. An arm whose wrist cannot roll that far uses
            the down orientation it can reach.
        table_center_xy, table_half_xy: the table under the arm (metres, base frame).
        mesh_voxel_m: when set, the simulator simplifies the arm's meshes by vertex clustering on a grid of this
            size (metres) — for arms whose CAD meshes are too fine to render on a CPU (the SO-101's: 320k faces).
        limits_source: where the joint limits come from (stated in the README).
        description: free text.
    """

    name: str
    urdf: str
    base_link: str
    arm_joints: tuple[str, ...]
    tcp_frame: str
    limits: JointLimits
    home_q: np.ndarray
    gripper: GripperSpec
    servo: ServoSpec
    control_rate_hz: float
    max_tcp_speed_mps: float
    workspace: Box
    task_region: Box
    handeye: HandEyeSpec
    tcp_offset: tuple[str, tuple[float, float, float]] | None = None
    tool_down: np.ndarray = field(default_factory=lambda: np.diag([1.0, -1.0, -1.0]))
    table_center_xy: tuple[float, float] = (0.35, 0.0)
    table_half_xy: tuple[float, float] = (0.65, 0.7)
    mesh_voxel_m: float | None = None
    limits_source: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        n = len(self.arm_joints)
        home = np.array(self.home_q, dtype=np.float64)
        if home.shape != (n,) or self.limits.lower.shape != (n,):
            raise ConfigError(f"Embodiment {self.name}: home_q and limits must have one entry per arm joint ({n})")
        if np.any(home < self.limits.lower) or np.any(home > self.limits.upper):
            raise ConfigError(f"Embodiment {self.name}: home_q {home.tolist()} is outside its joint limits")
        home.setflags(write=False)
        object.__setattr__(self, "home_q", home)
        down = np.array(self.tool_down, dtype=np.float64)
        if down.shape != (3, 3) or not np.allclose(down @ down.T, np.eye(3), atol=1e-9) or np.linalg.det(down) < 0:
            raise ConfigError(f"Embodiment {self.name}: tool_down must be a (3, 3) rotation matrix")
        down.setflags(write=False)
        object.__setattr__(self, "tool_down", down)
        for name in ("kp", "kv", "force_limit", "armature"):
            if len(getattr(self.servo, name)) != n:
                raise ConfigError(f"Embodiment {self.name}: servo.{name} needs {n} values (one per arm joint)")
        if not (self.control_rate_hz > 0 and self.max_tcp_speed_mps > 0):
            raise ConfigError(f"Embodiment {self.name}: control_rate_hz and max_tcp_speed_mps must be positive")

    @property
    def dof(self) -> int:
        """Number of arm joints."""
        return len(self.arm_joints)

    @property
    def orientation_dof(self) -> int:
        """How many orientation components the arm can set independently of its position: 3 for 6+ joints, fewer
        for a 5-DoF arm (the IK then reports the unreachable part of a target orientation)."""
        return max(0, min(3, self.dof - 3))

    def urdf_path(self) -> Path:
        """The URDF file (meshes referenced as ``package://example-robot-data/...``)."""
        path = example_robot_data_dir() / self.urdf
        if not path.is_file():
            raise ConfigError(f"{self.name}: URDF {path} not found; reinstall example-robot-data")
        return path

    def urdf_text(self) -> str:
        """The URDF with absolute mesh paths (for parsers that cannot resolve ROS packages) and, when
        :attr:`tcp_offset` is set, the TCP link added: the text both MuJoCo and pinocchio load."""
        text = self.urdf_path().read_text().replace(EXAMPLE_ROBOT_DATA_PACKAGE, f"{example_robot_data_dir()}/")
        if self.tcp_offset is not None:
            parent, xyz = self.tcp_offset
            if f'<link name="{parent}"' not in text:
                raise ConfigError(f"{self.name}: URDF has no link {parent!r} to attach the TCP to")
            tcp = (
                f'<link name="{self.tcp_frame}"/><joint name="{self.tcp_frame}_fixed_joint" type="fixed">'
                f'<parent link="{parent}"/><child link="{self.tcp_frame}"/>'
                f'<origin xyz="{xyz[0]} {xyz[1]} {xyz[2]}" rpy="0 0 0"/></joint>'
            )
            text = text.replace("</robot>", tcp + "</robot>", 1)
        return text
