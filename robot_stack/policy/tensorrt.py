"""Native TensorRT backend: build an engine from the manifest's ONNX model, cache it, check it, run it.

* **Build** (``tensorrt`` Python API, TensorRT 8.6+ / 10.x): ONNX parser, FP32/FP16/INT8 (INT8 with an entropy
  calibrator fed from calibration inputs), one optimisation profile covering every dynamic dim
  (:class:`ShapeProfile`; the batch dim spans ``1..max_batch``).
* **Cache**: ``<cache_dir>/<digest>.engine`` (+ ``.json`` with the key and the accuracy result). The digest is
  :func:`engine_cache_key`: SHA-256 of the ONNX file's hash, the GPU model, the TensorRT version, the precision
  and the shape profiles, so an engine is never reused on another GPU, TensorRT or shape range.
* **Accuracy check**: before an engine is used, its outputs on seeded random inputs (at the ``opt`` and ``max``
  shapes) are compared with ONNX Runtime (CPU) on the same inputs (:func:`compare_outputs`, tolerances per
  precision in :data:`TOLERANCES`).
* **Fallback**: :func:`load_policy` returns an ONNX Runtime :class:`OnnxPolicy` instead, with the reason logged
  and returned, when ``tensorrt``, the CUDA runtime bindings or a GPU are missing, the build fails, or the
  accuracy check fails.

Device memory and copies use the CUDA runtime from ``cuda-python`` (``cuda.bindings.runtime`` or the older
``cuda.cudart``). On a machine without them only the fallback path runs; the build/inference tests are marked
``gpu``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.metrics import time_calls
from robot_stack.policy.manifest import PolicyManifest, TensorSpec
from robot_stack.policy.runtime import OnnxPolicy, finish_outputs, normalize_inputs, validate_arrays

__all__ = [
    "PRECISIONS",
    "TOLERANCES",
    "AccuracyReport",
    "BackendChoice",
    "CompileReport",
    "EngineKey",
    "ShapeProfile",
    "TrtPolicy",
    "check_accuracy",
    "choose_backend",
    "compare_outputs",
    "compile_manifest",
    "compile_model",
    "default_profiles",
    "engine_cache_key",
    "file_sha256",
    "load_policy",
    "sample_inputs",
    "select_backend",
    "trt_environment",
]

log = logging.getLogger("robot_stack.policy.tensorrt")

PRECISIONS = ("fp32", "fp16", "int8")
#: precision -> (rtol, atol): an output passes if ``max|trt - ort| <= atol + rtol * max|ort|``.
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-3, 1e-4), "fp16": (2e-2, 1e-3), "int8": (1e-1, 1e-2)}
_CACHE_FORMAT = 1


# ----------------------------------------------------------------------------------------- cache keys


@dataclass(frozen=True)
class ShapeProfile:
    """The shape range TensorRT optimises one input for: every dim ``min[i] <= d <= max[i]``, tuned for ``opt``."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self) -> None:
        if not (len(self.min) == len(self.opt) == len(self.max)) or not all(
            1 <= a <= b <= c for a, b, c in zip(self.min, self.opt, self.max, strict=True)
        ):
            raise ConfigError(
                f"shape profile of {self.name!r} invalid: need 1 <= min <= opt <= max per dim, got "
                f"min {self.min}, opt {self.opt}, max {self.max}"
            )


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on. Two keys are equal iff their :meth:`digest` is."""

    onnx_sha256: str
    gpu: str
    trt_version: str
    precision: str
    profiles: tuple[ShapeProfile, ...]

    def canonical(self) -> str:
        """Canonical JSON (sorted keys, profiles sorted by name, no whitespace): the hashed text."""
        data = {
            "format": _CACHE_FORMAT,
            "onnx_sha256": self.onnx_sha256,
            "gpu": self.gpu,
            "trt_version": self.trt_version,
            "precision": self.precision,
            "profiles": [
                {"name": p.name, "min": list(p.min), "opt": list(p.opt), "max": list(p.max)}
                for p in sorted(self.profiles, key=lambda p: p.name)
            ],
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """64 hex chars: SHA-256 of :meth:`canonical`."""
        return hashlib.sha256(self.canonical().encode()).hexdigest()


def engine_cache_key(
    onnx_sha256: str, gpu: str, trt_version: str, precision: str, profiles: Sequence[ShapeProfile]
) -> EngineKey:
    """Build the (deterministic) cache key of an engine; GPU name whitespace is normalised, profile order ignored.

    Raises:
        ConfigError: unknown precision, malformed hash, or two profiles for one input.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; choose one of {PRECISIONS}")
    if len(onnx_sha256) != 64 or any(c not in "0123456789abcdef" for c in onnx_sha256):
        raise ConfigError(f"onnx_sha256 must be 64 lowercase hex chars, got {onnx_sha256!r:.80}")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"one shape profile per input, got {names}")
    ordered = tuple(sorted(profiles, key=lambda p: p.name))
    return EngineKey(onnx_sha256, " ".join(gpu.split()), str(trt_version), precision, ordered)


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_profiles(
    manifest: PolicyManifest,
    max_batch: int | None = None,
    dims: Mapping[str, Sequence[tuple[int, int, int]]] | None = None,
) -> tuple[ShapeProfile, ...]:
    """One profile per input: static dims fixed; a dynamic first dim spans ``1..max_batch`` (default the
    manifest's ``max_batch``) with ``opt = 1`` (a lone robot is the latency case); other dynamic dims need
    ``dims[name][i] = (min, opt, max)``.

    Raises:
        ConfigError: a dynamic non-batch dim without a range in ``dims``.
    """
    max_batch = int(max_batch or manifest.max_batch)
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    out = []
    for spec in manifest.inputs:
        lo, opt, hi = [], [], []
        for i, d in enumerate(spec.shape):
            if d != -1:
                r = (d, d, d)
            elif dims and spec.name in dims and i < len(dims[spec.name]) and dims[spec.name][i] is not None:
                r = tuple(dims[spec.name][i])  # type: ignore[assignment]
            elif i == 0:
                r = (1, 1, max_batch)
            else:
                raise ConfigError(
                    f"input {spec.name!r} dim {i} is dynamic; give its range as dims={{'{spec.name}': "
                    f"[..., (min, opt, max), ...]}} (TensorRT needs bounds for every dynamic dim)"
                )
            lo.append(r[0])
            opt.append(r[1])
            hi.append(r[2])
        out.append(ShapeProfile(spec.name, tuple(lo), tuple(opt), tuple(hi)))
    return tuple(out)


