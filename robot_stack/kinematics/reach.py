"""Pose sequences -> joint trajectories: warm-started IK over a chunk's TCP targets, and what to do with the
targets the arm cannot reach (:class:`ReachPolicy`, with :class:`ReachStats` counting every changed step).

Conventions: metres, radians; poses are :class:`~robot_stack.types.Pose` (``T_base_tcp``).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from robot_stack.errors import DecodeError, IKError, ShapeError
from robot_stack.types import Pose

if TYPE_CHECKING:
    from robot_stack.kinematics.ik import PinocchioIK

log = logging.getLogger("robot_stack.kinematics.reach")

__all__ = [
    "ORIENTATION_REPORT_RAD",
    "PoseSequenceIK",
    "ReachPolicy",
    "ReachStats",
    "solve_pose_sequence",
    "solve_pose_sequence_checked",
]

#: An unreachable orientation part above this (rad, ~0.6 deg) is logged and counted (:class:`ReachStats`).
ORIENTATION_REPORT_RAD = 0.01


# ------------------------------------------------------------------------------------------- pose -> joints


class ReachStats:
    """Running record (thread-safe) of how many steps of each solved TCP sequence a :class:`ReachPolicy` had to
    change before execution: raised over the floor, clamped onto the reachable set, or dropped. Best-effort steps
    (within the tolerance) count as solved.

    A policy whose chunks are mostly changed, chunk after chunk, is asking for motion the arm cannot make: a
    supervisor (:class:`robot_stack.cycle.RecoveryConfig`) reads :attr:`last_fraction` after each decode.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sequences = 0
        self.steps = 0
        self.changed = 0
        #: steps solved in position whose target orientation was partly out of the arm's reach (5-DoF arms)
        self.orientation_short = 0
        #: the largest unreachable orientation part seen, rad
        self.max_unreachable_rotation_rad = 0.0
        self._last = (0, 0)
        self._tcp_goal: tuple[np.ndarray, np.ndarray] | None = None

    def record(
        self,
        steps: int,
        changed: int,
        tcp_xyz: np.ndarray | None = None,
        goal_xyz: np.ndarray | None = None,
        unreachable_rotation_rad: np.ndarray | None = None,
    ) -> None:
        """Add one solved sequence of ``steps`` steps of which ``changed`` were changed (or dropped).

        ``tcp_xyz``: (3,) m base frame, the TCP when the sequence was solved; ``goal_xyz``: (3,) m, the sequence's
        last target (the policy's goal, raised over the floor if it was below it). Either None = unknown.
        ``unreachable_rotation_rad``: (kept steps,) the orientation each step could not reach (5-DoF arms)."""
        with self._lock:
            self.sequences += 1
            self.steps += int(steps)
            self.changed += int(changed)
            if unreachable_rotation_rad is not None and len(unreachable_rotation_rad):
                short = np.asarray(unreachable_rotation_rad, np.float64)
                self.orientation_short += int(np.count_nonzero(short > ORIENTATION_REPORT_RAD))
                self.max_unreachable_rotation_rad = max(self.max_unreachable_rotation_rad, float(short.max()))
            self._last = (int(steps), int(changed))
            known = tcp_xyz is not None and goal_xyz is not None
            self._tcp_goal = (np.array(tcp_xyz, np.float64), np.array(goal_xyz, np.float64)) if known else None

    @property
    def last_tcp_goal(self) -> tuple[np.ndarray, np.ndarray] | None:
        """((3,), (3,)) m base frame: the TCP and the policy's goal of the last sequence; None if unknown. A policy
        close to its goal, or whose arm got closer to it, is not stuck however much of its chunk was changed."""
        with self._lock:
            return None if self._tcp_goal is None else (self._tcp_goal[0].copy(), self._tcp_goal[1].copy())

    @property
    def last_goal_distance_m(self) -> float | None:
        """Distance (m) from the TCP to the last sequence's goal; None if unknown."""
        pair = self.last_tcp_goal
        return None if pair is None else float(np.linalg.norm(pair[1] - pair[0]))

    @property
    def last_fraction(self) -> float:
        """Fraction (0..1) of the last sequence's steps that were changed; 0 before the first."""
        with self._lock:
            steps, changed = self._last
            return changed / steps if steps else 0.0


