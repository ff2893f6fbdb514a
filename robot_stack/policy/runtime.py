"""ONNX Runtime backend: one InferenceSession per manifest, on the CPU, CUDA or TensorRT execution provider."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import PolicyError
from robot_stack.policy.gpu_env import preload_gpu_libraries
from robot_stack.policy.manifest import PROVIDERS, PolicyManifest, TensorSpec

__all__ = [
    "ORT_PROVIDERS",
    "OnnxPolicy",
    "available_providers",
    "finish_outputs",
    "normalize_inputs",
    "tensorrt_ep_options",
    "validate_arrays",
    "validate_declared",
]

log = logging.getLogger("robot_stack.policy.runtime")

#: Short provider name -> ONNX Runtime execution provider chain (fallbacks included, fastest first).
ORT_PROVIDERS: dict[str, tuple[str, ...]] = {
    "tensorrt": ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"),
    "cuda": ("CUDAExecutionProvider", "CPUExecutionProvider"),
    "cpu": ("CPUExecutionProvider",),
}
_SHORT = {v[0]: k for k, v in ORT_PROVIDERS.items()}

# ONNX tensor type string -> manifest dtype.
_ORT_TYPES = {
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(float16)": "float16",
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(bool)": "bool",
}


def _onnxruntime() -> Any:
    """The ``onnxruntime`` module, or :class:`PolicyError` saying which extra installs it."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise PolicyError(
            f"ONNX Runtime is not installed ({exc}); pip install 'robot-stack[cpu]' (or 'robot-stack[gpu]' on an "
            f"NVIDIA machine, never both: README 'GPU')"
        ) from exc
    return ort


def available_providers() -> list[str]:
    """Short names (``tensorrt``/``cuda``/``cpu``) this onnxruntime build offers."""
    ort = _onnxruntime()
    have = set(ort.get_available_providers())
    return [p for p in PROVIDERS if ORT_PROVIDERS[p][0] in have]


