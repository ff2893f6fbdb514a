"""Native TensorRT backend: build an engine from the manifest's ONNX model, cache it, run it.

* **Build** (``tensorrt`` Python API; TensorRT 8.6, 10.x and 11.x): the ONNX parser reads the model *from its file*
  (``parse_from_file``), so external weights (models over 2 GB) are found next to it. One optimisation profile
  covers every dynamic dim (:class:`ShapeProfile`; the batch dim spans ``1..max_batch``). Precision:

  - TensorRT <= 10 (weak typing): FP32, ``BuilderFlag.FP16``, ``BuilderFlag.INT8`` with an entropy calibrator fed
    with recorded frames (:mod:`robot_stack.policy.calibration_data`);
  - TensorRT 11 (strongly typed networks only; the FP16/INT8 flags and the calibrator were removed): the precision
    is put into the graph first (:mod:`robot_stack.policy.onnx_variants`: an FP16 copy, or INT8 Q/DQ calibrated
    on recorded frames) and the network is built strongly typed.

  FP32 builds clear ``BuilderFlag.TF32`` unless ``tf32=True`` (TF32 is on by default in TensorRT and would make
  FP32 engines fail an FP32 accuracy gate they do not deserve to fail).
* **Cache**: ``<cache_dir>/<digest>.engine`` (+ ``.json`` with the key). The digest (:func:`engine_cache_key`)
  covers the ONNX file and its external data, the GPU name *and* compute capability (every Jetson Orin reports
  the name "Orin"), the TensorRT version and API generation, precision, TF32, workspace, shape profiles and the
  INT8 calibration data. A cache that cannot be written (read-only, full) is logged and the engine served from
  memory; one that cannot be read is rebuilt.
* **Run**: every engine output is bound (an engine with outputs the manifest does not list still executes); the
  manifest's outputs are returned. Device failures raise :class:`~robot_stack.errors.BackendError`.
* **Release**: :meth:`TrtPolicy.close` frees device buffers, the stream, the execution context and the engine;
  it runs on every failure after the engine was loaded, and when the accuracy gate rejects the engine.

Selection (accuracy gate, memory order, fallback to ONNX Runtime on *any* failure) is
:func:`robot_stack.policy.backends.load_backend`; :func:`choose_backend` / :func:`load_policy` are its TensorRT
entry points. Device memory and copies use the CUDA runtime from ``cuda-python`` (``cuda.bindings.runtime`` or the
older ``cuda.cudart``). Build and inference on a GPU are tested under ``pytest -m gpu``; everything else runs on
the CPU against a fake ``tensorrt``/``cuda`` module built from the real 10.x/11.x Python APIs (tests/fake_gpu.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import BackendError, ConfigError, PolicyError
from robot_stack.policy.accuracy import (
    TOLERANCES,
    AccuracyReport,
    check_accuracy,
    compare_outputs,
    sample_inputs,
)
from robot_stack.policy.gpu_env import (
    CudaRuntime,
    GpuDevice,
    TensorRTInfo,
    cuda_call,
    probe_cuda,
    probe_tensorrt,
)
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.onnx_variants import file_sha256, fp16_variant, int8_qdq_variant, weights_digest
from robot_stack.policy.runtime import finish_outputs, normalize_inputs, validate_arrays

__all__ = [
    "PRECISIONS",
    "TOLERANCES",
    "AccuracyReport",
    "EngineArtifact",
    "EngineKey",
    "ShapeProfile",
    "TrtEnvironment",
    "TrtPolicy",
    "arrays_sha256",
    "check_accuracy",
    "choose_backend",
    "compare_outputs",
    "default_profiles",
    "engine_cache_key",
    "file_sha256",
    "load_policy",
    "prepare_engine",
    "sample_inputs",
    "select_backend",
    "trt_environment",
]

log = logging.getLogger("robot_stack.policy.tensorrt")

PRECISIONS = ("fp32", "fp16", "int8")
_CACHE_FORMAT = 2
_HEX = frozenset("0123456789abcdef")


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
    """Everything an engine depends on. Two keys are equal iff their :meth:`digest` is.

    Attributes:
        onnx_sha256: the ``.onnx`` file. external_data_sha256: its external weight files ("" when none).
        gpu: GPU name (whitespace normalised). compute_capability: ``"8.7"``; multiprocessors: SM count (names
            are ambiguous: every Jetson Orin says "Orin", and Orin Nano, NX and AGX all are sm 8.7).
        trt_version: TensorRT version. strongly_typed: built as a strongly typed network (TensorRT 11 API).
        precision: fp32 | fp16 | int8. tf32: TF32 math allowed in FP32 layers. workspace_bytes: builder workspace.
        calibration_sha256: the INT8 calibration inputs ("" for other precisions).
        profiles: the shape profiles, sorted by input name.
    """

    onnx_sha256: str
    gpu: str
    trt_version: str
    precision: str
    profiles: tuple[ShapeProfile, ...]
    external_data_sha256: str = ""
    compute_capability: str = ""
    workspace_bytes: int = 0
    tf32: bool = False
    calibration_sha256: str = ""
    strongly_typed: bool = False
    multiprocessors: int = 0

    def canonical(self) -> str:
        """Canonical JSON (sorted keys, profiles sorted by name, no whitespace): the hashed text."""
        data = {
            "format": _CACHE_FORMAT,
            "onnx_sha256": self.onnx_sha256,
            "external_data_sha256": self.external_data_sha256,
            "gpu": self.gpu,
            "compute_capability": self.compute_capability,
            "multiprocessors": self.multiprocessors,
            "trt_version": self.trt_version,
            "strongly_typed": self.strongly_typed,
            "precision": self.precision,
            "tf32": self.tf32,
            "workspace_bytes": self.workspace_bytes,
            "calibration_sha256": self.calibration_sha256,
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
    onnx_sha256: str,
    gpu: str,
    trt_version: str,
    precision: str,
    profiles: Sequence[ShapeProfile],
    *,
    external_data_sha256: str = "",
    compute_capability: str = "",
    workspace_bytes: int = 0,
    tf32: bool = False,
    calibration_sha256: str = "",
    strongly_typed: bool = False,
    multiprocessors: int = 0,
) -> EngineKey:
    """Build the (deterministic) cache key of an engine; GPU name whitespace is normalised, profile order ignored.

    Raises:
        ConfigError: unknown precision, malformed hash or compute capability, negative workspace, INT8 without
            calibration data (or calibration data for another precision), or two profiles for one input.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; choose one of {PRECISIONS}")
    for label, value, optional in (
        ("onnx_sha256", onnx_sha256, False),
        ("external_data_sha256", external_data_sha256, True),
        ("calibration_sha256", calibration_sha256, True),
    ):
        if (value or not optional) and (len(value) != 64 or not set(value) <= _HEX):
            raise ConfigError(f"{label} must be 64 lowercase hex chars, got {value!r:.80}")
    if compute_capability and not all(p.isdigit() for p in compute_capability.split(".", 1)):
        raise ConfigError(f"compute_capability must look like '8.7', got {compute_capability!r}")
    if int(workspace_bytes) < 0:
        raise ConfigError(f"workspace_bytes must be >= 0, got {workspace_bytes}")
    if (precision == "int8") != bool(calibration_sha256):
        raise ConfigError("calibration_sha256 is required for int8 and only for int8")
    names = [p.name for p in profiles]
    if len(set(names)) != len(names):
        raise ConfigError(f"one shape profile per input, got {names}")
    ordered = tuple(sorted(profiles, key=lambda p: p.name))
    return EngineKey(
        onnx_sha256,
        " ".join(gpu.split()),
        str(trt_version),
        precision,
        ordered,
        external_data_sha256,
        compute_capability,
        int(workspace_bytes),
        bool(tf32),
        calibration_sha256,
        bool(strongly_typed),
        int(multiprocessors),
    )