# -------------------------------------------------------------------------------------- accuracy check


@dataclass(frozen=True)
class AccuracyReport:
    """Outcome of comparing a candidate backend with ONNX Runtime.

    Attributes:
        ok: every output of every sample within tolerance.
        max_abs_err: output name -> worst ``max|candidate - reference|`` over the samples.
        allowed: output name -> the tolerance it was held to (``atol + rtol * max|reference|``, worst sample).
        samples: input sets compared.
        reason: empty when ok, else which output failed and by how much.
    """

    ok: bool
    max_abs_err: Mapping[str, float]
    allowed: Mapping[str, float]
    samples: int
    reason: str = ""


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    rtol: float,
    atol: float,
) -> AccuracyReport:
    """Compare per-sample output maps; shapes and names must match exactly, values within tolerance."""
    if len(reference) != len(candidate) or not reference:
        raise PolicyError(f"accuracy check needs equally many samples, got {len(reference)} and {len(candidate)}")
    errs: dict[str, float] = {}
    allowed: dict[str, float] = {}
    reasons: list[str] = []
    for k, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if set(ref) != set(cand):
            reasons.append(f"sample {k}: outputs {sorted(cand)} but expected {sorted(ref)}")
            continue
        for name, r in ref.items():
            r64 = np.asarray(r, dtype=np.float64)
            c64 = np.asarray(cand[name], dtype=np.float64)
            if r64.shape != c64.shape:
                reasons.append(f"sample {k}: output {name!r} shape {c64.shape}, expected {r64.shape}")
                continue
            err = float(np.max(np.abs(c64 - r64))) if r64.size else 0.0
            if not np.isfinite(err):
                err = float("inf")
            tol = atol + rtol * (float(np.max(np.abs(r64))) if r64.size else 0.0)
            if err > errs.get(name, -1.0):
                errs[name], allowed[name] = err, tol
            if err > tol:
                reasons.append(f"sample {k}: output {name!r} max abs error {err:.3g} > allowed {tol:.3g}")
    return AccuracyReport(not reasons, errs, allowed, len(reference), "; ".join(reasons[:3]))


