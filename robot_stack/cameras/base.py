"""The camera interface every source (RealSense, simulator, recording) implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType

from robot_stack.types import CameraModel, Frame


class Camera(ABC):
    """An aligned RGB-D source.

    ``read()`` returns the newest frame with depth aligned to colour and ``t_capture_ns`` on this process'
    monotonic clock. Implementations raise :class:`robot_stack.errors.CameraError` when no frame can be had.
    """

    camera_id: str

    @abstractmethod
    def start(self) -> None:
        """Open the device/stream. Idempotent."""

    @abstractmethod
    def stop(self) -> None:
        """Release the device. Idempotent."""

    @property
    @abstractmethod
    def model(self) -> CameraModel:
        """Intrinsics of the colour stream that depth is aligned to."""

    @abstractmethod
    def read(self) -> Frame:
        """Capture (or fetch the newest) aligned RGB-D frame."""

    def __enter__(self) -> Camera:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
