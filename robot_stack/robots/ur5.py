"""Universal Robots UR5 (CB3) description: 6 joints and a rigid two-prong tool.

The URDF and meshes are example-robot-data's ``ur_description/urdf/ur5_gripper.urdf`` (upstream: ros-industrial
``universal_robot``, BSD): the UR5 arm with a rigid two-prong tool on ``tool0`` (no actuator). The URDF has no
frame between the prongs, so the TCP link ``ur5_tcp`` is added 6 cm out of ``tool0`` (the prong tips) to the text
both MuJoCo and pinocchio load (:meth:`~robot_stack.robots.embodiment.Embodiment.urdf_text`).

Base frame: ``base_link`` (x towards the workspace at ``shoulder_pan_joint = 0``, z up). Note that UR's own
controller reports poses in ``base``, which is ``base_link`` turned 180 degrees about z; the real-arm adapter
(:mod:`robot_stack.robots.ur_rtde`) converts.
"""

from __future__ import annotations

import numpy as np

from robot_stack.robots.base import JointLimits
from robot_stack.robots.embodiment import Box, Embodiment, GripperSpec, HandEyeSpec, ServoSpec

__all__ = ["ARM_JOINTS", "BASE_LINK", "EMBODIMENT", "HOME_Q", "LIMITS", "TCP_FRAME"]

ARM_JOINTS: tuple[str, ...] = (
    "shoulder_pan_joint",
    "shoulder_lift_joint",
    "elbow_joint",
    "wrist_1_joint",
    "wrist_2_joint",
    "wrist_3_joint",
)
BASE_LINK = "base_link"
TCP_FRAME = "ur5_tcp"
#: TCP offset from ``tool0`` (metres, tool0 frame): the tips of the two 5 cm prongs.
TCP_OFFSET_M = (0.0, 0.0, 0.06)

#: Ready pose: TCP 0.40 m in front of the base at 0.40 m height, tool pointing down, x along base +x.
HOME_Q = np.array([-0.27637, -1.808385, 1.706032, -1.468444, -1.570796, -1.847167])

#: UR5 (CB3) user manual / datasheet: every joint +-360 deg (restricted here to +-180 deg, the range of
#: example-robot-data's ur5_gripper.urdf, so that the IK never winds a joint through a full turn), 180 deg/s per
#: joint. UR publishes no joint acceleration or jerk limits; 8 rad/s^2 and 800 rad/s^3 are conservative choices
#: (ur_rtde's servoJ moves of the demo need < 3 rad/s^2).
LIMITS = JointLimits(
    lower=np.full(6, -np.pi),
    upper=np.full(6, np.pi),
    velocity=np.full(6, np.pi),
    acceleration=np.full(6, 8.0),
    jerk=np.full(6, 800.0),
)

EMBODIMENT = Embodiment(
    name="ur5",
    urdf="ur_description/urdf/ur5_gripper.urdf",
    base_link=BASE_LINK,
    arm_joints=ARM_JOINTS,
    tcp_frame=TCP_FRAME,
    tcp_offset=("tool0", TCP_OFFSET_M),
    limits=LIMITS,
    home_q=HOME_Q,
    gripper=GripperSpec("fixed", bodies=("tool0",)),
    # torque limits from the URDF (150 N·m shoulder/elbow, 28 N·m wrists); gains chosen for stiff tracking with
    # gravity compensation (the real arm's servo loop is stiffer still)
    servo=ServoSpec(
        kp=(4000.0, 4000.0, 3000.0, 800.0, 800.0, 800.0),
        kv=(400.0, 400.0, 300.0, 80.0, 80.0, 80.0),
        force_limit=(150.0, 150.0, 150.0, 28.0, 28.0, 28.0),
        armature=(0.1,) * 6,
        source="UR5 URDF effort limits; gains chosen for stiff tracking",
    ),
    control_rate_hz=125.0,  # the CB3 controller's (and RTDE's) 8 ms cycle; a UR5e runs 500 Hz
    max_tcp_speed_mps=0.25,
    workspace=Box((0.15, -0.65, -0.01), (0.90, 0.65, 0.95)),
    task_region=Box((0.40, -0.15, 0.0), (0.60, 0.15, 0.0)),
    handeye=HandEyeSpec(
        mount_link=TCP_FRAME,
        board_offset_m=(0.0, 0.0, 0.01),
        stations=Box((0.38, -0.18, 0.30), (0.58, 0.18, 0.55)),
        tilt_rad=float(np.deg2rad(30.0)),
    ),
    limits_source=(
        "UR5 CB3 datasheet (+-360 deg, 180 deg/s; restricted to +-180 deg); acceleration and jerk chosen "
        "(not published by UR)"
    ),
    description="Universal Robots UR5 (CB3), 6 joints, rigid two-prong tool (example-robot-data ur5_gripper.urdf)",
)
