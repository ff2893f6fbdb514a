"""Serving a vision-language-action model: prefix encoder once, K flow-matching denoising steps on its cache.

A VLA manifest (``vla:`` section, :class:`~robot_stack.policy.manifest.VlaSpec`) has two graphs, each an ordinary
single-graph manifest (:meth:`~robot_stack.policy.manifest.PolicyManifest.vla_prefix_manifest`,
:meth:`~robot_stack.policy.manifest.PolicyManifest.vla_denoise_manifest`) that any engine serves behind the
accuracy gate (:func:`robot_stack.policy.backends.load_backend`): ONNX Runtime, TensorRT, torch.

:class:`VlaPolicy` composes them per request:

1. **prefix** (once): camera images, depth and calibration, the tokenized instruction -> the keys and values of
   every vision and language token for every layer of the action expert (``prefix_kv``) and their mask;
2. **denoise** (K times, on the same cache): Euler integration of the learned velocity field from Gaussian noise
   (``t = 0``) to the action chunk (``t = 1``): ``x <- x + v(x, t, state, prefix) / K``;
3. the chunk is de-normalised with the manifest's ``actions`` statistics and checked like any model output.

``prefix_cache=False`` recomputes the prefix before every step (what an implementation without a cache does; the
benchmark's baseline). The integration loop is the one every flow-matching model shares
(:func:`robot_stack.policy.denoise.euler_sample`); this module only says how a step's velocity comes from the two
graphs.

**Real-time chunking** (``vla: {rtc: true}``; :mod:`robot_stack.policy.rtc`): a request may carry the prefix of the
plan the robot is executing (``rtc/prefix``, ``rtc/delay_steps``); every step's velocity is guided toward it with
the soft mask of Black et al. (2025), exactly as for a ``flow_matching:`` model (the same
:func:`~robot_stack.policy.denoise.rtc_guidance`). A VLA without the flag refuses a prefix.
**Exact inpainting** (:class:`KnownPrefix`, :meth:`VlaPolicy.sample` only): a known start of the chunk is written
into the noisy chunk after every step, on the straight path between its noise and its value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.denoise import euler_sample, normalise_actions, rtc_guidance
from robot_stack.policy.manifest import VLA_NOISY_INPUT, VLA_TIME_INPUT, VLA_VELOCITY_OUTPUT, PolicyManifest
from robot_stack.policy.rtc import RtcRequest
from robot_stack.policy.runtime import finish_outputs, validate_arrays

__all__ = ["KnownPrefix", "VlaPolicy", "VlaTiming", "load_vla"]

log = logging.getLogger("robot_stack.policy.vla")


@dataclass(frozen=True)
class KnownPrefix:
    """The first ``length`` actions of the chunk are known (raw units, as the model outputs them).

    Attributes:
        actions: (B, >= length, action_dim) float32; only the first ``length`` steps are used.
        length: number of known steps (0 = none).
    """

    actions: np.ndarray
    length: int


@dataclass(frozen=True)
class VlaTiming:
    """Where the time of the last chunk went (ms): the prefix encoder(s), the denoising steps, in total."""

    prefix_ms: float
    denoise_ms: float
    total_ms: float
    steps: int


class VlaPolicy:
    """The two backends of a VLA behind the single-model contract (``run``, ``validate_inputs``, ``warmup``,
    ``close``, ``manifest``, ``provider``).

    Args:
        manifest: the VLA manifest.
        prefix, denoise: backends of :meth:`PolicyManifest.vla_prefix_manifest` and
            :meth:`PolicyManifest.vla_denoise_manifest`.
        steps: integration steps K (default the manifest's ``vla.steps``).
        prefix_cache: compute the prefix once per request (False: before every step).
        seed: seed of the noise generator (the chunk for a given observation is reproducible per call sequence).

    Attributes:
        accepts_rtc: whether requests may carry an RTC prefix (the manifest's ``vla.rtc``).
        runs: requests answered by :meth:`run`; rtc_runs: of those, with a prefix.
    """

    def __init__(
        self,
        manifest: PolicyManifest,
        prefix: Any,
        denoise: Any,
        *,
        steps: int | None = None,
        prefix_cache: bool = True,
        seed: int = 0,
    ) -> None:
        if manifest.vla is None:
            raise ConfigError(f"manifest {manifest.source or manifest.model_id} is not a VLA (no vla: section)")
        self.manifest = manifest
        self.prefix = prefix
        self.denoise = denoise
        self.steps = int(steps or manifest.vla.steps)
        if self.steps < 1:
            raise ConfigError(f"VLA integration steps must be >= 1, got {self.steps}")
        self.prefix_cache = prefix_cache
        self._rng = np.random.default_rng(seed)
        vla = manifest.vla
        self._prefix_specs = vla.prefix_inputs
        self._prefix_names = [t.name for t in vla.prefix_outputs]
        self._model_to_denoise = [
            t.name
            for t in vla.denoise_inputs
            if t.name not in (VLA_NOISY_INPUT, VLA_TIME_INPUT) and t.name not in set(self._prefix_names)
        ]
        self._chunk_shape = tuple(manifest.outputs[0].shape[1:])
        self.accepts_rtc = bool(vla.rtc)
        self.runs = 0
        self.rtc_runs = 0
        self.last_timing: VlaTiming | None = None

    # --------------------------------------------------------------------------------------------- contract
    @property
    def provider(self) -> str:
        """``prefix-provider`` (+ ``/denoise-provider`` when they differ)."""
        a, b = str(self.prefix.provider), str(self.denoise.provider)
        return a if a == b else f"{a}/{b}"

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        validate_arrays(self.manifest.inputs, arrays, self.manifest.model_id)

    def run(
        self, arrays: Mapping[str, np.ndarray], rtc: Sequence[RtcRequest | None] | None = None
    ) -> dict[str, np.ndarray]:
        """The action chunk for a batch of observations (with the instruction ids filled in): ``{"actions": (B,
        horizon, dim)}``, de-normalised, finite. ``rtc``: per row, its real-time-chunking prefix or None.

        Raises:
            PolicyError: bad inputs, a prefix for a model without ``vla.rtc``, inference failure, non-finite output.
        """
        self.validate_inputs(arrays)
        actions = self.sample(arrays, rtc=rtc)
        self.runs += 1
        self.rtc_runs += int(rtc is not None and any(r is not None for r in rtc))
        return finish_outputs(self.manifest, [actions])

    def warmup(self, runs: int = 2) -> None:
        self.prefix.warmup(runs)
        self.denoise.warmup(runs)

    def close(self) -> None:
        for backend in (self.prefix, self.denoise):
            try:
                backend.close()
            except Exception as exc:  # pragma: no cover - closing must reach both
                log.warning("closing a VLA backend failed: %s", exc)

    # --------------------------------------------------------------------------------------------- stages
    def encode_prefix(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the prefix encoder on the model inputs it takes (request dtypes widened to the graph's)."""
        feed = {}
        for spec in self._prefix_specs:
            value = np.asarray(arrays[spec.name])
            feed[spec.name] = value if value.dtype.name == spec.dtype else value.astype(spec.dtype)
        return self.prefix.run(feed)

    def velocity(
        self, prefix: Mapping[str, np.ndarray], arrays: Mapping[str, np.ndarray], x: np.ndarray, t: float
    ) -> np.ndarray:
        """One denoising step's velocity (normalised action units per unit time) at noisy chunk ``x`` (B, horizon,
        dim) and time ``t`` in [0, 1]."""
        feed = {name: prefix[name] for name in self._prefix_names}
        feed.update({name: np.asarray(arrays[name]) for name in self._model_to_denoise})
        feed[VLA_NOISY_INPUT] = np.ascontiguousarray(x, dtype=np.float32)
        feed[VLA_TIME_INPUT] = np.full((x.shape[0], 1), t, np.float32)
        return self.denoise.run(feed)[VLA_VELOCITY_OUTPUT]

    def sample(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        steps: int | None = None,
        noise: np.ndarray | None = None,
        known: KnownPrefix | None = None,
        rtc: Sequence[RtcRequest | None] | None = None,
    ) -> np.ndarray:
        """(B, horizon, dim) float32 *normalised* chunk by Euler integration from ``noise`` (default: fresh
        Gaussian noise) in ``steps`` steps (:func:`~robot_stack.policy.denoise.euler_sample`), guided toward each
        row's ``rtc`` prefix (raw units) and inpainting ``known`` (raw units) after every step."""
        k = int(steps or self.steps)
        if k < 1:
            raise PolicyError(f"integration steps must be >= 1, got {k}")
        rows = int(np.asarray(arrays[self._prefix_specs[0].name]).shape[0])
        shape = (rows, *self._chunk_shape)
        x0 = self._rng.standard_normal(shape).astype(np.float32) if noise is None else np.asarray(noise, np.float32)
        if x0.shape != shape:
            raise PolicyError(f"noise of shape {x0.shape}; the chunk is {shape}")
        target = self._known_normalised(known, shape)
        vla = self.manifest.vla
        assert vla is not None
        guidance = rtc_guidance(
            self.manifest, rtc, rows, accepts=self.accepts_rtc, beta=vla.guidance_beta, section=vla.section
        )
        t0 = time.perf_counter()
        prefix = self.encode_prefix(arrays)
        t_prefix = time.perf_counter() - t0

        def velocity(x: np.ndarray, tau: float) -> np.ndarray:
            nonlocal prefix, t_prefix
            if tau > 0.0 and not self.prefix_cache:  # without the cache: the prefix again before every later step
                t1 = time.perf_counter()
                prefix = self.encode_prefix(arrays)
                t_prefix += time.perf_counter() - t1
            return self.velocity(prefix, arrays, x, tau)

        x = euler_sample(velocity, x0, k, guidance=guidance, known=target)
        total = time.perf_counter() - t0
        self.last_timing = VlaTiming(1e3 * t_prefix, 1e3 * (total - t_prefix), 1e3 * total, k)
        return x.astype(np.float32)

    def _known_normalised(self, known: KnownPrefix | None, shape: tuple[int, ...]) -> np.ndarray | None:
        if known is None or known.length == 0:
            return None
        a = np.asarray(known.actions, np.float32)
        if a.ndim != 3 or a.shape[0] != shape[0] or a.shape[2] != shape[2] or not 0 < known.length <= shape[1]:
            raise PolicyError(f"known prefix of shape {a.shape} / length {known.length} does not fit chunk {shape}")
        return normalise_actions(self.manifest, a[:, : known.length])


def load_vla(
    manifest: PolicyManifest,
    engine: str = "ort",
    *,
    steps: int | None = None,
    prefix_cache: bool = True,
    **options: Any,
) -> tuple[VlaPolicy | None, str]:
    """Load both graphs of a VLA on ``engine`` (each behind the accuracy gate, each falling back to ONNX Runtime on
    its own: :func:`robot_stack.policy.backends.load_sampler`, ``options`` those of
    :func:`~robot_stack.policy.backends.load_backend`); return the policy and the fallback reasons ("" when both
    run on ``engine``). With ``fallback=False`` the policy is None when either graph could not be served on
    ``engine``."""
    from robot_stack.policy.backends import load_sampler

    if manifest.vla is None:
        raise ConfigError(f"manifest {manifest.source or manifest.model_id} is not a VLA (no vla: section)")
    choice = load_sampler(manifest, engine, steps=steps, prefix_cache=prefix_cache, **options)
    return choice.policy, choice.reason
