"""Test helper (not a test file): fake ``tensorrt`` and ``cuda`` (cuda-python) modules at the library boundary.

No GPU exists on the machines this suite runs on, so the GPU paths are driven through these fakes. They follow the
real Python APIs — the names below were read from the pybind11 modules of ``tensorrt_cu12_bindings`` 10.16.1.11 and
11.4.0.106 (their ``tensorrt.so`` symbol/docstring tables) and NVIDIA's 10.x -> 11.x migration notes:

* TensorRT <= 10: ``BuilderFlag.FP16/BF16/INT8/TF32/...``, ``NetworkDefinitionCreationFlag.EXPLICIT_BATCH`` (0,
  ignored since 10.0) and ``STRONGLY_TYPED`` (1), ``IInt8EntropyCalibrator2``, ``IBuilderConfig.int8_calibrator``,
  ``set_calibration_profile``, ``Builder.platform_has_fast_fp16/tf32``;
* TensorRT 11: none of those precision flags, calibrators or platform queries (``STRONGLY_TYPED`` = 0, kept and
  ignored: every network is strongly typed); ``TF32`` stays.
* both: ``OnnxParser.parse(model, path=None)`` / ``parse_from_file(path)``, ``set_memory_pool_limit``,
  ``build_serialized_network`` (None on failure), ``Runtime.deserialize_cuda_engine`` (None for a foreign or
  damaged plan), ``ICudaEngine.num_io_tensors/get_tensor_name/get_tensor_mode/get_tensor_dtype``,
  ``create_execution_context`` (None when it cannot allocate), ``IExecutionContext.set_input_shape/
  set_tensor_address/get_tensor_shape/execute_async_v3`` (False when an I/O tensor has no address), ``nptype``
  (``TypeError`` for types without a numpy twin), ``trt.Builder`` raising ``TypeError`` when CUDA cannot initialise
  (pybind11's "factory function returned nullptr");
* cuda-python runtime: every call returns ``(cudaError_t, *values)``; ``cudaGetDeviceCount`` returns
  ``cudaErrorInsufficientDriver`` (35) when the bindings are newer than the driver.

The fake engine really computes: it runs the ONNX file the parser read (or the strongly typed FP16/INT8 variant)
with ONNX Runtime on the CPU, reading and writing the fake device memory that the caller allocated and copied to.
Reduced precision of weakly typed builds is emulated (FP16: outputs rounded through float16; INT8: an 8-bit grid;
TF32 left on: a deterministic 2e-3 relative error, the size TF32 accumulation reaches in deep layers). Every call is
recorded in ``calls``; faults are injected by name (see :class:`Faults`).
"""

# ruff: noqa: N802, N815 - the fakes keep the real APIs' names (cudaMalloc, cudaSuccess, ...)
from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime

_RealSession = onnxruntime.InferenceSession  # captured before any test patches onnxruntime

# ------------------------------------------------------------------------------------------------ cuda


class cudaError_t(enum.IntEnum):  # noqa: N801 - the real name
    cudaSuccess = 0
    cudaErrorInvalidValue = 1
    cudaErrorMemoryAllocation = 2
    cudaErrorInsufficientDriver = 35
    cudaErrorNoDevice = 100


class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
    cudaMemcpyHostToHost = 0
    cudaMemcpyHostToDevice = 1
    cudaMemcpyDeviceToHost = 2
    cudaMemcpyDeviceToDevice = 3


class _Stream:
    def __init__(self, handle: int) -> None:
        self.handle = handle

    def __int__(self) -> int:
        return self.handle


