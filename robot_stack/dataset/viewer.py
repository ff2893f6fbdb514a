"""Inspect an episode: a PNG of RGB, depth, the base-frame point cloud and the trajectories; an MP4 of the cameras
(the rerun recording of an episode is :mod:`robot_stack.viewer.episode_view`'s)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from robot_stack.dataset.loader import Episode
from robot_stack.errors import DatasetError

log = logging.getLogger("robot_stack.dataset.viewer")

__all__ = ["episode_figure", "episode_video"]


def episode_figure(
    episode: Episode, path: str | os.PathLike[str], frame: int | None = None, replay_tcp: np.ndarray | None = None
) -> Path:
    """Save a PNG: per camera RGB and depth at ``frame`` (default: the middle), the base-frame point cloud of every
    camera (top and side views, coloured by RGB), TCP and joint trajectories (recorded, commanded, replayed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not episode.cameras:
        raise DatasetError("episode_figure: the episode was loaded without cameras")
    k = episode.length // 2 if frame is None else int(frame)
    if not 0 <= k < episode.length:
        raise DatasetError(f"frame {k} outside the episode's 0..{episode.length - 1}")
    cams = list(episode.cameras.values())
    fig = plt.figure(figsize=(4.2 * max(len(cams), 2) + 4, 11))
    gs = fig.add_gridspec(3, max(len(cams), 2) + 1)
    clouds = []
    for i, cam in enumerate(cams):
        if cam.rgb is not None:
            ax = fig.add_subplot(gs[0, i])
            ax.imshow(cam.rgb[k])
            ax.set_title(f"{cam.camera_id} RGB, frame {k}")
            ax.axis("off")
        if cam.depth is not None:
            ax = fig.add_subplot(gs[1, i])
            d = cam.depth[k].astype(np.float64) * cam.depth_scale
            im = ax.imshow(np.where(cam.depth[k] > 0, d, np.nan), cmap="viridis")
            fig.colorbar(im, ax=ax, fraction=0.035, label="m")
            ax.set_title(f"{cam.camera_id} depth (0 = invalid, white)")
            ax.axis("off")
            xyz = cam.xyz_base(k)[::4, ::4].reshape(-1, 3)
            rgb = (cam.rgb[k][::4, ::4].reshape(-1, 3) / 255.0) if cam.rgb is not None else None
            ok = np.all(np.isfinite(xyz), axis=1) & (xyz[:, 2] > -0.05)  # drop the floor below the table
            clouds.append((xyz[ok], None if rgb is None else rgb[ok]))
    ax = fig.add_subplot(gs[0, -1])
    for xyz, rgb in clouds:
        ax.scatter(xyz[:, 0], xyz[:, 1], s=0.3, c=rgb if rgb is not None else "k")
    tcp = np.asarray(episode.ee_pose[:, :3])
    ax.plot(tcp[:, 0], tcp[:, 1], "g-", lw=1.5, label="TCP")
    ax.set_xlabel("x base (m)")
    ax.set_ylabel("y base (m)")
    ax.set_aspect("equal")
    ax.set_title("point cloud, base frame (top view)")
    ax.legend(loc="lower right", fontsize=7)
    ax = fig.add_subplot(gs[1, -1])
    for xyz, rgb in clouds:
        ax.scatter(xyz[:, 0], xyz[:, 2], s=0.3, c=rgb if rgb is not None else "k")
    ax.plot(tcp[:, 0], tcp[:, 2], "g-", lw=1.5)
    ax.set_xlabel("x base (m)")
    ax.set_ylabel("z base (m)")
    ax.set_aspect("equal")
    ax.set_title("point cloud, base frame (side view)")
    t = (episode.t_ns - episode.t_ns[0]) / 1e9
    ax = fig.add_subplot(gs[2, : max(len(cams), 2) // 2 + 1])
    target = np.asarray(episode.ee_target[:, :3])
    for j, name in enumerate("xyz"):
        (line,) = ax.plot(t, tcp[:, j], label=f"TCP {name}")
        ax.plot(t, target[:, j], "--", color=line.get_color(), label=f"target {name}")
        if replay_tcp is not None:
            ax.plot(t, replay_tcp[:, j], ":", color=line.get_color(), label=f"replay {name}")
    ax.set_xlabel("host time since start (s)")
    ax.set_ylabel("m, base frame")
    ax.set_title(
        "TCP: recorded (solid), commanded (dashed)" + (", replayed (dotted)" if replay_tcp is not None else "")
    )
    ax.legend(fontsize=6, ncol=3)
    ax = fig.add_subplot(gs[2, max(len(cams), 2) // 2 + 1 :])
    q, qt = np.asarray(episode.q), np.asarray(episode.q_target)
    for j in range(q.shape[1]):
        (line,) = ax.plot(t, q[:, j], lw=1)
        ax.plot(t, qt[:, j], "--", lw=0.8, color=line.get_color())
    if episode.highrate is not None and episode.highrate.t_ns.size:
        th = (episode.highrate.t_ns - episode.t_ns[0]) / 1e9
        ax.plot(th, episode.highrate.q_cmd, lw=0.3, color="0.5")
    ax.set_xlabel("host time since start (s)")
    ax.set_ylabel("rad")
    ax.set_title("joints: measured (solid), frame targets (dashed), 500 Hz set-points (grey)")
    fig.suptitle(f"episode {episode.index}: {episode.task!r}, success={episode.success}, {episode.length} frames")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out


def episode_video(episode: Episode, path: str | os.PathLike[str]) -> Path:
    """Save an MP4 with every camera's RGB side by side and its depth below (depth as a grey ramp)."""
    import av

    cams = [c for c in episode.cameras.values() if c.rgb is not None]
    if not cams:
        raise DatasetError("episode_video: the episode was loaded without RGB")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = cams[0].rgb.shape[1:3]
    with av.open(str(out), "w") as container:
        stream = container.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=episode.fps)
        stream.width, stream.height, stream.pix_fmt = w * len(cams), h * 2, "yuv420p"
        for k in range(episode.length):
            top = np.concatenate([c.rgb[k] for c in cams], axis=1)
            rows = []
            for c in cams:
                d = c.depth[k] if c.depth is not None else np.zeros((h, w), np.uint16)
                g = np.clip(d.astype(np.float64) * c.depth_scale / 2.0 * 255.0, 0, 255).astype(np.uint8)
                rows.append(np.repeat(g[..., None], 3, axis=2))
            img = np.concatenate([top, np.concatenate(rows, axis=1)], axis=0)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out
