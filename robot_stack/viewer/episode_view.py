"""A recorded episode (and its replay in the simulator) in the viewer: ``robot-stack replay ... --display/--save``."""

from __future__ import annotations

from typing import Any

import numpy as np

from robot_stack.types import Frame
from robot_stack.viewer.live import LiveView
from robot_stack.viewer.stack_view import CellView

__all__ = ["log_episode"]


def log_episode(view: LiveView, episode: Any, replay: Any | None = None) -> int:
    """Log every frame of a loaded :class:`~robot_stack.dataset.loader.Episode`: each camera's RGB and depth (and
    its calibration's frustum), the recorded joints as ``measured`` and the recorded joint targets as ``commanded``,
    the recorded TCP; with ``replay`` (a :class:`~robot_stack.collection.replay.ReplayResult`) the robot model is
    posed by the replayed joints and the replayed TCP is drawn. Returns the number of frames logged."""
    n = len(episode.robot.joint_names)
    shown = CellView(
        view,
        episode.robot.name,
        episode.robot.joint_names,
        [(c.camera_id, c.calibration.camera, c.calibration.T_base_cam) for c in episode.cameras.values()],
    )
    if episode.env_state is not None and episode.env_state.shape[1] >= 3:
        view.at(int(episode.t_ns[0]), 0)
        shown.target(episode.env_state[0, :3])
    for k in range(episode.length):
        view.at(int(episode.t_ns[k]), k)
        for cam in episode.cameras.values():
            if cam.rgb is not None and cam.depth is not None:
                view.log_frame(
                    Frame(cam.rgb[k], cam.depth[k], cam.depth_scale, int(cam.t_capture_ns[k]), cam.camera_id, k)
                )
        recorded_q = np.asarray(episode.state[k, :n], np.float64)
        posed = replay.q_replayed[k] if replay is not None else recorded_q
        view.log_joints(measured=posed, commanded=np.asarray(episode.action[k, :n], np.float64))
        if replay is not None:
            view.log_joints(tcp_xyz=replay.tcp_replayed[k])
        view.log_marker("world/tcp/recorded", episode.ee_pose[k, :3], (60, 120, 255))
    return episode.length
