"""The GPU serving paths on a CPU machine: every defect of issue 18, driven through fake ``tensorrt``/``cuda``
modules at the library boundary (tests/fake_gpu.py: the real 10.x/11.x Python APIs, an engine that really computes
with ONNX Runtime on the fake device memory) and a fake onnxruntime-gpu build (real option names, CPU kernels).
The real-GPU versions of these paths are ``pytest -m gpu`` (test_policy_tensorrt.py, test_policy_torch_engine.py)."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
from fake_gpu import FakeCuda, Faults, fake_gpu, fake_ort_gpu

from robot_stack.errors import PolicyError
from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.accuracy import compare_outputs, sample_inputs
from robot_stack.policy.tensorrt import TrtPolicy, choose_backend, default_profiles
from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict

INPUTS = [("state", "float32", (6,)), ("rgb", "uint8", (4, 4, 3))]


def _manifest(
    tmp_path: Path, name: str = "mlp", inputs=INPUTS, output=("actions", (4, 3)), hidden=32, **kw
) -> PolicyManifest:  # type: ignore[no-untyped-def]
    extra = kw.pop("manifest", {})
    model = build_toy_model(tmp_path / f"{name}.onnx", inputs, output, hidden, **kw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(toy_manifest_dict(model, name, max_batch=8, providers=["cpu"], **extra)))
    return PolicyManifest.load(path)


def _feed(batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {
        "state": rng.standard_normal((batch, 6)).astype(np.float32),
        "rgb": rng.integers(0, 255, (batch, 4, 4, 3)).astype(np.uint8),
    }


def _serves(policy, manifest: PolicyManifest) -> None:  # type: ignore[no-untyped-def]
    out = policy.run(_feed())
    ref = OnnxPolicy(manifest, "cpu").run(_feed())
    np.testing.assert_allclose(out["actions"], ref["actions"], rtol=2e-2, atol=2e-3)


# ---------------------------------------------------------------------------------- 1. TensorRT 10 vs 11


def test_trt11_fp16_builds_a_strongly_typed_network_from_an_fp16_graph(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """TensorRT 11 removed BuilderFlag.FP16: the old FP16 build raised AttributeError. Now the precision is put
    into the graph (FP16 copy, FP32 I/O) and the network is built strongly typed."""
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "11.4.0.106") as gpu:
        assert not hasattr(gpu.module.BuilderFlag, "FP16") and not hasattr(gpu.module, "IInt8EntropyCalibrator2")
        choice = choose_backend(manifest, "tensorrt", precision="fp16", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt", choice.reason
        assert ("create_network", 1 << 0) in gpu.trt.calls  # STRONGLY_TYPED is 0 in 11.x
        parsed = [c[1] for c in gpu.trt.calls if c[0] == "parse_from_file"]
        assert parsed and parsed[0].endswith("model-fp16.onnx")
        assert not any(c[0] == "set_flag" for c in gpu.trt.calls)  # no precision flags exist; TF32 only cleared
        assert choice.accuracy.ok and choice.accuracy.tolerance == "fp16"
        assert choice.policy.active.key.strongly_typed
        _serves(choice.policy, manifest)


def test_trt10_fp16_uses_the_builder_flag(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "10.3.0") as gpu:
        choice = choose_backend(manifest, "tensorrt", precision="fp16", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt", choice.reason
        assert ("set_flag", "FP16") in gpu.trt.calls and ("create_network", 0) in gpu.trt.calls
        assert [c[1] for c in gpu.trt.calls if c[0] == "parse_from_file"] == [str(manifest.onnx_path)]
        assert not choice.policy.active.key.strongly_typed


@pytest.mark.parametrize("version", ["10.16.1.11", "11.4.0.106"])
def test_int8_calibrates_on_the_given_frames(tmp_path, monkeypatch, version: str) -> None:  # type: ignore[no-untyped-def]
    """INT8 with TensorRT 10: the entropy calibrator is fed every calibration set (valid device pointers); with
    TensorRT 11: an INT8 Q/DQ graph calibrated on the same sets, built strongly typed. Without data: refused."""
    manifest = _manifest(tmp_path, inputs=[("state", "float32", (16,))], hidden=None)
    profiles = default_profiles(manifest)
    calib = sample_inputs(manifest, profiles, seed=5, shapes=("opt",) * 48)
    held = [{"state": 0.5 * x["state"]} for x in sample_inputs(manifest, profiles, seed=6, shapes=("opt",) * 3)]
    from robot_stack.policy.backends import load_backend

    with fake_gpu(monkeypatch, version) as gpu:
        choice = load_backend(
            manifest,
            "tensorrt",
            precision="int8",
            calibration=calib,
            gate_frames=held,
            trt_options={"cache_dir": tmp_path / "engines"},
        )
        assert choice.backend == "tensorrt", choice.reason
        assert choice.accuracy.tolerance == "int8" and choice.accuracy.samples == 2  # held-out frames at opt, max
        if version.startswith("10"):
            assert ("set_flag", "INT8") in gpu.trt.calls and ("calibrated", len(calib)) in gpu.trt.calls
        else:
            parsed = [c[1] for c in gpu.trt.calls if c[0] == "parse_from_file"]
            assert parsed[0].endswith("model-int8-qdq.onnx") and ("create_network", 1) in gpu.trt.calls
        other = load_backend(manifest, "tensorrt", precision="int8", trt_options={"cache_dir": tmp_path / "e2"})
        assert other.backend == "ort" and "calibration" in other.reason


# ----------------------------------------------------------------------------- 2. fallback on any failure


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (Faults(builder_typeerror=True), "TypeError"),
        (Faults(context_none=True), "execution context"),
        (Faults(parse_fails=True), "cannot parse"),
        (Faults(execute_fails_after=0), "RuntimeError"),
    ],
)
def test_any_gpu_failure_falls_back_to_ort_with_a_logged_reason(
    tmp_path, monkeypatch, caplog, faults, expected
) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "10.16.1.11", faults=faults) as gpu, caplog.at_level(logging.WARNING):
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert choice.backend == "ort" and expected in choice.reason
        assert "falling back to ONNX Runtime" in caplog.text and expected in caplog.text
        _serves(choice.policy, manifest)
        assert gpu.trt.live_engines == 0 and not gpu.cuda.streams and not gpu.cuda.memory  # nothing leaked


def test_cuda_python_too_new_for_the_driver_falls_back(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """pip's cuda-python 13 on JetPack 6's CUDA 12.6 driver cannot initialise: fall back, and name the pin."""
    manifest = _manifest(tmp_path)
    cuda = FakeCuda(driver=(12, 6), bindings_version="13.0.1")
    with fake_gpu(monkeypatch, "10.3.0", cuda=cuda):
        choice = choose_backend(manifest, "tensorrt", cache_dir=tmp_path / "engines")
    assert choice.backend == "ort"
    assert "cuda-python 13.0.1 needs a CUDA 13 driver" in choice.reason and "cuda-python==12.6.2.post1" in choice.reason


def test_read_only_engine_cache_serves_the_engine_from_memory(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    """An unwritable cache (here: its folder cannot be created) used to raise OSError out of the server start."""
    manifest = _manifest(tmp_path)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with fake_gpu(monkeypatch, "10.16.1.11"), caplog.at_level(logging.WARNING):
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=blocker / "engines")
        assert choice.backend == "tensorrt", choice.reason
        trt = choice.policy.active
        assert not trt.cache_hit and "not writable" in trt.cache_error and "not writable" in caplog.text
        _serves(choice.policy, manifest)


def test_damaged_cached_engine_is_rebuilt_not_fatal(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "10.16.1.11") as gpu:
        first = TrtPolicy(manifest, "fp32", cache_dir=tmp_path / "engines")
        first.engine_path.write_bytes(b"garbage")  # a truncated or damaged plan file
        first.close()
        with caplog.at_level(logging.WARNING):
            choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt", choice.reason
        assert "unusable" in caplog.text and "rebuilding" in caplog.text
        assert not choice.policy.active.cache_hit and len([c for c in gpu.trt.calls if c[0] == "build"]) == 2
        assert choice.policy.active.engine_path.read_bytes() != b"garbage"


def test_gpu_failing_while_serving_hands_over_to_ort_and_the_server_stays_up(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Through the real server: TensorRT serves, then the device fails; the failing request and every later one
    are answered by ONNX Runtime on the CPU, and the reply meta says so."""
    from robot_stack.policy.service import serve
    from robot_stack.transport.client import PolicyClient

    manifest = _manifest(tmp_path)
    ready, stop, endpoint = threading.Event(), threading.Event(), []
    with fake_gpu(monkeypatch, "10.16.1.11", faults=Faults(execute_fails_after=6)):
        thread = threading.Thread(
            target=serve,
            args=(manifest.source, "tcp://127.0.0.1:*", "cpu"),
            kwargs={
                "engine": "tensorrt",
                "precision": "fp32",
                "threads": 1,
                "on_ready": lambda e: (endpoint.append(e), ready.set()),
                "stop_event": stop,
            },
            daemon=True,
        )
        thread.start()
        try:
            assert ready.wait(60)
            ref = OnnxPolicy(manifest, "cpu")
            providers = []
            with PolicyClient(endpoint[0], "robot", timeout_s=30.0) as client:
                for _ in range(6):
                    feed = _feed(1)
                    reply = client.infer(feed, {})
                    np.testing.assert_allclose(reply.arrays["actions"], ref.run(feed)["actions"], rtol=1e-3, atol=1e-4)
                    providers.append(reply.meta["provider"])
        finally:
            stop.set()
            thread.join(10)
    assert providers[0] == "tensorrt-native-fp32" and providers[-1] == "cpu"  # warm-up used 2 of the 6 executions


