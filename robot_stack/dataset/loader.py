"""Reading a robot-stack dataset back as frozen numpy values (no torch, no LeRobot needed).

    ds = load_dataset("data/reach")           # validates info.json and the episode markers
    ep = ds.load_episode(0)                   # everything of episode 0, arrays read-only
    ep.state[:, :7]                           # (T, 7) float32 joint positions, rad
    ep.cameras["front"].rgb                   # (T, H, W, 3) uint8 RGB (decoded MP4)
    ep.cameras["front"].depth                 # (T, H, W) uint16, x depth_scale = metres (bit-exact)
    ep.xyz_base("front", k)                   # (H, W, 3) float32 metres, robot base frame, NaN = no depth

Frames: every pose and XYZ is in the robot base frame (``T_base_*``); quaternions are (w, x, y, z).
Time: ``t_ns`` / ``camera_time_ns`` are the recording host's monotonic clock (ns); ``timestamp`` is LeRobot's nominal
``frame_index / fps`` (s).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robot_stack.calibration.projection import DepthProjector
from robot_stack.calibration.store import CameraCalibration
from robot_stack.dataset import format as fmt
from robot_stack.dataset.format import DatasetSpec, RobotDescription, camera_key, episode_files
from robot_stack.errors import DatasetError

log = logging.getLogger("robot_stack.dataset")

__all__ = ["CameraData", "Dataset", "Episode", "HighRateStream", "load_dataset", "read_depth", "read_video"]


def _ro(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    a.setflags(write=False)
    return a


def _column(column: pa.ChunkedArray, dtype: Any) -> np.ndarray:
    """A parquet column as a read-only array: (N,) for scalars, (N, k) for fixed-size lists."""
    c = column.combine_chunks()
    if pa.types.is_fixed_size_list(c.type):
        return _ro(c.flatten().to_numpy(zero_copy_only=False).astype(dtype).reshape(len(c), c.type.list_size))
    return _ro(c.to_numpy(zero_copy_only=False).astype(dtype))


def read_video(path: str | os.PathLike[str]) -> np.ndarray:
    """(T, H, W, 3) uint8 RGB frames of an MP4 file, in presentation order."""
    try:
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    except (OSError, av.FFmpegError) as exc:
        raise DatasetError(f"{path}: cannot decode the video ({exc}); the file is damaged or not an MP4") from exc
    if not frames:
        raise DatasetError(f"{path}: the video has no frames")
    return np.stack(frames)


def read_depth(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """((T, H, W) uint16 depth units, (T,) int64 capture times ns) of one depth parquet file (bit-exact)."""
    try:
        pf = pq.ParquetFile(str(path))
        meta = json.loads(pf.schema_arrow.metadata[b"robot_stack.depth"])
        table = pf.read()
    except (OSError, KeyError, ValueError) as exc:
        raise DatasetError(f"{path}: not a robot-stack depth file ({exc})") from exc
    h, w = int(meta["height"]), int(meta["width"])
    blobs = table.column("depth").to_pylist()
    depth = np.empty((len(blobs), h, w), dtype=np.uint16)
    for k, blob in enumerate(blobs):
        if len(blob) != h * w * 2:
            raise DatasetError(f"{path}: depth frame {k} has {len(blob)} bytes, expected {h * w * 2}")
        depth[k] = np.frombuffer(blob, dtype="<u2").reshape(h, w)
    if table.column("frame_index").to_pylist() != list(range(len(blobs))):
        raise DatasetError(f"{path}: depth frame indices are not 0..{len(blobs) - 1}")
    return depth, table.column("t_capture_ns").to_numpy().astype(np.int64)


@dataclass(frozen=True)
class CameraData:
    """One camera of one episode.

    Attributes:
        camera_id: logical camera name.
        t_capture_ns: (T,) int64 capture times, host monotonic ns.
        rgb: (T, H, W, 3) uint8 RGB decoded from the MP4 (lossy codec: within a few grey levels), or None when
            not loaded.
        depth: (T, H, W) uint16 depth units aligned to ``rgb`` (0 = invalid; bit-exact), or None when not loaded.
        depth_scale: metres per depth unit.
        calibration: the calibration recorded with the episode, intrinsics at (W, H) of the stream;
            ``calibration.T_base_cam`` maps the camera's optical frame into the robot base frame.
    """

    camera_id: str
    t_capture_ns: np.ndarray
    rgb: np.ndarray | None
    depth: np.ndarray | None
    depth_scale: float
    calibration: CameraCalibration

    def projector(self, max_range_m: float = 3.0) -> DepthProjector:
        """A :class:`DepthProjector` for this camera's recorded calibration."""
        return self.calibration.projector(max_range_m)

    def xyz_base(self, k: int, projector: DepthProjector | None = None) -> np.ndarray:
        """(H, W, 3) float32 metres in the robot base frame of frame ``k``'s depth; NaN where depth is invalid."""
        if self.depth is None:
            raise DatasetError(f"camera {self.camera_id!r}: depth was not loaded; load_episode(..., depth=True)")
        return (projector or self.projector()).to_xyz(self.depth[k], self.depth_scale)


