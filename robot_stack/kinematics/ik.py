"""Inverse kinematics on a pinocchio model of a URDF: damped least squares, joint limits, warm starts.

Frames: every pose here is ``T_base_tcp`` — the tool-centre-point frame in the robot base frame (the URDF root
link, which is also MuJoCo's world frame in ``robot_stack.sim``). Joint vectors are (n,) float64 radians in the
order of :attr:`PinocchioIK.joint_names`.

The solver is a weighted, singularity-robust damped-least-squares (Levenberg-Marquardt style) iteration::

    e   = W [p_target - p ; log3(R_target R^T)]          (6,) weighted pose error, base frame
    J_w = W J(q)                                          (6, n) weighted LOCAL_WORLD_ALIGNED frame Jacobian
    dq  = J_w^T (J_w J_w^T + lambda^2 I)^-1 e  +  N g      damped step + null-space limit avoidance
    q   = clip(q + alpha * dq, lower, upper)

``lambda^2`` grows as the manipulability ``sqrt(det(J J^T))`` falls below a threshold (Nakamura / Chiaverini),
so steps stay bounded and finite near singularities. ``g`` pushes joints out of a zone near their limits and is
projected into the null space ``N = I - J_w^+ J_w`` so it does not disturb the task.

**Arms with fewer than six joints** (the 5-DoF SO-101) cannot set an arbitrary orientation at an arbitrary
position. For them (:attr:`IKConfig.orientation` ``"reachable"``, the default when ``n < 6``) the position is the
primary task and the orientation a secondary one in the null space of the position Jacobian ``J_p``::

    dq = J_p^+ e_p  +  (J_r N_p)^+ (e_r - J_r J_p^+ e_p),      N_p = I - J_p^+ J_p

At each iterate the orientation error splits into its *reachable* part (the projection of ``e_r`` onto the
range of ``J_r N_p``: rotations the joints can make without moving the TCP) and the *unreachable* rest. The solve
converges when the position error and the reachable part are within tolerance; the unreachable part is reported
in :attr:`IKResult.unreachable_rotation_rad` (and by the pose-sequence IK and its statistics), never dropped.

Instances keep one pinocchio ``Data`` buffer and are guarded by a lock, so sharing one between threads is safe
(but serialised); create one per thread for parallel use.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pinocchio as pin

from robot_stack.errors import ConfigError, IKError, ShapeError
from robot_stack.robots.base import JointLimits
from robot_stack.robots.embodiment import Embodiment
from robot_stack.types import Pose

log = logging.getLogger("robot_stack.control.ik")

__all__ = ["IKConfig", "IKResult", "PinocchioIK", "ik_for", "panda_ik", "so101_ik", "ur5_ik"]


@dataclass(frozen=True)
class IKConfig:
    """Solver settings (one place for defaults).

    Attributes:
        position_weight: weight of the position error rows (1/m).
        rotation_weight: weight of the orientation error rows (1/rad); 0 = position-only IK.
        damping: base damping ``lambda`` (dimensionless, on the weighted error).
        singular_damping: extra damping ``lambda_max`` reached at zero manipulability.
        manipulability_threshold: manipulability below which damping ramps up (same units as sqrt(det(J J^T))).
        max_step_rad: largest change of any joint in one iteration, rad (keeps iterations in the linear regime).
        limit_zone: fraction of each joint's range, at each end, in which limit avoidance pushes back.
        limit_gain: gain of the null-space limit-avoidance term (rad per unit penetration of the zone).
        tol_position_m: convergence tolerance on the position error, metres.
        tol_rotation_rad: convergence tolerance on the orientation error, radians.
        max_iters: iterations of :meth:`PinocchioIK.solve` per attempt.
        restarts: extra attempts from random joint configurations (seeded) if the warm start fails.
        seed: seed of the restart generator (results are deterministic).
        orientation: ``"full"`` (position and orientation together, for arms with six or more joints),
            ``"reachable"`` (position first, the orientation as far as the arm can turn without moving the TCP; the
            rest reported) or ``"auto"`` (``reachable`` for fewer than six joints, else ``full``).
    """

    position_weight: float = 1.0
    rotation_weight: float = 0.5
    damping: float = 1e-3
    singular_damping: float = 0.05
    manipulability_threshold: float = 1e-3
    max_step_rad: float = 0.3
    limit_zone: float = 0.05
    limit_gain: float = 0.5
    tol_position_m: float = 1e-4
    tol_rotation_rad: float = 1e-3
    max_iters: int = 100
    restarts: int = 0
    seed: int = 0
    orientation: str = "auto"

    def __post_init__(self) -> None:
        if self.orientation not in ("auto", "full", "reachable"):
            raise ConfigError(f"IKConfig.orientation: {self.orientation!r} unknown; expected auto | full | reachable")
        if self.position_weight <= 0 or self.rotation_weight < 0:
            raise ConfigError("IKConfig: position_weight must be > 0 and rotation_weight >= 0")
        if self.damping < 0 or self.singular_damping < 0 or self.manipulability_threshold <= 0:
            raise ConfigError("IKConfig: damping terms must be >= 0 and manipulability_threshold > 0")
        if self.max_step_rad <= 0 or self.max_iters < 1 or self.restarts < 0:
            raise ConfigError("IKConfig: max_step_rad must be > 0, max_iters >= 1, restarts >= 0")
        if not 0 <= self.limit_zone < 0.5:
            raise ConfigError(f"IKConfig.limit_zone: expected a fraction in [0, 0.5), got {self.limit_zone}")


@dataclass(frozen=True)
class IKResult:
    """Outcome of :meth:`PinocchioIK.solve_with_info`.

    Attributes:
        q: (n,) float64 joint positions, rad (the best iterate found).
        position_error_m: remaining TCP position error, metres.
        rotation_error_rad: remaining TCP orientation error, radians.
        iterations: iterations used over all attempts.
        converged: the position error and the reachable part of the orientation error within tolerance.
        unreachable_rotation: (3,) float64 rotation vector (base frame, rad) of the part of the orientation error
            the arm cannot remove at this position (``"reachable"`` orientation mode; zeros otherwise).
        reachable_rotation_error_rad: the part of the orientation error the arm could still remove (what the
            tolerance applies to); None = the whole ``rotation_error_rad`` (fully actuated arms).
    """

    q: np.ndarray
    position_error_m: float
    rotation_error_rad: float
    iterations: int
    converged: bool
    unreachable_rotation: np.ndarray = field(default_factory=lambda: np.zeros(3))
    reachable_rotation_error_rad: float | None = None

    @property
    def unreachable_rotation_rad(self) -> float:
        """Angle (rad) of the orientation error the arm cannot remove (0 for a fully actuated arm)."""
        return float(np.linalg.norm(self.unreachable_rotation))

    @property
    def judged_rotation_error_rad(self) -> float:
        """The orientation error the tolerances apply to: the reachable part for a 5-DoF arm, else all of it."""
        return (
            self.rotation_error_rad if self.reachable_rotation_error_rad is None else self.reachable_rotation_error_rad
        )


class PinocchioIK:
    """Forward and inverse kinematics of a serial arm loaded from a URDF with pinocchio.

    Args:
        urdf: path of the URDF (meshes are not loaded; only kinematics is needed), or its text (a string that starts
            with ``<``, e.g. :meth:`~robot_stack.robots.embodiment.Embodiment.urdf_text`).
        joints: names of the controlled joints, in the order of every ``q``; all other joints are locked at
            their neutral position (e.g. the Panda's finger joints).
        tcp_frame: name of the URDF frame (link or fixed joint) that is the tool centre point.
        limits: position limits to respect; defaults to the URDF's.
        config: solver settings.
    """

    def __init__(
        self,
        urdf: str | Path,
        joints: tuple[str, ...],
        tcp_frame: str,
        limits: JointLimits | None = None,
        config: IKConfig | None = None,
    ) -> None:
        from_text = isinstance(urdf, str) and urdf.lstrip().startswith("<")
        full = pin.buildModelFromXML(urdf) if from_text else pin.buildModelFromUrdf(str(urdf))
        if from_text:
            urdf = "<urdf text>"
        missing = [j for j in joints if not full.existJointName(j)]
        if missing:
            raise ConfigError(f"URDF {urdf} has no joints {missing}; available: {list(full.names)[1:]}")
        locked = [full.getJointId(name) for name in full.names[1:] if name not in joints]
        model = pin.buildReducedModel(full, locked, pin.neutral(full)) if locked else full
        if model.nq != len(joints) or model.nv != len(joints):
            raise ConfigError(f"IK supports revolute/prismatic 1-DoF joints only; got nq={model.nq} for {joints}")
        order = [model.getJointId(name) - 1 for name in joints]  # reduced model keeps URDF order
        if order != list(range(len(joints))):
            raise ConfigError(f"joints must be listed in kinematic (URDF) order, got {joints}")
        if not model.existFrame(tcp_frame):
            raise ConfigError(f"URDF {urdf} has no frame {tcp_frame!r}")
        self._model = model
        self._data = model.createData()
        self._fid = model.getFrameId(tcp_frame)
        self._lock = threading.Lock()
        self.joint_names: tuple[str, ...] = tuple(joints)
        self.tcp_frame = tcp_frame
        self.config = config or IKConfig()
        if limits is not None:
            if limits.lower.shape != (len(joints),):
                raise ShapeError(f"limits: expected ({len(joints)},) arrays, got {limits.lower.shape}")
            lower, upper = limits.lower.copy(), limits.upper.copy()
        else:
            lower, upper = model.lowerPositionLimit.copy(), model.upperPositionLimit.copy()
        self.lower: np.ndarray = lower
        self.upper: np.ndarray = upper
        cfg = self.config
        self._weights = np.array([cfg.position_weight] * 3 + [cfg.rotation_weight] * 3)
        self._weights_col = self._weights[:, None].copy()
        self._position_only = cfg.rotation_weight == 0.0
        mode = cfg.orientation if cfg.orientation != "auto" else ("reachable" if len(joints) < 6 else "full")
        #: whether the orientation is a secondary task (arms with fewer than six joints; see the module docstring)
        self.reachable_orientation = mode == "reachable" and not self._position_only
        self._lam2 = cfg.damping**2
        self._eye = np.eye(6)
        self._eye_n = np.eye(self.nq)
        zone = cfg.limit_zone * (upper - lower)
        self._zone_lo = lower + zone
        self._zone_hi = upper - zone

    @property
    def model(self) -> pin.Model:
        """The reduced pinocchio model (controlled joints only)."""
        return self._model

    @property
    def tcp_frame_id(self) -> int:
        """Index of the TCP frame in :attr:`model`."""
        return int(self._fid)

    @property
    def nq(self) -> int:
        """Number of controlled joints."""
        return len(self.joint_names)

    def _chain(self) -> list[tuple[np.ndarray, np.ndarray, int]] | None:
        """The serial chain for :meth:`fk_xyz_many`: per joint (rotation (3, 3), translation (3,) of its placement
        in the previous joint's frame, axis 0/1/2), then the TCP's offset in the last joint's frame as
        ``(identity, offset, -1)``; None unless every joint is a revolute joint about its x, y or z axis, each the
        child of the previous, with the TCP on the last."""
        model = self._model
        n = self.nq
        chain: list[tuple[np.ndarray, np.ndarray, int]] = []
        for i in range(1, n + 1):
            axis = {"JointModelRX": 0, "JointModelRY": 1, "JointModelRZ": 2}.get(model.joints[i].shortname())
            if axis is None or int(model.parents[i]) != i - 1:
                return None
            placement = model.jointPlacements[i]
            chain.append((np.array(placement.rotation), np.array(placement.translation), axis))
        frame = model.frames[self._fid]
        if int(frame.parentJoint) != n:
            return None
        chain.append((np.array(frame.placement.rotation), np.array(frame.placement.translation), -1))
        return chain

    def fk_xyz_many(self, q: np.ndarray) -> np.ndarray:
        """(m, 3) float64 TCP positions in the base frame (m) for (m, n) joint positions (rad): :meth:`fk_xyz` of
        every row, computed for all rows at once (numpy over the chain's joints) for serial revolute arms, row by
        row otherwise."""
        qs = np.asarray(q, dtype=np.float64)
        if qs.ndim != 2 or qs.shape[1] != self.nq:
            raise ShapeError(f"fk_xyz_many: expected (m, {self.nq}) joint positions in rad, got shape {qs.shape}")
        if not np.all(np.isfinite(qs)):
            raise ShapeError("fk_xyz_many: contains NaN/Inf; finite joint positions are required")
        if not hasattr(self, "_chain_cache"):
            self._chain_cache = self._chain()
        chain = self._chain_cache
        if chain is None:
            return np.array([self.fk_xyz(row) for row in qs]).reshape(len(qs), 3)
        m = len(qs)
        rot = np.broadcast_to(np.eye(3), (m, 3, 3)).copy()  # base -> current joint frame, per row
        pos = np.zeros((m, 3))
        cos, sin = np.cos(qs), np.sin(qs)
        for j, (r_fixed, t_fixed, axis) in enumerate(chain):
            flat = rot.reshape(3 * m, 3)  # stacked rows: one 2-D product instead of m small ones
            pos += (flat @ t_fixed).reshape(m, 3)
            rot = (flat @ r_fixed).reshape(m, 3, 3)
            if axis < 0:
                break
            c, s = cos[:, j, None], sin[:, j, None]
            a, b = [(1, 2), (2, 0), (0, 1)][axis]  # the plane the joint rotates: R @ R_axis(q) mixes these columns
            col_a, col_b = rot[:, :, a].copy(), rot[:, :, b].copy()
            rot[:, :, a] = c * col_a + s * col_b
            rot[:, :, b] = c * col_b - s * col_a
        return pos

    # -------------------------------------------------------------------------------------------- kinematics
    def _check_q(self, q: np.ndarray, name: str = "q") -> np.ndarray:
        arr = np.asarray(q, dtype=np.float64)
        if arr.shape != (self.nq,):
            raise ShapeError(f"{name}: expected ({self.nq},) joint positions in rad, got shape {arr.shape}")
        if not math.isfinite(float(arr.sum())):
            raise ShapeError(f"{name}: contains NaN/Inf; finite joint positions are required")
        return arr

    def fk(self, q: np.ndarray) -> Pose:
        """``T_base_tcp`` for joint positions ``q`` ((n,) rad); parent ``"base"``, child ``"tcp"``."""
        q = self._check_q(q)
        with self._lock:
            pin.framesForwardKinematics(self._model, self._data, q)
            m = self._data.oMf[self._fid]
            return Pose(m.rotation.copy(), m.translation.copy(), "base", "tcp")

    def fk_xyz(self, q: np.ndarray) -> np.ndarray:
        """(3,) float64 TCP position in the base frame, metres — the fast path (no :class:`Pose` validation)."""
        q = self._check_q(q)
        with self._lock:
            # the joints' placements, then the TCP frame's alone (updating every frame costs twice as much)
            pin.forwardKinematics(self._model, self._data, q)
            return pin.updateFramePlacement(self._model, self._data, self._fid).translation.copy()

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """(6, n) float64 TCP Jacobian at ``q``: rows (v_x, v_y, v_z [m/s], w_x, w_y, w_z [rad/s]) in the base
        frame for the TCP origin (pinocchio's LOCAL_WORLD_ALIGNED)."""
        q = self._check_q(q)
        with self._lock:
            return pin.computeFrameJacobian(
                self._model, self._data, q, self._fid, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED
            ).copy()

    def _error(self, target_r: np.ndarray, target_p: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(6,) unweighted pose error (base frame) and the (6, n) Jacobian at ``q``; updates the TCP placement."""
        jac = pin.computeFrameJacobian(self._model, self._data, q, self._fid, pin.ReferenceFrame.LOCAL_WORLD_ALIGNED)
        pin.updateFramePlacement(self._model, self._data, self._fid)
        m = self._data.oMf[self._fid]
        err = np.empty(6)
        err[:3] = target_p - m.translation
        err[3:] = pin.log3(target_r @ m.rotation.T)
        return err, jac

    def _dls_step(self, err: np.ndarray, jac: np.ndarray, q: np.ndarray, max_step: float) -> np.ndarray:
        cfg = self.config
        jw = jac * self._weights_col
        ew = err * self._weights
        if self._position_only:  # drop the zero-weight rows so they do not eat damping
            jw, ew = jw[:3], ew[:3]
        if self.reachable_orientation:
            dq = self._prioritized(jw, ew, q)
        else:
            jjt = jw @ jw.T
            lam2 = self._damping2(jjt)
            a = jjt + lam2 * self._eye[: jjt.shape[0], : jjt.shape[0]]
            dq = jw.T @ np.linalg.solve(a, ew)
            # joint clamping: joints at a limit that the step pushes further out are removed from the task and the
            # step re-solved, so the other joints take over instead of the iteration stalling against the limit
            blocked = ((q <= self.lower) & (dq < 0.0)) | ((q >= self.upper) & (dq > 0.0))
            if blocked.any():
                jw = jw * ~blocked
                jjt = jw @ jw.T
                a = jjt + lam2 * self._eye[: jjt.shape[0], : jjt.shape[0]]
                dq = jw.T @ np.linalg.solve(a, ew)
        # null-space limit avoidance: push out of the zone near each limit (not for a 5-DoF arm in reachable mode:
        # position and orientation leave it no null space, and a push would fight the orientation task)
        push = np.maximum(0.0, self._zone_lo - q) - np.maximum(0.0, q - self._zone_hi)
        if cfg.limit_gain > 0 and push.any() and not self.reachable_orientation:
            jpinv = jw.T @ np.linalg.inv(a)
            dq = dq + (self._eye_n - jpinv @ jw) @ (cfg.limit_gain * push)
        biggest = float(np.abs(dq).max())
        if biggest > max_step:
            dq *= max_step / biggest
        return np.minimum(np.maximum(q + dq, self.lower), self.upper)

    def _damping2(self, jjt: np.ndarray) -> float:
        """``lambda^2`` for a (weighted) ``J J^T``: the base damping, ramped up below the manipulability threshold."""
        cfg = self.config
        manip = math.sqrt(max(float(np.linalg.det(jjt)), 0.0))
        lam2 = self._lam2
        if manip < cfg.manipulability_threshold:
            lam2 += (cfg.singular_damping * (1.0 - manip / cfg.manipulability_threshold)) ** 2
        return lam2

    def _prioritized(self, jw: np.ndarray, ew: np.ndarray, q: np.ndarray) -> np.ndarray:
        """Position first, orientation in the position task's null space (weighted rows ``jw`` (6, n), ``ew`` (6,)).

        A joint the step would carry past a limit is moved exactly to that limit and the other joints are solved for
        what remains (repeated until no joint crosses), so the secondary task never pulls the position off target
        through a clamped joint. Returns the step (n,)."""
        eye3 = self._eye[:3, :3]
        jp = jw[:3]
        fixed = np.zeros(self.nq)
        free = np.ones(self.nq, dtype=bool)
        for _ in range(self.nq):
            e = ew - jw @ fixed
            jp, jr = jw[:3] * free, jw[3:] * free
            pp = jp @ jp.T
            a = pp + self._damping2(pp) * eye3
            dq1 = jp.T @ np.linalg.solve(a, e[:3])
            # the exact projector onto the position task's null space (a damped one leaks into the position)
            jrn = jr @ (self._eye_n - np.linalg.pinv(jp, rcond=1e-4) @ jp)
            rr = jrn @ jrn.T
            dq = fixed + dq1 + jrn.T @ np.linalg.solve(rr + self._damping2(rr) * eye3, e[3:] - jr @ dq1)
            target = q + dq
            crossing = free & ((target < self.lower) | (target > self.upper))
            if not crossing.any():
                break
            fixed[crossing] = np.clip(target, self.lower, self.upper)[crossing] - q[crossing]
            free &= ~crossing
        return dq

    def _split_rotation(self, err: np.ndarray, jac: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The orientation error ``err[3:]`` split into (reachable, unreachable) rotation vectors (3,) at ``q``:
        the projection onto the rotations the free joints make without moving the TCP, and the rest. A joint at a
        limit is free only in the direction away from the limit."""
        er = err[3:]
        free = np.ones(self.nq, dtype=bool)
        for _ in range(self.nq):
            jp, jr = jac[:3] * free, jac[3:] * free
            jrn = jr @ (self._eye_n - np.linalg.pinv(jp, rcond=1e-4) @ jp)
            grad = jrn.T @ er
            blocked = free & (((q <= self.lower + 1e-9) & (grad < 0.0)) | ((q >= self.upper - 1e-9) & (grad > 0.0)))
            if not blocked.any():
                break
            free &= ~blocked
        reach = jrn @ (np.linalg.pinv(jrn, rcond=1e-4) @ er)
        return reach, er - reach

    @staticmethod
    def _target(target: Pose) -> tuple[np.ndarray, np.ndarray]:
        if not isinstance(target, Pose):
            raise ShapeError(f"IK target: expected a Pose T_base_tcp, got {type(target).__name__}")
        return np.asarray(target.rotation), np.asarray(target.translation)

    # ------------------------------------------------------------------------------------------------ IK
    def step(self, target: Pose, q: np.ndarray, max_step_rad: float | None = None) -> np.ndarray:
        """One damped-least-squares iteration toward ``target`` (``T_base_tcp``) from ``q`` ((n,) rad).

        For control-rate streaming: call once per tick with the previous output as ``q``. ``max_step_rad``
        (default ``config.max_step_rad``) caps the largest joint change, e.g. ``velocity_limit * period``.
        Returns the new (n,) float64 joint positions, within the position limits.
        """
        target_r, target_p = self._target(target)
        q = self._check_q(q)
        with self._lock:
            err, jac = self._error(target_r, target_p, q)
            return self._dls_step(err, jac, q, self.config.max_step_rad if max_step_rad is None else max_step_rad)

    def residual(self, target: Pose, q: np.ndarray) -> tuple[float, float]:
        """(position error in metres, orientation error in radians) of FK(q) against ``target``."""
        return self.fk(q).distance_to(target)

    def solve_with_info(
        self,
        target: Pose,
        q_init: np.ndarray,
        max_iters: int | None = None,
        restarts: int | None = None,
        fallbacks: tuple[np.ndarray, ...] = (),
    ) -> IKResult:
        """Iterate from ``q_init`` until within tolerance; never raises on non-convergence (see :meth:`solve`).

        If the warm start does not converge, each of ``fallbacks`` ((n,) rad, e.g. a neutral posture such as
        ``panda.HOME_Q``) is tried next, then ``restarts`` random configurations; the best iterate is returned.
        """
        cfg = self.config
        target_r, target_p = self._target(target)
        q0 = np.clip(self._check_q(q_init, "q_init"), self.lower, self.upper)
        seeds = [q0] + [np.clip(self._check_q(f, "fallback"), self.lower, self.upper) for f in fallbacks]
        iters = cfg.max_iters if max_iters is None else max_iters
        attempts = len(seeds) + (cfg.restarts if restarts is None else restarts)
        rng = np.random.default_rng(cfg.seed)
        best: tuple[float, np.ndarray, float, float, np.ndarray, float] | None = None
        used = 0
        with self._lock:
            for attempt in range(attempts):
                q = seeds[attempt].copy() if attempt < len(seeds) else rng.uniform(self.lower, self.upper)
                for it in range(iters + 1):  # the last pass only evaluates the final iterate
                    err, jac = self._error(target_r, target_p, q)
                    pos_err, rot_err, judged, unreachable = self._judge(err, jac, q)
                    score = pos_err * cfg.position_weight + judged * cfg.rotation_weight
                    if best is None or score < best[0]:
                        best = (score, q.copy(), pos_err, rot_err, unreachable, judged)
                    if pos_err <= cfg.tol_position_m and judged <= cfg.tol_rotation_rad:
                        return IKResult(q.copy(), pos_err, rot_err, used, True, unreachable, self._judged(judged))
                    if it == iters:
                        break
                    q = self._dls_step(err, jac, q, cfg.max_step_rad)
                    used += 1
        assert best is not None
        return IKResult(best[1], best[2], best[3], used, False, best[4], self._judged(best[5]))

    def _judged(self, judged: float) -> float | None:
        return judged if self.reachable_orientation else None

    def _judge(self, err: np.ndarray, jac: np.ndarray, q: np.ndarray) -> tuple[float, float, float, np.ndarray]:
        """(position error m, orientation error rad, the orientation error the convergence test judges, the
        unreachable rotation vector (3,)) of one iterate: the whole orientation error for a fully actuated arm,
        its reachable part in ``reachable`` mode; 0 for position-only IK."""
        pos_err = float(np.linalg.norm(err[:3]))
        if self._position_only:
            return pos_err, 0.0, 0.0, np.zeros(3)
        rot_err = float(np.linalg.norm(err[3:]))
        if not self.reachable_orientation:
            return pos_err, rot_err, rot_err, np.zeros(3)
        reach, unreach = self._split_rotation(err, jac, q)
        return pos_err, rot_err, float(np.linalg.norm(reach)), unreach

    def solve(
        self, target: Pose, q_init: np.ndarray, max_iters: int | None = None, restarts: int | None = None
    ) -> np.ndarray:
        """Joint positions (n,) float64 rad whose TCP pose is ``target`` (``T_base_tcp``), within limits.

        Warm-started from ``q_init``; ``max_iters``/``restarts`` override the config. Raises :class:`IKError`
        with the residual if no iterate gets within ``config.tol_position_m`` / ``config.tol_rotation_rad`` (for an
        arm with fewer than six joints: the reachable part of the orientation; use :meth:`solve_with_info` to read
        the unreachable part).
        """
        result = self.solve_with_info(target, q_init, max_iters, restarts)
        if not result.converged:
            raise IKError(
                f"IK did not converge after {result.iterations} iterations: residual "
                f"{result.position_error_m * 1e3:.3f} mm / {np.rad2deg(result.rotation_error_rad):.3f} deg "
                f"(tolerance {self.config.tol_position_m * 1e3:.3f} mm / "
                f"{np.rad2deg(self.config.tol_rotation_rad):.3f} deg) for target xyz "
                f"{np.round(target.translation, 4).tolist()}. The target may be out of reach or across a joint "
                "limit: move it into the workspace, warm-start closer, or raise IKConfig.restarts/max_iters."
            )
        return result.q


def ik_for(
    embodiment: Embodiment | str, config: IKConfig | None = None, limits: JointLimits | None = None
) -> PinocchioIK:
    """IK of an arm from its description (a :class:`~robot_stack.robots.embodiment.Embodiment` or its name): its
    URDF (with the TCP link it adds), arm joints (the rest locked), TCP frame and joint limits."""
    if isinstance(embodiment, str):
        from robot_stack.robots.registry import get_embodiment

        embodiment = get_embodiment(embodiment)
    return PinocchioIK(
        embodiment.urdf_text(),
        embodiment.arm_joints,
        embodiment.tcp_frame,
        limits=limits or embodiment.limits,
        config=config,
    )


def panda_ik(config: IKConfig | None = None, limits: JointLimits | None = None) -> PinocchioIK:
    """IK of the Franka Panda arm (7 joints, fingers locked), TCP ``panda.TCP_FRAME``, datasheet limits."""
    return ik_for("panda", config, limits)


def ur5_ik(config: IKConfig | None = None, limits: JointLimits | None = None) -> PinocchioIK:
    """IK of the UR5 (6 joints), TCP between the prongs of its fixed tool (``fk_factory`` of the real-time executor)."""
    return ik_for("ur5", config, limits)


def so101_ik(config: IKConfig | None = None, limits: JointLimits | None = None) -> PinocchioIK:
    """IK of the SO-101 (5 arm joints, jaw locked; orientation as far as 5 joints reach, the rest reported)."""
    return ik_for("so101", config, limits)


#: Alias with the name the design uses.
PandaIK = panda_ik
