"""``RealSenseCamera``: Intel RealSense D4xx RGB-D capture through ``pyrealsense2``, behind :class:`Camera`.

One code path for three sources, chosen by :class:`RealSenseConfig` (or by passing a software device):

* a live device, selected by serial number (``serial``; several cameras = several instances);
* a recording (``playback_path``, rosbag2 ``.db3`` or ROS1 ``.bag``) played with ``enable_device_from_file``;
* an ``rs.software_device`` (:class:`robot_stack.cameras.software_device.SoftwareRealSense`) that tests and tools feed
  with synthetic frames.

Every frameset goes through the same processing: the selected post-processing filters on depth (decimation ->
depth-to-disparity -> spatial -> temporal -> disparity-to-depth -> hole filling, Intel's recommended order),
alignment of depth to the colour stream (``rs.align``), checks on size and contents, copy into numpy, timestamp
mapping and frame-drop counting.

Capture runs in a background thread that always holds the newest frame; :meth:`RealSenseCamera.read` returns it
(waiting for a fresh one if the last was already returned). When the camera stops delivering (unplugged, the
recording ended, the software device stopped), ``read`` raises :class:`~robot_stack.errors.CameraError` that says
what to do, while the thread keeps trying to reopen the source every ``reconnect_interval_s``; reads succeed again
as soon as the camera is back. Nothing in the thread ever crashes the process: every failure is counted in
:class:`CaptureStats` and logged.

Time: the device stamps each frame on its own clock (``hardware_clock``), on the host-synchronised ``global_time``
or on ``system_time``. :class:`DeviceClockMapper` maps those milliseconds onto this process' monotonic clock with
the minimum-offset filter: ``offset = min(arrival_ns - device_ns)`` over a sliding window, so ``t_capture_ns`` is
the device time plus the smallest transport delay seen recently (robust to USB jitter, tracks slow drift).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError, ConfigError
from robot_stack.types import CameraModel, Frame

if TYPE_CHECKING:
    import pyrealsense2 as rs

    from robot_stack.cameras.software_device import SoftwareRealSense

__all__ = [
    "DEPTH_PRESETS",
    "CaptureStats",
    "DeviceClockMapper",
    "FilterConfig",
    "RealSenseCamera",
    "RealSenseConfig",
    "camera_model_from_rs",
    "list_devices",
]

log = logging.getLogger("robot_stack.cameras.realsense")

#: Framesets buffered between the SDK's callback and the capture thread (~130 ms at 30 Hz).
QUEUE_CAPACITY = 4

#: Names accepted by :attr:`RealSenseConfig.depth_preset` (D4xx ``visual_preset`` values).
DEPTH_PRESETS = ("custom", "default", "hand", "high_accuracy", "high_density", "medium_density")


def _rs() -> Any:
    try:
        import pyrealsense2 as rs_module
    except ImportError as exc:  # pragma: no cover - the package is a dependency
        raise CameraError(
            f"pyrealsense2 is not importable ({exc}); install it with `pip install pyrealsense2`"
        ) from exc
    return rs_module


# ------------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class FilterConfig:
    """Post-processing filters of the RealSense SDK applied to depth before alignment.

    Attributes:
        decimation: 1 = off; 2..8 = reduce depth resolution by this factor (alignment restores colour size).
        spatial: edge-preserving spatial smoothing (runs in the disparity domain).
        temporal: temporal smoothing over consecutive frames (disparity domain).
        hole_filling: None = off; 0 fill from left, 1 farthest-from-around, 2 nearest-from-around.
    """

    decimation: int = 1
    spatial: bool = False
    temporal: bool = False
    hole_filling: int | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.decimation, int) and 1 <= self.decimation <= 8):
            raise ConfigError(f"FilterConfig.decimation: expected an integer 1..8 (1 = off), got {self.decimation!r}")
        if self.hole_filling is not None and self.hole_filling not in (0, 1, 2):
            raise ConfigError(
                f"FilterConfig.hole_filling: expected None (off) or 0/1/2 (left, farthest, nearest), "
                f"got {self.hole_filling!r}"
            )

    @property
    def any(self) -> bool:
        return self.decimation > 1 or self.spatial or self.temporal or self.hole_filling is not None


@dataclass(frozen=True)
class RealSenseConfig:
    """How to open one RealSense stream pair.

    Attributes:
        camera_id: logical camera name put into every :class:`Frame` (selects the calibration).
        serial: device serial number (live); None = the only connected device. Ignored for playback.
        playback_path: a ``.db3``/``.bag`` recording to play instead of a live device.
        width, height, fps: colour and depth stream size (pixels) and rate (Hz).
        depth_preset: a D4xx visual preset from :data:`DEPTH_PRESETS`, or None to keep the device's.
        filters: depth post-processing.
        align_to_color: align depth to the colour stream (required for :class:`Frame`; False only when the
            streams are already registered, e.g. a software device with identical intrinsics).
        real_time: playback at the recorded rate (True) or as fast as processed (False).
        repeat_playback: loop the recording instead of ending (ending = the camera "unplugged").
        frame_timeout_ms: no frame for this long = camera lost.
        reconnect_interval_s: pause between attempts to reopen a lost camera.
        reconnect: reopen a lost camera (True); False ends capture at the first loss (e.g. the end of a
            recording played once), after which ``read`` raises :class:`CameraError`.
        global_time: ask the device for host-synchronised ``global_time`` timestamps where supported.
        clock_window: frames in the min-offset window of :class:`DeviceClockMapper`.
    """

    camera_id: str = "realsense"
    serial: str | None = None
    playback_path: str | None = None
    width: int = 640
    height: int = 480
    fps: int = 30
    depth_preset: str | None = None
    filters: FilterConfig = field(default_factory=FilterConfig)
    align_to_color: bool = True
    real_time: bool = True
    repeat_playback: bool = False
    frame_timeout_ms: int = 1000
    reconnect_interval_s: float = 0.5
    reconnect: bool = True
    global_time: bool = True
    clock_window: int = 90

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or self.fps <= 0:
            raise ConfigError(f"RealSenseConfig: width/height/fps must be positive, got {self.width}x{self.height}")
        if self.depth_preset is not None and self.depth_preset not in DEPTH_PRESETS:
            raise ConfigError(f"RealSenseConfig.depth_preset: {self.depth_preset!r} is not one of {DEPTH_PRESETS}")
        if self.frame_timeout_ms <= 0 or not self.reconnect_interval_s > 0:
            raise ConfigError("RealSenseConfig: frame_timeout_ms and reconnect_interval_s must be positive")
        if self.clock_window < 1:
            raise ConfigError(f"RealSenseConfig.clock_window: must be >= 1, got {self.clock_window}")

    @property
    def source_name(self) -> str:
        if self.playback_path is not None:
            return f"recording {self.playback_path}"
        return f"RealSense serial {self.serial}" if self.serial else "the connected RealSense"


@dataclass(frozen=True)
class CaptureStats:
    """Counters of one camera since :meth:`RealSenseCamera.start`.

    Attributes:
        frames: framesets delivered (processed successfully).
        dropped: frames missing from the colour stream's frame-number sequence.
        incomplete: framesets lacking depth or colour (skipped).
        bad_frames: framesets refused by the checks (corrupt/short buffers), skipped.
        zero_depth_frames: delivered frames whose depth was all zero (warned).
        disconnects: times the camera was lost; reconnects: times it came back.
        connected: whether frames are flowing now.
        last_error: the most recent problem, or "".
        time_domain: timestamp domain of the last frame (``hardware_clock``, ``global_time``, ``system_time``).
        clock_offset_ms: current device->host offset of :class:`DeviceClockMapper`, milliseconds.
    """

    frames: int
    dropped: int
    incomplete: int
    bad_frames: int
    zero_depth_frames: int
    disconnects: int
    reconnects: int
    connected: bool
    last_error: str
    time_domain: str
    clock_offset_ms: float


class DeviceClockMapper:
    """Maps device timestamps (ms) onto the host monotonic clock (ns) with a sliding minimum-offset filter.

    ``map(device_ms, arrival_ns)`` records ``arrival_ns - device_ns`` and returns ``device_ns + min(offsets in the
    window)``. The minimum is the sample with the least transport delay, so the mapped time is never later than
    the arrival and jitter does not leak into timestamps. A jump of the device clock (device reset, playback loop,
    another time domain) larger than ``reset_ms`` empties the window.
    """

    def __init__(self, window: int = 90, reset_ms: float = 1000.0) -> None:
        self._offsets: deque[int] = deque(maxlen=window)
        self._reset_ns = int(reset_ms * 1e6)
        self._last_device_ns: int | None = None
        self._last_arrival_ns: int | None = None

    def map(self, device_ms: float, arrival_ns: int) -> int:
        """Return the capture time on the host monotonic clock (ns) of a frame stamped ``device_ms``."""
        device_ns = round(device_ms * 1e6)
        if self._last_device_ns is not None and self._last_arrival_ns is not None:
            expected = device_ns - self._last_device_ns
            actual = arrival_ns - self._last_arrival_ns
            if expected < 0 or abs(expected - actual) > self._reset_ns:
                self._offsets.clear()
        self._last_device_ns, self._last_arrival_ns = device_ns, arrival_ns
        self._offsets.append(arrival_ns - device_ns)
        return device_ns + min(self._offsets)

    @property
    def offset_ms(self) -> float:
        return min(self._offsets) / 1e6 if self._offsets else float("nan")

    def reset(self) -> None:
        self._offsets.clear()
        self._last_device_ns = self._last_arrival_ns = None


def camera_model_from_rs(intrinsics: rs.intrinsics) -> CameraModel:
    """:class:`CameraModel` from ``rs.intrinsics`` (pixels; Brown-Conrady ``coeffs`` = OpenCV k1, k2, p1, p2, k3).

    Non-zero coefficients of a model other than Brown-Conrady (e.g. the D4xx colour stream's
    ``inverse_brown_conrady``) are kept but logged, because they mean the opposite mapping direction.
    """
    rs_module = _rs()
    coeffs = np.asarray(list(intrinsics.coeffs)[:5], dtype=np.float64)
    if np.any(coeffs != 0) and intrinsics.model not in (rs_module.distortion.brown_conrady,):
        log.warning(
            "RealSense intrinsics use distortion model %s with coefficients %s; robot-stack applies them as OpenCV "
            "Brown-Conrady. Calibrate intrinsics with `robot-stack calibrate intrinsics` if accuracy matters.",
            intrinsics.model,
            coeffs.tolist(),
        )
    return CameraModel(
        int(intrinsics.width),
        int(intrinsics.height),
        float(intrinsics.fx),
        float(intrinsics.fy),
        float(intrinsics.ppx),
        float(intrinsics.ppy),
        coeffs,
    )


def list_devices() -> list[dict[str, str]]:
    """Connected RealSense devices: ``[{"serial": ..., "name": ..., "firmware": ...}]`` (empty without hardware)."""
    rs_module = _rs()
    out = []
    for dev in rs_module.context().query_devices():

        def info(key: Any, dev: Any = dev) -> str:
            return str(dev.get_info(key)) if dev.supports(key) else ""

        out.append(
            {
                "serial": info(rs_module.camera_info.serial_number),
                "name": info(rs_module.camera_info.name),
                "firmware": info(rs_module.camera_info.firmware_version),
            }
        )
    return out


# ------------------------------------------------------------------------------------------------ sources


class _Source(Protocol):
    """Where framesets come from (live pipeline, recording, software device)."""

    def open(self) -> tuple[Any, Any, float, str]:
        """Open; return (device, colour video_stream_profile, depth scale m/unit, serial)."""

    def wait(self, timeout_ms: int) -> Any | None:
        """The next ``rs.composite_frame``, or None when none came within ``timeout_ms``."""

    def close(self) -> None: ...


class _PipelineSource:
    """A live device by serial, or a recording, through ``rs.pipeline``."""

    def __init__(self, config: RealSenseConfig) -> None:
        self.config = config
        self._pipeline: Any = None
        self._queue: Any = None

    def open(self) -> tuple[Any, Any, float, str]:
        rs_module = _rs()
        cfg = self.config
        rs_config = rs_module.config()
        if cfg.playback_path is not None:
            path = Path(cfg.playback_path)
            if not path.is_file():
                raise CameraError(
                    f"recording {path} does not exist; record one with `robot_stack.cameras.software_device` "
                    "or fix the path"
                )
            rs_config.enable_device_from_file(str(path), repeat_playback=cfg.repeat_playback)
        else:
            serials = [d["serial"] for d in list_devices()]
            if not serials:
                raise CameraError(
                    "no RealSense device is connected; plug the camera into a USB3 port (check `rs-enumerate-devices`)"
                )
            if cfg.serial is not None and cfg.serial not in serials:
                raise CameraError(f"RealSense serial {cfg.serial} is not connected; connected serials: {serials}")
            if cfg.serial is not None:
                rs_config.enable_device(cfg.serial)
            rs_config.enable_stream(rs_module.stream.depth, cfg.width, cfg.height, rs_module.format.z16, cfg.fps)
            rs_config.enable_stream(rs_module.stream.color, cfg.width, cfg.height, rs_module.format.rgb8, cfg.fps)
        pipeline = rs_module.pipeline()
        # Live streams and real-time playback push frames whether or not we are ready: a callback into a small
        # queue that keeps the frames absorbs scheduling hiccups (pipeline.wait_for_frames keeps only the latest
        # and drops under load). Non-real-time playback waits for the consumer, so it is pulled instead.
        pulled = cfg.playback_path is not None and not cfg.real_time
        self._queue = None if pulled else rs_module.frame_queue(QUEUE_CAPACITY, keep_frames=True)
        try:
            profile = pipeline.start(rs_config) if pulled else pipeline.start(rs_config, self._queue)
        except RuntimeError as exc:
            raise CameraError(f"could not start {cfg.source_name}: {exc}") from exc
        self._pipeline = pipeline
        device = profile.get_device()
        if cfg.playback_path is not None:
            device.as_playback().set_real_time(cfg.real_time)
        color = profile.get_stream(rs_module.stream.color).as_video_stream_profile()
        depth_scale = float(device.first_depth_sensor().get_depth_scale())
        serial = str(device.get_info(rs_module.camera_info.serial_number))
        return device, color, depth_scale, serial

    def wait(self, timeout_ms: int) -> Any | None:
        if self._queue is not None:
            ok, frame = self._queue.try_wait_for_frame(timeout_ms)
            return frame.as_frameset() if ok else None
        ok, frames = self._pipeline.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError as exc:
                log.debug("pipeline.stop: %s", exc)
            self._pipeline = None


class _SoftwareSource:
    """An ``rs.software_device`` (see :class:`robot_stack.cameras.software_device.SoftwareRealSense`)."""

    def __init__(self, device: SoftwareRealSense) -> None:
        self.device = device
        self._syncer: Any = None

    def open(self) -> tuple[Any, Any, float, str]:
        self._syncer = self.device.start()  # raises CameraError while "unplugged"
        return self.device.device, self.device.color_profile, self.device.depth_scale, self.device.serial

    def wait(self, timeout_ms: int) -> Any | None:
        ok, frames = self._syncer.try_wait_for_frames(timeout_ms)
        return frames if ok else None

    def close(self) -> None:
        self.device.stop()
        self._syncer = None


# ------------------------------------------------------------------------------------------------- camera


class RealSenseCamera(Camera):
    """Aligned RGB-D frames from a RealSense (live, recording or software device); see the module docstring.

    Args:
        config: streams, filters, source and recovery settings.
        software_device: feed from this software device instead of ``config.serial`` / ``config.playback_path``.
        clock: host monotonic clock in ns (``time.monotonic_ns``); replace only in tests.
    """

    def __init__(
        self,
        config: RealSenseConfig | None = None,
        software_device: SoftwareRealSense | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self.config = config if config is not None else RealSenseConfig()
        self.camera_id = self.config.camera_id
        self._source: _Source = _SoftwareSource(software_device) if software_device else _PipelineSource(self.config)
        self._clock = clock
        self._source_label = (
            f"software RealSense {software_device.serial}" if software_device else self.config.source_name
        )
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._latest: Frame | None = None
        self._latest_returned = True
        self._model: CameraModel | None = None
        self.serial: str | None = None
        self.depth_scale: float | None = None
        self._mapper = DeviceClockMapper(self.config.clock_window)
        self._counts = dict.fromkeys(
            ("frames", "dropped", "incomplete", "bad_frames", "zero_depth_frames", "disconnects", "reconnects"), 0
        )
        self._connected = False
        self._ever_connected = False
        self._last_error = ""
        self._time_domain = ""
        self._last_frame_number: int | None = None
        self._opened = threading.Event()
        self._build_filters()

    # --------------------------------------------------------------------------------------- lifecycle
    def start(self, wait_s: float | None = None) -> None:
        """Start the capture thread and wait until the camera delivers (or fails to open).

        Args:
            wait_s: how long to wait for the first open attempt (default ``2 * frame_timeout_ms``).

        Raises:
            CameraError: the first attempt to open failed (the thread keeps retrying; call :meth:`stop` to give up).
        """
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._opened.clear()
        self._thread = threading.Thread(target=self._run, name=f"realsense-{self.camera_id}", daemon=True)
        self._thread.start()
        wait = wait_s if wait_s is not None else 2 * self.config.frame_timeout_ms / 1000
        self._opened.wait(wait)
        with self._cond:
            if not self._ever_connected:
                raise CameraError(
                    f"camera {self.camera_id!r} ({self._source_label}) did not open within {wait:.1f} s: "
                    f"{self._last_error or 'no answer'}. Capture keeps retrying in the background; fix the cause "
                    "or call stop()."
                )

    def stop(self) -> None:
        """Stop the capture thread and release the device. Idempotent."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=5 * self.config.frame_timeout_ms / 1000 + 2)
            if thread.is_alive():
                log.warning("camera %s: capture thread did not stop in time", self.camera_id)

    # --------------------------------------------------------------------------------------- interface
    @property
    def model(self) -> CameraModel:
        """Intrinsics of the colour stream (read from the device when it opened)."""
        if self._model is None:
            raise CameraError(f"camera {self.camera_id!r}: intrinsics are known once it is started; call start()")
        return self._model

    def read(self, timeout_s: float | None = None) -> Frame:
        """The newest aligned frame; waits up to ``timeout_s`` (default ``frame_timeout_ms``) for a fresh one.

        Raises:
            CameraError: not started, or no fresh frame in time (the message says whether the camera is lost and
                what to do; the capture thread keeps reconnecting).
        """
        timeout = timeout_s if timeout_s is not None else self.config.frame_timeout_ms / 1000
        with self._cond:
            if self._thread is None:
                raise CameraError(f"camera {self.camera_id!r} is not started; call start() or use it as a context")
            if self._latest_returned:
                self._cond.wait_for(lambda: not self._latest_returned, timeout)
            if self._latest is None or self._latest_returned:
                state = "lost" if not self._connected else "connected but silent"
                if not self.config.reconnect and not self._connected:
                    raise CameraError(
                        f"camera {self.camera_id!r} ({self._source_label}) has ended: {self._last_error}. "
                        "Capture does not reconnect (reconnect=False); start() it again for more frames."
                    )
                raise CameraError(
                    f"camera {self.camera_id!r} ({self._source_label}) delivered no frame within "
                    f"{timeout * 1e3:.0f} ms; it is {state} ({self._last_error or 'no error reported'}). Check the "
                    "USB3 cable/port and power (or the recording); capture reconnects by itself when it returns."
                )
            self._latest_returned = True
            return self._latest

    def stats(self) -> CaptureStats:
        """Counters since start (see :class:`CaptureStats`)."""
        with self._cond:
            return CaptureStats(
                **self._counts,
                connected=self._connected,
                last_error=self._last_error,
                time_domain=self._time_domain,
                clock_offset_ms=self._mapper.offset_ms,
            )

    # --------------------------------------------------------------------------------------- internals
    def _build_filters(self) -> None:
        rs_module = _rs()
        f = self.config.filters
        chain: list[Any] = []
        if f.decimation > 1:
            dec = rs_module.decimation_filter()
            dec.set_option(rs_module.option.filter_magnitude, float(f.decimation))
            chain.append(dec)
        if f.spatial or f.temporal:
            chain.append(rs_module.disparity_transform(True))
            if f.spatial:
                chain.append(rs_module.spatial_filter())
            if f.temporal:
                chain.append(rs_module.temporal_filter())
            chain.append(rs_module.disparity_transform(False))
        if f.hole_filling is not None:
            chain.append(rs_module.hole_filling_filter(f.hole_filling))
        self._filters = chain
        self._align = rs_module.align(rs_module.stream.color) if self.config.align_to_color else None

    def _count(self, key: str, error: str | None = None) -> None:
        with self._cond:
            self._counts[key] += 1
            if error is not None:
                self._last_error = error

    def _configure_device(self, device: Any) -> None:
        rs_module = _rs()
        cfg = self.config
        for sensor in device.query_sensors():
            if cfg.global_time and sensor.supports(rs_module.option.global_time_enabled):
                try:
                    sensor.set_option(rs_module.option.global_time_enabled, 1.0)
                except RuntimeError as exc:  # read-only on recordings
                    log.debug("global_time_enabled not settable: %s", exc)
        if cfg.depth_preset is None:
            return
        depth = device.first_depth_sensor()
        preset = getattr(rs_module.rs400_visual_preset, cfg.depth_preset)
        if depth.supports(rs_module.option.visual_preset) and not depth.is_option_read_only(
            rs_module.option.visual_preset
        ):
            depth.set_option(rs_module.option.visual_preset, float(int(preset)))
        elif cfg.playback_path is None and isinstance(self._source, _PipelineSource):
            raise CameraError(
                f"camera {self.camera_id!r}: depth preset {cfg.depth_preset!r} is not supported by this device; "
                "set depth_preset to None"
            )
        else:
            log.info(
                "camera %s: depth preset %s not applicable to a recording/software device",
                self.camera_id,
                cfg.depth_preset,
            )

    def _open(self) -> bool:
        try:
            device, color_profile, depth_scale, serial = self._source.open()
            self._configure_device(device)
        except (CameraError, RuntimeError) as exc:
            self._source.close()
            with self._cond:
                self._last_error = f"open failed: {exc}"
            log.debug("camera %s: %s", self.camera_id, exc)
            return False
        model = camera_model_from_rs(color_profile.get_intrinsics())
        with self._cond:
            if self._ever_connected:
                self._counts["reconnects"] += 1
                log.warning("camera %s: reconnected (%s)", self.camera_id, self._source_label)
            self._model, self.depth_scale, self.serial = model, depth_scale, serial
            self._connected = True
            self._ever_connected = True
            self._last_frame_number = None
        self._mapper.reset()
        self._opened.set()
        return True

    def _lost(self, reason: str) -> None:
        with self._cond:
            if self._connected:
                self._counts["disconnects"] += 1
                log.error(
                    "camera %s lost: %s; reconnecting every %.1f s",
                    self.camera_id,
                    reason,
                    self.config.reconnect_interval_s,
                )
            self._connected = False
            self._last_error = reason
        self._source.close()

    def _run(self) -> None:
        cfg = self.config
        is_open = False
        while not self._stop.is_set():
            if not is_open:
                is_open = self._open()
                if not is_open:
                    self._opened.set()
                    self._stop.wait(cfg.reconnect_interval_s)
                    continue
            try:
                frames = self._source.wait(cfg.frame_timeout_ms)
            except RuntimeError as exc:  # device error mid-stream
                frames = None
                reason = f"stream error: {exc}"
            else:
                reason = f"no frame for {cfg.frame_timeout_ms} ms (unplugged, recording ended or device stopped)"
            if frames is None:
                if self._stop.is_set():
                    break
                self._lost(reason)
                is_open = False
                if not self.config.reconnect:
                    log.info("camera %s: capture ended (%s); reconnect is off", self.camera_id, reason)
                    break
                continue
            arrival_ns = self._clock()
            try:
                frame = self.process(frames, arrival_ns)
            except CameraError as exc:
                self._count("bad_frames", str(exc))
                log.warning("camera %s: frame skipped: %s", self.camera_id, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - the capture thread must survive anything the SDK throws
                self._count("bad_frames", f"{type(exc).__name__}: {exc}")
                log.exception("camera %s: unexpected error processing a frame", self.camera_id)
                continue
            if frame is None:
                continue
            with self._cond:
                self._latest = frame
                self._latest_returned = False
                self._counts["frames"] += 1
                self._cond.notify_all()
        self._source.close()
        with self._cond:
            self._connected = False

    def process(self, frames: Any, arrival_ns: int) -> Frame | None:
        """Filter, align, check and convert one ``rs.composite_frame``; None for an incomplete frameset.

        Raises:
            CameraError: the frameset is corrupt (wrong buffer size, unexpected format).
        """
        rs_module = _rs()
        fs = frames.as_frameset() if hasattr(frames, "as_frameset") else frames
        if not fs.get_depth_frame() or not fs.get_color_frame():
            self._count("incomplete")
            return None
        for block in self._filters:
            fs = block.process(fs).as_frameset()
        if self._align is not None:
            fs = self._align.process(fs)
        depth_frame, color_frame = fs.get_depth_frame(), fs.get_color_frame()
        if not depth_frame or not color_frame:
            self._count("incomplete")
            return None
        color = _frame_array(color_frame, 3, "colour")
        fmt = color_frame.get_profile().format()
        if fmt == rs_module.format.bgr8:
            color = color[..., ::-1]
        elif fmt != rs_module.format.rgb8:
            raise CameraError(f"colour stream format {fmt} is not supported; configure rgb8 or bgr8")
        depth = _frame_array(depth_frame, 2, "depth").view(np.uint16).reshape(depth_frame.get_height(), -1)
        if depth.shape != color.shape[:2]:
            raise CameraError(
                f"depth {depth.shape} is not aligned to colour {color.shape[:2]}; enable align_to_color in the config"
            )
        depth_scale = float(depth_frame.get_units()) or (self.depth_scale or 0.001)
        number = int(color_frame.get_frame_number())
        domain = color_frame.get_frame_timestamp_domain()
        t_capture_ns = self._mapper.map(color_frame.get_timestamp(), arrival_ns)
        with self._cond:
            last = self._last_frame_number
            if last is not None and number > last + 1:
                self._counts["dropped"] += number - last - 1
            self._last_frame_number = number
            self._time_domain = str(domain).rsplit(".", 1)[-1]
        if not depth.any():
            self._count("zero_depth_frames", "all-zero depth frame")
            log.warning(
                "camera %s: frame %d has no valid depth (all zeros): lens covered, too close, or laser off?",
                self.camera_id,
                number,
            )
        return Frame(np.ascontiguousarray(color), depth.copy(), depth_scale, t_capture_ns, self.camera_id, number)


def _frame_array(frame: Any, bytes_per_pixel: int, what: str) -> np.ndarray:
    """(H, W, bpp) uint8 view of a video frame's buffer, after checking its size."""
    video = frame.as_video_frame()
    h, w = video.get_height(), video.get_width()
    data = np.asanyarray(video.get_data())
    expected = h * w * bytes_per_pixel
    if data.nbytes != expected:
        raise CameraError(
            f"{what} frame {frame.get_frame_number()} is corrupt: {data.nbytes} bytes for a {w}x{h} image, "
            f"expected {expected}"
        )
    raw = data.view(np.uint8).reshape(h, w * bytes_per_pixel)
    if bytes_per_pixel == 3:
        return raw.reshape(h, w, 3)
    return raw