def sample_inputs(
    manifest: PolicyManifest, profiles: Sequence[ShapeProfile], seed: int = 0, shapes: Sequence[str] = ("opt", "max")
) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs at the profiles' ``opt`` and ``max`` shapes, in the inputs' raw (un-normalised) units:
    floats ~ mean + std * N(0, 1) of their normalisation stats (N(0, 1) without), uint8 over 0..255, other ints
    over 0..9, bools fair coin flips."""
    rng = np.random.default_rng(seed)
    by_name = {p.name: p for p in profiles}
    out = []
    for which in shapes:
        arrays: dict[str, np.ndarray] = {}
        for spec in manifest.inputs:
            shape = getattr(by_name[spec.name], which)
            arrays[spec.name] = _random_tensor(rng, spec, shape, manifest)
        out.append(arrays)
    return out


def _random_tensor(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], m: PolicyManifest) -> np.ndarray:
    if spec.dtype.startswith("float"):
        x = rng.standard_normal(shape)
        stats = m.normalization.get(spec.name)
        if stats is not None:
            x = x * stats.std + stats.mean
        return x.astype(spec.dtype)
    if spec.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    high = 256 if spec.dtype == "uint8" else 10
    return rng.integers(0, high, shape).astype(spec.dtype)


def check_accuracy(
    reference: Any, candidate: Any, inputs: Sequence[Mapping[str, np.ndarray]], precision: str
) -> AccuracyReport:
    """Run both backends (anything with ``run(arrays) -> outputs``) on ``inputs`` and compare (:data:`TOLERANCES`).
    A candidate that raises fails the check (its error is the reason)."""
    rtol, atol = TOLERANCES[precision]
    ref = [reference.run(x) for x in inputs]
    try:
        cand = [candidate.run(x) for x in inputs]
    except PolicyError as exc:
        return AccuracyReport(False, {}, {}, len(inputs), f"candidate failed to run: {exc}")
    return compare_outputs(ref, cand, rtol, atol)


# ------------------------------------------------------------------------------------ environment probe


@dataclass(frozen=True)
class _TrtEnv:
    trt: Any
    cudart: Any
    version: str
    gpu: str


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    return cudart


def _cuda_check(result: Any, what: str) -> Any:
    """cuda-python calls return ``(err, *values)``; raise PolicyError on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise PolicyError(f"CUDA {what} failed with error {err}")
    return values[0] if len(values) == 1 else tuple(values)


