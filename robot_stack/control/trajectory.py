"""Sampling joint trajectories at arbitrary times, and blending into a newly arrived one without jumps.

* :class:`JointSpline` — piecewise cubic Hermite through the waypoints of a
  :class:`~robot_stack.types.JointTrajectory`. Interior tangents are the time-weighted three-point derivative
  (non-uniform Catmull-Rom; exact for quadratics), end tangents are one-sided differences (or zero). Position and
  velocity are continuous at every waypoint (C1). Outside ``[t_first, t_last]`` the first/last point is held with
  zero velocity.
* :class:`TrajectoryFollower` — the active spline plus a quintic correction that starts at the difference
  between the current commanded state (position, velocity, acceleration) and the new spline at the switch time,
  and fades to zero (with zero velocity and acceleration) over ``blend_s``. Position and velocity are therefore
  continuous at the switch, and the correction vanishes smoothly.

Times are monotonic ns (int); positions rad, velocities rad/s, accelerations rad/s^2; arrays (n,) float64.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError, ShapeError
from robot_stack.types import JointTrajectory

__all__ = ["JointSample", "JointSpline", "TrajectoryFollower", "quintic_blend"]


@dataclass(frozen=True)
class JointSample:
    """The trajectory at one instant.

    Attributes:
        q: (n,) float64 positions, rad.
        dq: (n,) float64 velocities, rad/s.
        ddq: (n,) float64 accelerations, rad/s^2 (piecewise; may jump at waypoints).
        gripper: opening in [0, 1], or None if the trajectory carries no gripper.
    """

    q: np.ndarray
    dq: np.ndarray
    ddq: np.ndarray
    gripper: float | None = None


class JointSpline:
    """C1 piecewise-cubic interpolation of a :class:`JointTrajectory`.

    Args:
        traj: the waypoints.
        zero_start_velocity: use zero (instead of the one-sided difference) as the first tangent.
        zero_end_velocity: use zero as the last tangent (the arm comes to rest at the last point).
    """

    def __init__(
        self, traj: JointTrajectory, zero_start_velocity: bool = False, zero_end_velocity: bool = False
    ) -> None:
        self.traj = traj
        t = (traj.t_ns - traj.t_ns[0]).astype(np.float64) * 1e-9  # seconds from the first waypoint
        p = np.asarray(traj.positions, dtype=np.float64)
        self.t0_ns = int(traj.t_ns[0])
        self.t_end_ns = int(traj.t_ns[-1])
        self._t = t
        self._t_list: list[float] = t.tolist()
        self._n_seg = len(t) - 1
        self._p = p
        n = p.shape[1]
        self._gripper = None if traj.gripper is None else np.asarray(traj.gripper, dtype=np.float64)
        if len(t) == 1:
            self._c = np.zeros((0, 4, n))
            return
        h = np.diff(t)  # (N-1,)
        d = np.diff(p, axis=0) / h[:, None]  # secant slopes (N-1, n)
        m = np.empty_like(p)
        m[1:-1] = (h[1:, None] * d[:-1] + h[:-1, None] * d[1:]) / (h[:-1, None] + h[1:, None])
        m[0] = 0.0 if zero_start_velocity else d[0]
        m[-1] = 0.0 if zero_end_velocity else d[-1]
        hh = h[:, None]
        c = np.empty((len(h), 4, n))
        c[:, 0] = p[:-1]
        c[:, 1] = m[:-1]
        c[:, 2] = (3.0 * d - 2.0 * m[:-1] - m[1:]) / hh
        c[:, 3] = (m[:-1] + m[1:] - 2.0 * d) / (hh * hh)
        self._c = c

    @property
    def n(self) -> int:
        """Number of joints."""
        return int(self._p.shape[1])

    def covers(self, t_ns: int) -> bool:
        """``t_first <= t_ns <= t_last``."""
        return self.t0_ns <= t_ns <= self.t_end_ns

    def sample(self, t_ns: int) -> JointSample:
        """Position/velocity/acceleration (and gripper, linearly interpolated) at monotonic time ``t_ns``."""
        gripper = None if self._gripper is None else self.gripper_at(t_ns)
        if t_ns <= self.t0_ns or self._n_seg == 0:
            return JointSample(self._p[0].copy(), np.zeros(self.n), np.zeros(self.n), gripper)
        if t_ns >= self.t_end_ns:
            return JointSample(self._p[-1].copy(), np.zeros(self.n), np.zeros(self.n), gripper)
        ts = (t_ns - self.t0_ns) * 1e-9
        i = min(bisect.bisect_right(self._t_list, ts) - 1, self._n_seg - 1)
        s = ts - self._t_list[i]
        c0, c1, c2, c3 = self._c[i]
        q = c0 + s * (c1 + s * (c2 + s * c3))
        dq = c1 + s * (2.0 * c2 + 3.0 * s * c3)
        ddq = 2.0 * c2 + 6.0 * s * c3
        return JointSample(q, dq, ddq, gripper)

    def gripper_at(self, t_ns: int) -> float | None:
        """Gripper opening at ``t_ns`` (linear between waypoints, held outside), or None."""
        if self._gripper is None:
            return None
        ts = (t_ns - self.t0_ns) * 1e-9
        return float(np.interp(ts, self._t, self._gripper))


def quintic_blend(
    e0: np.ndarray, de0: np.ndarray, dde0: np.ndarray, duration_s: float, t_s: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Quintic correction ``e(t)`` with ``e(0)=e0, e'(0)=de0, e''(0)=dde0`` and zero value, velocity and
    acceleration at ``t = duration_s``; zero after. Returns ``(e, de, dde)`` at ``t_s`` seconds after the switch."""
    if t_s >= duration_s:
        z = np.zeros_like(e0)
        return z, z.copy(), z.copy()
    T = duration_s
    tau = max(t_s, 0.0) / T
    a0, a1, a2, a3, a4, a5 = _quintic_coefficients(e0, de0, dde0, T)
    e = a0 + tau * (a1 + tau * (a2 + tau * (a3 + tau * (a4 + tau * a5))))
    de = (a1 + tau * (2 * a2 + tau * (3 * a3 + tau * (4 * a4 + tau * 5 * a5)))) / T
    dde = (2 * a2 + tau * (6 * a3 + tau * (12 * a4 + tau * 20 * a5))) / (T * T)
    return e, de, dde


