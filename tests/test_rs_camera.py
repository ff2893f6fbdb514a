"""RealSenseCamera through the real pyrealsense2 SDK: software device and .db3 recordings made by the tests."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_until

rs = pytest.importorskip("pyrealsense2")

from robot_stack.cameras.realsense import (  # noqa: E402
    DeviceClockMapper,
    FilterConfig,
    RealSenseCamera,
    RealSenseConfig,
    list_devices,
)
from robot_stack.cameras.software_device import SoftwareRealSense, write_recording  # noqa: E402
from robot_stack.errors import CameraError, ConfigError, ShapeError  # noqa: E402
from robot_stack.types import CameraModel  # noqa: E402

W, H = 64, 48  # small frames keep the tests fast; the 640x480 rate is the capture benchmark's job
MODEL = CameraModel(W, H, 60.0, 61.0, 31.5, 23.5)


def scene(i: int = 0) -> tuple[np.ndarray, np.ndarray]:
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    color = np.stack([(u * 4 + i) % 256, v * 5 % 256, np.full_like(u, i % 256)], axis=-1).astype(np.uint8)
    depth = (600 + 3 * u + 2 * v).astype(np.uint16)
    depth[:5, :5] = 0
    return color, depth


def assert_aligned_depth(aligned: np.ndarray, truth: np.ndarray) -> None:
    """rs.align (identity extrinsics) splats each depth pixel's footprint: values land on their pixel or, at
    rounding boundaries, one pixel over (<= 5 mm apart in this scene), and leave a few holes (SDK behaviour)."""
    both = (aligned > 0) & (truth > 0)
    diff = np.abs(aligned[both].astype(int) - truth[both])
    assert np.mean(diff == 0) > 0.97 and diff.max() <= 5
    assert both.sum() >= 0.93 * (truth > 0).sum()


@pytest.fixture()
def software() -> Iterator[tuple[SoftwareRealSense, RealSenseCamera]]:
    device = SoftwareRealSense(MODEL, fps=30, serial="SWTEST1")
    camera = RealSenseCamera(
        RealSenseConfig(camera_id="wrist", width=W, height=H, frame_timeout_ms=300, reconnect_interval_s=0.05),
        software_device=device,
    )
    camera.start()
    yield device, camera
    camera.stop()
    device.close()


def push_and_read(device: SoftwareRealSense, camera: RealSenseCamera, i: int = 0, tries: int = 20, **kw):  # noqa: ANN201
    """Push frames until one comes out (the SDK's matcher holds back the first one or two)."""
    color, depth = scene(i)
    for _ in range(tries):
        device.push(color, depth, **kw)
        kw.pop("frame_number", None)
        try:
            return camera.read(0.2)
        except CameraError:
            continue
    raise AssertionError("no frame came out of the software device")


def test_software_device_frames_and_device_properties(software) -> None:
    device, camera = software
    frame = push_and_read(device, camera, 7)
    color, depth = scene(7)
    assert frame.camera_id == "wrist"
    assert frame.color.shape == (H, W, 3) and frame.depth.shape == (H, W)
    np.testing.assert_array_equal(frame.color, color)
    # rs.align with identity extrinsics: every aligned value is the source value; its pixel-footprint splatting
    # leaves a few rounding holes (SDK behaviour)
    assert_aligned_depth(frame.depth, depth)
    assert frame.depth_scale == pytest.approx(0.001)
    assert camera.serial == "SWTEST1" and camera.depth_scale == pytest.approx(0.001)
    model = camera.model  # read from the device's stream profile
    assert (model.width, model.height) == (W, H)
    assert model.fx == pytest.approx(60.0) and model.fy == pytest.approx(61.0) and model.cx == pytest.approx(31.5)


def test_distortion_read_from_the_device_unaligned_stream() -> None:
    distorted = CameraModel(W, H, 60.0, 61.0, 31.5, 23.5, np.array([0.01, -0.02, 0.001, 0.0, 0.003]))
    device = SoftwareRealSense(distorted, serial="DIST")
    camera = RealSenseCamera(
        RealSenseConfig(width=W, height=H, align_to_color=False, frame_timeout_ms=500), software_device=device
    )
    camera.start()
    try:
        frame = push_and_read(device, camera, 2)
        np.testing.assert_allclose(camera.model.distortion, distorted.distortion, atol=1e-6)
        np.testing.assert_array_equal(frame.depth, scene(2)[1])  # registered streams, no resampling
    finally:
        camera.stop()
        device.close()


def test_frame_drops_counted_by_frame_number(software) -> None:
    device, camera = software
    first = push_and_read(device, camera)
    color, depth = scene()
    device.push(color, depth, frame_number=first.seq + 6)  # five frames lost on the way
    frame = camera.read(1.0)
    assert frame.seq == first.seq + 6
    assert camera.stats().dropped == 5


def test_timestamps_mapped_to_host_monotonic_clock(software) -> None:
    device, camera = software
    t_before = time.monotonic_ns()
    frames = [push_and_read(device, camera, i) for i in range(4)]
    t_after = time.monotonic_ns()
    times = [f.t_capture_ns for f in frames]
    assert all(t_before - 10**9 < t <= t_after for t in times)  # on this clock, never after the read returned
    assert times == sorted(times)
    assert camera.stats().time_domain == "hardware_clock"


def test_clock_mapper_min_offset_rejects_jitter_and_resets_on_jumps() -> None:
    mapper = DeviceClockMapper(window=10)
    rng = np.random.default_rng(0)
    true_offset = 5_000_000_000
    mapped = []
    for i in range(30):
        device_ms = 1000.0 + i * 33.3
        delay = int(rng.uniform(2e6, 9e6)) if i != 3 else 1_000_000  # USB latency 2..9 ms, once 1 ms
        mapped.append(mapper.map(device_ms, round(device_ms * 1e6) + true_offset + delay))
    # after the 1 ms sample the mapped time is device time + the smallest delay seen, not the jittery arrival
    assert mapped[5] - round((1000.0 + 5 * 33.3) * 1e6) == true_offset + 1_000_000
    assert mapper.offset_ms == pytest.approx((true_offset + min(2e6, 9e6)) / 1e6, abs=8)  # window slid past it
    # device clock jumps back (device reset / playback loop): the window starts over instead of mixing clocks
    t = mapper.map(10.0, 42_000_000_000)
    assert t == 42_000_000_000


def test_unplug_raises_camera_error_and_capture_recovers(software, caplog) -> None:
    device, camera = software
    push_and_read(device, camera)
    caplog.set_level(logging.WARNING, logger="robot_stack.cameras.realsense")
    device.unplug()
    with pytest.raises(CameraError, match="reconnects by itself") as info:
        camera.read(1.5)
    assert "SWTEST1" in str(info.value) or "lost" in str(info.value)
    wait_until(lambda: not camera.stats().connected, timeout_s=5)
    assert not camera.stats().connected and camera.stats().disconnects == 1
    device.plug()
    wait_until(lambda: camera.stats().connected, timeout_s=5)
    frame = push_and_read(device, camera, 3)
    np.testing.assert_array_equal(frame.color, scene(3)[0])
    stats = camera.stats()
    assert stats.reconnects == 1 and stats.connected
    assert any("reconnected" in r.message for r in caplog.records)


def test_all_zero_depth_is_delivered_with_a_warning(software, caplog) -> None:
    device, camera = software
    push_and_read(device, camera)
    caplog.set_level(logging.WARNING, logger="robot_stack.cameras.realsense")
    color, _ = scene()
    device.push(color, np.zeros((H, W), np.uint16))
    frame = camera.read(1.0)
    assert not frame.depth.any()
    assert camera.stats().zero_depth_frames == 1
    assert any("no valid depth" in r.message for r in caplog.records)


def test_bad_input_is_refused_with_typed_errors(software) -> None:
    device, _ = software
    color, depth = scene()
    with pytest.raises(ShapeError, match="depth must be"):
        device.push(color, depth[:-1])
    with pytest.raises(ShapeError, match="color must be"):
        device.push(color.astype(np.float32), depth)
    with pytest.raises(ConfigError, match="decimation"):
        FilterConfig(decimation=0)
    with pytest.raises(ConfigError, match="hole_filling"):
        FilterConfig(hole_filling=5)
    with pytest.raises(ConfigError, match="depth_preset"):
        RealSenseConfig(depth_preset="sharpest")


def test_read_before_start_and_missing_recording(tmp_path: Path) -> None:
    camera = RealSenseCamera(RealSenseConfig(playback_path=str(tmp_path / "nope.db3"), frame_timeout_ms=100))
    with pytest.raises(CameraError, match="not started"):
        camera.read()
    with pytest.raises(CameraError, match="intrinsics are known once"):
        _ = camera.model
    with pytest.raises(CameraError, match="does not exist"):
        camera.start(wait_s=1.0)
    camera.stop()


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rs") / "tabletop.db3"
    n = write_recording(path, (scene(i) for i in range(20)), MODEL, fps=30, serial="REC42")
    assert n == 20 and path.stat().st_size > 10_000  # frames are stored compressed
    return path


def read_all(camera: RealSenseCamera, idle_s: float = 0.5) -> list:
    """Frames until the recording ends (no frame for ``idle_s``, or it starts over after a reconnect)."""
    out = []
    while len(out) < 200:
        try:
            frame = camera.read(idle_s)
        except CameraError:
            break
        if out and frame.seq <= out[-1].seq:
            break
        out.append(frame)
    return out


def test_db3_playback_through_the_same_path(recording: Path) -> None:
    camera = RealSenseCamera(
        RealSenseConfig(playback_path=str(recording), width=W, height=H, real_time=False, frame_timeout_ms=300)
    )
    camera.start()
    try:
        frames = read_all(camera)
    finally:
        camera.stop()
    seqs = [f.seq for f in frames]
    # how many frames a latest-wins reader sees depends on machine load (start-up overlaps playback; the rate is
    # measured by `robot-stack bench capture`); what must hold is order, content and reaching the end
    assert len(frames) >= 2 and seqs == sorted(set(seqs)) and seqs[-1] >= 18
    assert camera.serial == "REC42"
    f = frames[-1]
    np.testing.assert_array_equal(f.color, scene(f.seq - 1)[0])  # frame numbers start at 1
    assert_aligned_depth(f.depth, scene()[1])
    assert camera.model.fx == pytest.approx(60.0)


def test_playback_end_is_a_disconnect_and_replay_recovers(recording: Path) -> None:
    camera = RealSenseCamera(
        RealSenseConfig(
            playback_path=str(recording),
            width=W,
            height=H,
            real_time=False,
            frame_timeout_ms=200,
            reconnect_interval_s=0.05,
        )
    )
    camera.start()
    try:
        first = read_all(camera, idle_s=0.15)  # until the end of the file
        wait_until(lambda: camera.stats().reconnects > 0, timeout_s=5)
        again = camera.read(1.0)  # the "camera" came back: the file plays again
    finally:
        camera.stop()
    stats = camera.stats()
    assert first and stats.disconnects >= 1 and stats.reconnects >= 1
    assert again.seq <= first[-1].seq  # frame numbers restarted, not counted as drops
    assert stats.dropped == 0


def test_playback_without_reconnect_ends_cleanly(recording: Path) -> None:
    camera = RealSenseCamera(
        RealSenseConfig(
            playback_path=str(recording), width=W, height=H, real_time=False, frame_timeout_ms=200, reconnect=False
        )
    )
    camera.start()
    try:
        frames = read_all(camera, idle_s=0.3)
        with pytest.raises(CameraError, match="has ended"):
            camera.read(0.3)
    finally:
        camera.stop()
    # latest-wins: a reader slower than the thread skips frames, but the whole file was played and then it ended
    assert frames and frames[-1].seq >= 18 and camera.stats().reconnects == 0


def test_post_processing_filters_keep_aligned_colour_size(recording: Path) -> None:
    camera = RealSenseCamera(
        RealSenseConfig(
            playback_path=str(recording),
            width=W,
            height=H,
            real_time=False,
            frame_timeout_ms=300,
            filters=FilterConfig(decimation=2, spatial=True, temporal=True, hole_filling=1),
        )
    )
    camera.start()
    try:
        frames = read_all(camera)
    finally:
        camera.stop()
    assert frames
    depth = frames[-1].depth
    assert depth.shape == (H, W)
    valid = depth[depth > 0].astype(float)
    truth = scene()[1]
    assert valid.size > 0.8 * depth.size  # hole filling closes the zero corner, alignment restores the size
    assert abs(np.median(valid) - np.median(truth[truth > 0])) < 10


def test_two_cameras_by_serial() -> None:
    devices = [SoftwareRealSense(MODEL, serial=s) for s in ("CAM_A", "CAM_B")]
    cameras = [
        RealSenseCamera(RealSenseConfig(camera_id=name, width=W, height=H, frame_timeout_ms=500), software_device=d)
        for name, d in zip(("left", "right"), devices, strict=True)
    ]
    try:
        for c in cameras:
            c.start()
        frames = [push_and_read(d, c, i) for i, (d, c) in enumerate(zip(devices, cameras, strict=True))]
        assert [c.serial for c in cameras] == ["CAM_A", "CAM_B"]
        assert [f.camera_id for f in frames] == ["left", "right"]
        np.testing.assert_array_equal(frames[1].color, scene(1)[0])
    finally:
        for c in cameras:
            c.stop()
        for d in devices:
            d.close()


@pytest.mark.hardware
def test_live_realsense_streams_aligned_frames() -> None:
    devices = list_devices()
    if not devices:
        pytest.skip("no RealSense connected")
    camera = RealSenseCamera(RealSenseConfig(serial=devices[0]["serial"], depth_preset="high_accuracy"))
    with camera:
        frames = [camera.read(2.0) for _ in range(30)]
    assert frames[-1].depth.shape == frames[-1].color.shape[:2]
    assert camera.stats().dropped <= 1
