"""The accuracy gate's random inputs for depth-form models: calibrations a camera could send."""

from __future__ import annotations

import numpy as np

from robot_stack.calibration.payload import xyz_from_depth
from robot_stack.policy.accuracy import _random_calibrations


def test_gate_calibrations_are_ones_a_camera_could_send() -> None:
    """Intrinsics in a camera's range, a positive depth scale, a proper rotation: random depth through them lands
    within metres of the base, not kilometres (N(0, 1) intrinsics did, and FP16 engines were judged on that)."""
    calib = _random_calibrations(np.random.default_rng(0), (8, 17))
    assert calib.shape == (8, 17) and calib.dtype == np.float32
    assert np.all((calib[:, :2] >= 300) & (calib[:, :2] <= 900)) and np.all(calib[:, 4] > 0)
    rot = calib[:, 5:14].reshape(-1, 3, 3).astype(np.float64)
    assert np.allclose(rot @ rot.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    assert np.allclose(np.linalg.det(rot), 1.0, atol=1e-5)
    depth = np.random.default_rng(1).integers(0, 5000, (48, 64)).astype(np.uint16)
    xyz = xyz_from_depth(depth, calib[0], stride=8, offset=4)
    assert np.nanmax(np.abs(xyz)) < 10.0