@dataclass
class FakeCuda:
    """State of the fake CUDA runtime: device memory (ptr -> bytearray), streams, and the recorded calls."""

    driver: tuple[int, int] = (12, 9)
    bindings_version: str = "12.9.10"
    devices: tuple[dict[str, Any], ...] = (
        {
            "name": "NVIDIA H200",
            "major": 9,
            "minor": 0,
            "totalGlobalMem": 143 << 30,
            "integrated": 0,
            "multiProcessorCount": 132,
        },
    )
    memory: dict[int, bytearray] = field(default_factory=dict)
    streams: set[int] = field(default_factory=set)
    calls: list[tuple[str, Any]] = field(default_factory=list)
    _next: int = 0x7F0000000000

    def _ok(self, *values: Any) -> tuple[Any, ...]:
        return (cudaError_t.cudaSuccess, *values)

    def _usable(self) -> cudaError_t:
        if int(self.bindings_version.split(".")[0]) > self.driver[0]:
            return cudaError_t.cudaErrorInsufficientDriver
        return cudaError_t.cudaSuccess if self.devices else cudaError_t.cudaErrorNoDevice

    def module(self) -> types.ModuleType:
        m = types.ModuleType("cuda.bindings.runtime")
        m.cudaError_t = cudaError_t
        m.cudaMemcpyKind = cudaMemcpyKind
        s = self

        def rec(name: str, *args: Any) -> None:
            s.calls.append((name, args))

        def cudaDriverGetVersion() -> tuple[Any, ...]:
            return s._ok(s.driver[0] * 1000 + s.driver[1] * 10)

        def cudaRuntimeGetVersion() -> tuple[Any, ...]:
            major, minor = (int(p) for p in s.bindings_version.split(".")[:2])
            return s._ok(major * 1000 + minor * 10)

        def cudaGetDeviceCount() -> tuple[Any, ...]:
            err = s._usable()
            return (err, len(s.devices) if err == 0 else 0)

        def cudaGetDeviceProperties(i: int) -> tuple[Any, ...]:
            if s._usable() != 0 or not 0 <= i < len(s.devices):
                return (cudaError_t.cudaErrorInvalidValue, None)
            d = s.devices[i]
            return s._ok(SimpleNamespace(**{**d, "name": d["name"].encode() + b"\x00" * 8}))

        def cudaMalloc(n: int) -> tuple[Any, ...]:
            rec("cudaMalloc", n)
            ptr = s._next
            s._next += max(int(n), 1) + 256
            s.memory[ptr] = bytearray(max(int(n), 1))
            return s._ok(ptr)

        def cudaFree(ptr: int) -> tuple[Any, ...]:
            rec("cudaFree", ptr)
            if s.memory.pop(int(ptr), None) is None:
                return (cudaError_t.cudaErrorInvalidValue,)
            return s._ok()

        def _copy(dst: int, src: int, n: int, kind: int) -> cudaError_t:
            if kind == cudaMemcpyKind.cudaMemcpyHostToDevice:
                buf = s.memory.get(int(dst))
                if buf is None or len(buf) < n:
                    return cudaError_t.cudaErrorInvalidValue
                buf[:n] = ctypes.string_at(int(src), n)
            elif kind == cudaMemcpyKind.cudaMemcpyDeviceToHost:
                buf = s.memory.get(int(src))
                if buf is None or len(buf) < n:
                    return cudaError_t.cudaErrorInvalidValue
                ctypes.memmove(int(dst), bytes(buf[:n]), n)
            else:
                return cudaError_t.cudaErrorInvalidValue
            return cudaError_t.cudaSuccess

        def cudaMemcpy(dst: int, src: int, n: int, kind: int) -> tuple[Any, ...]:
            rec("cudaMemcpy", (n, int(kind)))
            return (_copy(dst, src, n, kind),)

        def cudaMemcpyAsync(dst: int, src: int, n: int, kind: int, stream: Any) -> tuple[Any, ...]:
            rec("cudaMemcpyAsync", (n, int(kind)))
            if int(stream) not in s.streams:
                return (cudaError_t.cudaErrorInvalidValue,)
            return (_copy(dst, src, n, kind),)

        def cudaStreamCreate() -> tuple[Any, ...]:
            rec("cudaStreamCreate")
            handle = 0x5000 + len(s.calls)
            s.streams.add(handle)
            return s._ok(_Stream(handle))

        def cudaStreamSynchronize(stream: Any) -> tuple[Any, ...]:
            return s._ok() if int(stream) in s.streams else (cudaError_t.cudaErrorInvalidValue,)

        def cudaStreamDestroy(stream: Any) -> tuple[Any, ...]:
            rec("cudaStreamDestroy", int(stream))
            s.streams.discard(int(stream))
            return s._ok()

        for fn in (
            cudaDriverGetVersion,
            cudaRuntimeGetVersion,
            cudaGetDeviceCount,
            cudaGetDeviceProperties,
            cudaMalloc,
            cudaFree,
            cudaMemcpy,
            cudaMemcpyAsync,
            cudaStreamCreate,
            cudaStreamSynchronize,
            cudaStreamDestroy,
        ):
            setattr(m, fn.__name__, fn)
        return m