def arrays_sha256(sets: Sequence[Mapping[str, np.ndarray]]) -> str:
    """SHA-256 over input sets (names sorted; dtype, shape and bytes of each array): the calibration data's key."""
    digest = hashlib.sha256()
    for k, arrays in enumerate(sets):
        for name in sorted(arrays):
            a = np.ascontiguousarray(arrays[name])
            digest.update(f"{k}:{name}:{a.dtype.str}:{a.shape}\n".encode())
            digest.update(a.tobytes())
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


# ------------------------------------------------------------------------------------ environment probe


@dataclass(frozen=True)
class TrtEnvironment:
    """What a native TensorRT engine needs: the ``tensorrt`` module (and its API generation), the CUDA runtime
    bindings and the GPU the engine is for."""

    info: TensorRTInfo
    cuda: CudaRuntime
    device: GpuDevice

    @property
    def trt(self) -> Any:
        return self.info.trt

    @property
    def cudart(self) -> Any:
        return self.cuda.cudart

    @property
    def version(self) -> str:
        return self.info.version

    @property
    def gpu(self) -> str:
        return self.device.name


def trt_environment(device: int = 0) -> TrtEnvironment | str:
    """The TensorRT module, the CUDA runtime bindings and GPU ``device``; or a string saying why the native
    TensorRT path cannot run here (with what to install)."""
    info = probe_tensorrt()
    if isinstance(info, str):
        return info
    cuda = probe_cuda()
    if isinstance(cuda, str):
        return cuda
    if not 0 <= device < len(cuda.devices):
        return f"CUDA device {device} does not exist ({len(cuda.devices)} visible)"
    return TrtEnvironment(info, cuda, cuda.devices[device])


