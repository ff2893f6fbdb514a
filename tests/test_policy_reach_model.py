"""The demo policy's ONNX graph computes exactly its numpy reference; the trainer really fits data."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from robot_stack.errors import ShapeError
from robot_stack.training.reach_model import (
    FEATURE_DIM,
    MIN_PIXELS,
    build_onnx,
    features_numpy,
    red_mask_numpy,
    train_mlp,
)

H, W = 48, 64


def _scene(rng: np.random.Generator, with_cube: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = rng.integers(0, 120, (H, W, 3), dtype=np.uint8)
    rgb[..., 0] = rgb[..., 1]  # grey-ish background: never "red"
    xyz = rng.normal(0.0, 0.3, (H, W, 3)).astype(np.float32)
    if with_cube:
        rgb[10:20, 30:40] = (200, 30, 20)
        xyz[10:20, 30:40] = (0.5, 0.1, 0.05)
        xyz[12, 32] = np.nan  # an invalid depth pixel inside the object
    xyz[::5, ::7] = np.nan
    state = rng.normal(size=11).astype(np.float32)
    return rgb, xyz, state


@pytest.fixture(scope="module")
def params():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, FEATURE_DIM))
    y = np.tanh(x @ rng.normal(size=(FEATURE_DIM, 24))) * 0.05
    p, _ = train_mlp(x, y, horizon=8, dt_s=0.1, epochs=3, hidden=(32, 32))
    return p


def test_features_localise_the_red_object_in_the_base_frame() -> None:
    rgb, xyz, state = _scene(np.random.default_rng(1))
    f = features_numpy(rgb, xyz, state)
    np.testing.assert_allclose(f[:3], [0.5, 0.1, 0.05], atol=1e-6)  # NaN pixel ignored, background excluded
    np.testing.assert_allclose(f[3:6], state[7:10])
    np.testing.assert_allclose(f[6:9], f[:3] - f[3:6], atol=1e-6)
    assert f[9] == 1.0


def test_features_report_an_invisible_object() -> None:
    rgb, xyz, state = _scene(np.random.default_rng(2), with_cube=False)
    assert red_mask_numpy(rgb).sum() < MIN_PIXELS
    f = features_numpy(rgb, xyz, state)
    assert f[9] == 0.0 and np.all(f[:3] == 0.0)


def test_features_reject_mismatched_images() -> None:
    rgb, xyz, state = _scene(np.random.default_rng(3))
    with pytest.raises(ShapeError):
        features_numpy(rgb, xyz[:-1], state)


@pytest.mark.parametrize("with_cube", [True, False])
def test_onnx_graph_equals_numpy_reference(params, with_cube: bool) -> None:
    rgb, xyz, state = _scene(np.random.default_rng(4), with_cube)
    session = ort.InferenceSession(
        build_onnx(params, "front", H, W, "t").SerializeToString(), providers=["CPUExecutionProvider"]
    )
    actions, features = session.run(["actions", "features"], {"front/rgb": rgb, "front/xyz": xyz, "state": state})
    ref_features = features_numpy(rgb, xyz, state)
    np.testing.assert_allclose(features, ref_features, atol=1e-6)
    np.testing.assert_allclose(actions, params.predict(ref_features[None])[0], atol=1e-5)
    assert actions.shape == (8, 3) and np.all(np.isfinite(actions))


def test_trainer_fits_a_smooth_function() -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, size=(2000, FEATURE_DIM))
    y = np.stack([np.sin(x[:, 0]) * 0.05 * (k + 1) for k in range(24)], axis=1)
    p, metrics = train_mlp(x, y, horizon=8, dt_s=0.1, epochs=40, hidden=(64, 64))
    assert metrics["val_mse_normalised"] < 0.02, metrics
    pred = p.predict(x[:200]).reshape(200, -1)
    rmse = np.sqrt(np.mean((pred - y[:200]) ** 2))
    assert rmse < 0.15 * y.std(), (rmse, y.std())
