"""Motion plans: exact piecewise-cubic joint trajectories in time — what the executor follows, tick by tick.

A :class:`MotionPlan` is ``q(t)`` on ``[start_ns, end_ns]``, made of pieces ``i`` on which

    q(t) = c0 + c1 s + c2 s^2 + c3 s^3,   s = (t - t0_ns) / 1e9 - breaks[i]  (seconds)

so the jerk is constant on every piece (``6 c3``). Both kinds of motion the stack generates are exactly of this
form: ruckig's jerk-limited trajectories (constant jerk per phase, :mod:`robot_stack.control.online`) and chunks
time-parameterised by TOPP-RA and interpolated by a cubic spline in time (:mod:`robot_stack.control.timing`). Peak
velocity, acceleration and jerk of a plan are therefore computed exactly (:meth:`MotionPlan.peaks`), not sampled,
and a plan that is within the limits stays within them however it is sampled: every finite divided difference of
samples of a C2 function is an average of the corresponding derivative (the mean value theorem for divided
differences), which is how :class:`~robot_stack.control.safety.SafetyFilter` judges commands.

Plans handed to the executor end at rest (velocity and acceleration zero at ``end_ns``); after the end the plan
holds its last position. ``policy_end_ns`` marks where the policy's own steps end: after it, the plan is an
extension that brings the arm to rest (the executor's watchdog counts from there).

Plans cross the process boundary to the real-time executor as raw bytes (:meth:`MotionPlan.to_bytes`: a JSON
header plus float64/int64 arrays), never pickled.

Times are monotonic ns (int) for absolute instants and float seconds inside a plan; positions rad, velocities
rad/s, accelerations rad/s^2, jerk rad/s^3; joint arrays (n,) float64.
"""

from __future__ import annotations

import bisect
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ShapeError

__all__ = ["MIN_PIECE_S", "JointState", "MotionPlan", "PlanPeaks"]

#: Pieces shorter than this (seconds) are dropped when plans are built: they carry no motion, and a cubic fitted
#: over them would turn rounding noise into a huge jerk.
MIN_PIECE_S = 1e-9

_MAGIC = b"RSPLAN1\0"
_BASIS = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])


@dataclass(frozen=True)
class JointState:
    """Position, velocity and acceleration of every joint at one instant: (n,) float64 each (rad, rad/s, rad/s^2)."""

    q: np.ndarray
    v: np.ndarray
    a: np.ndarray

    @classmethod
    def at_rest(cls, q: np.ndarray) -> JointState:
        q = np.array(q, dtype=np.float64)
        return cls(q, np.zeros_like(q), np.zeros_like(q))

    def close_to(self, other: JointState, q_tol: float = 1e-9, v_tol: float = 1e-6, a_tol: float = 1e-3) -> bool:
        """Whether the two states agree within the tolerances (rad, rad/s, rad/s^2) on every joint."""
        return bool(
            np.max(np.abs(self.q - other.q)) <= q_tol
            and np.max(np.abs(self.v - other.v)) <= v_tol
            and np.max(np.abs(self.a - other.a)) <= a_tol
        )


@dataclass(frozen=True)
class PlanPeaks:
    """Exact peak magnitudes of a plan per joint: (n,) float64 velocity rad/s, acceleration rad/s^2, jerk rad/s^3."""

    velocity: np.ndarray
    acceleration: np.ndarray
    jerk: np.ndarray

    def ratios(self, velocity: np.ndarray, acceleration: np.ndarray, jerk: np.ndarray) -> tuple[float, float, float]:
        """Largest peak / limit over the joints for velocity, acceleration and jerk."""
        return (
            float(np.max(self.velocity / velocity)),
            float(np.max(self.acceleration / acceleration)),
            float(np.max(self.jerk / jerk)),
        )


