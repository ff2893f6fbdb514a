"""RealSense without hardware: an ``rs.software_device`` fed with numpy frames, and ``.db3`` recordings of it.

:class:`SoftwareRealSense` is a real librealsense device (the SDK's own ``software_device``) with a depth and a
colour sensor whose frames come from :meth:`SoftwareRealSense.push`. :class:`~robot_stack.cameras.realsense.
RealSenseCamera` reads it through exactly the same processing as a live camera (filters, ``rs.align``, timestamps,
drop counting). :meth:`SoftwareRealSense.unplug` / :meth:`~SoftwareRealSense.plug` simulate a cable pulled and put
back: while unplugged the device stops streaming and refuses to start.

:func:`write_recording` turns any sequence of RGB-D frames (e.g. rendered by :class:`robot_stack.sim.camera.
SimCamera`) into a rosbag2 ``.db3`` file through ``rs.recorder``, which plays back with
``RealSenseConfig(playback_path=...)`` like a recording made with a real camera.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import CameraError, ShapeError
from robot_stack.types import CameraModel

__all__ = ["SoftwareRealSense", "write_recording"]

log = logging.getLogger("robot_stack.cameras.recording")


def _rs_intrinsics(rs: Any, camera: CameraModel) -> Any:
    intr = rs.intrinsics()
    intr.width, intr.height = camera.width, camera.height
    intr.fx, intr.fy, intr.ppx, intr.ppy = camera.fx, camera.fy, camera.cx, camera.cy
    intr.model = rs.distortion.brown_conrady
    intr.coeffs = [float(c) for c in camera.distortion]
    return intr


class SoftwareRealSense:
    """An ``rs.software_device`` with registered depth (z16) and colour (rgb8) streams of the same intrinsics.

    Args:
        camera: intrinsics of both streams (depth is registered to colour, so no alignment shift).
        fps: nominal stream rate, Hz (timestamps of :meth:`push` default to ``frame_number * 1000 / fps`` ms).
        serial: reported serial number.
        depth_scale: metres per depth unit (``depth_units`` option).
        record_to: if given, a ``.db3`` path: everything streamed is recorded there through ``rs.recorder``
            (the file is complete after :meth:`close`).
    """

    def __init__(
        self,
        camera: CameraModel,
        fps: int = 30,
        serial: str = "SW0001",
        depth_scale: float = 0.001,
        record_to: str | Path | None = None,
    ) -> None:
        import pyrealsense2 as rs

        self._rs = rs
        self.camera = camera
        self.fps = fps
        self.serial = serial
        self.depth_scale = depth_scale
        w, h = camera.width, camera.height
        dev = rs.software_device()
        dev.register_info(rs.camera_info.name, "robot-stack software RealSense")
        dev.register_info(rs.camera_info.serial_number, serial)
        depth_sensor = dev.add_sensor("Depth")
        color_sensor = dev.add_sensor("Color")
        intr = _rs_intrinsics(rs, camera)
        vs = rs.video_stream()
        vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps, vs.bpp = rs.stream.depth, 0, 0, w, h, fps, 2
        vs.fmt, vs.intrinsics = rs.format.z16, intr
        self._depth_profile = depth_sensor.add_video_stream(vs)
        cs = rs.video_stream()
        cs.type, cs.index, cs.uid, cs.width, cs.height, cs.fps, cs.bpp = rs.stream.color, 0, 1, w, h, fps, 3
        cs.fmt, cs.intrinsics = rs.format.rgb8, intr
        self._color_profile = color_sensor.add_video_stream(cs)
        depth_sensor.add_read_only_option(rs.option.depth_units, depth_scale)
        ext = rs.extrinsics()
        ext.rotation, ext.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
        self._depth_profile.register_extrinsics_to(self._color_profile, ext)
        dev.create_matcher(rs.matchers.default)
        self._sw_sensors = (depth_sensor, color_sensor)
        self._device = dev
        self._recorder: Any = None
        if record_to is not None:
            path = Path(record_to)
            if path.suffix != ".db3":
                raise CameraError(f"recordings are rosbag2 files; the path must end in .db3, got {path}")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            self._recorder = rs.recorder(str(path), dev)
        self._lock = threading.Lock()
        self._running = False
        self._unplugged = False
        self._frame_number = 0
        self._keepalive: deque[np.ndarray] = deque(maxlen=16)  # pixel buffers the SDK may still reference

    # ------------------------------------------------------------------------------------------ device
    @property
    def device(self) -> Any:
        """The ``rs.device`` to query (the recorder wrapping the software device when recording)."""
        return self._recorder if self._recorder is not None else self._device

    @property
    def color_profile(self) -> Any:
        return self._color_profile.as_video_stream_profile()

    def _sensors(self) -> tuple[Any, Any]:
        if self._recorder is not None:
            depth, color = self._recorder.query_sensors()
            return depth, color
        return self._sw_sensors

    def start(self) -> Any:
        """Open and start both sensors into a new ``rs.syncer``; return it.

        Raises:
            CameraError: the device is unplugged (:meth:`unplug`).
        """
        with self._lock:
            if self._unplugged:
                raise CameraError(f"software RealSense {self.serial} is unplugged; call plug() first")
            self._stop_locked()
            syncer = self._rs.syncer(4)
            depth, color = self._sensors()
            depth.open(self._depth_profile)
            color.open(self._color_profile)
            depth.start(syncer)
            color.start(syncer)
            self._running = True
            return syncer

    def _stop_locked(self) -> None:
        if not self._running:
            return
        for sensor in self._sensors():
            try:
                sensor.stop()
                sensor.close()
            except RuntimeError as exc:
                log.debug("software sensor stop: %s", exc)
        self._running = False

    def stop(self) -> None:
        """Stop streaming (idempotent)."""
        with self._lock:
            self._stop_locked()

    def unplug(self) -> None:
        """Simulate pulling the cable: streaming stops and :meth:`start` fails until :meth:`plug`."""
        with self._lock:
            self._unplugged = True
            self._stop_locked()

    def plug(self) -> None:
        """Simulate plugging the camera back in."""
        with self._lock:
            self._unplugged = False

    def close(self) -> None:
        """Stop and finish the recording (if any)."""
        self.stop()
        self._recorder = None

    # ------------------------------------------------------------------------------------------ frames
    def push(
        self,
        color: np.ndarray,
        depth: np.ndarray,
        t_ms: float | None = None,
        frame_number: int | None = None,
        domain: str = "hardware_clock",
    ) -> int:
        """Inject one frame pair.

        Args:
            color: (H, W, 3) uint8 RGB; depth: (H, W) uint16 device units; both of the configured size.
            t_ms: device timestamp in milliseconds (default ``frame_number * 1000 / fps``).
            frame_number: stream frame counter (default: previous + 1); a gap simulates dropped frames.
            domain: ``hardware_clock``, ``global_time`` or ``system_time``.

        Returns:
            The frame number used.

        Raises:
            ShapeError: wrong shapes/dtypes. CameraError: the device is not streaming.
        """
        h, w = self.camera.height, self.camera.width
        color = np.ascontiguousarray(color)
        depth = np.ascontiguousarray(depth)
        if color.shape != (h, w, 3) or color.dtype != np.uint8:
            raise ShapeError(
                f"SoftwareRealSense.push: color must be ({h}, {w}, 3) uint8, got {color.shape} {color.dtype}"
            )
        if depth.shape != (h, w) or depth.dtype != np.uint16:
            raise ShapeError(
                f"SoftwareRealSense.push: depth must be ({h}, {w}) uint16, got {depth.shape} {depth.dtype}"
            )
        rs = self._rs
        with self._lock:
            if not self._running:
                raise CameraError(f"software RealSense {self.serial} is not streaming (unplugged or not started)")
            number = frame_number if frame_number is not None else self._frame_number + 1
            self._frame_number = number
            ts = t_ms if t_ms is not None else number * 1000.0 / self.fps
            dom = getattr(rs.timestamp_domain, domain)
            self._keepalive.extend((depth, color))
            depth_sensor, color_sensor = self._sw_sensors
            for sensor, pixels, bpp, profile in (
                (depth_sensor, depth, 2, self._depth_profile),
                (color_sensor, color, 3, self._color_profile),
            ):
                f = rs.software_video_frame()
                f.pixels, f.bpp, f.stride = pixels, bpp, w * bpp
                f.timestamp, f.domain, f.frame_number = ts, dom, number
                f.profile = profile.as_video_stream_profile()
                if bpp == 2:
                    f.depth_units = self.depth_scale
                sensor.on_video_frame(f)
        return number


def write_recording(
    path: str | Path,
    frames: Iterable[tuple[np.ndarray, np.ndarray]],
    camera: CameraModel,
    fps: int = 30,
    serial: str = "SW0001",
    depth_scale: float = 0.001,
    paced: bool = False,
) -> int:
    """Record ``(color, depth)`` pairs into a rosbag2 ``.db3`` file with the SDK's recorder; return the frame count.

    Args:
        path: output file, must end in ``.db3`` (overwritten).
        frames: (H, W, 3) uint8 RGB and (H, W) uint16 depth pairs of ``camera``'s size.
        camera: intrinsics recorded for both streams.
        fps: nominal rate; frame ``i`` is stamped ``i * 1000 / fps`` ms (hardware clock).
        paced: push frames at ``fps`` in real time. The recorder stores host arrival times, which real-time
            playback follows, so a file meant to play back at the stream rate must be written paced.
    """
    from robot_stack.clock import MonotonicClock

    clock = MonotonicClock()
    t0_ns = clock.now_ns()
    device = SoftwareRealSense(camera, fps, serial, depth_scale, record_to=path)
    syncer = device.start()
    n = 0
    try:
        for color, depth in frames:
            if paced:
                clock.sleep_until(t0_ns + round(n * 1e9 / fps))
            device.push(color, depth)
            n += 1
            syncer.poll_for_frames()  # keep the syncer's queue short; the recorder writes at the sensors
    finally:
        device.close()
        del device
    if n == 0:
        raise CameraError("write_recording: no frames were given")
    return n
