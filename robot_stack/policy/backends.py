"""Pick the backend that serves a manifest: a GPU path behind the accuracy gate, or ONNX Runtime, never a crash.

:func:`load_backend` is the one entry point (``serve``, ``compile``, ``gpu_check``):

* ``engine="tensorrt"``: native TensorRT engine (:mod:`robot_stack.policy.tensorrt`);
* ``engine="torch"``: the manifest's torch program (:mod:`robot_stack.policy.torch_engine`; torch is imported
  only here);
* ``engine="ort"``: ONNX Runtime; with ``provider="cuda"``/``"tensorrt"`` the GPU session is gated too, and the
  chain TensorRT EP -> CUDA EP -> CPU is walked until one passes.

**Fallback on any failure.** Whatever a GPU path raises — ``BackendError``, ``PolicyError``, ``AttributeError``
from an API that changed, ``TypeError`` from ``trt.Builder`` on an old driver, ``OSError``, a ``None`` execution
context — is logged with its reason and ONNX Runtime serves instead (``strict=True`` raises instead). A backend
that later fails *at run time* (device lost, driver reset) is replaced by ONNX Runtime on the CPU by
:class:`FallbackPolicy`, the failing request retried there.

**Memory order** (an 8-16 GB Jetson shares one memory between CPU and GPU): (1) build or load the engine — the
builder is released; (2) run the CPU reference on the gate inputs and release it; (3) load the candidate and gate
it; (4) only if it fails, release it and create the fallback. Never are a fallback session, the reference and a
build alive at once, and when the gate passes no ONNX Runtime session exists at all.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.errors import BackendError, ConfigError, PolicyError
from robot_stack.policy.accuracy import AccuracyReport, gate_candidate, gate_inputs, reference_outputs
from robot_stack.policy.gpu_env import ENGINES
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.runtime import OnnxPolicy, available_providers

__all__ = ["BackendChoice", "FallbackPolicy", "load_backend", "load_sampler"]

log = logging.getLogger("robot_stack.policy.backends")

#: ORT providers tried after a gated GPU provider fails, in order.
_ORT_CHAIN = {"tensorrt": ("tensorrt", "cuda", "cpu"), "cuda": ("cuda", "cpu"), "cpu": ("cpu",)}


@dataclass(frozen=True)
class BackendChoice:
    """What :func:`load_backend` picked.

    Attributes:
        policy: the backend to serve with (``run``/``validate_inputs``/``warmup``/``close``/``manifest``/
            ``provider``), or None when ``fallback=False`` and the requested path failed.
        backend: ``"tensorrt"``, ``"torch"`` or ``"ort"``.
        reason: why the requested path was not taken ("" when it was).
        accuracy: the accuracy gate of the candidate, if one ran.
    """

    policy: Any
    backend: str
    reason: str = ""
    accuracy: AccuracyReport | None = None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if isinstance(exc, PolicyError) and text else f"{type(exc).__name__}: {text}"


def load_backend(
    manifest: PolicyManifest,
    engine: str = "ort",
    *,
    provider: str | None = None,
    precision: str | None = None,
    strict: bool = False,
    threads: int | None = None,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    gate_frames: Sequence[Mapping[str, np.ndarray]] | None = None,
    trt_options: Mapping[str, Any] | None = None,
    torch_options: Mapping[str, Any] | None = None,
    fallback: bool = True,
    runtime_fallback: bool = True,
) -> BackendChoice:
    """Load ``manifest`` on ``engine`` behind the accuracy gate, or on ONNX Runtime with a logged reason.

    Args:
        engine: ``ort`` | ``tensorrt`` | ``torch``.
        provider: ONNX Runtime provider for ``ort`` and for the fallback (None = the manifest's preference).
        precision: ``fp32``/``fp16``/``int8`` (TensorRT; default fp16), ``fp32``/``fp16``/``bf16`` (torch; default
            fp32), ``fp32``/``fp16`` (ORT TensorRT EP; default fp32).
        strict: raise :class:`PolicyError` instead of falling back.
        threads: ONNX Runtime intra-op threads (fallback and reference sessions).
        calibration: INT8 calibration input sets (raw units; recorded frames).
        gate_frames: recorded input sets the gate judges on besides its random ones (INT8: only these).
        trt_options: extra :func:`~robot_stack.policy.tensorrt.prepare_engine` options (cache_dir, max_batch,
            dims, workspace_mb, rebuild, tf32). torch_options: extra :class:`TorchPolicy` options (device,
            cuda_graphs, tf32).
        fallback: False = return ``policy=None`` (with the reason) instead of creating the ONNX Runtime fallback.
        runtime_fallback: wrap a GPU backend in :class:`FallbackPolicy` (ORT on the CPU if it fails at run time).

    Raises:
        ConfigError: unknown engine. PolicyError: ``strict`` and the requested path could not be used.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} unknown; choose one of {ENGINES}")
    if manifest.sampler is not None:  # flow_matching: or vla: two graphs, each loaded (and gated) as below
        return load_sampler(
            manifest,
            engine,
            provider=provider,
            precision=precision,
            strict=strict,
            threads=threads,
            trt_options=trt_options,
            torch_options=torch_options,
            fallback=fallback,
            runtime_fallback=runtime_fallback,
        )  # not calibration/gate_frames: those are sets of the model's inputs, not of each graph's
    if engine == "ort":
        choice = _load_ort(manifest, provider, threads, precision or "fp32", strict, trt_options or {})
        return choice
    precision = precision or ("fp16" if engine == "tensorrt" else "fp32")
    options = dict((trt_options if engine == "tensorrt" else torch_options) or {})
    tf32 = bool(options.get("tf32", False))
    candidate: Any = None
    try:
        if engine == "tensorrt":
            from robot_stack.policy.tensorrt import TrtPolicy, prepare_engine

            artifact = prepare_engine(manifest, precision, calibration=calibration, **options)  # (1) builder released
            inputs = gate_inputs(manifest, artifact.profiles, precision, gate_frames)
            reference = reference_outputs(manifest, inputs, threads)  # (2) reference released
            try:
                candidate = TrtPolicy(manifest, precision, artifact=artifact)  # (3)
            except BackendError as exc:
                if not artifact.cache_hit:
                    raise
                log.warning("cached engine %s unusable (%s); rebuilding it", artifact.path, exc)
                artifact = prepare_engine(manifest, precision, calibration=calibration, **{**options, "rebuild": True})
                candidate = TrtPolicy(manifest, precision, artifact=artifact)
            del artifact
        else:
            from robot_stack.policy.torch_engine import TorchPolicy, torch_profiles

            inputs = gate_inputs(manifest, torch_profiles(manifest), precision, gate_frames)
            reference = reference_outputs(manifest, inputs, threads)
            candidate = TorchPolicy(manifest, precision, threads=threads, **options)
        report = gate_candidate(candidate, inputs, reference, precision, tf32)
    except Exception as exc:  # anything the GPU path raises: log it, serve with ONNX Runtime
        _release(candidate)
        reason = f"{engine} unusable: {_describe(exc)}"
        return _fallback(manifest, engine, provider, threads, reason, strict, fallback, exc)
    for line in report.table():
        log.info("%s %s: %s", manifest.model_id, engine, line)
    if not report.ok:
        _release(candidate)  # (4) engine, context, stream and buffers go before the fallback is created
        reason = f"accuracy check against ONNX Runtime failed ({report.tolerance}): {report.reason}"
        choice = _fallback(manifest, engine, provider, threads, reason, strict, fallback, None)
        return BackendChoice(choice.policy, choice.backend, choice.reason, report)
    log.info("%s: serving on %s (%s), accuracy gate passed", manifest.model_id, candidate.provider, precision)
    policy = (
        FallbackPolicy(candidate, lambda: OnnxPolicy(manifest, "cpu", intra_op_threads=threads))
        if runtime_fallback
        else candidate
    )
    return BackendChoice(policy, engine, "", report)


