"""The stale-data guard: late, frozen and depth-less camera frames never reach the policy."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from robot_stack.types import Frame

__all__ = ["GuardConfig", "ObservationGuard"]


@dataclass(frozen=True)
class GuardConfig:
    """When a camera frame is too untrustworthy to act on.

    Attributes:
        max_age_s: a frame captured longer ago than this (robot clock) is late.
        min_valid_depth_fraction: fewer valid depth pixels than this fraction means the depth stream failed
            (e.g. all-zero depth).
        max_identical_frames: this many consecutive identical frames means the stream is frozen. Frames are identical
            when they repeat the sequence number or the capture time (the driver delivered nothing new) or, with
            ``compare_pixels``, the exact pixels.
        compare_pixels: also treat pixel-identical frames as repeats. Right for real sensors, whose noise makes two
            identical frames impossible; wrong for a noise-free simulator looking at a still scene.
    """

    max_age_s: float = 0.25
    min_valid_depth_fraction: float = 0.05
    max_identical_frames: int = 2
    compare_pixels: bool = False


class ObservationGuard:
    """Detects late, frozen and depth-less frames, per camera; counts every rejection by reason."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        self.config = config or GuardConfig()
        self.rejections: Counter[str] = Counter()
        self._last: dict[str, tuple[int, int, int]] = {}  # camera -> (seq, t_capture_ns, pixel fingerprint)
        self._repeats: dict[str, int] = {}

    @staticmethod
    def _fingerprint(frame: Frame) -> int:
        # a sparse sample of both images is enough to tell a frozen stream from a live one
        return hash((frame.color[::37, ::41].tobytes(), frame.depth[::37, ::41].tobytes()))

    def check(self, frame: Frame, now_ns: int) -> str | None:
        """Return why ``frame`` must not be acted on (``"late"``, ``"frozen"``, ``"no_depth"``), or None."""
        cfg = self.config
        key = (frame.seq, frame.t_capture_ns, self._fingerprint(frame) if cfg.compare_pixels else 0)
        previous = self._last.get(frame.camera_id)
        self._last[frame.camera_id] = key
        same = previous is not None and (
            key[0] == previous[0] or key[1] == previous[1] or (cfg.compare_pixels and key[2] == previous[2])
        )
        self._repeats[frame.camera_id] = self._repeats.get(frame.camera_id, 1) + 1 if same else 1
        reason = None
        if now_ns - frame.t_capture_ns > cfg.max_age_s * 1e9:
            reason = "late"
        elif self._repeats[frame.camera_id] >= cfg.max_identical_frames:
            reason = "frozen"
        elif np.count_nonzero(frame.depth) < cfg.min_valid_depth_fraction * frame.depth.size:
            reason = "no_depth"
        if reason is not None:
            self.rejections[reason] += 1
        return reason
