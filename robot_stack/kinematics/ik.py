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

Instances keep one pinocchio ``Data`` buffer and are guarded by a lock, so sharing one between threads is safe
(but serialised); create one per thread for parallel use.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pinocchio as pin

from robot_stack.errors import ConfigError, IKError, ShapeError
from robot_stack.robots import panda
from robot_stack.robots.base import JointLimits
from robot_stack.types import Pose

log = logging.getLogger("robot_stack.control.ik")

__all__ = ["IKConfig", "IKResult", "PinocchioIK", "panda_ik"]


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

    def __post_init__(self) -> None:
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
        converged: both errors within tolerance.
    """

    q: np.ndarray
    position_error_m: float
    rotation_error_rad: float
    iterations: int
    converged: bool


class PinocchioIK:
    """Forward and inverse kinematics of a serial arm loaded from a URDF with pinocchio.

    Args:
        urdf: path of the URDF (meshes are not loaded; only kinematics is needed).
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
        full = pin.buildModelFromUrdf(str(urdf))
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
            pin.framesForwardKinematics(self._model, self._data, q)
            return self._data.oMf[self._fid].translation.copy()

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
        jjt = jw @ jw.T
        # manipulability of the weighted Jacobian; damping ramps up as it falls below the threshold
        manip = math.sqrt(max(float(np.linalg.det(jjt)), 0.0))
        lam2 = self._lam2
        if manip < cfg.manipulability_threshold:
            lam2 += (cfg.singular_damping * (1.0 - manip / cfg.manipulability_threshold)) ** 2
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
        # null-space limit avoidance: push out of the zone near each limit
        push = np.maximum(0.0, self._zone_lo - q) - np.maximum(0.0, q - self._zone_hi)
        if cfg.limit_gain > 0 and push.any():
            jpinv = jw.T @ np.linalg.inv(a)
            dq = dq + (self._eye_n - jpinv @ jw) @ (cfg.limit_gain * push)
        biggest = float(np.abs(dq).max())
        if biggest > max_step:
            dq *= max_step / biggest
        return np.minimum(np.maximum(q + dq, self.lower), self.upper)

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
        best: tuple[float, np.ndarray, float, float] | None = None
        used = 0
        with self._lock:
            for attempt in range(attempts):
                q = seeds[attempt].copy() if attempt < len(seeds) else rng.uniform(self.lower, self.upper)
                for _ in range(iters):
                    err, jac = self._error(target_r, target_p, q)
                    pos_err, rot_err = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
                    if cfg.rotation_weight == 0.0:
                        rot_err = 0.0
                    score = pos_err * cfg.position_weight + rot_err * cfg.rotation_weight
                    if best is None or score < best[0]:
                        best = (score, q.copy(), pos_err, rot_err)
                    if pos_err <= cfg.tol_position_m and rot_err <= cfg.tol_rotation_rad:
                        return IKResult(q.copy(), pos_err, rot_err, used, True)
                    q = self._dls_step(err, jac, q, cfg.max_step_rad)
                    used += 1
                # evaluate the final iterate of this attempt too
                err, _ = self._error(target_r, target_p, q)
                pos_err, rot_err = float(np.linalg.norm(err[:3])), float(np.linalg.norm(err[3:]))
                if cfg.rotation_weight == 0.0:
                    rot_err = 0.0
                if pos_err <= cfg.tol_position_m and rot_err <= cfg.tol_rotation_rad:
                    return IKResult(q.copy(), pos_err, rot_err, used, True)
                score = pos_err * cfg.position_weight + rot_err * cfg.rotation_weight
                if best is None or score < best[0]:
                    best = (score, q.copy(), pos_err, rot_err)
        assert best is not None
        return IKResult(best[1], best[2], best[3], used, False)

    def solve(
        self, target: Pose, q_init: np.ndarray, max_iters: int | None = None, restarts: int | None = None
    ) -> np.ndarray:
        """Joint positions (n,) float64 rad whose TCP pose is ``target`` (``T_base_tcp``), within limits.

        Warm-started from ``q_init``; ``max_iters``/``restarts`` override the config. Raises :class:`IKError`
        with the residual if no iterate gets within ``config.tol_position_m`` / ``config.tol_rotation_rad``.
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


def panda_ik(config: IKConfig | None = None, limits: JointLimits | None = None) -> PinocchioIK:
    """IK of the Franka Panda arm (7 joints, fingers locked), TCP ``panda.TCP_FRAME``, datasheet limits."""
    return PinocchioIK(
        panda.urdf_path(), panda.ARM_JOINTS, panda.TCP_FRAME, limits=limits or panda.LIMITS, config=config
    )


#: Alias with the name the design uses.
PandaIK = panda_ik
