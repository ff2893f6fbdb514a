"""``calibrate check``: validate a scene's calibrations (simulated or recorded) and report drift, with a PNG report.

For every camera but the reference, its stored calibration is refined by ICP against the reference camera
(:func:`~robot_stack.calibration.refine.refine_extrinsics`); the change the refinement wants is the **drift**
since calibration, and the health check says whether that estimate can be trusted. In simulation the stored
files are also compared with MuJoCo ground truth. The PNG report has, per camera, the residual histograms
before/after refinement and an overlay of the reference camera's cloud projected into the camera's image with the
stored extrinsics (points coloured by their depth disagreement: green <= 2 mm ... red >= 10 mm).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.calibration.projection import DepthProjector
from robot_stack.calibration.refine import RefineConfig, RefinementResult, refine_extrinsics
from robot_stack.calibration.store import load_calibration
from robot_stack.errors import CalibrationError
from robot_stack.types import CameraModel, Frame, Pose

__all__ = ["check_scene", "write_report_png"]

log = logging.getLogger("robot_stack.calibration.report")

#: Workspace crop for the clouds compared by ``calibrate check`` (base frame, metres).
CHECK_CROP = ((0.0, -0.5, -0.01), (0.9, 0.5, 0.8))


def _histogram_panel(result: RefinementResult, size: tuple[int, int]) -> Any:
    from PIL import Image, ImageDraw

    w, h = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    edges = np.linspace(0.0, 0.01, 41)
    hb, _ = np.histogram(np.clip(result.residuals_before_m, 0, 0.00999), edges)
    ha, _ = np.histogram(np.clip(result.residuals_after_m, 0, 0.00999), edges)
    top = max(int(hb.max(initial=1)), int(ha.max(initial=1)))
    x0, y0, pw, ph = 40, 30, w - 60, h - 70
    bw = pw / len(hb)
    for i, (b, a) in enumerate(zip(hb, ha, strict=True)):
        for count, colour, dx in ((b, (200, 80, 80), 0.0), (a, (60, 140, 60), 0.5)):
            bar_h = ph * count / top
            draw.rectangle(
                [x0 + i * bw + dx * bw, y0 + ph - bar_h, x0 + i * bw + dx * bw + bw / 2, y0 + ph], fill=colour
            )
    draw.line([x0, y0 + ph, x0 + pw, y0 + ph], fill="black")
    for mm in range(0, 11, 2):
        x = x0 + pw * mm / 10
        draw.text((x - 4, y0 + ph + 4), f"{mm}", fill="black")
    health = result.health
    draw.text((x0, 5), "point-to-plane residual (mm): red before, green after ICP", fill="black")
    verdict = "ACCEPTED" if health.accepted else "REFUSED"
    draw.text(
        (x0, h - 22),
        f"{verdict}  drift {health.change_m * 1e3:.1f} mm / {health.change_deg:.2f} deg  "
        f"overlap {health.overlap_ratio:.0%}  p50 {health.residual_p50_m * 1e3:.2f} mm",
        fill=(0, 120, 0) if health.accepted else (180, 0, 0),
    )
    return img


def _overlay_panel(frame: Frame, camera: CameraModel, T_base_cam: Pose, reference_xyz: np.ndarray) -> Any:
    """The camera's image with the reference cloud projected in, coloured by depth disagreement."""
    from PIL import Image

    img = frame.color.copy()
    pts_cam = T_base_cam.inverse().apply(reference_xyz.astype(np.float64))
    front = pts_cam[:, 2] > 0.05
    pts_cam = pts_cam[front]
    u = np.round(camera.fx * pts_cam[:, 0] / pts_cam[:, 2] + camera.cx).astype(int)
    v = np.round(camera.fy * pts_cam[:, 1] / pts_cam[:, 2] + camera.cy).astype(int)
    inside = (u >= 0) & (u < camera.width) & (v >= 0) & (v < camera.height)
    u, v, z = u[inside], v[inside], pts_cam[inside, 2]
    measured = frame.depth[v, u].astype(np.float64) * frame.depth_scale
    ok = measured > 0
    err = np.abs(measured[ok] - z[ok])
    t = np.clip((err - 0.002) / 0.008, 0.0, 1.0)
    colours = np.stack([255 * t, 255 * (1 - t), np.zeros_like(t)], axis=1).astype(np.uint8)
    step = max(1, ok.sum() // 20000)
    img[v[ok][::step], u[ok][::step]] = colours[::step]
    return Image.fromarray(img)


def write_report_png(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, RefinementResult, Frame, CameraModel, Pose, np.ndarray]],
) -> Path:
    """Write the calibration report: one row per checked camera (residual histogram | overlay image).

    Args:
        panels: ``(camera_id, refinement, frame, intrinsics, stored T_base_cam, reference cloud (N, 3))`` rows.
    """
    from PIL import Image, ImageDraw

    rows = []
    for camera_id, result, frame, camera, T_base_cam, reference in panels:
        overlay = _overlay_panel(frame, camera, T_base_cam, reference)
        overlay = overlay.resize((480, round(480 * overlay.height / overlay.width)))
        hist = _histogram_panel(result, (520, overlay.height))
        row = Image.new("RGB", (hist.width + overlay.width, overlay.height + 20), "white")
        row.paste(hist, (0, 20))
        row.paste(overlay, (hist.width, 20))
        ImageDraw.Draw(row).text((5, 3), f"camera {camera_id}: residuals and reference cloud overlay", fill="black")
        rows.append(row)
    if not rows:
        raise CalibrationError("write_report_png: nothing to report (no camera was checked)")
    out = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows)), "white")
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    out.save(target)
    return target


