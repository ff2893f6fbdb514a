"""A camera read continuously on its own thread: the newest frame for the policy at once, every frame for observers.

:class:`ThreadedCamera` owns another :class:`~robot_stack.cameras.base.Camera` (a simulated render, a RealSense, a
recording) and reads it at ``rate_hz`` on a capture thread (absolute deadlines, no drift). :meth:`ThreadedCamera.read`
returns the newest captured frame without waiting on the device, a render or a transport — in a composed process
the policy takes frames this way, never over DDS. An ``observer`` (e.g. republishing on ROS topics for monitoring
and recording) receives each frame on a separate thread; when it is slower than the camera, a frame it has not
taken yet is replaced by the newer one (counted), so it can never delay capture or the policy.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError, ConfigError
from robot_stack.logs import FoldedLogger
from robot_stack.types import CameraModel, Frame

log = FoldedLogger(logging.getLogger("robot_stack.cameras.threaded"), interval_s=1.0)  # one line per cause per s

__all__ = ["ThreadedCamera", "ThreadedCameraStats"]


@dataclass(frozen=True)
class ThreadedCameraStats:
    """Counters since :meth:`ThreadedCamera.start`.

    Attributes:
        frames: frames captured.
        failures: reads of the owned camera that raised :class:`CameraError`.
        late: capture deadlines missed by more than one period (the read took longer than the period).
        observed: frames handed to the observer; observer_skipped: frames replaced before it took them (or still
            waiting when a stop outran the observer thread): after :meth:`ThreadedCamera.stop`, every frame captured is
            observed, skipped or an observer error;
        observer_errors: observer calls that raised.
    """

    frames: int
    failures: int
    late: int
    observed: int
    observer_skipped: int
    observer_errors: int


class ThreadedCamera(Camera):
    """See the module docstring.

    Args:
        camera: the camera read on the capture thread (started and stopped with this one).
        rate_hz: captures per second (> 0).
        observer: called with each new frame on its own thread, or None.
        read_lock: held around each read of ``camera`` (e.g. the lock that guards a simulated world the camera
            renders while other threads move it), or None.
    """

    def __init__(
        self,
        camera: Camera,
        rate_hz: float,
        observer: Callable[[Frame], None] | None = None,
        read_lock: threading.Lock | None = None,
    ) -> None:
        if not rate_hz > 0:
            raise ConfigError(f"ThreadedCamera: rate_hz must be positive, got {rate_hz}")
        self.camera = camera
        self.camera_id = str(getattr(camera, "camera_id", "") or "camera")  # (wrappers may not carry one)
        self.period_s = 1.0 / float(rate_hz)
        self.observer = observer
        self._read_lock = read_lock
        self._cond = threading.Condition()
        self._latest: Frame | None = None
        self._error: str | None = None
        self._pending: Frame | None = None  # the next frame for the observer
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._counts = dict.fromkeys(
            ("frames", "failures", "late", "observed", "observer_skipped", "observer_errors"), 0
        )

    @property
    def model(self) -> CameraModel:
        return self.camera.model

    def start(self) -> None:
        """Start the owned camera and the capture (and observer) threads. Idempotent."""
        if self._threads:
            return
        self.camera.start()
        self._stop.clear()
        self._threads = [threading.Thread(target=self._capture_loop, name=f"capture-{self.camera_id}", daemon=True)]
        if self.observer is not None:
            self._threads.append(
                threading.Thread(target=self._observer_loop, name=f"observe-{self.camera_id}", daemon=True)
            )
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        """Stop the threads, then the owned camera. Idempotent."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(5.0)
        self._threads = []
        with self._cond:  # a capture that raced the stop and was never handed over is counted, not lost silently
            if self._pending is not None:
                self._pending = None
                self._counts["observer_skipped"] += 1
        self.camera.stop()
        log.flush()

    def read(self) -> Frame:
        """The newest captured frame (possibly one already read: the stale-data guard judges repeats and age).

        Raises:
            CameraError: nothing captured yet (with the last capture error, if any).
        """
        with self._cond:
            frame, error = self._latest, self._error
        if frame is None:
            raise CameraError(
                f"camera {self.camera_id!r}: no frame captured yet" + (f" (last error: {error})" if error else "")
            )
        return frame

    def wait_for_frame(self, after_seq: int, timeout_s: float) -> Frame | None:
        """Block until a frame newer than ``after_seq`` is captured; None on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._latest is None or self._latest.seq <= after_seq:
                left = deadline - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return None
                self._cond.wait(left)
            return self._latest

    def stats(self) -> ThreadedCameraStats:
        with self._cond:
            return ThreadedCameraStats(**self._counts)

    def _read_once(self) -> Frame:
        if self._read_lock is None:
            return self.camera.read()
        with self._read_lock:
            return self.camera.read()

    def _capture_loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            try:
                frame = self._read_once()
            except CameraError as exc:
                with self._cond:
                    self._counts["failures"] += 1
                    self._error = str(exc)
                log.warning("camera %s: read failed: %s", self.camera_id, exc)
            else:
                with self._cond:
                    self._latest, self._error = frame, None
                    self._counts["frames"] += 1
                    if self.observer is not None:
                        if self._pending is not None:
                            self._counts["observer_skipped"] += 1
                        self._pending = frame
                    self._cond.notify_all()
            next_t += self.period_s
            now = time.monotonic()
            if now - next_t > self.period_s:  # more than a period behind: start again from now, count it
                with self._cond:
                    self._counts["late"] += 1
                next_t = now
            self._stop.wait(max(0.0, next_t - now))

    def _observer_loop(self) -> None:
        assert self.observer is not None
        while True:
            with self._cond:
                while self._pending is None and not self._stop.is_set():
                    self._cond.wait(0.5)
                if self._pending is None:  # stopped, and the last capture was handed over
                    return
                frame, self._pending = self._pending, None
            try:
                self.observer(frame)
            except Exception as exc:  # noqa: BLE001 - an observer never stops capture; counted and logged
                with self._cond:
                    self._counts["observer_errors"] += 1
                log.error("camera %s: observer failed: %s", self.camera_id, exc)
            else:
                with self._cond:
                    self._counts["observed"] += 1
