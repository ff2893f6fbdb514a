"""Ground truth: depth rendered by MuJoCo, projected with the sim-truth calibration, lands on the true surfaces.

A tiny scene is built here (floor plane, a tilted plane, a box) and rendered at 640x480 with ``mujoco.Renderer``
(depth + segmentation). Depth is quantised to uint16 millimetres like a RealSense frame, projected with
:class:`DepthProjector`, and every point is checked against the analytic surface its pixel belongs to.
"""

from __future__ import annotations

import importlib
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # only effective if this is the first import of mujoco in the process

from collections.abc import Iterator  # noqa: E402

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from robot_stack.calibration.mujoco_truth import calibration_from_mujoco  # noqa: E402
from robot_stack.types import Pose  # noqa: E402

W, H = 640, 480
BOX_CENTER = np.array([0.42, 0.16, 0.05])
BOX_HALF = np.array([0.05, 0.06, 0.05])  # top face at z = 0.10 m
RAMP_POS = np.array([0.55, -0.22, 0.15])
RAMP_HALF = 0.15
RAMP_PITCH_DEG = 30.0  # normal tilted towards +x (towards the camera)
CAM_POS = np.array([1.2, 0.1, 0.85])
CAM_TARGET = np.array([0.45, 0.0, 0.05])


def _look_at_xyaxes(pos: np.ndarray, target: np.ndarray) -> str:
    forward = (target - pos) / np.linalg.norm(target - pos)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.12f}" for v in (*right, *up))


def _scene_xml() -> str:
    return f"""
<mujoco>
  <statistic extent="2" center="0.5 0 0.3"/>
  <visual>
    <global offwidth="{W}" offheight="{H}"/>
    <map znear="0.05" zfar="5"/>
    <quality offsamples="0"/>
  </visual>
  <worldbody>
    <geom name="floor" type="plane" size="0 0 1"/>
    <geom name="ramp" type="plane" size="{RAMP_HALF} {RAMP_HALF} 0.01" pos="{" ".join(map(str, RAMP_POS))}"
          euler="0 {RAMP_PITCH_DEG} 0"/>
    <geom name="box" type="box" size="{" ".join(map(str, BOX_HALF))}" pos="{" ".join(map(str, BOX_CENTER))}"/>
    <camera name="front" pos="{" ".join(map(str, CAM_POS))}" xyaxes="{_look_at_xyaxes(CAM_POS, CAM_TARGET)}"
            fovy="50"/>
  </worldbody>
</mujoco>
"""


def _gl_backend() -> str:
    try:
        from robot_stack.sim.camera import select_gl_backend

        return select_gl_backend()
    except ImportError:
        return os.environ.get("MUJOCO_GL", "egl")


@pytest.fixture(scope="module")
def rendered() -> Iterator[tuple[mujoco.MjModel, mujoco.MjData, np.ndarray, np.ndarray]]:
    """(model, data, depth (H, W) float32 metres along the optical axis, geom id per pixel (H, W) int32)."""
    model = mujoco.MjModel.from_xml_string(_scene_xml())
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    # mujoco picks its default GL backend at first import; make the Renderer use a headless one regardless.
    from mujoco.rendering.classic import gl_context

    mp = pytest.MonkeyPatch()
    try:
        mp.setattr(gl_context, "GLContext", importlib.import_module(f"mujoco.{_gl_backend()}").GLContext)
        renderer = mujoco.Renderer(model, H, W)
    except Exception as exc:  # no headless OpenGL here: the geometry is still covered by the other tests
        mp.undo()
        pytest.skip(f"no headless OpenGL for MuJoCo rendering: {exc}")
    try:
        renderer.update_scene(data, camera="front")
        renderer.enable_depth_rendering()
        depth = renderer.render().copy()
        renderer.disable_depth_rendering()
        renderer.enable_segmentation_rendering()
        seg = renderer.render().copy()
        renderer.disable_segmentation_rendering()
    finally:
        renderer.close()
        mp.undo()
    geom_ids = np.where(seg[..., 1] == int(mujoco.mjtObj.mjOBJ_GEOM), seg[..., 0], -1)
    yield model, data, depth, geom_ids


def _eroded(mask: np.ndarray, r: int = 2) -> np.ndarray:
    """Mask minus a border of ``r`` pixels (drops silhouette edges, where depth and labels may disagree)."""
    out = mask.copy()
    for dv in range(-r, r + 1):
        for du in range(-r, r + 1):
            out &= np.roll(np.roll(mask, dv, axis=0), du, axis=1)
    out[:r], out[-r:], out[:, :r], out[:, -r:] = False, False, False, False
    return out


def _assert_within_1mm(distances_m: np.ndarray, what: str) -> None:
    assert distances_m.size > 500, f"{what}: only {distances_m.size} pixels see it"
    median, p95 = np.median(distances_m), np.percentile(distances_m, 95)
    assert median < 1e-3 and p95 < 1e-3, f"{what}: median {median * 1e3:.3f} mm, p95 {p95 * 1e3:.3f} mm"


