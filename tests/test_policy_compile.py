"""``robot-stack compile`` with recorded calibration data: frames rebuilt from a real recording (the recorder, the
dataset loader), INT8 calibrated on them through the fake TensorRT 10 calibrator and TensorRT 11 Q/DQ path, the
per-output per-channel gate figures printed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from fake_gpu import fake_gpu

from robot_stack.cli import main
from robot_stack.errors import DatasetError, PolicyError
from robot_stack.policy import PolicyManifest
from robot_stack.policy.calibration_data import recorded_frames
from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict

MODELS = Path(__file__).resolve().parent.parent / "robot_stack" / "policy" / "models"
CONTINUOUS = MODELS / "reach-visuomotor" / "reach-visuomotor-continuous.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short expert episodes recorded by the real recorder (front camera 640x480, 5 frames each)."""
    out = tmp_path_factory.mktemp("calib") / "ds"
    args = ["record", "--teleop", "expert", "--episodes", "2", "--out", str(out), "--cameras", "front"]
    assert main([*args, "--max-duration", "0.5"]) == 0
    return out


def test_recorded_frames_are_the_served_observations(dataset: Path) -> None:
    from robot_stack.dataset import load_dataset

    manifest = PolicyManifest.load(CONTINUOUS)
    rec = recorded_frames(manifest, dataset, max_frames=4)
    assert len(rec.frames) == 4 and rec.episodes == 2 and len(rec.digest) == 64
    ep = load_dataset(dataset).load_episode(0, highrate=False)
    first = rec.frames[0]
    np.testing.assert_array_equal(first["front/rgb"], ep.cameras["front"].rgb[0])
    np.testing.assert_array_equal(first["front/xyz"], ep.xyz_base("front", 0))  # NaN where depth is invalid
    assert np.isnan(first["front/xyz"]).any() and np.isfinite(first["state"]).all()
    np.testing.assert_array_equal(first["state"], ep.state_vector(0))
    assert recorded_frames(manifest, dataset, max_frames=4).digest == rec.digest  # deterministic: a cache key
    calib, held = rec.split()
    assert len(calib) == 3 and len(held) == 1


def test_recorded_frames_refuse_what_the_dataset_cannot_give(dataset: Path, tmp_path: Path) -> None:
    model = build_toy_model(tmp_path / "m.onnx", [("wrist/rgb", "uint8", (4, 4, 3))], ("actions", (2,)))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(toy_manifest_dict(model, "m")))
    with pytest.raises(DatasetError, match=r"wrist/rgb.*cameras \['front'\]"):
        recorded_frames(PolicyManifest.load(tmp_path / "m.yaml"), dataset)
    model = build_toy_model(tmp_path / "s.onnx", [("front/rgb", "uint8", (4, 4, 3))], ("actions", (2,)))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(toy_manifest_dict(model, "s")))
    with pytest.raises(PolicyError, match="does not fit"):  # the model wants 4x4 images, the camera gives 480x640
        recorded_frames(PolicyManifest.load(tmp_path / "s.yaml"), dataset)


def test_compile_int8_calibrates_on_recorded_episodes_and_prints_the_gate(
    dataset, tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    args = ["compile", str(CONTINUOUS), "--int8", "--calibration-data", str(dataset), "--calibration-frames", "8"]
    with fake_gpu(monkeypatch, "10.16.1.11") as gpu:
        rc = main([*args, "--cache-dir", str(tmp_path / "engines"), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"], report["reason"]
    assert ("calibrated", 6) in gpu.trt.calls  # 8 frames: 6 calibrate, every 4th (2) is held out for the gate
    assert report["calibration"].startswith("8 frames from 2 episodes")
    assert report["gate"][0].startswith("accuracy gate (int8") and "2 input sets" in report["gate"][0]
    assert [line.split(":")[0].strip() for line in report["gate"][1:4]] == ["actions[0]", "actions[1]", "actions[2]"]

    with fake_gpu(monkeypatch, "10.16.1.11"):  # text mode, same engine from the cache
        rc = main([*args, "--cache-dir", str(tmp_path / "engines")])
    out = capsys.readouterr().out
    assert rc == 0 and "loaded from cache" in out and "calibration: 8 frames" in out and "actions[2]: max err" in out


def test_compile_int8_on_tensorrt_11_uses_a_calibrated_qdq_graph(dataset, tmp_path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """TensorRT 11 has no calibrator: the recorded frames calibrate an INT8 Q/DQ copy of the graph, which is
    then judged on the held-out frames like any engine (this small policy loses too much in INT8: the gate says
    so, per channel, and serving would use ONNX Runtime)."""
    args = ["compile", str(CONTINUOUS), "--int8", "--calibration-data", str(dataset), "--calibration-frames", "8"]
    with fake_gpu(monkeypatch, "11.4.0.106") as gpu:
        rc = main([*args, "--cache-dir", str(tmp_path / "engines"), "--json"])
    report = json.loads(capsys.readouterr().out)
    parsed = [c[1] for c in gpu.trt.calls if c[0] == "parse_from_file"]
    assert parsed and parsed[0].endswith("model-int8-qdq.onnx")
    assert report["gate"] and report["gate"][0].startswith("accuracy gate (int8")
    assert (rc == 0) == report["ok"]
    if not report["ok"]:
        assert "accuracy check against ONNX Runtime failed (int8)" in report["reason"]
