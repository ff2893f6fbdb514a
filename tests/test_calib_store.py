"""Calibration files: YAML round trip, strict loading (missing / malformed / stale / misplaced), listing."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from robot_stack.calibration.mujoco_truth import calibration_from_mujoco
from robot_stack.calibration.store import (
    ENV_CALIBRATION_DIR,
    CameraCalibration,
    calibration_path,
    default_root,
    list_calibrations,
    load_calibration,
    save_calibration,
)
from robot_stack.errors import CalibrationError
from robot_stack.types import CameraModel, Pose

CREATED = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
REPO_CALIBRATION = Path(__file__).resolve().parents[1] / "calibration"


def _calibration(scene: str = "lab_bench", camera_id: str = "wrist", valid_days: float = 30.0) -> CameraCalibration:
    camera = CameraModel(848, 480, 421.7, 421.3, 424.9, 241.2, np.array([-0.0551, 0.0632, -0.00021, 0.00043, -0.0201]))
    pose = Pose.from_quat_xyz(np.array([0.1, 0.7, -0.69, 0.12]), np.array([0.512, -0.331, 0.874]), "base", camera_id)
    return CameraCalibration(
        scene=scene,
        camera_id=camera_id,
        camera_serial="0123456789",
        robot="panda",
        camera=camera,
        T_base_cam=pose,
        method="hand_eye_tsai",
        created=CREATED,
        valid_days=valid_days,
        residuals={"reprojection_rms_px": 0.23, "n_views": 18, "per_view_px": [0.2, 0.25]},
    )


def _write_doc(root: Path, doc: dict, scene: str = "lab_bench", camera_id: str = "wrist") -> Path:
    path = root / scene / f"{camera_id}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_yaml_round_trip_is_exact(tmp_path: Path) -> None:
    cal = _calibration()
    path = save_calibration(cal, tmp_path)
    assert path == tmp_path / "lab_bench" / "wrist.yaml" == calibration_path("lab_bench", "wrist", tmp_path)
    loaded = load_calibration("lab_bench", "wrist", root=tmp_path, now=CREATED + timedelta(days=1))
    assert (loaded.scene, loaded.camera_id, loaded.camera_serial, loaded.robot, loaded.method) == (
        "lab_bench",
        "wrist",
        "0123456789",
        "panda",
        "hand_eye_tsai",
    )
    for attr in ("width", "height", "fx", "fy", "cx", "cy"):
        assert getattr(loaded.camera, attr) == getattr(cal.camera, attr), attr
    np.testing.assert_array_equal(loaded.camera.distortion, cal.camera.distortion)
    np.testing.assert_allclose(loaded.T_base_cam.matrix, cal.T_base_cam.matrix, atol=1e-12)
    assert (loaded.T_base_cam.parent, loaded.T_base_cam.child) == ("base", "wrist")
    assert loaded.created == CREATED and loaded.valid_days == 30.0
    assert dict(loaded.residuals) == {"reprojection_rms_px": 0.23, "n_views": 18, "per_view_px": [0.2, 0.25]}
    # The projector built from the file is the one built from the value.
    depth = np.random.default_rng(0).integers(0, 3000, size=(480, 848), dtype=np.uint16)
    np.testing.assert_array_equal(loaded.projector().to_xyz(depth, 0.001), cal.projector().to_xyz(depth, 0.001))
    # The file is plain, human-readable YAML with the documented top-level keys.
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == [
        "schema_version",
        "scene",
        "camera_id",
        "camera_serial",
        "robot",
        "intrinsics",
        "extrinsics",
        "method",
        "residuals",
        "created",
        "valid_days",
    ]
    assert doc["created"] == "2025-03-01T12:00:00Z"
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temp file


def test_missing_file_names_the_path_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError) as err:
        load_calibration("sim_tabletop", "side", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "sim_tabletop" / "side.yaml") in message
    assert "python -m robot_stack.sim.calibration --scene sim_tabletop --camera side" in message
    with pytest.raises(CalibrationError) as err:
        load_calibration("my_cell", "front", root=tmp_path)
    message = str(err.value)
    assert str(tmp_path / "my_cell" / "front.yaml") in message
    # the hint names the command that writes the file (issue 15: CLI flags, not Python calls)
    assert "robot-stack calibrate hand-eye --scene my_cell --camera front" in message and "--write" in message
    assert "save_calibration" not in message


def test_env_var_overrides_the_default_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_CALIBRATION_DIR, raising=False)
    assert default_root() == REPO_CALIBRATION
    monkeypatch.setenv(ENV_CALIBRATION_DIR, str(tmp_path))
    assert default_root() == tmp_path
    save_calibration(_calibration())
    assert (tmp_path / "lab_bench" / "wrist.yaml").is_file()
    assert load_calibration("lab_bench", "wrist", now=CREATED).camera_serial == "0123456789"


def test_stale_calibration_is_refused_unless_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    save_calibration(_calibration(valid_days=30.0), tmp_path)
    fresh = CREATED + timedelta(days=29.9)
    stale = CREATED + timedelta(days=30.1)
    assert not load_calibration("lab_bench", "wrist", root=tmp_path, now=fresh).is_stale(fresh)
    with pytest.raises(CalibrationError) as err:
        load_calibration("lab_bench", "wrist", root=tmp_path, now=stale)
    message = str(err.value)
    assert "stale" in message and "30 days" in message and "Recalibrate" in message and "allow_stale" in message
    with caplog.at_level(logging.WARNING, logger="robot_stack.calibration"):
        cal = load_calibration("lab_bench", "wrist", root=tmp_path, now=stale, allow_stale=True)
    assert cal.is_stale(stale)
    assert any("stale" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


def _valid_doc() -> dict:
    return _calibration().to_dict()


def _set(doc: dict, dotted: str, value: object) -> dict:
    *parents, leaf = dotted.split(".")
    node = doc
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[leaf]
    else:
        node[leaf] = value
    return doc


_DELETE = object()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("intrinsics.fx", _DELETE),
        ("intrinsics.fx", -400.0),
        ("intrinsics.width", "848"),
        ("intrinsics.distortion", [0.1, 0.2]),
        ("extrinsics.quaternion_wxyz", [1.0, 1.0, 0.0, 0.0]),
        ("extrinsics.translation_xyz_m", [0.1, float("nan"), 0.2]),
        ("extrinsics.parent_frame", _DELETE),
        ("created", "yesterday"),
        ("valid_days", 0),
        ("schema_version", 99),
        ("method", _DELETE),
        ("residuals", [1, 2]),
    ],
)
def test_malformed_file_names_the_field(tmp_path: Path, field: str, value: object) -> None:
    path = _write_doc(tmp_path, _set(_valid_doc(), field, value))
    with pytest.raises(CalibrationError) as err:
        load_calibration("lab_bench", "wrist", root=tmp_path, now=CREATED)
    message = str(err.value)
    assert str(path) in message and repr(field) in message


def test_unparseable_or_non_mapping_file_is_malformed(tmp_path: Path) -> None:
    path = tmp_path / "lab_bench" / "wrist.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("intrinsics: [unclosed\n")
    with pytest.raises(CalibrationError, match="not readable YAML"):
        load_calibration("lab_bench", "wrist", root=tmp_path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(CalibrationError, match="must be a mapping"):
        load_calibration("lab_bench", "wrist", root=tmp_path)


def test_file_for_another_camera_is_refused(tmp_path: Path) -> None:
    _write_doc(tmp_path, _valid_doc(), camera_id="front")  # content says camera "wrist"
    with pytest.raises(CalibrationError, match="copied or renamed"):
        load_calibration("lab_bench", "front", root=tmp_path, now=CREATED)


def test_names_cannot_escape_the_root(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="not a valid name"):
        load_calibration("../etc", "front", root=tmp_path)
    with pytest.raises(CalibrationError, match="not a valid name"):
        _calibration(camera_id="a/b")


def test_list_calibrations(tmp_path: Path) -> None:
    assert list_calibrations(tmp_path / "nowhere") == []
    save_calibration(_calibration("lab_bench", "wrist"), tmp_path)
    save_calibration(_calibration("lab_bench", "front"), tmp_path)
    save_calibration(_calibration("cell_b", "top"), tmp_path)
    (tmp_path / "README.md").write_text("not a calibration")
    refs = list_calibrations(tmp_path)
    assert [(r.scene, r.camera_id) for r in refs] == [("cell_b", "top"), ("lab_bench", "front"), ("lab_bench", "wrist")]
    assert all(r.path.is_file() for r in refs)


# ------------------------------------------------------------------------------------------------- MuJoCo

_XML = """
<mujoco>
  <worldbody>
    <body name="mount" pos="0.3 -0.2 0.5" euler="0 0 30">
      <camera name="cam" pos="0.1 0 0.4" xyaxes="0 -1 0 0.6 0 0.8" fovy="45"/>
    </body>
  </worldbody>
