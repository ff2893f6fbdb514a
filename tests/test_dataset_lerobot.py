"""The dataset follows LeRobot v3.0: schema rules checked with pyarrow (fast), and LeRobot's own classes (slow)."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
import types

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.dataset import CameraStream, DatasetSpec, DatasetWriter, FrameRow, load_dataset, validate_layout
from robot_stack.errors import DatasetError
from robot_stack.types import Pose, RobotState

W, H = 64, 48


def _write(root, episodes=(3, 5), tasks=("pick", "place")):
    spec = DatasetSpec(fps=15, cameras=(CameraStream("front", W, H), CameraStream("side", W, H)))
    cals = {c: load_calibration("sim_tabletop", c) for c in ("front", "side")}
    w = DatasetWriter(root, spec, cals)
    rng = np.random.default_rng(0)
    for n, task in zip(episodes, tasks, strict=True):
        ep = w.begin_episode(task)
        for k in range(n):
            st = RobotState(k, rng.normal(size=7), np.zeros(7), Pose.identity("base", "tcp"), 0.5)
            i = ep.add_row(FrameRow(1000 + k, (1000 + k, 1001 + k), st, st.q + 0.1, 0.0, st.ee_pose))
            for cam in ("front", "side"):
                rgb = np.full((H, W, 3), 40 * k % 255, np.uint8)
                ep.write_rgb(cam, i, rgb)
                ep.write_depth(cam, i, 1000 + k, rng.integers(0, 65535, (H, W), dtype=np.uint16))
        w.commit(ep, success=task == "pick")
    return w


def test_layout_follows_lerobot_v30_schema_rules(tmp_path):
    w = _write(tmp_path / "ds")
    info = json.loads((w.root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["total_episodes"] == 2 and info["total_frames"] == 8
    assert info["total_tasks"] == 2 and info["splits"] == {"train": "0:2"}
    feats = info["features"]
    for name in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert feats[name]["shape"] == [1]
    assert feats["observation.images.front"]["dtype"] == "video"
    assert feats["observation.images.front"]["shape"] == [H, W, 3]
    assert feats["action"]["shape"] == [len(feats["action"]["names"])]
    table = pq.read_table(w.root / "data/chunk-000/file-001.parquet")
    assert table.schema.field("observation.state").type == pa.list_(pa.float32(), 8)
    assert table.column("index").to_pylist() == [3, 4, 5, 6, 7]
    assert table.column("task_index").to_pylist() == [1] * 5
    tasks = pq.read_table(w.root / "meta/tasks.parquet")
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["__index_level_0__"]
    assert tasks.column("__index_level_0__").to_pylist() == ["pick", "place"]
    stats = json.loads((w.root / "meta/stats.json").read_text())
    assert stats["observation.state"]["count"] == [8]
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    assert validate_layout(w.root) == {
        "episodes": 2,
        "frames": 8,
        "video_keys": ["observation.images.front", "observation.images.side"],
    }


def test_validator_catches_broken_rules(tmp_path):
    w = _write(tmp_path / "ds")
    data = w.root / "data/chunk-000/file-001.parquet"
    t = pq.read_table(data)
    pq.write_table(t.set_column(t.schema.get_field_index("index"), "index", pa.array([0, 1, 2, 3, 4])), data)
    with pytest.raises(DatasetError, match="contiguous"):
        validate_layout(w.root)
    pq.write_table(t.set_column(0, "observation.state", t.column(0).cast(pa.list_(pa.float64(), 8))), data)
    with pytest.raises(DatasetError, match="do not match the features"):
        validate_layout(w.root)
    pq.write_table(t, data)
    validate_layout(w.root)
    (w.root / "videos/observation.images.side/chunk-000/file-000.mp4").unlink()
    with pytest.raises(DatasetError, match="missing"):
        validate_layout(w.root)


def test_loader_reads_what_was_written(tmp_path):
    w = _write(tmp_path / "ds")
    ds = load_dataset(w.root)
    ep = ds.load_episode(1)
    assert ep.task == "place" and not ep.success and ep.length == 5
    np.testing.assert_array_equal(ep.timestamp, np.arange(5, dtype=np.float32) / 15)
    np.testing.assert_allclose(ep.q_target, ep.q + 0.1, atol=1e-6)
    np.testing.assert_array_equal(ep.cameras["side"].t_capture_ns, 1001 + np.arange(5))
    grey = ep.cameras["front"].rgb.reshape(5, -1).mean(1)
    np.testing.assert_allclose(grey, 40 * np.arange(5), atol=3)
    with pytest.raises(DatasetError, match="does not exist"):
        ds.load_episode(2)


def _lerobot_dataset_class(monkeypatch):
    """LeRobotDataset, or the reason it cannot be imported here.

    lerobot 0.4.x imports torchvision at module level. On PyPI torchvision exists only as a CUDA build whose C++
    extension links libtorch_cuda.so, which the CPU torch (2.13.0+cpu) of this project lacks: ``import torchvision``
    then fails ("operator torchvision::nms does not exist"). LeRobot uses torchvision only for its torchvision video
    backend and image transforms; when it is unusable we register an empty ``torchvision`` module so that LeRobot's
    metadata, task and parquet loading (the parts that define the layout) run for real, and check the video
    timestamps against LeRobot's lookup rule with PyAV instead of LeRobot's decoder.
    """
    pytest.importorskip("lerobot", reason="pip install --no-deps lerobot==0.4.4 datasets pandas draccus accelerate")
    real_torchvision = True
    try:
        importlib.import_module("torchvision")
    except Exception:
        real_torchvision = False
        stub = types.ModuleType("torchvision")
        stub.__spec__ = importlib.machinery.ModuleSpec("torchvision", None)
        stub.transforms = types.ModuleType("torchvision.transforms")
        stub.transforms.__spec__ = importlib.machinery.ModuleSpec("torchvision.transforms", None)
        monkeypatch.setitem(sys.modules, "torchvision", stub)  # removed again after the test
        monkeypatch.setitem(sys.modules, "torchvision.transforms", stub.transforms)
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    return LeRobotDataset, real_torchvision


@pytest.mark.slow
def test_lerobot_loads_a_dataset_recorded_in_the_sim(tmp_path, monkeypatch):
    from robot_stack.collection.session import SimRecordingRig
    from robot_stack.dataset.recorder import Recorder
    from robot_stack.teleop import ExpertTeleop

    rig = SimRecordingRig(("front", "side"), fps=10, width=160, height=120, max_duration_s=1.0)
    root = tmp_path / "ds"
    try:
        rec = Recorder(DatasetWriter(root, rig.spec, rig.calibrations))
        for seed in (0, 1):
            rig.record_episode(rec, ExpertTeleop(rig.task.cube_top_center), seed)
    finally:
        rig.close()
    LeRobotDataset, real_torchvision = _lerobot_dataset_class(monkeypatch)
    ds = LeRobotDataset("local/robot_stack_sim", root=root, video_backend="pyav")
    ours = load_dataset(root)
    assert ds.num_episodes == 2 and ds.num_frames == ours.num_frames
    assert ds.meta.video_keys == ["observation.images.front", "observation.images.side"]
    assert ds.meta.tasks.iloc[0].name == "reach and touch the red cube"
    ep1 = ours.load_episode(1)
    start = ds.meta.episodes[1]["dataset_from_index"]
    row = ds.hf_dataset[start + 2]
    np.testing.assert_array_equal(row["observation.state"].numpy(), ep1.state[2])
    np.testing.assert_array_equal(row["action"].numpy(), ep1.action[2])
    assert int(row["episode_index"]) == 1 and int(row["frame_index"]) == 2
    if real_torchvision:
        item = ds[start + 2]
        img = (item["observation.images.front"].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(img - ep1.cameras["front"].rgb[2]).mean() < 3
        assert item["task"] == "reach and touch the red cube"
    else:  # LeRobot's lookup: frame at from_timestamp + timestamp within tolerance_s, in the episode's mp4
        for key in ds.meta.video_keys:
            path = root / ds.meta.get_video_file_path(1, key)
            with av.open(str(path)) as c:
                times = [float(f.pts * f.time_base) for f in c.decode(video=0)]
            query = ds.meta.episodes[1][f"videos/{key}/from_timestamp"] + float(row["timestamp"])
            assert min(abs(t - query) for t in times) < ds.tolerance_s