class TrajectoryFollower:
    """The active trajectory, entered by a smooth blend from the state that was being commanded.

    The window is fixed on purpose: when trajectories arrive faster than ``blend_s``, each switch re-bases the
    correction from the current blended state, and with a fixed window that chained map contracts (spectral
    radius < 1 for any arrival interval), whereas windows that grow with the mismatch can make it ring.

    Args:
        blend_s: duration of the blend window, seconds (0 = switch immediately; jumps are then left to the
            safety filter).
    """

    def __init__(self, blend_s: float = 0.1) -> None:
        if not (blend_s >= 0 and np.isfinite(blend_s)):
            raise ConfigError(f"TrajectoryFollower.blend_s: expected seconds >= 0, got {blend_s}")
        self.blend_s = float(blend_s)
        self.spline: JointSpline | None = None
        self._switch_ns = 0
        self._e0: np.ndarray | None = None
        self._de0: np.ndarray | None = None
        self._dde0: np.ndarray | None = None
        self._coef = np.zeros((6, 0))

    def clear(self) -> None:
        """Forget the active trajectory."""
        self.spline = None
        self._e0 = None

    def switch(
        self,
        traj: JointTrajectory | JointSpline,
        t_ns: int,
        q: np.ndarray | None = None,
        dq: np.ndarray | None = None,
        ddq: np.ndarray | None = None,
    ) -> None:
        """Make ``traj`` active from ``t_ns``, blending from the commanded state ``(q, dq, ddq)`` ((n,) each,
        rad, rad/s, rad/s^2; ``dq``/``ddq`` default to zero). Without ``q`` the switch is immediate."""
        spline = traj if isinstance(traj, JointSpline) else JointSpline(traj)
        self.spline = spline
        self._switch_ns = int(t_ns)
        if q is None or self.blend_s == 0.0:
            self._e0 = None
            return
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (spline.n,):
            raise ShapeError(f"TrajectoryFollower.switch: q has shape {q.shape}, trajectory has {spline.n} joints")
        s = spline.sample(t_ns)
        zero = np.zeros(spline.n)
        self._e0 = q - s.q
        self._de0 = (zero if dq is None else np.asarray(dq, dtype=np.float64)) - s.dq
        self._dde0 = (zero if ddq is None else np.asarray(ddq, dtype=np.float64)) - s.ddq
        self._coef = _quintic_coefficients(self._e0, self._de0, self._dde0, self.blend_s)

    def blending(self, t_ns: int) -> bool:
        """Whether the blend correction is still active at ``t_ns``."""
        return self._e0 is not None and (t_ns - self._switch_ns) * 1e-9 < self.blend_s

    def sample(self, t_ns: int) -> JointSample:
        """The blended command at ``t_ns``. Raises ShapeError if no trajectory is active."""
        if self.spline is None:
            raise ShapeError("TrajectoryFollower.sample: no active trajectory; call switch() first")
        s = self.spline.sample(t_ns)
        if self._e0 is None or not self.blending(t_ns):
            return s
        T = self.blend_s
        tau = (t_ns - self._switch_ns) * 1e-9 / T
        a0, a1, a2, a3, a4, a5 = self._coef
        e = a0 + tau * (a1 + tau * (a2 + tau * (a3 + tau * (a4 + tau * a5))))
        de = (a1 + tau * (2.0 * a2 + tau * (3.0 * a3 + tau * (4.0 * a4 + tau * 5.0 * a5)))) / T
        dde = (2.0 * a2 + tau * (6.0 * a3 + tau * (12.0 * a4 + tau * 20.0 * a5))) / (T * T)
        return JointSample(s.q + e, s.dq + de, s.ddq + dde, s.gripper)


def _quintic_coefficients(e0: np.ndarray, de0: np.ndarray, dde0: np.ndarray, duration_s: float) -> np.ndarray:
    """(6, n) coefficients a0..a5 in normalised time tau = t / duration of the blend (see :func:`quintic_blend`)."""
    T = duration_s
    v0 = de0 * T
    acc0 = dde0 * T * T
    return np.stack(
        [
            e0,
            v0,
            0.5 * acc0,
            -10.0 * e0 - 6.0 * v0 - 1.5 * acc0,
            15.0 * e0 + 8.0 * v0 + 1.5 * acc0,
            -6.0 * e0 - 3.0 * v0 - 0.5 * acc0,
        ]
    )