def load_sampler(
    manifest: PolicyManifest,
    engine: str = "ort",
    *,
    steps: int | None = None,
    prefix_cache: bool = True,
    **kwargs: Any,
) -> BackendChoice:
    """A flow-matching model of either form (``flow_matching:`` or ``vla:``, :attr:`PolicyManifest.sampler`): its
    prefix encoder and its denoising step (:meth:`PolicyManifest.sampler_graphs`) are each loaded, gated and, on
    failure, replaced by ONNX Runtime on their own like any model (:func:`load_backend`; each is a deterministic
    graph), then composed by :class:`~robot_stack.policy.flow.FlowMatchingPolicy` or
    :class:`~robot_stack.policy.vla.VlaPolicy`.

    Args:
        steps, prefix_cache: the VLA's options (:class:`~robot_stack.policy.vla.VlaPolicy`; default: the manifest's
            ``vla.steps``, the cache on).
        kwargs: :func:`load_backend`'s options, for both graphs.
    Returns:
        the composed policy (None when a graph could not be served with ``fallback=False``; the other is closed);
        ``backend``: each graph's engine (``tensorrt+ort`` where they differ); ``reason``: each graph that fell
        back, by name (``<model_id>/<graph>: <why>``).
    Raises:
        ConfigError: no sampling loop, or ``steps``/``prefix_cache`` for a ``flow_matching:`` model.
    """
    spec = manifest.sampler
    if spec is None:
        raise ConfigError(f"manifest {manifest.source or manifest.model_id} has no flow_matching or vla section")
    if manifest.vla is None and (steps is not None or not prefix_cache):
        raise ConfigError(f"steps and prefix_cache are options of a vla: model; {manifest.model_id} is flow_matching")
    graphs = manifest.sampler_graphs()
    choices = [load_backend(graph, engine, **kwargs) for graph in graphs]
    backend = "+".join(dict.fromkeys(c.backend for c in choices))
    reason = "; ".join(f"{graph.model_id}: {c.reason}" for graph, c in zip(graphs, choices, strict=True) if c.reason)
    if any(c.policy is None for c in choices):
        for c in choices:
            _release(c.policy)
        return BackendChoice(None, backend, reason)
    encoder, step = (c.policy for c in choices)
    policy: Any
    if manifest.vla is not None:
        from robot_stack.policy.vla import VlaPolicy

        policy = VlaPolicy(manifest, encoder, step, steps=steps, prefix_cache=prefix_cache)
    else:
        from robot_stack.policy.flow import FlowMatchingPolicy

        policy = FlowMatchingPolicy(manifest, encoder, step)
    log.info(
        "%s: prefix encoder on %s, denoising step on %s, K = %d",
        manifest.model_id,
        encoder.provider,
        step.provider,
        getattr(policy, "steps", spec.steps),
    )
    return BackendChoice(policy, backend, reason)


