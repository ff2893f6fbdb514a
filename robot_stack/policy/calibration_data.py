"""Recorded frames as model inputs: INT8 calibration and accuracy-gate data from the project's datasets.

A policy's inputs are named the way the robot side sends them (``Observation.arrays()``): ``state`` (the
``RobotState.vector()`` layout: q, TCP xyz, gripper), ``<camera>/rgb`` (H, W, 3) uint8 and ``<camera>/xyz``
(H, W, 3) float32 metres in the robot base frame, NaN where depth is invalid. :func:`recorded_frames` rebuilds
exactly those arrays from episodes recorded in the LeRobot layout (:mod:`robot_stack.dataset.loader`: decoded
MP4 colour, lossless depth through the episode's own calibration snapshot), so an INT8 engine is calibrated on
what it will see, not on noise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import DatasetError, PolicyError
from robot_stack.policy.manifest import PolicyManifest, TensorSpec
from robot_stack.policy.runtime import validate_arrays

__all__ = ["RecordedFrames", "recorded_frames"]

log = logging.getLogger("robot_stack.policy.calibration_data")


@dataclass(frozen=True)
class RecordedFrames:
    """Model input sets taken from recorded episodes (raw request units; one observation each, with a leading
    batch axis of 1 when the model's inputs are batch-dynamic).

    Attributes:
        frames: the input sets, in episode/frame order.
        source: the dataset folder. episodes: episodes sampled.
        digest: :func:`~robot_stack.policy.tensorrt.arrays_sha256` of ``frames`` (goes into the engine cache key).
    """

    frames: tuple[Mapping[str, np.ndarray], ...]
    source: str
    episodes: int
    digest: str

    def split(
        self, every: int = 4
    ) -> tuple[tuple[Mapping[str, np.ndarray], ...], tuple[Mapping[str, np.ndarray], ...]]:
        """(calibration, held out): every ``every``-th frame is held out for the accuracy gate (at least one)."""
        held = tuple(f for i, f in enumerate(self.frames) if i % every == every - 1) or self.frames[-1:]
        calib = tuple(f for i, f in enumerate(self.frames) if i % every != every - 1) or self.frames
        return calib, held


def _kind(name: str) -> tuple[str, str]:
    """``front/rgb`` -> (``front``, ``rgb``); ``state`` -> ("", ``state``)."""
    if name == "state":
        return "", "state"
    camera, _, what = name.rpartition("/")
    return camera, what


def recorded_frames(
    manifest: PolicyManifest,
    dataset: str | os.PathLike[str],
    max_frames: int = 32,
    *,
    inputs: Sequence[TensorSpec] | None = None,
) -> RecordedFrames:
    """Up to ``max_frames`` input sets for ``manifest``, evenly spread over every frame of every episode of
    ``dataset`` (failed episodes included: calibration wants the states a robot passes through).

    Args:
        inputs: the tensors to produce (default the manifest's request inputs).

    Raises:
        DatasetError: the dataset is missing/damaged, or a model input has no recorded source (the message lists
            what the dataset has). PolicyError: a recorded array does not fit the model (e.g. another camera
            resolution than the model was exported for).
    """
    from robot_stack.dataset import load_dataset
    from robot_stack.policy.tensorrt import arrays_sha256

    specs = tuple(inputs or manifest.request_inputs)
    if max_frames < 1:
        raise DatasetError(f"max_frames must be >= 1, got {max_frames}")
    ds = load_dataset(dataset)
    cameras: set[str] = set()
    for spec in specs:
        camera, what = _kind(spec.name)
        if what == "state":
            continue
        if what not in ("rgb", "xyz") or camera not in ds.camera_ids:
            raise DatasetError(
                f"model input {spec.name!r} of {manifest.model_id} has no recorded source in {dataset}: the dataset "
                f"gives 'state' and '<camera>/rgb', '<camera>/xyz' for cameras {list(ds.camera_ids)}"
            )
        cameras.add(camera)
    if ds.num_episodes == 0 or ds.num_frames == 0:
        raise DatasetError(f"dataset {dataset} has no recorded frames; record some with `robot-stack record`")
    picks = np.unique(np.linspace(0, ds.num_frames - 1, min(max_frames, ds.num_frames)).round().astype(np.int64))
    batched = all(s.shape and s.shape[0] == -1 for s in specs)
    frames: list[dict[str, np.ndarray]] = []
    first, used = 0, 0
    need_rgb = any(_kind(s.name)[1] == "rgb" for s in specs)
    need_depth = any(_kind(s.name)[1] == "xyz" for s in specs)
    for index in range(ds.num_episodes):
        length = int(ds.episode_info(index)["length"])
        local = [int(p - first) for p in picks if first <= p < first + length]
        first += length
        if not local:
            continue
        ep = ds.load_episode(index, rgb=need_rgb, depth=need_depth, highrate=False, cameras=tuple(sorted(cameras)))
        projectors = {c: ep.cameras[c].projector() for c in cameras} if need_depth else {}
        used += 1
        for k in local:
            arrays: dict[str, np.ndarray] = {}
            for spec in specs:
                camera, what = _kind(spec.name)
                if what == "state":
                    value = ep.state_vector(k)
                elif what == "rgb":
                    value = np.asarray(ep.cameras[camera].rgb[k])  # type: ignore[index]
                else:
                    value = ep.cameras[camera].xyz_base(k, projectors[camera])
                arrays[spec.name] = np.ascontiguousarray(value[None] if batched else value)
            try:
                validate_arrays(specs, arrays, manifest.model_id)
            except PolicyError as exc:
                raise PolicyError(f"recorded frame {k} of episode {index} in {dataset} does not fit: {exc}") from exc
            frames.append(arrays)
    log.info("%d recorded frames from %d episodes of %s for %s", len(frames), used, dataset, manifest.model_id)
    return RecordedFrames(tuple(frames), str(dataset), used, arrays_sha256(frames))
