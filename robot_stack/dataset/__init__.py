"""Recorded episodes in LeRobot's dataset layout (v3.0), plus depth, calibration and a control-rate stream.

Layout of a dataset folder (``i`` = episode index; chunk ``CCC = i // 1000``, file ``FFF = i % 1000``: one file per
episode, which LeRobot v3.0 allows and which makes every episode commit atomic)::

    meta/info.json                      LeRobot info: codebase_version "v3.0", fps, features, totals, paths;
                                        "robot_stack": our format version, cameras, joint names, depth scale
    meta/stats.json                     per-feature min/max/mean/std/count (images: per channel in [0, 1])
    meta/tasks.parquet                  task text (pandas index) -> task_index
    meta/episodes/chunk-CCC/file-FFF.parquet   one row per episode = the COMMIT MARKER: tasks, length,
                                        dataset_from/to_index, data/video file indices and timestamps, success,
                                        stats/<feature>/<stat>
    meta/robot_stack/chunk-CCC/file-FFF.json   calibration snapshot (every camera's calibration YAML document,
                                        intrinsics at the recorded resolution), robot description (URDF name +
                                        SHA-256, joint names, limits, base/TCP frames), success, drop counters,
                                        teleop device, seed, host start/stop times
    data/chunk-CCC/file-FFF.parquet     per-frame table (LeRobot features, below)
    videos/observation.images.<cam>/chunk-CCC/file-FFF.mp4    RGB, H.264 (libx264) yuv420p, PTS = frame_index
    depth/observation.images.<cam>/chunk-CCC/file-FFF.parquet depth, lossless: one row per frame
                                        (frame_index, t_capture_ns, raw little-endian uint16 bytes), zstd-compressed
    highrate/chunk-CCC/file-FFF.parquet control-rate stream: t_ns, q, dq, q_cmd (float64 (n,)), gripper, gripper_cmd

Per-frame columns (``data/``; ``n`` arm joints, Panda n = 7; base frame = robot base, metres, radians):

* ``observation.state`` float32 (n+1,): joint positions (rad) then gripper opening [0, 1] (0 = closed).
* ``observation.ee_pose`` float32 (7,): TCP xyz (m) + quaternion (w, x, y, z), ``T_base_tcp``.
* ``action`` float32 (n+8,): the command in force at the frame: joint position target (rad, n) — the IK solution
  of the teleop/policy TCP target (or the leader arm's joints) that was handed to the executor, before the safety
  filter —, gripper target [0, 1], and the commanded TCP target xyz (m) + quaternion wxyz in the base frame (for
  joint-space sources: the FK of the joint target). For chunk-emitting sources (the scripted expert, policies) it
  is chunk step 1, the target one ``dt`` ahead. What reached the motors at control rate (after the safety filter)
  is ``highrate/`` ``q_cmd``.
* ``observation.environment_state`` float32 (k,) (simulated datasets only): privileged state, names in info.json
  (the sim expert's datasets: the cube's top-centre xyz, m, base frame).
* ``host_time_ns`` int64: the recording host's monotonic clock at the robot-state read, ns;
  ``camera_time_ns`` int64 (n_cameras,): each camera's capture time on the same clock.
* ``timestamp`` float32 = ``frame_index / fps`` (LeRobot's nominal time, s); ``frame_index``, ``episode_index``,
  ``index`` (global, contiguous), ``task_index`` int64.

Why depth in parquet: it must round-trip bit-exactly (it becomes base-frame XYZ), stream while recording, allow
random access per frame, and load with pyarrow alone. zstd (level 1) inside parquet stores a 640x480 depth frame
in ~3.5 ms p50 / ~8 ms p99 (``robot-stack bench record``); FFV1 gray16le in MKV (also exact) took ~37 ms per frame
here — about twice the compression, but too slow for 2 cameras at 30 Hz on a shared 2-core machine; npz/zlib is
slower than zstd too.

Crash safety: see :mod:`robot_stack.dataset.writer` (temp folder, fsync, renames, marker last, repair on open).
Recording off the control thread: :class:`~robot_stack.dataset.recorder.Recorder`.
Reading: :func:`~robot_stack.dataset.loader.load_dataset` (numpy) or LeRobot's ``LeRobotDataset(repo_id, root=…)``.
"""

from robot_stack.dataset.format import (
    ACTION_NAMES,
    CODEBASE_VERSION,
    EE_POSE_NAMES,
    STATE_NAMES,
    CameraStream,
    DatasetSpec,
    RobotDescription,
    camera_key,
    panda_description,
    robot_description,
    validate_layout,
)
from robot_stack.dataset.loader import CameraData, Dataset, Episode, HighRateStream, load_dataset
from robot_stack.dataset.writer import (
    CommittedEpisode,
    DatasetWriter,
    EpisodeWriter,
    FrameRow,
    JointSample,
    RepairReport,
    VideoConfig,
)

__all__ = [
    "ACTION_NAMES",
    "CODEBASE_VERSION",
    "EE_POSE_NAMES",
    "STATE_NAMES",
    "CameraData",
    "CameraStream",
    "CommittedEpisode",
    "Dataset",
    "DatasetSpec",
    "DatasetWriter",
    "Episode",
    "EpisodeWriter",
    "FrameRow",
    "HighRateStream",
    "JointSample",
    "RepairReport",
    "RobotDescription",
    "VideoConfig",
    "camera_key",
    "load_dataset",
    "panda_description",
    "robot_description",
    "validate_layout",
]