@dataclass(frozen=True)
class ReachPolicy:
    """How :func:`solve_pose_sequence` treats TCP targets the IK cannot hit exactly.

    Attributes:
        fallback_q: (n,) rad neutral posture (e.g. ``panda.HOME_Q``) the IK restarts from when the warm start
            fails; None = warm start only.
        best_effort_m: a non-converged solution is accepted if its position residual is within this (m) and its
            orientation residual within ``best_effort_rad``.
        best_effort_rad: orientation residual accepted with ``best_effort_m``, rad.
        clamp_m: a target farther than ``best_effort_m`` from the reachable set (orientation met, position not)
            is clamped onto the nearest reachable pose the IK found if that is within this distance (m);
            0 = never clamp.
        drop_unreachable: steps that still fail are dropped from the sequence (logged) instead of failing the
            whole chunk; the chunk fails only if no step is left.
        floor_z_m: TCP targets below this height (base-frame z, m; e.g. the table top plus a margin) are raised
            to it before the IK (logged, counted as clamped): the hand never presses into the table. None = off.
        box_lower, box_upper: (3,) m, base frame: TCP targets outside this box are moved onto it before the IK
            (logged, counted as clamped), so plans stay inside a workspace box the safety filter enforces instead
            of leaving the filter to hold them back (pass the filter's box shrunk by its braking margin). None = off.
        stats: where to record how many steps of each sequence were changed (:class:`ReachStats`); None = off.
    """

    fallback_q: np.ndarray | None = None
    best_effort_m: float = 0.0
    best_effort_rad: float = 0.0
    clamp_m: float = 0.0
    drop_unreachable: bool = False
    floor_z_m: float | None = None
    box_lower: tuple[float, float, float] | None = None
    box_upper: tuple[float, float, float] | None = None
    stats: ReachStats | None = field(default=None, compare=False)


@dataclass(frozen=True)
class PoseSequenceIK:
    """Result of :func:`solve_pose_sequence_checked`.

    Attributes:
        positions: (H', n) float64 joint positions, rad, one row per kept step.
        kept: (H',) int64 indices of the kept steps in the requested sequence.
        clamped: indices of steps whose target was clamped onto the reachable set.
        best_effort: indices of steps accepted with a residual within the best-effort tolerance.
        unreachable_rotation_rad: (H',) float64 per kept step, the part of the target orientation (rad) the arm
            cannot reach at that position (an arm with fewer than six joints; zeros otherwise). Steps above
            :data:`ORIENTATION_REPORT_RAD` are logged.
    """

    positions: np.ndarray
    kept: np.ndarray
    clamped: tuple[int, ...] = ()
    best_effort: tuple[int, ...] = ()
    unreachable_rotation_rad: np.ndarray = field(default_factory=lambda: np.zeros(0))


