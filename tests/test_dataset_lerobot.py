"""The dataset follows LeRobot v3.0: schema rules checked with pyarrow (fast), and LeRobot's own classes (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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


@pytest.mark.slow
def test_lerobot_recipe_reads_a_recorded_dataset_with_lerobots_own_classes(tmp_path):
    """scripts/lerobot_recipe.sh: the separate LeRobot 0.4.4 environment (torch 2.10.0, torchvision 0.25.0,
    torchcodec 0.10.0; built on first use: ~8 GB, minutes) loads a dataset just recorded by robot-stack with
    LeRobotDataset, decodes its frames (torchcodec, and PyAV as the fallback backend) equal to robot-stack's own
    decode, reads state and action chunks through delta_timestamps, and runs lerobot-dataset-viz."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "ROBOT_STACK_PYTHON": sys.executable, "LEROBOT_OUT": str(tmp_path / "out")}
    proc = subprocess.run(
        ["bash", str(repo / "scripts" / "lerobot_recipe.sh")], cwd=repo, env=env, capture_output=True, text=True,
        timeout=3600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["ok"] and result["lerobot"] == "0.4.4" and result["torch"].startswith("2.10.0")
    assert result["episodes"] == 2 and max(result["frame_error_grey_levels"].values()) < 3
    assert Path(result["viz_rrd"]).stat().st_size > 0
    venv = Path(os.environ.get("LEROBOT_VENV", ".venv-lerobot"))
    venv = venv if venv.is_absolute() else repo / venv
    pyav = subprocess.run(
        [str(venv / "bin" / "python"), "scripts/lerobot_check.py", str(tmp_path / "out" / "dataset"),
         str(tmp_path / "out" / "robot_stack_frames.npz"), "--out", str(tmp_path / "pyav"), "--video-backend", "pyav"],
        cwd=repo, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert pyav.returncode == 0, pyav.stderr[-3000:]
    assert json.loads(pyav.stdout.strip().splitlines()[-1])["video_backend"] == "pyav"
