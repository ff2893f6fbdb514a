"""The flow-matching denoising loop: a prefix encoder run once, a denoising step run K times, with real-time chunking.

A manifest with ``flow_matching:`` (:class:`~robot_stack.policy.manifest.FlowMatchingSpec`) describes two graphs:
the prefix encoder (the manifest's ``onnx``: the model's inputs -> context tensors, e.g. the vision-language
prefix's keys and values) and the denoising step (``step_graph``: noisy actions ``x_t`` (B, H, D), time ``tau``
(B, 1), the context -> velocity (B, H, D); an unbatched model, whose action output is (H, D), has no batch axis
anywhere and ``tau`` (1,)). :class:`FlowMatchingPolicy` serves them as one backend: the encoder
runs once per request, then ``x`` is integrated from Gaussian noise at ``tau = 0`` to the action chunk at
``tau = 1`` in K Euler steps (``x += v / K``) reusing the context, and the result is de-normalised like any
model output. The loop and its guidance are shared with the VLA's form (``vla:``, :mod:`robot_stack.policy.vla`)
in :mod:`robot_stack.policy.denoise`; this module only says how one step's velocity comes from the two graphs.
Each graph is an ordinary backend (ONNX Runtime, or a gated GPU engine: both graphs are loaded by
:func:`robot_stack.policy.backends.load_backend` from their own manifests), so serving needs no torch.

**Real-time chunking** (``rtc: true``; :mod:`robot_stack.policy.rtc`): a request may carry the prefix of the plan
the robot is executing; its rows are normalised like the actions and every step's velocity is guided toward it
with the soft mask of Black et al. (2025), so the chunk continues what the robot will be doing when it arrives.
Rows without a prefix in the same micro-batch are denoised freely (weight 0).

A flow-matching model only has to *declare* this in its manifest (a VLA in its ``vla:`` section likewise)::

    flow_matching: {step_graph: model.step.onnx, steps: 10, context: [...], rtc: true}
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robot_stack.errors import PolicyError
from robot_stack.policy.denoise import euler_sample, rtc_guidance
from robot_stack.policy.manifest import FlowMatchingSpec, PolicyManifest
from robot_stack.policy.rtc import RtcRequest
from robot_stack.policy.runtime import finish_outputs, validate_arrays

__all__ = ["FlowMatchingPolicy"]

log = logging.getLogger("robot_stack.policy.flow")


class FlowMatchingPolicy:
    """A flow-matching model served as one backend (see the module docstring).

    Args:
        manifest: the model's manifest (with ``flow_matching``).
        encoder: backend of :meth:`PolicyManifest.flow_encoder_manifest` (``run(feed) -> context``).
        step: backend of :meth:`PolicyManifest.flow_step_manifest` (``run(feed) -> {velocity}``).

    Attributes:
        accepts_rtc: whether requests may carry an RTC prefix (the manifest's ``rtc``).
        runs: requests answered; rtc_runs: of those, with a prefix.
    """

    def __init__(self, manifest: PolicyManifest, encoder: Any, step: Any) -> None:
        if manifest.flow_matching is None:
            raise PolicyError(f"manifest {manifest.model_id} has no flow_matching section")
        self.manifest = manifest
        self.spec: FlowMatchingSpec = manifest.flow_matching
        self.encoder = encoder
        self.step = step
        self.accepts_rtc = bool(self.spec.rtc)
        self._rng = np.random.default_rng(self.spec.seed)
        out = manifest.outputs[0]
        self._batched = len(out.shape) == 3  # else an unbatched model: one chunk per call, no batch axis anywhere
        self._horizon, self._dim = int(out.shape[-2]), int(out.shape[-1])
        self.runs = 0
        self.rtc_runs = 0

    @property
    def provider(self) -> str:
        """The encoder's provider (and the step's, if it differs: ``encoder+step``)."""
        a, b = str(self.encoder.provider), str(self.step.provider)
        return a if a == b else f"{a}+{b}"

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`PolicyError` unless ``arrays`` are exactly the model's inputs."""
        validate_arrays(self.manifest.inputs, arrays, self.manifest.model_id)

    def run(self, arrays: Mapping[str, np.ndarray], rtc: Sequence[RtcRequest | None] | None = None) -> dict[str, Any]:
        """Sample one chunk per batch row (:func:`~robot_stack.policy.denoise.euler_sample`).

        Args:
            arrays: the model's inputs (batch of B rows).
            rtc: per row, its real-time-chunking prefix or None (default: none for every row).
        Returns:
            the action output (B, H, D), de-normalised and checked.
        Raises:
            PolicyError: bad inputs, a prefix for a model without ``rtc``, inference failure, non-finite output.
        """
        self.validate_inputs(arrays)
        context = self.encoder.run(arrays)
        batch = int(next(iter(context.values())).shape[0]) if self._batched else 1
        fm = self.spec
        guidance = rtc_guidance(
            self.manifest, rtc, batch, accepts=self.accepts_rtc, beta=fm.guidance_beta, section=fm.section
        )
        tau_in = np.zeros((batch, 1) if self._batched else (1,), dtype=np.float32)

        def velocity(x: np.ndarray, tau: float) -> np.ndarray:
            tau_in[:] = tau
            x_in = x.astype(np.float32) if self._batched else x[0].astype(np.float32)
            return self.step.run({fm.noise_input: x_in, fm.time_input: tau_in, **context})[fm.velocity_output]

        noise = self._rng.standard_normal((batch, self._horizon, self._dim))
        x = euler_sample(velocity, noise, fm.steps, guidance=guidance)
        self.runs += 1
        self.rtc_runs += int(guidance is not None)
        # the sampled chunk is in normalised units: finish_outputs de-normalises and checks it
        return finish_outputs(self.manifest, [x.astype(np.float32) if self._batched else x[0].astype(np.float32)])

    def warmup(self, runs: int = 1) -> None:
        """Sample from zeros once (dynamic dims = 1) so the first request does not pay for lazy initialisation."""
        feed = {t.name: np.zeros([1 if s == -1 else s for s in t.shape], dtype=t.dtype) for t in self.manifest.inputs}
        for _ in range(runs):
            self.run(feed)

    def close(self) -> None:
        for backend in (self.encoder, self.step):
            close = getattr(backend, "close", None)
            if close is not None:
                close()