# --------------------------------------------------------------------------------------- engine build


def _build_engine(
    env: TrtEnvironment,
    manifest: PolicyManifest,
    precision: str,
    profiles: Sequence[ShapeProfile],
    calibration: Sequence[Mapping[str, np.ndarray]] | None,
    workspace_bytes: int,
    tf32: bool,
) -> bytes:
    """Build and serialize an engine. Builder, network, parser and config are released before returning."""
    trt, info = env.trt, env.info
    feeds = [normalize_inputs(manifest, c) for c in calibration] if calibration else []
    if precision == "int8" and not feeds:
        raise PolicyError(
            f"INT8 needs calibration data for {manifest.model_id}: recorded frames (robot-stack compile --int8 "
            f"--calibration-data DATASET); random inputs would calibrate the wrong ranges"
        )
    with tempfile.TemporaryDirectory(prefix="robot-stack-trt-") as tmp:
        source = manifest.onnx_path
        flags = 0
        if info.strongly_typed_only:  # TensorRT 11: precision lives in the graph
            if precision == "fp16":
                source = fp16_variant(manifest.onnx_path, Path(tmp) / "model-fp16.onnx")
            elif precision == "int8":
                source = int8_qdq_variant(manifest.onnx_path, Path(tmp) / "model-int8-qdq.onnx", feeds)
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)  # deprecated no-op in 11.x
        elif info.major < 10:  # explicit batch is the only mode (and the flag deprecated) from 10.0
            flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(source)):  # from the file: external weights are found next to it
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise PolicyError(f"TensorRT cannot parse {source}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
        if tf32:
            config.set_flag(trt.BuilderFlag.TF32)
        else:
            config.clear_flag(trt.BuilderFlag.TF32)  # on by default; FP32 engines are held to FP32 accuracy
        profile = builder.create_optimization_profile()
        for p in profiles:
            profile.set_shape(p.name, p.min, p.opt, p.max)
        config.add_optimization_profile(profile)
        calibrator = None
        if not info.strongly_typed_only:
            if precision in ("fp16", "int8"):
                config.set_flag(trt.BuilderFlag.FP16)
            if precision == "int8":
                if not info.int8_calibrator:
                    raise PolicyError(f"TensorRT {info.version} has no INT8 calibrator API")
                config.set_flag(trt.BuilderFlag.INT8)
                calibrator = _make_calibrator(env, feeds)
                config.int8_calibrator = calibrator
                config.set_calibration_profile(profile)
        t0 = time.perf_counter()
        try:
            serialized = builder.build_serialized_network(network, config)
        finally:
            if calibrator is not None:
                calibrator.free()
        if serialized is None:
            raise PolicyError(f"TensorRT failed to build an engine for {manifest.onnx_path} ({precision}); see its log")
        blob = bytes(serialized)
        del serialized, parser, network, config, builder  # release the builder's memory before the engine loads
    log.info(
        "built %s engine for %s (TensorRT %s, %s) in %.1f s",
        precision,
        manifest.model_id,
        info.version,
        "strongly typed" if info.strongly_typed_only else "weakly typed",
        time.perf_counter() - t0,
    )
    return blob


def _make_calibrator(env: TrtEnvironment, feeds: Sequence[Mapping[str, np.ndarray]]) -> Any:
    """An ``IInt8EntropyCalibrator2`` (TensorRT <= 10) that feeds the normalised calibration sets one at a time."""
    trt, cudart = env.trt, env.cudart

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
                        cuda_call(cudart.cudaFree(ptr), "cudaFree")
                    ptr, size = int(cuda_call(cudart.cudaMalloc(host.nbytes), "cudaMalloc")), host.nbytes
                    self._ptrs[name] = (ptr, size)
                kind = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                cuda_call(cudart.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy")
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


# ---------------------------------------------------------------------------------------- engine cache


@dataclass(frozen=True)
class EngineArtifact:
    """A serialized engine ready to load, and where it came from.

    Attributes:
        blob: the serialized engine. key: its :class:`EngineKey`. path: its cache file.
        cache_hit: loaded from the cache rather than built. cache_error: why it could not be written to (or read
            from) the cache ("" when it was). profiles: the shape profiles it was built for.
    """

    blob: bytes
    key: EngineKey
    path: Path
    cache_hit: bool
    cache_error: str
    profiles: tuple[ShapeProfile, ...]


def prepare_engine(
    manifest: PolicyManifest,
    precision: str = "fp16",
    *,
    env: TrtEnvironment | None = None,
    cache_dir: str | Path | None = None,
    max_batch: int | None = None,
    dims: Mapping[str, Sequence[tuple[int, int, int]]] | None = None,
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None,
    workspace_mb: int = 1024,
    rebuild: bool = False,
    tf32: bool = False,
) -> EngineArtifact:
    """Load the engine from the cache, or build it (and try to cache it). No device memory stays allocated.

    Args:
        calibration: INT8 calibration input sets, raw (request) units, e.g. from
            :func:`robot_stack.policy.calibration_data.recorded_frames`; required for ``int8``.

    Raises:
        BackendError: TensorRT/CUDA/GPU unusable. PolicyError: missing model files, the parse or build failed.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} unknown; choose one of {PRECISIONS}")
    env = env or _environment()
    if not manifest.onnx_path.is_file():
        raise PolicyError(f"model file {manifest.onnx_path} not found")
    profiles = default_profiles(manifest, max_batch, dims)
    onnx_sha, ext_sha = weights_digest(manifest.onnx_path)
    calib_sha = arrays_sha256(calibration) if precision == "int8" and calibration else ""
    if precision == "int8" and not calib_sha:
        raise PolicyError(
            f"INT8 needs calibration data for {manifest.model_id}: recorded frames (robot-stack compile --int8 "
            f"--calibration-data DATASET)"
        )
    key = engine_cache_key(
        onnx_sha,
        env.gpu,
        env.version,
        precision,
        profiles,
        external_data_sha256=ext_sha,
        compute_capability=env.device.sm,
        workspace_bytes=int(workspace_mb) << 20,
        tf32=tf32,
        calibration_sha256=calib_sha,
        strongly_typed=env.info.strongly_typed_only,
        multiprocessors=env.device.multiprocessors,
    )
    folder = Path(cache_dir) if cache_dir else manifest.onnx_path.parent / ".trt_engines"
    path = folder / f"{key.digest()}.engine"
    if path.is_file() and not rebuild:
        try:
            blob = path.read_bytes()
            log.info("engine cache hit: %s", path)
            return EngineArtifact(blob, key, path, True, "", profiles)
        except OSError as exc:
            log.warning("cannot read cached engine %s (%s); rebuilding", path, exc)
    blob = _build_engine(env, manifest, precision, profiles, calibration, int(workspace_mb) << 20, tf32)
    error = _store(path, blob, key, manifest)
    return EngineArtifact(blob, key, path, False, error, profiles)


def _store(path: Path, blob: bytes, key: EngineKey, manifest: PolicyManifest) -> str:
    """Write the engine atomically (a concurrent reader never sees half of it); "" or why it could not."""
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        tmp.replace(path)
        path.with_suffix(".json").write_text(
            json.dumps({"key": json.loads(key.canonical()), "model_id": manifest.model_id}, indent=1)
        )
        return ""
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        reason = f"engine cache {path.parent} is not writable ({type(exc).__name__}: {exc})"
        log.warning("%s; serving the engine from memory, it will be rebuilt at the next start", reason)
        return reason


def _environment() -> TrtEnvironment:
    env = trt_environment()
    if isinstance(env, str):
        raise BackendError(f"native TensorRT unavailable: {env}")
    return env


# -------------------------------------------------------------------------------------------- runtime


class TrtPolicy:
    """Run a manifest's model as a TensorRT engine (same contract as :class:`OnnxPolicy`: ``run``,
    ``validate_inputs``, ``warmup``, ``close``, ``manifest``, ``provider``).

    Args:
        manifest: the model description (its ONNX file is what gets built).
        precision: ``fp32`` | ``fp16`` | ``int8``.
        artifact: a prepared engine (:func:`prepare_engine`); None = prepare it now with the keyword options
            (``cache_dir``, ``max_batch``, ``dims``, ``calibration``, ``workspace_mb``, ``rebuild``, ``tf32``).

    Attributes:
        key, engine_path, cache_hit, cache_error, profiles: from the artifact.

    Raises:
        BackendError: TensorRT/CUDA/GPU missing, the engine does not deserialize, no execution context, or a CUDA
            call fails (everything allocated so far is released first). PolicyError: parse/build failure, or the
            engine's tensors do not match the manifest.
    """

    def __init__(
        self,
        manifest: PolicyManifest,
        precision: str = "fp16",
        *,
        artifact: EngineArtifact | None = None,
        env: TrtEnvironment | None = None,
        **prepare: Any,
    ) -> None:
        self.manifest = manifest
        self.precision = precision
        self.provider = f"tensorrt-native-{precision}"
        self._env = env or _environment()
        self._buffers: dict[str, tuple[int, int]] = {}
        self._stream: Any = None
        self._context: Any = None
        self._engine: Any = None
        self._runtime: Any = None
        artifact = artifact or prepare_engine(manifest, precision, env=self._env, **prepare)
        self.key, self.engine_path, self.cache_hit = artifact.key, artifact.path, artifact.cache_hit
        self.cache_error, self.profiles = artifact.cache_error, artifact.profiles
        try:
            self._load(artifact.blob)
        except BaseException:
            self.close()
            raise

    def _load(self, blob: bytes) -> None:
        trt, cudart = self._env.trt, self._env.cudart
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self._engine = self._runtime.deserialize_cuda_engine(blob)
        if self._engine is None:
            raise BackendError(
                f"TensorRT {self._env.version} cannot deserialize {self.engine_path} (built by another version or "
                f"GPU, or damaged); delete it or rebuild"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {self.manifest.model_id} (out of device "
                f"memory on {self._env.gpu}?)"
            )
        self._stream = cuda_call(cudart.cudaStreamCreate(), "cudaStreamCreate")
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        modes = {n: self._engine.get_tensor_mode(n) for n in names}
        self._inputs = [n for n in names if modes[n] == trt.TensorIOMode.INPUT]
        self._all_outputs = [n for n in names if modes[n] == trt.TensorIOMode.OUTPUT]
        self._outputs = [t.name for t in self.manifest.outputs]
        declared_in = {t.name for t in self.manifest.inputs}
        if set(self._inputs) != declared_in:
            raise PolicyError(
                f"engine {self.engine_path} has inputs {sorted(self._inputs)} but the manifest declares "
                f"{sorted(declared_in)}"
            )
        missing = sorted(set(self._outputs) - set(self._all_outputs))
        if missing:
            raise PolicyError(f"engine {self.engine_path} lacks outputs {missing} the manifest declares")
        extra = sorted(set(self._all_outputs) - set(self._outputs))
        if extra:
            log.info(
                "engine %s has outputs the manifest does not list (bound, not returned): %s",
                self.key.digest()[:12],
                extra,
            )
        self._dtypes: dict[str, np.dtype] = {}
        for n in names:
            try:
                self._dtypes[n] = np.dtype(trt.nptype(self._engine.get_tensor_dtype(n)))
            except TypeError as exc:
                raise BackendError(
                    f"engine tensor {n!r} has a TensorRT type without a numpy equivalent ({exc})"
                ) from exc

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < max(nbytes, 1):
            cudart = self._env.cudart
            if ptr:
                cuda_call(cudart.cudaFree(ptr), "cudaFree")
                del self._buffers[name]
            ptr = int(cuda_call(cudart.cudaMalloc(max(nbytes, 1)), "cudaMalloc"))
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
        """Validate, normalise, copy in, execute (every output bound), copy out, de-normalise, check."""
        self.validate_inputs(arrays)
        if self._context is None:
            raise BackendError(f"TensorRT policy {self.manifest.model_id} was closed")
        cudart = self._env.cudart
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        hosts = []
        for name, value in normalize_inputs(self.manifest, arrays).items():
            host = np.ascontiguousarray(value, dtype=self._dtypes[name])
            hosts.append(host)
            ptr = self._device(name, host.nbytes)
            if not self._context.set_input_shape(name, host.shape):
                raise BackendError(f"TensorRT rejected input shape {host.shape} for {name!r}")
            self._context.set_tensor_address(name, ptr)
            cuda_call(cudart.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, h2d, self._stream), "H2D copy")
        results: dict[str, np.ndarray] = {}
        for name in self._all_outputs:
            shape = tuple(self._context.get_tensor_shape(name))
            out = np.empty(shape, dtype=self._dtypes[name])
            self._context.set_tensor_address(name, self._device(name, out.nbytes))
            results[name] = out
        if not self._context.execute_async_v3(int(self._stream)):
            raise BackendError(f"TensorRT execution of {self.manifest.model_id} failed (see the TensorRT log)")
        for name in self._outputs:
            out = results[name]
            ptr = self._buffers[name][0]
            cuda_call(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, d2h, self._stream), "D2H copy")
        cuda_call(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        del hosts  # kept alive until the copies finished
        return finish_outputs(self.manifest, [results[n] for n in self._outputs])

    def warmup(self, runs: int = 2) -> None:
        """Run on zeros at the profile's opt shapes."""
        feed = {p.name: np.zeros(p.opt, dtype=self._dtypes[p.name]) for p in self.profiles}
        for _ in range(runs):
            self.run(feed)

    @property
    def closed(self) -> bool:
        return self._engine is None and self._stream is None and not self._buffers

    def close(self) -> None:
        """Free device buffers and the stream, release the execution context, engine and runtime. Idempotent;
        never raises (it runs on failure paths)."""
        cudart = self._env.cudart
        for ptr, _ in self._buffers.values():
            try:
                cudart.cudaFree(ptr)
            except Exception as exc:  # pragma: no cover - a dying device
                log.warning("cudaFree failed while closing: %s", exc)
        self._buffers.clear()
        if self._stream is not None:
            try:
                cudart.cudaStreamDestroy(self._stream)
            except Exception as exc:  # pragma: no cover
                log.warning("cudaStreamDestroy failed while closing: %s", exc)
            self._stream = None
        self._context = None  # TensorRT frees an object when its last reference goes: context, engine, runtime
        self._engine = None
        self._runtime = None


# --------------------------------------------------------------------------------- selection / fallback


def select_backend(reference: Any, candidate: Any, inputs: Sequence[Mapping[str, np.ndarray]], precision: str) -> Any:
    """Use ``candidate`` only if it matches ``reference`` (ONNX Runtime) on ``inputs``; otherwise fall back to
    ``reference`` and log why. Returns a :class:`~robot_stack.policy.backends.BackendChoice`."""
    from robot_stack.policy.backends import BackendChoice

    report = check_accuracy(reference, candidate, inputs, precision)
    if report.ok:
        log.info("accuracy check passed for %s (%s): %s", reference.manifest.model_id, precision, report.max_abs_err)
        return BackendChoice(candidate, "tensorrt", "", report)
    reason = f"accuracy check against ONNX Runtime failed ({precision}): {report.reason}"
    log.warning("%s — falling back to ONNX Runtime for %s", reason, reference.manifest.model_id)
    return BackendChoice(reference, "ort", reason, report)


def choose_backend(
    manifest: PolicyManifest,
    backend: str = "tensorrt",
    *,
    precision: str = "fp16",
    strict: bool = False,
    provider: str | None = None,
    intra_op_threads: int | None = None,
    **trt_kwargs: Any,
) -> Any:
    """A gated TensorRT engine (``backend="tensorrt"``), or ONNX Runtime with the logged reason when anything fails
    (see :func:`robot_stack.policy.backends.load_backend`). Returns a ``BackendChoice``.

    Raises:
        PolicyError: ``strict`` and TensorRT could not be used (the reason says why).
    """
    if backend not in ("tensorrt", "ort"):
        raise ConfigError(f"backend {backend!r} unknown; choose tensorrt or ort")
    from robot_stack.policy.backends import load_backend

    return load_backend(
        manifest,
        backend,
        provider=provider,
        precision=precision,
        strict=strict,
        threads=intra_op_threads,
        trt_options=trt_kwargs,
    )


def load_policy(manifest: PolicyManifest, backend: str = "tensorrt", **kwargs: Any) -> Any:
    """The policy of :func:`choose_backend` (a checked TensorRT engine, or ONNX Runtime with a logged reason)."""
    return choose_backend(manifest, backend, **kwargs).policy