# ------------------------------------------------------------------------------------------- tensorrt


@dataclass
class Faults:
    """What the fake TensorRT does wrong.

    Attributes:
        builder_typeerror: ``trt.Builder(logger)`` raises TypeError (CUDA cannot initialise, e.g. an old driver).
        context_none: ``create_execution_context()`` returns None (no device memory).
        extra_output: the engine has an output the manifest does not list (``debug/extra``).
        execute_fails_after: ``execute_async_v3`` raises RuntimeError after this many successful calls.
        channel_bias: (output, channel, value) added to one output channel (a subtly wrong engine).
        nan_bias: value added to every output when an input holds NaN (an engine that mishandles NaN).
        parse_fails: the parser reports an error.
    """

    builder_typeerror: bool = False
    context_none: bool = False
    extra_output: bool = False
    execute_fails_after: int | None = None
    channel_bias: tuple[str, int, float] | None = None
    nan_bias: float = 0.0
    parse_fails: bool = False


_FLAGS_10 = [
    "FP16",
    "BF16",
    "INT8",
    "DEBUG",
    "GPU_FALLBACK",
    "REFIT",
    "DISABLE_TIMING_CACHE",
    "EDITABLE_TIMING_CACHE",
    "TF32",
    "SPARSE_WEIGHTS",
    "SAFETY_SCOPE",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
    "DIRECT_IO",
    "REJECT_EMPTY_ALGORITHMS",
    "VERSION_COMPATIBLE",
    "EXCLUDE_LEAN_RUNTIME",
    "FP8",
    "ERROR_ON_TIMING_CACHE_MISS",
    "DISABLE_COMPILATION_CACHE",
    "WEIGHTLESS",
    "STRIP_PLAN",
    "REFIT_IDENTICAL",
    "WEIGHT_STREAMING",
    "INT4",
    "REFIT_INDIVIDUAL",
    "STRICT_NANS",
    "MONITOR_MEMORY",
    "FP4",
    "DISTRIBUTIVE_INDEPENDENCE",
]
#: Removed in TensorRT 11 (migration notes: strong typing / explicit quantization replace them).
_REMOVED_IN_11 = {
    "FP16",
    "BF16",
    "INT8",
    "FP8",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
    "REJECT_EMPTY_ALGORITHMS",
    "WEIGHTLESS",
}
_FLAGS_11 = [f for f in _FLAGS_10 if f not in _REMOVED_IN_11]
_ORT_TO_TRT = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(bfloat16)": "bfloat16",
}
_MAGIC = b"FAKE-TRT-PLAN\n"


