"""Small real ONNX models built in code (for tests, benchmarks and serving drills; no downloads).

:func:`build_toy_model` writes a batch-dynamic model: every input is cast to float32 (NaN -> 0 for the inputs named
in ``nan_to_zero``, as a model reading XYZ maps with invalid depth does), flattened per row and concatenated, then
``[MatMul -> Relu ->] MatMul + bias`` and a reshape to the output's shape. ``external_data=True`` stores the
weights in ``<model>.onnx.data`` next to the file, the way models over 2 GB must be stored. The returned
:class:`ToyModel` knows its weights, so tests can compute the exact expected output in NumPy.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ToyModel", "build_toy_model", "toy_manifest_dict"]

_ONNX_TYPES = {"float32": 1, "uint8": 2, "uint16": 4, "int32": 6, "int64": 7, "float16": 10, "float64": 11}


@dataclass(frozen=True)
class ToyModel:
    """A model written by :func:`build_toy_model`.

    Attributes:
        path: the ONNX file.
        inputs: (name, dtype, per-row shape) in concatenation order.
        output: (name, per-row shape); the output is float32 ``(N, *shape)``.
        weights: the MatMul weights (float32), first to last; bias: float32 (out,).
    """

    path: Path
    inputs: tuple[tuple[str, str, tuple[int, ...]], ...]
    output: tuple[str, tuple[int, ...]]
    weights: tuple[np.ndarray, ...]
    bias: np.ndarray
    nan_to_zero: tuple[str, ...] = ()

    def reference(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        """What the model computes, in NumPy (float32 ``(N, *output shape)``)."""
        n = np.shape(arrays[self.inputs[0][0]])[0]
        x = np.concatenate(
            [
                np.nan_to_num(np.asarray(arrays[name], np.float32), nan=0.0).reshape(n, -1)
                if name in self.nan_to_zero
                else np.asarray(arrays[name], np.float32).reshape(n, -1)
                for name, _, _ in self.inputs
            ],
            1,
        )
        for w in self.weights[:-1]:
            x = np.maximum(x @ w, 0.0)
        return (x @ self.weights[-1] + self.bias).reshape(n, *self.output[1])

    def tensor_specs(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Manifest ``inputs`` and ``outputs`` entries (batch dim -1)."""
        ins = [
            {"name": n, "dtype": d, "shape": [-1, *s], **({"allow_nonfinite": True} if n in self.nan_to_zero else {})}
            for n, d, s in self.inputs
        ]
        return ins, [{"name": self.output[0], "dtype": "float32", "shape": [-1, *self.output[1]]}]


def build_toy_model(
    path: str | Path,
    inputs: Sequence[tuple[str, str, Sequence[int]]],
    output: tuple[str, Sequence[int]],
    hidden: int | None = None,
    seed: int = 0,
    scale: float = 0.1,
    *,
    nan_to_zero: Sequence[str] = (),
    external_data: bool = False,
) -> ToyModel:
    """Write the ONNX model (opset 17) to ``path`` and return its description.

    Args:
        inputs: (name, dtype, per-row shape), dtype in float32/float16/float64/uint8/uint16/int32/int64.
        output: (name, per-row shape) of the float32 output.
        hidden: width of one ReLU hidden layer (None = a single linear layer).
        scale: standard deviation of the random weights.
        nan_to_zero: float inputs whose NaN entries the model replaces by 0 (their manifest entries allow NaN).
        external_data: store the weights in ``<file>.data`` (ONNX external data) instead of inside the file.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, flats = [], [numpy_helper.from_array(np.array([0, -1], np.int64), "flat_shape")], []
    if nan_to_zero:
        inits.append(numpy_helper.from_array(np.array(0.0, np.float32), "zero"))
    for name, _dtype, _ in inputs:
        safe = name.replace("/", "_")
        nodes.append(helper.make_node("Cast", [name], [f"{safe}_f"], to=TensorProto.FLOAT))
        if name in nan_to_zero:
            nodes.append(helper.make_node("IsNaN", [f"{safe}_f"], [f"{safe}_isnan"]))
            nodes.append(helper.make_node("Where", [f"{safe}_isnan", "zero", f"{safe}_f"], [f"{safe}_z"]))
            nodes.append(helper.make_node("Reshape", [f"{safe}_z", "flat_shape"], [f"{safe}_flat"]))
        else:
            nodes.append(helper.make_node("Reshape", [f"{safe}_f", "flat_shape"], [f"{safe}_flat"]))
        flats.append(f"{safe}_flat")
    nodes.append(helper.make_node("Concat", flats, ["x0"], axis=1))
    width = sum(math.prod(s) for _, _, s in inputs)
    out_width = math.prod(output[1])
    dims = [width, *([hidden] if hidden else []), out_width]
    weights = tuple(
        (rng.standard_normal((a, b)) * scale).astype(np.float32) for a, b in zip(dims[:-1], dims[1:], strict=True)
    )
    bias = (rng.standard_normal(out_width) * scale).astype(np.float32)
    x = "x0"
    for i, w in enumerate(weights):
        inits.append(numpy_helper.from_array(w, f"W{i}"))
        nodes.append(helper.make_node("MatMul", [x, f"W{i}"], [f"h{i}"]))
        x = f"h{i}"
        if i < len(weights) - 1:
            nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
            x = f"r{i}"
    inits.append(numpy_helper.from_array(bias, "bias"))
    inits.append(numpy_helper.from_array(np.array([-1, *output[1]], np.int64), "out_shape"))
    nodes.append(helper.make_node("Add", [x, "bias"], ["flat_out"]))
    nodes.append(helper.make_node("Reshape", ["flat_out", "out_shape"], [output[0]]))
    graph = helper.make_graph(
        nodes,
        Path(path).stem,
        [helper.make_tensor_value_info(n, _ONNX_TYPES[d], ["N", *s]) for n, d, s in inputs],
        [helper.make_tensor_value_info(output[0], TensorProto.FLOAT, ["N", *output[1]])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    if external_data:
        onnx.save(model, str(path), save_as_external_data=True, location=f"{Path(path).name}.data", size_threshold=64)
    else:
        onnx.save(model, str(path))
    return ToyModel(
        Path(path),
        tuple((n, d, tuple(s)) for n, d, s in inputs),
        (output[0], tuple(output[1])),
        weights,
        bias,
        tuple(nan_to_zero),
    )


def toy_manifest_dict(model: ToyModel, model_id: str, **extra: Any) -> dict[str, Any]:
    """A manifest mapping for ``model`` (``onnx`` = its file name; horizon = first output dim); ``extra`` keys
    (e.g. ``max_batch``, ``compression``, ``backbone``) are added as they are."""
    ins, outs = model.tensor_specs()
    horizon = model.output[1][0] if model.output[1] else 1
    return {
        "model_id": model_id,
        "onnx": model.path.name,
        "inputs": ins,
        "outputs": outs,
        "action_space": "ee_delta_xyz",
        "action_head": "continuous",
        "horizon": int(horizon),
        "dt_s": 0.05,
        "control_rate_hz": 10,
        **extra,
    }
