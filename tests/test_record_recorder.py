"""Recorder: off-thread streams with bounded queues; drops are counted and reported, never silent; episode keys."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from robot_stack.calibration.store import load_calibration
from robot_stack.collection.session import run_live_session
from robot_stack.dataset import CameraStream, DatasetSpec, DatasetWriter, FrameRow, JointSample, load_dataset
from robot_stack.dataset.recorder import Recorder
from robot_stack.errors import DatasetError
from robot_stack.teleop import KeyboardJog, KeySource
from robot_stack.types import Frame, Pose, RobotState

W, H = 32, 24


def _writer(root):
    spec = DatasetSpec(fps=10, cameras=(CameraStream("front", W, H),))
    return DatasetWriter(root, spec, {"front": load_calibration("sim_tabletop", "front")})


def _frame(k: int):
    st = RobotState(k, np.full(7, 0.01 * k), np.zeros(7), Pose.identity("base", "tcp"), 1.0)
    row = FrameRow(k, (k,), st, st.q, 1.0, st.ee_pose)
    f = Frame(np.full((H, W, 3), k % 255, np.uint8), np.full((H, W), k, np.uint16), 0.001, k, "front", k)
    return row, [f]


def test_full_queues_drop_whole_frames_counted_and_reported(tmp_path):
    w = _writer(tmp_path / "ds")
    rec = Recorder(w, queue_frames=2, max_joint_samples=5)
    rec.start_episode("t")
    gate = threading.Event()
    ep = w._active
    entered = {}

    def stall(name: str) -> None:  # the real encoder, stalled until the test lets it go (a slow disk/encoder)
        write = getattr(ep, name)
        entered[name] = threading.Event()

        def stalled(*args):
            entered[name].set()
            gate.wait(30)
            write(*args)

        setattr(ep, name, stalled)

    stall("write_rgb")
    stall("write_depth")
    taken = [rec.add_frame(*_frame(0))]
    # frame 0 is inside both encoders (rgb and depth workers); each queue now holds at most 2 more
    assert all(e.wait(30) for e in entered.values())
    taken += [rec.add_frame(*_frame(k)) for k in range(1, 8)]
    assert taken == [True, True, True] + [False] * 5
    joints = [rec.add_joint_sample(JointSample(k, np.zeros(7), np.zeros(7), np.zeros(7), 1.0)) for k in range(8)]
    assert joints == [True] * 5 + [False] * 3
    st = rec.stats()
    assert (st.frames, st.dropped_frames, st.joint_samples, st.dropped_joint_samples) == (3, 5, 5, 3)
    gate.set()
    committed = rec.stop_episode(success=True)
    assert committed.length == 3 and committed.dropped_frames == 5 and committed.dropped_joint_samples == 3
    ep = load_dataset(w.root).load_episode(0)
    assert ep.meta["dropped_frames"] == 5 and ep.highrate.t_ns.size == 5
    np.testing.assert_array_equal(ep.cameras["front"].depth[:, 0, 0], [0, 1, 2])  # the taken frames, in order


def test_stream_failure_aborts_the_episode_loudly(tmp_path):
    w = _writer(tmp_path / "ds")
    rec = Recorder(w)
    rec.start_episode("t")
    row, frames = _frame(0)
    bad = [Frame(frames[0].color, frames[0].depth, 0.001, 0, "front", 0)]
    rec.add_frame(row, bad)
    rec.add_frame(*_frame(1))
    w._active.write_depth = lambda *a: (_ for _ in ()).throw(OSError("disk full"))  # what a full disk raises
    rec.add_frame(*_frame(2))
    with pytest.raises(DatasetError, match="disk full"):
        rec.stop_episode(success=True)
    assert w.num_episodes == 0 and not any((w.root / ".tmp").iterdir())


def test_add_frame_refuses_wrong_cameras_and_needs_an_episode(tmp_path):
    rec = Recorder(_writer(tmp_path / "ds"))
    assert rec.add_frame(*_frame(0)) is False  # not recording: not taken, not counted
    rec.start_episode("t")
    row, _ = _frame(0)
    with pytest.raises(DatasetError, match="no frame for camera"):
        rec.add_frame(row, [])
    with pytest.raises(DatasetError, match="already"):
        rec.start_episode("t")
    with pytest.raises(DatasetError, match="no frames"):
        rec.stop_episode(success=False)
    assert rec.discard() is False


class _ScriptedKeys(KeySource):
    """One batch of keys per poll (a person typing between control steps)."""

    def __init__(self, batches):
        super().__init__()
        self.batches = list(batches)

    def poll(self):
        extra = super().poll()
        return (self.batches.pop(0) if self.batches else ["q"]) + extra


def test_live_session_start_discard_redo_stop(tmp_path):
    from robot_stack.collection.session import sim_dataset_spec

    spec = sim_dataset_spec(("front",), fps=20, width=64, height=48)
    w = DatasetWriter(tmp_path / "ds", spec, {"front": load_calibration("sim_tabletop", "front")})
    rec = Recorder(w)
    keys = _ScriptedKeys([["s"], ["i"], [], ["x"], ["s"], ["u"], ["r"], ["k"], [], [], ["e"], ["s"], [], ["f"], ["q"]])
    report = run_live_session(("front",), rec, KeyboardJog(None), keys, fps=20, width=64, height=48, seed=5)
    assert report.events == (
        "start", "discard", "start", "redo", "stop_success", "start", "stop_failure", "quit"
    )  # fmt: skip
    assert [c.episode_index for c in report.committed] == [0, 1] and report.discarded == 2
    ds = load_dataset(w.root)
    np.testing.assert_array_equal(ds.successes(), [True, False])
    ep = ds.load_episode(0)
    assert ep.length == 4 and ep.meta["teleop"] == "keyboard" and ep.meta["mode"] == "live"
    assert ep.highrate.t_ns.size > 0  # the executor thread's set-points were recorded


@pytest.mark.slow
def test_record_benchmark_runs_and_reports_drops():
    from robot_stack.bench.record import run

    out = run(quick=True)
    assert out["frames_offered"] == 60 and out["frames_committed"] + out["frames_dropped"] == 60
    assert out["compression_ratio"] > 5 and out["encode_rgb:front_p50_ms"] > 0