class FakeTensorRT:
    """Builds a fake ``tensorrt`` module of a given version (:meth:`module`) over a :class:`FakeCuda`.

    Attributes:
        calls: (name, detail) of every builder/runtime call of interest. events: lifecycle events
            (``build``, ``engine+``, ``engine-``, ``context+``, ``context-``) in order, shared with tests that track
            memory order. live_engines: engines not yet released.
    """

    def __init__(self, version: str, cuda: FakeCuda, faults: Faults | None = None, events: list[str] | None = None):
        self.version = version
        self.major = int(version.split(".")[0])
        self.cuda = cuda
        self.faults = faults or Faults()
        self.calls: list[tuple[str, Any]] = []
        self.events = events if events is not None else []
        self.live_engines = 0
        self.executions = 0

    # the module ------------------------------------------------------------------------------------------
    def module(self) -> types.ModuleType:  # noqa: C901 - one closure per API class, as the bindings are
        fake = self
        m = types.ModuleType("tensorrt")
        m.__version__ = self.version
        weak = self.major <= 10

        class DataType(enum.IntEnum):
            FLOAT = 0
            HALF = 1
            INT8 = 2
            INT32 = 3
            BOOL = 4
            UINT8 = 5
            FP8 = 6
            BF16 = 7
            INT64 = 8

        m.DataType = DataType
        for alias, member in (
            ("float32", DataType.FLOAT),
            ("float16", DataType.HALF),
            ("int8", DataType.INT8),
            ("int32", DataType.INT32),
            ("bool", DataType.BOOL),
            ("uint8", DataType.UINT8),
            ("fp8", DataType.FP8),
            ("bfloat16", DataType.BF16),
            ("int64", DataType.INT64),
        ):
            setattr(m, alias, member)

        def nptype(trt_type: Any) -> Any:  # as tensorrt_bindings/__init__.py
            mapping = {
                DataType.FLOAT: np.float32,
                DataType.HALF: np.float16,
                DataType.INT8: np.int8,
                DataType.INT32: np.int32,
                DataType.INT64: np.int64,
                DataType.BOOL: np.bool_,
                DataType.UINT8: np.uint8,
            }
            if trt_type in mapping:
                return mapping[trt_type]
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")

        m.nptype = nptype
        m.BuilderFlag = enum.IntEnum("BuilderFlag", {n: i for i, n in enumerate(_FLAGS_10 if weak else _FLAGS_11)})
        creation = {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1} if weak else {"STRONGLY_TYPED": 0}
        m.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", creation)
        m.MemoryPoolType = enum.IntEnum("MemoryPoolType", {"WORKSPACE": 0, "DLA_MANAGED_SRAM": 1, "TACTIC_DRAM": 4})
        m.TensorIOMode = enum.IntEnum("TensorIOMode", {"NONE": 0, "INPUT": 1, "OUTPUT": 2})

        class Logger:
            VERBOSE, INFO, WARNING, ERROR, INTERNAL_ERROR = 4, 3, 2, 1, 0

            def __init__(self, min_severity: int = 2) -> None:
                self.min_severity = min_severity

        m.Logger = Logger

        class ParserError:
            def __init__(self, text: str) -> None:
                self._text = text

            def desc(self) -> str:
                return self._text

            def __str__(self) -> str:
                return f"In node -1 with name:  and operator:  (parse): INVALID_GRAPH: {self._text}"

        class INetworkDefinition:
            def __init__(self, flags: int) -> None:
                self.flags = flags
                self.onnx_path: str | None = None
                self.model: bytes | None = None  # what parse(bytes) was given

        class OnnxParser:
            def __init__(self, network: INetworkDefinition, logger: Logger) -> None:
                self.network = network
                self._errors: list[ParserError] = []

            @property
            def num_errors(self) -> int:
                return len(self._errors)

            def get_error(self, i: int) -> ParserError:
                return self._errors[i]

            def parse(self, model: bytes, path: str | None = None) -> bool:
                fake.calls.append(("parse", path))
                import onnx
                from onnx.external_data_helper import _get_all_tensors, uses_external_data

                proto = onnx.load_from_string(bytes(model))
                if any(uses_external_data(t) for t in _get_all_tensors(proto)) and path is None:
                    loc = next(e.value for t in _get_all_tensors(proto) for e in t.external_data if e.key == "location")
                    self._errors.append(ParserError(f"Failed to open file: {loc} (external weights need the path)"))
                    return False
                self.network.model = bytes(model) if path is None else None
                return self._accept(path)

            def parse_from_file(self, path: str) -> bool:
                fake.calls.append(("parse_from_file", path))
                return self._accept(path)

            def _accept(self, path: str | None) -> bool:
                if fake.faults.parse_fails:
                    self._errors.append(ParserError("unsupported operator"))
                    return False
                self.network.onnx_path = path
                return True

        class IOptimizationProfile:
            def __init__(self) -> None:
                self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

            def set_shape(self, name: str, min: Any, opt: Any, max: Any) -> None:  # noqa: A002 - the real names
                lo, op, hi = tuple(min), tuple(opt), tuple(max)
                if not (len(lo) == len(op) == len(hi)) or not all(
                    a <= b <= c for a, b, c in zip(lo, op, hi, strict=True)
                ):
                    raise ValueError(f"invalid profile for {name}")
                self.shapes[name] = (lo, op, hi)

        slots = ["flags", "pool", "profiles", "_calibrator", "calibration_profile"]

        class IBuilderConfig:
            __slots__ = slots  # pybind11 objects take no new attributes: a removed property is an AttributeError

            def __init__(self) -> None:
                self.flags = {int(m.BuilderFlag.TF32)}  # TF32 is on by default
                self.pool: dict[int, int] = {}
                self.profiles: list[IOptimizationProfile] = []
                self._calibrator = None
                self.calibration_profile = None

            def set_memory_pool_limit(self, pool: Any, size: int) -> None:
                fake.calls.append(("set_memory_pool_limit", int(size)))
                self.pool[int(pool)] = int(size)

            def set_flag(self, flag: Any) -> None:
                fake.calls.append(("set_flag", m.BuilderFlag(flag).name))
                self.flags.add(int(flag))

            def clear_flag(self, flag: Any) -> None:
                fake.calls.append(("clear_flag", m.BuilderFlag(flag).name))
                self.flags.discard(int(flag))

            def get_flag(self, flag: Any) -> bool:
                return int(flag) in self.flags

            def add_optimization_profile(self, profile: IOptimizationProfile) -> int:
                self.profiles.append(profile)
                return len(self.profiles) - 1

            if weak:

                @property
                def int8_calibrator(self) -> Any:
                    return self._calibrator

                @int8_calibrator.setter
                def int8_calibrator(self, value: Any) -> None:
                    if not isinstance(value, IInt8EntropyCalibrator2):
                        raise TypeError("int8_calibrator: incompatible function arguments")
                    self._calibrator = value

                def set_calibration_profile(self, profile: IOptimizationProfile) -> bool:
                    self.calibration_profile = profile
                    return True

        m.IBuilderConfig = IBuilderConfig
        if weak:

            class IInt8EntropyCalibrator2:
                def __init__(self) -> None:
                    pass

            m.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2

        class IHostMemory(bytes):
            pass

        class Builder:
            def __init__(self, logger: Logger) -> None:
                fake.calls.append(("Builder", None))
                if fake.faults.builder_typeerror:
                    raise TypeError("pybind11::init(): factory function returned nullptr")

            if weak:
                platform_has_fast_fp16 = True
                platform_has_tf32 = True

            def create_network(self, flags: int = 0) -> INetworkDefinition:
                fake.calls.append(("create_network", int(flags)))
                return INetworkDefinition(int(flags))

            def create_builder_config(self) -> IBuilderConfig:
                return IBuilderConfig()

            def create_optimization_profile(self) -> IOptimizationProfile:
                return IOptimizationProfile()

            def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig) -> Any:
                fake.events.append("build")
                flags = {m.BuilderFlag(f).name for f in config.flags}
                fake.calls.append(("build", sorted(flags)))
                calibrated = 0
                if "INT8" in flags:
                    calibrated = fake._calibrate(config)
                plan = {
                    "version": fake.version,
                    "sm": [fake.cuda.devices[0]["major"], fake.cuda.devices[0]["minor"]],
                    "onnx": network.onnx_path,
                    "flags": sorted(flags),
                    "strongly_typed": not weak
                    or bool(network.flags & (1 << int(m.NetworkDefinitionCreationFlag.STRONGLY_TYPED))),
                    "profiles": {k: v for p in config.profiles for k, v in p.shapes.items()},
                    "calibrated_sets": calibrated,
                }
                import onnx

                # a plan embeds its weights
                weights = network.model or onnx.load(network.onnx_path).SerializeToString()
                return IHostMemory(_MAGIC + json.dumps(plan).encode() + b"\n" + weights)

        m.Builder = Builder
        m.OnnxParser = OnnxParser

        class Runtime:
            def __init__(self, logger: Logger) -> None:
                pass

            def deserialize_cuda_engine(self, blob: bytes) -> Any:
                data = bytes(blob)
                if not data.startswith(_MAGIC):
                    return None
                header, _, weights = data[len(_MAGIC) :].partition(b"\n")
                plan = json.loads(header)
                if plan["version"] != fake.version:
                    return None  # real TensorRT refuses plans of another version
                return ICudaEngine(plan, weights)

        m.Runtime = Runtime

        class ICudaEngine:
            def __init__(self, plan: dict[str, Any], weights: bytes) -> None:
                self.plan = plan
                self.session = _RealSession(weights, providers=["CPUExecutionProvider"])
                self.io: list[tuple[str, Any, Any, tuple[int, ...]]] = []
                for node in self.session.get_inputs():
                    self.io.append((node.name, m.TensorIOMode.INPUT, _dtype(m, node.type), _shape(node.shape)))
                for node in self.session.get_outputs():
                    self.io.append((node.name, m.TensorIOMode.OUTPUT, _dtype(m, node.type), _shape(node.shape)))
                if fake.faults.extra_output:
                    self.io.append(("debug/extra", m.TensorIOMode.OUTPUT, DataType.FLOAT, (-1, 1)))
                fake.live_engines += 1
                fake.events.append("engine+")
                weakref.finalize(self, fake._released, "engine-")

            @property
            def num_io_tensors(self) -> int:
                return len(self.io)

            def get_tensor_name(self, i: int) -> str:
                return self.io[i][0]

            def _get(self, name: str) -> tuple[Any, ...]:
                return next(t for t in self.io if t[0] == name)

            def get_tensor_mode(self, name: str) -> Any:
                return self._get(name)[1]

            def get_tensor_dtype(self, name: str) -> Any:
                return self._get(name)[2]

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                return self._get(name)[3]

            def create_execution_context(self) -> Any:
                fake.calls.append(("create_execution_context", None))
                if fake.faults.context_none:
                    return None
                return IExecutionContext(self)

        class IExecutionContext:
            def __init__(self, engine: ICudaEngine) -> None:
                self.engine = engine
                self.shapes: dict[str, tuple[int, ...]] = {}
                self.addresses: dict[str, int] = {}
                self._outputs: dict[str, np.ndarray] | None = None
                fake.events.append("context+")
                weakref.finalize(self, fake.events.append, "context-")

            def set_input_shape(self, name: str, shape: Any) -> bool:
                lo, _, hi = self.engine.plan["profiles"].get(name, (None, None, None))
                shape = tuple(int(d) for d in shape)
                if lo is not None and not all(a <= d <= b for a, d, b in zip(lo, shape, hi, strict=True)):
                    return False
                self.shapes[name] = shape
                self._outputs = None
                return True

            def set_tensor_address(self, name: str, ptr: int) -> bool:
                self.addresses[name] = int(ptr)
                self._outputs = None if self.engine.get_tensor_mode(name) == m.TensorIOMode.INPUT else self._outputs
                return True

            def _inputs(self) -> dict[str, np.ndarray]:
                feed = {}
                for name, mode, dtype, _ in self.engine.io:
                    if mode != m.TensorIOMode.INPUT:
                        continue
                    np_type = np.dtype(nptype(dtype))
                    shape = self.shapes[name]
                    n = int(np.prod(shape)) * np_type.itemsize
                    feed[name] = np.frombuffer(bytes(fake.cuda.memory[self.addresses[name]][:n]), np_type).reshape(
                        shape
                    )
                return feed

            def _compute(self) -> dict[str, np.ndarray]:
                if self._outputs is None:
                    feed = self._inputs()
                    names = [o.name for o in self.engine.session.get_outputs()]
                    outs = dict(zip(names, self.engine.session.run(names, feed), strict=True))
                    outs = fake._emulate(self.engine.plan, outs, feed)
                    if fake.faults.extra_output:
                        outs["debug/extra"] = np.zeros((next(iter(feed.values())).shape[0], 1), np.float32)
                    self._outputs = outs
                return self._outputs

            def get_tensor_shape(self, name: str) -> tuple[int, ...]:
                if self.engine.get_tensor_mode(name) == m.TensorIOMode.INPUT:
                    return self.shapes[name]
                return tuple(self._compute()[name].shape)

            def execute_async_v3(self, stream_handle: int) -> bool:
                fake.calls.append(("execute_async_v3", int(stream_handle)))
                if int(stream_handle) not in fake.cuda.streams:
                    return False
                if fake.faults.execute_fails_after is not None and fake.executions >= fake.faults.execute_fails_after:
                    raise RuntimeError("CUDA error 700: an illegal memory access was encountered")
                missing = [n for n, *_ in self.engine.io if n not in self.addresses]
                if missing:  # "Error Code 3: API Usage Error (... address or allocator is not set for output tensor)"
                    fake.calls.append(("execute_error", missing))
                    return False
                fake.executions += 1
                for name, array in self._compute().items():
                    raw = np.ascontiguousarray(array).tobytes()
                    fake.cuda.memory[self.addresses[name]][: len(raw)] = raw
                return True

        return m

    # engine numerics ---------------------------------------------------------------------------------------
    def _released(self, event: str) -> None:
        self.live_engines -= 1
        self.events.append(event)

    def _emulate(self, plan: dict[str, Any], outs: dict[str, np.ndarray], feed: dict[str, np.ndarray]) -> dict:
        flags = set(plan["flags"])
        result = {}
        for name, out in outs.items():
            y = np.array(out)
            if y.dtype == np.float32:
                if "INT8" in flags:
                    scale = max(float(np.abs(y).max()), 1e-12) / 127.0
                    y = (np.round(y / scale) * scale).astype(np.float32)
                elif "FP16" in flags:
                    y = y.astype(np.float16).astype(np.float32)
                elif "TF32" in flags:
                    ref = np.abs(y).reshape(-1, y.shape[-1]).max(0) if y.ndim >= 2 else np.abs(y).max()
                    sign = np.where(np.arange(y.size).reshape(y.shape) % 2 == 0, 1.0, -1.0)
                    y = (y + 2e-3 * ref * sign).astype(np.float32)
                if self.faults.channel_bias and self.faults.channel_bias[0] == name:
                    y = y.copy()
                    y[..., self.faults.channel_bias[1]] += self.faults.channel_bias[2]
                if self.faults.nan_bias and any(a.dtype.kind == "f" and np.isnan(a).any() for a in feed.values()):
                    y = y + np.float32(self.faults.nan_bias)
            result[name] = y
        return result

    def _calibrate(self, config: Any) -> int:
        """Run a TensorRT<=10 calibrator the way the builder does: batches at the calibration profile's opt shape
        until ``get_batch`` returns None; every pointer must be valid device memory of the right size."""
        cal = config._calibrator
        if cal is None or config.calibration_profile is None:
            raise RuntimeError("INT8 without a calibrator and calibration profile")
        names = sorted(config.calibration_profile.shapes)
        assert cal.get_batch_size() == 1
        sets = 0
        while (ptrs := cal.get_batch(names)) is not None:
            for name, ptr in zip(names, ptrs, strict=True):
                assert int(ptr) in self.cuda.memory, f"calibrator gave an invalid device pointer for {name}"
            sets += 1
        self.calls.append(("calibrated", sets))
        return sets