def solve_pose_sequence_checked(
    ik: PinocchioIK,
    poses: Sequence[Pose],
    q_init: np.ndarray,
    max_iters: int,
    what: str,
    reach: ReachPolicy | None = None,
) -> PoseSequenceIK:
    """IK for a sequence of TCP targets, each warm-started from the previous solution (the first from ``q_init``),
    with the per-step handling of unreachable targets set by ``reach`` (default: every step must converge).

    Every step that is not solved exactly (best effort, clamped or dropped) is logged with its reason.

    Raises:
        IKError: a step failed and ``reach`` does not drop it, or every step was dropped.
        ShapeError: ``q_init`` has the wrong shape or is not finite.
    """
    reach = reach or ReachPolicy()
    q = np.asarray(q_init, dtype=np.float64)
    if q.shape != (ik.nq,) or not np.all(np.isfinite(q)):
        raise ShapeError(f"{what}: state.q must be finite ({ik.nq},) rad, got shape {q.shape}")
    if len(poses) == 0:
        raise DecodeError(f"{what}: no poses to solve (empty horizon)")
    fallbacks = () if reach.fallback_q is None else (np.asarray(reach.fallback_q, np.float64),)
    rows: list[np.ndarray] = []
    kept: list[int] = []
    clamped: list[int] = []
    best_effort: list[int] = []
    reasons: list[str] = []
    short: list[float] = []
    for k, target in enumerate(poses):
        where = f"{what} step {k}/{len(poses)} (TCP xyz {np.round(target.translation, 4).tolist()} m)"
        floored = reach.floor_z_m is not None and float(target.translation[2]) < reach.floor_z_m
        if floored:
            lifted = np.array(target.translation, dtype=np.float64)
            reasons.append(
                f"{where}: below the floor z = {reach.floor_z_m:.3f} m, raised by "
                f"{(reach.floor_z_m - lifted[2]) * 1e3:.1f} mm"
            )
            lifted[2] = reach.floor_z_m
            target = dataclasses.replace(target, translation=lifted)
        if reach.box_lower is not None and reach.box_upper is not None:
            p = np.asarray(target.translation, dtype=np.float64)
            inside = np.clip(p, reach.box_lower, reach.box_upper)
            if np.any(inside != p):
                reasons.append(
                    f"{where}: outside the workspace box, moved {np.linalg.norm(inside - p) * 1e3:.1f} mm in"
                )
                target = dataclasses.replace(target, translation=inside)
                floored = True  # counted as clamped below, like the floor
        res = ik.solve_with_info(target, q, max_iters=max_iters, fallbacks=fallbacks)
        if not res.converged:
            pos, rot = res.position_error_m, res.judged_rotation_error_rad
            if pos <= reach.best_effort_m and rot <= reach.best_effort_rad:
                best_effort.append(k)
                log.info("%s: best-effort IK accepted, residual %.2f mm / %.4f rad", where, pos * 1e3, rot)
            elif rot <= max(reach.best_effort_rad, ik.config.tol_rotation_rad) and pos <= reach.clamp_m:
                clamped.append(k)
                reasons.append(f"{where}: out of reach, clamped by {pos * 1e3:.1f} mm onto the reachable set")
            else:
                why = (
                    f"{where}: IK did not converge from the warm start"
                    f"{' or the neutral posture' if fallbacks else ''}: residual {pos * 1e3:.2f} mm / {rot:.4f} rad "
                    f"(accepted: {reach.best_effort_m * 1e3:.1f} mm best effort, {reach.clamp_m * 1e3:.1f} mm clamp)"
                )
                if not reach.drop_unreachable:
                    raise IKError(
                        f"{why}. The target may be out of reach or across a joint limit: move it into the "
                        "workspace, warm-start closer, or raise IKConfig.restarts/max_iters."
                    )
                reasons.append(f"{why}; step dropped")
                continue
        if floored and (not clamped or clamped[-1] != k):
            clamped.append(k)
        q = res.q
        rows.append(q)
        kept.append(k)
        short.append(res.unreachable_rotation_rad)
    if reasons:
        log.warning("%s: %d of %d steps not solved exactly: %s", what, len(reasons), len(poses), "; ".join(reasons))
    unreachable = np.asarray(short, np.float64)
    if np.any(unreachable > ORIENTATION_REPORT_RAD):
        worst = int(np.argmax(unreachable))
        log.info(
            "%s: %d of %d steps reach their position but not all of their orientation (the arm has %d joints): "
            "up to %.1f deg unreachable (step %d)",
            what,
            int(np.count_nonzero(unreachable > ORIENTATION_REPORT_RAD)),
            len(poses),
            ik.nq,
            float(np.rad2deg(unreachable[worst])),
            kept[worst],
        )
    if reach.stats is not None:
        goal = np.array(poses[-1].translation, dtype=np.float64)
        if reach.floor_z_m is not None:
            goal[2] = max(goal[2], reach.floor_z_m)
        if reach.box_lower is not None and reach.box_upper is not None:
            goal = np.clip(goal, reach.box_lower, reach.box_upper)
        tcp = ik.fk_xyz(np.asarray(q_init, dtype=np.float64))
        reach.stats.record(len(poses), len(poses) - len(kept) + len(clamped), tcp, goal, unreachable)
    if not rows:
        raise IKError(f"{what}: no step of the chunk is reachable ({reasons[0] if reasons else 'no steps'})")
    return PoseSequenceIK(np.array(rows), np.array(kept, np.int64), tuple(clamped), tuple(best_effort), unreachable)


def solve_pose_sequence(
    ik: PinocchioIK, poses: Sequence[Pose], q_init: np.ndarray, max_iters: int, what: str
) -> np.ndarray:
    """IK for a sequence of TCP targets, each warm-started from the previous solution (the first from ``q_init``).

    Shared by decoders whose actions are TCP poses. Warm starts keep consecutive solutions on one branch.

    Args:
        ik: kinematics of the arm.
        poses: H targets ``T_base_tcp``.
        q_init: (n,) float64 rad, the configuration the first solve starts from (usually the observed state).
        max_iters: IK iterations per step.
        what: name of the action language, used in error messages.

    Returns:
        (H, n) float64 joint positions, rad, within the IK's limits.

    Raises:
        IKError: a step did not converge (the message names the step and its target).
        ShapeError: ``q_init`` has the wrong shape or is not finite.
    """
    return solve_pose_sequence_checked(ik, poses, q_init, max_iters, what).positions
