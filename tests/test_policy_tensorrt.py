"""Native TensorRT backend: cache keys, shape profiles, the accuracy check and the ORT fallback (run here);
engine build, cache reuse and latency (``gpu``: they need tensorrt, cuda-python and an NVIDIA GPU)."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.cli import add_compile_parser
from robot_stack.policy.tensorrt import (
    ShapeProfile,
    choose_backend,
    compare_outputs,
    default_profiles,
    engine_cache_key,
    file_sha256,
    sample_inputs,
    select_backend,
    trt_environment,
)
from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict

SHA = "ab" * 32
PROFILES = (
    ShapeProfile("state", (1, 6), (1, 6), (8, 6)),
    ShapeProfile("rgb", (1, 4, 4, 3), (1, 4, 4, 3), (8, 4, 4, 3)),
)


@pytest.fixture
def manifest_path(tmp_path: Path) -> Path:
    model = build_toy_model(
        tmp_path / "mlp.onnx", [("state", "float32", (6,)), ("rgb", "uint8", (4, 4, 3))], ("actions", (4, 3)), 32
    )
    path = tmp_path / "mlp.yaml"
    path.write_text(yaml.safe_dump(toy_manifest_dict(model, "mlp", max_batch=8, providers=["cuda", "cpu"])))
    return path


def test_cache_key_is_deterministic_and_covers_every_field() -> None:
    base = dict(
        external_data_sha256="",
        compute_capability="9.0",
        workspace_bytes=1 << 30,
        tf32=False,
        calibration_sha256="",
        strongly_typed=False,
        multiprocessors=16,
    )
    key = engine_cache_key(SHA, "NVIDIA H100 80GB HBM3", "10.3.0", "fp16", PROFILES, **base)
    same = engine_cache_key(SHA, "  NVIDIA  H100 80GB HBM3 ", "10.3.0", "fp16", PROFILES[::-1], **base)
    assert key == same and key.digest() == same.digest()  # whitespace and profile order do not matter
    assert len(key.digest()) == 64 and json.loads(key.canonical())["gpu"] == "NVIDIA H100 80GB HBM3"
    gpu = "NVIDIA H100 80GB HBM3"
    variants = [
        engine_cache_key("cd" * 32, gpu, "10.3.0", "fp16", PROFILES, **base),  # another model
        engine_cache_key(SHA, "Orin (nvgpu)", "10.3.0", "fp16", PROFILES, **base),  # another GPU
        engine_cache_key(SHA, gpu, "8.6.1", "fp16", PROFILES, **base),  # another TensorRT
        engine_cache_key(SHA, gpu, "10.3.0", "fp32", PROFILES, **base),  # another precision
        engine_cache_key(  # another shape range
            SHA, gpu, "10.3.0", "fp16", (replace(PROFILES[0], max=(16, 6)), PROFILES[1]), **base
        ),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "external_data_sha256": "ef" * 32}),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "compute_capability": "8.7"}),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "workspace_bytes": 2 << 30}),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "tf32": True}),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "strongly_typed": True}),
        engine_cache_key(SHA, gpu, "10.3.0", "fp16", PROFILES, **{**base, "multiprocessors": 8}),
        engine_cache_key(SHA, gpu, "10.3.0", "int8", PROFILES, **{**base, "calibration_sha256": "01" * 32}),
        engine_cache_key(SHA, gpu, "10.3.0", "int8", PROFILES, **{**base, "calibration_sha256": "02" * 32}),
    ]
    digests = {key.digest(), *(v.digest() for v in variants)}
    assert len(digests) == len(variants) + 1
    # Two Jetson Orin modules report the same name "Orin": the compute capability and memory-relevant settings
    # must still separate their engines.
    # Pinned: the key function must not drift silently between releases (that would orphan every cached engine).
    assert engine_cache_key(SHA, "GPU", "1.0", "fp32", PROFILES[:1]).canonical() == (
        '{"calibration_sha256":"","compute_capability":"","external_data_sha256":"","format":2,"gpu":"GPU",'
        '"multiprocessors":0,"onnx_sha256":"' + SHA + '","precision":"fp32","profiles":'
        '[{"max":[8,6],"min":[1,6],"name":"state","opt":[1,6]}],"strongly_typed":false,"tf32":false,'
        '"trt_version":"1.0","workspace_bytes":0}'
    )


def test_cache_key_rejects_bad_fields() -> None:
    with pytest.raises(ConfigError, match="precision"):
        engine_cache_key(SHA, "gpu", "10", "bf16", PROFILES)
    with pytest.raises(ConfigError, match="64 lowercase hex"):
        engine_cache_key("xyz", "gpu", "10", "fp16", PROFILES)
    with pytest.raises(ConfigError, match="one shape profile per input"):
        engine_cache_key(SHA, "gpu", "10", "fp16", PROFILES[:1] * 2)
    with pytest.raises(ConfigError, match="min <= opt <= max"):
        ShapeProfile("x", (4,), (2,), (8,))
    with pytest.raises(ConfigError, match="required for int8"):
        engine_cache_key(SHA, "gpu", "10", "int8", PROFILES)  # INT8 engines depend on their calibration data
    with pytest.raises(ConfigError, match="8.7"):
        engine_cache_key(SHA, "gpu", "10", "fp16", PROFILES, compute_capability="sm87")


def test_default_profiles_follow_the_manifest(manifest_path: Path, tmp_path: Path) -> None:
    manifest = PolicyManifest.load(manifest_path)
    profiles = {p.name: p for p in default_profiles(manifest)}
    assert profiles["state"] == ShapeProfile("state", (1, 6), (1, 6), (8, 6))
    assert profiles["rgb"].max == (8, 4, 4, 3)
    assert default_profiles(manifest, max_batch=2)[0].max[0] == 2
    assert file_sha256(manifest.onnx_path) == file_sha256(manifest.onnx_path) and len(file_sha256(manifest_path)) == 64
    data = yaml.safe_load(manifest_path.read_text())
    data["inputs"][1]["shape"] = [-1, -1, 4, 3]  # a dynamic height needs an explicit range
    data["max_batch"] = 1
    odd = PolicyManifest.from_dict(data, tmp_path)
    with pytest.raises(ConfigError, match="dim 1 is dynamic"):
        default_profiles(odd)
    rgb = default_profiles(odd, dims={"rgb": [None, (2, 4, 8)]})[1]  # type: ignore[list-item]
    assert rgb == ShapeProfile("rgb", (1, 2, 4, 3), (1, 4, 4, 3), (1, 8, 4, 3))


def test_compare_outputs_tolerances() -> None:
    ref = [{"a": np.array([1.0, -2.0, 4.0])}]
    assert compare_outputs(ref, [{"a": np.array([1.0, -2.0, 4.001])}], rtol=1e-3, atol=0).ok
    bad = compare_outputs(ref, [{"a": np.array([1.0, -2.0, 4.1])}], rtol=1e-3, atol=0)
    assert not bad.ok and "output 'a'" in bad.reason and bad.max_abs_err["a"] == pytest.approx(0.1)
    assert not compare_outputs(ref, [{"a": np.array([1.0, np.nan, 4.0])}], 1, 1).ok
    assert not compare_outputs(ref, [{"a": np.zeros(2)}], 1, 1).ok
    assert not compare_outputs(ref, [{"b": np.zeros(3)}], 1, 1).ok


def test_accuracy_check_falls_back_to_ort_when_the_candidate_disagrees(
    manifest_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    manifest = PolicyManifest.load(manifest_path)
    reference = OnnxPolicy(manifest, "cpu")
    inputs = sample_inputs(manifest, default_profiles(manifest))
    assert [x["state"].shape[0] for x in inputs] == [1, 8]  # opt and max batch
    good = select_backend(reference, OnnxPolicy(manifest, "cpu"), inputs, "fp16")
    assert good.backend == "tensorrt" and good.accuracy is not None and good.accuracy.ok
    # A real engine that computes something else: the same graph with other weights.
    build_toy_model(
        tmp_path / "other.onnx",
        [("state", "float32", (6,)), ("rgb", "uint8", (4, 4, 3))],
        ("actions", (4, 3)),
        32,
        seed=9,
    )
    wrong = OnnxPolicy(replace(manifest, onnx_path=tmp_path / "other.onnx"), "cpu")
    with caplog.at_level(logging.WARNING, logger="robot_stack.policy.tensorrt"):
        choice = select_backend(reference, wrong, inputs, "fp16")
    assert choice.backend == "ort" and choice.policy is reference
    assert "accuracy check against ONNX Runtime failed" in choice.reason
    assert "falling back to ONNX Runtime" in caplog.text


@pytest.mark.skipif(not isinstance(trt_environment(), str), reason="native TensorRT is available here")
def test_missing_tensorrt_falls_back_to_ort_with_a_logged_reason(
    manifest_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    manifest = PolicyManifest.load(manifest_path)
    with caplog.at_level(logging.WARNING, logger="robot_stack.policy.tensorrt"):
        choice = choose_backend(manifest, "tensorrt", precision="fp16")
    assert choice.backend == "ort" and isinstance(choice.policy, OnnxPolicy)
    assert "native TensorRT unavailable" in choice.reason and "falling back to ONNX Runtime" in caplog.text
    state = np.ones((2, 6), np.float32)
    rgb = np.zeros((2, 4, 4, 3), np.uint8)
    assert choice.policy.run({"state": state, "rgb": rgb})["actions"].shape == (2, 4, 3)  # it serves
    with pytest.raises(PolicyError, match="native TensorRT unavailable"):
        choose_backend(manifest, "tensorrt", strict=True)
    # `robot-stack compile` says why and exits 1.
    parser = argparse.ArgumentParser()
    add_compile_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["compile", str(manifest_path), "--fp16"])
    assert args.func(args) == 1
    assert "fall back to ONNX Runtime" in capsys.readouterr().out
    args = parser.parse_args(["compile", str(manifest_path), "--int8", "--json"])
    assert args.func(args) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["precision"] == "int8" and not report["ok"] and "tensorrt" in report["reason"]


# --------------------------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_builds_passes_accuracy_and_is_reused_from_cache(
    manifest_path: Path, tmp_path: Path, precision: str
) -> None:
    env = trt_environment()
    if isinstance(env, str):
        pytest.skip(env)
    from robot_stack.policy.compiler import compile_model
    from robot_stack.policy.tensorrt import TrtPolicy

    report = compile_model(manifest_path, precision, cache_dir=tmp_path / "engines")
    assert report.ok, report.reason
    assert not report.cache_hit and Path(report.engine_path).is_file() and not report.cache_error
    assert report.gate and report.gate[0].startswith(f"accuracy gate ({precision}")
    print(f"\n{precision}: TensorRT p50 {report.trt_p50_ms} ms vs ORT ({report.ort_provider}) {report.ort_p50_ms} ms")
    manifest = PolicyManifest.load(manifest_path)
    again = TrtPolicy(manifest, precision, cache_dir=tmp_path / "engines")
    assert again.cache_hit and again.key.digest() == report.cache_key
    assert again.key.compute_capability == env.device.sm and again.key.strongly_typed == env.info.strongly_typed_only
    ref = OnnxPolicy(manifest, "cpu")
    x = sample_inputs(manifest, again.profiles, seed=5)[1]
    np.testing.assert_allclose(again.run(x)["actions"], ref.run(x)["actions"], rtol=0.1, atol=0.05)
    again.close()


@pytest.mark.gpu
def test_int8_engine_calibrates_and_passes_its_gate(manifest_path: Path, tmp_path: Path) -> None:
    """TensorRT 10: entropy calibrator; TensorRT 11: INT8 Q/DQ graph. Calibration and gate sets come from the same
    distribution (a real deployment uses recorded episodes: robot-stack compile --int8 --calibration-data)."""
    env = trt_environment()
    if isinstance(env, str):
        pytest.skip(env)
    from robot_stack.policy.backends import load_backend

    manifest = PolicyManifest.load(manifest_path)
    profiles = default_profiles(manifest)
    calib = sample_inputs(manifest, profiles, seed=1, shapes=("opt",) * 64)
    held = sample_inputs(manifest, profiles, seed=2, shapes=("opt",) * 4)
    choice = load_backend(
        manifest,
        "tensorrt",
        precision="int8",
        calibration=calib,
        gate_frames=held,
        trt_options={"cache_dir": tmp_path / "engines"},
        runtime_fallback=False,
    )
    print("\n" + "\n".join(choice.accuracy.table()) if choice.accuracy else choice.reason)
    assert choice.backend == "tensorrt", choice.reason
    choice.policy.close()


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["tensorrt", "cuda"])
def test_ort_gpu_provider_is_gated_and_caches_by_weights(manifest_path: Path, tmp_path: Path, provider: str) -> None:
    import onnxruntime as ort

    if f"{'Tensorrt' if provider == 'tensorrt' else 'CUDA'}ExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"this onnxruntime build has no {provider} provider")
    from robot_stack.policy.backends import load_backend

    manifest = PolicyManifest.load(manifest_path)
    choice = load_backend(manifest, "ort", provider=provider, trt_options={"cache_dir": tmp_path / "trt"})
    assert choice.policy.provider == provider and choice.accuracy is not None and choice.accuracy.ok, choice.reason
    x = sample_inputs(manifest, default_profiles(manifest), seed=3)[1]  # batch 8: inside the explicit profile
    np.testing.assert_allclose(
        choice.policy.run(x)["actions"], OnnxPolicy(manifest, "cpu").run(x)["actions"], rtol=1e-2, atol=1e-3
    )
    if provider == "tensorrt":
        engines = list((tmp_path / "trt").rglob("*.engine"))
        assert len(engines) == 1, engines  # one engine for the whole batch range, in the weights-keyed folder
