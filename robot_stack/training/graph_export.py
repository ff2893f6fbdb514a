"""The two files a trained torch module ships as: an ONNX graph (TorchScript exporter) and a ``torch.export``
program (``.pt2``, what ``serve --engine torch`` runs). Shared by the reach-policy trainer and the VLA export."""

from __future__ import annotations

import io
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: ONNX opset of the exported graphs (what the shipped models and the runtime use).
OPSET = 17


def onnx_bytes(
    module: nn.Module,
    args: tuple[torch.Tensor, ...],
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str]] | None,
) -> bytes:
    """``module`` (in eval mode, no grad) traced on ``args`` and exported with the TorchScript exporter at
    :data:`OPSET`; ``dynamic_axes``: input/output name -> {axis: symbolic name}."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated; it needs no onnxscript
        torch.onnx.export(
            module.eval(),
            args,
            buf,
            dynamo=False,
            opset_version=OPSET,
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()} if dynamic_axes is not None else None,
        )
    return buf.getvalue()


def save_program(module: nn.Module, args: tuple[torch.Tensor, ...], dynamic_shapes: Any, path: Path) -> Path:
    """Export ``module`` (eval mode, no grad) with ``torch.export`` on ``args`` and save it to ``path`` (``.pt2``);
    ``dynamic_shapes`` as ``torch.export.export`` takes it. The example inputs are not stored (not needed to run;
    they would put full-size frames, pickled, in the file)."""
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.export.export(module.eval(), args, dynamic_shapes=dynamic_shapes)
    program.example_inputs = None
    torch.export.save(program, str(path))
    return path
