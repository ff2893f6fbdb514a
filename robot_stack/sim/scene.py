"""The MuJoCo scene of a simulated cell: an arm (Panda, UR5 or SO-101) on a table, a red cube, RGB-D cameras.

The model is built with :class:`mujoco.MjSpec` from the *same* URDF text pinocchio loads
(:meth:`robot_stack.robots.embodiment.Embodiment.urdf_text`), so the simulated arm and the IK model share their
kinematics. The URDF text is preprocessed before MuJoCo parses it:

* ``package://example-robot-data/...`` mesh URIs become absolute paths of the installed wheel (done by the
  embodiment, which also adds a TCP link where the URDF has none);
* Collada (``.dae``) visual meshes, which MuJoCo cannot read, are replaced by the collision STL meshes; visual
  geoms are discarded and the collision meshes (which are also rendered) stand in for both;
* fixed joints are *not* fused, so fixed links such as ``panda_hand_tcp`` stay bodies; a site :data:`TCP_SITE`
  sits on the embodiment's TCP frame so the tool-centre point can be read from ``data.site_xpos``.

Frames: the robot base link is at the MuJoCo world origin with identity orientation, so the robot base frame *is*
the world frame (:data:`T_WORLD_BASE` is the identity; code should still compose with it so a moved base stays a
one-line change). The table top is the plane ``z = 0`` of that frame; the robot stands on it.

Added to the URDF arm (numbers from the embodiment's :class:`~robot_stack.robots.embodiment.ServoSpec`): joint
armature, damping and friction, gravity compensation on every robot body, position servos on the arm joints (PD
with force limits), a position servo on the gripper's actuated joint (the Panda's second finger follows through an
equality constraint made from the URDF's ``mimic``; a rigid tool has none), a table, floor, lights, a 5 cm red cube
on a free joint, and fixed cameras (``"front"`` by default; more via :class:`SceneConfig`).

Collision filtering: robot geoms have ``contype=2, conaffinity=1``, environment geoms ``contype=1,
conaffinity=3``: the robot collides with the table and the cube but not with itself (the URDF collision meshes
of neighbouring links overlap at many poses).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from robot_stack.errors import SimError
from robot_stack.robots import panda
from robot_stack.robots.embodiment import Embodiment
from robot_stack.robots.registry import get_embodiment
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
    "arm_actuators",
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
#: The Panda's finger bodies (other arms: ``embodiment.gripper.bodies``).
FINGER_BODIES: tuple[str, ...] = panda.EMBODIMENT.gripper.bodies
GRIPPER_ACTUATOR = "act_gripper"


def arm_actuators(embodiment: Embodiment) -> tuple[str, ...]:
    """Names of the arm's position servos, in joint order (``act_<joint>``)."""
    return tuple(f"act_{j}" for j in embodiment.arm_joints)


#: The Panda's arm servos.
ARM_ACTUATORS: tuple[str, ...] = arm_actuators(panda.EMBODIMENT)

#: Pose of the robot base (the URDF root link) in the MuJoCo world frame: the identity by construction.
T_WORLD_BASE = Pose.identity("world", "base")

#: Colours of each arm's links and of its gripper bodies.
_ROBOT_RGBA = {"panda": (0.92, 0.92, 0.92, 1.0), "ur5": (0.62, 0.70, 0.78, 1.0), "so101": (1.0, 0.82, 0.12, 1.0)}
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
        robot: the arm (a name of :data:`robot_stack.robots.registry.ROBOT_MODELS`).
        cameras: fixed cameras; the first is the default camera of :class:`~robot_stack.sim.camera.SimCamera`.
        cube_size_m: edge length of the red cube, metres.
        cube_mass_kg: mass of the cube.
        timestep_s: physics step, seconds.
        max_render_width, max_render_height: offscreen framebuffer size, the largest image any camera renders.
        shadows: whether the light casts shadows (prettier, slower software rendering).
        objects: free-standing objects besides the red cube (:class:`ObjectSpec`).
    """

    cameras: tuple[CameraSpec, ...] = (FRONT_CAMERA,)
    robot: str = "panda"
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

    @property
    def embodiment(self) -> Embodiment:
        """The arm's description."""
        return get_embodiment(self.robot)