class MotionPlan:
    """A piecewise-cubic joint trajectory on ``[start_ns, end_ns]`` (see the module docstring). Immutable.

    Args:
        joint_names: the ``n`` joints, in column order.
        t0_ns: monotonic time (ns) of ``breaks[0]``; the plan starts here.
        breaks: (M + 1,) float64 piece boundaries, seconds after ``t0_ns``; ``breaks[0] == 0``, strictly increasing.
        coeffs: (M, 4, n) float64 coefficients ``c0..c3`` of each piece in its local time ``s`` (seconds).
        policy_end_ns: the last time the plan carries the policy's own targets (None: all of it).
        gripper_t_ns: (K,) int64 times of gripper openings, or None.
        gripper: (K,) float64 openings in [0, 1] (linear in between, held outside), or None.
    """

    __slots__ = (
        "_breaks_list",
        "breaks",
        "coeffs",
        "end_ns",
        "gripper",
        "gripper_t_ns",
        "joint_names",
        "policy_end_ns",
        "t0_ns",
    )

    def __init__(
        self,
        joint_names: Sequence[str],
        t0_ns: int,
        breaks: np.ndarray,
        coeffs: np.ndarray,
        policy_end_ns: int | None = None,
        gripper_t_ns: np.ndarray | None = None,
        gripper: np.ndarray | None = None,
    ) -> None:
        names = tuple(joint_names)
        b = np.array(breaks, dtype=np.float64)
        c = np.array(coeffs, dtype=np.float64)
        if b.ndim != 1 or b.shape[0] < 2 or b[0] != 0.0 or np.any(np.diff(b) <= 0):
            raise ShapeError(
                f"MotionPlan.breaks: expected (M + 1,) strictly increasing seconds starting at 0, M >= 1; got {b!r}"
            )
        if c.shape != (b.shape[0] - 1, 4, len(names)):
            raise ShapeError(
                f"MotionPlan.coeffs: expected shape {(b.shape[0] - 1, 4, len(names))} (pieces, c0..c3, joints), "
                f"got {c.shape}"
            )
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(c))):
            raise ShapeError("MotionPlan: breaks and coefficients must be finite")
        if (gripper is None) != (gripper_t_ns is None):
            raise ShapeError("MotionPlan: gripper and gripper_t_ns go together")
        g_t = g = None
        if gripper is not None and gripper_t_ns is not None:
            g_t = np.array(gripper_t_ns, dtype=np.int64)
            g = np.clip(np.array(gripper, dtype=np.float64), 0.0, 1.0)
            if g_t.ndim != 1 or g.shape != g_t.shape or g_t.shape[0] < 1 or np.any(np.diff(g_t) <= 0):
                raise ShapeError("MotionPlan.gripper: expected (K,) openings at strictly increasing (K,) times")
            if not np.all(np.isfinite(g)):
                raise ShapeError("MotionPlan.gripper: must be finite")
            g_t.setflags(write=False)
            g.setflags(write=False)
        b.setflags(write=False)
        c.setflags(write=False)
        self.joint_names = names
        self.t0_ns = int(t0_ns)
        self.breaks = b
        self.coeffs = c
        self.end_ns = self.t0_ns + round(float(b[-1]) * 1e9)
        self.policy_end_ns = None if policy_end_ns is None else int(policy_end_ns)
        self.gripper_t_ns = g_t
        self.gripper = g
        self._breaks_list: list[float] = b.tolist()

    # ---------------------------------------------------------------------------------------------- builders
    @classmethod
    def hold(cls, joint_names: Sequence[str], q: np.ndarray, t_ns: int, duration_s: float = 1e-3) -> MotionPlan:
        """Rest at ``q`` ((n,) rad) from ``t_ns`` for ``duration_s`` seconds."""
        q = np.asarray(q, dtype=np.float64)
        c = np.zeros((1, 4, q.shape[0]))
        c[0, 0] = q
        return cls(joint_names, t_ns, np.array([0.0, duration_s]), c)

    @classmethod
    def from_states(
        cls, joint_names: Sequence[str], t0_ns: int, times_s: np.ndarray, states: np.ndarray, jerks: np.ndarray
    ) -> MotionPlan:
        """Pieces from left-end states and constant jerks.

        Args:
            times_s: (M + 1,) piece boundaries, seconds after ``t0_ns`` (first 0, increasing).
            states: (M, 3, n) position, velocity, acceleration at the left end of each piece.
            jerks: (M, n) constant jerk on each piece.
        Pieces shorter than :data:`MIN_PIECE_S` are dropped (their neighbour absorbs the time).
        """
        t = np.asarray(times_s, dtype=np.float64)
        st = np.asarray(states, dtype=np.float64)
        j = np.asarray(jerks, dtype=np.float64)
        keep = np.diff(t) >= MIN_PIECE_S
        if not np.any(keep):
            raise ShapeError("MotionPlan.from_states: every piece is shorter than MIN_PIECE_S")
        idx = np.flatnonzero(keep)
        starts = t[:-1][idx]
        ends = np.append(starts[1:], t[-1])
        coeffs = np.stack([st[idx, 0], st[idx, 1], 0.5 * st[idx, 2], j[idx] / 6.0], axis=1)
        breaks = np.append(starts, ends[-1]) - starts[0]
        return cls(joint_names, t0_ns + round(float(starts[0]) * 1e9), breaks, coeffs)

    @classmethod
    def from_scipy(cls, joint_names: Sequence[str], t0_ns: int, spline: object) -> MotionPlan:
        """From a cubic scipy ``PPoly``/``CubicSpline`` over seconds (its ``x[0]`` is placed at ``t0_ns``)."""
        x = np.asarray(spline.x, dtype=np.float64)  # type: ignore[attr-defined]
        c = np.asarray(spline.c, dtype=np.float64)  # type: ignore[attr-defined]  # (4, M, n), highest power first
        if c.ndim == 2:
            c = c[:, :, None]
        if c.shape[0] != 4:
            raise ShapeError(f"MotionPlan.from_scipy: expected a cubic spline, got order {c.shape[0] - 1}")
        coeffs = np.transpose(c[::-1], (1, 0, 2))
        return cls(joint_names, t0_ns, x - x[0], coeffs)

    # ---------------------------------------------------------------------------------------------- queries
    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self.coeffs.shape[2])

    @property
    def start_ns(self) -> int:
        return self.t0_ns

    @property
    def duration_s(self) -> float:
        return float(self.breaks[-1])

    def _local(self, t_ns: int) -> tuple[int, float]:
        ts = (int(t_ns) - self.t0_ns) * 1e-9
        if ts <= 0.0:
            return 0, 0.0
        last = self._breaks_list[-1]
        if ts >= last or t_ns >= self.end_ns:  # end_ns is the end rounded to ns: it means the end itself
            i = len(self._breaks_list) - 2
            return i, last - self._breaks_list[i]
        i = bisect.bisect_right(self._breaks_list, ts) - 1
        return i, ts - self._breaks_list[i]

    def sample(self, t_ns: int) -> JointState:
        """The state at ``t_ns`` (clamped to ``[start_ns, end_ns]``: a plan ending at rest holds its last point)."""
        i, s = self._local(t_ns)
        s2 = s * s
        m = _BASIS.copy()  # rows: the monomials of q, v, a at s (a small-matrix product is the cheapest form)
        m[0, 1], m[0, 2], m[0, 3] = s, s2, s2 * s
        m[1, 2], m[1, 3], m[2, 3] = 2.0 * s, 3.0 * s2, 6.0 * s
        qva = m @ self.coeffs[i]
        return JointState(qva[0], qva[1], qva[2])

    def sample_many(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(len(t), n) positions, velocities, accelerations at ``t_ns`` (clamped like :meth:`sample`)."""
        ts = np.clip((np.asarray(t_ns, dtype=np.int64) - self.t0_ns) * 1e-9, 0.0, self.breaks[-1])
        i = np.clip(np.searchsorted(self.breaks, ts, side="right") - 1, 0, len(self.breaks) - 2)
        s = (ts - self.breaks[i])[:, None]
        c = self.coeffs[i]
        c0, c1, c2, c3 = c[:, 0], c[:, 1], c[:, 2], c[:, 3]
        return c0 + s * (c1 + s * (c2 + s * c3)), c1 + s * (2.0 * c2 + 3.0 * s * c3), 2.0 * c2 + 6.0 * s * c3

    def jerk_at(self, t_ns: int) -> np.ndarray:
        """(n,) jerk (rad/s^3) of the piece containing ``t_ns``."""
        i, _ = self._local(t_ns)
        return 6.0 * self.coeffs[i, 3]

    def gripper_at(self, t_ns: int) -> float | None:
        """Gripper opening at ``t_ns`` (linear between its points, held outside), or None."""
        if self.gripper is None or self.gripper_t_ns is None:
            return None
        return float(np.interp(float(t_ns), self.gripper_t_ns.astype(np.float64), self.gripper))

    def gripper_many(self, t_ns: np.ndarray) -> np.ndarray | None:
        """Gripper openings at ``t_ns`` ((len(t),), like :meth:`gripper_at`), or None."""
        if self.gripper is None or self.gripper_t_ns is None:
            return None
        return np.interp(np.asarray(t_ns, dtype=np.float64), self.gripper_t_ns.astype(np.float64), self.gripper)

    @property
    def end_state(self) -> JointState:
        return self.sample(self.end_ns)

    def ends_at_rest(self, v_tol: float = 1e-6, a_tol: float = 1e-4) -> bool:
        """Whether velocity and acceleration are (numerically) zero at the end."""
        end = self.end_state
        return bool(np.max(np.abs(end.v)) <= v_tol and np.max(np.abs(end.a)) <= a_tol)

    def peaks(self) -> PlanPeaks:
        """Exact peak |velocity|, |acceleration|, |jerk| per joint over the whole plan."""
        h = np.diff(self.breaks)[:, None]
        c1, c2, c3 = self.coeffs[:, 1], self.coeffs[:, 2], self.coeffs[:, 3]
        jerk = np.abs(6.0 * c3).max(axis=0)
        a_left, a_right = 2.0 * c2, 2.0 * c2 + 6.0 * c3 * h
        acc = np.maximum(np.abs(a_left), np.abs(a_right)).max(axis=0)
        v_left, v_right = c1, c1 + h * (2.0 * c2 + 3.0 * c3 * h)
        vel = np.maximum(np.abs(v_left), np.abs(v_right))
        with np.errstate(divide="ignore", invalid="ignore"):
            s_star = np.where(c3 != 0.0, -c2 / (3.0 * c3), -1.0)
            inside = (s_star > 0.0) & (s_star < h)
            v_star = np.where(inside, np.abs(c1 - c2 * c2 / np.where(c3 != 0.0, 3.0 * c3, 1.0)), 0.0)
        return PlanPeaks(np.maximum(vel, v_star).max(axis=0), acc, jerk)

    def position_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Exact (min, max) position per joint over the whole plan, (n,) rad each."""
        h = np.diff(self.breaks)[:, None]
        c0, c1, c2, c3 = (self.coeffs[:, k] for k in range(4))
        ends = np.concatenate([c0, c0 + h * (c1 + h * (c2 + h * c3))], axis=0)
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        # interior extrema: roots of v(s) = c1 + 2 c2 s + 3 c3 s^2 inside (0, h)
        a, b, c = 3.0 * c3, 2.0 * c2, c1
        disc = b * b - 4.0 * a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            sq = np.sqrt(np.maximum(disc, 0.0))
            quad = np.abs(a) > 1e-300
            roots = [
                np.where(quad, (-b + sq) / (2.0 * a), np.where(b != 0.0, -c / b, -1.0)),
                np.where(quad, (-b - sq) / (2.0 * a), -1.0),
            ]
        for r in roots:
            ok = (disc >= 0.0) & (r > 0.0) & (r < h)
            val = c0 + r * (c1 + r * (c2 + r * c3))
            lo = np.minimum(lo, np.where(ok, val, np.inf).min(axis=0))
            hi = np.maximum(hi, np.where(ok, val, -np.inf).max(axis=0))
        return lo, hi

    def max_jumps(self) -> tuple[float, float, float]:
        """Largest jump of position, velocity and acceleration at an interior break (0 for a C2 plan)."""
        if self.coeffs.shape[0] < 2:
            return 0.0, 0.0, 0.0
        h = np.diff(self.breaks)[:-1, None]
        c0, c1, c2, c3 = (self.coeffs[:-1, k] for k in range(4))
        nxt = self.coeffs[1:]
        dq = np.abs(c0 + h * (c1 + h * (c2 + h * c3)) - nxt[:, 0]).max()
        dv = np.abs(c1 + h * (2.0 * c2 + 3.0 * h * c3) - nxt[:, 1]).max()
        da = np.abs(2.0 * c2 + 6.0 * h * c3 - 2.0 * nxt[:, 2]).max()
        return float(dq), float(dv), float(da)

    # ------------------------------------------------------------------------------------------ edits (new plans)
    def _replace(
        self, t0_ns: int, breaks: np.ndarray, coeffs: np.ndarray, policy_end_ns: int | None | str = "keep"
    ) -> MotionPlan:
        end = self.policy_end_ns if policy_end_ns == "keep" else policy_end_ns
        return MotionPlan(
            self.joint_names,
            t0_ns,
            breaks,
            coeffs,
            end,
            self.gripper_t_ns,
            self.gripper,  # type: ignore[arg-type]
        )

    def with_policy_end(self, policy_end_ns: int | None) -> MotionPlan:
        return self._replace(self.t0_ns, self.breaks, self.coeffs, policy_end_ns)

    def with_gripper(self, gripper_t_ns: np.ndarray | None, gripper: np.ndarray | None) -> MotionPlan:
        return MotionPlan(
            self.joint_names, self.t0_ns, self.breaks, self.coeffs, self.policy_end_ns, gripper_t_ns, gripper
        )

    def until(self, t_ns: int) -> MotionPlan:
        """The plan from its start up to ``t_ns`` (pieces kept exactly; the last one cut short).

        Raises ShapeError if ``t_ns`` is not after the start."""
        ts = (int(t_ns) - self.t0_ns) * 1e-9
        if ts <= MIN_PIECE_S:
            raise ShapeError(f"MotionPlan.until: {t_ns} ns is not after the plan's start {self.t0_ns} ns")
        if ts >= self.breaks[-1]:
            return self
        i = bisect.bisect_left(self._breaks_list, ts)  # breaks[i - 1] < ts <= breaks[i]
        if self._breaks_list[i] - ts < MIN_PIECE_S:
            return self._replace(self.t0_ns, self.breaks[: i + 1], self.coeffs[:i])
        if ts - self._breaks_list[i - 1] < MIN_PIECE_S and i > 1:
            return self._replace(self.t0_ns, self.breaks[:i], self.coeffs[: i - 1])
        return self._replace(self.t0_ns, np.append(self.breaks[:i], ts), self.coeffs[:i])

    def after(self, t_ns: int) -> MotionPlan:
        """The plan from ``t_ns`` on (the piece containing it is re-expanded around ``t_ns``: exact up to rounding).
        A time at or after the end gives a short hold at the end state."""
        ts = (int(t_ns) - self.t0_ns) * 1e-9
        if ts <= 0.0:
            return self
        if ts >= self.breaks[-1] - MIN_PIECE_S:
            end = self.end_state
            c = np.zeros((1, 4, self.n))
            c[0, 0], c[0, 1], c[0, 2] = end.q, end.v, 0.5 * end.a
            return self._replace(int(t_ns), np.array([0.0, 1e-3]), c)
        i = bisect.bisect_right(self._breaks_list, ts) - 1
        s = ts - self._breaks_list[i]
        c0, c1, c2, c3 = self.coeffs[i]
        first = np.stack([c0 + s * (c1 + s * (c2 + s * c3)), c1 + s * (2.0 * c2 + 3.0 * s * c3), c2 + 3.0 * s * c3, c3])
        coeffs = np.concatenate([first[None], self.coeffs[i + 1 :]], axis=0)
        breaks = np.append(0.0, self.breaks[i + 1 :] - ts)
        if breaks[1] < MIN_PIECE_S:  # t fell on (or within rounding of) a boundary
            coeffs, breaks = coeffs[1:], np.append(0.0, breaks[2:] - breaks[1])
        return self._replace(int(t_ns), breaks, coeffs)

    def then(self, other: MotionPlan) -> MotionPlan:
        """This plan followed by ``other``, which must start where this one ends (its start is snapped onto this
        plan's end). Keeps this plan's ``policy_end_ns`` unless ``other`` has one; gripper tracks are merged."""
        if other.joint_names != self.joint_names:
            raise ShapeError(f"MotionPlan.then: joints {other.joint_names} differ from {self.joint_names}")
        if abs(other.t0_ns - self.end_ns) > 2:
            raise ShapeError(
                f"MotionPlan.then: the next plan starts at {other.t0_ns} ns, this one ends at {self.end_ns} ns"
            )
        breaks = np.concatenate([self.breaks, self.breaks[-1] + other.breaks[1:]])
        coeffs = np.concatenate([self.coeffs, other.coeffs], axis=0)
        end = other.policy_end_ns if other.policy_end_ns is not None else self.policy_end_ns
        g_t, g = _merge_gripper(self, other)
        return MotionPlan(self.joint_names, self.t0_ns, breaks, coeffs, end, g_t, g)

    def time_scaled(self, factor: float) -> MotionPlan:
        """The same path ``factor`` (>= 1: slower) times as long, from the same start: velocity / factor,
        acceleration / factor^2, jerk / factor^3. ``policy_end_ns`` and gripper times scale with it."""
        k = float(factor)
        if not (k > 0 and np.isfinite(k)):
            raise ShapeError(f"MotionPlan.time_scaled: expected a positive factor, got {factor}")
        scale = np.array([1.0, 1.0 / k, 1.0 / k**2, 1.0 / k**3])[None, :, None]

        def stretch(t: int | None) -> int | None:
            return None if t is None else self.t0_ns + round((t - self.t0_ns) * k)

        g_t = None if self.gripper_t_ns is None else self.t0_ns + np.round((self.gripper_t_ns - self.t0_ns) * k)
        return MotionPlan(
            self.joint_names,
            self.t0_ns,
            self.breaks * k,
            self.coeffs * scale,
            stretch(self.policy_end_ns),
            None if g_t is None else g_t.astype(np.int64),
            self.gripper,
        )

    # ------------------------------------------------------------------------------------------------- wire
    def to_bytes(self) -> bytes:
        """A JSON header (joint names, times, shapes) and the raw float64/int64 arrays. No pickle."""
        header = {
            "joints": list(self.joint_names),
            "t0_ns": self.t0_ns,
            "pieces": int(self.coeffs.shape[0]),
            "policy_end_ns": self.policy_end_ns,
            "gripper": 0 if self.gripper is None else int(self.gripper.shape[0]),
        }
        head = json.dumps(header).encode()
        parts = [_MAGIC, struct.pack("<I", len(head)), head, self.breaks.tobytes(), self.coeffs.tobytes()]
        if self.gripper is not None and self.gripper_t_ns is not None:
            parts += [self.gripper_t_ns.tobytes(), self.gripper.tobytes()]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes, max_pieces: int = 100_000) -> MotionPlan:
        """Inverse of :meth:`to_bytes`. Raises ShapeError for anything malformed (sizes are checked, not trusted)."""
        mv = memoryview(data)
        if bytes(mv[:8]) != _MAGIC or len(mv) < 12:
            raise ShapeError("MotionPlan.from_bytes: not a serialized plan (bad magic)")
        (n_head,) = struct.unpack("<I", mv[8:12])
        try:
            header = json.loads(bytes(mv[12 : 12 + n_head]))
            names = tuple(str(x) for x in header["joints"])
            m, k = int(header["pieces"]), int(header["gripper"])
            t0 = int(header["t0_ns"])
            end = header["policy_end_ns"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ShapeError(f"MotionPlan.from_bytes: bad header ({exc})") from exc
        n = len(names)
        if not (0 < m <= max_pieces and 0 <= k <= max_pieces and n > 0):
            raise ShapeError(f"MotionPlan.from_bytes: {m} pieces / {k} gripper points / {n} joints out of range")
        off = 12 + n_head
        sizes = [(m + 1) * 8, m * 4 * n * 8, k * 8, k * 8]
        if len(mv) != off + sum(sizes):
            raise ShapeError(f"MotionPlan.from_bytes: {len(mv)} bytes, expected {off + sum(sizes)}")
        breaks = np.frombuffer(mv[off : off + sizes[0]], dtype=np.float64)
        off += sizes[0]
        coeffs = np.frombuffer(mv[off : off + sizes[1]], dtype=np.float64).reshape(m, 4, n)
        off += sizes[1]
        g_t = g = None
        if k:
            g_t = np.frombuffer(mv[off : off + sizes[2]], dtype=np.int64)
            g = np.frombuffer(mv[off + sizes[2] :], dtype=np.float64)
        return cls(names, t0, breaks, coeffs, None if end is None else int(end), g_t, g)


def _merge_gripper(a: MotionPlan, b: MotionPlan) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Gripper track of ``a`` up to ``b``'s start, then ``b``'s (either may have none)."""
    if b.gripper is None or b.gripper_t_ns is None:
        return a.gripper_t_ns, a.gripper
    if a.gripper is None or a.gripper_t_ns is None:
        return b.gripper_t_ns, b.gripper
    keep = a.gripper_t_ns < b.gripper_t_ns[0]
    return np.concatenate([a.gripper_t_ns[keep], b.gripper_t_ns]), np.concatenate([a.gripper[keep], b.gripper])