# -------------------------------------------------------------------- 3. external weights, full cache key


def test_external_weights_are_parsed_from_the_file_and_keyed(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path, external_data=True)
    data = tmp_path / "mlp.onnx.data"
    assert data.is_file()
    with fake_gpu(monkeypatch, "10.16.1.11") as gpu:
        first = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert first.backend == "tensorrt", first.reason  # parse(bytes) cannot find mlp.onnx.data
        assert ("parse_from_file", str(manifest.onnx_path)) in gpu.trt.calls
        key = first.policy.active.key
        assert key.external_data_sha256 and key.compute_capability == "9.0" and key.multiprocessors == 132
        first.policy.close()
        weights = bytearray(data.read_bytes())  # retrained: same graph file, new weights in the data file
        weights[:64] = np.random.default_rng(7).standard_normal(16).astype(np.float32).tobytes()
        data.write_bytes(bytes(weights))
        again = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert again.backend == "tensorrt" and not again.policy.active.cache_hit
        assert again.policy.active.key.digest() != key.digest()
        _serves(again.policy, manifest)


def test_same_name_other_device_or_settings_do_not_share_engines(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    digests = set()
    for devices, extra in [
        ({"name": "Orin", "major": 8, "minor": 7, "totalGlobalMem": 8 << 30, "multiProcessorCount": 8}, {}),
        ({"name": "Orin", "major": 8, "minor": 7, "totalGlobalMem": 64 << 30, "multiProcessorCount": 16}, {}),
        (
            {"name": "Orin", "major": 8, "minor": 7, "totalGlobalMem": 64 << 30, "multiProcessorCount": 16},
            {"tf32": True},
        ),
        (
            {"name": "Orin", "major": 8, "minor": 7, "totalGlobalMem": 64 << 30, "multiProcessorCount": 16},
            {"workspace_mb": 256},
        ),
    ]:
        with fake_gpu(monkeypatch, "10.3.0", cuda=FakeCuda(devices=(devices,))):
            policy = TrtPolicy(manifest, "fp16", cache_dir=tmp_path / "engines", **extra)
            assert not policy.cache_hit
            digests.add(policy.key.digest())
            policy.close()
    assert len(digests) == 4


# --------------------------------------------------------------------------------- 4. every output bound


def test_engine_with_an_extra_output_is_used(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "10.16.1.11", faults=Faults(extra_output=True)) as gpu:
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt", choice.reason
        assert not any(c[0] == "execute_error" for c in gpu.trt.calls)
        assert set(choice.policy.run(_feed())) == {"actions"}


# -------------------------------------------------------------------------------------- 5. accuracy gate


def test_gate_judges_each_channel_on_its_own_scale() -> None:
    """A gripper channel 100x smaller than the position channels: an error of half its range passes a tolerance
    relative to the whole tensor, not one relative to the channel."""
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((8, 4, 4)).astype(np.float32)
    ref[..., 3] *= 0.01
    cand = ref.copy()
    cand[..., 3] += 0.5 * np.abs(ref[..., 3]).max()
    whole_allowed = 1e-3 + 2e-2 * np.abs(ref).max()
    assert np.abs(cand - ref).max() < whole_allowed  # what the old, whole-tensor gate let through
    report = compare_outputs([{"a": ref}], [{"a": cand}], rtol=2e-2, atol=1e-3)
    assert not report.ok and "channel 3" in report.reason
    assert [f.ok for f in report.channels["a"]] == [True, True, True, False]
    assert any("a[3]" in line and ">" in line for line in report.table())


def test_engine_wrong_in_one_small_channel_is_rejected_and_released(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(
        tmp_path,
        output=("actions", (4, 4)),
        manifest={"normalization": {"actions": {"mean": [0, 0, 0, 0], "std": [1, 1, 1, 0.01]}}},
    )
    with fake_gpu(monkeypatch, "10.16.1.11", faults=Faults(channel_bias=("actions", 3, 30.0))) as gpu:
        choice = choose_backend(manifest, "tensorrt", precision="fp16", cache_dir=tmp_path / "engines")
        assert choice.backend == "ort" and "channel 3" in choice.reason
        assert choice.accuracy is not None and not choice.accuracy.ok
        # 30 in the engine's normalised units is 0.3 in the channel's units (std 0.01): within a tolerance relative
        # to the whole tensor (|ref| up to ~100 in the other channels), half the gripper channel's range
        figs = {f.channel: f for f in choice.accuracy.channels["actions"]}
        assert figs[3].max_abs_err > 0.25 and figs[3].max_abs_err < 1e-3 + 2e-2 * max(
            f.ref_max_abs for f in figs.values()
        )
        # the rejected engine, its context, stream and device buffers are gone before ORT serves
        assert gpu.trt.live_engines == 0 and not gpu.cuda.streams and not gpu.cuda.memory
        assert tuple(c[0] for c in gpu.cuda.calls if c[0] == "cudaStreamDestroy") == ("cudaStreamDestroy",)


def test_gate_feeds_nan_where_the_manifest_allows_it(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inputs = [("state", "float32", (6,)), ("front/xyz", "float32", (4, 4, 3))]
    manifest = _manifest(tmp_path, inputs=inputs, nan_to_zero=["front/xyz"])
    assert manifest.inputs[1].allow_nonfinite
    with fake_gpu(monkeypatch, "10.16.1.11", faults=Faults(nan_bias=0.5)):
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
    assert choice.backend == "ort" and choice.accuracy.nonfinite_samples == 2
    with fake_gpu(monkeypatch, "10.16.1.11"):
        good = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "e2")
    assert good.backend == "tensorrt" and good.accuracy.ok and good.accuracy.nonfinite_samples == 2


def test_fp32_builds_clear_tf32_and_tf32_is_opt_in_with_its_own_tolerance(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """TF32 is on by default in TensorRT; an FP32 engine held to FP32 tolerance failed the gate for it."""
    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "10.16.1.11") as gpu:
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt", choice.reason
        assert ("clear_flag", "TF32") in gpu.trt.calls and choice.accuracy.tolerance == "fp32"
        fast = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines", tf32=True)
        assert fast.backend == "tensorrt", fast.reason
        assert ("set_flag", "TF32") in gpu.trt.calls and fast.accuracy.tolerance == "tf32"
        assert fast.accuracy.max_abs_err["actions"] > choice.accuracy.max_abs_err["actions"]


# ----------------------------------------------------------------------------- 6. ONNX Runtime GPU providers


def test_ort_tensorrt_ep_gets_profiles_a_weights_keyed_cache_and_preloaded_libraries(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    manifest = _manifest(tmp_path)
    record = fake_ort_gpu(monkeypatch)
    policy = OnnxPolicy(manifest, "tensorrt")
    assert policy.provider == "tensorrt" and record.preloads  # CUDA/cuDNN from the nvidia-* wheels
    (trt_name, options), cuda, cpu = record.sessions[-1][1]
    assert trt_name == "TensorrtExecutionProvider" and cuda == ("CUDAExecutionProvider", {"use_tf32": "0"})
    assert options["trt_profile_min_shapes"] == "state:1x6,rgb:1x4x4x3"
    assert options["trt_profile_opt_shapes"] == "state:1x6,rgb:1x4x4x3"
    assert options["trt_profile_max_shapes"] == "state:8x6,rgb:8x4x4x3"
    first_cache = options["trt_engine_cache_path"]
    assert options["trt_engine_cache_enable"] == "1" and options["trt_timing_cache_enable"] == "1"
    build_toy_model(manifest.onnx_path, INPUTS, ("actions", (4, 3)), 32, seed=11)  # retrained, same file name
    OnnxPolicy(manifest, "tensorrt")
    assert record.sessions[-1][1][0][1]["trt_engine_cache_path"] != first_cache


def test_ort_gpu_providers_are_gated_down_the_chain(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.policy.backends import load_backend

    manifest = _manifest(tmp_path)
    fake_ort_gpu(monkeypatch)
    good = load_backend(manifest, "ort", provider="tensorrt")
    assert good.policy.provider == "tensorrt" and good.accuracy.ok and good.accuracy.tolerance == "tf32"
    fake_ort_gpu(monkeypatch, bias=0.5)  # both GPU providers compute something else
    with caplog.at_level(logging.WARNING):
        bad = load_backend(manifest, "ort", provider="tensorrt")
    assert bad.policy.provider == "cpu" and "tensorrt: accuracy check failed" in bad.reason
    assert "cuda: accuracy check failed" in bad.reason and "failed the accuracy gate" in caplog.text
    with pytest.raises(PolicyError, match="accuracy check failed"):
        load_backend(manifest, "ort", provider="cuda", strict=True)


# ------------------------------------------------------------------------------------------ 7. memory order


def test_build_reference_and_fallback_never_coexist(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Engine built (builder freed) -> CPU reference run and freed -> engine loaded and gated; the ORT fallback
    exists only after a rejected engine was released, and not at all when the engine passes."""
    manifest = _manifest(tmp_path)
    events: list[str] = []
    fake_ort_gpu(monkeypatch, events=events)
    with fake_gpu(monkeypatch, "10.16.1.11", events=events):
        choice = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "engines")
        assert choice.backend == "tensorrt"
        assert events == ["build", "ort+CPUExecutionProvider", "ort-CPUExecutionProvider", "engine+", "context+"]
    events.clear()
    with fake_gpu(monkeypatch, "10.16.1.11", events=events, faults=Faults(channel_bias=("actions", 0, 9.0))):
        rejected = choose_backend(manifest, "tensorrt", precision="fp32", cache_dir=tmp_path / "e2")
        assert rejected.backend == "ort"
    released = max(events.index("engine-"), events.index("context-"))
    assert events[:5] == ["build", "ort+CPUExecutionProvider", "ort-CPUExecutionProvider", "engine+", "context+"]
    assert events.index("ort+CPUExecutionProvider", 3) > released  # the fallback came after the release


# ---------------------------------------------------------------------------- 8. what the stack checks at start


def test_check_backends_says_which_path_runs_and_why(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.policy import gpu_env

    manifest = _manifest(tmp_path)
    with fake_gpu(monkeypatch, "11.4.0.106"):
        report = gpu_env.check_backends("tensorrt", manifest=manifest)
    assert report.ok and report.plan.path == "tensorrt-native" and "strongly typed" in report.plan.reason
    assert report.device is not None and report.device.sm == "9.0" and report.versions["tensorrt"] == "11.4.0.106"
    assert json.loads(json.dumps(report.to_dict()))["plan"]["path"] == "tensorrt-native"  # structured for `doctor`

    with fake_gpu(monkeypatch, None):  # no tensorrt
        missing = gpu_env.check_backends("tensorrt")
    assert not missing.ok and missing.plan.path == "ort-cpu" and "robot-stack[gpu]" in missing.plan.reason

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64\n")
    monkeypatch.setattr(gpu_env, "JETSON_RELEASE_FILE", release)
    with fake_gpu(monkeypatch, None, cuda=FakeCuda(driver=(12, 6), bindings_version="13.0.1")):
        jetson = gpu_env.check_backends("tensorrt")
    checks = {c.name: c for c in jetson.checks}
    assert checks["jetson"].detail.startswith("L4T # R36")
    assert "python3-libnvinfer" in checks["tensorrt"].detail and "--system-site-packages" in checks["tensorrt"].detail
    assert "cuda-python==12.6.2.post1" in checks["cuda"].detail


def test_two_onnxruntime_wheels_are_reported_as_a_collision(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.policy import gpu_env

    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.26.0"}
    monkeypatch.setattr(gpu_env, "_dist_version", versions.get)
    report = gpu_env.check_backends("ort")
    check = next(c for c in report.checks if c.name == "onnxruntime")
    assert not check.ok and check.required and not report.ok
    assert "pip uninstall -y onnxruntime onnxruntime-gpu" in check.fix and "onnxruntime-gpu==1.26.0" in check.fix


def test_serve_logs_the_backend_check_at_start(tmp_path, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.policy.service import serve

    manifest = _manifest(tmp_path)
    stop = threading.Event()
    with caplog.at_level(logging.INFO, logger="robot_stack.policy.service"):
        serve(manifest.source, "tcp://127.0.0.1:*", engine="tensorrt", on_ready=lambda _: stop.set(), stop_event=stop)
    assert "backend: ort-cpu (engine tensorrt" in caplog.text and "[!!] tensorrt" in caplog.text