@pytest.mark.parametrize(
    "T_world_base",
    [
        Pose.identity("world", "base"),
        # A base that is not at the world origin: points must come out in *its* frame.
        Pose.from_quat_xyz(np.array([0.98, 0.0, 0.0, 0.2]), np.array([0.1, -0.05, 0.02]), "world", "base"),
    ],
    ids=["base_is_world", "moved_base"],
)
def test_projected_depth_lies_on_true_surfaces(
    rendered: tuple[mujoco.MjModel, mujoco.MjData, np.ndarray, np.ndarray], T_world_base: Pose
) -> None:
    model, data, depth_m, geom_ids = rendered
    cal = calibration_from_mujoco(model, data, "front", W, H, "unit_scene", T_world_base=T_world_base)
    max_range = 1.9  # the far floor (up to ~2.1 m) is beyond range: NaN
    projector = cal.projector(max_range_m=max_range)

    # Like a RealSense: uint16 millimetres, 0 where there is no surface; plus a dead block of pixels.
    depth_mm = np.round(depth_m * 1000.0).astype(np.uint16)
    depth_mm[geom_ids < 0] = 0
    depth_mm[200:220, 300:340] = 0
    xyz_base = projector.to_xyz(depth_mm, 0.001)

    invalid = (depth_mm == 0) | (depth_mm.astype(np.float64) * 0.001 > max_range)
    assert (depth_mm.astype(np.float64) * 0.001 > max_range).sum() > 1000 and (~invalid).sum() > 200_000
    assert np.array_equal(np.isnan(xyz_base).any(axis=2), invalid)

    # Judge in the world frame, where the surfaces were defined.
    p_world = T_world_base.apply(xyz_base.astype(np.float64))
    valid = ~invalid

    floor = _eroded(geom_ids == model.geom("floor").id) & valid
    _assert_within_1mm(np.abs(p_world[floor][:, 2]), "floor z = 0")

    ramp = _eroded(geom_ids == model.geom("ramp").id) & valid
    pitch = np.deg2rad(RAMP_PITCH_DEG)
    normal = np.array([np.sin(pitch), 0.0, np.cos(pitch)])
    p_ramp = p_world[ramp] - RAMP_POS
    _assert_within_1mm(np.abs(p_ramp @ normal), "tilted plane")
    # ... and within its finite extent (the plane, not something behind it).
    axis_x = np.array([np.cos(pitch), 0.0, -np.sin(pitch)])
    assert np.all(np.abs(p_ramp @ axis_x) < RAMP_HALF + 2e-3) and np.all(np.abs(p_ramp[:, 1]) < RAMP_HALF + 2e-3)

    box = _eroded(geom_ids == model.geom("box").id) & valid
    p_box = p_world[box]
    inside_top = np.all(np.abs(p_box[:, :2] - BOX_CENTER[:2]) < BOX_HALF[:2] - 0.005, axis=1)
    top_height = BOX_CENTER[2] + BOX_HALF[2]
    _assert_within_1mm(np.abs(p_box[inside_top, 2] - top_height), "box top")
    # The camera sees the box from above: its highest points are the top face, at the true height.
    assert np.percentile(p_box[:, 2], 99) == pytest.approx(top_height, abs=1e-3)


def test_projection_reproduces_the_renderer_pixels(
    rendered: tuple[mujoco.MjModel, mujoco.MjData, np.ndarray, np.ndarray],
) -> None:
    """Projecting the recovered points back gives their own pixels: intrinsics match MuJoCo's camera."""
    model, data, depth_m, geom_ids = rendered
    projector = calibration_from_mujoco(model, data, "front", W, H, "unit_scene").projector(max_range_m=5.0)
    box_id = model.geom("box").id
    top_center = BOX_CENTER + np.array([0.0, 0.0, BOX_HALF[2]])
    uv = projector.project_points(top_center[None])[0]
    u, v = int(round(uv[0])), int(round(uv[1]))
    assert 0 <= u < W and 0 <= v < H and geom_ids[v, u] == box_id, "the box top centre projects onto the box"
    xyz = projector.to_xyz(np.round(depth_m * 1000.0).astype(np.uint16), 0.001)
    # Nearest pixel centre: at most half a pixel away (~1 mm at this distance) plus 0.5 mm depth quantisation.
    assert np.linalg.norm(xyz[v, u] - top_center) < 3e-3
    # Every box pixel maps back onto itself.
    rows, cols = np.nonzero(geom_ids == box_id)
    uv_all = projector.project_points(xyz[rows, cols])
    np.testing.assert_allclose(uv_all, np.stack([cols, rows], axis=1), atol=1e-3)
