"""Torch programs for the torch engine (``serve --engine torch``) of models whose weights exist only as ONNX.

``robot-stack train`` writes a ``<model>.pt2`` next to every model it exports. The visuomotor policies shipped
before that (``robot_stack/policy/models/reach-visuomotor/``) have their weights only in the ONNX graph; the
exporter kept the torch parameter names (``policy.trunk.conv1.weight``, ...), so :func:`module_from_onnx`
rebuilds the exact torch module from the initializers and the manifest (state normalisation, horizon, token
shape), and :func:`write_program_for` exports it with ``torch.export``, checks it against ONNX Runtime on seeded
inputs with NaN holes, and names it in the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from robot_stack.errors import PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.training.nets import ContinuousExport, ContinuousPolicy, TokenExport, TokenPolicy, VisuomotorTrunk

__all__ = ["module_from_onnx", "write_program_for"]

log = logging.getLogger("robot_stack.training")


def module_from_onnx(manifest: PolicyManifest) -> nn.Module:
    """The serving module (:class:`ContinuousExport` or :class:`TokenExport`) with the ONNX graph's weights.

    Raises:
        PolicyError: the graph's parameters do not fit the visuomotor architecture.
    """
    import onnx
    from onnx import numpy_helper

    params = {
        i.name: torch.from_numpy(numpy_helper.to_array(i).copy())
        for i in onnx.load(str(manifest.onnx_path)).graph.initializer
        if i.name.startswith("policy.")
    }
    state = manifest.normalization.get("state")
    if state is None or "policy.trunk.conv3.weight" not in params or "policy.head.weight" not in params:
        raise PolicyError(f"{manifest.onnx_path} is not a visuomotor policy graph with named parameters")
    keypoints = int(params["policy.trunk.conv3.weight"].shape[0])
    hidden = int(params["policy.trunk.mlp.0.weight"].shape[0])
    trunk = VisuomotorTrunk(torch.from_numpy(state.mean.copy()), torch.from_numpy(state.std.copy()), keypoints, hidden)
    out = manifest.outputs[0]
    module: nn.Module
    if out.name == "actions":
        policy = ContinuousPolicy(trunk, manifest.horizon, params["policy.low"], params["policy.high"])
        module = ContinuousExport(policy)
    else:
        n_tokens, levels = out.shape[-2:]
        codebook = int(params["policy.head.weight"].shape[0]) // (n_tokens * levels)
        module = TokenExport(TokenPolicy(trunk, n_tokens, levels, codebook))
    missing, unexpected = module.load_state_dict(params, strict=False)
    allowed_missing = {"policy.trunk.state_mean", "policy.trunk.state_std"}  # folded into the graph's constants
    if set(missing) - allowed_missing or unexpected:
        raise PolicyError(f"{manifest.onnx_path}: parameters missing {missing}, unexpected {unexpected}")
    return module.eval()


def write_program_for(manifest_path: str | Path, max_err: float = 1e-4) -> Path:
    """Export the torch program of a shipped visuomotor policy next to its ONNX file, check it against ONNX
    Runtime (every output within ``max_err``, integers exact) and add ``torch: {program: ...}`` to its manifest.

    Raises:
        PolicyError: the rebuilt module does not reproduce the ONNX graph.
    """
    from robot_stack.policy.accuracy import sample_inputs
    from robot_stack.policy.runtime import OnnxPolicy, normalize_inputs
    from robot_stack.policy.tensorrt import default_profiles

    manifest_path = Path(manifest_path)
    manifest = PolicyManifest.load(manifest_path)
    module = module_from_onnx(manifest)
    names = [t.name for t in manifest.inputs]
    example = tuple(torch.zeros(t.shape, dtype=getattr(torch, t.dtype)) for t in manifest.inputs)
    with torch.no_grad():
        program = torch.export.export(module, example)
    program.example_inputs = None  # not needed to run; would store a full-size zero frame (pickled) in the file
    path = manifest.onnx_path.with_suffix(".pt2")
    torch.export.save(program, str(path))
    loaded = torch.export.load(str(path)).module()
    reference = OnnxPolicy(manifest, "cpu")
    for arrays in sample_inputs(manifest, default_profiles(manifest), seed=3, nonfinite=True):
        feed = normalize_inputs(manifest, arrays)
        with torch.no_grad():
            raw = loaded(*(torch.from_numpy(np.ascontiguousarray(feed[n])) for n in names))
        ref_raw = reference._session.run([t.name for t in manifest.outputs], feed)[0]
        err = float(np.abs(raw.numpy().astype(np.float64) - ref_raw.astype(np.float64)).max())
        if err > (0 if ref_raw.dtype.kind in "iu" else max_err):
            path.unlink()
            raise PolicyError(f"torch program of {manifest.model_id} differs from its ONNX graph by {err:.3g}")
    data = yaml.safe_load(manifest_path.read_text())
    data["torch"] = {"program": path.name}
    manifest_path.write_text(yaml.safe_dump(data, sort_keys=False))
    PolicyManifest.load(manifest_path)  # still valid
    log.info("wrote %s (checked against ONNX Runtime) and named it in %s", path, manifest_path)
    return path
