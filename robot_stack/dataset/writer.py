"""Writing a dataset: streaming per-episode writers and the atomic commit / repair of the dataset index.

Crash safety
    An episode is written into ``<root>/.tmp/episode-<uuid>/`` with the same relative paths it will have when
    committed. :meth:`DatasetWriter.commit` fsyncs every file (and folder), renames the files into place with the
    episode's marker ``meta/episodes/chunk-CCC/file-FFF.parquet`` **last**, fsyncs the folders, and only then
    rewrites the derived index (``meta/info.json``, ``meta/stats.json``, ``meta/tasks.parquet``, each written to a
    temporary name, fsynced and renamed). The marker is the commit point: an episode with a marker is complete;
    per-episode files without a marker are the remains of an interrupted commit.

    :meth:`DatasetWriter.repair` (run on every open, and by ``robot-stack record --resume``) deletes ``.tmp/``
    (half-written episodes), deletes orphaned per-episode files of uncommitted episode numbers, checks that the
    markers are contiguous and complete, and rewrites the derived index from the markers. A ``kill -9`` at any
    moment therefore loses at most the episode in progress.

Threads
    :class:`EpisodeWriter`'s per-camera streams (:meth:`EpisodeWriter.write_rgb`, :meth:`EpisodeWriter.write_depth`)
    may be fed from different threads, one thread per stream; :meth:`EpisodeWriter.add_row` and
    :meth:`EpisodeWriter.add_joint_sample` from any one thread. :class:`~robot_stack.dataset.recorder.Recorder`
    arranges exactly that.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from robot_stack.calibration.store import CameraCalibration
from robot_stack.dataset import format as fmt
from robot_stack.dataset.format import DatasetSpec, RobotDescription, camera_key, episode_files
from robot_stack.errors import DatasetError
from robot_stack.types import CameraModel, Pose, RobotState

log = logging.getLogger("robot_stack.dataset")

__all__ = [
    "CommittedEpisode",
    "DatasetWriter",
    "EpisodeWriter",
    "FrameRow",
    "JointSample",
    "RepairReport",
    "VideoConfig",
    "calibration_at",
    "fsync_dir",
]

_IMAGE_STATS_EVERY = 5  # per-channel image statistics use every 5th frame (LeRobot samples too)


# ------------------------------------------------------------------------------------------ durable files


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames/creations inside it survive a power cut (no-op where unsupported)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def _atomic_parquet(path: Path, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    _atomic_write(path, sink.getvalue().to_pybytes())


# ------------------------------------------------------------------------------------------------ values


@dataclass(frozen=True)
class VideoConfig:
    """How RGB streams are encoded (PyAV / FFmpeg).

    Attributes:
        codec: FFmpeg encoder; ``libx264`` (H.264, what every LeRobot video backend decodes) by default. If the
            FFmpeg inside the ``av`` wheel lacks it, ``h264`` then ``mpeg4`` are used (logged).
        crf: constant rate factor (lower = better; 18-23 is visually lossless-ish for H.264).
        preset: x264 speed preset (``ultrafast`` … ``veryslow``).
        gop: keyframe interval in frames (small = fast random access for training loaders).
        pix_fmt: pixel format of the stream (``yuv420p`` plays everywhere).
    """

    codec: str = "libx264"
    crf: int = 20
    preset: str = "veryfast"
    gop: int = 10
    pix_fmt: str = "yuv420p"

    def resolved_codec(self) -> str:
        for name in (self.codec, "h264", "mpeg4"):
            if name in av.codecs_available:
                if name != self.codec:
                    log.warning("video codec %s is not in this FFmpeg build; using %s", self.codec, name)
                return name
        raise DatasetError(f"no usable video encoder ({self.codec}, h264, mpeg4) in PyAV's FFmpeg; reinstall `av`")


@dataclass(frozen=True)
class FrameRow:
    """The low-dimensional part of one recorded frame (all in the robot base frame, SI units).

    Attributes:
        host_time_ns: host monotonic time the frame describes (the robot state read), ns.
        camera_time_ns: (n_cameras,) int64 capture time of each camera's image, ns, spec camera order.
        state: the robot state at ``host_time_ns``.
        q_target: (n,) rad, joint position target of the command in force at that time (IK of the teleop/policy
            TCP target, or the leader arm's joints).
        gripper_target: commanded gripper opening in [0, 1].
        ee_target: commanded TCP pose ``T_base_tcp`` (for joint-space teleop: FK of ``q_target``).
        env_state: (k,) float privileged simulator state (``spec.env_state_names``), or None.
    """

    host_time_ns: int
    camera_time_ns: tuple[int, ...]
    state: RobotState
    q_target: np.ndarray
    gripper_target: float
    ee_target: Pose
    env_state: np.ndarray | None = None


@dataclass(frozen=True)
class JointSample:
    """One control-rate sample (``highrate/``): measured and commanded joints.

    Attributes:
        t_ns: host monotonic time, ns.
        q, dq: (n,) measured joint positions (rad) and velocities (rad/s).
        q_cmd: (n,) joint set-point sent to the robot at this tick (after the safety filter), rad.
        gripper: measured opening [0, 1]; gripper_cmd: commanded opening [0, 1] (NaN = none).
    """

    t_ns: int
    q: np.ndarray
    dq: np.ndarray
    q_cmd: np.ndarray
    gripper: float
    gripper_cmd: float = float("nan")


@dataclass(frozen=True)
class CommittedEpisode:
    """What :meth:`DatasetWriter.commit` made durable.

    Attributes:
        episode_index: index of the episode in the dataset.
        length: frames.
        task: instruction text.
        success: the episode's success label.
        dropped_frames: frames the recorder could not take (queues full), counted, not written.
        dropped_joint_samples: control-rate samples dropped (buffer full).
        commit_s: seconds the commit (fsync + renames + index) took.
    """

    episode_index: int
    length: int
    task: str
    success: bool
    dropped_frames: int = 0
    dropped_joint_samples: int = 0
    commit_s: float = 0.0


@dataclass(frozen=True)
class RepairReport:
    """What :meth:`DatasetWriter.repair` found and did.

    Attributes:
        episodes, frames: committed totals after the repair.
        removed_tmp: half-written episode folders deleted from ``.tmp/``.
        removed_orphans: per-episode files of uncommitted episodes deleted (relative paths).
        index_rewritten: whether ``info.json``/``stats.json``/``tasks.parquet`` had to be rewritten.
    """

    episodes: int
    frames: int
    removed_tmp: tuple[str, ...] = ()
    removed_orphans: tuple[str, ...] = ()
    index_rewritten: bool = False


def calibration_at(cal: CameraCalibration, width: int, height: int) -> CameraCalibration:
    """``cal`` with its intrinsics at ``width`` x ``height`` (same aspect ratio; calibrations may be at another
    resolution than the recorded stream)."""
    import dataclasses

    camera: CameraModel = cal.intrinsics_at(width, height)
    return cal if camera is cal.camera else dataclasses.replace(cal, camera=camera)


# --------------------------------------------------------------------------------------- stream writers


class _VideoStream:
    """One camera's RGB frames -> MP4 (PTS = frame index, time base 1/fps), plus per-channel statistics."""

    def __init__(self, path: Path, width: int, height: int, fps: int, config: VideoConfig) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.codec = config.resolved_codec()
        self._container = av.open(str(path), mode="w")
        stream = self._container.add_stream(self.codec, rate=fps)
        stream.width = width
        stream.height = height
        stream.pix_fmt = config.pix_fmt
        opts = {"g": str(config.gop)}
        if self.codec == "libx264":
            # zerolatency: no lookahead / B-frames, so each frame is encoded when it arrives (steady per-frame
            # cost on the recording thread, nothing left to flush at the end of an episode)
            opts.update({"crf": str(config.crf), "preset": config.preset, "tune": "zerolatency"})
        stream.options = opts
        self._stream = stream
        self.shape = (height, width, 3)
        self.count = 0
        self.encode_s: list[float] = []
        self._sum = np.zeros(3)
        self._sumsq = np.zeros(3)
        self._min = np.full(3, np.inf)
        self._max = np.full(3, -np.inf)
        self._npix = 0

    def add(self, frame_index: int, rgb: np.ndarray) -> None:
        if frame_index != self.count:
            raise DatasetError(
                f"{self.path}: frame {frame_index} arrived, expected {self.count} (streams out of order)"
            )
        if rgb.shape != self.shape or rgb.dtype != np.uint8:
            raise DatasetError(f"{self.path}: expected {self.shape} uint8 RGB, got {rgb.shape} {rgb.dtype}")
        t0 = time.perf_counter()
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        vf.pts = frame_index
        for packet in self._stream.encode(vf):
            self._container.mux(packet)
        self.encode_s.append(time.perf_counter() - t0)
        if frame_index % _IMAGE_STATS_EVERY == 0:
            px = rgb[::4, ::4].reshape(-1, 3).astype(np.float64) / 255.0
            self._sum += px.sum(0)
            self._sumsq += (px * px).sum(0)
            self._min = np.minimum(self._min, px.min(0))
            self._max = np.maximum(self._max, px.max(0))
            self._npix += px.shape[0]
        self.count += 1

    def close(self) -> None:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception as exc:  # an aborted stream may be unfinishable; its file is deleted anyway
            log.debug("closing aborted video %s: %s", self.path, exc)

    def stats(self) -> dict[str, Any]:
        n = max(self._npix, 1)
        mean = self._sum / n
        std = np.sqrt(np.maximum(self._sumsq / n - mean * mean, 0.0))

        def c11(v: np.ndarray) -> list[list[list[float]]]:
            return [[[float(x)]] for x in v]

        return {"min": c11(self._min), "max": c11(self._max), "mean": c11(mean), "std": c11(std), "count": [self.count]}


class _DepthStream:
    """One camera's uint16 depth -> parquet (``frame_index``, ``t_capture_ns``, raw little-endian bytes, zstd)."""

    ROW_GROUP = 8

    def __init__(self, path: Path, width: int, height: int, depth_scale: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.shape = (height, width)
        schema = pa.schema(
            [("frame_index", pa.int64()), ("t_capture_ns", pa.int64()), ("depth", pa.binary())],
            metadata={
                b"robot_stack.depth": json.dumps(
                    {"height": height, "width": width, "dtype": "<u2", "depth_scale": depth_scale, "unit": "m/unit"}
                ).encode()
            },
        )
        self._writer = pq.ParquetWriter(
            str(path), schema, compression="zstd", compression_level=1, use_dictionary=False, write_statistics=False
        )
        self._schema = schema
        self._pending: list[tuple[int, int, bytes]] = []
        self.count = 0
        self.encode_s: list[float] = []

    def add(self, frame_index: int, t_capture_ns: int, depth: np.ndarray) -> None:
        if frame_index != self.count:
            raise DatasetError(
                f"{self.path}: frame {frame_index} arrived, expected {self.count} (streams out of order)"
            )
        if depth.shape != self.shape or depth.dtype != np.uint16:
            raise DatasetError(f"{self.path}: expected {self.shape} uint16 depth, got {depth.shape} {depth.dtype}")
        self._pending.append((frame_index, int(t_capture_ns), depth.astype("<u2", copy=False).tobytes()))
        self.count += 1
        if len(self._pending) >= self.ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        t0 = time.perf_counter()
        idx, stamps, blobs = zip(*self._pending, strict=True)
        table = pa.Table.from_arrays(
            [pa.array(idx, pa.int64()), pa.array(stamps, pa.int64()), pa.array(blobs, pa.binary())], schema=self._schema
        )
        self._writer.write_table(table)
        dt = (time.perf_counter() - t0) / len(self._pending)
        self.encode_s.extend([dt] * len(self._pending))
        self._pending.clear()

    def close(self) -> None:
        self._flush()
        self._writer.close()

    def abort(self) -> None:
        self._pending.clear()
        try:
            self._writer.close()
        except Exception as exc:
            log.debug("closing aborted depth stream %s: %s", self.path, exc)


# -------------------------------------------------------------------------------------------- episode


def _lowdim_stats(values: np.ndarray) -> dict[str, Any]:
    v = np.asarray(values, dtype=np.float64).reshape(values.shape[0], -1)
    return {
        "min": v.min(0).tolist(),
        "max": v.max(0).tolist(),
        "mean": v.mean(0).tolist(),
        "std": v.std(0).tolist(),
        "count": [int(v.shape[0])],
    }


def _pose_vec(pose: Pose) -> np.ndarray:
    return np.concatenate([pose.translation, pose.quat_wxyz()])


class EpisodeWriter:
    """Streams one episode into its temporary folder. Made by :meth:`DatasetWriter.begin_episode`.

    Attributes:
        episode_index: the index this episode gets if committed (episodes are committed one at a time).
        task, task_index: instruction and its index in ``meta/tasks.parquet``.
        from_index: global index of the episode's first frame.
    """

    def __init__(
        self,
        dataset: DatasetWriter,
        episode_index: int,
        task: str,
        task_index: int,
        from_index: int,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        self.dataset = dataset
        self.spec = dataset.spec
        self.episode_index = episode_index
        self.task = task
        self.task_index = task_index
        self.from_index = from_index
        self.extra = dict(extra or {})
        self.tmp = dataset.root / fmt.TMP_DIR / f"episode-{uuid.uuid4().hex}"
        self.tmp.mkdir(parents=True)
        self.files = episode_files(self.spec, episode_index)
        self._video: dict[str, _VideoStream] = {}
        self._depth: dict[str, _DepthStream] = {}
        for cam in self.spec.cameras:
            self._video[cam.camera_id] = _VideoStream(
                self.tmp / self.files[f"video:{cam.camera_id}"], cam.width, cam.height, self.spec.fps, dataset.video
            )
            self._depth[cam.camera_id] = _DepthStream(
                self.tmp / self.files[f"depth:{cam.camera_id}"], cam.width, cam.height, self.spec.depth_scale
            )
        self._rows: list[FrameRow] = []
        self._joints: list[JointSample] = []
        self.closed = False

    @property
    def num_frames(self) -> int:
        return len(self._rows)

    def write_rgb(self, camera_id: str, frame_index: int, rgb: np.ndarray) -> None:
        """Encode frame ``frame_index`` (H, W, 3) uint8 RGB of ``camera_id`` (frames in order, one thread/stream)."""
        self._video[camera_id].add(frame_index, rgb)

    def write_depth(self, camera_id: str, frame_index: int, t_capture_ns: int, depth: np.ndarray) -> None:
        """Append frame ``frame_index`` (H, W) uint16 depth of ``camera_id`` (in order, one thread per stream)."""
        self._depth[camera_id].add(frame_index, t_capture_ns, depth)

    def add_row(self, row: FrameRow) -> int:
        """Append the low-dimensional part of the next frame; return its frame index."""
        self._rows.append(row)
        return len(self._rows) - 1

    def add_joint_sample(self, sample: JointSample) -> None:
        self._joints.append(sample)

    def encode_times_s(self) -> dict[str, list[float]]:
        """Per-stream encode times so far (seconds per frame), keyed ``rgb:<cam>`` / ``depth:<cam>``."""
        out = {f"rgb:{k}": list(v.encode_s) for k, v in self._video.items()}
        out.update({f"depth:{k}": list(v.encode_s) for k, v in self._depth.items()})
        return out

    # ---------------------------------------------------------------------------------------------- finish
    def _frame_table(self) -> tuple[pa.Table, dict[str, Any]]:
        spec, rows = self.spec, self._rows
        n = len(rows)
        state = np.array([[*r.state.q, r.state.gripper] for r in rows], dtype=np.float32)
        ee = np.array([_pose_vec(r.state.ee_pose) for r in rows], dtype=np.float32)
        action = np.array([[*r.q_target, r.gripper_target, *_pose_vec(r.ee_target)] for r in rows], dtype=np.float32)
        nj = len(spec.joint_names)
        if state.shape != (n, nj + 1) or action.shape != (n, nj + 8):
            raise DatasetError(
                f"episode {self.episode_index}: state/action widths {state.shape}/{action.shape} do not match the "
                f"{nj} joints of the dataset"
            )
        cols: dict[str, Any] = {"observation.state": state, "observation.ee_pose": ee, "action": action}
        if spec.env_state_names:
            env = np.array([np.asarray(r.env_state, dtype=np.float32) for r in rows], dtype=np.float32)
            if env.shape != (n, len(spec.env_state_names)):
                raise DatasetError(f"env_state: expected ({n}, {len(spec.env_state_names)}), got {env.shape}")
            cols["observation.environment_state"] = env
        cols["host_time_ns"] = np.array([r.host_time_ns for r in rows], dtype=np.int64)
        cam_t = np.array([r.camera_time_ns for r in rows], dtype=np.int64).reshape(n, len(spec.cameras))
        cols["camera_time_ns"] = cam_t
        frame_index = np.arange(n, dtype=np.int64)
        cols["timestamp"] = (frame_index / spec.fps).astype(np.float32)
        cols["frame_index"] = frame_index
        cols["episode_index"] = np.full(n, self.episode_index, dtype=np.int64)
        cols["index"] = self.from_index + frame_index
        cols["task_index"] = np.full(n, self.task_index, dtype=np.int64)
        schema = spec.frame_schema()
        arrays = []
        for f in schema:
            v = cols[f.name]
            if pa.types.is_fixed_size_list(f.type):
                arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), v.shape[1]))
            else:
                arrays.append(pa.array(np.asarray(v).reshape(-1)))
        table = pa.Table.from_arrays(arrays, schema=schema)
        stats = {k: _lowdim_stats(cols[k]) for k in cols if k not in ("host_time_ns", "camera_time_ns")}
        return table, stats

    def _joint_table(self) -> pa.Table:
        nj = len(self.spec.joint_names)
        js = self._joints

        def mat(attr: str) -> pa.Array:
            v = np.array([getattr(s, attr) for s in js], dtype=np.float64).reshape(len(js), nj)
            return pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), nj)

        return pa.table(
            {
                "t_ns": pa.array([s.t_ns for s in js], pa.int64()),
                "q": mat("q"),
                "dq": mat("dq"),
                "q_cmd": mat("q_cmd"),
                "gripper": pa.array([s.gripper for s in js], pa.float64()),
                "gripper_cmd": pa.array([s.gripper_cmd for s in js], pa.float64()),
            }
        )

    def finish(self, success: bool, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Close every stream and write the low-dim tables, sidecar and marker into the temp folder (fsynced).

        Returns the marker row. Raises DatasetError when the episode has no frames or its streams disagree.
        """
        if self.closed:
            raise DatasetError(f"episode {self.episode_index} was already finished or aborted")
        self.closed = True
        n = len(self._rows)
        for s in (*self._video.values(), *self._depth.values()):
            s.close()
        if n == 0:
            raise DatasetError("the episode has no frames; discard it instead of committing it")
        counts = {f"rgb:{k}": v.count for k, v in self._video.items()} | {
            f"depth:{k}": v.count for k, v in self._depth.items()
        }
        if any(c != n for c in counts.values()):
            raise DatasetError(f"episode {self.episode_index}: streams disagree with the {n} frame rows: {counts}")
        table, stats = self._frame_table()
        (self.tmp / self.files["data"]).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, self.tmp / self.files["data"])
        (self.tmp / self.files["highrate"]).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(self._joint_table(), self.tmp / self.files["highrate"])
        for cam, vs in self._video.items():
            stats[camera_key(cam)] = vs.stats()
        ds = self.dataset
        sidecar = {
            "episode_index": self.episode_index,
            "task": self.task,
            "success": bool(success),
            "length": n,
            "host_time_ns": {"start": self._rows[0].host_time_ns, "stop": self._rows[-1].host_time_ns},
            "robot": ds.robot.to_json(),
            "calibration": {cam: ds.calibrations[cam].to_dict() for cam in self.spec.camera_ids},
            "cameras": {
                c.camera_id: {
                    "width": c.width,
                    "height": c.height,
                    "depth_scale": self.spec.depth_scale,
                    "video_codec": self._video[c.camera_id].codec,
                    "pix_fmt": ds.video.pix_fmt,
                }
                for c in self.spec.cameras
            },
            "highrate_samples": len(self._joints),
            **self.extra,
            **dict(extra or {}),
        }
        sc = self.tmp / self.files["sidecar"]
        sc.parent.mkdir(parents=True, exist_ok=True)
        sc.write_text(json.dumps(sidecar, indent=1, default=_json_default), encoding="utf-8")
        marker = self._marker_row(n, success, stats)
        mp = self.tmp / self.files["marker"]
        mp.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist([marker], schema=ds.marker_schema()), mp)
        for path in self.tmp.rglob("*"):
            if path.is_file():
                _fsync_file(path)
        for path in sorted({p.parent for p in self.tmp.rglob("*")}, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(path)
        return marker

    def _marker_row(self, n: int, success: bool, stats: Mapping[str, Any]) -> dict[str, Any]:
        i = self.episode_index
        chunk, file = i // fmt.CHUNKS_SIZE, i % fmt.CHUNKS_SIZE
        row: dict[str, Any] = {
            "episode_index": i,
            "tasks": [self.task],
            "length": n,
            "data/chunk_index": chunk,
            "data/file_index": file,
            "dataset_from_index": self.from_index,
            "dataset_to_index": self.from_index + n,
        }
        for cam in self.spec.camera_ids:
            key = camera_key(cam)
            row[f"videos/{key}/chunk_index"] = chunk
            row[f"videos/{key}/file_index"] = file
            row[f"videos/{key}/from_timestamp"] = 0.0
            row[f"videos/{key}/to_timestamp"] = n / self.spec.fps
        row["meta/episodes/chunk_index"] = chunk
        row["meta/episodes/file_index"] = file
        row["success"] = bool(success)
        for feat, st in stats.items():
            for name, value in st.items():
                row[f"stats/{feat}/{name}"] = value
        return row

    def abort(self) -> None:
        """Close the streams and delete the temp folder (nothing of this episode reaches the dataset)."""
        if not self.closed:
            self.closed = True
            for s in (*self._video.values(), *self._depth.values()):
                s.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -------------------------------------------------------------------------------------------- dataset


class DatasetWriter:
    """A dataset folder opened for appending episodes, one at a time.

    Opening repairs the folder (see module doc). A new folder needs ``spec``; an existing one keeps its own spec
    (passing a different one raises).

    Args:
        root: dataset folder.
        spec: what each episode contains (required for a new dataset).
        calibrations: {camera_id: calibration} snapshotted into every episode; intrinsics are rescaled to the
            recorded resolution (:func:`calibration_at`). Every camera of the spec needs one.
        robot: robot description snapshotted into every episode (default: the Panda).
        video: RGB encoding settings.

    Raises:
        DatasetError: the folder is not a dataset of this spec, or its committed episodes are inconsistent.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        spec: DatasetSpec | None = None,
        calibrations: Mapping[str, CameraCalibration] | None = None,
        robot: RobotDescription | None = None,
        video: VideoConfig | None = None,
    ) -> None:
        self.root = Path(root)
        info_path = self.root / fmt.INFO_PATH
        stored: DatasetSpec | None = None
        if info_path.is_file():
            try:
                stored = DatasetSpec.from_info(json.loads(info_path.read_text(encoding="utf-8")), str(info_path))
            except (ValueError, DatasetError) as exc:
                if spec is None:
                    raise DatasetError(
                        f"{info_path} is damaged ({exc}); reopen with the dataset's DatasetSpec to rebuild the index"
                    ) from exc
                log.warning(
                    "%s is damaged (%s); rebuilding it from the given layout and the episode markers", info_path, exc
                )
        if stored is not None:
            if spec is not None and spec != stored:
                raise DatasetError(
                    f"{self.root} holds a dataset with another layout ({stored}) than requested ({spec}); record "
                    "into a new folder or pass the stored layout"
                )
            spec = stored
        elif info_path.is_file():
            pass  # damaged info.json, rebuilt from ``spec`` by repair()
        elif spec is None:
            raise DatasetError(
                f"{self.root} is not a dataset yet (no {fmt.INFO_PATH}); give a DatasetSpec to create it"
            )
        elif self.root.exists() and any(p.name != fmt.TMP_DIR for p in self.root.iterdir()):
            raise DatasetError(f"{self.root} exists, is not empty and is not a dataset; choose a new folder")
        self.spec: DatasetSpec = spec
        self.robot = robot if robot is not None else fmt.robot_description(spec.robot_type)
        self.video = video if video is not None else VideoConfig()
        cals = dict(calibrations or {})
        missing = [c for c in spec.camera_ids if c not in cals]
        if missing:
            raise DatasetError(
                f"no calibration given for camera(s) {missing}; every recorded camera needs one so that depth maps "
                "into the base frame (load them with robot_stack.calibration.store.load_calibration)"
            )
        self.calibrations = {c.camera_id: calibration_at(cals[c.camera_id], c.width, c.height) for c in spec.cameras}
        self._lock = threading.Lock()
        self._active: EpisodeWriter | None = None
        self._markers: list[dict[str, Any]] = []
        self.root.mkdir(parents=True, exist_ok=True)
        self.last_repair = self.repair()

    # -------------------------------------------------------------------------------------------- index
    @property
    def num_episodes(self) -> int:
        return len(self._markers)

    @property
    def num_frames(self) -> int:
        return int(self._markers[-1]["dataset_to_index"]) if self._markers else 0

    def tasks(self) -> list[str]:
        """Task strings in ``task_index`` order (order of first appearance over the committed episodes)."""
        out: list[str] = []
        for m in self._markers:
            for t in m["tasks"]:
                if t not in out:
                    out.append(t)
        return out

    def marker_schema(self) -> pa.Schema:
        f64l = pa.list_(pa.float64())
        fields: list[tuple[str, pa.DataType]] = [
            ("episode_index", pa.int64()),
            ("tasks", pa.list_(pa.string())),
            ("length", pa.int64()),
            ("data/chunk_index", pa.int64()),
            ("data/file_index", pa.int64()),
            ("dataset_from_index", pa.int64()),
            ("dataset_to_index", pa.int64()),
        ]
        for cam in self.spec.camera_ids:
            key = camera_key(cam)
            fields += [
                (f"videos/{key}/chunk_index", pa.int64()),
                (f"videos/{key}/file_index", pa.int64()),
                (f"videos/{key}/from_timestamp", pa.float64()),
                (f"videos/{key}/to_timestamp", pa.float64()),
            ]
        fields += [("meta/episodes/chunk_index", pa.int64()), ("meta/episodes/file_index", pa.int64())]
        fields.append(("success", pa.bool_()))
        for feat, ft in self.spec.features().items():
            if feat in ("host_time_ns", "camera_time_ns"):
                continue
            kind = pa.list_(pa.list_(f64l)) if ft["dtype"] == "video" else f64l
            for stat in ("min", "max", "mean", "std"):
                fields.append((f"stats/{feat}/{stat}", kind))
            fields.append((f"stats/{feat}/count", pa.list_(pa.int64())))
        return pa.schema(fields)

    def repair(self) -> RepairReport:
        """Remove half-written and orphaned episode files; rebuild the derived index from the markers."""
        with self._lock:
            if self._active is not None:
                raise DatasetError("cannot repair while an episode is being recorded; stop or discard it first")
            removed_tmp = []
            tmp = self.root / fmt.TMP_DIR
            if tmp.is_dir():
                for child in sorted(tmp.iterdir()):
                    removed_tmp.append(child.name)
                    shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
            for stray in self.root.rglob(".*.tmp"):  # an interrupted atomic index write
                stray.unlink(missing_ok=True)
            markers = fmt.read_markers(self.root)
            n = len(markers)
            orphans = []
            for top in fmt.PER_EPISODE_DIRS:
                base = self.root / top
                if not base.is_dir():
                    continue
                for path in base.rglob("file-*"):
                    ep = fmt.episode_of_path(path)
                    if path.is_file() and ep is not None and ep >= n:
                        orphans.append(path.relative_to(self.root).as_posix())
                        path.unlink()
            for i in range(n):
                for role, rel in episode_files(self.spec, i).items():
                    if not (self.root / rel).is_file():
                        raise DatasetError(
                            f"committed episode {i} lacks its {role} file {rel}; the dataset was damaged outside "
                            "robot-stack. Restore the file, or delete episodes >= {i} (their meta/episodes markers)"
                        )
            self._markers = markers
            rewritten = self._write_index()
        if removed_tmp or orphans:
            log.warning(
                "dataset %s repaired: removed %d half-written episode(s) and %d orphaned file(s) %s",
                self.root,
                len(removed_tmp),
                len(orphans),
                orphans,
            )
        return RepairReport(n, self.num_frames, tuple(removed_tmp), tuple(orphans), rewritten)

    def _info(self) -> dict[str, Any]:
        features = self.spec.features()
        for cam in self.spec.cameras:
            features[camera_key(cam.camera_id)]["info"] = {
                "video.height": cam.height,
                "video.width": cam.width,
                "video.codec": "h264" if self.video.resolved_codec() in ("libx264", "h264") else "mpeg4",
                "video.pix_fmt": self.video.pix_fmt,
                "video.is_depth_map": False,
                "video.fps": self.spec.fps,
                "video.channels": 3,
                "has_audio": False,
            }
        n = len(self._markers)
        return {
            "codebase_version": fmt.CODEBASE_VERSION,
            "robot_type": self.spec.robot_type,
            "total_episodes": n,
            "total_frames": self.num_frames,
            "total_tasks": len(self.tasks()),
            "chunks_size": fmt.CHUNKS_SIZE,
            "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 200,
            "fps": self.spec.fps,
            "splits": {"train": f"0:{n}"},
            "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
            "features": features,
            "robot_stack": self.spec.to_json(),
        }

    def _stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if not self._markers:
            return out
        feats = [
            k[len("stats/") : -len("/count")]
            for k in self._markers[0]
            if k.startswith("stats/") and k.endswith("/count")
        ]
        for feat in feats:
            counts = np.array([m[f"stats/{feat}/count"][0] for m in self._markers], dtype=np.float64)
            means = np.array([m[f"stats/{feat}/mean"] for m in self._markers], dtype=np.float64)
            stds = np.array([m[f"stats/{feat}/std"] for m in self._markers], dtype=np.float64)
            w = (counts / counts.sum()).reshape((-1,) + (1,) * (means.ndim - 1))
            mean = (w * means).sum(0)
            var = (w * (stds**2 + (means - mean) ** 2)).sum(0)
            out[feat] = {
                "min": np.min([m[f"stats/{feat}/min"] for m in self._markers], axis=0).tolist(),
                "max": np.max([m[f"stats/{feat}/max"] for m in self._markers], axis=0).tolist(),
                "mean": mean.tolist(),
                "std": np.sqrt(var).tolist(),
                "count": [int(counts.sum())],
            }
        return out

    def _tasks_table(self) -> pa.Table:
        tasks = self.tasks()
        pandas_meta = {
            "index_columns": ["__index_level_0__"],
            "column_indexes": [],
            "columns": [
                {
                    "name": "task_index",
                    "field_name": "task_index",
                    "pandas_type": "int64",
                    "numpy_type": "int64",
                    "metadata": None,
                },
                {
                    "name": None,
                    "field_name": "__index_level_0__",
                    "pandas_type": "unicode",
                    "numpy_type": "object",
                    "metadata": None,
                },
            ],
            "creator": {"library": "pyarrow", "version": pa.__version__},
            "pandas_version": "2.2.3",
        }
        schema = pa.schema(
            [("task_index", pa.int64()), ("__index_level_0__", pa.string())],
            metadata={b"pandas": json.dumps(pandas_meta).encode()},
        )
        return pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks}, schema=schema)

    def _write_index(self) -> bool:
        """Rewrite info/stats/tasks from the markers where they differ; return whether anything was written."""
        changed = False
        info_bytes = json.dumps(self._info(), indent=2).encode()
        stats_bytes = json.dumps(self._stats(), indent=2).encode()
        for rel, data in ((fmt.INFO_PATH, info_bytes), (fmt.STATS_PATH, stats_bytes)):
            path = self.root / rel
            if not path.is_file() or path.read_bytes() != data:
                _atomic_write(path, data)
                changed = True
        tasks_path = self.root / fmt.TASKS_PATH
        table = self._tasks_table()
        if not tasks_path.is_file() or not pq.read_table(tasks_path).equals(table):
            _atomic_parquet(tasks_path, table)
            changed = True
        return changed

    # ----------------------------------------------------------------------------------------- episodes
    def begin_episode(self, task: str, extra: Mapping[str, Any] | None = None) -> EpisodeWriter:
        """Start streaming the next episode into a temp folder (one episode at a time)."""
        if not isinstance(task, str) or not task.strip():
            raise DatasetError(f"task: expected a non-empty instruction string, got {task!r}")
        with self._lock:
            if self._active is not None:
                raise DatasetError("an episode is already being recorded; commit or abort it first")
            tasks = self.tasks()
            task_index = tasks.index(task) if task in tasks else len(tasks)
            ep = EpisodeWriter(self, self.num_episodes, task, task_index, self.num_frames, extra)
            self._active = ep
            return ep

    def abort(self, episode: EpisodeWriter) -> None:
        """Throw the episode away (its temp folder is deleted)."""
        with self._lock:
            if self._active is episode:
                self._active = None
        episode.abort()

    def commit(self, episode: EpisodeWriter, success: bool, extra: Mapping[str, Any] | None = None) -> CommittedEpisode:
        """Finish the episode and make it durable (see module doc: files renamed into place, marker last).

        Raises:
            DatasetError: the episode is not the active one, has no frames, or its streams disagree (it is then
                aborted: nothing of it remains).
        """
        t0 = time.perf_counter()
        with self._lock:
            if self._active is not episode:
                raise DatasetError("commit: this episode is not the one being recorded (already committed/aborted?)")
            try:
                marker = episode.finish(success, extra)
            except BaseException:
                self._active = None
                episode.abort()
                raise
            dirs = set()
            for role, rel in episode.files.items():
                if role == "marker":
                    continue
                dst = self.root / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.replace(episode.tmp / rel, dst)
                dirs.add(dst.parent)
            for d in dirs:  # every file durable in place before the marker says "committed"
                fsync_dir(d)
            marker_dst = self.root / episode.files["marker"]
            marker_dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(episode.tmp / episode.files["marker"], marker_dst)
            fsync_dir(marker_dst.parent)
            self._markers.append(marker)
            self._active = None
            shutil.rmtree(episode.tmp, ignore_errors=True)
            self._write_index()
        info = {**episode.extra, **dict(extra or {})}
        return CommittedEpisode(
            episode.episode_index,
            int(marker["length"]),
            episode.task,
            bool(success),
            int(info.get("dropped_frames", 0)),
            int(info.get("dropped_joint_samples", 0)),
            time.perf_counter() - t0,
        )
