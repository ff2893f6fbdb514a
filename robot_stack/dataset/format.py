"""The on-disk layout of a robot-stack dataset: LeRobot v3.0 plus depth, calibration and a control-rate stream.

See :mod:`robot_stack.dataset` for the full description. This module holds the names, paths, feature schema and
the layout validator (pyarrow only); it writes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from robot_stack.errors import DatasetError

__all__ = [
    "ACTION_NAMES",
    "CHUNKS_SIZE",
    "CODEBASE_VERSION",
    "EE_POSE_NAMES",
    "FORMAT_VERSION",
    "STATE_NAMES",
    "CameraStream",
    "DatasetSpec",
    "camera_key",
    "episode_file",
    "episode_files",
    "RobotDescription",
    "episode_of_path",
    "panda_description",
    "robot_description",
    "validate_layout",
]

#: LeRobot dataset layout this writer produces (what lerobot 0.4.x's ``LeRobotDataset`` reads).
CODEBASE_VERSION = "v3.0"
#: Version of the robot-stack additions (depth, calibration, control-rate stream, ``meta/robot_stack``).
FORMAT_VERSION = 1
#: Files per ``chunk-XXX`` folder (LeRobot's default); episode ``i`` lives in chunk ``i // 1000``, file ``i % 1000``.
CHUNKS_SIZE = 1000

_PATTERN = "chunk-{chunk:03d}/file-{file:03d}"
DATA_PATH = "data/" + _PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + _PATTERN + ".mp4"
DEPTH_PATH = "depth/{video_key}/" + _PATTERN + ".parquet"
HIGHRATE_PATH = "highrate/" + _PATTERN + ".parquet"
SIDECAR_PATH = "meta/robot_stack/" + _PATTERN + ".json"
MARKER_PATH = "meta/episodes/" + _PATTERN + ".parquet"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
TMP_DIR = ".tmp"

#: observation.state: arm joint positions (rad, robot joint order) then the gripper opening in [0, 1].
STATE_NAMES: tuple[str, ...] = (*(f"panda_joint{i}" for i in range(1, 8)), "gripper")
#: observation.ee_pose / ee target: TCP position (m) and orientation quaternion (w, x, y, z), robot base frame.
EE_POSE_NAMES: tuple[str, ...] = ("x", "y", "z", "qw", "qx", "qy", "qz")
#: action: joint target q (rad), gripper target [0, 1], TCP target xyz (m) + quat wxyz, base frame.
ACTION_NAMES: tuple[str, ...] = (
    *(f"q_target.panda_joint{i}" for i in range(1, 8)),
    "gripper_target",
    *(f"ee_target.{n}" for n in EE_POSE_NAMES),
)


def camera_key(camera_id: str) -> str:
    """LeRobot feature name of a camera's RGB stream, e.g. ``observation.images.front``."""
    return f"observation.images.{camera_id}"


@dataclass(frozen=True)
class CameraStream:
    """One recorded camera: RGB as MP4 video, depth as lossless uint16 in parquet.

    Attributes:
        camera_id: logical camera name (selects its calibration), e.g. ``"front"``.
        width, height: image size, pixels.
    """

    camera_id: str
    width: int
    height: int