def _robot_urdf_text(embodiment: Embodiment) -> str:
    """The arm's URDF rewritten for MuJoCo: absolute STL paths, Collada visuals replaced by the collision STLs,
    fixed links kept as bodies."""

    def stl_for(match: re.Match[str]) -> str:
        stl = f"{match.group(1)}/collision/{match.group(2)}.stl"
        if not Path(stl).is_file():
            raise SimError(f"{embodiment.name}: no collision STL {stl} to render instead of {match.group(0)}")
        return stl

    text = re.sub(r"([^\"'>]*)/visual/(\w+)\.dae", stl_for, embodiment.urdf_text())
    if "package://" in text or ".dae" in text:
        raise SimError(f"{embodiment.name} URDF still references package:// or .dae files after rewriting")
    compiler = (
        '<mujoco><compiler strippath="false" fusestatic="false" discardvisual="true" balanceinertia="true"/></mujoco>'
    )
    text, n = re.subn(r"(<robot\b[^>]*>)", lambda m: m.group(1) + compiler, text, count=1)
    if n != 1:
        raise SimError(f"{embodiment.urdf_path()}: no <robot> element found; is this a URDF?")
    return text


def read_stl(path: str | Path) -> np.ndarray:
    """(F, 3, 3) float64 triangle corners of a binary STL file (metres as written)."""
    data = Path(path).read_bytes()
    if len(data) < 84:
        raise SimError(f"{path}: not a binary STL (too short)")
    n = int(np.frombuffer(data, np.uint32, 1, 80)[0])
    if len(data) != 84 + 50 * n:
        raise SimError(f"{path}: not a binary STL ({len(data)} bytes for {n} triangles); convert it to binary STL")
    rows = np.frombuffer(data, np.dtype([("normal", "<f4", 3), ("v", "<f4", (3, 3)), ("attr", "<u2")]), n, 84)
    return rows["v"].astype(np.float64)


