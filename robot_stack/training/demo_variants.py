"""The demo policy in every action language the stack decodes.

The shipped continuous model (``reach-touch-v1``: colour key + MLP → ``ee_delta_xyz`` chunk) is extended *inside its
ONNX graph* with a head that re-expresses its chunk in another action language, so the server really serves a model
that speaks tokens, bins or motion tracks, and the robot side really decodes them:

* ``latent_vq``: the residual-VQ encoder (``policy/models/vq``) → token ids (2, 3); robot side: codebook lookup +
  embodiment decoder (ONNX) → chunk → IK.
* ``binned``: uniform 256-bin tokenisation of the chunk (RT-2/OpenVLA style) → bins (8, 3); robot side: bin centres.
* ``motion_tracks``: chunk → TCP targets (gripper pointing down) → the 9 canonical hand keypoints → projected into the
  calibrated ``front`` and ``side`` views → (8, 36) pixel tracks; robot side: triangulation → Kabsch → pose → IK.

Variants are derived in well under a second, so they are built on demand next to a copy of the shipped manifest
rather than shipped as more binaries. Every variant's action tensor is its model's output named by
:attr:`robot_stack.types.ActionHead.output`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from robot_stack.decoders.binned import BinSpec
from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.training.reach_model import TCP_SLICE, onnx_constant

if TYPE_CHECKING:
    from robot_stack.stack.config import StackConfig

HEADS = ("continuous", "latent_vq", "binned", "motion_tracks")
#: Bin layout of the binned variant: per-step TCP displacement range of the demo's chunks, metres.
BIN_LOW, BIN_HIGH, N_BINS = -0.2, 0.2, 256


def _replace_output(model: onnx.ModelProto, name: str, dtype: int, shape: list[int]) -> None:
    """Make ``name`` the model's action output (dropping the continuous ``actions`` output, keeping ``features``)."""
    keep = [o for o in model.graph.output if o.name not in ("actions", name)]
    del model.graph.output[:]
    model.graph.output.extend([helper.make_tensor_value_info(name, dtype, shape), *keep])


def motion_tracks_head(model: onnx.ModelProto, scene: str = "sim_tabletop") -> onnx.ModelProto:
    """Append "chunk → keypoints in two calibrated views" to a continuous ``ee_delta_xyz`` model (output ``tracks``)."""
    from robot_stack.decoders.ee_delta import R_DOWN
    from robot_stack.decoders.motion_tracks import MotionTracks

    mt = MotionTracks.from_store(scene)
    horizon = _output_dims(model, "actions")[0]
    points_tcp = np.asarray(mt.keypoints.points_tcp, np.float64)  # (K, 3) in the TCP frame
    offsets = (points_tcp @ R_DOWN.T).astype(np.float32)  # (K, 3) base-frame offsets of a downward gripper
    p = "mt/"
    nodes = [
        onnx_constant(p + "tcp_start", np.array([TCP_SLICE.start]), np.int64),
        onnx_constant(p + "tcp_end", np.array([TCP_SLICE.stop]), np.int64),
        helper.make_node("Slice", ["state", p + "tcp_start", p + "tcp_end"], [p + "tcp"]),
        helper.make_node("Add", ["actions", p + "tcp"], [p + "targets"]),  # (H, 3) TCP positions, base frame
        onnx_constant(p + "axis1", np.array([1]), np.int64),
        helper.make_node("Unsqueeze", [p + "targets", p + "axis1"], [p + "targets3"]),  # (H, 1, 3)
        onnx_constant(p + "offsets", offsets),
        helper.make_node("Add", [p + "targets3", p + "offsets"], [p + "kp_base"]),  # (H, K, 3)
    ]
    per_view = []
    for i, (view, cal) in enumerate(zip(mt.views, mt.calibrations, strict=True)):
        v = f"{p}v{i}/"
        cam = cal.camera
        nodes += [
            onnx_constant(v + "Rt", view.R_cam_base.T.astype(np.float32)),
            onnx_constant(v + "t", view.t_cam_base.astype(np.float32)),
            helper.make_node("MatMul", [p + "kp_base", v + "Rt"], [v + "rot"]),
            helper.make_node("Add", [v + "rot", v + "t"], [v + "cam"]),  # (H, K, 3) optical frame
            onnx_constant(v + "split", np.array([2, 1]), np.int64),
            helper.make_node("Split", [v + "cam", v + "split"], [v + "xy", v + "z"], axis=2),
            helper.make_node("Div", [v + "xy", v + "z"], [v + "norm"]),
            onnx_constant(v + "f", np.array([cam.fx, cam.fy], np.float32)),
            onnx_constant(v + "c", np.array([cam.cx, cam.cy], np.float32)),
            helper.make_node("Mul", [v + "norm", v + "f"], [v + "scaled"]),
            helper.make_node("Add", [v + "scaled", v + "c"], [v + "uv"]),  # (H, K, 2) pixels
        ]
        per_view.append(v + "uv")
    nodes += [
        helper.make_node("Concat", per_view, [p + "uv_all"], axis=1),  # (H, V*K, 2): views in layout order
        onnx_constant(p + "flat", np.array([horizon, mt.action_dim]), np.int64),
        helper.make_node("Reshape", [p + "uv_all", p + "flat"], ["tracks"]),
    ]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.node.extend(nodes)
    _replace_output(out, "tracks", TensorProto.FLOAT, [horizon, mt.action_dim])
    onnx.checker.check_model(out)
    return out


