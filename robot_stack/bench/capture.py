"""``robot-stack bench capture``: aligned RGB-D rate of :class:`RealSenseCamera` on a 640x480 30 Hz recording.

A recording is made in this run, paced at 30 Hz, with the real SDK (``rs.software_device`` + ``rs.recorder`` ->
``.db3``) of a
synthetic table-top (depth from :func:`robot_stack.bench.xyz.synthetic_depth`, textured colour). It is then played
back through the full capture path (``enable_device_from_file`` -> ``rs.align`` to colour -> checks -> numpy ->
timestamp mapping -> latest-frame slot -> ``read()``):

* ``realtime_*``: playback at the recorded 30 Hz; the rate ``read()`` delivers distinct frames and the frames
  lost on the way (target: the full 30 Hz, no drops; realsense-ros is reported to fall to 5-10 Hz aligned).
* ``max_*``: playback as fast as the camera thread processes (``real_time=False``): headroom over 30 Hz.
* ``sdk_only_max_*`` (same-run baseline): the bare SDK loop (``wait_for_frames`` + ``rs.align`` + numpy copy) on
  the same file, in one thread; ``overhead_ratio_vs_sdk`` = our per-frame time / the SDK loop's.
* ``filters_max_hz``: with decimation 2 + spatial + temporal + hole filling enabled.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.bench.registry import register
from robot_stack.bench.xyz import bench_camera, synthetic_depth
from robot_stack.cameras.realsense import FilterConfig, RealSenseCamera, RealSenseConfig
from robot_stack.cameras.software_device import write_recording
from robot_stack.errors import CameraError

FPS = 30
TARGET_HZ = 30.0


def _frames(n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    camera, pose = bench_camera()
    depth = synthetic_depth(camera, pose)
    u, v = np.meshgrid(np.arange(camera.width), np.arange(camera.height))
    out = []
    for i in range(n):
        color = np.stack([(u + 4 * i) % 256, (v * 2) % 256, ((u ^ v) + i) % 256], axis=-1).astype(np.uint8)
        out.append((color, np.roll(depth, i, axis=1)))
    return out


def _drain(camera: RealSenseCamera, n_expected: int, idle_s: float) -> tuple[list[int], float]:
    """Read until ``n_expected`` frames or no frame for ``idle_s``; return (sequence numbers, seconds spanned)."""
    seqs: list[int] = []
    t_first = t_last = time.perf_counter()
    while len(seqs) < n_expected:
        try:
            frame = camera.read(idle_s)
        except CameraError:
            break
        t_last = time.perf_counter()
        if not seqs:
            t_first = t_last
        seqs.append(frame.seq)
    return seqs, t_last - t_first


def _rate(seqs: list[int], span_s: float) -> float:
    return (len(seqs) - 1) / span_s if len(seqs) > 1 and span_s > 0 else 0.0


def _sdk_only(path: Path, n: int) -> float:
    import pyrealsense2 as rs

    pipeline = rs.pipeline()
    config = rs.config()
    config.enable_device_from_file(str(path), repeat_playback=False)
    profile = pipeline.start(config)
    profile.get_device().as_playback().set_real_time(False)
    align = rs.align(rs.stream.color)
    count = 0
    t0 = time.perf_counter()
    try:
        while count < n:
            ok, frames = pipeline.try_wait_for_frames(1000)
            if not ok:
                break
            aligned = align.process(frames)
            np.asanyarray(aligned.get_depth_frame().get_data()).copy()
            np.asanyarray(aligned.get_color_frame().get_data()).copy()
            count += 1
        elapsed = time.perf_counter() - t0
    finally:
        pipeline.stop()
    return count / elapsed if elapsed > 0 else 0.0


@register("capture")
def run(quick: bool) -> dict[str, Any]:
    """Record a 640x480 30 Hz RGB-D file with the real SDK, play it back through RealSenseCamera, report rates."""
    n = 75 if quick else 300
    camera_model, _ = bench_camera()
    with tempfile.TemporaryDirectory(prefix="robot_stack_capture_") as tmp:
        path = Path(tmp) / "bench.db3"
        write_recording(path, _frames(n), camera_model, fps=FPS, serial="BENCH", paced=True)

        base = RealSenseConfig(camera_id="bench", playback_path=str(path), width=640, height=480, fps=FPS)
        live = RealSenseCamera(replace(base, real_time=True))
        live.start()
        try:
            seqs, span = _drain(live, n, idle_s=0.5)
            rt_stats = live.stats()
        finally:
            live.stop()

        fast = RealSenseCamera(replace(base, real_time=False))
        fast.start()
        try:
            fast_seqs, fast_span = _drain(fast, n, idle_s=0.5)
        finally:
            fast.stop()
        filtered = RealSenseCamera(
            replace(
                base, real_time=False, filters=FilterConfig(decimation=2, spatial=True, temporal=True, hole_filling=1)
            )
        )
        filtered.start()
        try:
            filt_seqs, filt_span = _drain(filtered, n, idle_s=0.5)
        finally:
            filtered.stop()
        sdk_hz = _sdk_only(path, n)

    realtime_hz = _rate(seqs, span)
    missing = (max(seqs) - min(seqs) + 1 - len(set(seqs))) if seqs else n
    max_hz = _rate(fast_seqs, fast_span)
    return {
        "stream": f"640x480 rgb8 + z16 @ {FPS} Hz, depth aligned to colour (rs.align), recorded .db3",
        "frames_recorded": n,
        "realtime_frames_read": len(seqs),
        "realtime_rate_hz": round(realtime_hz, 2),
        "realtime_missing_frames": int(missing),
        "realtime_dropped_by_frame_number": rt_stats.dropped,
        "target_hz": TARGET_HZ,
        "meets_target": bool(realtime_hz >= 0.97 * TARGET_HZ and rt_stats.dropped == 0),
        "max_rate_hz": round(max_hz, 1),
        "max_frames_read": len(fast_seqs),
        "filters_max_hz": round(_rate(filt_seqs, filt_span), 1),
        "sdk_only_max_hz": round(sdk_hz, 1),
        "overhead_ratio_vs_sdk": round(sdk_hz / max_hz, 2) if max_hz > 0 else None,
        "headroom_vs_30hz": round(max_hz / TARGET_HZ, 1),
    }
