"""``robot-stack bench record``: sustained recording of 2 RGB-D cameras (640x480, 30 Hz) + joints at 500 Hz.

A producer thread offers frame sets at 30 Hz on absolute deadlines and another offers joint samples at 500 Hz to a
real :class:`~robot_stack.dataset.recorder.Recorder` (H.264 + zstd/parquet depth, bounded queues) for a few seconds;
then the episode is committed (fsync, renames, index). Frames are simulator renders of the demo cell (both
cameras, the arm moving), cycled with a per-frame shift so the encoder sees motion.

Reported: frames offered/dropped (target 0), joint samples dropped, encode time per frame p50/p99 per stream,
input throughput (raw RGB + depth MB/s absorbed), bytes on disk, commit time, and the same-run baseline: writing
the same raw frames with ``np.save`` (no encoding, no compression) — ``ratio_encode_vs_np_save`` = encode time
per frame set (all streams summed; they run in parallel threads) / ``np.save`` time per frame set. Whether the
recorder keeps up is ``frames_dropped`` and ``drain_after_last_frame_s`` (backlog left when the stream ends).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.bench.registry import register
from robot_stack.clock import MonotonicClock
from robot_stack.types import Frame


def _render_frames(n: int, width: int, height: int) -> tuple[dict[str, list[Frame]], Any]:
    from robot_stack.calibration.store import load_calibration
    from robot_stack.clock import FakeClock
    from robot_stack.dataset.writer import calibration_at
    from robot_stack.robots import panda
    from robot_stack.sim.camera import SimCamera
    from robot_stack.sim.scene import scene_with_cameras
    from robot_stack.sim.world import SimWorld

    cams = ("front", "side")
    world = SimWorld(FakeClock(), config=scene_with_cameras(cams))
    world.reset(seed=1)
    out: dict[str, list[Frame]] = {c: [] for c in cams}
    cameras = [SimCamera(world, c, width, height) for c in cams]
    for cam in cameras:
        cam.start()
    try:
        for k in range(n):
            q = panda.HOME_Q + 0.25 * np.sin(np.linspace(0, 1, 7) + 2 * np.pi * k / n)
            world.set_arm_q(q, gripper=1.0)
            for cam in cameras:
                out[cam.camera_id].append(cam.read())
    finally:
        for cam in cameras:
            cam.stop()
    cals = {c: calibration_at(load_calibration("sim_tabletop", c), width, height) for c in cams}
    return out, cals


@register("record")
def run(quick: bool) -> dict[str, Any]:
    from robot_stack.dataset.format import CameraStream, DatasetSpec
    from robot_stack.dataset.recorder import Recorder
    from robot_stack.dataset.writer import DatasetWriter, FrameRow, JointSample
    from robot_stack.types import Pose, RobotState

    width, height, fps, rate = 640, 480, 30, 500
    duration_s = 2.0 if quick else 5.0
    rendered, cals = _render_frames(8 if quick else 16, width, height)
    cams = tuple(rendered)
    n_frames = int(duration_s * fps)
    rng = np.random.default_rng(0)

    def frame_set(k: int, t_ns: int) -> list[Frame]:
        out = []
        for c in cams:
            src = rendered[c][k % len(rendered[c])]
            shift = (k // len(rendered[c])) * 3  # new content every cycle: the encoder cannot reuse whole frames
            out.append(
                Frame(np.roll(src.color, shift, axis=1), np.roll(src.depth, shift, axis=1), src.depth_scale, t_ns, c, k)
            )
        return out

    frames = [frame_set(k, 0) for k in range(n_frames)]  # prepared up front: the producer only hands them over
    raw_bytes = sum(f.color.nbytes + f.depth.nbytes for fs in frames for f in fs)
    tmp = Path(tempfile.mkdtemp(prefix="robot_stack_bench_record_"))
    try:
        # ---- same-run baseline: raw np.save of the same frames (no encoding, no queues)
        base_dir = tmp / "raw"
        base_dir.mkdir()
        t0 = time.perf_counter()
        for k, fs in enumerate(frames):
            for f in fs:
                np.save(base_dir / f"{f.camera_id}_{k:05d}_rgb.npy", f.color)
                np.save(base_dir / f"{f.camera_id}_{k:05d}_depth.npy", f.depth)
        baseline_s = time.perf_counter() - t0
        shutil.rmtree(base_dir)

        spec = DatasetSpec(fps=fps, cameras=tuple(CameraStream(c, width, height) for c in cams))
        writer = DatasetWriter(tmp / "ds", spec, cals)
        recorder = Recorder(writer, queue_frames=64)
        clock = MonotonicClock()
        recorder.start_episode("bench: sustained recording")
        q = np.zeros(7)
        pose = Pose.identity("base", "tcp")
        offered = {"frames": 0, "joints": 0}
        stop = threading.Event()

        def joints() -> None:
            t_next = clock.now_ns()
            while not stop.is_set():
                t_next += round(1e9 / rate)
                clock.sleep_until(t_next)
                recorder.add_joint_sample(JointSample(t_next, q + rng.normal(0, 1e-3, 7), q, q, 1.0, 1.0))
                offered["joints"] += 1

        jt = threading.Thread(target=joints, daemon=True)
        t_start = time.perf_counter()
        jt.start()
        t_next = clock.now_ns()
        late = []
        for fs in frames:
            clock.sleep_until(t_next)
            now = clock.now_ns()
            late.append((now - t_next) / 1e6)
            st = RobotState(now, q, q, pose, 1.0)
            recorder.add_frame(FrameRow(now, tuple(now for _ in cams), st, q, 1.0, pose), fs)
            offered["frames"] += 1
            t_next += round(1e9 / fps)
        stop.set()
        jt.join()
        t_stream_end = time.perf_counter()
        stats = recorder.stats()
        committed = recorder.stop_episode(success=True)
        t_done = time.perf_counter()
        on_disk = sum(p.stat().st_size for p in (tmp / "ds").rglob("*") if p.is_file())
        enc = recorder.encode_times()
        record_s = t_done - t_start
        out: dict[str, Any] = {
            "cameras": len(cams),
            "resolution": f"{width}x{height}",
            "fps": fps,
            "joint_rate_hz": rate,
            "duration_s": duration_s,
            "frames_offered": offered["frames"],
            "frames_dropped": stats.dropped_frames,
            "frames_committed": committed.length,
            "joint_samples_offered": offered["joints"],
            "joint_samples_dropped": stats.dropped_joint_samples,
            "max_queue_depth_at_end": max(stats.queue_depth.values()) if stats.queue_depth else 0,
            "drain_after_last_frame_s": round(t_done - t_stream_end - committed.commit_s, 3),
            "commit_s": round(committed.commit_s, 3),
            "record_wall_s": round(record_s, 3),
            "input_MB": round(raw_bytes / 1e6, 1),
            "input_MBps_sustained": round(raw_bytes / 1e6 / record_s, 1),
            "on_disk_MB": round(on_disk / 1e6, 2),
            "write_MBps": round(on_disk / 1e6 / record_s, 2),
            "compression_ratio": round(raw_bytes / max(on_disk, 1), 1),
            "baseline_np_save_s": round(baseline_s, 3),
            "baseline_np_save_MBps": round(raw_bytes / 1e6 / baseline_s, 1),
            "baseline_np_save_ms_per_frame_set": round(baseline_s * 1e3 / n_frames, 3),
            "encode_ms_per_frame_set": round(sum(st["mean_ms"] for st in enc.values()), 3),
            "ratio_encode_vs_np_save": round(
                sum(st["mean_ms"] for st in enc.values()) / (baseline_s * 1e3 / n_frames), 2
            ),
            "producer_late_p99_ms": round(float(np.percentile(late, 99)), 3),
        }
        for stream, st in enc.items():
            out[f"encode_{stream}_p50_ms"] = st["p50_ms"]
            out[f"encode_{stream}_p99_ms"] = st["p99_ms"]
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
