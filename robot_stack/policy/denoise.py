"""The flow-matching sampling loop every served flow-matching model shares: Euler integration from noise to a chunk.

Two manifest forms serve flow-matching action experts: ``flow_matching:`` (:class:`~robot_stack.policy.flow
.FlowMatchingPolicy`: an encoder graph -> context, a step graph on the context) and ``vla:``
(:class:`~robot_stack.policy.vla.VlaPolicy`: a prefix encoder -> keys/values, a denoising step that also takes the
state). They differ only in how one step's velocity is computed from their graphs; everything else is here, once:

* :func:`rtc_guidance`: a batch's real-time-chunking prefixes (one :class:`~robot_stack.policy.rtc.RtcRequest` or
  None per row) -> the guidance target in normalised units and the soft mask (:func:`~robot_stack.policy.rtc
  .guidance_weights`), or a refusal naming the manifest section when the model does not accept them;
* :func:`euler_sample`: ``x <- x + v'(x, tau) / K`` for ``tau = i / K``, ``i < K``, from noise at ``tau = 0`` to the
  chunk at ``tau = 1``, where ``v'`` is the model's velocity, guided toward the prefix
  (:func:`~robot_stack.policy.rtc.guided_velocity`) when there is one; optionally a known start of the chunk is
  written back after every step on the straight path between its noise and its value (exact inpainting);
* :func:`normalise_actions`: raw action units -> the model's normalised units (the inverse of the de-normalisation
  :func:`~robot_stack.policy.runtime.finish_outputs` applies to the sampled chunk).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.rtc import RTC_PREFIX, RtcRequest, guidance_weights, guided_velocity

__all__ = ["RtcGuidance", "euler_sample", "normalise_actions", "rtc_guidance"]

#: One step's velocity: (noisy chunk x (B, H, D) float64 normalised units, tau in [0, 1)) -> (B, H, D).
Velocity = Callable[[np.ndarray, float], np.ndarray]


@dataclass(frozen=True)
class RtcGuidance:
    """The real-time-chunking guidance of one batch (:mod:`robot_stack.policy.rtc`).

    Attributes:
        target: (B, H, D) float64, each row's prefix in normalised action units (zeros where it has none).
        weights: (B, H) float64, the soft mask (1 on the frozen steps, decaying over the rest of the prefix, 0 after
            it and on rows without a prefix).
        beta: the guidance clip (Black et al. use 5).
    """

    target: np.ndarray
    weights: np.ndarray
    beta: float

    def velocity(self, x: np.ndarray, v: np.ndarray, tau: float) -> np.ndarray:
        """The guided velocity at ``x`` (B, H, D) for the model's velocity ``v`` at time ``tau``."""
        return guided_velocity(x, v, tau, self.target, self.weights, self.beta)


def normalise_actions(manifest: PolicyManifest, actions: np.ndarray) -> np.ndarray:
    """``actions`` (..., D) or (..., H, D) in raw units -> float64 in the model's normalised units, with the
    manifest's statistics of its action output (unchanged when it has none)."""
    a = np.asarray(actions, dtype=np.float64)
    stats = manifest.normalization.get(manifest.outputs[0].name)
    if stats is None:
        return a
    if stats.mean.ndim == 2:  # per step and dim, (H, D): a prefix covers the first P steps
        p = a.shape[-2]
        return (a - stats.mean[:p]) / stats.std[:p]
    return (a - stats.mean) / stats.std


def rtc_guidance(
    manifest: PolicyManifest,
    rows: Sequence[RtcRequest | None] | None,
    batch: int,
    *,
    accepts: bool,
    beta: float,
    section: str,
) -> RtcGuidance | None:
    """The guidance for a batch of ``batch`` rows (None when no row has a prefix).

    Args:
        manifest: the model's manifest (horizon, action size, action normalisation).
        rows: per row, its prefix or None (None: no row has one).
        accepts: whether the model accepts prefixes (its manifest's ``<section>.rtc``).
        beta: the guidance clip.
        section: the manifest section that declares ``rtc`` (``flow_matching`` or ``vla``), for the refusal.
    Raises:
        PolicyError: ``rows`` does not have one entry per row, or a prefix for a model that does not accept one.
    """
    entries = list(rows) if rows is not None else [None] * batch
    if len(entries) != batch:
        raise PolicyError(f"model {manifest.model_id}: {len(entries)} RTC entries for a batch of {batch} rows")
    if all(r is None for r in entries):
        return None
    if not accepts:
        raise PolicyError(
            f"model {manifest.model_id} does not accept real-time chunking (its manifest's {section} has no "
            f"rtc: true); send requests without {RTC_PREFIX}"
        )
    h, d = manifest.horizon, manifest.action_dim
    target = np.zeros((batch, h, d))
    weights = np.zeros((batch, h))
    for i, r in enumerate(entries):
        if r is not None:
            p = r.prefix.shape[0]
            target[i, :p] = normalise_actions(manifest, r.prefix)
            weights[i] = guidance_weights(h, p, r.delay_steps)
    return RtcGuidance(target, weights, float(beta))


def euler_sample(
    velocity: Velocity,
    noise: np.ndarray,
    steps: int,
    *,
    guidance: RtcGuidance | None = None,
    known: np.ndarray | None = None,
) -> np.ndarray:
    """Integrate ``velocity`` from ``noise`` (B, H, D) at ``tau = 0`` to the chunk at ``tau = 1`` in ``steps`` Euler
    steps; return it, (B, H, D) float64 in normalised action units.

    Args:
        velocity: the model's velocity at (x, tau) (see :data:`Velocity`).
        noise: the starting sample, normalised units.
        steps: K >= 1.
        guidance: real-time-chunking guidance of every step's velocity (:func:`rtc_guidance`).
        known: (B, n, D) normalised: the chunk's first n steps are known exactly; after every step they are set to
            ``(1 - tau') noise + tau' known`` (``tau'`` the step's end time), so the chunk ends on them.
    """
    k = int(steps)
    if k < 1:
        raise PolicyError(f"integration steps must be >= 1, got {k}")
    x0 = np.asarray(noise, dtype=np.float64)
    x = x0.copy()
    for i in range(k):
        tau = i / k
        v = np.asarray(velocity(x, tau), dtype=np.float64).reshape(x.shape)
        if guidance is not None:
            v = guidance.velocity(x, v, tau)
        x = x + v / k
        if known is not None:
            t_next, n = (i + 1) / k, known.shape[1]
            x[:, :n] = (1.0 - t_next) * x0[:, :n] + t_next * known
    return x