def _release(candidate: Any) -> None:
    if candidate is None:
        return
    try:
        candidate.close()
    except Exception as exc:  # pragma: no cover - closing must never mask the original failure
        log.warning("closing the rejected backend failed: %s", exc)
    gc.collect()


def _fallback(
    manifest: PolicyManifest,
    engine: str,
    provider: str | None,
    threads: int | None,
    reason: str,
    strict: bool,
    fallback: bool,
    exc: BaseException | None,
) -> BackendChoice:
    if strict:
        raise PolicyError(reason) from exc
    if not fallback:
        log.warning("%s — no fallback requested for %s", reason, manifest.model_id)
        return BackendChoice(None, "ort", reason)
    choice = _load_ort(manifest, provider, threads, "fp32", False, {})
    log.warning("%s — falling back to ONNX Runtime (%s) for %s", reason, choice.policy.provider, manifest.model_id)
    return BackendChoice(choice.policy, "ort", reason + (f"; {choice.reason}" if choice.reason else ""))


def _load_ort(
    manifest: PolicyManifest,
    provider: str | None,
    threads: int | None,
    precision: str,
    strict: bool,
    trt_options: Mapping[str, Any],
) -> BackendChoice:
    """ONNX Runtime on ``provider`` (default the manifest's preference); a GPU provider must pass the gate, else
    the next in :data:`_ORT_CHAIN` is tried, down to the CPU."""
    have = available_providers()
    wanted = (provider or next((p for p in manifest.providers if p in have), "cpu")).lower()
    if wanted not in _ORT_CHAIN:
        raise PolicyError(f"provider {provider!r} unknown; choose one of {tuple(_ORT_CHAIN)}")
    reasons: list[str] = []
    for name in _ORT_CHAIN[wanted]:
        if name == "cpu":
            policy = OnnxPolicy(manifest, "cpu", intra_op_threads=threads)
            return BackendChoice(policy, "ort", "; ".join(reasons))
        if name not in have:
            reasons.append(f"{name}: not in this onnxruntime build (it has {have}; install onnxruntime-gpu)")
            if strict:
                raise PolicyError("; ".join(reasons))
            continue
        report: AccuracyReport | None = None
        candidate: Any = None
        try:
            from robot_stack.policy.tensorrt import default_profiles

            profiles = default_profiles(manifest, trt_options.get("max_batch"), trt_options.get("dims"))
            prec = precision if name == "tensorrt" else "fp32"
            inputs = gate_inputs(manifest, profiles, prec)
            reference = reference_outputs(manifest, inputs, threads)
            candidate = OnnxPolicy(
                manifest,
                name,
                strict=True,
                intra_op_threads=threads,
                trt_cache_dir=trt_options.get("cache_dir"),
                trt_profiles=profiles,
                precision=prec,
                tf32=bool(trt_options.get("tf32", False)),
                workspace_mb=int(trt_options.get("workspace_mb", 1024)),
            )
            # the TensorRT EP has no TF32 switch (TensorRT allows TF32 by default): hold it to the TF32 tolerance
            report = gate_candidate(
                candidate, inputs, reference, prec, tf32=name == "tensorrt" or bool(trt_options.get("tf32"))
            )
        except Exception as exc:
            _release(candidate)
            reasons.append(f"{name}: {_describe(exc)}")
            log.warning("ONNX Runtime %s unusable for %s: %s", name, manifest.model_id, _describe(exc))
            if strict:
                raise PolicyError("; ".join(reasons)) from exc
            continue
        if report.ok:
            for line in report.table():
                log.info("%s ort-%s: %s", manifest.model_id, name, line)
            return BackendChoice(candidate, "ort", "; ".join(reasons), report)
        _release(candidate)
        reasons.append(f"{name}: accuracy check failed ({report.tolerance}): {report.reason}")
        log.warning("ONNX Runtime %s failed the accuracy gate for %s: %s", name, manifest.model_id, report.reason)
        if strict:
            raise PolicyError("; ".join(reasons))
    raise AssertionError("unreachable: the chain ends with the CPU")  # pragma: no cover


