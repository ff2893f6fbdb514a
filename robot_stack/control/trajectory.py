"""Sampling joint trajectories (waypoints) at arbitrary times.

:class:`JointSpline` — piecewise cubic Hermite through the waypoints of a :class:`~robot_stack.types.JointTrajectory`.
Interior tangents are the time-weighted three-point derivative (non-uniform Catmull-Rom; exact for quadratics), end
tangents are one-sided differences (or zero). Position and velocity are continuous at every waypoint (C1). Outside
``[t_first, t_last]`` the spline continues along its end tangent (position extrapolated linearly, velocity the
tangent, acceleration zero), so a sample taken before the first waypoint is consistent with the motion that
follows (it used to hold the first point with zero velocity, and a late pick-up blended that velocity jump out).

The executor does not follow waypoints: it follows :class:`~robot_stack.control.plan.MotionPlan` s built by
:mod:`robot_stack.control.motion`. This sampler remains for reading recorded or decoded waypoints.

Times are monotonic ns (int); positions rad, velocities rad/s, accelerations rad/s^2; arrays (n,) float64.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from robot_stack.types import JointTrajectory

__all__ = ["JointSample", "JointSpline"]


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
        zero = np.zeros(self.n)
        if self._n_seg == 0:
            return JointSample(self._p[0].copy(), zero, zero.copy(), gripper)
        if t_ns <= self.t0_ns:  # along the first tangent
            m0 = self._c[0, 1]
            return JointSample(self._p[0] + m0 * ((t_ns - self.t0_ns) * 1e-9), m0.copy(), zero, gripper)
        if t_ns >= self.t_end_ns:  # along the last tangent
            h = self._t_list[-1] - self._t_list[-2]
            c0, c1, c2, c3 = self._c[-1]
            m1 = c1 + h * (2.0 * c2 + 3.0 * h * c3)
            return JointSample(self._p[-1] + m1 * ((t_ns - self.t_end_ns) * 1e-9), m1, zero, gripper)
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
