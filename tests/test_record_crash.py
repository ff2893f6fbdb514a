"""Crash safety: a real `robot-stack record` subprocess killed with SIGKILL mid-episode loses at most that episode;
`record --resume` repairs the index and appends. Plus the interrupted-commit case (files renamed, no marker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.dataset import CameraStream, DatasetSpec, DatasetWriter, FrameRow, load_dataset, validate_layout
from robot_stack.errors import DatasetError
from robot_stack.types import Frame, Pose, RobotState

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--width", "160", "--height", "120", "--fps", "10", "--max-duration", "1.5"]


def _record_cmd(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "robot_stack.cli", "record", "--teleop", "expert", "--out", str(out), *SMALL, *extra]


def _markers(root: Path) -> list[Path]:
    return sorted((root / "meta/episodes").glob("*/*.parquet"))


def _in_progress(root: Path) -> bool:
    """An episode is being written (a non-empty video under ``.tmp``). The recorder creates, renames and removes
    these files while we look: a path that vanishes mid-walk means "not this time", not an error."""
    tmp = root / ".tmp"
    try:
        return tmp.is_dir() and any(p.suffix == ".mp4" and p.stat().st_size > 0 for p in tmp.rglob("*.mp4"))
    except FileNotFoundError:
        return False


def test_sigkill_mid_episode_then_resume(tmp_path):
    root = tmp_path / "ds"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        _record_cmd(root, "--episodes", "50"), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        # wait for at least one committed episode and the next one half-written
        while not (len(_markers(root)) >= 1 and _in_progress(root)):
            assert proc.poll() is None, "recorder exited before it could be killed"
            assert time.monotonic() < deadline, "no committed episode + episode in progress within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    committed = len(_markers(root))
    assert committed >= 1 and (root / ".tmp").is_dir()

    # every committed episode loads intact with the reader alone (no repair needed to read)
    ds = load_dataset(root)
    assert len(ds) == committed
    for i in range(committed):
        ep = ds.load_episode(i)
        assert ep.length == ds.episode_info(i)["length"] > 0
        assert ep.cameras["front"].rgb.shape[0] == ep.cameras["side"].depth.shape[0] == ep.length

    out = subprocess.run(
        _record_cmd(root, "--episodes", "1", "--resume"), cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    repair, appended = lines[0], lines[1]
    assert repair["committed_episodes"] == committed
    assert repair["removed_half_written"], "the half-written episode should have been removed"
    assert appended["episode"] == committed and appended["seed"] == committed  # seeds continue, nothing reused
    assert not (root / ".tmp").exists() or not any((root / ".tmp").iterdir())
    summary = validate_layout(root)
    assert summary["episodes"] == committed + 1


def _tiny_writer(root: Path) -> DatasetWriter:
    spec = DatasetSpec(fps=10, cameras=(CameraStream("front", 32, 24),))
    return DatasetWriter(root, spec, {"front": load_calibration("sim_tabletop", "front")})


def _fill(ep, n: int, rng: np.random.Generator) -> None:
    for k in range(n):
        st = RobotState(k, rng.normal(size=7), np.zeros(7), Pose.identity("base", "tcp"), 1.0)
        i = ep.add_row(FrameRow(k, (k,), st, st.q, 1.0, st.ee_pose))
        f = Frame(
            rng.integers(0, 255, (24, 32, 3), np.uint8), rng.integers(0, 4000, (24, 32), np.uint16), 0.001, k, "front"
        )
        ep.write_rgb("front", i, f.color)
        ep.write_depth("front", i, f.t_capture_ns, f.depth)


def test_interrupted_commit_leaves_orphans_that_repair_removes(tmp_path):
    rng = np.random.default_rng(0)
    w = _tiny_writer(tmp_path / "ds")
    ep = w.begin_episode("task a")
    _fill(ep, 3, rng)
    w.commit(ep, True)
    # second episode: crash after its files were renamed into place but before its marker (the commit point)
    ep = w.begin_episode("task b")
    _fill(ep, 4, rng)
    ep.finish(False)
    for role, rel in ep.files.items():
        if role != "marker":
            (w.root / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(ep.tmp / rel, w.root / rel)
    (w.root / "meta/info.json").write_text("{ truncated")  # and the index write was torn
    w2 = _tiny_writer(tmp_path / "ds")
    rep = w2.last_repair
    assert rep.episodes == 1 and rep.frames == 3 and rep.index_rewritten
    assert len(rep.removed_orphans) == len(ep.files) - 1 and rep.removed_tmp
    assert validate_layout(w2.root)["episodes"] == 1
    ep = w2.begin_episode("task b")
    _fill(ep, 2, rng)
    assert w2.commit(ep, False).episode_index == 1
    ds = load_dataset(w2.root)
    assert [ds.episode_info(i)["tasks"] for i in range(2)] == [["task a"], ["task b"]]
    np.testing.assert_array_equal(ds.successes(), [True, False])


def test_damaged_dataset_is_refused_with_advice(tmp_path):
    rng = np.random.default_rng(1)
    w = _tiny_writer(tmp_path / "ds")
    for _ in range(2):
        ep = w.begin_episode("t")
        _fill(ep, 2, rng)
        w.commit(ep, True)
    (w.root / "meta/episodes/chunk-000/file-000.parquet").unlink()  # a committed marker lost by hand
    with pytest.raises(DatasetError, match="not contiguous"):
        _tiny_writer(tmp_path / "ds")


def test_existing_dataset_needs_resume(tmp_path, caplog):
    from robot_stack.cli import main
    from robot_stack.collection.session import sim_dataset_spec

    cals = {c: load_calibration("sim_tabletop", c) for c in ("front", "side")}
    DatasetWriter(tmp_path / "ds", sim_dataset_spec(("front", "side"), 10, 160, 120), cals)
    assert main(["record", "--out", str(tmp_path / "ds"), "--episodes", "1", *SMALL]) == 1
    assert "--resume" in caplog.text