def _dtype(module: types.ModuleType, ort_type: str) -> Any:
    return getattr(module, _ORT_TO_TRT[ort_type])


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in dims)


@dataclass
class FakeGpu:
    """Installed fakes: ``trt`` (FakeTensorRT), ``cuda`` (FakeCuda), ``module`` (the fake tensorrt module)."""

    trt: FakeTensorRT
    cuda: FakeCuda
    module: types.ModuleType


@contextmanager
def fake_gpu(
    monkeypatch: Any,
    trt_version: str | None = "10.16.1.11",
    *,
    faults: Faults | None = None,
    cuda: FakeCuda | None = None,
    events: list[str] | None = None,
) -> Iterator[FakeGpu]:
    """Install fake ``tensorrt`` (None = not installed) and ``cuda.bindings.runtime`` modules for the block."""
    cuda = cuda or FakeCuda()
    runtime = cuda.module()
    pkg_cuda = types.ModuleType("cuda")
    pkg_bindings = types.ModuleType("cuda.bindings")
    pkg_bindings.__version__ = cuda.bindings_version
    pkg_bindings.runtime = runtime
    pkg_cuda.bindings = pkg_bindings
    monkeypatch.setitem(sys.modules, "cuda", pkg_cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", pkg_bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", runtime)
    trt = FakeTensorRT(trt_version or "0", cuda, faults, events)
    module = trt.module()
    if trt_version is None:
        monkeypatch.setitem(sys.modules, "tensorrt", None)  # import raises ImportError
    else:
        monkeypatch.setitem(sys.modules, "tensorrt", module)
    yield FakeGpu(trt, cuda, module)


