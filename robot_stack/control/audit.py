"""Measuring a stream of joint set-points against the limits, the way the safety filter judges it.

Velocity, acceleration and jerk of set-points ``q_k`` sent at times ``t_k`` are the scaled divided differences

    v_k = q[t_{k-1}, t_k],  a_k = 2 q[t_{k-2}, t_{k-1}, t_k],  j_k = 6 q[t_{k-3}, ..., t_k]

(uniform ticks: the usual backward differences over the period). For samples of a C2 trajectory each one is an
average of the true derivative over the samples' span, so a plan within the limits gives ratios <= 1 however
irregular the ticks are, and a tick skipped and then differenced as if it were one period shows up as what it is.

:class:`DerivativeMonitor` keeps the running peaks of a live stream (the executor feeds it its pre-filter plan
samples); :func:`stream_ratios` does the same for a recorded stream in one call (tests, audits).
"""

from __future__ import annotations

import numpy as np

from robot_stack.robots.base import JointLimits

__all__ = ["DerivativeMonitor", "divided_differences", "stream_ratios"]


def divided_differences(t_ns: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Velocity (N-1, n), acceleration (N-2, n) and jerk (N-3, n) of samples ``q`` ((N, n) rad) at ``t_ns``
    ((N,) monotonic ns, strictly increasing), as scaled divided differences (see the module docstring)."""
    t = (np.asarray(t_ns, dtype=np.int64) - int(t_ns[0])) * 1e-9
    q = np.asarray(q, dtype=np.float64)
    v = np.diff(q, axis=0) / np.diff(t)[:, None]
    a = 2.0 * np.diff(v, axis=0) / (t[2:] - t[:-2])[:, None]
    j = 3.0 * np.diff(a, axis=0) / (t[3:] - t[:-3])[:, None]
    return v, a, j


def stream_ratios(t_ns: np.ndarray, q: np.ndarray, limits: JointLimits) -> dict[str, float]:
    """Peak |velocity|, |acceleration|, |jerk| of a set-point stream as a ratio of ``limits`` (worst joint)."""
    v, a, j = divided_differences(t_ns, q)
    out = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}
    if len(v):
        out["velocity"] = float(np.max(np.abs(v) / limits.velocity))
    if len(a):
        out["acceleration"] = float(np.max(np.abs(a) / limits.acceleration))
    if len(j):
        out["jerk"] = float(np.max(np.abs(j) / limits.jerk))
    return out


class DerivativeMonitor:
    """Running peak ratios of a live set-point stream (see :func:`stream_ratios`); a few µs per sample.

    Args:
        limits: the robot's joint limits (ratios are against these, not against any planning fraction).
    """

    def __init__(self, limits: JointLimits) -> None:
        self._inv_v = 1.0 / np.asarray(limits.velocity)
        self._inv_a = 1.0 / np.asarray(limits.acceleration)
        self._inv_j = 1.0 / np.asarray(limits.jerk)
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the next samples start a new one) and the peaks."""
        self._t: list[float] = []
        self._q: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._a: np.ndarray | None = None
        self._t_prev = 0
        self.samples = 0
        self.peak = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}
        self.peak_t_ns = {"velocity": 0, "acceleration": 0, "jerk": 0}

    def restart(self) -> None:
        """Start a new stream (e.g. after the robot was re-seeded) but keep the peaks."""
        self._t, self._q, self._v, self._a = [], None, None, None

    def _note(self, kind: str, ratio: float, t_ns: int) -> None:
        if ratio > self.peak[kind]:
            self.peak[kind] = ratio
            self.peak_t_ns[kind] = t_ns

    def update(self, t_ns: int, q: np.ndarray) -> None:
        """Add the set-point ``q`` ((n,) rad) sent at ``t_ns`` (after the previous one)."""
        ts = t_ns * 1e-9
        times = self._t
        times.append(ts)
        if len(times) > 4:
            del times[0]
        self.samples += 1
        if self._q is None:
            self._q = np.array(q, dtype=np.float64)
            return
        v = (q - self._q) / (times[-1] - times[-2])
        self._q = np.array(q, dtype=np.float64)
        self._note("velocity", float(np.max(np.abs(v) * self._inv_v)), t_ns)
        if self._v is not None:
            a = 2.0 * (v - self._v) / (times[-1] - times[-3])
            self._note("acceleration", float(np.max(np.abs(a) * self._inv_a)), t_ns)
            if self._a is not None:
                j = 3.0 * (a - self._a) / (times[-1] - times[-4])
                self._note("jerk", float(np.max(np.abs(j) * self._inv_j)), t_ns)
            self._a = a
        self._v = v
