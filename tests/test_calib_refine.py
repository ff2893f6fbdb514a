"""Multi-camera ICP refinement on rendered front + side views, and the health checks that refuse bad ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("open3d")
from scipy.spatial.transform import Rotation  # noqa: E402

from robot_stack.calibration.health import HealthLimits, assess_refinement, constraint_ratio  # noqa: E402
from robot_stack.calibration.projection import DepthProjector  # noqa: E402
from robot_stack.calibration.refine import refine_extrinsics  # noqa: E402
from robot_stack.errors import CalibrationError  # noqa: E402
from robot_stack.types import Pose  # noqa: E402

CROP = ((0.0, -0.5, -0.01), (0.9, 0.5, 0.8))


@pytest.fixture(scope="module")
def rig():  # noqa: ANN201
    from robot_stack.sim.calibration import render_sim_views

    return render_sim_views(("front", "side"), seed=2)


def perturb(pose: Pose, mm: float, deg: float, seed: int = 0) -> Pose:
    rng = np.random.default_rng(seed)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    d = Pose(Rotation.from_rotvec(axis * np.deg2rad(deg)).as_matrix(), direction * mm / 1e3)
    return Pose(d.rotation @ pose.rotation, d.apply(pose.translation), pose.parent, pose.child)


def cloud(view, pose: Pose, crop=CROP) -> np.ndarray:  # noqa: ANN001
    return DepthProjector(view.camera, pose).point_cloud(view.frame.depth, view.frame.depth_scale, crop=crop)


def test_small_error_is_corrected_and_accepted(rig) -> None:
    front, side = rig["front"], rig["side"]
    wrong = perturb(side.truth, 8.0, 0.8)
    result = refine_extrinsics(cloud(front, front.truth), cloud(side, wrong), wrong)
    assert result.accepted, result.health.reasons
    dt, dr = result.T_base_cam.distance_to(side.truth)
    before = wrong.distance_to(side.truth)
    assert dt < 0.003 and np.rad2deg(dr) < 0.2
    assert dt < before[0] / 3 and dr < before[1] / 3
    assert result.health.residual_p50_m < 0.001 < result.health.residual_p50_before_m
    assert result.health.overlap_ratio > 0.5


def test_large_jump_is_refused_as_a_moved_camera(rig) -> None:
    front, side = rig["front"], rig["side"]
    wrong = perturb(side.truth, 60.0, 6.0, seed=1)
    result = refine_extrinsics(cloud(front, front.truth), cloud(side, wrong), wrong)
    assert not result.accepted
    assert any("re-run" in r for r in result.health.reasons)


def test_little_overlap_is_refused(rig) -> None:
    front, side = rig["front"], rig["side"]
    left = ((0.0, -0.5, -0.01), (0.9, -0.05, 0.8))
    right = ((0.0, 0.15, -0.01), (0.9, 0.5, 0.8))
    wrong = perturb(side.truth, 3.0, 0.3)
    result = refine_extrinsics(cloud(front, front.truth, left), cloud(side, wrong, right), wrong)
    assert not result.accepted
    assert any("overlap" in r for r in result.health.reasons)


def test_plane_only_geometry_is_refused(rig) -> None:
    front, side = rig["front"], rig["side"]
    table = ((0.55, -0.5, -0.01), (0.9, 0.5, 0.004))  # table top in front of the robot and the cube: a plane
    wrong = perturb(side.truth, 3.0, 0.3)
    result = refine_extrinsics(cloud(front, front.truth, table), cloud(side, wrong, table), wrong)
    assert not result.accepted  # a plane cannot fix 6 DoF, whatever ICP reports
    assert any("constrains the pose poorly" in r for r in result.health.reasons)


def test_bad_clouds_raise() -> None:
    pts = np.random.default_rng(0).uniform(0, 1, (1000, 3))
    with pytest.raises(CalibrationError, match="finite"):
        refine_extrinsics(np.full((10, 3), np.nan), pts, Pose.identity())
    with pytest.raises(CalibrationError, match="points after"):
        refine_extrinsics(pts[:20], pts, Pose.identity())


def test_health_rules_directly() -> None:
    plane = np.c_[np.random.default_rng(1).uniform(-1, 1, (500, 2)), np.zeros(500)]
    assert constraint_ratio(plane, np.tile([0.0, 0.0, 1.0], (500, 1))) < 1e-6
    ok = assess_refinement(0.9, np.full(100, 0.0005), np.full(100, 0.003), 0.01, 0.004, 0.3, 0.9)
    assert ok.accepted and ok.reasons == ()
    worse = assess_refinement(0.9, np.full(100, 0.002), np.full(100, 0.001), 0.01, 0.004, 0.3, 0.95, HealthLimits())
    assert not worse.accepted and "worse" in worse.reasons[0]


def test_calibrate_check_reports_drift_and_writes_png(tmp_path) -> None:  # noqa: ANN001
    import dataclasses
    import shutil

    from PIL import Image

    from robot_stack.calibration.report import check_scene
    from robot_stack.calibration.store import default_root, load_calibration, save_calibration
    from robot_stack.sim.calibration import render_sim_views

    shutil.copytree(default_root() / "sim_tabletop", tmp_path / "sim_tabletop")
    side = load_calibration("sim_tabletop", "side", tmp_path)
    save_calibration(dataclasses.replace(side, T_base_cam=perturb(side.T_base_cam, 10.0, 0.5, seed=4)), tmp_path)
    views = render_sim_views(("front", "side"), seed=2)
    frames = {c: v.frame for c, v in views.items()}
    truth = {c: v.truth for c, v in views.items()}
    report = check_scene(
        "sim_tabletop", ["front", "side"], frames, root=tmp_path, report_png=tmp_path / "r.png", truth=truth
    )
    entry = report["cameras"]["side"]
    assert entry["stored_vs_ground_truth_mm"] > 9.0
    assert entry["health"]["accepted"] and 7.0 < entry["drift_mm"] < 13.0  # the ICP sees the 10 mm drift
    assert not entry["ok"] and not report["ok"]
    assert Image.open(report["report_png"]).size[0] > 500
    (tmp_path / "sim_tabletop" / "side.yaml").unlink()
    with pytest.raises(CalibrationError, match="no calibration for camera 'side'"):
        check_scene("sim_tabletop", ["front", "side"], frames, root=tmp_path)
