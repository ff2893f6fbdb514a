"""What the GPU serving paths need, and whether this machine has it.

Probes (each returns a value, or a string saying why not; none raises): :func:`probe_tensorrt` (the ``tensorrt``
module, its version and API generation: weakly typed 8.x/10.x with ``BuilderFlag.FP16``/``INT8`` and the INT8
calibrator, or strongly typed only, 11.x), :func:`probe_cuda` (the CUDA runtime bindings of ``cuda-python``, the
CUDA version the driver supports, every GPU with its compute capability and memory), :func:`ort_build` (which
ONNX Runtime distributions are installed, their providers and the CUDA version of a GPU build),
:func:`jetson_release` (L4T / JetPack).

:func:`check_backends` turns them into a :class:`BackendReport`: one :class:`Check` per component (found, what,
and the fix when it is wrong) and the :class:`BackendPlan` that says which path a given ``--engine``/``--provider``
will run and why. ``serve`` logs it at start; it is structured so that a ``doctor`` command can print it.

Nothing heavy is imported at module import; torch is imported only when the torch engine is asked about.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.metadata
import importlib.util
import logging
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from robot_stack.errors import BackendError, ConfigError

__all__ = [
    "ENGINES",
    "GPU_PINS",
    "JETSON_RELEASE_FILE",
    "BackendPlan",
    "BackendReport",
    "Check",
    "CudaRuntime",
    "GpuDevice",
    "OrtBuild",
    "TensorRTInfo",
    "check_backends",
    "cuda_call",
    "jetson_release",
    "ort_build",
    "preload_gpu_libraries",
    "probe_cuda",
    "probe_tensorrt",
]

log = logging.getLogger("robot_stack.policy.gpu_env")

#: Serving engines: ONNX Runtime (its provider picks CPU/CUDA/TensorRT EP), native TensorRT, PyTorch.
ENGINES = ("ort", "tensorrt", "torch")
#: The tested pins of the ``gpu`` extra (x86_64, CUDA 12) and of the Jetson path (JetPack 6.1/6.2, CUDA 12.6).
GPU_PINS: Mapping[str, str] = {
    "onnxruntime-gpu": "1.26.0",  # the last PyPI build for CUDA 12 (12.8); its TensorRT EP links libnvinfer.so.10
    "tensorrt-cu12": "10.16.1.11",  # the newest TensorRT 10 for CUDA 12 (the plain `tensorrt` wheel pulls CUDA 13)
    "cuda-python": "12.9.10",
    "cuda-python (JetPack 6.1/6.2)": "12.6.2.post1",
}
#: File that exists on NVIDIA Jetson (L4T) systems; its first line names the L4T release.
JETSON_RELEASE_FILE = Path("/etc/nv_tegra_release")
_GPU_INSTALL = (
    f"pip install --extra-index-url https://pypi.nvidia.com 'robot-stack[gpu]' (onnxruntime-gpu "
    f"{GPU_PINS['onnxruntime-gpu']}, tensorrt-cu12 {GPU_PINS['tensorrt-cu12']}, cuda-python {GPU_PINS['cuda-python']})"
)
_JETSON_INSTALL = (
    "on Jetson use JetPack's TensorRT: sudo apt install python3-libnvinfer, then a venv made with "
    "`python3 -m venv --system-site-packages .venv` (README: Jetson)"
)


# ------------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class GpuDevice:
    """One CUDA device.

    Attributes:
        index: CUDA device ordinal. name: as the driver reports it (every Jetson Orin says "Orin").
        compute_capability: (major, minor), e.g. (8, 7) for Orin, (9, 0) for H100/H200.
        total_memory_bytes: device memory (on Jetson: the memory shared with the CPU).
        integrated: True for Jetson-style integrated GPUs (memory shared with the CPU).
        multiprocessors: streaming multiprocessor count (separates Orin Nano/NX/AGX, which share name and sm 8.7).
    """

    index: int
    name: str
    compute_capability: tuple[int, int]
    total_memory_bytes: int
    integrated: bool = False
    multiprocessors: int = 0

    @property
    def sm(self) -> str:
        """Compute capability as ``"8.7"``."""
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


@dataclass(frozen=True)
class CudaRuntime:
    """The CUDA runtime bindings and what they see.

    Attributes:
        cudart: the ``cuda.bindings.runtime`` (or older ``cuda.cudart``) module.
        bindings_version: version of cuda-python / cuda-bindings.
        driver_version: CUDA version the installed driver supports, (major, minor).
        runtime_version: CUDA runtime version of the bindings, (major, minor).
        devices: every visible GPU.
    """

    cudart: Any
    bindings_version: str
    driver_version: tuple[int, int]
    runtime_version: tuple[int, int]
    devices: tuple[GpuDevice, ...]


@dataclass(frozen=True)
class TensorRTInfo:
    """The TensorRT Python module and its API generation.

    Attributes:
        trt: the ``tensorrt`` module. version: ``trt.__version__``. major: its major version.
        weak_typing: ``BuilderFlag.FP16``/``INT8`` exist (TensorRT <= 10.x); TensorRT 11 removed them and builds
            strongly typed networks only (precision comes from the ONNX graph's types and Q/DQ nodes).
        int8_calibrator: ``IInt8EntropyCalibrator2`` and ``IBuilderConfig.int8_calibrator`` exist (<= 10.x).
    """

    trt: Any
    version: str
    major: int
    weak_typing: bool
    int8_calibrator: bool

    @property
    def strongly_typed_only(self) -> bool:
        return not self.weak_typing


@dataclass(frozen=True)
class OrtBuild:
    """ONNX Runtime as installed.

    Attributes:
        distributions: installed distribution name -> version (``onnxruntime``, ``onnxruntime-gpu``, ...).
        version: ``onnxruntime.__version__`` ("" when it cannot be imported).
        providers: execution providers this build offers.
        cuda_version: CUDA version a GPU build was compiled for ("" for a CPU build).
        error: why ``import onnxruntime`` failed ("" when it worked).
    """

    distributions: Mapping[str, str]
    version: str
    providers: tuple[str, ...]
    cuda_version: str = ""
    error: str = ""


@dataclass(frozen=True)
class Check:
    """One component checked at start.

    Attributes:
        name: component (``onnxruntime``, ``tensorrt``, ``cuda-python``, ``gpu``, ``jetson``, ``torch``, ...).
        ok: usable as found. detail: what was found. fix: what to do when not ok ("" otherwise).
        required: whether the requested path needs it (an unusable optional component is only reported).
    """

    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False


@dataclass(frozen=True)
class BackendPlan:
    """Which path serving will take. ``path``: ``tensorrt-native``, ``ort-tensorrt``, ``ort-cuda``, ``ort-cpu``,
    ``torch-cuda`` or ``torch-cpu``; ``reason``: why this one (and why not the requested one)."""

    engine: str
    provider: str
    path: str
    reason: str


@dataclass(frozen=True)
class BackendReport:
    """What :func:`check_backends` found: the checks, the plan, component versions and the GPU (if any)."""

    checks: tuple[Check, ...]
    plan: BackendPlan
    versions: Mapping[str, str] = field(default_factory=dict)
    device: GpuDevice | None = None

    @property
    def ok(self) -> bool:
        """Every required check passed (the requested path runs as asked)."""
        return all(c.ok for c in self.checks if c.required)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable lines: the plan, then one line per check (``ok``/``--``/``!!``)."""
        out = [
            f"backend: {self.plan.path} (engine {self.plan.engine}, provider {self.plan.provider}): {self.plan.reason}"
        ]
        for c in self.checks:
            mark = "ok" if c.ok else ("!!" if c.required else "--")
            out.append(f"  [{mark}] {c.name}: {c.detail}" + (f" -> {c.fix}" if c.fix and not c.ok else ""))
        return out


# ------------------------------------------------------------------------------------------------ probes


def cuda_call(result: Any, what: str) -> Any:
    """cuda-python calls return ``(err, *values)``; raise :class:`BackendError` on an error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA {what} failed with error {err}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _version_tuple(v: int) -> tuple[int, int]:
    """CUDA's integer version (12060) -> (12, 6)."""
    return int(v) // 1000, (int(v) % 1000) // 10


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_cudart() -> tuple[Any, str]:
    """The runtime bindings module and the cuda-python version (module attribute first: works for any install)."""
    try:
        import cuda.bindings as pkg
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6 (cuda-bindings)
    except ImportError:
        import cuda as pkg  # type: ignore[no-redef]
        from cuda import cudart  # type: ignore[no-redef]  # older cuda-python
    version = getattr(pkg, "__version__", None) or _dist_version("cuda-bindings") or _dist_version("cuda-python") or "?"
    return cudart, str(version)


def _libcuda_driver_version() -> tuple[int, int] | None:
    """CUDA version the driver supports, read from libcuda directly (works when the bindings cannot initialise)."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int(0)
        if lib.cuDriverGetVersion(ctypes.byref(v)) == 0 and v.value > 0:
            return _version_tuple(v.value)
    except (OSError, AttributeError):
        pass
    return None


def probe_cuda() -> CudaRuntime | str:
    """The CUDA runtime bindings, driver/runtime versions and every GPU; or why CUDA cannot be used from Python.

    A cuda-python newer (major) than the driver's CUDA cannot initialise (JetPack 6's driver with pip's cuda-python
    13 is the common case): the reason then names the pin to install.
    """
    try:
        cudart, bindings = _import_cudart()
    except Exception as exc:  # ImportError, or OSError from a missing/broken shared library
        return (
            f"the CUDA runtime bindings (cuda-python) cannot be imported ({type(exc).__name__}: {exc}); "
            f"pip install 'cuda-python=={GPU_PINS['cuda-python']}' "
            f"(Jetson: {GPU_PINS['cuda-python (JetPack 6.1/6.2)']})"
        )
    try:
        driver = _version_tuple(cuda_call(cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    except Exception as exc:
        found = _libcuda_driver_version()
        if found is None:
            return f"the CUDA driver cannot be queried ({type(exc).__name__}: {exc}); is the NVIDIA driver installed?"
        driver = found
    try:
        runtime = _version_tuple(cuda_call(cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    except Exception:
        runtime = (0, 0)
    major = _major(bindings)
    if driver == (0, 0):
        return "no NVIDIA driver found (cudaDriverGetVersion = 0)"
    if major is not None and major > driver[0]:
        return (
            f"cuda-python {bindings} needs a CUDA {major} driver but this driver supports CUDA "
            f"{driver[0]}.{driver[1]}; pip install 'cuda-python=={_cuda_python_pin(driver)}'"
        )
    try:
        count = int(cuda_call(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount"))
        if count < 1:
            return "no CUDA device visible (cudaGetDeviceCount = 0; check CUDA_VISIBLE_DEVICES)"
        devices = tuple(_device(cudart, i) for i in range(count))
    except Exception as exc:
        return (
            f"CUDA is not usable ({type(exc).__name__}: {exc}) with cuda-python {bindings} and a CUDA "
            f"{driver[0]}.{driver[1]} driver"
        )
    return CudaRuntime(cudart, bindings, driver, runtime, devices)


def _device(cudart: Any, index: int) -> GpuDevice:
    props = cuda_call(cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return GpuDevice(
        index,
        name.rstrip("\x00").strip(),
        (int(props.major), int(props.minor)),
        int(props.totalGlobalMem),
        bool(getattr(props, "integrated", 0)),
        int(getattr(props, "multiProcessorCount", 0) or 0),
    )


def _cuda_python_pin(driver: tuple[int, int]) -> str:
    if driver[0] == 12 and driver[1] < 6:
        return "12.2.1"
    if driver[0] == 12 and driver[1] < 8:
        return GPU_PINS["cuda-python (JetPack 6.1/6.2)"]
    return GPU_PINS["cuda-python"] if driver[0] == 12 else f"{driver[0]}.*"


def _major(version: str) -> int | None:
    try:
        return int(str(version).split(".")[0])
    except ValueError:
        return None


def probe_tensorrt() -> TensorRTInfo | str:
    """The ``tensorrt`` module and its API generation; or why it cannot be imported (with the install hint)."""
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # ImportError, or OSError when libnvinfer cannot be loaded
        hint = _JETSON_INSTALL if jetson_release() else _GPU_INSTALL
        return f"the tensorrt Python package cannot be imported ({type(exc).__name__}: {exc}); {hint}"
    version = str(getattr(trt, "__version__", "0"))
    flags = getattr(trt, "BuilderFlag", None)
    weak = flags is not None and hasattr(flags, "FP16") and hasattr(flags, "INT8")
    calib = hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(getattr(trt, "IBuilderConfig", None), "int8_calibrator")
    return TensorRTInfo(trt, version, _major(version) or 0, weak, calib)


def jetson_release(path: Path | None = None) -> str | None:
    """The L4T release line of a Jetson (e.g. ``# R36 (release), REVISION: 4.0, ...``), or None elsewhere."""
    path = path or JETSON_RELEASE_FILE
    try:
        return path.read_text(errors="replace").splitlines()[0].strip() or "L4T"
    except (OSError, IndexError):
        return None


def ort_build() -> OrtBuild:
    """Installed ONNX Runtime distributions, the importable build's version, providers and CUDA version."""
    dists = {n: v for n in _ORT_DISTS if (v := _dist_version(n)) is not None}
    try:
        import onnxruntime as ort

        providers = tuple(ort.get_available_providers())
        version = str(ort.__version__)
    except Exception as exc:
        return OrtBuild(dists, "", (), "", f"{type(exc).__name__}: {exc}")
    cuda = ""
    with contextlib.suppress(Exception):
        from onnxruntime.capi import build_and_package_info as info

        cuda = str(getattr(info, "cuda_version", "") or "")
    return OrtBuild(dists, version, providers, cuda)


_ORT_DISTS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino", "onnxruntime-training")
_PRELOADED: set[str] = set()


def preload_gpu_libraries(provider: str) -> list[str]:
    """Make the pip-installed CUDA/cuDNN (and TensorRT) libraries loadable before ONNX Runtime creates a GPU session.

    ``onnxruntime.preload_dlls()`` (onnxruntime-gpu >= 1.21) loads CUDA and cuDNN from the ``nvidia-*`` wheels; for the
    TensorRT EP the ``tensorrt_libs`` wheel loads libnvinfer. Without this a pip-only install fails with "libcudnn.so.9:
    cannot open shared object file". Idempotent; returns what was done (for the log). Never raises.
    """
    done: list[str] = []
    if provider not in ("cuda", "tensorrt"):
        return done
    if "cuda" not in _PRELOADED:
        try:
            import onnxruntime as ort

            if hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
                done.append("onnxruntime.preload_dlls()")
            _PRELOADED.add("cuda")
        except Exception as exc:
            log.warning(
                "onnxruntime.preload_dlls() failed (%s: %s); relying on the system library path",
                type(exc).__name__,
                exc,
            )
    if provider == "tensorrt" and "tensorrt" not in _PRELOADED:
        try:
            importlib.import_module("tensorrt_libs")
            done.append("import tensorrt_libs")
        except ImportError:
            pass  # system TensorRT (Jetson, apt): libnvinfer is on the loader path already
        except Exception as exc:
            log.warning("loading the tensorrt_libs wheel failed (%s: %s)", type(exc).__name__, exc)
        _PRELOADED.add("tensorrt")
    return done


# ------------------------------------------------------------------------------------------------ report


def check_backends(
    engine: str = "ort",
    provider: str | None = None,
    *,
    manifest: Any | None = None,
    precision: str | None = None,
) -> BackendReport:
    """Check every component the requested serving path needs and say which path will run and why.

    Args:
        engine: ``ort`` | ``tensorrt`` | ``torch`` (see :data:`ENGINES`).
        provider: ONNX Runtime provider (``cpu``/``cuda``/``tensorrt``); None = the manifest's preference (or cpu).
        manifest: the :class:`~robot_stack.policy.manifest.PolicyManifest` to be served (optional: provider
            preference, torch program).
        precision: requested precision (reported only); None = the engine's default (TensorRT fp16, else fp32).

    The plan is a prediction from the environment: the engine build and the accuracy gate at load time can still
    send serving to ONNX Runtime, with their own logged reason.
    """
    if engine not in ENGINES:
        raise ConfigError(f"engine {engine!r} unknown; choose one of {ENGINES}")
    checks: list[Check] = []
    versions: dict[str, str] = {"python": platform.python_version(), "machine": platform.machine()}
    jetson = jetson_release()
    if jetson:
        checks.append(Check("jetson", True, f"L4T {jetson}"))
        versions["l4t"] = jetson

    ort_info = ort_build()
    versions.update({f"dist:{k}": v for k, v in ort_info.distributions.items()})
    checks.append(_ort_check(ort_info))
    cuda = probe_cuda()
    device = None
    if isinstance(cuda, CudaRuntime):
        device = cuda.devices[0]
        versions.update(
            {
                "cuda-python": cuda.bindings_version,
                "cuda-driver": f"{cuda.driver_version[0]}.{cuda.driver_version[1]}",
                "gpu": device.name,
                "compute-capability": device.sm,
            }
        )
        gib = device.total_memory_bytes / 2**30
        checks.append(
            Check(
                "cuda-python",
                True,
                f"cuda-python {cuda.bindings_version}, driver CUDA {versions['cuda-driver']}",
            )
        )
        checks.append(
            Check(
                "gpu",
                True,
                f"{device.name} (sm {device.sm}, {gib:.1f} GiB{', integrated' if device.integrated else ''})"
                + (f" + {len(cuda.devices) - 1} more" if len(cuda.devices) > 1 else ""),
            )
        )
    else:
        checks.append(Check("cuda", False, cuda, required=engine == "tensorrt"))
    if ort_info.cuda_version and isinstance(cuda, CudaRuntime):
        ort_major = _major(ort_info.cuda_version) or 0
        ok = ort_major <= cuda.driver_version[0]
        checks.append(
            Check(
                "ort-cuda",
                ok,
                f"{_ort_name(ort_info)} {ort_info.version} is built for CUDA {ort_info.cuda_version}",
                "" if ok else f"pip install onnxruntime-gpu=={GPU_PINS['onnxruntime-gpu']} (CUDA 12 build)",
            )
        )

    trt = probe_tensorrt() if engine == "tensorrt" or provider == "tensorrt" else None
    if isinstance(trt, TensorRTInfo):
        versions["tensorrt"] = trt.version
        api = "weakly typed (BuilderFlag.FP16/INT8)" if trt.weak_typing else "strongly typed only (11.x API)"
        checks.append(Check("tensorrt", True, f"TensorRT {trt.version}, {api}"))
    elif isinstance(trt, str):
        checks.append(Check("tensorrt", False, trt, required=engine == "tensorrt"))

    torch_ok = None
    if engine == "torch":
        torch_ok = _torch_check(versions)
        checks.append(torch_ok)
        if manifest is not None and getattr(manifest, "torch", None) is None:
            checks.append(
                Check(
                    "torch-program",
                    False,
                    f"manifest {manifest.model_id} names no torch program (key `torch:`)",
                    "re-export the model with robot-stack train (writes <model>.pt2 and the manifest key)",
                    required=True,
                )
            )

    precision = precision or ("fp16" if engine == "tensorrt" else "fp32")
    plan = _plan(engine, provider, manifest, precision, ort_info, cuda, trt, checks, torch_ok)
    return BackendReport(tuple(checks), plan, versions, device)


def _ort_name(info: OrtBuild) -> str:
    return "onnxruntime-gpu" if "onnxruntime-gpu" in info.distributions else "onnxruntime"


def _ort_check(info: OrtBuild) -> Check:
    if info.error:
        return Check(
            "onnxruntime",
            False,
            f"import onnxruntime failed ({info.error})",
            "pip install 'robot-stack[cpu]' (CPU) or 'robot-stack[gpu]' (NVIDIA)",
            required=True,
        )
    if len(info.distributions) > 1:
        names = ", ".join(f"{k} {v}" for k, v in info.distributions.items())
        return Check(
            "onnxruntime",
            False,
            f"several ONNX Runtime distributions are installed ({names}); they overwrite each other's files",
            f"pip uninstall -y {' '.join(info.distributions)} && pip install "
            f"onnxruntime-gpu=={GPU_PINS['onnxruntime-gpu']} (GPU) or onnxruntime (CPU)",
            required=True,
        )
    short = [p.replace("ExecutionProvider", "") for p in info.providers]
    return Check("onnxruntime", True, f"{_ort_name(info)} {info.version}, providers {short}")


def _torch_check(versions: dict[str, str]) -> Check:
    if importlib.util.find_spec("torch") is None:
        return Check("torch", False, "torch is not installed", "pip install 'robot-stack[train]'", required=True)
    try:
        import torch

        versions["torch"] = str(torch.__version__)
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            versions["torch-cuda"] = str(torch.version.cuda)
            return Check("torch", True, f"torch {torch.__version__}, CUDA {torch.version.cuda}, {name}")
        return Check("torch", True, f"torch {torch.__version__} without a usable CUDA device (CPU only)")
    except Exception as exc:
        return Check("torch", False, f"import torch failed ({type(exc).__name__}: {exc})", required=True)


def _plan(
    engine: str,
    provider: str | None,
    manifest: Any | None,
    precision: str,
    ort_info: OrtBuild,
    cuda: CudaRuntime | str,
    trt: TensorRTInfo | str | None,
    checks: list[Check],
    torch_check: Check | None,
) -> BackendPlan:
    wanted = (provider or _manifest_provider(manifest, ort_info)).lower()
    ort_path, ort_reason = _ort_path(wanted, ort_info, cuda)
    blocking = next((c for c in checks if c.required and not c.ok), None)
    if engine == "tensorrt":
        if blocking is None and isinstance(trt, TensorRTInfo) and isinstance(cuda, CudaRuntime):
            dev = cuda.devices[0]
            how = "weak typing" if trt.weak_typing else "a strongly typed network"
            return BackendPlan(
                engine,
                wanted,
                "tensorrt-native",
                f"TensorRT {trt.version} on {dev.name} (sm {dev.sm}), {precision} via {how}; the engine is built or "
                f"loaded from the cache and must pass the accuracy gate, else {ort_path}",
            )
        why = blocking.detail if blocking else "TensorRT unavailable"
        return BackendPlan(engine, wanted, ort_path, f"native TensorRT cannot run: {why}; {ort_reason}")
    if engine == "torch":
        if blocking is None and torch_check is not None and torch_check.ok:
            on_gpu = "without a usable CUDA device" not in torch_check.detail
            return BackendPlan(
                engine,
                wanted,
                "torch-cuda" if on_gpu else "torch-cpu",
                f"{torch_check.detail}; {precision} behind the accuracy gate, else {ort_path}",
            )
        why = blocking.detail if blocking else "torch unavailable"
        return BackendPlan(engine, wanted, ort_path, f"the torch engine cannot run: {why}; {ort_reason}")
    return BackendPlan(engine, wanted, ort_path, ort_reason)


def _manifest_provider(manifest: Any | None, info: OrtBuild) -> str:
    have = {p.replace("ExecutionProvider", "").lower() for p in info.providers}
    for p in getattr(manifest, "providers", ()) or ():
        if p in have:
            return p
    return "cpu"


def _ort_path(wanted: str, info: OrtBuild, cuda: CudaRuntime | str) -> tuple[str, str]:
    """The ORT path for ``wanted`` and why (a GPU provider needs the provider in this build and a usable GPU)."""
    if info.error:
        return "none", f"ONNX Runtime cannot be imported ({info.error})"
    ep = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider"}.get(wanted)
    if ep is None:
        return "ort-cpu", "ONNX Runtime on the CPU"
    if ep not in info.providers:
        return "ort-cpu", f"this onnxruntime build has no {ep} (install onnxruntime-gpu); ONNX Runtime on the CPU"
    if isinstance(cuda, str):
        return "ort-cpu", f"{ep} is present but {cuda}; ONNX Runtime on the CPU"
    return f"ort-{wanted}", f"ONNX Runtime {ep} on {cuda.devices[0].name}, behind the accuracy gate, else the CPU"
