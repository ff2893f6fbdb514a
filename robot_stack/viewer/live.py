"""The live view of a running stack in rerun (``--display``), and its recording (``--save out.rrd``).

What is logged, all in the robot base frame (entity ``world``):

* ``world/<robot>/...`` — the robot model from its URDF (meshes), posed by the **measured** joints every cycle
  (joint transforms, rerun's URDF support); ``world/tcp/measured`` the measured TCP, as a point and a trail;
* ``world/cameras/<camera>`` — each camera's pose (calibration ``T_base_cam``) and pinhole (intrinsics): a frustum;
  under it ``rgb`` (Image) and ``depth`` (DepthImage, metres) of every frame the policy saw;
* ``world/points/<camera>`` — the base-frame point cloud the policy saw (every ``stride``-th pixel, RGB colours);
* ``world/chunks/tcp_path`` — each accepted action chunk as the TCP path of its joint trajectory (forward
  kinematics), ``world/chunks/targets`` its waypoints;
* ``joints/<joint>/{measured,commanded,planned}`` — joint positions (rad): measured by the robot, commanded by the
  executor at the last tick, planned (each chunk's waypoints, logged at the times they are meant for);
* ``events`` — safety interventions, watchdog holds, stale or failed cycles (a text log, levels WARN/ERROR);
  ``status/holds`` and ``status/safety_interventions`` as counters.

Timelines: ``time`` (seconds since the view started, on the monotonic clock of the data) and ``step`` (the
policy cycle). Sinks: ``save`` writes an ``.rrd`` file; ``display`` spawns the native viewer when a display is
available (``DISPLAY`` / ``WAYLAND_DISPLAY``), else serves rerun's web viewer on ``web_port`` (its address is
logged); both at once are fine. Nothing here is on the control path: a failing sink is logged and logging stops.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.types import CameraModel, Frame, JointTrajectory, Pose

__all__ = ["PLAN_POINTS", "LiveView"]

#: Most waypoints of one chunk's trajectory drawn (TCP path) and plotted (planned joints).
PLAN_POINTS = 24

log = logging.getLogger("robot_stack.viewer")


class LiveView:
    """A rerun recording stream with robot-stack's entity layout (see the module docstring).

    Args:
        app_id: the recording's application id (``robot-stack-demo``, ...).
        save: write the recording to this ``.rrd`` file.
        display: show it live (native viewer, or the web viewer when there is no display).
        grpc_port, web_port: ports of the live sinks (``--display``).
        spawn: force (True) or forbid (False) the native viewer; None = when a display is available.
    """

    def __init__(
        self,
        app_id: str,
        *,
        save: str | os.PathLike[str] | None = None,
        display: bool = False,
        grpc_port: int = 9876,
        web_port: int = 9090,
        spawn: bool | None = None,
    ) -> None:
        import rerun as rr

        self.rr = rr
        self.rec = rr.RecordingStream(app_id)
        self.save_path = Path(save) if save is not None else None
        self.url: str | None = None
        sinks: list[Any] = []
        if self.save_path is not None:
            self.save_path.parent.mkdir(parents=True, exist_ok=True)
            sinks.append(rr.FileSink(str(self.save_path)))
        if display:
            native = (
                spawn if spawn is not None else bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
            )
            if native:
                rr.spawn(port=grpc_port, connect=False)
                sinks.append(rr.GrpcSink(f"rerun+http://127.0.0.1:{grpc_port}/proxy"))
                self.url = f"native viewer (gRPC port {grpc_port})"
            else:
                sinks.append(rr.GrpcServerSink(bind_ip="127.0.0.1", port=grpc_port))
                grpc_url = f"rerun+http://127.0.0.1:{grpc_port}/proxy"
                rr.serve_web_viewer(web_port=web_port, open_browser=False, connect_to=grpc_url)
                self.url = f"http://127.0.0.1:{web_port}/?url={grpc_url}"
                log.warning("no display here: the live view is in rerun's web viewer at %s", self.url)
        if not sinks:
            raise ValueError("LiveView needs save=PATH and/or display=True")
        self.rec.set_sinks(*sinks)
        self._t0_ns: int | None = None
        self._urdf: Any = None
        self._joint_names: tuple[str, ...] = ()
        self._fk: Callable[[np.ndarray], np.ndarray] | None = None
        self._cameras: dict[str, tuple[CameraModel, Pose]] = {}
        self._trail: list[np.ndarray] = []
        self._counters: dict[str, int] = {}
        self._failed = False
        self._close_hooks: list[Callable[[], None]] = []
        self.logged = 0

    # ------------------------------------------------------------------------------------------------ time
    def at(self, t_ns: int, step: int | None = None) -> None:
        """Set the time of what is logged next: ``t_ns`` monotonic ns (``time`` = seconds since the first call)
        and the policy ``step``."""
        if self._t0_ns is None:
            self._t0_ns = int(t_ns)
        self.rec.set_time("time", duration=(int(t_ns) - self._t0_ns) / 1e9)
        if step is not None:
            self.rec.set_time("step", sequence=int(step))

    def _log(self, path: str, item: Any, static: bool = False) -> None:
        if self._failed:
            return
        try:
            self.rec.log(path, item, static=static)
            self.logged += 1
        except Exception as exc:  # the view must never take the loop down
            self._failed = True
            log.warning("rerun logging stopped (%s: %s); the run goes on without the view", type(exc).__name__, exc)

    # ---------------------------------------------------------------------------------------------- static
    def log_robot(
        self,
        urdf_text: str,
        joint_names: Sequence[str],
        fk_xyz: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """The robot model (URDF text with absolute mesh paths) under ``world``; ``fk_xyz(q) -> (3,)`` TCP
        position for chunk paths."""
        import rerun.urdf as rurdf

        with tempfile.NamedTemporaryFile("w", suffix=".urdf", delete=False) as fh:
            fh.write(urdf_text)
        try:
            self._urdf = rurdf.UrdfTree.from_file_path(fh.name, entity_path_prefix="world")
            self._urdf.log_urdf_to_recording(self.rec)
        finally:
            Path(fh.name).unlink(missing_ok=True)
        self._joint_names = tuple(joint_names)
        self._fk = fk_xyz
        self._log("world", self.rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)

    def log_camera(self, camera_id: str, model: CameraModel, T_base_cam: Pose) -> None:
        """A camera's pose and pinhole (static): its frustum in the 3D view, its images under it."""
        rr = self.rr
        self._cameras[camera_id] = (model, T_base_cam)
        path = f"world/cameras/{camera_id}"
        self._log(path, rr.Transform3D(translation=T_base_cam.translation, mat3x3=T_base_cam.rotation), static=True)
        self._log(
            path,
            rr.Pinhole(
                focal_length=[model.fx, model.fy],
                principal_point=[model.cx, model.cy],
                resolution=[model.width, model.height],
                camera_xyz=rr.ViewCoordinates.RDF,
                image_plane_distance=0.15,
            ),
            static=True,
        )

    def send_layout(self, camera_ids: Sequence[str]) -> None:
        """The default layout: the 3D cell (robot, frusta, points, chunk paths) beside each camera's RGB and depth,
        the joint plots and the event log."""
        import rerun.blueprint as rrb

        cams = [
            rrb.Vertical(
                rrb.Spatial2DView(origin=f"world/cameras/{c}", contents=[f"world/cameras/{c}/rgb"], name=f"{c} rgb"),
                rrb.Spatial2DView(
                    origin=f"world/cameras/{c}", contents=[f"world/cameras/{c}/depth"], name=f"{c} depth"
                ),
            )
            for c in camera_ids
        ]
        layout = rrb.Blueprint(
            rrb.Vertical(
                rrb.Horizontal(
                    rrb.Spatial3DView(origin="world", name="cell (robot base frame)"),
                    *cams,
                    column_shares=[3] + [1] * len(cams),
                ),
                rrb.Horizontal(
                    rrb.TimeSeriesView(origin="joints", name="joints (rad)"),
                    rrb.TextLogView(origin="events", name="events"),
                ),
                row_shares=[3, 2],
            ),
            rrb.TimePanel(timeline="time"),
            collapse_panels=True,
        )
        try:
            self.rec.send_blueprint(layout)
        except Exception as exc:
            log.debug("no default layout: %s", exc)

    # -------------------------------------------------------------------------------------------- dynamic
    def log_frame(self, frame: Frame) -> None:
        """One RGB-D frame of a camera (depth in metres)."""
        path = f"world/cameras/{frame.camera_id}"
        self._log(f"{path}/rgb", self.rr.Image(frame.color))
        self._log(f"{path}/depth", self.rr.DepthImage(frame.depth, meter=1.0 / frame.depth_scale))

    def log_observation(self, camera_id: str, rgb: np.ndarray, xyz_base: np.ndarray, stride: int = 4) -> None:
        """What the policy saw of one camera: RGB, depth (camera-frame z recovered from the base-frame XYZ through
        the calibration) and the base-frame point cloud (every ``stride``-th pixel)."""
        rr = self.rr
        path = f"world/cameras/{camera_id}"
        self._log(f"{path}/rgb", rr.Image(rgb))
        cam = self._cameras.get(camera_id)
        if cam is not None:
            T = cam[1]
            z = np.einsum("j,hwj->hw", T.rotation[:, 2], xyz_base - T.translation)  # optical z, metres
            self._log(f"{path}/depth", rr.DepthImage(np.nan_to_num(z, nan=0.0).astype(np.float32), meter=1.0))
        pts = xyz_base[::stride, ::stride].reshape(-1, 3)
        colors = rgb[::stride, ::stride].reshape(-1, 3)
        ok = np.all(np.isfinite(pts), axis=1)
        self._log(f"world/points/{camera_id}", rr.Points3D(pts[ok], colors=colors[ok], radii=0.002))

    def log_joints(
        self,
        measured: np.ndarray | None = None,
        commanded: np.ndarray | None = None,
        tcp_xyz: np.ndarray | None = None,
    ) -> None:
        """Joint positions (rad) at the current time; the robot model is posed by ``measured``."""
        rr = self.rr
        for kind, q in (("measured", measured), ("commanded", commanded)):
            if q is None:
                continue
            for name, value in zip(self._joint_names, np.asarray(q, np.float64), strict=False):
                self._log(f"joints/{name}/{kind}", rr.Scalars(float(value)))
        if measured is not None and self._urdf is not None:
            for name, value in zip(self._joint_names, np.asarray(measured, np.float64), strict=False):
                joint = self._urdf.get_joint_by_name(name)
                if joint is not None:
                    self._log("world/robot_joints", joint.compute_transform(float(value)))
        if tcp_xyz is not None:
            p = np.asarray(tcp_xyz, np.float64).reshape(3)
            self._trail = [*self._trail[-199:], p]
            self._log("world/tcp/measured", rr.Points3D([p], radii=0.006, colors=[[40, 200, 80]]))
            if len(self._trail) > 1:
                self._log("world/tcp/trail", rr.LineStrips3D([np.stack(self._trail)], colors=[[40, 200, 80]]))

    def log_plan(self, traj: JointTrajectory) -> None:
        """An accepted chunk's joint trajectory: planned joints at the times its waypoints are meant for, and its
        TCP path (forward kinematics) as a line in the 3D view."""
        rr = self.rr
        # a retimed chunk has a waypoint per few ms: at most PLAN_POINTS of them are shown
        pick = np.unique(np.linspace(0, len(traj.t_ns) - 1, min(len(traj.t_ns), PLAN_POINTS)).round().astype(int))
        positions, t_ns = traj.positions[pick], np.asarray(traj.t_ns, np.int64)[pick]
        if self._fk is not None:
            path = np.stack([self._fk(q) for q in positions])
            self._log("world/chunks/tcp_path", rr.LineStrips3D([path], colors=[[255, 140, 0]], radii=0.003))
            self._log("world/chunks/targets", rr.Points3D(path, colors=[[255, 140, 0]], radii=0.005))
        if self._t0_ns is None:
            return
        cols = {name: i for i, name in enumerate(traj.joint_names)}
        times = (t_ns - self._t0_ns) / 1e9
        for name in self._joint_names:
            if name not in cols:
                continue
            try:
                self.rec.send_columns(
                    f"joints/{name}/planned",
                    indexes=[rr.TimeColumn("time", duration=times)],
                    columns=rr.Scalars.columns(scalars=positions[:, cols[name]]),
                )
            except Exception as exc:
                log.debug("planned joints not logged: %s", exc)

    def log_event(self, kind: str, text: str, level: str = "WARN") -> None:
        """A safety or hold event (``kind``: ``hold``, ``safety``, ``stale``, ``transport`` ...)."""
        self._counters[kind] = self._counters.get(kind, 0) + 1
        self._log("events", self.rr.TextLog(f"{kind}: {text}", level=level))
        self._log(f"status/{kind}", self.rr.Scalars(float(self._counters[kind])))

    def log_target(self, xyz: np.ndarray, label: str = "target") -> None:
        """A task target (e.g. the cube to touch), base frame."""
        self.log_marker(f"world/task/{label}", xyz, (220, 30, 30), 0.01)

    def log_marker(self, path: str, xyz: np.ndarray, color: Sequence[int], radius_m: float = 0.005) -> None:
        """One point (base frame, metres) at ``path``."""
        self._log(path, self.rr.Points3D([np.asarray(xyz, np.float64).reshape(3)], radii=radius_m, colors=[color]))

    def on_close(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` first when the view closes (a feeder's worker logs what it still holds)."""
        self._close_hooks.append(hook)

    def close(self) -> None:
        """Flush and close the sinks (the ``.rrd`` file is complete after this)."""
        for hook in self._close_hooks:
            try:
                hook()
            except Exception as exc:
                log.warning("viewer feeder did not close cleanly: %s", exc)
        self._close_hooks.clear()
        try:
            self.rec.flush()
            self.rec.disconnect()
        except Exception as exc:
            log.warning("closing the rerun recording: %s", exc)
        if self.save_path is not None:
            log.info("rerun recording saved: %s (open with `rerun %s`)", self.save_path, self.save_path)

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
