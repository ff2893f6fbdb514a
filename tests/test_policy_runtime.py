"""Manifest loading/validation and the ONNX Runtime backend on a tiny model built in the test."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy import OnnxPolicy, PolicyManifest, available_providers

RNG = np.random.default_rng(7)
W = RNG.normal(size=(4, 24)).astype(np.float32)
B = RNG.normal(size=(24,)).astype(np.float32)


def build_model(folder: Path, name: str = "tiny", sqrt_first: bool = False) -> Path:
    """actions (N, 8, 3) = reshape(f(state) @ W + B); f = sqrt when ``sqrt_first`` (NaN for negative input)."""
    nodes = []
    x = "state"
    if sqrt_first:
        nodes.append(helper.make_node("Sqrt", ["state"], ["s"]))
        x = "s"
    nodes += [
        helper.make_node("MatMul", [x, "W"], ["h"]),
        helper.make_node("Add", ["h", "B"], ["flat"]),
        helper.make_node("Reshape", ["flat", "shape"], ["actions"]),
    ]
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", 8, 3])],
        initializer=[
            numpy_helper.from_array(W, "W"),
            numpy_helper.from_array(B, "B"),
            numpy_helper.from_array(np.array([-1, 8, 3], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = folder / f"{name}.onnx"
    onnx.save(model, path)
    return path


def manifest_dict(onnx_name: str = "tiny.onnx", **over: object) -> dict:
    data = {
        "model_id": "tiny-v1",
        "onnx": onnx_name,
        "inputs": [{"name": "state", "dtype": "float32", "shape": [-1, 4]}],
        "outputs": [{"name": "actions", "dtype": "float32", "shape": [-1, 8, 3]}],
        "action_space": "ee_delta_xyz",
        "action_head": "continuous",
        "horizon": 8,
        "dt_s": 0.1,
        "control_rate_hz": 10,
        "providers": ["cpu"],
    }
    data.update(over)
    return data


def write_manifest(folder: Path, name: str = "tiny", **over: object) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(manifest_dict(f"{name}.onnx", **over)))
    return path


@pytest.fixture
def tiny(tmp_path: Path) -> PolicyManifest:
    build_model(tmp_path)
    return PolicyManifest.load(write_manifest(tmp_path))


def reference(state: np.ndarray) -> np.ndarray:
    return (state @ W + B).reshape(-1, 8, 3)


# ----------------------------------------------------------------------------------------------- manifest


def test_manifest_loads_from_yaml_or_onnx_path(tmp_path: Path, tiny: PolicyManifest) -> None:
    assert tiny.model_id == "tiny-v1"
    assert tiny.onnx_path == (tmp_path / "tiny.onnx").resolve()
    assert tiny.inputs[0].shape == (-1, 4) and tiny.horizon == 8 and tiny.control_rate_hz == 10.0
    assert PolicyManifest.load(tmp_path / "tiny.onnx") == tiny
    # save -> load round trip keeps everything, with the onnx path relative to the YAML.
    again = PolicyManifest.load(tiny.save(tmp_path / "copy.yaml"))
    assert yaml.safe_load((tmp_path / "copy.yaml").read_text())["onnx"] == "tiny.onnx"
    assert again.to_dict() == tiny.to_dict()


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"horizon": 0}, "horizon"),
        ({"dt_s": -0.1}, "dt_s"),
        ({"action_head": "magic"}, "action_head"),
        ({"providers": ["gpu"]}, "providers"),
        ({"inputs": [{"name": "state", "dtype": "complex64", "shape": [4]}]}, "dtype"),
        ({"inputs": [{"name": "state", "dtype": "float32", "shape": [-2]}]}, "shape"),
        ({"inputs": [{"name": "actions", "dtype": "float32", "shape": [4]}]}, "unique"),
        ({"normalization": {"nope": {"mean": 0, "std": 1}}}, "neither an input"),
        ({"normalization": {"state": {"mean": [0, 0, 0, 0], "std": [1, 0, 1, 1]}}}, "std must be > 0"),
        ({"normalization": {"state": {"mean": [0, 0, 0], "std": 1}}}, "broadcast"),
        ({"unknown_key": 1}, "unknown key"),
    ],
)
def test_manifest_validation_errors(tmp_path: Path, over: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PolicyManifest.load(write_manifest(tmp_path, **over))


def test_manifest_missing_file_and_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        PolicyManifest.load(tmp_path / "absent.yaml")
    (tmp_path / "m.yaml").write_text("model_id: x\n")
    with pytest.raises(ConfigError, match="missing required"):
        PolicyManifest.load(tmp_path / "m.yaml")
    (tmp_path / "bad.yaml").write_text("model_id: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        PolicyManifest.load(tmp_path / "bad.yaml")


# ------------------------------------------------------------------------------------------------ runtime


def test_run_matches_reference(tiny: PolicyManifest) -> None:
    policy = OnnxPolicy(tiny, "cpu", intra_op_threads=1)
    assert policy.provider == "cpu" and policy.providers[0] == "CPUExecutionProvider"
    state = RNG.normal(size=(3, 4)).astype(np.float32)
    out = policy.run({"state": state})
    assert list(out) == ["actions"]
    np.testing.assert_allclose(out["actions"], reference(state), rtol=1e-5, atol=1e-5)


def test_normalization_is_applied_to_inputs_and_outputs(tmp_path: Path) -> None:
    build_model(tmp_path)
    mean, std = [1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 4.0, 4.0]
    out_mean, out_std = [0.1, 0.2, 0.3], [0.5, 0.5, 2.0]
    norm = {"state": {"mean": mean, "std": std}, "actions": {"mean": out_mean, "std": out_std}}
    policy = OnnxPolicy(PolicyManifest.load(write_manifest(tmp_path, normalization=norm)), intra_op_threads=1)
    state = RNG.normal(size=(2, 4)).astype(np.float32)
    want = reference((state - np.float32(mean)) / np.float32(std)) * np.float32(out_std) + np.float32(out_mean)
    np.testing.assert_allclose(policy.run({"state": state})["actions"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"state": np.zeros((1, 4), np.float64)}, "dtype float64"),
        ({"state": np.zeros((1, 5), np.float32)}, "shape"),
        ({"state": np.zeros(4, np.float32)}, "shape"),
        ({}, "missing"),
        ({"state": np.zeros((1, 4), np.float32), "extra": np.zeros(1, np.float32)}, "unexpected"),
        ({"state": np.array([[0, np.nan, 0, 0]], np.float32)}, "NaN"),
    ],
)
def test_bad_inputs_are_rejected_before_running(tiny: PolicyManifest, arrays: dict, match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        OnnxPolicy(tiny, intra_op_threads=1).run(arrays)


def test_nan_outputs_are_refused(tmp_path: Path) -> None:
    build_model(tmp_path, "sqrt", sqrt_first=True)
    policy = OnnxPolicy(PolicyManifest.load(write_manifest(tmp_path, "sqrt")), intra_op_threads=1)
    ok = policy.run({"state": np.ones((1, 4), np.float32)})["actions"]
    np.testing.assert_allclose(ok, reference(np.ones((1, 4), np.float32)), rtol=1e-5)
    with pytest.raises(PolicyError, match="non-finite"):
        policy.run({"state": -np.ones((1, 4), np.float32)})


def test_manifest_must_match_graph(tmp_path: Path) -> None:
    build_model(tmp_path)
    wrong = [{"name": "state", "dtype": "float32", "shape": [-1, 5]}]
    with pytest.raises(PolicyError, match="manifest shape"):
        OnnxPolicy(PolicyManifest.load(write_manifest(tmp_path, inputs=wrong)))
    renamed = [{"name": "obs", "dtype": "float32", "shape": [-1, 4]}]
    with pytest.raises(PolicyError, match="declares inputs"):
        OnnxPolicy(PolicyManifest.load(write_manifest(tmp_path, inputs=renamed)))
    (tmp_path / "tiny.onnx").unlink()
    with pytest.raises(PolicyError, match="not found"):
        OnnxPolicy(PolicyManifest.load(write_manifest(tmp_path)))


@pytest.mark.skipif("cuda" in available_providers(), reason="this build has CUDA; fallback not exercised")
def test_unavailable_provider_falls_back_with_warning_or_raises_when_strict(
    tiny: PolicyManifest, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="robot_stack.policy.runtime"):
        policy = OnnxPolicy(tiny, "tensorrt", intra_op_threads=1)
    assert policy.provider == "cpu"
    assert "not available" in caplog.text
    with pytest.raises(PolicyError, match="not available"):
        OnnxPolicy(tiny, "cuda", strict=True)
    with pytest.raises(PolicyError, match="unknown"):
        OnnxPolicy(tiny, "tpu")


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_gpu_provider_matches_cpu(tiny: PolicyManifest, provider: str) -> None:
    if provider not in available_providers():
        pytest.skip(f"onnxruntime build without {provider}")
    state = RNG.normal(size=(4, 4)).astype(np.float32)
    gpu = OnnxPolicy(tiny, provider, strict=True)
    assert gpu.provider == provider
    cpu = OnnxPolicy(tiny, "cpu")
    np.testing.assert_allclose(gpu.run({"state": state})["actions"], cpu.run({"state": state})["actions"], atol=1e-4)
