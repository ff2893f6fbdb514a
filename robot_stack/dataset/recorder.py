"""``Recorder``: episode recording off the control thread, with bounded queues and counted drops.

The API a control loop, a teleop session or a ROS node uses (every method thread-safe, none blocks on disk)::

    rec = Recorder(DatasetWriter(root, spec, calibrations))
    rec.start_episode("reach and touch the red cube")
    rec.add_frame(row, frames)          # per camera frame set (e.g. 30 Hz): False = dropped (queues full), counted
    rec.add_joint_sample(sample)        # control rate (e.g. 500 Hz): False = dropped (buffer full), counted
    rec.stop_episode(success=True)      # drains the queues, commits atomically -> CommittedEpisode
    rec.discard()                       # or: throw the episode away

Each camera has two worker threads (H.264 encoding of RGB, zstd/parquet of depth), each fed by its own bounded queue.
:meth:`Recorder.add_frame` only copies references into the queues: a frame is taken only if *every* stream has room,
so the streams stay aligned; otherwise the whole frame is dropped, counted (:attr:`RecorderStats.dropped_frames`),
logged (rate-limited) and written into the episode's sidecar — never silently lost. A worker that fails (encoder
error) makes :meth:`stop_episode` raise and the episode is aborted.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.dataset.writer import CommittedEpisode, DatasetWriter, EpisodeWriter, FrameRow, JointSample
from robot_stack.errors import DatasetError
from robot_stack.metrics import latency_stats
from robot_stack.types import Frame

log = logging.getLogger("robot_stack.dataset.recorder")

__all__ = ["Recorder", "RecorderStats"]

_STOP = object()


@dataclass(frozen=True)
class RecorderStats:
    """Counters of the current (or last) episode.

    Attributes:
        recording: an episode is in progress.
        episode_index: index the current/last episode has/had.
        frames: frames accepted.
        dropped_frames: frames refused because a stream queue was full.
        joint_samples: control-rate samples accepted; dropped_joint_samples: refused (buffer full).
        queue_depth: {stream: frames waiting} now.
    """

    recording: bool
    episode_index: int
    frames: int
    dropped_frames: int
    joint_samples: int
    dropped_joint_samples: int
    queue_depth: Mapping[str, int]


class _Stream(threading.Thread):
    def __init__(self, name: str, maxsize: int, handle: Any) -> None:
        super().__init__(name=f"robot_stack-rec-{name}", daemon=True)
        self.stream = name
        self.q: queue.Queue[Any] = queue.Queue(maxsize=maxsize)
        self.handle = handle
        self.error: BaseException | None = None

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is _STOP:
                return
            if self.error is not None:
                continue  # keep draining so producers never block; the episode is aborted at stop
            try:
                self.handle(*item)
            except BaseException as exc:  # reported by stop_episode, never swallowed
                self.error = exc
                log.error("recorder stream %s failed: %s", self.stream, exc)


class Recorder:
    """Records episodes into a :class:`DatasetWriter` from any thread (see module doc).

    Args:
        writer: the opened dataset.
        queue_frames: frames each stream may hold before new frames are dropped (memory bound:
            ``queue_frames * (H*W*3 + H*W*2)`` bytes per camera).
        max_joint_samples: control-rate samples kept per episode (500 Hz x 600 s by default); more are dropped.
    """

    def __init__(self, writer: DatasetWriter, queue_frames: int = 64, max_joint_samples: int = 300_000) -> None:
        if queue_frames < 1 or max_joint_samples < 1:
            raise DatasetError(f"queue sizes must be >= 1, got {queue_frames}, {max_joint_samples}")
        self.writer = writer
        self.spec = writer.spec
        self.queue_frames = int(queue_frames)
        self.max_joint_samples = int(max_joint_samples)
        self._lock = threading.Lock()
        self._episode: EpisodeWriter | None = None
        self._streams: list[_Stream] = []
        self._frames = 0
        self._dropped = 0
        self._joints = 0
        self._dropped_joints = 0
        self._last_index = -1
        self._last_drop_log = -float("inf")
        self._encode_s: dict[str, list[float]] = {}

    # ------------------------------------------------------------------------------------------- status
    @property
    def recording(self) -> bool:
        return self._episode is not None

    def stats(self) -> RecorderStats:
        with self._lock:
            return RecorderStats(
                self._episode is not None,
                self._episode.episode_index if self._episode is not None else self._last_index,
                self._frames,
                self._dropped,
                self._joints,
                self._dropped_joints,
                {s.stream: s.q.qsize() for s in self._streams},
            )

    def encode_times(self) -> dict[str, dict[str, float]]:
        """Per-stream encode time per frame of the last finished episode (p50/p99/... ms)."""
        return {k: latency_stats(np.array(v)) for k, v in self._encode_s.items() if v}

    # ------------------------------------------------------------------------------------------ episodes
    def start_episode(self, task: str, extra: Mapping[str, Any] | None = None) -> int:
        """Begin an episode with instruction ``task``; return the index it will get. ``extra`` goes to the sidecar.

        Raises:
            DatasetError: an episode is already in progress, or ``task`` is empty.
        """
        with self._lock:
            if self._episode is not None:
                raise DatasetError("start_episode: an episode is already being recorded; stop or discard it first")
            ep = self.writer.begin_episode(task, extra)
            streams = []
            for cam in self.spec.camera_ids:
                streams.append(
                    _Stream(f"rgb:{cam}", self.queue_frames, lambda i, f, c=cam: ep.write_rgb(c, i, f.color))
                )
                streams.append(
                    _Stream(
                        f"depth:{cam}",
                        self.queue_frames,
                        lambda i, f, c=cam: ep.write_depth(c, i, f.t_capture_ns, f.depth),
                    )
                )
            for s in streams:
                s.start()
            self._episode, self._streams = ep, streams
            self._frames = self._dropped = self._joints = self._dropped_joints = 0
            log.info("recording episode %d: %r", ep.episode_index, task)
            return ep.episode_index

    def add_frame(self, row: FrameRow, frames: Sequence[Frame] | Mapping[str, Frame]) -> bool:
        """Queue one frame set (one :class:`Frame` per spec camera, in spec order or by camera id).

        Returns False when the frame was dropped (a queue is full: counted and logged) or no episode is recording
        (not counted). Never blocks on encoding or disk.

        Raises:
            DatasetError: a camera is missing or an image has the wrong size.
        """
        by_id = dict(frames) if isinstance(frames, Mapping) else {f.camera_id: f for f in frames}
        for cam in self.spec.cameras:
            f = by_id.get(cam.camera_id)
            if f is None:
                raise DatasetError(f"add_frame: no frame for camera {cam.camera_id!r} (got {sorted(by_id)})")
            if f.color.shape != (cam.height, cam.width, 3):
                raise DatasetError(
                    f"add_frame: camera {cam.camera_id!r} image {f.color.shape} != recorded {cam.height}x{cam.width}"
                )
        with self._lock:
            ep = self._episode
            if ep is None:
                return False
            if any(s.q.full() for s in self._streams):
                self._dropped += 1
                now = time.monotonic()
                if now - self._last_drop_log > 1.0:
                    self._last_drop_log = now
                    log.warning(
                        "recorder: dropped frame (queues full: %s); %d dropped so far in episode %d",
                        {s.stream: s.q.qsize() for s in self._streams},
                        self._dropped,
                        ep.episode_index,
                    )
                return False
            index = ep.add_row(row)
            for s in self._streams:
                cam = s.stream.split(":", 1)[1]
                s.q.put_nowait((index, by_id[cam]))
            self._frames += 1
            return True

    def add_joint_sample(self, sample: JointSample) -> bool:
        """Record one control-rate sample; False when dropped (buffer full, counted) or not recording."""
        with self._lock:
            ep = self._episode
            if ep is None:
                return False
            if self._joints >= self.max_joint_samples:
                self._dropped_joints += 1
                return False
            ep.add_joint_sample(sample)
            self._joints += 1
            return True

    def _drain(self) -> list[str]:
        for s in self._streams:
            s.q.put(_STOP)
        for s in self._streams:
            s.join()
        return [f"{s.stream}: {s.error}" for s in self._streams if s.error is not None]

    def stop_episode(self, success: bool, extra: Mapping[str, Any] | None = None) -> CommittedEpisode:
        """Finish the episode: wait for the queues to drain, then commit it atomically.

        Raises:
            DatasetError: no episode is recording, a stream failed, or the episode has no frames (the episode is
                then aborted and nothing of it remains on disk).
        """
        with self._lock:
            ep = self._episode
            if ep is None:
                raise DatasetError("stop_episode: no episode is being recorded")
            self._episode = None
        errors = self._drain()
        if errors:
            self._encode_s = ep.encode_times_s()
            self.writer.abort(ep)
            raise DatasetError(f"episode {ep.episode_index} aborted, a recording stream failed: {'; '.join(errors)}")
        info = {
            "dropped_frames": self._dropped,
            "dropped_joint_samples": self._dropped_joints,
            "queue_frames": self.queue_frames,
            **dict(extra or {}),
        }
        if self._dropped or self._dropped_joints:
            log.warning(
                "episode %d: %d frame(s) and %d joint sample(s) were dropped (recorded in its metadata)",
                ep.episode_index,
                self._dropped,
                self._dropped_joints,
            )
        try:
            result = self.writer.commit(ep, success, info)
        finally:
            self._encode_s = ep.encode_times_s()
        self._last_index = result.episode_index
        log.info(
            "committed episode %d: %d frames, success=%s, dropped %d",
            result.episode_index,
            result.length,
            success,
            self._dropped,
        )
        return result

    def discard(self) -> bool:
        """Throw the current episode away; return whether there was one."""
        with self._lock:
            ep = self._episode
            self._episode = None
        if ep is None:
            return False
        self._drain()
        self.writer.abort(ep)
        log.info("discarded episode %d (%d frames)", ep.episode_index, self._frames)
        return True

    def close(self) -> None:
        """Discard an unfinished episode (nothing half-written stays) and release the threads."""
        self.discard()