def check_scene(
    scene: str,
    camera_ids: Sequence[str],
    frames: Mapping[str, Frame],
    reference: str | None = None,
    root: str | os.PathLike[str] | None = None,
    report_png: str | os.PathLike[str] | None = None,
    config: RefineConfig = RefineConfig(),  # noqa: B008 - frozen
    *,
    truth: Mapping[str, Pose] | None = None,
) -> dict[str, Any]:
    """Validate the calibrations of ``camera_ids`` in ``scene`` and estimate their drift.

    Args:
        frames: one aligned frame per camera (live, from recordings, or rendered by the simulator:
            :func:`robot_stack.sim.calibration.render_sim_views`).
        truth: ground-truth ``T_base_cam`` per camera where known (the simulator): the stored calibration's error
            against it is reported too.
        reference: the camera whose calibration is trusted (default: the first).
        report_png: where to write the PNG report (optional).

    Returns:
        A JSON-ready dict: per camera the stored method/age, drift (mm/deg), health figures and verdict.

    Raises:
        CalibrationError: a calibration is missing/stale/malformed, fewer than 2 cameras, or no frames.
    """
    if len(camera_ids) < 2:
        raise CalibrationError("calibrate check needs at least two overlapping cameras (reference + checked)")
    calibrations = {c: load_calibration(scene, c, root) for c in camera_ids}
    truth = truth or {}
    missing = [c for c in camera_ids if c not in frames]
    if missing:
        raise CalibrationError(f"calibrate check: no frame for camera(s) {missing}")
    ref_id = reference or camera_ids[0]
    models = {c: calibrations[c].intrinsics_at(frames[c].depth.shape[1], frames[c].depth.shape[0]) for c in camera_ids}

    def cloud(c: str) -> np.ndarray:
        f = frames[c]
        return DepthProjector(models[c], calibrations[c].T_base_cam).point_cloud(f.depth, f.depth_scale, CHECK_CROP)

    ref_cloud = cloud(ref_id)
    out: dict[str, Any] = {"scene": scene, "reference": ref_id, "cameras": {}}
    panels = []
    for c in camera_ids:
        cal = calibrations[c]
        entry: dict[str, Any] = {
            "method": cal.method,
            "age_days": round(cal.age_days(), 2),
            "serial": cal.camera_serial,
        }
        if c in truth:
            dt, dr = cal.T_base_cam.distance_to(Pose(truth[c].rotation, truth[c].translation))
            entry["stored_vs_ground_truth_mm"] = round(dt * 1e3, 3)
            entry["stored_vs_ground_truth_deg"] = round(float(np.rad2deg(dr)), 4)
        if c != ref_id:
            result = refine_extrinsics(ref_cloud, cloud(c), cal.T_base_cam, config)
            entry["drift_mm"] = round(result.health.change_m * 1e3, 3)
            entry["drift_deg"] = round(result.health.change_deg, 4)
            entry["health"] = result.health.as_dict()
            entry["ok"] = bool(result.accepted and result.health.change_m < 0.005 and result.health.change_deg < 0.5)
            panels.append((c, result, frames[c], models[c], cal.T_base_cam, ref_cloud))
        out["cameras"][c] = entry
    out["ok"] = all(e.get("ok", True) for e in out["cameras"].values())
    if report_png is not None and panels:
        out["report_png"] = str(write_report_png(report_png, panels))
    return out
