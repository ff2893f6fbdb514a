"""``robot-stack calibrate hand-eye | intrinsics | check``: command-line entry points of the calibration tools.

Wire into the main CLI with ``add_calibrate_parser(subparsers, sim_tools)``. The simulated cell runs everything
automatically (``--sim``); recordings (``--recording CAMERA=FILE.db3``) feed ``check`` and ``intrinsics``.

The simulator sits above calibration in the layer order (docs/architecture.md), so this module never imports it:
the entry point that assembles the CLI passes ``sim_tools``, a zero-argument callable returning the module (or any
object) with :class:`SimCalibrationTools`' functions, imported only when a ``--sim`` command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from robot_stack.errors import CalibrationError, ConfigError

__all__ = ["SimCalibrationTools", "add_calibrate_parser"]

log = logging.getLogger("robot_stack.calibration")


class SimCalibrationTools(Protocol):
    """What ``--sim`` needs from the simulator (:mod:`robot_stack.sim.handeye`, :mod:`robot_stack.sim.calibration`)."""

    def run_sim_hand_eye(self, **kwargs: Any) -> Any: ...

    def render_board_views(self, **kwargs: Any) -> Any: ...

    def render_sim_views(self, camera_ids: Sequence[str], seed: int = 0) -> Mapping[str, Any]: ...


def _sim(args: argparse.Namespace) -> SimCalibrationTools:
    if args.sim_tools is None:
        raise ConfigError("--sim needs the simulator (robot_stack.sim), which this entry point did not provide")
    return args.sim_tools()


def _recordings(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--recording expects CAMERA=FILE.db3, got {item!r}")
        out[name] = path
    return out


def _frames_from_recordings(recordings: dict[str, str], n: int = 1) -> dict[str, list[Any]]:
    from robot_stack.cameras.realsense import RealSenseCamera, RealSenseConfig

    frames: dict[str, list[Any]] = {}
    for name, path in recordings.items():
        camera = RealSenseCamera(RealSenseConfig(camera_id=name, playback_path=path, real_time=False, reconnect=False))
        with camera:
            frames[name] = [camera.read(2.0) for _ in range(n)]
    return frames


def _emit(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key}: {value}")


def _load_robot_factory(spec: str) -> Any:
    """``package.module:function`` -> the function (which returns a connected :class:`Robot`)."""
    from robot_stack.config import import_object

    return import_object(spec, "--robot (the robot factory)")


def _cmd_hand_eye_hardware(args: argparse.Namespace) -> int:
    """Guided collection on a real robot: the operator moves the arm, Enter records a station."""
    from robot_stack.calibration.charuco import DEFAULT_BOARD
    from robot_stack.calibration.handeye_collect import HandEyeCollector, collect_stations
    from robot_stack.cameras.realsense import RealSenseCamera, RealSenseConfig

    if not args.robot:
        raise ConfigError(
            "hand-eye on hardware needs --robot package.module:factory (a function returning your connected "
            "robot_stack Robot) and --serial of the RealSense; or run with --sim to see the procedure in the simulator"
        )
    robot = _load_robot_factory(args.robot)()
    camera = RealSenseCamera(RealSenseConfig(camera_id=args.camera, serial=args.serial))
    camera.start()
    try:
        collector = HandEyeCollector(robot, camera, DEFAULT_BOARD, mode=args.mode)
        print(
            f"Mount the {DEFAULT_BOARD.squares_x}x{DEFAULT_BOARD.squares_y} ChArUco board "
            + ("on the flange" if args.mode == "eye_to_hand" else "fixed in the cell")
            + f". Visit {args.poses} stations: change position AND rotate about different axes (>= 10 deg)."
        )

        def move(k: int) -> bool:
            answer = input(f"[{k + 1}/{args.poses}] move the arm, let it settle, press Enter (q = done): ")
            return answer.strip().lower() != "q"

        collect_stations(collector, move, args.poses, say=print)
        result = collector.calibrate(args.method, refine=not args.no_refine)
    finally:
        camera.stop()
    out: dict[str, Any] = {"method": result.method, "mode": result.mode, "stations": len(collector.samples)}
    out.update(result.residuals())
    out["rejected"] = list(result.rejected)
    if args.write and args.mode == "eye_to_hand":
        return _write_gated(args, out, result, camera.model, args.serial or "unknown", args.robot)
    _emit(out, args.json)
    return 0


def _write_gated(
    args: argparse.Namespace, out: dict[str, Any], result: Any, camera: Any, serial: str, robot: str
) -> int:
    """Save the result unless its reprojection RMS fails the gate (``--accept-rms-px`` overrides); print ``out``
    either way; exit code 0 when written, 1 when refused."""
    from robot_stack.calibration.handeye import REPROJECTION_GATE_PX, check_reprojection_gate

    gate = REPROJECTION_GATE_PX if args.accept_rms_px is None else args.accept_rms_px
    try:
        check_reprojection_gate(result, gate, flag="--accept-rms-px")
    except CalibrationError as exc:
        out["written"] = None
        _emit(out, args.json)
        log.error("%s", exc)
        return 1
    out["written"] = _save_hand_eye(args, result, camera, serial, robot)
    _emit(out, args.json)
    return 0


def _save_hand_eye(args: argparse.Namespace, result: Any, camera: Any, serial: str, robot: str) -> str:
    """Write an eye-to-hand result as ``calibration/<scene>/<camera>.yaml`` (valid 30 days); return the path."""
    from datetime import datetime, timezone

    from robot_stack.calibration.store import CameraCalibration, save_calibration

    cal = CameraCalibration(
        scene=args.scene,
        camera_id=args.camera,
        camera_serial=serial,
        robot=robot,
        camera=camera,
        T_base_cam=result.X,
        method=f"hand_eye_{result.method.replace('+', '_')}",
        created=datetime.now(timezone.utc),
        valid_days=30.0,
        residuals=result.residuals(),
    )
    return str(save_calibration(cal, args.root))


def _cmd_hand_eye(args: argparse.Namespace) -> int:
    if not args.sim:
        return _cmd_hand_eye_hardware(args)
    report = _sim(args).run_sim_hand_eye(
        n_poses=args.poses,
        seed=args.seed,
        method=args.method,
        refine=not args.no_refine,
        camera_name=args.camera,
        corner_noise_px=args.corner_noise_px,
        perturb_stations=args.perturb_stations,
    )
    result = report.result
    out: dict[str, Any] = {
        "method": result.method,
        "mode": result.mode,
        "poses_tried": report.n_poses_tried,
        "poses_used": report.n_detected - len(result.rejected),
        "rejected": list(result.rejected),
        "error_vs_ground_truth_mm": round(report.translation_error_m * 1e3, 4),
        "error_vs_ground_truth_deg": round(float(np.rad2deg(report.rotation_error_rad)), 5),
        **result.residuals(),
        "T_base_cam_xyz_m": np.round(result.X.translation, 5).tolist(),
        "T_base_cam_quat_wxyz": np.round(result.X.quat_wxyz(), 6).tolist(),
    }
    if args.perturb_stations:
        out["perturbed"] = list(report.perturbed)
        out.update({f"outliers_{k}" if k != "good_dropped" else k: v for k, v in report.outlier_summary().items()})
    if args.write:
        return _write_gated(args, out, result, report.camera, f"sim:{args.camera}", "panda")
    _emit(out, args.json)
    return 0


def _cmd_intrinsics(args: argparse.Namespace) -> int:
    from robot_stack.calibration.charuco import DEFAULT_BOARD, calibrate_intrinsics, detect_board

    if args.sim:
        views = _sim(args).render_board_views(n_poses=args.poses, seed=args.seed, max_tilt_deg=45.0)
        images, truth = list(views.images), views.camera
    else:
        recordings = _recordings(args.recording)
        if len(recordings) != 1:
            raise ConfigError("intrinsics: give --sim or exactly one --recording CAMERA=FILE.db3")
        frames = next(iter(_frames_from_recordings(recordings, args.poses).values()))
        images, truth = [f.color for f in frames], None
    detections = []
    for image in images:
        try:
            detections.append(detect_board(image, DEFAULT_BOARD))
        except CalibrationError as exc:
            log.info("view skipped: %s", exc)
    result = calibrate_intrinsics(detections)
    cam = result.camera
    out: dict[str, Any] = {
        "views_used": result.n_views,
        "rms_px": round(result.rms_px, 4),
        "fx": round(cam.fx, 3),
        "fy": round(cam.fy, 3),
        "cx": round(cam.cx, 3),
        "cy": round(cam.cy, 3),
        "distortion": np.round(cam.distortion, 5).tolist(),
    }
    if truth is not None:
        out["fx_error_pct"] = round(100 * (cam.fx - truth.fx) / truth.fx, 3)
    _emit(out, args.json)
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from robot_stack.calibration.report import check_scene

    recordings = _recordings(args.recording)
    cameras = args.cameras.split(",") if args.cameras else list(recordings) or ["front", "side"]
    truth = None
    if recordings:
        frames = {name: fs[0] for name, fs in _frames_from_recordings(recordings).items()}
    elif args.scene.startswith("sim"):
        views = _sim(args).render_sim_views(tuple(cameras), seed=args.seed)
        frames = {c: v.frame for c, v in views.items()}
        truth = {c: v.truth for c, v in views.items()}
    else:
        raise ConfigError(f"scene {args.scene!r} is not simulated; give --recording CAMERA=FILE.db3 for each camera")
    report = check_scene(args.scene, cameras, frames, args.reference, args.root, args.report, truth=truth)
    _emit(report, args.json)
    return 0 if report["ok"] else 1


def add_calibrate_parser(
    subparsers: Any, sim_tools: Callable[[], SimCalibrationTools] | None = None
) -> argparse.ArgumentParser:
    """Add ``calibrate {hand-eye,intrinsics,check}`` to a main parser's subparsers; return the ``calibrate`` parser.
    ``sim_tools`` provides the simulator for ``--sim`` (see the module docstring)."""
    from robot_stack.calibration.handeye import HAND_EYE_METHODS

    calibrate = subparsers.add_parser("calibrate", help="camera calibration: hand-eye, intrinsics, check")
    calibrate.set_defaults(sim_tools=sim_tools)
    sub = calibrate.add_subparsers(dest="calibrate_command", required=True)

    he = sub.add_parser("hand-eye", help="hand-eye calibration (automatic in the simulator with --sim)")
    he.add_argument("--sim", action="store_true", help="run the automatic procedure in the simulated cell")
    he.add_argument("--robot", help="hardware: package.module:factory returning your connected Robot")
    he.add_argument("--serial", help="hardware: RealSense serial number (default: the only one connected)")
    he.add_argument("--mode", default="eye_to_hand", choices=["eye_to_hand", "eye_in_hand"])
    he.add_argument("--scene", default="sim_tabletop")
    he.add_argument("--camera", default="front")
    he.add_argument("--method", default="park", choices=HAND_EYE_METHODS)
    he.add_argument("--poses", type=int, default=15, help="robot stations (default 15)")
    he.add_argument("--seed", type=int, default=0, help="draws the pose set")
    he.add_argument("--no-refine", action="store_true", help="skip the reprojection refinement")
    he.add_argument(
        "--write",
        action="store_true",
        help="save calibration/<scene>/<camera>.yaml (refused when the reprojection RMS exceeds 1 px)",
    )
    he.add_argument(
        "--accept-rms-px",
        type=float,
        default=None,
        metavar="PX",
        help="with --write: save even if the reprojection RMS is up to PX pixels (override of the 1 px gate)",
    )
    he.add_argument(
        "--corner-noise-px", type=float, default=0.0, help="--sim drill: Gaussian noise added to detected corners"
    )
    he.add_argument(
        "--perturb-stations",
        type=int,
        default=0,
        help="--sim drill: misread the robot pose of N stations by 5-20 mm and 1-5 deg",
    )
    he.add_argument("--root", default=None, help="calibration folder")
    he.add_argument("--json", action="store_true")
    he.set_defaults(func=_cmd_hand_eye)

    intr = sub.add_parser("intrinsics", help="intrinsics + distortion from ChArUco views")
    intr.add_argument("--sim", action="store_true", help="render the board in the simulated cell")
    intr.add_argument("--recording", action="append", help="CAMERA=FILE.db3 with the board moved around")
    intr.add_argument("--poses", type=int, default=12, help="views (default 12)")
    intr.add_argument("--seed", type=int, default=0)
    intr.add_argument("--json", action="store_true")
    intr.set_defaults(func=_cmd_intrinsics)

    check = sub.add_parser("check", help="validate a scene's calibrations and report drift (+ PNG report)")
    check.add_argument("--scene", default="sim_tabletop")
    check.add_argument("--cameras", help="comma-separated camera ids (default: front,side or the recordings)")
    check.add_argument("--reference", help="trusted camera (default: the first)")
    check.add_argument("--recording", action="append", help="CAMERA=FILE.db3 (repeat); default: render the sim")
    check.add_argument("--report", help="write the PNG report here")
    check.add_argument("--root", default=None, help="calibration folder")
    check.add_argument("--seed", type=int, default=0, help="simulated scene layout")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func=_cmd_check)
    return calibrate