# ------------------------------------------------------------------------------- ONNX Runtime GPU build

#: TensorRT EP option names of onnxruntime-gpu 1.26.0 (libonnxruntime_providers_tensorrt.so string table).
ORT_TRT_OPTIONS = frozenset(
    [
        "device_id",
        "trt_max_partition_iterations",
        "trt_min_subgraph_size",
        "trt_max_workspace_size",
        "trt_fp16_enable",
        "trt_bf16_enable",
        "trt_int8_enable",
        "trt_int8_calibration_table_name",
        "trt_int8_use_native_calibration_table",
        "trt_dla_enable",
        "trt_dla_core",
        "trt_dump_subgraphs",
        "trt_engine_cache_enable",
        "trt_engine_cache_path",
        "trt_engine_cache_prefix",
        "trt_engine_decryption_enable",
        "trt_engine_decryption_lib_path",
        "trt_force_sequential_engine_build",
        "trt_context_memory_sharing_enable",
        "trt_layer_norm_fp32_fallback",
        "trt_timing_cache_enable",
        "trt_timing_cache_path",
        "trt_force_timing_cache",
        "trt_detailed_build_log",
        "trt_build_heuristics_enable",
        "trt_sparsity_enable",
        "trt_builder_optimization_level",
        "trt_auxiliary_streams",
        "trt_tactic_sources",
        "trt_extra_plugin_lib_paths",
        "trt_profile_min_shapes",
        "trt_profile_max_shapes",
        "trt_profile_opt_shapes",
        "trt_cuda_graph_enable",
        "trt_dump_ep_context_model",
        "trt_ep_context_file_path",
        "trt_ep_context_embed_mode",
        "trt_engine_hw_compatible",
        "trt_onnx_model_folder_path",
        "trt_op_types_to_exclude",
        "trt_preview_features",
        "trt_load_user_initializer",
        "trt_weight_stripped_engine_enable",
    ]
)
#: CUDA EP option names used here (onnxruntime-gpu 1.26.0 libonnxruntime_providers_cuda.so).
ORT_CUDA_OPTIONS = frozenset(
    ["device_id", "use_tf32", "prefer_nhwc", "cudnn_conv_algo_search", "arena_extend_strategy"]
)


