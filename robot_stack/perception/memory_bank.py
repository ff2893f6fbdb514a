"""4D-VLA memory-bank sampling: choose informative history frames for temporal context.

4D-VLA feeds the policy a few history frames besides the current one. Taking the last ``k`` frames wastes them
when the scene is still (near-duplicates) and misses context when it moves fast. The memory bank keeps the last
``capacity`` observations with a cheap appearance feature each (a small grey thumbnail, zero-mean, unit-norm) and
samples by *accumulated change*: with ``d_i = 1 - cos(f_i, f_{i-1})`` summed from the oldest stored frame, the
``k`` history frames are those at equal steps of accumulated change before the current frame. A still scene
collapses to few distinct frames (the newest of each still period); motion gets dense sampling.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.types import CameraObservation

__all__ = ["MemoryBank", "MemoryBankConfig", "appearance_feature"]


@dataclass(frozen=True)
class MemoryBankConfig:
    """Attributes: capacity: frames kept per camera; k: history frames returned; thumb: feature thumbnail edge (px)."""

    capacity: int = 64
    k: int = 4
    thumb: int = 16

    def __post_init__(self) -> None:
        if self.capacity < 2 or not (1 <= self.k < self.capacity) or self.thumb < 2:
            raise ConfigError(
                f"MemoryBankConfig: need capacity >= 2, 1 <= k < capacity and thumb >= 2, got {self.capacity}, "
                f"{self.k}, {self.thumb}"
            )


def appearance_feature(rgb: np.ndarray, thumb: int = 16) -> np.ndarray:
    """(thumb*thumb,) float32 zero-mean unit-norm grey thumbnail of an (H, W, 3) uint8 image (block means)."""
    grey = rgb.astype(np.float32).mean(axis=2)
    h, w = grey.shape
    hs, ws = h // thumb, w // thumb
    if hs == 0 or ws == 0:
        raise ConfigError(f"appearance_feature: image {w}x{h} is smaller than the {thumb}x{thumb} thumbnail")
    small = grey[: hs * thumb, : ws * thumb].reshape(thumb, hs, thumb, ws).mean(axis=(1, 3)).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-6 else small


class MemoryBank:
    """History of one camera's observations with change-based sampling (see module docstring). Not thread-safe."""

    def __init__(self, config: MemoryBankConfig = MemoryBankConfig()) -> None:  # noqa: B008 - frozen
        self.config = config
        self._items: deque[tuple[CameraObservation, np.ndarray]] = deque(maxlen=config.capacity)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, obs: CameraObservation) -> None:
        """Store an observation (the oldest is dropped beyond ``capacity``)."""
        self._items.append((obs, appearance_feature(obs.rgb, self.config.thumb)))

    def sample(self, k: int | None = None) -> list[CameraObservation]:
        """Up to ``k`` history observations before the newest, oldest first, chosen by accumulated change."""
        k = self.config.k if k is None else k
        items = list(self._items)[:-1]  # history excludes the current (newest) frame
        if not items:
            return []
        feats = np.stack([f for _, f in self._items])
        change = np.concatenate([[0.0], np.clip(1.0 - np.sum(feats[1:] * feats[:-1], axis=1), 0.0, None)])
        accumulated = np.cumsum(change)  # accumulated[i]: change from the oldest frame up to frame i
        current = accumulated[-1]
        if current <= 1e-9:  # nothing changed: the newest history frame is as good as any
            return [items[-1][0]]
        targets = current - current * np.arange(1, k + 1) / (k + 1)  # equal steps of change before the current
        chosen: list[int] = []
        for t in targets:
            # the newest history frame whose accumulated change is <= target (frame at or just before that point)
            idx = int(np.searchsorted(accumulated[:-1], t, side="right")) - 1
            idx = max(idx, 0)
            if idx not in chosen:
                chosen.append(idx)
        return [items[i][0] for i in sorted(chosen)]
