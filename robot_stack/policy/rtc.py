"""Real-time chunking (RTC) for flow-matching policies: the request fields and the guided denoising step.

Black et al. 2025, "Real-Time Execution of Action Chunking Flow Policies": while the server infers the next chunk,
the robot keeps executing the current one. The first ``d`` steps of the next chunk (``d`` = the inference delay in
steps) will therefore be *whatever the current plan does* then, and the chunk after them must continue it. The
robot sends that part of its executing plan with the request, and the server's denoising *inpaints* it: at every
integration step the velocity is guided toward a sample whose first steps equal the prefix.

**On the wire** (an ``infer`` request to a model whose manifest declares ``flow_matching: {rtc: true}`` or
``vla: {rtc: true}``; its metadata says so in the same place, :func:`advertises_rtc`):

* array ``rtc/prefix``: ``(P, D)`` float32 (or ``(1, P, D)``), ``1 <= P <= horizon``: the executing plan at the new
  chunk's step times ``t_obs + k * dt``, ``k < P``, in the model's action space and units (the same as the
  ``actions`` output, before normalisation) -- as far as the plan still carries the policy's steps;
* meta ``rtc/delay_steps``: int ``d``, ``0 <= d <= P``: the steps that will have executed before the chunk arrives.

Both or neither; a request without them is denoised freely. The server checks them before anything runs (a
``policy_error`` names what was wrong).

**Guidance** (:func:`guidance_weights`, :func:`guided_velocity`): the soft mask of the paper -- weight 1 on the
``d`` frozen steps, decaying exponentially over the rest of the prefix (steps the old plan still covers, which
the new chunk may correct), 0 beyond it -- and the guided velocity

    v' = v + min(beta, (1 - tau) / (tau * r^2)) * W * (Y - A1_hat),   A1_hat = A_tau + (1 - tau) * v,
    r^2 = (1 - tau)^2 / (tau^2 + (1 - tau)^2),

with ``tau = 0`` noise and ``tau = 1`` data. The paper multiplies ``W (Y - A1_hat)`` by the Jacobian of ``A1_hat``
with respect to ``A_tau`` (a vector-Jacobian product through the model); an ONNX step graph has no autodiff, so
that Jacobian is taken as the identity (``A1_hat`` moves one for one with ``A_tau``, which holds where the model's
velocity varies slowly with its input). The tests measure how closely the frozen steps are met.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.errors import PolicyError

__all__ = [
    "RTC_DELAY_STEPS",
    "RTC_PREFIX",
    "RTC_SECTIONS",
    "RtcRequest",
    "advertises_rtc",
    "guidance_weights",
    "guided_velocity",
    "rtc_request",
]

#: The request array carrying the executing plan's prefix, (P, D) float32, action units.
RTC_PREFIX = "rtc/prefix"
#: The request meta key carrying the number of frozen steps ``d``.
RTC_DELAY_STEPS = "rtc/delay_steps"
#: The manifest sections (and metadata keys) of the flow-matching forms that may declare ``rtc: true``.
RTC_SECTIONS = ("flow_matching", "vla")


def advertises_rtc(metadata: Mapping[str, Any]) -> bool:
    """Whether a served model's metadata (the manifest summary) says it accepts real-time chunking: its
    ``flow_matching`` or ``vla`` section has ``rtc: true``."""
    for section in RTC_SECTIONS:
        spec = metadata.get(section)
        if isinstance(spec, Mapping) and spec.get("rtc") is True:
            return True
    return False


@dataclass(frozen=True)
class RtcRequest:
    """One request's real-time-chunking input, checked.

    Attributes:
        prefix: (P, D) float32, the executing plan at the new chunk's first P step times, action units.
        delay_steps: d, the steps that execute before the chunk arrives (0 <= d <= P).
    """

    prefix: np.ndarray
    delay_steps: int


def rtc_request(
    arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any], horizon: int, action_dim: int, model_id: str
) -> RtcRequest | None:
    """The RTC part of a request (None when it has none). Raises :class:`PolicyError` for a malformed one: a
    prefix without ``rtc/delay_steps`` or the other way round, wrong dtype or shape, non-finite values, or ``d``
    outside ``[0, P]``."""
    has_prefix, has_delay = RTC_PREFIX in arrays, RTC_DELAY_STEPS in meta
    if not has_prefix and not has_delay:
        return None
    if has_prefix != has_delay:
        raise PolicyError(
            f"model {model_id}: real-time chunking needs both the array {RTC_PREFIX!r} and the meta key "
            f"{RTC_DELAY_STEPS!r}; got only {RTC_PREFIX if has_prefix else RTC_DELAY_STEPS!r}"
        )
    prefix = np.asarray(arrays[RTC_PREFIX])
    if prefix.ndim == 3 and prefix.shape[0] == 1:
        prefix = prefix[0]
    if prefix.dtype != np.float32 or prefix.ndim != 2 or not 1 <= prefix.shape[0] <= horizon:
        raise PolicyError(
            f"model {model_id}: {RTC_PREFIX} must be float32 (P, {action_dim}) with 1 <= P <= {horizon}, got "
            f"{prefix.dtype} {prefix.shape}"
        )
    if prefix.shape[1] != action_dim:
        raise PolicyError(f"model {model_id}: {RTC_PREFIX} has {prefix.shape[1]} action dims, the model {action_dim}")
    if not np.all(np.isfinite(prefix)):
        raise PolicyError(f"model {model_id}: {RTC_PREFIX} holds NaN/Inf")
    delay = meta[RTC_DELAY_STEPS]
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= prefix.shape[0]:
        raise PolicyError(
            f"model {model_id}: {RTC_DELAY_STEPS} must be an int in [0, {prefix.shape[0]}] (the prefix's length), "
            f"got {delay!r}"
        )
    return RtcRequest(prefix, int(delay))


def guidance_weights(horizon: int, prefix_len: int, delay_steps: int) -> np.ndarray:
    """(horizon,) float64 soft mask: 1 on the first ``delay_steps``, then ``c (e^c - 1) / (e - 1)`` with
    ``c = (P - i) / (P - d + 1)`` over the rest of the prefix (P = ``prefix_len``), 0 after it."""
    p, d = int(prefix_len), int(delay_steps)
    w = np.zeros(horizon)
    w[: min(d, horizon)] = 1.0
    i = np.arange(d, min(p, horizon))
    if len(i):
        c = (p - i) / (p - d + 1.0)
        w[i] = c * np.expm1(c) / (math.e - 1.0)
    return w


def guided_velocity(
    x: np.ndarray, v: np.ndarray, tau: float, target: np.ndarray, weights: np.ndarray, beta: float
) -> np.ndarray:
    """The guided velocity (module docstring) for a batch: ``x``, ``v``, ``target`` (B, H, D) in the model's
    (normalised) action units, ``weights`` (B, H), ``tau`` in [0, 1), ``beta`` the guidance clip."""
    x1 = x + (1.0 - tau) * v
    one = 1.0 - tau
    r2 = one * one / (tau * tau + one * one)
    gain = beta if tau <= 0.0 else min(beta, one / (tau * r2))
    return v + gain * weights[:, :, None] * (target - x1)
