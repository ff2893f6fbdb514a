"""``SimWorld``: the one MuJoCo model + data of a simulated cell, stepped lazily in (clock) real time.

Nobody runs a physics thread. Whoever needs the world at time ``t`` (the robot reading its state or taking a
command, a camera rendering) calls :meth:`SimWorld.sync` with ``clock.now_ns()`` first; ``sync`` steps physics
until simulated time has caught up with the clock. With :class:`robot_stack.clock.FakeClock` this makes the
simulation deterministic; with :class:`robot_stack.clock.MonotonicClock` it runs in real time as long as it is
polled (an executor at 500 Hz steps it once per tick).

If the world falls more than ``max_steps_per_sync`` steps behind (nobody polled it, or the machine is
overloaded), the excess is *skipped*: the clock anchor moves forward so simulated time does not try to catch up
later, and the skipped time is counted (:attr:`SimWorld.stats`) and logged. Physics never runs faster than the
clock.

Frames: the robot base frame is the MuJoCo world frame (see :mod:`robot_stack.sim.scene`); every pose returned
here is in the base frame.

Thread safety: every public method takes :attr:`SimWorld.lock` (a re-entrant lock). Callers that need several
reads to be consistent (a camera's ``update_scene``) hold ``world.lock`` around them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container
from dataclasses import dataclass

import mujoco
import numpy as np

from robot_stack.clock import Clock, MonotonicClock
from robot_stack.errors import ShapeError, SimError
from robot_stack.sim import scene
from robot_stack.types import Pose

log = logging.getLogger("robot_stack.sim")

__all__ = ["CUBE_X_RANGE", "CUBE_Y_RANGE", "SimWorld", "WorldStats"]

#: The Panda cell's cube reset region (base frame, metres); every arm's is its ``embodiment.task_region``.
CUBE_X_RANGE = (0.4, 0.6)
CUBE_Y_RANGE = (-0.15, 0.15)


@dataclass(frozen=True)
class WorldStats:
    """Counters of a world since its last reset.

    Attributes:
        steps: physics steps taken.
        sim_time_s: simulated seconds.
        skipped_s: clock seconds the world did not simulate because a ``sync`` was over its step cap.
        skip_events: number of ``sync`` calls that skipped time.
    """

    steps: int
    sim_time_s: float
    skipped_s: float
    skip_events: int


class SimWorld:
    """A MuJoCo arm-and-cube cell that advances lazily with a clock (the arm: ``config.robot``'s embodiment).

    Args:
        clock: time source (``now_ns``); :class:`MonotonicClock` for real time, ``FakeClock`` for tests.
        model: a compiled scene; built with :func:`robot_stack.sim.scene.build_model` when None.
        config: scene configuration used when ``model`` is None.
        max_steps_per_sync: cap on physics steps per :meth:`sync` call (default 0.1 s of simulated time).
    """

    def __init__(
        self,
        clock: Clock | None = None,
        model: mujoco.MjModel | None = None,
        config: scene.SceneConfig | None = None,
        max_steps_per_sync: int | None = None,
    ) -> None:
        self.clock: Clock = clock if clock is not None else MonotonicClock()
        self.config = config if config is not None else scene.SceneConfig()
        self._model = model if model is not None else scene.build_model(self.config)
        self._data = mujoco.MjData(self._model)
        self._lock = threading.RLock()
        m = self._model
        self.dt_s = float(m.opt.timestep)
        self._dt_ns = round(self.dt_s * 1e9)
        self.max_steps_per_sync = (
            max_steps_per_sync if max_steps_per_sync is not None else max(1, round(0.1 / self.dt_s))
        )

        def ids(objtype: mujoco.mjtObj, names: tuple[str, ...]) -> np.ndarray:
            out = np.array([mujoco.mj_name2id(m, objtype, n) for n in names], dtype=np.int64)
            missing = [n for n, i in zip(names, out, strict=True) if i < 0]
            if missing:
                raise SimError(f"scene model lacks {objtype.name} {missing}; build it with robot_stack.sim.scene")
            return out

        #: the arm's description (joints, limits, home posture, gripper)
        self.embodiment = self.config.embodiment
        emb = self.embodiment
        arm_joints = ids(mujoco.mjtObj.mjOBJ_JOINT, emb.arm_joints)
        self._arm_qadr = m.jnt_qposadr[arm_joints].copy()
        self._arm_vadr = m.jnt_dofadr[arm_joints].copy()
        self._arm_act = ids(mujoco.mjtObj.mjOBJ_ACTUATOR, scene.arm_actuators(emb))
        grip = emb.gripper
        grip_joints = ids(mujoco.mjtObj.mjOBJ_JOINT, grip.joints) if grip.actuated else np.zeros(0, np.int64)
        self._grip_qadr = m.jnt_qposadr[grip_joints].copy()
        self._grip_act = int(ids(mujoco.mjtObj.mjOBJ_ACTUATOR, (scene.GRIPPER_ACTUATOR,))[0]) if grip.actuated else -1
        self._tcp_site = int(ids(mujoco.mjtObj.mjOBJ_SITE, (scene.TCP_SITE,))[0])
        self._cube_body = int(ids(mujoco.mjtObj.mjOBJ_BODY, (scene.CUBE_BODY,))[0])
        cube_joint = int(ids(mujoco.mjtObj.mjOBJ_JOINT, (scene.CUBE_JOINT,))[0])
        self._cube_qadr = int(m.jnt_qposadr[cube_joint])
        self._cube_vadr = int(m.jnt_dofadr[cube_joint])
        self._cube_geom = int(ids(mujoco.mjtObj.mjOBJ_GEOM, (scene.CUBE_GEOM,))[0])
        self.cube_half_size_m = float(m.geom_size[self._cube_geom][2])
        finger_bodies = ids(mujoco.mjtObj.mjOBJ_BODY, grip.bodies)
        self._finger_geoms = frozenset(int(g) for g in np.flatnonzero(np.isin(m.geom_bodyid, finger_bodies)))
        # every geom of the arm (the bodies under its base link), whichever arm: for contacts of the whole robot
        base = int(ids(mujoco.mjtObj.mjOBJ_BODY, (emb.base_link,))[0])
        robot_bodies = np.flatnonzero(m.body_rootid == m.body_rootid[base])
        self._robot_geoms = frozenset(int(g) for g in np.flatnonzero(np.isin(m.geom_bodyid, robot_bodies)))
        # free-standing objects: the red cube under its body name, then the scene's extra objects
        self._objects: dict[str, _ObjectIds] = {
            scene.CUBE_BODY: _ObjectIds(
                self._cube_body, self._cube_qadr, self._cube_vadr, self._cube_geom, "box", self.cube_half_size_m
            )
        }
        for obj in self.config.objects:
            body = int(ids(mujoco.mjtObj.mjOBJ_BODY, (obj.name,))[0])
            joint = int(ids(mujoco.mjtObj.mjOBJ_JOINT, (f"{obj.name}_free",))[0])
            geom = int(ids(mujoco.mjtObj.mjOBJ_GEOM, (f"{obj.name}_geom",))[0])
            self._objects[obj.name] = _ObjectIds(
                body, int(m.jnt_qposadr[joint]), int(m.jnt_dofadr[joint]), geom, obj.shape, obj.half_height_m
            )

        #: called with the target time before every :meth:`sync_now` (e.g. a
        #: :class:`~robot_stack.control.setpoints.SetpointRelay` applying a real-time process's set-points)
        self.pre_sync: Callable[[int], object] | None = None
        self._t0_ns = 0
        self._synced_ns = 0
        self._steps = 0
        self._skipped_ns = 0
        self._skip_events = 0
        self.reset(seed=0)

    # -------------------------------------------------------------------------------------------- properties
    @property
    def model(self) -> mujoco.MjModel:
        """The compiled model (treat as read-only)."""
        return self._model

    @property
    def data(self) -> mujoco.MjData:
        """The live simulation state; read or write it only while holding :attr:`lock`."""
        return self._data

    @property
    def lock(self) -> threading.RLock:
        """Re-entrant lock guarding :attr:`data`."""
        return self._lock

    @property
    def T_world_base(self) -> Pose:  # noqa: N802 - the house name of a pose
        """Robot base pose in the MuJoCo world frame (identity: the base link sits at the world origin)."""
        return scene.T_WORLD_BASE

    @property
    def synced_ns(self) -> int:
        """Clock time (ns) the world was last synced to: the time its current state describes."""
        with self._lock:
            return self._synced_ns

    @property
    def stats(self) -> WorldStats:
        with self._lock:
            return WorldStats(self._steps, float(self._data.time), self._skipped_ns / 1e9, self._skip_events)

    # --------------------------------------------------------------------------------------------- lifecycle
    def reset(self, seed: int | None = None) -> None:
        """Arm at its home posture with the gripper open, cube at a random pose; anchor sim time to ``clock``.

        The cube is placed flat on the table in the arm's task region (``embodiment.task_region``; the Panda's is
        x∈:data:`CUBE_X_RANGE`, y∈:data:`CUBE_Y_RANGE`, base frame, metres) with a uniformly random yaw, drawn from
        ``numpy.random.default_rng(seed)``.
        """
        rng = np.random.default_rng(seed)
        region = self.embodiment.task_region
        x = rng.uniform(region.lower[0], region.upper[0])
        y = rng.uniform(region.lower[1], region.upper[1])
        yaw = rng.uniform(-np.pi, np.pi)
        emb = self.embodiment
        with self._lock:
            m, d = self._model, self._data
            mujoco.mj_resetData(m, d)
            d.qpos[self._arm_qadr] = emb.home_q
            d.ctrl[self._arm_act] = emb.home_q
            if emb.gripper.actuated:
                d.qpos[self._grip_qadr] = emb.gripper.open
                d.ctrl[self._grip_act] = emb.gripper.open
            self._write_cube(np.array([x, y, self.cube_half_size_m]), yaw)
            for obj in self.config.objects:
                self._write_object(self._objects[obj.name], np.array([*obj.rest_xy, obj.half_height_m]), 0.0)
            mujoco.mj_forward(m, d)
            now = self.clock.now_ns()
            self._t0_ns = now
            self._synced_ns = now
            self._steps = 0
            self._skipped_ns = 0
            self._skip_events = 0
        log.debug("world reset (seed=%s): cube at x=%.3f y=%.3f yaw=%.2f", seed, x, y, yaw)

    def sync(self, now_ns: int) -> int:
        """Step physics until sim time reaches ``now_ns`` (clock ns); return the number of steps taken.

        Times earlier than the last sync are ignored (the world never goes back). At most
        :attr:`max_steps_per_sync` steps run per call; the rest of the gap is skipped, counted and logged.
        """
        with self._lock:
            if now_ns <= self._synced_ns:
                return 0
            d = self._data
            target_steps = (now_ns - self._t0_ns) // self._dt_ns
            done_steps = round(d.time / self.dt_s)
            n = int(target_steps - done_steps)
            if n > self.max_steps_per_sync:
                skipped = n - self.max_steps_per_sync
                self._t0_ns += skipped * self._dt_ns
                self._skipped_ns += skipped * self._dt_ns
                self._skip_events += 1
                log.warning(
                    "sim world fell %.3f s behind the clock; skipped %.3f s (total skipped %.3f s)",
                    n * self.dt_s,
                    skipped * self.dt_s,
                    self._skipped_ns / 1e9,
                )
                n = self.max_steps_per_sync
            if n > 0:
                mujoco.mj_step(self._model, d, nstep=n)
                self._steps += n
                if not (np.all(np.isfinite(d.qpos)) and np.all(np.isfinite(d.qvel))):
                    raise SimError("physics diverged (non-finite qpos/qvel); reset the world (SimWorld.reset)")
            self._synced_ns = now_ns
            return n

    def sync_now(self) -> int:
        """:meth:`sync` to ``clock.now_ns()``; return the clock time synced to (ns). Calls :attr:`pre_sync` first
        (with the target time) so that set-points produced elsewhere with earlier timestamps are applied at their own
        times before physics passes them (the hook may take the re-entrant world lock)."""
        hook = self.pre_sync
        if hook is not None:
            hook(self.clock.now_ns())
        with self._lock:
            now = self.clock.now_ns()
            self.sync(now)
            return max(now, self._synced_ns)

    # ----------------------------------------------------------------------------------------------- robot
    def arm_q(self) -> np.ndarray:
        """(n,) float64 arm joint positions, rad, in ``embodiment.arm_joints`` order."""
        with self._lock:
            return self._data.qpos[self._arm_qadr].copy()

    def arm_dq(self) -> np.ndarray:
        """(n,) float64 arm joint velocities, rad/s."""
        with self._lock:
            return self._data.qvel[self._arm_vadr].copy()

    def gripper_opening(self) -> float:
        """Gripper opening in [0, 1] of the actuated gripper joint (``embodiment.gripper.opening``; the Panda's
        finger travel / 0.04 m); 1.0 for a rigid tool."""
        grip = self.embodiment.gripper
        if not grip.actuated:
            return 1.0
        with self._lock:
            value = float(self._data.qpos[self._grip_qadr[0]])
        return grip.opening(value)

    def tcp_pose(self) -> Pose:
        """``T_base_tcp``: the arm's TCP frame in the robot base frame (parent "base", child "tcp")."""
        with self._lock:
            rot = self._data.site_xmat[self._tcp_site].reshape(3, 3).copy()
            pos = self._data.site_xpos[self._tcp_site].copy()
        return self.T_world_base.inverse() @ Pose(rot, pos, "world", "tcp")

    def set_ctrl(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Set the arm servo targets (n,) rad and optionally the gripper opening in [0, 1] (clipped; a rigid tool
        has no gripper servo and ignores it).

        Raises:
            ShapeError: ``q`` is not a finite (n,) array or ``gripper`` is not finite.
        """
        target = np.asarray(q, dtype=np.float64)
        n = len(self._arm_act)
        if target.shape != (n,) or not np.all(np.isfinite(target)):
            raise ShapeError(f"arm target: expected finite ({n},) rad, got shape {target.shape}: {target}")
        if gripper is not None and not np.isfinite(gripper):
            raise ShapeError(f"gripper target: expected a finite opening in [0, 1], got {gripper}")
        with self._lock:
            self._data.ctrl[self._arm_act] = target
            if gripper is not None and self._grip_act >= 0:
                self._data.ctrl[self._grip_act] = self.embodiment.gripper.joint_value(gripper)

    def set_arm_q(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Teleport the arm to ``q`` (n,) rad at rest and hold it there (also sets the servo targets)."""
        self.set_ctrl(q, gripper)
        with self._lock:
            self._data.qpos[self._arm_qadr] = np.asarray(q, dtype=np.float64)
            self._data.qvel[self._arm_vadr] = 0.0
            if gripper is not None and self._grip_act >= 0:
                self._data.qpos[self._grip_qadr] = self.embodiment.gripper.joint_value(gripper)
            mujoco.mj_forward(self._model, self._data)

    # ------------------------------------------------------------------------------------------------ cube
    def _write_cube(self, xyz: np.ndarray, yaw: float) -> None:
        self._write_object(self._objects[scene.CUBE_BODY], xyz, yaw)

    def _write_object(self, ids: _ObjectIds, xyz: np.ndarray, yaw: float) -> None:
        d = self._data
        d.qpos[ids.qadr : ids.qadr + 3] = xyz
        d.qpos[ids.qadr + 3 : ids.qadr + 7] = [np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)]
        d.qvel[ids.vadr : ids.vadr + 6] = 0.0

    def set_cube_pose(self, xyz: np.ndarray, yaw: float = 0.0) -> None:
        """Teleport the cube: centre ``xyz`` (3,) metres in the base frame, rotation ``yaw`` rad about z."""
        p = np.asarray(xyz, dtype=np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)) or not np.isfinite(yaw):
            raise ShapeError(f"cube pose: expected finite (3,) xyz metres and finite yaw, got {p!r}, {yaw!r}")
        with self._lock:
            self._write_cube(self.T_world_base.apply(p), float(yaw))
            mujoco.mj_forward(self._model, self._data)

    def cube_pose(self) -> Pose:
        """``T_base_cube``: the cube's centre and orientation in the base frame (parent "base", child "cube")."""
        with self._lock:
            rot = self._data.xmat[self._cube_body].reshape(3, 3).copy()
            pos = self._data.xpos[self._cube_body].copy()
        return self.T_world_base.inverse() @ Pose(rot, pos, "world", "cube")

    def cube_top_center(self) -> np.ndarray:
        """(3,) float64 metres, base frame: centre of the cube face whose normal points most nearly up (+z)."""
        pose = self.cube_pose()
        up_components = pose.rotation[2, :]  # z component of each cube axis
        axis = int(np.argmax(np.abs(up_components)))
        normal = pose.rotation[:, axis] * np.sign(up_components[axis])
        return pose.translation + self.cube_half_size_m * normal

    @property
    def robot_geoms(self) -> frozenset[int]:
        """Geom ids of the whole arm (every body under its base link, gripper included)."""
        return self._robot_geoms

    def finger_cube_contacts(self) -> int:
        """Number of active contacts between a gripper geom (fingers, jaws or the rigid tool:
        ``embodiment.gripper.bodies``) and the cube."""
        with self._lock:
            d = self._data
            count = 0
            for i in range(d.ncon):
                g1, g2 = int(d.contact.geom1[i]), int(d.contact.geom2[i])
                if (g1 == self._cube_geom and g2 in self._finger_geoms) or (
                    g2 == self._cube_geom and g1 in self._finger_geoms
                ):
                    count += 1
            return count

    # -------------------------------------------------------------------------------------- any object
    @property
    def object_names(self) -> tuple[str, ...]:
        """Body names of the free-standing objects: the red cube (``"cube"``), then the scene's extra objects."""
        return tuple(self._objects)

    def _object(self, name: str) -> _ObjectIds:
        try:
            return self._objects[name]
        except KeyError:
            raise SimError(f"the scene has no object {name!r}; objects: {list(self._objects)}") from None

    def set_object_pose(self, name: str, xyz: np.ndarray, yaw: float = 0.0) -> None:
        """Teleport object ``name``: centre ``xyz`` (3,) metres in the base frame, rotation ``yaw`` rad about z."""
        ids = self._object(name)
        p = np.asarray(xyz, dtype=np.float64)
        if p.shape != (3,) or not np.all(np.isfinite(p)) or not np.isfinite(yaw):
            raise ShapeError(f"object pose: expected finite (3,) xyz metres and finite yaw, got {p!r}, {yaw!r}")
        with self._lock:
            self._write_object(ids, self.T_world_base.apply(p), float(yaw))
            mujoco.mj_forward(self._model, self._data)

    def object_pose(self, name: str) -> Pose:
        """``T_base_<name>``: the object's centre and orientation in the base frame."""
        ids = self._object(name)
        with self._lock:
            rot = self._data.xmat[ids.body].reshape(3, 3).copy()
            pos = self._data.xpos[ids.body].copy()
        return self.T_world_base.inverse() @ Pose(rot, pos, "world", name)

    def object_top_center(self, name: str) -> np.ndarray:
        """(3,) float64 metres, base frame: centre of the object's top face (a box's face whose normal points most
        nearly up; a cylinder's end cap on the side of +z)."""
        ids = self._object(name)
        pose = self.object_pose(name)
        if ids.shape == "box":
            up_components = pose.rotation[2, :]
            axis = int(np.argmax(np.abs(up_components)))
        else:
            axis = 2
            up_components = pose.rotation[2, :]
        normal = pose.rotation[:, axis] * (np.sign(up_components[axis]) or 1.0)
        return pose.translation + ids.half_height * normal

    def finger_contacts(self, name: str) -> int:
        """Number of active contacts between a finger geom and object ``name``."""
        return self._contacts_with(name, self._finger_geoms)

    def robot_contacts(self, name: str) -> int:
        """Number of active contacts between any robot geom (arm, hand, fingers) and object ``name``."""
        return self._contacts_with(name, self._robot_geoms)

    def _contacts_with(self, name: str, geoms: Container[int]) -> int:
        """Number of active contacts between object ``name``'s geom and any geom id in ``geoms``."""
        geom = self._object(name).geom
        with self._lock:
            d = self._data
            count = 0
            for i in range(d.ncon):
                g1, g2 = int(d.contact.geom1[i]), int(d.contact.geom2[i])
                if (g1 == geom and g2 in geoms) or (g2 == geom and g1 in geoms):
                    count += 1
            return count


@dataclass(frozen=True)
class _ObjectIds:
    """Where one free object lives in the model: body, qpos/qvel addresses of its free joint, geom, shape."""

    body: int
    qadr: int
    vadr: int
    geom: int
    shape: str
    half_height: float
