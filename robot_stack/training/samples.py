"""Behaviour-cloning samples in memory: subsampled observation images, state and ``ee_delta_xyz`` chunk labels.

This is not a dataset format (datasets live on disk in the recorder's LeRobot layout, :mod:`robot_stack.dataset`);
it is the arrays a trainer iterates over, built once from a loaded dataset.

Images are kept at the policy's input resolution: every :data:`STRIDE`-th row and column of the camera image,
exactly what the exported graph does in its first op (:func:`subsample`), so that training and serving see the
same pixels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ConfigError, DatasetError, ShapeError

__all__ = [
    "EE_STATE_DIM",
    "STATE_LAYOUTS",
    "STRIDE",
    "TCP_FROM_END",
    "TrainingSamples",
    "chunk_labels",
    "concat_samples",
    "samples_from_dataset",
    "samples_from_datasets",
    "subsample",
]

log = logging.getLogger("robot_stack.training")

#: Pixel stride of the in-graph subsampling (480x640 -> 120x160).
STRIDE = 4
#: Where the TCP xyz sits in every state layout (``RobotState.vector()`` ends with TCP xyz (3) and gripper (1)).
TCP_FROM_END = slice(-4, -1)
#: ``full``: the whole ``RobotState.vector()`` (q of one arm, TCP xyz, gripper); ``ee``: its last four entries (TCP
#: xyz in the base frame, gripper opening), the same for every arm: what a cross-embodiment policy sees.
STATE_LAYOUTS = ("full", "ee")
#: Length of the ``ee`` state.
EE_STATE_DIM = 4


def subsample(image: np.ndarray, stride: int = STRIDE) -> np.ndarray:
    """Every ``stride``-th row and column of an (H, W, C) image (a view; the graph does the same slice)."""
    if image.ndim != 3:
        raise ShapeError(f"subsample: expected an (H, W, C) image, got shape {image.shape}")
    return image[::stride, ::stride]


@dataclass(frozen=True)
class TrainingSamples:
    """N behaviour-cloning samples of one camera.

    Attributes:
        rgb: (N, h, w, 3) uint8 subsampled colour images.
        xyz: (N, h, w, 3) float32 subsampled base-frame points, metres; NaN where depth is invalid.
        state: (N, S) float32: ``RobotState.vector()`` (``full``: q (n) rad, TCP xyz (3) m base frame, gripper (1))
            or its last four entries (``ee``: TCP xyz, gripper; the same for every arm).
        chunks: (N, horizon, 3) float32 ``ee_delta_xyz`` labels, metres, base frame; step k is for t + k * dt_s.
        episode: (N,) int64 episode index of each sample (for episode-wise validation splits).
        dt_s: seconds between chunk steps. camera: camera id the images come from (model input prefix).
        image_shape: (H, W) of the full camera image the policy will receive.
        robot: (N,) str, the arm each sample was recorded with (``embodiment.name``).
        state_layout: ``full`` or ``ee`` (:data:`STATE_LAYOUTS`).
    """

    rgb: np.ndarray
    xyz: np.ndarray
    state: np.ndarray
    chunks: np.ndarray
    episode: np.ndarray
    dt_s: float
    camera: str
    image_shape: tuple[int, int]
    robot: np.ndarray | None = None
    state_layout: str = "full"

    def __post_init__(self) -> None:
        n = len(self.rgb)
        if self.robot is None:
            object.__setattr__(self, "robot", np.full(n, "panda"))
        if self.state_layout not in STATE_LAYOUTS:
            raise ConfigError(f"TrainingSamples.state_layout: {self.state_layout!r} unknown; expected {STATE_LAYOUTS}")
        checks = (
            (self.rgb.ndim == 4 and self.rgb.shape[-1] == 3 and self.rgb.dtype == np.uint8, "rgb (N, h, w, 3) uint8"),
            (self.xyz.shape == self.rgb.shape and self.xyz.dtype == np.float32, "xyz (N, h, w, 3) float32"),
            (self.state.ndim == 2 and len(self.state) == n, "state (N, 11)"),
            (self.chunks.ndim == 3 and self.chunks.shape[2] == 3 and len(self.chunks) == n, "chunks (N, horizon, 3)"),
            (self.episode.shape == (n,), "episode (N,)"),
            (np.shape(self.robot) == (n,), "robot (N,)"),
            (self.state_layout == "full" or self.state.shape[1] == EE_STATE_DIM, "ee state (N, 4)"),
            (np.isfinite(self.chunks).all() and np.isfinite(self.state).all(), "finite state and chunks"),
        )
        for ok, what in checks:
            if not ok:
                raise ShapeError(
                    f"TrainingSamples: expected {what}; got rgb {self.rgb.shape} {self.rgb.dtype}, xyz "
                    f"{self.xyz.shape} {self.xyz.dtype}, state {self.state.shape}, chunks {self.chunks.shape}, "
                    f"episode {self.episode.shape}"
                )
        if n == 0:
            raise ShapeError("TrainingSamples: no samples; record some episodes first")

    def __len__(self) -> int:
        return len(self.rgb)

    @property
    def horizon(self) -> int:
        return int(self.chunks.shape[1])

    @property
    def episodes(self) -> int:
        return int(len(np.unique(self.episode)))

    @property
    def robots(self) -> tuple[str, ...]:
        """The arms in these samples, sorted."""
        return tuple(sorted({str(r) for r in np.asarray(self.robot)}))

    def episode_end_tcp(self) -> np.ndarray:
        """(N, 3) float32: for each sample, the TCP position (base frame, metres) at the last sample of its
        episode. For successful reach episodes that is where the target was touched: a goal label learned from
        the recording itself (hindsight), used as the keypoint auxiliary target."""
        out = np.empty((len(self), 3), np.float32)
        for ep in np.unique(self.episode):
            sel = np.flatnonzero(self.episode == ep)
            out[sel] = self.state[sel[-1], TCP_FROM_END]
        return out

    def split(self, val_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(train, val) sample indices with whole episodes held out (at least one episode each when possible)."""
        eps = np.unique(self.episode)
        rng = np.random.default_rng(seed)
        n_val = min(max(1, round(val_fraction * len(eps))), len(eps) - 1) if len(eps) > 1 else 0
        val_eps = rng.choice(eps, n_val, replace=False) if n_val else np.array([], np.int64)
        is_val = np.isin(self.episode, val_eps)
        return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def chunk_labels(tcp: np.ndarray, ee_target: np.ndarray, horizon: int) -> np.ndarray:
    """(T, horizon, 3) float32 ``ee_delta_xyz`` chunks from one recorded episode.

    ``tcp``: (T, 3) observed TCP positions; ``ee_target``: (T, 3) the TCP target commanded at each frame (the
    recorder's ``action`` holds step 1 of the demonstrator's chunk: the target for one frame later); base frame,
    metres. The label of frame ``k`` is what the demonstrator commanded over the next ``horizon - 1`` frames,
    relative to the TCP at ``k``: ``label[0] = 0``, ``label[j] = ee_target[k + j - 1] - tcp[k]``; past the end of
    the episode the last target is held. Chunk step spacing = the recording's frame period.
    """
    tcp = np.asarray(tcp, np.float64)
    target = np.asarray(ee_target, np.float64)
    if tcp.ndim != 2 or tcp.shape[1] != 3 or target.shape != tcp.shape or horizon < 1:
        raise ShapeError(
            f"chunk_labels: need (T, 3) tcp and ee_target and horizon >= 1, got {tcp.shape}, {target.shape}, {horizon}"
        )
    t = len(tcp)
    idx = np.minimum(np.arange(t)[:, None] + np.arange(horizon)[None, :] - 1, t - 1)  # (T, horizon)
    out = target[np.maximum(idx, 0)] - tcp[:, None, :]
    out[:, 0] = 0.0
    return out.astype(np.float32)


