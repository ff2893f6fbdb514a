"""Perception: 4D-VLA observations (per-camera RGB + base-frame XYZ, fused clouds, memory-bank history)."""

from robot_stack.perception.memory_bank import MemoryBank, MemoryBankConfig
from robot_stack.perception.observation import ObservationBuilder, ObservationConfig, voxel_downsample

__all__ = ["MemoryBank", "MemoryBankConfig", "ObservationBuilder", "ObservationConfig", "voxel_downsample"]