@dataclass(frozen=True)
class HighRateStream:
    """The control-rate stream of an episode (joint states and commands at e.g. 500 Hz).

    Attributes:
        t_ns: (N,) int64 host monotonic ns.
        q, dq: (N, n) float64 measured joint positions (rad) and velocities (rad/s).
        q_cmd: (N, n) float64 set-points sent to the robot (after the safety filter), rad.
        gripper: (N,) float64 measured opening [0, 1]; gripper_cmd: (N,) commanded opening (NaN = none).
    """

    t_ns: np.ndarray
    q: np.ndarray
    dq: np.ndarray
    q_cmd: np.ndarray
    gripper: np.ndarray
    gripper_cmd: np.ndarray


@dataclass(frozen=True)
class Episode:
    """One recorded episode (all arrays read-only).

    Attributes:
        index: episode index in the dataset.
        task: instruction text.
        success: the episode's success label.
        fps: nominal frame rate, Hz.
        t_ns: (T,) int64 host monotonic time of each frame's robot state, ns.
        timestamp: (T,) float32 LeRobot timestamp ``frame_index / fps``, s.
        state: (T, n + 1) float32: joint positions (rad) then gripper opening [0, 1].
        ee_pose: (T, 7) float32 TCP pose in the base frame: xyz (m), quaternion (w, x, y, z).
        action: (T, n + 8) float32 command in force at each frame: joint target (rad, n), gripper target [0, 1],
            TCP target xyz (m) + quaternion wxyz, base frame (see ``robot_stack.dataset`` for its meaning).
        env_state: (T, k) float32 privileged simulator state (e.g. cube top-centre xyz, m, base frame), or None.
        cameras: camera_id -> :class:`CameraData`.
        highrate: the control-rate stream, or None when not loaded.
        robot: description of the robot recorded with the episode.
        meta: the episode's sidecar (``meta/robot_stack/...json``): drops, teleop device, seed, ...
    """

    index: int
    task: str
    success: bool
    fps: int
    t_ns: np.ndarray
    timestamp: np.ndarray
    state: np.ndarray
    ee_pose: np.ndarray
    action: np.ndarray
    env_state: np.ndarray | None
    cameras: Mapping[str, CameraData]
    highrate: HighRateStream | None
    robot: RobotDescription
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def length(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def q(self) -> np.ndarray:
        """(T, n) float32 joint positions, rad."""
        return self.state[:, :-1]

    @property
    def q_target(self) -> np.ndarray:
        """(T, n) float32 commanded joint targets, rad."""
        return self.action[:, : self.q.shape[1]]

    @property
    def ee_target(self) -> np.ndarray:
        """(T, 7) float32 commanded TCP pose, xyz (m) + quaternion wxyz, base frame."""
        return self.action[:, -7:]

    def state_vector(self, k: int) -> np.ndarray:
        """(n + 4,) float32 proprio vector of frame ``k`` in the layout a policy is served
        (``RobotState.vector()``): q (rad), TCP xyz (m, base frame), gripper opening [0, 1]."""
        return np.concatenate([self.q[k], self.ee_pose[k, :3], self.state[k, -1:]]).astype(np.float32)

    def xyz_base(self, camera_id: str, k: int) -> np.ndarray:
        """(H, W, 3) float32 base-frame XYZ (m) of ``camera_id``'s depth at frame ``k``; NaN = invalid."""
        if camera_id not in self.cameras:
            raise DatasetError(f"episode {self.index} has no camera {camera_id!r}; cameras: {sorted(self.cameras)}")
        return self.cameras[camera_id].xyz_base(k)


class Dataset:
    """A recorded dataset opened for reading (read-only; never repairs — that is the writer's job).

    Args:
        root: dataset folder.

    Raises:
        DatasetError: no ``meta/info.json``, not a robot-stack dataset, or the episode markers are not contiguous.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        info_path = self.root / fmt.INFO_PATH
        if not info_path.is_file():
            raise DatasetError(
                f"{self.root} is not a dataset: {info_path} is missing. Record one with `robot-stack record`."
            )
        self.info: dict[str, Any] = json.loads(info_path.read_text(encoding="utf-8"))
        self.spec: DatasetSpec = DatasetSpec.from_info(self.info, str(info_path))
        self._markers: list[dict[str, Any]] = [
            {k: v for k, v in row.items() if not k.startswith("stats/")} for row in fmt.read_markers(self.root)
        ]
        if len(self._markers) != self.info.get("total_episodes"):
            log.warning(
                "%s: info.json lists %s episodes, %d are committed; `robot-stack record --resume` repairs the index",
                self.root,
                self.info.get("total_episodes"),
                len(self._markers),
            )

    def __len__(self) -> int:
        return len(self._markers)

    @property
    def num_episodes(self) -> int:
        return len(self._markers)

    @property
    def num_frames(self) -> int:
        return int(self._markers[-1]["dataset_to_index"]) if self._markers else 0

    @property
    def fps(self) -> int:
        return self.spec.fps

    @property
    def camera_ids(self) -> tuple[str, ...]:
        return self.spec.camera_ids

    def episode_info(self, index: int) -> Mapping[str, Any]:
        """The committed marker row of episode ``index`` (tasks, length, success, file indices)."""
        self._check(index)
        return MappingProxyType(self._markers[index])

    def successes(self) -> np.ndarray:
        """(num_episodes,) bool success labels."""
        return np.array([bool(m.get("success", False)) for m in self._markers], dtype=bool)

    def stats(self) -> dict[str, Any]:
        """``meta/stats.json``: per-feature min/max/mean/std/count over the dataset."""
        path = self.root / fmt.STATS_PATH
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def _check(self, index: int) -> None:
        if not 0 <= index < len(self._markers):
            raise DatasetError(f"episode {index} does not exist; the dataset has {len(self._markers)} episodes")

    def load_episode(
        self,
        index: int,
        *,
        rgb: bool = True,
        depth: bool = True,
        highrate: bool = True,
        cameras: tuple[str, ...] | None = None,
    ) -> Episode:
        """Load episode ``index``; ``rgb``/``depth``/``highrate`` = False skip decoding those (faster, less memory).

        Raises:
            DatasetError: the episode does not exist or a file is missing/damaged/inconsistent.
        """
        self._check(index)
        files = episode_files(self.spec, index)
        marker = self._markers[index]
        try:
            table = pq.read_table(self.root / files["data"])
            sidecar = json.loads((self.root / files["sidecar"]).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise DatasetError(f"episode {index}: cannot read its files ({exc})") from exc
        n = table.num_rows
        if n != marker["length"]:
            raise DatasetError(f"episode {index}: {n} rows in {files['data']}, marker says {marker['length']}")

        def col(name: str, dtype: Any) -> np.ndarray:
            return _column(table.column(name), dtype)

        cam_t = col("camera_time_ns", np.int64).reshape(n, len(self.spec.cameras))
        cams: dict[str, CameraData] = {}
        for ci, cam in enumerate(self.spec.camera_ids):
            if cameras is not None and cam not in cameras:
                continue
            rgb_arr = depth_arr = None
            if rgb:
                rgb_arr = read_video(self.root / files[f"video:{cam}"])
                if rgb_arr.shape[0] != n:
                    raise DatasetError(f"episode {index}: video {cam} has {rgb_arr.shape[0]} frames, expected {n}")
            if depth:
                depth_arr, _ = read_depth(self.root / files[f"depth:{cam}"])
                if depth_arr.shape[0] != n:
                    raise DatasetError(f"episode {index}: depth {cam} has {depth_arr.shape[0]} frames, expected {n}")
            try:
                cal = CameraCalibration.from_dict(sidecar["calibration"][cam], f"{files['sidecar']}:{cam}")
            except KeyError as exc:
                raise DatasetError(f"episode {index}: no calibration recorded for camera {cam!r}") from exc
            cams[cam] = CameraData(
                cam,
                _ro(cam_t[:, ci]),
                None if rgb_arr is None else _ro(rgb_arr),
                None if depth_arr is None else _ro(depth_arr),
                float(self.spec.depth_scale),
                cal,
            )
        hr = None
        if highrate:
            ht = pq.read_table(self.root / files["highrate"])

            def hcol(name: str) -> np.ndarray:
                return _column(ht.column(name), np.float64)

            hr = HighRateStream(
                _ro(ht.column("t_ns").to_numpy().astype(np.int64)),
                hcol("q"),
                hcol("dq"),
                hcol("q_cmd"),
                hcol("gripper"),
                hcol("gripper_cmd"),
            )
        env = col("observation.environment_state", np.float32) if self.spec.env_state_names else None
        return Episode(
            index=index,
            task=str(marker["tasks"][0]),
            success=bool(marker.get("success", False)),
            fps=self.spec.fps,
            t_ns=col("host_time_ns", np.int64),
            timestamp=col("timestamp", np.float32),
            state=col("observation.state", np.float32),
            ee_pose=col("observation.ee_pose", np.float32),
            action=col("action", np.float32),
            env_state=env,
            cameras=MappingProxyType(cams),
            highrate=hr,
            robot=RobotDescription.from_json(sidecar["robot"]),
            meta=MappingProxyType(sidecar),
        )

    def __iter__(self) -> Iterator[Episode]:
        for i in range(len(self)):
            yield self.load_episode(i)

    def video_path(self, index: int, camera_id: str) -> Path:
        """Path of the MP4 of ``camera_id`` in episode ``index``."""
        self._check(index)
        return self.root / fmt.episode_file(fmt.VIDEO_PATH, index, video_key=camera_key(camera_id))


def load_dataset(root: str | os.PathLike[str]) -> Dataset:
    """Open a recorded dataset for reading (see :class:`Dataset`)."""
    return Dataset(root)