def trt_environment() -> _TrtEnv | str:
    """The TensorRT module, the CUDA runtime bindings, TensorRT's version and GPU 0's name; or a string saying
    why the native TensorRT path cannot run here."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return f"the tensorrt Python package is not installed ({exc}); pip install tensorrt on a CUDA machine"
    try:
        cudart = _import_cudart()
    except ImportError as exc:
        return f"CUDA runtime bindings missing ({exc}); pip install cuda-python matching the CUDA driver"
    try:
        count = _cuda_check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
        if count < 1:
            return "no CUDA device visible (cudaGetDeviceCount = 0)"
        props = _cuda_check(cudart.cudaGetDeviceProperties(0), "cudaGetDeviceProperties")
    except PolicyError as exc:
        return f"CUDA is not usable: {exc}"
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return _TrtEnv(trt, cudart, str(trt.__version__), name.rstrip("\x00").strip())


# --------------------------------------------------------------------------------------- engine build


def _build_engine(
    env: _TrtEnv,
    manifest: PolicyManifest,
    precision: str,
    profiles: Sequence[ShapeProfile],
    calibration: Sequence[Mapping[str, np.ndarray]] | None,
    workspace_bytes: int,
) -> bytes:
    trt = env.trt
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(env.version.split(".")[0]) < 10:  # explicit batch is the only mode (and the flag deprecated) in 10.x
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(manifest.onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PolicyError(f"TensorRT cannot parse {manifest.onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    profile = builder.create_optimization_profile()
    for p in profiles:
        profile.set_shape(p.name, p.min, p.opt, p.max)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        if not getattr(builder, "platform_has_fast_fp16", True):  # (deprecated in TensorRT 10)
            log.warning("this GPU has no fast FP16; building %s anyway", precision)
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        if not calibration:
            raise PolicyError("INT8 needs calibration inputs (a few representative observations)")
        config.set_flag(trt.BuilderFlag.INT8)
        calibrator = _make_calibrator(env, manifest, calibration)
        config.int8_calibrator = calibrator
        config.set_calibration_profile(profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.free()
    if serialized is None:
        raise PolicyError(f"TensorRT failed to build an engine for {manifest.onnx_path} ({precision}); see its log")
    log.info("built %s engine for %s in %.1f s", precision, manifest.model_id, time.perf_counter() - t0)
    return bytes(serialized)


def _make_calibrator(env: _TrtEnv, manifest: PolicyManifest, batches: Sequence[Mapping[str, np.ndarray]]) -> Any:
    """An ``IInt8EntropyCalibrator2`` that feeds the (normalised) calibration inputs one set at a time."""
    trt, cudart = env.trt, env.cudart
    feeds = [normalize_inputs(manifest, b) for b in batches]

    class _Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self._next = 0
            self._ptrs: dict[str, tuple[int, int]] = {}

        def get_batch_size(self) -> int:
            return 1  # explicit-batch networks take the batch from the input shapes

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self._next >= len(feeds):
                return None
            feed = feeds[self._next]
            self._next += 1
            out = []
            for name in names:
                host = np.ascontiguousarray(feed[name])
                ptr, size = self._ptrs.get(name, (0, 0))
                if size < host.nbytes:
                    if ptr:
                        _cuda_check(cudart.cudaFree(ptr), "cudaFree")
                    ptr, size = int(_cuda_check(cudart.cudaMalloc(host.nbytes), "cudaMalloc")), host.nbytes
                    self._ptrs[name] = (ptr, size)
                kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                _cuda_check(cudart.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")
                out.append(ptr)
            return out

        def read_calibration_cache(self) -> bytes | None:
            return None

        def write_calibration_cache(self, cache: bytes) -> None:
            return None

        def free(self) -> None:
            for ptr, _ in self._ptrs.values():
                cudart.cudaFree(ptr)
            self._ptrs.clear()

    return _Calibrator()


# -------------------------------------------------------------------------------------------- runtime


class TrtPolicy:
    """Run a manifest's model as a TensorRT engine (same contract as :class:`OnnxPolicy`: ``run``,
    ``validate_inputs``, ``warmup``, ``manifest``, ``provider``).

    Args:
        manifest: the model description (its ONNX file is what gets built).
        precision: ``fp32`` | ``fp16`` | ``int8``.
        cache_dir: engine cache folder (default ``<model dir>/.trt_engines``).
        max_batch: upper end of the batch-dim profile (default the manifest's ``max_batch``).
        dims: ranges of dynamic non-batch dims (see :func:`default_profiles`).
        calibration: INT8 calibration inputs (raw units, like requests); default: :func:`sample_inputs`.
        workspace_mb: TensorRT builder workspace.
        rebuild: ignore a cached engine.

    Attributes:
        key: the engine's :class:`EngineKey`; engine_path: its cache file; cache_hit: loaded rather than built.

    Raises:
        PolicyError: TensorRT/CUDA/GPU missing, the ONNX model does not parse, or the build fails.
    """

    def __init__(
        self,
        manifest: PolicyManifest,
        precision: str = "fp16",
        *,
        cache_dir: str | Path | None = None,
        max_batch: int | None = None,
        dims: Mapping[str, Sequence[tuple[int, int, int]]] | None = None,
        calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
        workspace_mb: int = 1024,
        rebuild: bool = False,
    ) -> None:
        env = trt_environment()
        if isinstance(env, str):
            raise PolicyError(f"native TensorRT unavailable: {env}")
        if not manifest.onnx_path.is_file():
            raise PolicyError(f"model file {manifest.onnx_path} not found")
        self.manifest = manifest
        self.precision = precision
        self.provider = f"tensorrt-native-{precision}"
        self._env = env
        self.profiles = default_profiles(manifest, max_batch, dims)
        self.key = engine_cache_key(file_sha256(manifest.onnx_path), env.gpu, env.version, precision, self.profiles)
        folder = Path(cache_dir) if cache_dir else manifest.onnx_path.parent / ".trt_engines"
        self.engine_path = folder / f"{self.key.digest()}.engine"
        self.cache_hit = self.engine_path.is_file() and not rebuild
        if self.cache_hit:
            blob = self.engine_path.read_bytes()
            log.info("engine cache hit: %s", self.engine_path)
        else:
            calib = calibration if calibration is not None else sample_inputs(manifest, self.profiles, seed=1)
            blob = _build_engine(env, manifest, precision, self.profiles, calib, workspace_mb << 20)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = self.engine_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(blob)
            tmp.replace(self.engine_path)  # atomic: a concurrent reader never sees half an engine
            self.engine_path.with_suffix(".json").write_text(
                json.dumps({"key": json.loads(self.key.canonical()), "model_id": manifest.model_id}, indent=1)
            )
        trt, cudart = env.trt, env.cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise PolicyError(f"cannot deserialize {self.engine_path}; delete it (or pass rebuild=True)")
        self._context = self._engine.create_execution_context()
        self._stream = _cuda_check(cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self._inputs = [n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self._outputs = [t.name for t in manifest.outputs]
        missing = sorted({t.name for t in manifest.inputs + manifest.outputs} - set(names))
        if missing:
            raise PolicyError(f"engine {self.engine_path} lacks tensors {missing} the manifest declares")
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < max(nbytes, 1):
            cudart = self._env.cudart
            if ptr:
                _cuda_check(cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_cuda_check(cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
            self._buffers[name] = (ptr, max(nbytes, 1))
        return ptr

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        """As :meth:`OnnxPolicy.validate_inputs`; also the batch must fit the engine's profile."""
        validate_arrays(self.manifest.inputs, arrays, self.manifest.model_id)
        for p in self.profiles:
            shape = np.shape(arrays[p.name])
            if any(not lo <= d <= hi for d, lo, hi in zip(shape, p.min, p.max, strict=True)):
                raise PolicyError(
                    f"input {p.name!r} shape {shape} is outside the engine's profile {p.min}..{p.max}; rebuild with "
                    f"a larger max_batch / dims"
                )

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, normalise, copy in, execute, copy out, de-normalise, check (see :meth:`OnnxPolicy.run`)."""
        self.validate_inputs(arrays)
        cudart = self._env.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = []
        for name, value in normalize_inputs(self.manifest, arrays).items():
            host = np.ascontiguousarray(value, dtype=self._dtypes[name])
            hosts.append(host)
            ptr = self._device(name, host.nbytes)
            self._context.set_input_shape(name, host.shape)
            self._context.set_tensor_address(name, ptr)
            _cuda_check(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream), "H2D copy")
        results = []
        for name in self._outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self._dtypes[name])
            self._context.set_tensor_address(name, self._device(name, out.nbytes))
            results.append(out)
        if not self._context.execute_async_v3(int(self._stream)):
            raise PolicyError(f"TensorRT execution of {self.manifest.model_id} failed")
        for name, out in zip(self._outputs, results, strict=True):
            ptr = self._buffers[name][0]
            _cuda_check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self._stream), "D2H copy")
        _cuda_check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        del hosts  # kept alive until the copies finished
        return finish_outputs(self.manifest, results)

    def warmup(self, runs: int = 2) -> None:
        """Run on zeros at the profile's opt shapes."""
        feed = {p.name: np.zeros(p.opt, dtype=self._dtypes[p.name]) for p in self.profiles}
        for _ in range(runs):
            self.run(feed)

    def close(self) -> None:
        """Free device buffers and the stream (the engine goes with the object)."""
        cudart = self._env.cudart
        for ptr, _ in self._buffers.values():
            cudart.cudaFree(ptr)
        self._buffers.clear()
        if self._stream is not None:
            cudart.cudaStreamDestroy(self._stream)
            self._stream = None


# --------------------------------------------------------------------------------- selection / fallback


@dataclass(frozen=True)
class BackendChoice:
    """What :func:`load_policy` picked.

    Attributes:
        policy: the backend to use (``TrtPolicy`` or ``OnnxPolicy``).
        backend: ``"tensorrt"`` or ``"ort"``.
        reason: why ORT was used instead of TensorRT ("" when TensorRT was chosen or not asked for).
        accuracy: the accuracy check of the TensorRT engine, if one ran.
    """

    policy: Any
    backend: str
    reason: str = ""
    accuracy: AccuracyReport | None = None


def select_backend(
    reference: OnnxPolicy, candidate: Any, inputs: Sequence[Mapping[str, np.ndarray]], precision: str
) -> BackendChoice:
    """Use ``candidate`` only if it matches ``reference`` (ONNX Runtime) on ``inputs``; otherwise fall back to
    ``reference`` and log why."""
    report = check_accuracy(reference, candidate, inputs, precision)
    if report.ok:
        log.info("accuracy check passed for %s (%s): %s", reference.manifest.model_id, precision, report.max_abs_err)
        return BackendChoice(candidate, "tensorrt", "", report)
    reason = f"accuracy check against ONNX Runtime failed ({precision}): {report.reason}"
    log.warning("%s — falling back to ONNX Runtime for %s", reason, reference.manifest.model_id)
    return BackendChoice(reference, "ort", reason, report)


def load_policy(
    manifest: PolicyManifest,
    backend: str = "tensorrt",
    *,
    precision: str = "fp16",
    strict: bool = False,
    provider: str | None = None,
    intra_op_threads: int | None = None,
    **trt_kwargs: Any,
) -> Any:
    """The policy backend to serve ``manifest`` with: a checked TensorRT engine, or ONNX Runtime with a logged
    reason. See :func:`choose_backend` for the details; returns only the policy."""
    return choose_backend(
        manifest,
        backend,
        precision=precision,
        strict=strict,
        provider=provider,
        intra_op_threads=intra_op_threads,
        **trt_kwargs,
    ).policy


def choose_backend(
    manifest: PolicyManifest,
    backend: str = "tensorrt",
    *,
    precision: str = "fp16",
    strict: bool = False,
    provider: str | None = None,
    intra_op_threads: int | None = None,
    **trt_kwargs: Any,
) -> BackendChoice:
    """Build/load the TensorRT engine (``backend="tensorrt"``), check it against ONNX Runtime, and fall back to
    ONNX Runtime (``provider``, default the manifest's preference) when anything fails.

    Raises:
        PolicyError: ``strict`` and TensorRT could not be used (the reason says why).
    """
    if backend not in ("tensorrt", "ort"):
        raise ConfigError(f"backend {backend!r} unknown; choose tensorrt or ort")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; choose one of {PRECISIONS}")
    ort_policy = OnnxPolicy(manifest, provider, intra_op_threads=intra_op_threads)
    if backend == "ort":
        return BackendChoice(ort_policy, "ort")
    try:
        candidate = TrtPolicy(manifest, precision, **trt_kwargs)
    except PolicyError as exc:
        if strict:
            raise
        reason = str(exc)
        log.warning("%s — falling back to ONNX Runtime (%s) for %s", reason, ort_policy.provider, manifest.model_id)
        return BackendChoice(ort_policy, "ort", reason)
    reference = ort_policy if ort_policy.provider == "cpu" else OnnxPolicy(manifest, "cpu")
    choice = select_backend(reference, candidate, sample_inputs(manifest, candidate.profiles), precision)
    if choice.backend != "tensorrt":
        if strict:
            raise PolicyError(choice.reason)
        return BackendChoice(ort_policy, "ort", choice.reason, choice.accuracy)
    return choice


# ----------------------------------------------------------------------------------------- compile CLI


@dataclass(frozen=True)
class CompileReport:
    """Result of ``robot-stack compile``: what was built, whether it passed, and latency vs ONNX Runtime.

    ``trt_p50_ms``/``ort_p50_ms`` are per-call latencies at the profile's opt shapes (ORT on its best provider).
    """

    model_id: str
    precision: str
    ok: bool
    backend: str
    reason: str = ""
    engine_path: str = ""
    cache_key: str = ""
    cache_hit: bool = False
    max_abs_err: Mapping[str, float] = field(default_factory=dict)
    trt_p50_ms: float = 0.0
    ort_p50_ms: float = 0.0
    ort_provider: str = ""


def compile_model(
    manifest_path: str | Path,
    precision: str = "fp32",
    *,
    max_batch: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    timing_runs: int = 50,
) -> CompileReport:
    """Build (or load from cache) and validate the engine of a manifest's model (and of its backbone, first, if
    any — the report is the main model's); time it against ONNX Runtime."""
    manifest = PolicyManifest.load(manifest_path)
    opts: dict[str, Any] = {"max_batch": max_batch, "cache_dir": cache_dir, "rebuild": rebuild}
    if manifest.backbone is not None:
        sub = compile_manifest(manifest.backbone_manifest(), precision, timing_runs=0, **opts)
        if not sub.ok:
            return CompileReport(manifest.model_id, precision, False, "ort", f"backbone: {sub.reason}")
    return compile_manifest(manifest, precision, timing_runs=timing_runs, **opts)


def compile_manifest(
    manifest: PolicyManifest,
    precision: str,
    *,
    max_batch: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    timing_runs: int = 50,
) -> CompileReport:
    """:func:`compile_model` for an already loaded manifest (without its backbone)."""
    choice = choose_backend(
        manifest, "tensorrt", precision=precision, max_batch=max_batch, cache_dir=cache_dir, rebuild=rebuild
    )
    acc = dict(choice.accuracy.max_abs_err) if choice.accuracy else {}
    if choice.backend != "tensorrt":
        return CompileReport(manifest.model_id, precision, False, "ort", choice.reason, max_abs_err=acc)
    trt_policy: TrtPolicy = choice.policy
    report = dict(
        model_id=manifest.model_id,
        precision=precision,
        ok=True,
        backend="tensorrt",
        engine_path=str(trt_policy.engine_path),
        cache_key=trt_policy.key.digest(),
        cache_hit=trt_policy.cache_hit,
        max_abs_err=acc,
    )
    if timing_runs:
        feed = sample_inputs(manifest, trt_policy.profiles, shapes=("opt",))[0]
        ort_policy = OnnxPolicy(manifest)  # the manifest's preferred EP (CUDA on a GPU box)
        report["trt_p50_ms"] = round(float(np.median(time_calls(lambda: trt_policy.run(feed), timing_runs))) * 1e3, 4)
        report["ort_p50_ms"] = round(float(np.median(time_calls(lambda: ort_policy.run(feed), timing_runs))) * 1e3, 4)
        report["ort_provider"] = ort_policy.provider
    return CompileReport(**report)  # type: ignore[arg-type]