def samples_from_dataset(
    root: str | os.PathLike[str],
    camera: str = "front",
    horizon: int = 8,
    *,
    successful_only: bool = True,
    max_episodes: int | None = None,
    state_layout: str = "full",
) -> TrainingSamples:
    """Load a recorded dataset (:func:`robot_stack.dataset.load_dataset`) into training samples.

    Per frame: the camera's RGB (decoded MP4) and base-frame XYZ (the recorded depth through the episode's own
    calibration snapshot), the state vector in the server's layout (``RobotState.vector()``: q, TCP xyz, gripper)
    and the :func:`chunk_labels` chunk. Failed episodes are skipped unless ``successful_only`` is False.
    ``state_layout="ee"`` keeps the arm-independent part of the state (TCP xyz, gripper).

    Raises:
        DatasetError: no (successful) episodes, or ``camera`` was not recorded.
    """
    from robot_stack.dataset import load_dataset

    ds = load_dataset(root)
    if camera not in ds.camera_ids:
        raise DatasetError(f"dataset {root} has no camera {camera!r}; recorded cameras: {list(ds.camera_ids)}")
    rgb: list[np.ndarray] = []
    xyz: list[np.ndarray] = []
    state: list[np.ndarray] = []
    chunks: list[np.ndarray] = []
    episode: list[int] = []
    image_shape: tuple[int, int] | None = None
    used = 0
    successes = ds.successes()
    for index in range(ds.num_episodes):
        if max_episodes is not None and used >= max_episodes:
            break
        if successful_only and not bool(successes[index]):
            log.info("episode %d: skipped (failed)", index)
            continue
        ep = ds.load_episode(index, highrate=False, cameras=(camera,))
        cam = ep.cameras[camera]
        assert cam.rgb is not None and cam.depth is not None
        projector = cam.projector()
        tcp = ep.ee_pose[:, :3]
        labels = chunk_labels(tcp, ep.ee_target[:, :3], horizon)
        for k in range(ep.length):
            rgb.append(np.ascontiguousarray(subsample(cam.rgb[k])))
            xyz.append(np.ascontiguousarray(subsample(cam.xyz_base(k, projector))))
            vector = ep.state_vector(k)
            state.append(vector[-EE_STATE_DIM:] if state_layout == "ee" else vector)
            chunks.append(labels[k])
            episode.append(index)
        image_shape = (int(cam.rgb.shape[1]), int(cam.rgb.shape[2]))
        used += 1
    if not rgb or image_shape is None:
        raise DatasetError(
            f"dataset {root}: no {'successful ' if successful_only else ''}episodes to train on; record some with "
            "`robot-stack record --teleop expert --out DIR`"
        )
    log.info("loaded %d samples from %d episodes of %s", len(rgb), used, root)
    return TrainingSamples(
        rgb=np.stack(rgb),
        xyz=np.stack(xyz),
        state=np.stack(state),
        chunks=np.stack(chunks),
        episode=np.asarray(episode, np.int64),
        dt_s=1.0 / ds.fps,
        camera=camera,
        image_shape=image_shape,
        robot=np.full(len(rgb), ds.spec.robot_type),
        state_layout=state_layout,
    )


