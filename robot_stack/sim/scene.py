"""The MuJoCo scene of the demo: a Franka Panda on a table, a red cube, an RGB-D camera.

The model is built with :class:`mujoco.MjSpec` from the *same* URDF pinocchio loads
(:func:`robot_stack.robots.panda.urdf_path`), so the simulated arm and the IK model share their kinematics. The
URDF text is preprocessed before MuJoCo parses it:

* ``package://example-robot-data/...`` mesh URIs become absolute paths of the installed wheel;
* the visual meshes are Collada (``.dae``), which MuJoCo cannot read: visual geoms are discarded and the collision
  STL meshes (which are also rendered) stand in for both;
* fixed joints are *not* fused, so ``panda_link8``, ``panda_hand`` and ``panda_hand_tcp`` stay bodies; a site
  :data:`TCP_SITE` sits on ``panda_hand_tcp`` so the tool-centre point can be read from ``data.site_xpos``.

Frames: ``panda_link0`` (the robot base) is at the MuJoCo world origin with identity orientation, so the robot
base frame *is* the world frame (:data:`T_WORLD_BASE` is the identity; code should still compose with it so a
moved base stays a one-line change). The table top is the plane ``z = 0`` of that frame; the robot stands on it.

Added to the URDF arm: joint armature, gravity compensation on every robot body, position servos on the 7 arm
joints (PD with force limits from the datasheet), one position servo on ``panda_finger_joint1`` (the URDF's
``mimic`` becomes an equality constraint that makes ``panda_finger_joint2`` follow), a table, floor, lights, a
5 cm red cube on a free joint, and fixed cameras (``"front"`` by default; more via :class:`SceneConfig`).

Collision filtering: robot geoms have ``contype=2, conaffinity=1``, environment geoms ``contype=1,
conaffinity=3``: the robot collides with the table and the cube but not with itself (the URDF collision meshes
of neighbouring links overlap at many poses).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import mujoco
import numpy as np

from robot_stack.errors import SimError
from robot_stack.robots import panda
from robot_stack.types import Pose

log = logging.getLogger("robot_stack.sim")

__all__ = [
    "ARM_ACTUATORS",
    "CUBE_BODY",
    "CUBE_GEOM",
    "CUBE_JOINT",
    "FINGER_BODIES",
    "FRONT_CAMERA",
    "GRIPPER_ACTUATOR",
    "ObjectSpec",
    "TABLE_GEOM",
    "TCP_SITE",
    "T_WORLD_BASE",
    "CameraSpec",
    "SceneConfig",
    "build_model",
    "build_spec",
    "scene_xml",
]

# Names of the elements other modules look up. -----------------------------------------------------------------
TCP_SITE = "tcp"
CUBE_BODY = "cube"
CUBE_JOINT = "cube_free"
CUBE_GEOM = "cube_geom"
TABLE_GEOM = "table_top"
FLOOR_GEOM = "floor"
FINGER_BODIES: tuple[str, ...] = ("panda_leftfinger", "panda_rightfinger")
ARM_ACTUATORS: tuple[str, ...] = tuple(f"act_{j}" for j in panda.ARM_JOINTS)
GRIPPER_ACTUATOR = "act_gripper"

#: Pose of the robot base (``panda_link0``) in the MuJoCo world frame: the identity by construction.
T_WORLD_BASE = Pose.identity("world", "base")

#: Servo gains of the arm joints (N·m/rad, N·m·s/rad) and torque limits (N·m): Franka datasheet torque limits,
#: stiff gains in the spirit of mujoco-menagerie's Panda. Together with gravity compensation they track well.
ARM_KP = np.array([4500.0, 4500.0, 3500.0, 3500.0, 2000.0, 2000.0, 2000.0])
ARM_KV = np.array([450.0, 450.0, 350.0, 350.0, 200.0, 200.0, 200.0])
ARM_FORCE_LIMIT = np.array([87.0, 87.0, 87.0, 87.0, 12.0, 12.0, 12.0])
ARM_ARMATURE = 0.1  # kg·m², reflected rotor inertia per joint (stabilises the stiff servos)
GRIPPER_KP = 200.0  # N/m on finger 1; finger 2 follows through the equality constraint
GRIPPER_KV = 10.0  # N·s/m
GRIPPER_FORCE_LIMIT = 40.0  # N


_ROBOT_RGBA = (0.92, 0.92, 0.92, 1.0)
_HAND_RGBA = (0.25, 0.25, 0.27, 1.0)
CUBE_RGBA = (0.85, 0.08, 0.08, 1.0)
_TABLE_RGBA = (0.55, 0.45, 0.35, 1.0)
_FLOOR_RGBA = (0.35, 0.37, 0.40, 1.0)
_TABLE_THICKNESS = 0.04  # m
_TABLE_HEIGHT = 0.75  # m, table top above the floor


@dataclass(frozen=True)
class CameraSpec:
    """A fixed pinhole camera in the world frame.

    Attributes:
        name: MuJoCo camera name, also the robot-stack ``camera_id``.
        pos: (x, y, z) metres, camera centre in the world (= robot base) frame.
        target: (x, y, z) metres, the point the optical axis passes through.
        fovy_deg: vertical field of view, degrees.
        up: world direction that should appear "up" in the image (must not be parallel to the view direction).
    """

    name: str
    pos: tuple[float, float, float]
    target: tuple[float, float, float]
    fovy_deg: float = 50.0
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)

    def quat_wxyz(self) -> np.ndarray:
        """(4,) MuJoCo camera orientation (camera looks along its -z, +y up) as a unit quaternion (w, x, y, z)."""
        pos = np.asarray(self.pos, dtype=np.float64)
        forward = np.asarray(self.target, dtype=np.float64) - pos
        if np.linalg.norm(forward) < 1e-6:
            raise SimError(f"camera {self.name!r}: target coincides with pos {self.pos}; give a distinct target")
        forward /= np.linalg.norm(forward)
        right = np.cross(forward, np.asarray(self.up, dtype=np.float64))
        if np.linalg.norm(right) < 1e-6:
            raise SimError(f"camera {self.name!r}: 'up' {self.up} is parallel to the view direction; change 'up'")
        right /= np.linalg.norm(right)
        up = np.cross(right, forward)
        rot = np.column_stack([right, up, -forward])
        quat = np.zeros(4)
        mujoco.mju_mat2Quat(quat, rot.reshape(-1))
        return quat


@dataclass(frozen=True)
class ObjectSpec:
    """A free-standing object on the table besides the red cube (language-conditioned tasks need several).

    Attributes:
        name: body name; its geom is ``<name>_geom`` and its free joint ``<name>_free``.
        shape: ``box`` (a cube of edge ``size_m``) or ``cylinder`` (diameter ``size_m``, upright).
        size_m: cube edge or cylinder diameter, metres.
        height_m: cylinder height, metres (a box's height is ``size_m``).
        rgba: colour.
        mass_kg: mass.
        rest_xy: (x, y) metres in the base frame where :meth:`SimWorld.reset` puts it (off the workspace).
    """

    name: str
    shape: str
    size_m: float
    rgba: tuple[float, float, float, float]
    height_m: float = 0.0
    mass_kg: float = 0.1
    rest_xy: tuple[float, float] = (0.0, 0.6)

    def __post_init__(self) -> None:
        if self.shape not in ("box", "cylinder"):
            raise SimError(f"object {self.name!r}: shape {self.shape!r} unknown; expected box or cylinder")
        if not self.size_m > 0 or (self.shape == "cylinder" and not self.height_m > 0):
            raise SimError(f"object {self.name!r}: sizes must be positive metres, got {self.size_m}, {self.height_m}")

    @property
    def half_height_m(self) -> float:
        """Half the object's height, metres (its centre's height when it stands on the table)."""
        return (self.size_m if self.shape == "box" else self.height_m) / 2


#: The default camera: ~1.15 m from the workspace centre, looking down at ~47°; sees the cube region
#: x∈[0.35, 0.65], y∈[-0.2, 0.2] and the gripper at the home pose.
FRONT_CAMERA = CameraSpec("front", pos=(1.15, 0.0, 0.95), target=(0.45, 0.0, 0.2), fovy_deg=55.0)


@dataclass(frozen=True)
class SceneConfig:
    """What goes into the scene (frozen and hashable).

    Attributes:
        cameras: fixed cameras; the first is the default camera of :class:`~robot_stack.sim.camera.SimCamera`.
        cube_size_m: edge length of the red cube, metres.
        cube_mass_kg: mass of the cube.
        timestep_s: physics step, seconds.
        max_render_width, max_render_height: offscreen framebuffer size, the largest image any camera renders.
        shadows: whether the light casts shadows (prettier, slower software rendering).
        objects: free-standing objects besides the red cube (:class:`ObjectSpec`).
    """

    cameras: tuple[CameraSpec, ...] = (FRONT_CAMERA,)
    cube_size_m: float = 0.05
    cube_mass_kg: float = 0.1
    timestep_s: float = 0.002
    max_render_width: int = 1280
    max_render_height: int = 960
    shadows: bool = False
    objects: tuple[ObjectSpec, ...] = ()

    def with_camera(self, camera: CameraSpec) -> SceneConfig:
        """A copy of this config with one more camera (e.g. a second viewpoint)."""
        if any(c.name == camera.name for c in self.cameras):
            raise SimError(f"SceneConfig: a camera named {camera.name!r} already exists; choose another name")
        return dataclasses.replace(self, cameras=(*self.cameras, camera))


def _panda_urdf_text() -> str:
    """The Panda URDF rewritten for MuJoCo: absolute STL paths, no Collada, fixed links kept as bodies."""
    root = panda.description_dir()
    text = re.sub(
        re.escape(f"{root}/") + r"meshes/visual/(\w+)\.dae",
        lambda m: str(root / "meshes" / "collision" / f"{m.group(1)}.stl"),
        panda.urdf_text_with_absolute_paths(),
    )
    if "package://" in text or ".dae" in text:
        raise SimError("Panda URDF still references package:// or .dae files after rewriting; update scene.py")
    compiler = (
        '<mujoco><compiler strippath="false" fusestatic="false" discardvisual="true" balanceinertia="true"/></mujoco>'
    )
    text, n = re.subn(r"(<robot\b[^>]*>)", lambda m: m.group(1) + compiler, text, count=1)
    if n != 1:
        raise SimError(f"{panda.urdf_path()}: no <robot> element found; is this a URDF?")
    return text


def _configure_robot(spec: mujoco.MjSpec) -> None:
    robot_bodies = [b for b in spec.bodies if b.name.startswith("panda_")]
    for body in robot_bodies:
        body.gravcomp = 1.0
        hand = body.name in ("panda_hand", *FINGER_BODIES)
        for geom in body.geoms:
            geom.contype = 2
            geom.conaffinity = 1
            geom.rgba = _HAND_RGBA if hand else _ROBOT_RGBA
    for name in panda.ARM_JOINTS:
        spec.joint(name).armature = ARM_ARMATURE
    spec.body(panda.TCP_FRAME).add_site(name=TCP_SITE, size=[0.005, 0.005, 0.005], rgba=[0, 1, 0, 0], group=5)

    for i, joint in enumerate(panda.ARM_JOINTS):
        act = spec.add_actuator(name=ARM_ACTUATORS[i], target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=float(ARM_KP[i]), kv=float(ARM_KV[i]))
        act.ctrllimited = True
        act.ctrlrange = [panda.LIMITS.lower[i], panda.LIMITS.upper[i]]
        act.forcelimited = True
        act.forcerange = [-ARM_FORCE_LIMIT[i], ARM_FORCE_LIMIT[i]]
    grip = spec.add_actuator(name=GRIPPER_ACTUATOR, target=panda.FINGER_JOINTS[0], trntype=mujoco.mjtTrn.mjTRN_JOINT)
    grip.set_to_position(kp=GRIPPER_KP, kv=GRIPPER_KV)
    grip.ctrllimited = True
    grip.ctrlrange = [0.0, panda.FINGER_MAX_OPENING_M]
    grip.forcelimited = True
    grip.forcerange = [-GRIPPER_FORCE_LIMIT, GRIPPER_FORCE_LIMIT]
    if not any(eq.type == mujoco.mjtEq.mjEQ_JOINT for eq in spec.equalities):
        spec.add_equality(
            type=mujoco.mjtEq.mjEQ_JOINT,
            name1=panda.FINGER_JOINTS[1],
            name2=panda.FINGER_JOINTS[0],
            objtype=mujoco.mjtObj.mjOBJ_JOINT,
        )


def _add_environment(spec: mujoco.MjSpec, config: SceneConfig) -> None:
    world = spec.worldbody
    env = {"contype": 1, "conaffinity": 3}
    world.add_geom(
        name=TABLE_GEOM,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[0.65, 0.7, _TABLE_THICKNESS / 2],
        pos=[0.35, 0.0, -_TABLE_THICKNESS / 2],
        rgba=_TABLE_RGBA,
        **env,
    )
    world.add_geom(
        name=FLOOR_GEOM,
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[3.0, 3.0, 0.05],
        pos=[0.0, 0.0, -_TABLE_HEIGHT],
        rgba=_FLOOR_RGBA,
        **env,
    )
    world.add_light(
        name="key", pos=[0.6, -0.4, 2.0], dir=[-0.1, 0.2, -1.0], diffuse=[0.7, 0.7, 0.7], castshadow=config.shadows
    )
    world.add_light(name="fill", pos=[1.5, 0.8, 1.5], dir=[-1.0, -0.5, -1.0], diffuse=[0.3, 0.3, 0.3], castshadow=False)

    half = config.cube_size_m / 2
    cube = world.add_body(name=CUBE_BODY, pos=[0.5, 0.0, half])
    cube.add_freejoint(name=CUBE_JOINT)
    cube.add_geom(
        name=CUBE_GEOM,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[half, half, half],
        mass=config.cube_mass_kg,
        rgba=CUBE_RGBA,
        friction=[1.0, 0.01, 0.001],
        **env,
    )

    for obj in config.objects:
        _add_object(world, obj, env)

    for cam in config.cameras:
        world.add_camera(name=cam.name, pos=list(cam.pos), quat=list(cam.quat_wxyz()), fovy=cam.fovy_deg)


def _add_object(world: mujoco.MjsBody, obj: ObjectSpec, env: dict[str, int]) -> None:
    """A free body standing on the table at its rest position."""
    if obj.name in (CUBE_BODY, TABLE_GEOM, FLOOR_GEOM) or obj.name.startswith("panda_"):
        raise SimError(f"object name {obj.name!r} is taken by the scene; choose another")
    half = obj.half_height_m
    body = world.add_body(name=obj.name, pos=[obj.rest_xy[0], obj.rest_xy[1], half])
    body.add_freejoint(name=f"{obj.name}_free")
    if obj.shape == "box":
        kind, size = mujoco.mjtGeom.mjGEOM_BOX, [obj.size_m / 2] * 3
    else:
        kind, size = mujoco.mjtGeom.mjGEOM_CYLINDER, [obj.size_m / 2, half, 0.0]
    body.add_geom(
        name=f"{obj.name}_geom",
        type=kind,
        size=size,
        mass=obj.mass_kg,
        rgba=list(obj.rgba),
        friction=[1.0, 0.01, 0.001],
        **env,
    )


def build_spec(config: SceneConfig = SceneConfig()) -> mujoco.MjSpec:  # noqa: B008 - frozen, immutable default
    """A fresh, uncompiled :class:`mujoco.MjSpec` of the scene (callers may edit it before compiling)."""
    try:
        spec = mujoco.MjSpec.from_string(_panda_urdf_text())
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise SimError(f"MuJoCo could not parse the Panda URDF {panda.urdf_path()}: {exc}") from exc
    spec.modelname = "robot_stack_panda_cube"
    spec.option.timestep = config.timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.visual.global_.offwidth = config.max_render_width
    spec.visual.global_.offheight = config.max_render_height
    # Clip planes are fractions of stat.extent: with extent 2 m, near = 0.1 m and far = 10 m, which keeps the
    # 24-bit depth buffer precise to well under a millimetre over the workspace.
    spec.stat.extent = 2.0
    spec.stat.center = [0.4, 0.0, 0.2]
    spec.visual.map.znear = 0.05
    spec.visual.map.zfar = 5.0
    spec.visual.quality.shadowsize = 2048 if config.shadows else 0
    _configure_robot(spec)
    _add_environment(spec, config)
    return spec


def build_model(config: SceneConfig = SceneConfig()) -> mujoco.MjModel:  # noqa: B008 - frozen, immutable default
    """A new compiled :class:`mujoco.MjModel` of the scene (every call returns an independent model, ~50 ms).

    Compiled straight from the spec: an MJCF round trip would round the URDF's joint-frame quaternions to 6
    digits and shift the TCP by ~1e-6 relative to pinocchio.
    """
    spec = build_spec(config)
    try:
        model = spec.compile()
    except Exception as exc:  # mujoco raises ValueError with the compiler's message
        raise SimError(f"MuJoCo could not compile the scene: {exc}") from exc
    log.debug("scene compiled: nbody=%d ngeom=%d ncam=%d", model.nbody, model.ngeom, model.ncam)
    return model


def scene_xml(config: SceneConfig = SceneConfig()) -> str:  # noqa: B008 - frozen, immutable default
    """MJCF text of the scene, for inspection and external viewers (mesh paths are absolute).

    Note: MJCF output rounds orientations; use :func:`build_model` for the model robot-stack simulates.
    """
    spec = build_spec(config)
    try:
        spec.compile()
    except Exception as exc:
        raise SimError(f"MuJoCo could not compile the scene: {exc}") from exc
    return spec.to_xml()


def sim_side_camera() -> CameraSpec:
    """The second camera of the demo scene: 0.9 m to the robot's right, looking across the workspace.

    Add it to a scene with ``SceneConfig().with_camera(sim_side_camera())``; its ground-truth calibration is
    ``calibration/sim_tabletop/side.yaml`` (see :func:`sim_side_calibration`).
    """
    return CameraSpec("side", pos=(0.45, -0.9, 0.7), target=(0.45, 0.0, 0.3), fovy_deg=50.0)


def scene_with_cameras(camera_ids: Sequence[str]) -> SceneConfig:
    """The demo scene with the requested cameras (``front`` exists; ``side`` is :func:`sim_side_camera`)."""
    config = SceneConfig()
    if "side" in camera_ids:
        config = config.with_camera(sim_side_camera())
    unknown = [c for c in camera_ids if c not in {cam.name for cam in config.cameras}]
    if unknown:
        raise SimError(f"the simulated cell has no camera(s) {unknown}; available: front, side")
    return config