def _output_dims(model: onnx.ModelProto, name: str) -> list[int]:
    for o in model.graph.output:
        if o.name == name:
            return [d.dim_value for d in o.type.tensor_type.shape.dim]
    raise ConfigError(f"model has no output {name!r}")


def build_variant(base_manifest: Path, head: str, out_dir: Path) -> tuple[Path, dict[str, Any]]:
    """Write the ``head`` variant of the model described by ``base_manifest`` into ``out_dir``.

    Returns the variant's manifest path and the keyword arguments for ``get_decoder(<head's decoder>, ...)``.
    """
    if head not in HEADS:
        raise ConfigError(f"unknown action head {head!r}; choose one of {', '.join(HEADS)}")
    base = PolicyManifest.load(base_manifest)
    if head == "continuous" or base.action_head == head:  # the model already speaks this language
        return base_manifest, {}
    model = onnx.load(str(base.onnx_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    doc = base.to_dict()
    features = [o for o in doc["outputs"] if o["name"] == "features"]
    decoder_kwargs: dict[str, Any] = {}
    if head == "latent_vq":
        from robot_stack.decoders.vq import DEFAULT_VQ_MANIFEST, VqManifest
        from robot_stack.training.vq_tokenizer import vq_policy_head

        variant = vq_policy_head(model, DEFAULT_VQ_MANIFEST, tokens_output="tokens")
        shape = list(VqManifest.load(DEFAULT_VQ_MANIFEST).token_shape)
        doc.update(outputs=[{"name": "tokens", "dtype": "int64", "shape": shape}, *features], horizon=shape[0])
        decoder_kwargs = {"manifest": DEFAULT_VQ_MANIFEST}
    elif head == "binned":
        spec = BinSpec(np.full(3, BIN_LOW), np.full(3, BIN_HIGH), N_BINS, "ee_delta_xyz")
        variant = binned_policy_head(model, spec, bins_output="bins")
        spec_path = spec.save(out_dir / f"{base.model_id}-binned.bins.yaml")
        doc["outputs"] = [{"name": "bins", "dtype": "int64", "shape": [base.horizon, 3]}, *features]
        decoder_kwargs = {"spec": spec_path}
    else:
        variant = motion_tracks_head(model)
        dims = _output_dims(variant, "tracks")
        doc["outputs"] = [{"name": "tracks", "dtype": "float32", "shape": dims}, *features]
    model_id = f"{base.model_id}-{head.replace('_', '-')}"
    onnx_path = out_dir / f"{model_id}.onnx"
    onnx.save(variant, str(onnx_path))
    doc.update(
        model_id=model_id,
        onnx=onnx_path.name,
        action_space=head,
        action_head=head,
        description=f"{base.description} Re-expressed in the {head} action language by an in-graph head.",
    )
    manifest_path = out_dir / f"{model_id}.yaml"
    PolicyManifest.from_dict(doc, base_dir=out_dir).save(manifest_path)
    return manifest_path, decoder_kwargs


def binned_policy_head(
    model: onnx.ModelProto,
    spec: BinSpec,
    actions_output: str = "actions",
    bins_output: str = "bins",
    keep_actions: bool = False,
) -> onnx.ModelProto:
    """Append uniform binning to ``model``: its float32 (horizon, dim) output ``actions_output`` becomes int64
    bins ``bins_output`` (same shape; values outside [low, high] saturate, exactly :meth:`BinSpec.tokenize`).

    Serve the result with ``action_space: binned``, ``action_head: binned`` and the spec's YAML next to it.
    """
    out = {o.name: o for o in model.graph.output}
    if actions_output not in out:
        raise PolicyError(f"binned_policy_head: model has no output {actions_output!r} (outputs: {sorted(out)})")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in out[actions_output].type.tensor_type.shape.dim]
    if not dims or dims[-1] not in (spec.dim, -1):
        raise PolicyError(f"binned_policy_head: {actions_output} has shape {dims}, the spec has {spec.dim} dims")
    import onnx
    from onnx import TensorProto, helper

    p = "bin/"
    nodes = [
        onnx_constant(p + "low", spec.low),
        onnx_constant(p + "width", spec.width),
        onnx_constant(p + "zero", 0.0),
        onnx_constant(p + "top", float(spec.n_bins - 1)),
        helper.make_node("Sub", [actions_output, p + "low"], [p + "shifted"]),
        helper.make_node("Div", [p + "shifted", p + "width"], [p + "scaled"]),
        helper.make_node("Floor", [p + "scaled"], [p + "floored"]),
        helper.make_node("Clip", [p + "floored", p + "zero", p + "top"], [p + "clipped"]),
        helper.make_node("Cast", [p + "clipped"], [bins_output], to=TensorProto.INT64),
    ]
    outputs = [o for o in model.graph.output if keep_actions or o.name != actions_output]
    outputs.append(helper.make_tensor_value_info(bins_output, TensorProto.INT64, [d if d > 0 else None for d in dims]))
    g = model.graph
    graph = helper.make_graph(list(g.node) + nodes, g.name, list(g.input), outputs, initializer=list(g.initializer))
    merged = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="robot-stack")
    merged.ir_version = model.ir_version
    onnx.checker.check_model(merged)
    return merged


def with_served_variant(config: StackConfig, variants_dir: Path) -> StackConfig:
    """``config`` serving its model in the action language it names (``policy.action_head``): the variant of the
    model with that head grafted into its graph (:func:`build_variant`, written into ``variants_dir``), and the
    decoder given the variant's files (bin layout, tokenizer). What ``robot-stack demo`` and ``bench motion``
    serve.

    Raises:
        ConfigError: a head other than continuous for a vision-language-action model (its flow-matching expert
            answers continuous chunks; it has no graph to graft a head onto).
    """
    from robot_stack.policy.manifest import PolicyManifest

    if config.policy.action_head != "continuous" and PolicyManifest.load(config.policy.manifest_path()).vla:
        raise ConfigError(
            f"--action-head {config.policy.action_head}: the VLA answers continuous chunks; its action head cannot be "
            "re-expressed (drop --action-head, or use --policy reach)"
        )
    served, decoder_kwargs = build_variant(config.policy.manifest_path(), config.policy.action_head, variants_dir)
    policy = dataclasses.replace(config.policy, manifest=str(served))
    decoder = dataclasses.replace(config.decoder, options={**config.decoder.options, **decoder_kwargs})
    return config.replace(policy=policy, decoder=decoder)