@dataclass
class FakeOrtGpu:
    """Record of the fake GPU ONNX Runtime: sessions created (path, providers), preload calls, live sessions."""

    sessions: list[tuple[str, list[Any]]] = field(default_factory=list)
    preloads: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    bias: float = 0.0


def fake_ort_gpu(monkeypatch: Any, *, bias: float = 0.0, events: list[str] | None = None) -> FakeOrtGpu:
    """Make ONNX Runtime look like an onnxruntime-gpu build: TensorRT and CUDA EPs listed, ``preload_dlls``
    recorded, GPU sessions computed by the real CPU kernels (plus ``bias`` on float outputs, to fail the gate)
    after their provider options were checked against the real option names."""
    record = FakeOrtGpu(bias=bias, events=events if events is not None else [])
    providers = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))
    monkeypatch.setattr(onnxruntime, "preload_dlls", lambda **kw: record.preloads.append(kw), raising=False)
    from robot_stack.policy import gpu_env

    monkeypatch.setattr(gpu_env, "_PRELOADED", set())  # a fresh process as far as preloading goes

    class Session:
        def __init__(self, path: str, sess_options: Any = None, providers: list[Any] | None = None) -> None:
            chain = list(providers or ["CPUExecutionProvider"])
            for entry in chain:
                if isinstance(entry, tuple):
                    known = ORT_TRT_OPTIONS if entry[0] == "TensorrtExecutionProvider" else ORT_CUDA_OPTIONS
                    unknown = set(entry[1]) - known
                    if unknown:
                        raise RuntimeError(f"[ONNXRuntimeError] : unknown provider option(s) {sorted(unknown)}")
            record.sessions.append((str(path), chain))
            self._names = [e[0] if isinstance(e, tuple) else e for e in chain]
            trt = next((e[1] for e in chain if isinstance(e, tuple) and e[0] == "TensorrtExecutionProvider"), None)
            if trt and trt.get("trt_engine_cache_enable") == "1":  # the EP writes its engine on first build
                folder = Path(trt["trt_engine_cache_path"])
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                    (folder / "TensorrtExecutionProvider_TRTKernel_graph_main_0_0_sm90.engine").write_bytes(b"plan")
                except OSError as exc:
                    raise RuntimeError(
                        f"[ONNXRuntimeError] : 1 : FAIL : TensorRT EP cannot write its cache: {exc}"
                    ) from exc
            self._real = _RealSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
            record.events.append(f"ort+{self._names[0]}")
            weakref.finalize(self, record.events.append, f"ort-{self._names[0]}")

        def get_providers(self) -> list[str]:
            return list(self._names)

        def get_inputs(self) -> Any:
            return self._real.get_inputs()

        def get_outputs(self) -> Any:
            return self._real.get_outputs()

        def run(self, names: Any, feed: Any) -> list[np.ndarray]:
            outs = self._real.run(names, feed)
            if self._names[0] != "CPUExecutionProvider" and record.bias:
                outs = [o + np.float32(record.bias) if o.dtype == np.float32 else o for o in outs]
            return outs

    monkeypatch.setattr(onnxruntime, "InferenceSession", Session)
    return record
