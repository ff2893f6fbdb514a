"""Franka Emika Panda description shared by the simulator and the kinematics (one source of truth).

The URDF and collision meshes come from the ``example-robot-data`` wheel (installed with robot-stack, no download
at run time), found through that distribution's own metadata (its RECORD), wherever it was installed: the virtual
environment, ``pip install --user``, ``--target`` / ``PYTHONPATH`` layers. MuJoCo (``robot_stack.sim``) and pinocchio
(``robot_stack.kinematics.ik``) both load *this* URDF, so the simulated arm and the IK model have identical kinematics.
:data:`EMBODIMENT` collects everything the stack needs.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from robot_stack.robots.base import JointLimits
from robot_stack.robots.embodiment import Box, Embodiment, GripperSpec, HandEyeSpec, ServoSpec, locate_robot_data

ARM_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
BASE_LINK = "panda_link0"
TCP_FRAME = "panda_hand_tcp"  # between the fingertips, z pointing out of the hand (URDF: hand + 0.1034 m)
FINGER_MAX_OPENING_M = 0.04  # per finger

#: Ready pose: TCP about 0.3 m in front of the base at ~0.48 m height, gripper pointing down.
HOME_Q = np.array([0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398])

#: Datasheet limits (Franka Control Interface documentation), per arm joint.
LIMITS = JointLimits(
    lower=np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973]),
    upper=np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973]),
    velocity=np.array([2.175, 2.175, 2.175, 2.175, 2.61, 2.61, 2.61]),
    acceleration=np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]),
    jerk=np.array([7500.0, 3750.0, 5000.0, 6250.0, 7500.0, 10000.0, 10000.0]),
)


#: The distribution that ships the Panda description (``robots/panda_description``).
DISTRIBUTION = "example-robot-data"


@functools.lru_cache(maxsize=1)
def description_dir() -> Path:
    """Folder ``panda_description`` of the installed example-robot-data distribution (urdf/, meshes/collision/*.stl).

    Resolved through the distribution's metadata (the first one on ``sys.path``, as ``import`` would find), see
    :func:`~robot_stack.robots.embodiment.locate_robot_data`. Cached for the process
    (``description_dir.cache_clear()`` after changing ``sys.path``).

    Raises:
        ConfigError: the distribution is not installed, or holds no Panda URDF.
    """
    return locate_robot_data(
        "panda_description", "urdf/panda.urdf", distribution=DISTRIBUTION, what="Panda description"
    )


#: How the URDF names its package (meshes are referenced as ``package://example-robot-data/robots/...``).
URDF_PACKAGE = "package://example-robot-data/robots/panda_description/"


def urdf_text_with_absolute_paths() -> str:
    """The URDF text with every ``package://`` mesh URI replaced by the installed file's absolute path (for
    parsers that cannot resolve ROS packages: MuJoCo, placo)."""
    return urdf_path().read_text().replace(URDF_PACKAGE, f"{description_dir()}/")


def urdf_path() -> Path:
    """Path of ``panda.urdf`` (meshes referenced as ``package://example-robot-data/...``)."""
    return description_dir() / "urdf" / "panda.urdf"


#: Everything robot-stack knows about the Panda (see :class:`~robot_stack.robots.embodiment.Embodiment`).
EMBODIMENT = Embodiment(
    name="panda",
    urdf="panda_description/urdf/panda.urdf",
    base_link=BASE_LINK,
    arm_joints=ARM_JOINTS,
    tcp_frame=TCP_FRAME,
    limits=LIMITS,
    home_q=HOME_Q,
    gripper=GripperSpec(
        "fingers", FINGER_JOINTS, 0.0, FINGER_MAX_OPENING_M, bodies=("panda_leftfinger", "panda_rightfinger")
    ),
    # stiff gains in the spirit of mujoco-menagerie's Panda, torque limits from the datasheet; with gravity
    # compensation they track well
    servo=ServoSpec(
        kp=(4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0),
        kv=(450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0),
        force_limit=(87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0),
        armature=(0.1,) * 7,
        gripper_kp=200.0,
        gripper_kv=10.0,
        gripper_force_limit=40.0,
        source="Franka datasheet torque limits; gains chosen for stiff tracking (mujoco-menagerie style)",
    ),
    control_rate_hz=500.0,
    max_tcp_speed_mps=0.25,
    workspace=Box((0.10, -0.60, -0.01), (0.85, 0.60, 0.95)),
    task_region=Box((0.40, -0.15, 0.0), (0.60, 0.15, 0.0)),
    handeye=HandEyeSpec(
        mount_link=TCP_FRAME,
        board_offset_m=(0.0, 0.0, 0.03),
        stations=Box((0.38, -0.18, 0.30), (0.58, 0.18, 0.55)),
        tilt_rad=float(np.deg2rad(30.0)),
    ),
    limits_source="Franka Control Interface documentation (position, velocity, acceleration, jerk per joint)",
    description="Franka Emika Panda, 7 joints, parallel-finger hand (example-robot-data panda_description)",
)