</mujoco>
"""


def test_calibration_from_mujoco_composes_with_the_base_pose() -> None:
    model = mujoco.MjModel.from_xml_string(_XML)
    data = mujoco.MjData(model)
    with pytest.raises(CalibrationError, match="mj_forward"):
        calibration_from_mujoco(model, data, "cam", 640, 480, "unit_scene")
    mujoco.mj_forward(model, data)
    cal = calibration_from_mujoco(model, data, "cam", 640, 480, "unit_scene", created=CREATED)
    cam_id = model.camera("cam").id
    r_world_mjcam = data.cam_xmat[cam_id].reshape(3, 3)
    # Optical z (forward) is MuJoCo's camera -z; optical y (down) is MuJoCo's -y.
    np.testing.assert_allclose(cal.T_base_cam.rotation[:, 2], -r_world_mjcam[:, 2], atol=1e-12)
    np.testing.assert_allclose(cal.T_base_cam.rotation[:, 1], -r_world_mjcam[:, 1], atol=1e-12)
    np.testing.assert_allclose(cal.T_base_cam.translation, data.cam_xpos[cam_id], atol=1e-12)
    assert (cal.T_base_cam.parent, cal.T_base_cam.child, cal.method) == ("base", "cam", "sim_ground_truth")
    assert cal.camera.fy == pytest.approx(240.0 / np.tan(np.deg2rad(22.5)))

    T_world_base = Pose.from_quat_xyz(np.array([0.96, 0.0, 0.0, 0.28]), np.array([0.2, 0.1, 0.05]), "world", "base")
    moved = calibration_from_mujoco(model, data, "cam", 640, 480, "unit_scene", T_world_base=T_world_base)
    np.testing.assert_allclose((T_world_base @ moved.T_base_cam).matrix, cal.T_base_cam.matrix, atol=1e-12)
    with pytest.raises(CalibrationError, match="parent frame"):
        calibration_from_mujoco(model, data, "cam", 640, 480, "s", T_world_base=Pose.identity("odom", "base"))
    with pytest.raises(CalibrationError, match="no camera"):
        calibration_from_mujoco(model, data, "nope", 640, 480, "s")


def test_shipped_sim_calibration_matches_the_sim_scene() -> None:
    """calibration/sim_tabletop/front.yaml must equal the ground truth of the current demo scene."""
    scene = pytest.importorskip("robot_stack.sim.scene")
    shipped = load_calibration("sim_tabletop", "front", root=REPO_CALIBRATION)
    model = scene.build_model(scene.SceneConfig())
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    truth = calibration_from_mujoco(
        model,
        data,
        "front",
        shipped.camera.width,
        shipped.camera.height,
        "sim_tabletop",
        T_world_base=scene.T_WORLD_BASE,
    )
    hint = "the demo scene changed: run `python -m robot_stack.sim.calibration --scene sim_tabletop --camera front`"
    assert np.allclose(truth.T_base_cam.matrix, shipped.T_base_cam.matrix, atol=1e-9), hint
    assert (truth.camera.fx, truth.camera.fy, truth.camera.cx, truth.camera.cy) == pytest.approx(
        (shipped.camera.fx, shipped.camera.fy, shipped.camera.cx, shipped.camera.cy), abs=1e-9
    ), hint
    assert shipped.method == "sim_ground_truth" and shipped.T_base_cam.parent == "base"