@dataclass(frozen=True)
class DatasetSpec:
    """What every episode of a dataset contains (fixed when the dataset is created; stored in ``meta/info.json``).

    Attributes:
        fps: nominal frame rate of the per-frame table and the videos, Hz (LeRobot's ``timestamp = frame_index/fps``).
        cameras: the recorded cameras, in column order.
        joint_names: arm joint names (order of ``q`` everywhere).
        robot_type: e.g. ``"panda"``.
        env_state_names: names of ``observation.environment_state`` (privileged simulator state, e.g. the cube's
            top-centre xyz in the base frame); empty = the column is absent (real robots).
        depth_scale: metres per depth unit of every depth image (0.001 = millimetres).
        control_rate_hz: nominal rate of the control-rate stream (``highrate/``), Hz.
    """

    fps: int
    cameras: tuple[CameraStream, ...]
    joint_names: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
    robot_type: str = "panda"
    env_state_names: tuple[str, ...] = ()
    depth_scale: float = 0.001
    control_rate_hz: float = 500.0

    def __post_init__(self) -> None:
        if not (isinstance(self.fps, int) and self.fps > 0):
            raise DatasetError(f"DatasetSpec.fps: expected a positive integer frame rate in Hz, got {self.fps!r}")
        ids = [c.camera_id for c in self.cameras]
        if len(set(ids)) != len(ids) or not all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids):
            raise DatasetError(f"DatasetSpec.cameras: camera ids must be unique [A-Za-z0-9_-]+, got {ids}")
        if not self.depth_scale > 0:
            raise DatasetError(f"DatasetSpec.depth_scale: expected metres per unit > 0, got {self.depth_scale}")

    @property
    def camera_ids(self) -> tuple[str, ...]:
        return tuple(c.camera_id for c in self.cameras)

    @property
    def state_names(self) -> tuple[str, ...]:
        return (*self.joint_names, "gripper")

    @property
    def action_names(self) -> tuple[str, ...]:
        return (
            *(f"q_target.{j}" for j in self.joint_names),
            "gripper_target",
            *(f"ee_target.{n}" for n in EE_POSE_NAMES),
        )

    def features(self) -> dict[str, dict[str, Any]]:
        """LeRobot ``info.json`` features: per-frame columns of ``data/`` and the video streams."""
        n = len(self.joint_names)
        feats: dict[str, dict[str, Any]] = {
            "observation.state": {"dtype": "float32", "shape": [n + 1], "names": list(self.state_names)},
            "observation.ee_pose": {"dtype": "float32", "shape": [7], "names": list(EE_POSE_NAMES)},
            "action": {"dtype": "float32", "shape": [n + 8], "names": list(self.action_names)},
        }
        if self.env_state_names:
            feats["observation.environment_state"] = {
                "dtype": "float32",
                "shape": [len(self.env_state_names)],
                "names": list(self.env_state_names),
            }
        feats["host_time_ns"] = {"dtype": "int64", "shape": [1], "names": None}
        feats["camera_time_ns"] = {"dtype": "int64", "shape": [len(self.cameras)], "names": list(self.camera_ids)}
        for cam in self.cameras:
            feats[camera_key(cam.camera_id)] = {
                "dtype": "video",
                "shape": [cam.height, cam.width, 3],
                "names": ["height", "width", "channels"],
            }
        feats["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for name in ("frame_index", "episode_index", "index", "task_index"):
            feats[name] = {"dtype": "int64", "shape": [1], "names": None}
        return feats

    def frame_schema(self) -> pa.Schema:
        """Arrow schema of a ``data/`` parquet file (column order = :meth:`features` order, videos excluded)."""
        return pa.schema([(k, arrow_type(v)) for k, v in self.features().items() if v["dtype"] != "video"])

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "cameras": [{"camera_id": c.camera_id, "width": c.width, "height": c.height} for c in self.cameras],
            "joint_names": list(self.joint_names),
            "env_state_names": list(self.env_state_names),
            "depth_scale": self.depth_scale,
            "control_rate_hz": self.control_rate_hz,
            "depth_path": DEPTH_PATH,
            "highrate_path": HIGHRATE_PATH,
            "sidecar_path": SIDECAR_PATH,
        }

    @classmethod
    def from_info(cls, info: Mapping[str, Any], source: str = INFO_PATH) -> DatasetSpec:
        """The spec stored in an ``info.json`` (its ``robot_stack`` section)."""
        try:
            rs = info["robot_stack"]
            if int(rs["format_version"]) != FORMAT_VERSION:
                raise DatasetError(
                    f"{source}: robot_stack format_version {rs['format_version']} is not the supported "
                    f"{FORMAT_VERSION}; convert the dataset or use a matching robot-stack"
                )
            return cls(
                fps=int(info["fps"]),
                cameras=tuple(
                    CameraStream(str(c["camera_id"]), int(c["width"]), int(c["height"])) for c in rs["cameras"]
                ),
                joint_names=tuple(rs["joint_names"]),
                robot_type=str(info.get("robot_type") or "panda"),
                env_state_names=tuple(rs.get("env_state_names", ())),
                depth_scale=float(rs["depth_scale"]),
                control_rate_hz=float(rs.get("control_rate_hz", 500.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(
                f"{source}: not a robot-stack dataset info.json (missing/invalid {exc}); was it written by "
                "robot-stack record?"
            ) from exc


_ARROW_DTYPES = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "bool": pa.bool_()}


def arrow_type(feature: Mapping[str, Any]) -> pa.DataType:
    """Arrow type HF ``datasets`` uses for a LeRobot feature: a scalar for shape (1,), else a fixed-size list."""
    dtype = _ARROW_DTYPES.get(feature["dtype"])
    if dtype is None:
        raise DatasetError(f"feature dtype {feature['dtype']!r} has no parquet column type (video lives in videos/)")
    shape = list(feature["shape"])
    if shape == [1]:
        return dtype
    if len(shape) != 1:
        raise DatasetError(f"only 1-D low-dimensional features are supported, got shape {shape}")
    return pa.list_(dtype, shape[0])


# ------------------------------------------------------------------------------------------------- paths


def episode_file(template: str, episode_index: int, **kw: str) -> str:
    """Relative path of one per-episode file (``template`` is one of the ``*_PATH`` constants)."""
    return template.format(chunk=episode_index // CHUNKS_SIZE, file=episode_index % CHUNKS_SIZE, **kw)


def episode_files(spec: DatasetSpec, episode_index: int) -> dict[str, str]:
    """Every file of one committed episode: {role: relative path}. The marker (commit point) is ``"marker"``."""
    out = {
        "data": episode_file(DATA_PATH, episode_index),
        "highrate": episode_file(HIGHRATE_PATH, episode_index),
        "sidecar": episode_file(SIDECAR_PATH, episode_index),
    }
    for cam in spec.camera_ids:
        out[f"video:{cam}"] = episode_file(VIDEO_PATH, episode_index, video_key=camera_key(cam))
        out[f"depth:{cam}"] = episode_file(DEPTH_PATH, episode_index, video_key=camera_key(cam))
    out["marker"] = episode_file(MARKER_PATH, episode_index)
    return out


_INDEX_RE = re.compile(r"chunk-(\d{3,})/file-(\d{3,})\.\w+$")


def episode_of_path(path: str | Path) -> int | None:
    """Episode index encoded in a ``.../chunk-CCC/file-FFF.ext`` path, or None."""
    m = _INDEX_RE.search(Path(path).as_posix())
    return None if m is None else int(m.group(1)) * CHUNKS_SIZE + int(m.group(2))


#: Folders whose files are per-episode (``chunk-*/file-*``); repair scans them for orphans.
PER_EPISODE_DIRS = ("data", "videos", "depth", "highrate", "meta/robot_stack", "meta/episodes")


# ---------------------------------------------------------------------------------------------- validate


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read JSON ({exc})") from exc


def read_markers(root: str | Path) -> list[dict[str, Any]]:
    """The committed episodes' marker rows (``meta/episodes/…parquet``, one row each), in episode order.

    Raises:
        DatasetError: a marker is unreadable, or the markers are not contiguous from episode 0.
    """
    rows = []
    for expected, path in enumerate(sorted((Path(root) / "meta/episodes").glob("*/*.parquet"))):
        try:
            row = pq.read_table(path).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise DatasetError(
                f"{path}: committed episode marker is unreadable ({exc}); restore it from backup"
            ) from exc
        if len(row) != 1 or row[0]["episode_index"] != expected or episode_of_path(path) != expected:
            raise DatasetError(
                f"{path}: episode markers are not contiguous from 0 (expected episode {expected}); the dataset "
                "was edited by hand — remove the later episodes' files or restore the missing ones"
            )
        rows.append(row[0])
    return rows


def validate_layout(root: str | Path) -> dict[str, Any]:
    """Check a dataset against LeRobot v3.0's schema rules with pyarrow only; return a summary.

    Checks: ``info.json`` has the v3.0 keys, every feature has dtype/shape/names; episode markers in
    ``meta/episodes`` are contiguous from 0 with ``dataset_from_index``/``to_index`` chaining; each ``data/`` file's
    columns equal the non-video features with the arrow types HF ``datasets`` expects, ``index`` is global and
    contiguous, ``frame_index`` starts at 0, ``timestamp == frame_index / fps``; every video file exists; totals in
    ``info.json`` match; ``tasks.parquet`` covers every ``task_index``.

    Raises:
        DatasetError: the first rule broken (the message names the file and the rule).
    """
    root = Path(root)
    info = _load_json(root / INFO_PATH)
    for key in ("codebase_version", "fps", "features", "data_path", "video_path", "total_episodes", "total_frames"):
        if key not in info:
            raise DatasetError(f"{root / INFO_PATH}: missing key {key!r} required by LeRobot {CODEBASE_VERSION}")
    if info["codebase_version"] != CODEBASE_VERSION:
        raise DatasetError(f"{root / INFO_PATH}: codebase_version {info['codebase_version']!r} != {CODEBASE_VERSION}")
    features = info["features"]
    for name, ft in features.items():
        if not {"dtype", "shape", "names"} <= set(ft):
            raise DatasetError(f"{root / INFO_PATH}: feature {name!r} lacks dtype/shape/names")
    spec = DatasetSpec.from_info(info, str(root / INFO_PATH))
    video_keys = [k for k, v in features.items() if v["dtype"] == "video"]
    want = pa.schema([(k, arrow_type(v)) for k, v in features.items() if v["dtype"] != "video"])
    fps = float(info["fps"])

    markers = read_markers(root)
    total = 0
    task_ids: set[int] = set()
    for expected, ep in enumerate(markers):
        if ep["dataset_from_index"] != total or ep["dataset_to_index"] != total + ep["length"]:
            raise DatasetError(f"episode {expected}: dataset_from/to_index do not chain (expected from {total})")
        data_path = root / info["data_path"].format(
            chunk_index=ep["data/chunk_index"], file_index=ep["data/file_index"]
        )
        table = pq.read_table(data_path)
        if not table.schema.remove_metadata().equals(want):
            raise DatasetError(f"{data_path}: columns {table.schema} do not match the features {want}")
        if table.num_rows != ep["length"]:
            raise DatasetError(f"{data_path}: {table.num_rows} rows, episode length says {ep['length']}")
        cols = table.to_pydict()
        n = table.num_rows
        if cols["frame_index"] != list(range(n)) or cols["index"] != list(range(total, total + n)):
            raise DatasetError(f"{data_path}: frame_index/index are not contiguous from 0 / {total}")
        if set(cols["episode_index"]) != {expected}:
            raise DatasetError(f"{data_path}: episode_index column differs from {expected}")
        if any(abs(t - f / fps) > 1e-4 for t, f in zip(cols["timestamp"], cols["frame_index"], strict=True)):
            raise DatasetError(f"{data_path}: timestamp != frame_index / fps (LeRobot's video lookup needs it)")
        task_ids.update(cols["task_index"])
        for key in video_keys:
            vp = root / info["video_path"].format(
                video_key=key,
                chunk_index=ep[f"videos/{key}/chunk_index"],
                file_index=ep[f"videos/{key}/file_index"],
            )
            if not vp.is_file():
                raise DatasetError(f"{vp}: video file of episode {expected} is missing")
        for role, rel in episode_files(spec, expected).items():
            if not (root / rel).is_file():
                raise DatasetError(f"{root / rel}: {role} file of episode {expected} is missing")
        total += n
    if info["total_episodes"] != len(markers) or info["total_frames"] != total:
        raise DatasetError(
            f"{root / INFO_PATH}: totals ({info['total_episodes']} episodes, {info['total_frames']} frames) do not "
            f"match the files ({len(markers)}, {total}); run `robot-stack record --resume` to repair the index"
        )
    if markers:
        tasks = pq.read_table(root / TASKS_PATH).to_pydict()
        if not task_ids <= set(tasks["task_index"]):
            raise DatasetError(f"{root / TASKS_PATH}: task indices {sorted(task_ids)} not all listed")
    return {"episodes": len(markers), "frames": total, "video_keys": video_keys}


@dataclass(frozen=True)
class RobotDescription:
    """The robot an episode was recorded with (stored per episode).

    Attributes:
        name: robot model, e.g. ``"panda"``.
        urdf_file: file name of the URDF the kinematics were loaded from.
        urdf_sha256: hex SHA-256 of that URDF's text (identifies the exact kinematics).
        base_frame, tcp_frame: URDF link names of the base frame and the tool-centre point.
        joint_names: arm joints in ``q`` order.
        lower, upper, velocity: per-joint limits (rad, rad, rad/s).
    """

    name: str
    urdf_file: str
    urdf_sha256: str
    base_frame: str
    tcp_frame: str
    joint_names: tuple[str, ...]
    lower: tuple[float, ...] = field(default=())
    upper: tuple[float, ...] = field(default=())
    velocity: tuple[float, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "urdf_file": self.urdf_file,
            "urdf_sha256": self.urdf_sha256,
            "base_frame": self.base_frame,
            "tcp_frame": self.tcp_frame,
            "joint_names": list(self.joint_names),
            "limits": {"lower": list(self.lower), "upper": list(self.upper), "velocity": list(self.velocity)},
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RobotDescription:
        lim = doc.get("limits", {})
        return cls(
            name=str(doc["name"]),
            urdf_file=str(doc["urdf_file"]),
            urdf_sha256=str(doc["urdf_sha256"]),
            base_frame=str(doc["base_frame"]),
            tcp_frame=str(doc["tcp_frame"]),
            joint_names=tuple(doc["joint_names"]),
            lower=tuple(float(v) for v in lim.get("lower", ())),
            upper=tuple(float(v) for v in lim.get("upper", ())),
            velocity=tuple(float(v) for v in lim.get("velocity", ())),
        )


def robot_description(robot: str = "panda") -> RobotDescription:
    """The arm ``robot`` as the simulator and IK use it (:mod:`robot_stack.robots`), with its URDF text's hash."""
    import hashlib

    from robot_stack.robots.registry import get_embodiment

    emb = get_embodiment(robot)
    return RobotDescription(
        name=emb.name,
        urdf_file=emb.urdf_path().name,
        urdf_sha256=hashlib.sha256(emb.urdf_path().read_bytes()).hexdigest(),
        base_frame=emb.base_link,
        tcp_frame=emb.tcp_frame,
        joint_names=emb.arm_joints,
        lower=tuple(float(v) for v in emb.limits.lower),
        upper=tuple(float(v) for v in emb.limits.upper),
        velocity=tuple(float(v) for v in emb.limits.velocity),
    )


def panda_description() -> RobotDescription:
    """The Panda the simulator and IK use (:mod:`robot_stack.robots.panda`), with its URDF's hash."""
    return robot_description("panda")