class OnnxPolicy:
    """Run a manifest's ONNX model.

    Args:
        manifest: the model description.
        provider: ``"cpu"``, ``"cuda"`` or ``"tensorrt"``; None = the first of ``manifest.providers`` this
            onnxruntime build offers.
        strict: if the requested provider is unavailable, raise :class:`PolicyError` instead of warning and
            falling back to the CPU.
        intra_op_threads: ONNX Runtime intra-op threads (None = its default: all cores).
        trt_cache_dir: root of the TensorRT EP's engine cache (default ``<model dir>/.trt_cache``); engines live in
            a sub-folder named by the digest of the model's weights (ORT's own engine id ignores them, so retrained
            weights under the same file name would reuse a stale engine).
        trt_profiles: shape profiles (objects with ``name``, ``min``, ``opt``, ``max``) for the TensorRT EP's
            ``trt_profile_{min,opt,max}_shapes``: one engine covers the whole batch range (without them the EP
            rebuilds its engine mid-serve when the batch grows); None = the batch dim spans ``1..max_batch``.
        precision: ``fp32`` or ``fp16`` (TensorRT EP ``trt_fp16_enable``).
        tf32: allow TF32 math in the CUDA EP (``use_tf32``; off = FP32-exact, what the accuracy gate assumes).
        workspace_mb: TensorRT EP ``trt_max_workspace_size``.

    Attributes:
        provider: short name of the provider actually used for the first graph node (after any fallback).
        providers: the ORT provider chain the session actually has.
    """

    def __init__(
        self,
        manifest: PolicyManifest,
        provider: str | None = None,
        *,
        strict: bool = False,
        intra_op_threads: int | None = None,
        trt_cache_dir: str | Path | None = None,
        trt_profiles: Sequence[Any] | None = None,
        precision: str = "fp32",
        tf32: bool = False,
        workspace_mb: int = 1024,
    ) -> None:
        ort = _onnxruntime()
        self.manifest = manifest
        self._session: Any = None
        if manifest.vla is not None:
            raise PolicyError(
                f"manifest {manifest.source or manifest.model_id} is a VLA (two graphs): load it with "
                "robot_stack.policy.backends.load_backend (or its sub-manifests, vla_prefix_manifest() / "
                "vla_denoise_manifest(), one graph each)"
            )
        if not manifest.onnx_path.is_file():
            raise PolicyError(
                f"model file {manifest.onnx_path} (from manifest {manifest.source}) not found; export the model "
                f"or fix the manifest's onnx path"
            )
        have = available_providers()
        if provider is None:
            wanted = next((p for p in manifest.providers if p in have), "cpu")
        else:
            wanted = provider.lower()
            if wanted not in PROVIDERS:
                raise PolicyError(f"provider {provider!r} unknown; choose one of {PROVIDERS}")
        if wanted not in have:
            msg = (
                f"execution provider {wanted!r} is not available in this onnxruntime build (available: {have}); "
                f"install onnxruntime-gpu with matching CUDA/TensorRT libraries"
            )
            if strict:
                raise PolicyError(msg)
            log.warning("%s — falling back to CPU", msg)
            wanted = "cpu"
        if precision not in ("fp32", "fp16"):
            raise PolicyError(f"ONNX Runtime precision {precision!r} unknown; choose fp32 or fp16")
        if wanted != "cpu":
            preload_gpu_libraries(wanted)
        chain: list[Any] = []
        for name in ORT_PROVIDERS[wanted]:
            if name == "TensorrtExecutionProvider":
                chain.append(
                    (name, tensorrt_ep_options(manifest, trt_cache_dir, trt_profiles, precision, workspace_mb))
                )
            elif name == "CUDAExecutionProvider":
                chain.append((name, {"use_tf32": "1" if tf32 else "0"}))
            else:
                chain.append(name)
        self.chain = tuple(chain)
        options = ort.SessionOptions()
        if intra_op_threads is not None:
            options.intra_op_num_threads = int(intra_op_threads)
        try:
            self._session = ort.InferenceSession(str(manifest.onnx_path), sess_options=options, providers=chain)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise PolicyError(f"cannot load {manifest.onnx_path} with ONNX Runtime ({wanted}): {exc}") from exc
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.provider = _SHORT.get(self.providers[0], self.providers[0])
        if self.provider != wanted:
            msg = f"onnxruntime could not initialise {wanted!r} (session providers: {self.providers})"
            if strict:
                raise PolicyError(msg)
            log.warning("%s — running on %s", msg, self.provider)
        self._check_graph()
        self._output_names = [t.name for t in manifest.outputs]
        log.info("loaded %s (%s) on %s", manifest.model_id, manifest.onnx_path.name, self.provider)

    def _check_graph(self) -> None:
        """The manifest must describe the graph: same names, dtypes and ranks, compatible static dims."""
        for label, declared, actual in (
            ("input", self.manifest.inputs, self._session.get_inputs()),
            ("output", self.manifest.outputs, self._session.get_outputs()),
        ):
            graph = {a.name: a for a in actual}
            if set(graph) != {t.name for t in declared} and label == "input":
                raise PolicyError(
                    f"manifest {self.manifest.source} declares inputs {[t.name for t in declared]} but the graph "
                    f"has {sorted(graph)}"
                )
            for spec in declared:
                node = graph.get(spec.name)
                if node is None:
                    raise PolicyError(f"manifest {label} {spec.name!r} is not in the graph (graph has {sorted(graph)})")
                dtype = _ORT_TYPES.get(node.type)
                if dtype != spec.dtype:
                    raise PolicyError(f"{label} {spec.name!r}: manifest says {spec.dtype}, graph says {node.type}")
                dims = list(node.shape)
                if len(dims) != len(spec.shape) or any(
                    isinstance(g, int) and g > 0 and w != -1 and g != w for g, w in zip(dims, spec.shape, strict=True)
                ):
                    raise PolicyError(f"{label} {spec.name!r}: manifest shape {spec.shape} vs graph shape {dims}")

    # ----------------------------------------------------------------------------------------------- run
    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        """Raise :class:`PolicyError` unless ``arrays`` are exactly the manifest's inputs (names, dtypes, shapes,
        finiteness)."""
        validate_arrays(self.manifest.inputs, arrays, self.manifest.model_id)

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, normalise, run, de-normalise and check the outputs.

        Args:
            arrays: input name -> array with the manifest's dtype and shape (no silent casting).
        Returns:
            output name -> array (manifest dtypes and shapes), finite.
        Raises:
            PolicyError: bad inputs, inference failure, or non-finite / mis-shaped outputs.
        """
        self.validate_inputs(arrays)
        feed = normalize_inputs(self.manifest, arrays)
        try:
            results = self._session.run(self._output_names, feed)
        except Exception as exc:
            raise PolicyError(f"inference of {self.manifest.model_id} failed: {exc}") from exc
        return finish_outputs(self.manifest, results)

    def warmup(self, runs: int = 2) -> None:
        """Run on zeros (dynamic dims = 1) so the first real call does not pay for lazy initialisation."""
        feed = {t.name: np.zeros([1 if d == -1 else d for d in t.shape], dtype=t.dtype) for t in self.manifest.inputs}
        for _ in range(runs):
            self._session.run(self._output_names, feed)

    def close(self) -> None:
        """Release the session (its memory goes with the last reference). Idempotent."""
        self._session = None


def tensorrt_ep_options(
    manifest: PolicyManifest,
    cache_dir: str | Path | None,
    profiles: Sequence[Any] | None,
    precision: str = "fp32",
    workspace_mb: int = 1024,
) -> dict[str, str]:
    """ONNX Runtime TensorRT EP options (names as in onnxruntime-gpu 1.26's provider): an engine cache keyed by
    the model's weights, a timing cache, FP16 on request, and explicit shape profiles for every dynamic input.

    Profile strings are ``name:d0xd1x...`` joined by commas; an input name with ``,`` or ``:`` cannot be written
    that way, so its profile is left to the EP (which then sizes the engine by the shapes it sees)."""
    from robot_stack.policy.onnx_variants import weights_digest

    onnx_sha, ext_sha = weights_digest(manifest.onnx_path)
    root = Path(cache_dir) if cache_dir else manifest.onnx_path.parent / ".trt_cache"
    folder = root / f"{manifest.onnx_path.stem}-{(onnx_sha + ext_sha)[:16]}"
    options = {
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(folder),
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(folder),
        "trt_fp16_enable": "1" if precision == "fp16" else "0",
        "trt_max_workspace_size": str(int(workspace_mb) << 20),
    }
    dynamic = {t.name for t in manifest.inputs if -1 in t.shape}
    if profiles is None and dynamic:
        from robot_stack.errors import ConfigError
        from robot_stack.policy.tensorrt import default_profiles

        try:
            profiles = default_profiles(manifest)
        except ConfigError as exc:
            log.warning("no TensorRT EP shape profiles for %s (%s); the EP will size them", manifest.model_id, exc)
    chosen = [p for p in profiles or () if p.name in dynamic]
    bad = [p.name for p in chosen if "," in p.name or ":" in p.name]
    if bad:
        log.warning("input names %s cannot be written as TensorRT EP profile shapes; the EP will size them", bad)
    elif chosen and {p.name for p in chosen} == dynamic:
        for which in ("min", "opt", "max"):
            options[f"trt_profile_{which}_shapes"] = ",".join(
                f"{p.name}:{'x'.join(str(int(d)) for d in getattr(p, which))}" for p in chosen
            )
    return options


def normalize_inputs(manifest: PolicyManifest, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model feed: ``(x - mean) / std`` for inputs with normalisation stats, the others as they are."""
    feed: dict[str, np.ndarray] = {}
    for name, value in arrays.items():
        array = np.asarray(value)
        stats = manifest.normalization.get(name)
        if stats is not None:
            array = ((array - stats.mean) / stats.std).astype(array.dtype, copy=False)
        feed[name] = array
    return feed


def finish_outputs(manifest: PolicyManifest, results: Sequence[Any]) -> dict[str, np.ndarray]:
    """Raw model outputs (in ``manifest.outputs`` order) -> de-normalised, checked (dtype, shape, finite) arrays.

    Raises:
        PolicyError: an output has the wrong dtype/shape or holds NaN/Inf.
    """
    out: dict[str, np.ndarray] = {}
    for spec, value in zip(manifest.outputs, results, strict=True):
        array = np.asarray(value)
        stats = manifest.normalization.get(spec.name)
        if stats is not None:
            array = (array * stats.std + stats.mean).astype(array.dtype, copy=False)
        _check_tensor(spec, array, "output", check_finite=True)
        out[spec.name] = array
    return out


def validate_arrays(specs: Sequence[TensorSpec], arrays: Mapping[str, np.ndarray], model_id: str) -> None:
    """Raise :class:`PolicyError` unless ``arrays`` are exactly ``specs`` (names, dtypes, shapes, finiteness)."""
    expected = _check_names(specs, arrays, model_id)
    for name, spec in expected.items():
        _check_tensor(spec, np.asarray(arrays[name]), "input", check_finite=not spec.allow_nonfinite)


def validate_declared(
    specs: Sequence[TensorSpec], declared: Mapping[str, tuple[str, tuple[int, ...]]], model_id: str
) -> None:
    """:func:`validate_arrays` without the values: ``declared`` maps name -> (numpy dtype name, shape), e.g. from
    a request's header before its arrays are decoded. Raises :class:`PolicyError`."""
    expected = _check_names(specs, declared, model_id)
    for name, spec in expected.items():
        _check_dtype_shape(spec, *declared[name], "input")


def _check_names(specs: Sequence[TensorSpec], got: Mapping[str, Any], model_id: str) -> dict[str, TensorSpec]:
    expected = {t.name: t for t in specs}
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    if missing or extra:
        raise PolicyError(f"model {model_id} expects inputs {sorted(expected)}; missing {missing}, unexpected {extra}")
    return expected


def _check_dtype_shape(spec: TensorSpec, dtype: str, shape: tuple[int, ...], label: str) -> None:
    if dtype != spec.dtype:
        raise PolicyError(f"{label} {spec.name!r}: dtype {dtype} but the model needs {spec.dtype}; cast it first")
    if not spec.matches_shape(tuple(shape)):
        raise PolicyError(f"{label} {spec.name!r}: shape {tuple(shape)} but the model needs {spec.shape} (-1 = any)")


def _check_tensor(spec: TensorSpec, array: np.ndarray, label: str, check_finite: bool) -> None:
    _check_dtype_shape(spec, array.dtype.name, array.shape, label)
    if check_finite and array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(array.size - np.count_nonzero(np.isfinite(array)))
        raise PolicyError(
            f"{label} {spec.name!r}: {bad} of {array.size} values are NaN/Inf"
            + ("; the model produced non-finite actions, refusing to send them" if label == "output" else "")
        )