def concat_samples(parts: list[TrainingSamples]) -> TrainingSamples:
    """One sample set from several (e.g. one dataset per arm): episode indices renumbered so they stay distinct.

    Raises:
        DatasetError: the parts differ in camera, image size, chunk shape, step period or state layout (or, for
            the ``full`` layout, in state length: arms with different joint counts need ``state_layout="ee"``).
    """
    if not parts:
        raise DatasetError("concat_samples: no sample sets given")
    first = parts[0]
    for other in parts[1:]:
        same = (
            other.camera == first.camera
            and other.image_shape == first.image_shape
            and other.chunks.shape[1:] == first.chunks.shape[1:]
            and abs(other.dt_s - first.dt_s) < 1e-9
            and other.state_layout == first.state_layout
            and other.state.shape[1] == first.state.shape[1]
        )
        if not same:
            raise DatasetError(
                "concat_samples: the datasets differ in camera, image size, horizon, frame rate or state layout/length "
                f"({first.camera} {first.image_shape} {first.chunks.shape[1:]} {first.dt_s} {first.state_layout} "
                f"{first.state.shape[1]} vs {other.camera} {other.image_shape} {other.chunks.shape[1:]} {other.dt_s} "
                f"{other.state_layout} {other.state.shape[1]}); record them alike, and train arms with different "
                "joint counts with the ee state layout"
            )
    episodes, offset = [], 0
    for part in parts:
        episodes.append(part.episode + offset)
        offset += int(part.episode.max()) + 1
    return TrainingSamples(
        rgb=np.concatenate([p.rgb for p in parts]),
        xyz=np.concatenate([p.xyz for p in parts]),
        state=np.concatenate([p.state for p in parts]),
        chunks=np.concatenate([p.chunks for p in parts]),
        episode=np.concatenate(episodes),
        dt_s=first.dt_s,
        camera=first.camera,
        image_shape=first.image_shape,
        robot=np.concatenate([np.asarray(p.robot) for p in parts]),
        state_layout=first.state_layout,
    )


def samples_from_datasets(
    roots: list[str | os.PathLike[str]],
    camera: str = "front",
    horizon: int = 8,
    *,
    max_episodes: int | None = None,
    state_layout: str | None = None,
) -> TrainingSamples:
    """Samples of several datasets (one per arm, say), ``max_episodes`` from each. The state layout defaults to
    ``ee`` when the datasets come from more than one arm, else ``full``."""
    from robot_stack.dataset import load_dataset

    robots = {load_dataset(r).spec.robot_type for r in roots}
    layout = state_layout or ("ee" if len(robots) > 1 else "full")
    parts = [samples_from_dataset(r, camera, horizon, max_episodes=max_episodes, state_layout=layout) for r in roots]
    return concat_samples(parts)
