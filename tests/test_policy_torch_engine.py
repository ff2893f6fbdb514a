"""The torch engine (``serve --engine torch``): the shipped visuomotor policies' torch programs served by torch on
the CPU behind the same manifest, accuracy gate and fallback as the other engines; CUDA graphs and half precision
on CUDA under ``pytest -m gpu``. The serving path imports torch only when this engine is chosen."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.accuracy import sample_inputs
from robot_stack.policy.backends import FallbackPolicy, load_backend
from robot_stack.policy.tensorrt import default_profiles

MODELS = Path(__file__).resolve().parent.parent / "robot_stack" / "policy" / "models"
CONTINUOUS = MODELS / "reach-visuomotor" / "reach-visuomotor-continuous.yaml"
VQ = MODELS / "reach-visuomotor" / "reach-visuomotor-vq.yaml"


@pytest.mark.parametrize("path", [CONTINUOUS, VQ], ids=["continuous", "vq"])
def test_shipped_torch_programs_pass_the_gate_and_serve_on_cpu(path: Path) -> None:
    manifest = PolicyManifest.load(path)
    assert manifest.torch is not None and manifest.torch.program.is_file() and manifest.torch.format == "export"
    choice = load_backend(manifest, "torch", threads=1)
    assert choice.backend == "torch", choice.reason
    assert choice.policy.provider == "torch-cpu-fp32" and choice.accuracy.ok
    assert choice.accuracy.nonfinite_samples == 2  # the XYZ input carries NaN holes in the gate
    x = sample_inputs(manifest, default_profiles(manifest), seed=9, nonfinite=True)[0]
    out, ref = choice.policy.run(x), OnnxPolicy(manifest, "cpu").run(x)
    name = manifest.outputs[0].name
    assert out[name].dtype == ref[name].dtype and out[name].shape == ref[name].shape
    np.testing.assert_allclose(out[name], ref[name], rtol=1e-4, atol=1e-5)


def test_bf16_autocast_is_judged_with_its_own_tolerance() -> None:
    manifest = PolicyManifest.load(CONTINUOUS)
    choice = load_backend(manifest, "torch", precision="bf16", threads=1)
    assert choice.accuracy.tolerance == "bf16" and choice.accuracy.ok, choice.reason
    assert choice.policy.provider == "torch-cpu-bf16"
    assert choice.accuracy.max_abs_err["actions"] > 0  # it really ran in bfloat16


def test_torch_program_that_disagrees_falls_back_to_ort(tmp_path: Path, caplog) -> None:  # type: ignore[no-untyped-def]
    """A program that is not the ONNX graph's model (here: the other shipped policy's weights in the same
    architecture, i.e. a stale export) is rejected by the gate and ONNX Runtime serves."""
    import torch

    from robot_stack.training.torch_export import module_from_onnx

    manifest = PolicyManifest.load(CONTINUOUS)
    module = module_from_onnx(manifest)
    with torch.no_grad():
        module.policy.head.bias += 0.5  # a retrained head whose program was not re-exported
        program = torch.export.export(
            module, tuple(torch.zeros(t.shape, dtype=getattr(torch, t.dtype)) for t in manifest.inputs)
        )
    program.example_inputs = None
    torch.export.save(program, str(tmp_path / "stale.pt2"))
    data = yaml.safe_load(CONTINUOUS.read_text())
    data.update(onnx=str(manifest.onnx_path), torch={"program": str(tmp_path / "stale.pt2")})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    stale = PolicyManifest.load(tmp_path / "m.yaml")
    with caplog.at_level(logging.WARNING):
        choice = load_backend(stale, "torch", threads=1)
    assert choice.backend == "ort" and "accuracy check against ONNX Runtime failed (fp32)" in choice.reason
    assert choice.policy.provider == "cpu" and "falling back to ONNX Runtime" in caplog.text


def test_manifest_without_a_torch_program_falls_back_with_the_reason() -> None:
    manifest = PolicyManifest.load(MODELS / "reach-touch-v1.yaml")
    choice = load_backend(manifest, "torch", threads=1)
    assert choice.backend == "ort" and "names no torch program" in choice.reason


def test_torch_failing_at_run_time_hands_over_to_ort(monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    manifest = PolicyManifest.load(CONTINUOUS)
    choice = load_backend(manifest, "torch", threads=1)
    policy = choice.policy
    assert isinstance(policy, FallbackPolicy) and policy.provider == "torch-cpu-fp32"

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("CUDA error: device-side assert triggered")

    monkeypatch.setattr(policy.primary, "_forward", broken)
    x = sample_inputs(manifest, default_profiles(manifest), seed=2)[0]
    with caplog.at_level(logging.ERROR):
        out = policy.run(x)
    assert policy.provider == "cpu" and "switching" in caplog.text and "device-side assert" in policy.switched_reason
    np.testing.assert_allclose(out["actions"], OnnxPolicy(manifest, "cpu").run(x)["actions"], rtol=1e-5, atol=1e-6)


def test_bad_input_stays_a_request_error_and_does_not_switch() -> None:
    from robot_stack.errors import PolicyError

    manifest = PolicyManifest.load(CONTINUOUS)
    policy = load_backend(manifest, "torch", threads=1).policy
    with pytest.raises(PolicyError, match="state"):
        policy.run({"front/rgb": np.zeros((480, 640, 3), np.uint8), "front/xyz": np.zeros((480, 640, 3), np.float32)})
    assert policy.provider == "torch-cpu-fp32"


def test_serving_path_does_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from robot_stack.policy import PolicyManifest\n"
        "from robot_stack.policy.backends import load_backend\n"
        "from robot_stack.policy.gpu_env import check_backends\n"
        "import robot_stack.policy.service, robot_stack.policy.compiler, robot_stack.policy.tensorrt\n"
        f"m = PolicyManifest.load({str(CONTINUOUS)!r})\n"
        "check_backends('tensorrt', manifest=m)\n"
        "load_backend(m, 'tensorrt').policy.run\n"
        "load_backend(m, 'ort')\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "load_backend(m, 'torch', threads=1)\n"
        "assert 'torch' in sys.modules\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-2000:]


# --------------------------------------------------------------------------------------------- GPU only


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "graphs"), [("fp32", False), ("fp16", False), ("fp16", True), ("bf16", True)])
def test_torch_on_cuda_eager_and_cuda_graphs(precision: str, graphs: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("torch sees no CUDA device")
    from robot_stack.policy.torch_engine import TorchPolicy

    manifest = PolicyManifest.load(CONTINUOUS)
    choice = load_backend(
        manifest, "torch", precision=precision, torch_options={"device": "cuda", "cuda_graphs": graphs}
    )
    assert choice.backend == "torch", choice.reason
    policy = choice.policy.active
    assert isinstance(policy, TorchPolicy) and policy.device.type == "cuda" and policy.cuda_graphs == graphs
    x = sample_inputs(manifest, default_profiles(manifest), seed=4, nonfinite=True)[0]
    first, second = policy.run(x), policy.run(x)  # the second replays the captured graph
    np.testing.assert_array_equal(first["actions"], second["actions"])
    policy.close()
