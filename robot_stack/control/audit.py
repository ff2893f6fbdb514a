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
    """Running peak ratios of a live set-point stream (see :func:`stream_ratios`); about a microsecond per sample
    (samples are buffered and differenced in vectorised batches; :attr:`peak` flushes the buffer).

    Args:
        limits: the robot's joint limits (ratios are against these, not against any planning fraction).
        batch: samples buffered between vectorised updates.
    """

    def __init__(self, limits: JointLimits, batch: int = 64) -> None:
        self._limits = limits
        self._n = int(np.asarray(limits.velocity).shape[0])
        self._batch = int(batch)
        self._t = np.zeros(batch + 3, dtype=np.int64)
        self._q = np.zeros((batch + 3, self._n))
        self.reset()

    def reset(self) -> None:
        """Forget the stream (the next samples start a new one) and the peaks."""
        self._k = 0  # samples in the buffer (the first ``_carry`` of them are the previous batch's tail)
        self._carry = 0
        self.samples = 0
        self._peak = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}
        self.peak_t_ns = {"velocity": 0, "acceleration": 0, "jerk": 0}

    def restart(self) -> None:
        """Start a new stream (e.g. after the robot was re-seeded) but keep the peaks."""
        self._flush()
        self._k = self._carry = 0

    def update(self, t_ns: int, q: np.ndarray) -> None:
        """Add the set-point ``q`` ((n,) rad) sent at ``t_ns`` (after the previous one)."""
        k = self._k
        self._t[k] = t_ns
        self._q[k] = q
        self._k = k + 1
        self.samples += 1
        if self._k == self._t.shape[0]:
            self._flush()

    @property
    def peak(self) -> dict[str, float]:
        """Peak ratio so far per kind (``velocity``, ``acceleration``, ``jerk``)."""
        self._flush()
        return dict(self._peak)

    def _flush(self) -> None:
        k = self._k
        if k - self._carry <= 0 or k < 2:
            return
        t, q = self._t[:k], self._q[:k]
        v, a, j = divided_differences(t, q)
        lim = self._limits
        # only differences that end on a new sample (the carried ones were judged in the previous batch)
        for kind, d, limit, order in (
            ("velocity", v, lim.velocity, 1),
            ("acceleration", a, lim.acceleration, 2),
            ("jerk", j, lim.jerk, 3),
        ):
            first = max(self._carry - order, 0)
            if len(d) > first:
                r = np.max(np.abs(d[first:]) / limit, axis=1)
                i = int(np.argmax(r))
                if r[i] > self._peak[kind]:
                    self._peak[kind] = float(r[i])
                    self.peak_t_ns[kind] = int(t[first + i + order])
        keep = min(k, 3)  # the last three samples start the next batch's differences
        self._t[:keep] = self._t[k - keep : k]
        self._q[:keep] = self._q[k - keep : k]
        self._k = self._carry = keep