class FallbackPolicy:
    """A GPU backend that hands over to ONNX Runtime for good if it fails at run time.

    Request errors (bad inputs: :class:`PolicyError` from validation, and non-finite outputs) stay the request's;
    a :class:`~robot_stack.errors.BackendError` or any other exception from the backend is a device failure: it
    is logged with the reason, the backend is closed, ``make_fallback()`` creates the replacement and the request
    is answered by it.

    Attributes:
        switched_reason: why the switch happened ("" while the primary serves).
    """

    def __init__(self, primary: Any, make_fallback: Callable[[], Any]) -> None:
        self.primary = primary
        self.manifest: PolicyManifest = primary.manifest
        self._make_fallback = make_fallback
        self._active = primary
        self.switched_reason = ""

    @property
    def provider(self) -> str:
        return str(self._active.provider)

    @property
    def active(self) -> Any:
        return self._active

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        self._active.validate_inputs(arrays)

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._active is not self.primary:
            return self._active.run(arrays)
        self.primary.validate_inputs(arrays)  # request errors are raised before the device is touched
        try:
            return self.primary.run(arrays)
        except PolicyError as exc:
            if not isinstance(exc, BackendError):
                raise
            self._switch(exc)
        except Exception as exc:
            self._switch(exc)
        return self._active.run(arrays)

    def _switch(self, exc: BaseException) -> None:
        self.switched_reason = f"{self.primary.provider} failed at run time: {_describe(exc)}"
        log.error("%s — switching %s to ONNX Runtime on the CPU for good", self.switched_reason, self.manifest.model_id)
        _release(self.primary)
        self._active = self._make_fallback()

    def warmup(self, runs: int = 2) -> None:
        try:
            self._active.warmup(runs)
        except Exception as exc:
            if self._active is not self.primary:
                raise
            self._switch(exc)
            self._active.warmup(runs)

    def close(self) -> None:
        _release(self._active)