def cluster_mesh(triangles: np.ndarray, voxel_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Vertex clustering: corners in one ``voxel_m`` grid cell merge into their mean; triangles that collapse or
    repeat are dropped. ``triangles`` (F, 3, 3) metres -> (vertices (V, 3), faces (F', 3) int) with every vertex
    within ``voxel_m * sqrt(3)`` of an original one."""
    corners = triangles.reshape(-1, 3)
    cells, cluster = np.unique(np.floor(corners / voxel_m).astype(np.int64), axis=0, return_inverse=True)
    cluster = cluster.reshape(-1)
    counts = np.bincount(cluster, minlength=len(cells)).astype(np.float64)
    verts = np.stack([np.bincount(cluster, corners[:, k], len(cells)) for k in range(3)], axis=1) / counts[:, None]
    faces = cluster.reshape(-1, 3)
    faces = faces[(faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])]
    _, first = np.unique(np.sort(faces, axis=1), axis=0, return_index=True)
    faces = faces[np.sort(first)]
    used, faces = np.unique(faces, return_inverse=True)
    return verts[used], faces.reshape(-1, 3)


@functools.lru_cache(maxsize=64)
def _clustered(path: str, voxel_m: float) -> tuple[tuple[float, ...], tuple[int, ...]]:
    verts, faces = cluster_mesh(read_stl(path), voxel_m)
    return tuple(verts.reshape(-1).tolist()), tuple(faces.reshape(-1).tolist())


def _simplify_meshes(spec: mujoco.MjSpec, voxel_m: float) -> None:
    """Replace every STL mesh of the robot by its vertex-clustered simplification (:func:`cluster_mesh`)."""
    for mesh in spec.meshes:
        if not mesh.file.lower().endswith(".stl"):
            continue
        verts, faces = _clustered(mesh.file, float(voxel_m))
        mesh.file = ""
        mesh.uservert = list(verts)
        mesh.userface = list(faces)


def _configure_robot(spec: mujoco.MjSpec, embodiment: Embodiment) -> None:
    """Gravity compensation, collision classes and colours of every URDF body; joint properties, the TCP site and
    the servos from the embodiment."""
    grip = embodiment.gripper
    robot_rgba = _ROBOT_RGBA.get(embodiment.name, _ROBOT_RGBA["panda"])
    hand = {*grip.bodies, embodiment.tcp_frame}
    for body in spec.bodies:
        if body.name == "world":
            continue
        body.gravcomp = 1.0
        for geom in body.geoms:
            geom.contype = 2
            geom.conaffinity = 1
            geom.rgba = _HAND_RGBA if body.name in hand and embodiment.name != "so101" else robot_rgba
    servo = embodiment.servo
    for i, name in enumerate(embodiment.arm_joints):
        joint = spec.joint(name)
        joint.armature = servo.armature[i]
        if servo.damping:
            try:
                joint.damping = servo.damping[i]
            except TypeError:  # MuJoCo 4: a polynomial, linear term first
                joint.damping = [servo.damping[i], 0.0, 0.0]
        if servo.frictionloss:
            joint.frictionloss = servo.frictionloss[i]
    spec.body(embodiment.tcp_frame).add_site(name=TCP_SITE, size=[0.005, 0.005, 0.005], rgba=[0, 1, 0, 0], group=5)

    lim = embodiment.limits
    for i, (joint, act_name) in enumerate(zip(embodiment.arm_joints, arm_actuators(embodiment), strict=True)):
        act = spec.add_actuator(name=act_name, target=joint, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=float(servo.kp[i]), kv=float(servo.kv[i]))
        act.ctrllimited = True
        act.ctrlrange = [lim.lower[i], lim.upper[i]]
        act.forcelimited = True
        act.forcerange = [-servo.force_limit[i], servo.force_limit[i]]
    if not grip.actuated:
        return
    act = spec.add_actuator(name=GRIPPER_ACTUATOR, target=grip.joints[0], trntype=mujoco.mjtTrn.mjTRN_JOINT)
    act.set_to_position(kp=servo.gripper_kp, kv=servo.gripper_kv)
    act.ctrllimited = True
    act.ctrlrange = sorted([grip.closed, grip.open])
    act.forcelimited = True
    act.forcerange = [-servo.gripper_force_limit, servo.gripper_force_limit]
    if grip.kind == "fingers" and not any(eq.type == mujoco.mjtEq.mjEQ_JOINT for eq in spec.equalities):
        spec.add_equality(
            type=mujoco.mjtEq.mjEQ_JOINT, name1=grip.joints[1], name2=grip.joints[0], objtype=mujoco.mjtObj.mjOBJ_JOINT
        )


def _add_environment(spec: mujoco.MjSpec, config: SceneConfig) -> None:
    world = spec.worldbody
    env = {"contype": 1, "conaffinity": 3}
    embodiment = config.embodiment
    table_x, table_y = embodiment.table_center_xy
    world.add_geom(
        name=TABLE_GEOM,
        type=mujoco.mjtGeom.mjGEOM_BOX,
        size=[*embodiment.table_half_xy, _TABLE_THICKNESS / 2],
        pos=[table_x, table_y, -_TABLE_THICKNESS / 2],
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
    region = embodiment.task_region
    cube_xy = [(region.lower[0] + region.upper[0]) / 2, (region.lower[1] + region.upper[1]) / 2]
    cube = world.add_body(name=CUBE_BODY, pos=[*cube_xy, half])
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
    embodiment = config.embodiment
    try:
        spec = mujoco.MjSpec.from_string(_robot_urdf_text(embodiment))
    except Exception as exc:  # mujoco raises ValueError with the parser's message
        raise SimError(f"MuJoCo could not parse the {embodiment.name} URDF {embodiment.urdf_path()}: {exc}") from exc
    spec.modelname = f"robot_stack_{embodiment.name}_cube"
    spec.option.timestep = config.timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.visual.global_.offwidth = config.max_render_width
    spec.visual.global_.offheight = config.max_render_height
    # Clip planes are fractions of stat.extent: with extent 2 m, near = 0.1 m and far = 10 m, which keeps the
    # 24-bit depth buffer precise to well under a millimetre over the workspace.
    spec.stat.extent = 2.0
    spec.stat.center = [*embodiment.table_center_xy, 0.2]
    spec.visual.map.znear = 0.05
    spec.visual.map.zfar = 5.0
    spec.visual.quality.shadowsize = 2048 if config.shadows else 0
    if embodiment.mesh_voxel_m:
        _simplify_meshes(spec, embodiment.mesh_voxel_m)
    _configure_robot(spec, embodiment)
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


def scene_with_cameras(
    camera_ids: Sequence[str],
    scene: str | None = None,
    robot: str | None = None,
    objects: Sequence[ObjectSpec] = (),
) -> SceneConfig:
    """The simulated cell ``scene`` (a calibration scene: ``sim_tabletop``, ``sim_ur5``, ``sim_so101``; see
    :mod:`robot_stack.sim.robot_cells`) with the requested cameras, the first being the default camera. Without a
    known scene, the default cell of ``robot`` (the Panda's ``sim_tabletop`` when both are None). ``objects``:
    free-standing objects on the table besides the red cube (the tabletop suite's :data:`SCENE_OBJECTS`).

    Raises:
        SimError: a camera the cell does not have, or a scene whose arm is not ``robot``.
    """
    from robot_stack.sim.robot_cells import cell_for

    cell = cell_for(scene, robot)
    cameras = {c.name: c for c in cell.cameras}
    unknown = [c for c in camera_ids if c not in cameras]
    if unknown:
        raise SimError(f"the simulated cell {cell.scene!r} has no camera(s) {unknown}; available: {', '.join(cameras)}")
    chosen = tuple(cameras[c] for c in camera_ids) or (cell.cameras[0],)
    return SceneConfig(cameras=chosen, robot=cell.robot, objects=tuple(objects))
