"""The torch engine: serve a model the project trains in PyTorch from its exported torch program.

The program is named by the manifest (``torch: {program: <model>.pt2}``,
:class:`~robot_stack.policy.manifest.TorchSpec`) and written by ``robot-stack train`` next to the ONNX file; it
has the ONNX graph's contract (normalised inputs in manifest order in, outputs in manifest order out), so
normalisation, validation and output checks are shared with the other engines, and the accuracy gate compares it
with ONNX Runtime like any candidate.

* **Device:** CUDA when torch sees a GPU, else the CPU (what this project's CI runs).
* **Precision:** ``fp32`` (TF32 off unless ``tf32=True``), or ``fp16``/``bf16`` through ``torch.autocast`` (the
  program's own float32 casts stay valid; outputs come back in the manifest's dtypes).
* **CUDA graphs** (``cuda_graphs=True``, CUDA only): each input shape is captured once (after warm-up on a side
  stream, autocast weight caching off as capture requires) and replayed: static input buffers are filled, the
  graph replayed, the outputs copied out. Up to :data:`MAX_GRAPHS` shapes are kept.

Importing this module imports torch; nothing else on the serving path does (``serve --engine torch`` only).
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from robot_stack.errors import BackendError, ConfigError, PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.runtime import finish_outputs, normalize_inputs, validate_arrays

__all__ = ["MAX_GRAPHS", "TORCH_PRECISIONS", "TorchPolicy", "load_program", "torch_profiles"]

log = logging.getLogger("robot_stack.policy.torch_engine")

TORCH_PRECISIONS = ("fp32", "fp16", "bf16")
#: Most input shapes whose CUDA graphs are kept (least recently used dropped).
MAX_GRAPHS = 8
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def torch_profiles(manifest: PolicyManifest) -> tuple[Any, ...]:
    """Shape profiles for the gate's inputs (batch 1 and the manifest's ``max_batch``), as for TensorRT."""
    from robot_stack.policy.tensorrt import default_profiles

    return default_profiles(manifest)


def load_program(manifest: PolicyManifest, device: str) -> torch.nn.Module:
    """Load the manifest's torch program onto ``device`` (``torch.export`` ``.pt2`` or TorchScript).

    Raises:
        PolicyError: the manifest names no program, the file is missing, or it does not load.
    """
    spec = manifest.torch
    if spec is None:
        raise PolicyError(
            f"manifest {manifest.source or manifest.model_id} names no torch program (key `torch: {{program: ...}}`); "
            f"re-export the model with robot-stack train, or serve it with --engine ort/tensorrt"
        )
    if not spec.program.is_file():
        raise PolicyError(f"torch program {spec.program} (from manifest {manifest.source}) not found")
    try:
        if spec.format == "export":
            program = torch.export.load(str(spec.program))
            if device != "cpu":
                from torch.export.passes import move_to_device_pass

                program = move_to_device_pass(program, device)
            module = program.module()
        else:
            module = torch.jit.load(str(spec.program), map_location=device)
    except Exception as exc:
        raise PolicyError(f"cannot load torch program {spec.program}: {type(exc).__name__}: {exc}") from exc
    return module


class TorchPolicy:
    """Run a manifest's torch program (same contract as :class:`OnnxPolicy`).

    Args:
        manifest: the model description; ``manifest.torch`` names the program.
        precision: ``fp32`` | ``fp16`` | ``bf16``.
        device: ``cuda``, ``cuda:N`` or ``cpu``; None = CUDA if available.
        cuda_graphs: capture and replay CUDA graphs per input shape (CUDA only).
        tf32: allow TF32 matmuls/convolutions in FP32 (process-wide torch setting).
        threads: torch intra-op threads on the CPU (None = torch's default).

    Raises:
        ConfigError: bad precision or CUDA graphs without CUDA. PolicyError: no/unloadable program.
        BackendError: the requested CUDA device is not available.
    """

    def __init__(
        self,
        manifest: PolicyManifest,
        precision: str = "fp32",
        *,
        device: str | None = None,
        cuda_graphs: bool = False,
        tf32: bool = False,
        threads: int | None = None,
    ) -> None:
        if precision not in TORCH_PRECISIONS:
            raise ConfigError(f"torch precision {precision!r} unknown; choose one of {TORCH_PRECISIONS}")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"torch {torch.__version__} sees no CUDA device (asked for {device})")
        if cuda_graphs and not device.startswith("cuda"):
            raise ConfigError("CUDA graphs need a CUDA device")
        self.manifest = manifest
        self.precision = precision
        self.device = torch.device(device)
        self.cuda_graphs = cuda_graphs
        self.provider = f"torch-{self.device.type}-{precision}" + ("-graphs" if cuda_graphs else "")
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = bool(tf32)
            torch.backends.cudnn.allow_tf32 = bool(tf32)
        elif threads:
            torch.set_num_threads(int(threads))
        self._module: Any = load_program(manifest, str(self.device))
        self._graphs: collections.OrderedDict[tuple[Any, ...], _Graph] = collections.OrderedDict()
        self._input_names = [t.name for t in manifest.inputs]
        log.info("loaded torch program %s on %s (%s)", manifest.torch.program.name, self.device, precision)  # type: ignore[union-attr]

    def validate_inputs(self, arrays: Mapping[str, np.ndarray]) -> None:
        validate_arrays(self.manifest.inputs, arrays, self.manifest.model_id)

    def _autocast(self, cache_enabled: bool = True) -> Any:
        dtype = _DTYPES.get(self.precision)
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None, cache_enabled=cache_enabled)

    def _forward(self, tensors: Sequence[torch.Tensor], cache_enabled: bool = True) -> tuple[torch.Tensor, ...]:
        with torch.inference_mode(), self._autocast(cache_enabled):
            out = self._module(*tensors)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    def run(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate, normalise, run (eager or CUDA graph), copy out, cast to the manifest dtypes, check."""
        self.validate_inputs(arrays)
        if self._module is None:
            raise BackendError(f"torch policy {self.manifest.model_id} was closed")
        feed = normalize_inputs(self.manifest, arrays)
        hosts = [_host_tensor(feed[n]) for n in self._input_names]
        try:
            if self.cuda_graphs:
                outs = self._graph_for(hosts).replay(hosts)
            else:
                outs = self._forward([h.to(self.device, non_blocking=True) for h in hosts])
            results = [o.detach().to("cpu").numpy() for o in outs]
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            raise BackendError(f"torch ({self.provider}) failed on {self.manifest.model_id}: {exc}") from exc
        if len(results) != len(self.manifest.outputs):
            raise PolicyError(
                f"torch program of {self.manifest.model_id} returned {len(results)} outputs, the manifest declares "
                f"{len(self.manifest.outputs)}"
            )
        cast = [
            r.astype(s.dtype, copy=False) if r.dtype.kind == "f" else r
            for r, s in zip(results, self.manifest.outputs, strict=True)
        ]
        return finish_outputs(self.manifest, cast)

    def _graph_for(self, hosts: Sequence[torch.Tensor]) -> _Graph:
        key = tuple((tuple(h.shape), h.dtype) for h in hosts)
        graph = self._graphs.get(key)
        if graph is None:
            graph = _Graph(self, hosts)
            self._graphs[key] = graph
            while len(self._graphs) > MAX_GRAPHS:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
        return graph

    def warmup(self, runs: int = 2) -> None:
        """Run on zeros (dynamic dims = 1): the first request does not pay for lazy initialisation or capture."""
        feed = {t.name: np.zeros([1 if d == -1 else d for d in t.shape], dtype=t.dtype) for t in self.manifest.inputs}
        for _ in range(runs):
            self.run(feed)

    def close(self) -> None:
        """Drop the program and the captured graphs; empty the CUDA cache. Idempotent."""
        self._graphs.clear()
        self._module = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def _host_tensor(array: np.ndarray) -> torch.Tensor:
    a = np.ascontiguousarray(array)
    return torch.from_numpy(a if a.flags.writeable else a.copy())


class _Graph:
    """One captured CUDA graph: static device inputs, the recorded forward, static outputs."""

    def __init__(self, policy: TorchPolicy, hosts: Sequence[torch.Tensor]) -> None:
        self.inputs = [h.to(policy.device) for h in hosts]
        side = torch.cuda.Stream(device=policy.device)
        side.wait_stream(torch.cuda.current_stream(policy.device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside capture: lazy inits and cuDNN autotuning happen here
                policy._forward(self.inputs, cache_enabled=False)
        torch.cuda.current_stream(policy.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs = policy._forward(self.inputs, cache_enabled=False)

    def replay(self, hosts: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        for buf, h in zip(self.inputs, hosts, strict=True):
            buf.copy_(h, non_blocking=True)
        self.graph.replay()
        return self.outputs
