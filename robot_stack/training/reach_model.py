"""The demo policy: a tiny visuomotor network, trained by robot-stack's own tooling and exported to ONNX.

Architecture (everything below runs inside the ONNX graph, on the server):

1. **Colour-keyed object localisation** (fixed, not learned), on every :data:`STRIDE`-th pixel: a pixel belongs
   to the red object when ``R > 60 and R > 2G + 20 and R > 2B + 20``; the object's position is the mean
   base-frame XYZ of those pixels whose XYZ is valid (4D-VLA: the policy sees points in the robot base frame,
   so this works for any calibrated camera). ``visible`` is 1 when at least :data:`MIN_PIXELS` pixels matched.
2. **Features** (10,): object xyz (3), TCP xyz from the state vector (3), object − TCP (3), visible (1).
3. **MLP head** (learned by behaviour cloning on scripted-expert demonstrations): normalised features →
   ``hidden`` ReLU layers → ``horizon × 3`` normalised outputs → de-normalised ``ee_delta_xyz`` chunk, clipped to
   the range seen in the demonstrations (a network far outside its data must not command a 2 m jump).

:func:`features_numpy` is the reference implementation of steps 1–2, used to label training data and to test
that the ONNX graph computes exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from robot_stack.console import report_progress
from robot_stack.errors import ShapeError

#: Pixel stride of the colour key (every 2nd row and column): 4x less work, same centroid to sub-millimetre.
STRIDE = 2
MIN_PIXELS = 10
FEATURE_DIM = 10
#: Index of the TCP xyz inside ``RobotState.vector()`` (q(7), tcp xyz(3), gripper(1)).
TCP_SLICE = slice(7, 10)
STATE_DIM = 11


def red_mask_numpy(rgb: np.ndarray) -> np.ndarray:
    """(H, W) bool mask of "red object" pixels. ``rgb``: (H, W, 3) uint8."""
    c = rgb.astype(np.int32)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    return (r > 60) & (r > 2 * g + 20) & (r > 2 * b + 20)


def features_numpy(rgb: np.ndarray, xyz: np.ndarray, state: np.ndarray) -> np.ndarray:
    """(10,) float32 policy features; see module docstring. ``xyz``: (H, W, 3) float32 base frame, NaN invalid."""
    if rgb.shape[:2] != xyz.shape[:2] or rgb.shape[-1] != 3 or xyz.shape[-1] != 3:
        raise ShapeError(f"features: rgb {rgb.shape} and xyz {xyz.shape} must be (H, W, 3) of the same size")
    rgb, xyz = rgb[::STRIDE, ::STRIDE], xyz[::STRIDE, ::STRIDE]
    valid = ~np.isnan(xyz[..., 0])
    mask = red_mask_numpy(rgb) & valid
    count = int(mask.sum())
    centroid = xyz[mask].astype(np.float64).sum(axis=0) / max(count, 1) if count else np.zeros(3)
    tcp = np.asarray(state, dtype=np.float64)[TCP_SLICE]
    visible = 1.0 if count >= MIN_PIXELS else 0.0
    if not visible:
        centroid = np.zeros(3)
    return np.concatenate([centroid, tcp, centroid - tcp, [visible]]).astype(np.float32)


@dataclass(frozen=True)
class MlpParams:
    """Weights of the MLP head plus the normalisation it was trained with.

    Attributes:
        weights: per layer (in_dim, out_dim) float32; biases: per layer (out_dim,) float32.
        x_mean, x_std: (10,) feature normalisation; y_mean, y_std: (horizon*3,) output de-normalisation.
        y_min, y_max: (horizon*3,) bounds the outputs are clipped to (metres).
        horizon: number of chunk steps; dt_s: seconds between steps.
    """

    weights: tuple[np.ndarray, ...]
    biases: tuple[np.ndarray, ...]
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    y_min: np.ndarray
    y_max: np.ndarray
    horizon: int
    dt_s: float

    def predict(self, features: np.ndarray) -> np.ndarray:
        """(N, 10) features -> (N, horizon, 3) chunks (numpy twin of the ONNX head)."""
        h = (np.asarray(features, dtype=np.float32) - self.x_mean) / self.x_std
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        y = np.clip(h * self.y_std + self.y_mean, self.y_min, self.y_max)
        return y.reshape(-1, self.horizon, 3)


def train_mlp(
    features: np.ndarray,
    targets: np.ndarray,
    *,
    horizon: int,
    dt_s: float,
    hidden: tuple[int, ...] = (256, 256),
    epochs: int = 300,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
) -> tuple[MlpParams, dict[str, float]]:
    """Behaviour cloning: fit ``targets`` (N, horizon*3) from ``features`` (N, 10) by MSE with Adam (numpy).

    Returns the parameters and training metrics (final normalised train/validation MSE, RMSE in metres).
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(targets, dtype=np.float64).reshape(len(x), -1)
    x_mean, x_std = x.mean(0), x.std(0) + 1e-6
    y_mean, y_std = y.mean(0), y.std(0) + 1e-6
    xn, yn = (x - x_mean) / x_std, (y - y_mean) / y_std
    order = rng.permutation(len(x))
    n_val = max(1, len(x) // 10)
    val, train = order[:n_val], order[n_val:]

    sizes = (x.shape[1], *hidden, y.shape[1])
    ws = [rng.normal(0, np.sqrt(2.0 / a), (a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    bs = [np.zeros(b) for b in sizes[1:]]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    beta1, beta2, step = 0.9, 0.999, 0

    def forward(xb: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
        acts = [xb]
        h = xb
        for i in range(len(ws)):
            h = h @ ws[i] + bs[i]
            if i < len(ws) - 1:
                h = np.maximum(h, 0.0)
            acts.append(h)
        return h, acts

    for epoch in range(epochs):
        report_progress("train epochs", epoch, epochs, "epochs")
        lr_now = lr * (0.5 * (1 + np.cos(np.pi * epoch / epochs)))  # cosine decay
        rng.shuffle(train)
        for start in range(0, len(train), batch_size):
            idx = train[start : start + batch_size]
            out, acts = forward(xn[idx])
            grad = 2.0 * (out - yn[idx]) / len(idx)
            grads_w, grads_b = [None] * len(ws), [None] * len(ws)
            for i in reversed(range(len(ws))):
                grads_w[i] = acts[i].T @ grad
                grads_b[i] = grad.sum(0)
                if i > 0:
                    grad = (grad @ ws[i].T) * (acts[i] > 0)
            step += 1
            for j, g in enumerate(grads_w + grads_b):
                m[j] = beta1 * m[j] + (1 - beta1) * g
                v[j] = beta2 * v[j] + (1 - beta2) * g * g
                mhat = m[j] / (1 - beta1**step)
                vhat = v[j] / (1 - beta2**step)
                params[j] -= lr_now * mhat / (np.sqrt(vhat) + 1e-8)
            ws, bs = params[: len(ws)], params[len(ws) :]
    report_progress("train epochs", epochs, epochs, "epochs")

    def mse(idx: np.ndarray) -> float:
        return float(np.mean((forward(xn[idx])[0] - yn[idx]) ** 2))

    f32 = np.float32
    result = MlpParams(
        weights=tuple(w.astype(f32) for w in ws),
        biases=tuple(b.astype(f32) for b in bs),
        x_mean=x_mean.astype(f32),
        x_std=x_std.astype(f32),
        y_mean=y_mean.astype(f32),
        y_std=y_std.astype(f32),
        y_min=(y.min(0) - 0.1 * (y.max(0) - y.min(0))).astype(f32),
        y_max=(y.max(0) + 0.1 * (y.max(0) - y.min(0))).astype(f32),
        horizon=horizon,
        dt_s=dt_s,
    )
    val_pred = result.predict(x[val]).reshape(len(val), -1)
    metrics = {
        "train_mse_normalised": mse(train),
        "val_mse_normalised": mse(val),
        "val_rmse_m": float(np.sqrt(np.mean((val_pred - y[val]) ** 2))),
        "n_train": int(len(train)),
        "n_val": int(len(val)),
    }
    return result, metrics


def onnx_constant(name: str, value: np.ndarray | float, dtype: type = np.float32) -> onnx.NodeProto:
    """An ONNX ``Constant`` node producing ``value`` (cast to ``dtype``) under the name ``name``."""
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype=dtype)))


def mlp_onnx_nodes(params: MlpParams, x: str, y: str, prefix: str = "") -> list[onnx.NodeProto]:
    """ONNX nodes computing :meth:`MlpParams.predict` (before its final reshape) on the graph tensor ``x``.

    ``x``: (1, in_dim) float32 un-normalised features; ``y``: (1, out_dim) float32 de-normalised, clipped outputs.
    Every intermediate name starts with ``prefix`` so several MLPs can live in one graph.
    """
    p = prefix
    n = [
        onnx_constant(f"{p}x_mean", params.x_mean),
        onnx_constant(f"{p}x_std", params.x_std),
        helper.make_node("Sub", [x, f"{p}x_mean"], [f"{p}xc"]),
        helper.make_node("Div", [f"{p}xc", f"{p}x_std"], [f"{p}h0"]),
    ]
    h = f"{p}h0"
    for i, (w, b) in enumerate(zip(params.weights, params.biases, strict=True)):
        n += [
            onnx_constant(f"{p}w{i}", w),
            onnx_constant(f"{p}b{i}", b),
            helper.make_node("MatMul", [h, f"{p}w{i}"], [f"{p}mm{i}"]),
        ]
        n.append(helper.make_node("Add", [f"{p}mm{i}", f"{p}b{i}"], [f"{p}z{i}"]))
        if i < len(params.weights) - 1:
            n.append(helper.make_node("Relu", [f"{p}z{i}"], [f"{p}a{i}"]))
            h = f"{p}a{i}"
        else:
            h = f"{p}z{i}"
    return n + [
        onnx_constant(f"{p}y_mean", params.y_mean),
        onnx_constant(f"{p}y_std", params.y_std),
        helper.make_node("Mul", [h, f"{p}y_std"], [f"{p}ys"]),
        helper.make_node("Add", [f"{p}ys", f"{p}y_mean"], [f"{p}yd_raw"]),
        onnx_constant(f"{p}y_min", params.y_min),
        onnx_constant(f"{p}y_max", params.y_max),
        helper.make_node("Min", [f"{p}yd_raw", f"{p}y_max"], [f"{p}yd_hi"]),
        helper.make_node("Max", [f"{p}yd_hi", f"{p}y_min"], [y]),
    ]


def build_onnx(params: MlpParams, camera_id: str, height: int, width: int, model_id: str) -> onnx.ModelProto:
    """The whole policy as one ONNX graph.

    Inputs: ``<camera_id>/rgb`` (H, W, 3) uint8, ``<camera_id>/xyz`` (H, W, 3) float32 (NaN invalid),
    ``state`` (11,) float32. Outputs: ``actions`` (horizon, 3) float32 (ee_delta_xyz, metres) and
    ``features`` (10,) float32 (for debugging and tests).
    """
    rgb, xyz, state = f"{camera_id}/rgb", f"{camera_id}/xyz", "state"
    n = [
        onnx_constant("c0", 0.0),
        onnx_constant("c2", 2.0),
        onnx_constant("c20", 20.0),
        onnx_constant("c60", 60.0),
        onnx_constant("c1", 1.0),
        onnx_constant("cmin", float(MIN_PIXELS)),
        onnx_constant("axes01", np.array([0, 1]), np.int64),
        onnx_constant("tcp_start", np.array([TCP_SLICE.start]), np.int64),
        onnx_constant("tcp_end", np.array([TCP_SLICE.stop]), np.int64),
        onnx_constant("ch_split", np.array([1, 1, 1]), np.int64),
        onnx_constant("sl_start", np.array([0, 0]), np.int64),
        onnx_constant("sl_end", np.array([height, width]), np.int64),
        onnx_constant("sl_step", np.array([STRIDE, STRIDE]), np.int64),
        helper.make_node("Slice", [rgb, "sl_start", "sl_end", "axes01", "sl_step"], ["rgb_s"]),
        helper.make_node("Slice", [xyz, "sl_start", "sl_end", "axes01", "sl_step"], ["xyz_s"]),
        # colour key
        helper.make_node("Cast", ["rgb_s"], ["rgb_f"], to=TensorProto.FLOAT),
        helper.make_node("Split", ["rgb_f", "ch_split"], ["r3", "g3", "b3"], axis=2),
        helper.make_node("Mul", ["g3", "c2"], ["g_x2"]),
        helper.make_node("Add", ["g_x2", "c20"], ["g2p"]),
        helper.make_node("Mul", ["b3", "c2"], ["b_x2"]),
        helper.make_node("Add", ["b_x2", "c20"], ["b2p"]),
        helper.make_node("Greater", ["r3", "c60"], ["m_r"]),
        helper.make_node("Greater", ["r3", "g2p"], ["m_g"]),
        helper.make_node("Greater", ["r3", "b2p"], ["m_b"]),
        helper.make_node("And", ["m_r", "m_g"], ["m_rg"]),
        helper.make_node("And", ["m_rg", "m_b"], ["m_red"]),  # (H, W, 1) bool
        # valid xyz (NaN-free) and masked centroid
        helper.make_node("IsNaN", ["xyz_s"], ["xyz_nan"]),
        helper.make_node("Split", ["xyz_nan", "ch_split"], ["nan_x", "nan_y", "nan_z"], axis=2),
        helper.make_node("Not", ["nan_x"], ["valid"]),
        helper.make_node("And", ["m_red", "valid"], ["m"]),
        helper.make_node("Cast", ["m"], ["m_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["m_f", "axes01"], ["count1"], keepdims=0),  # (1,)
        helper.make_node("Mul", ["xyz_s", "m_f"], ["xyz_m_nan"]),
        helper.make_node("Where", ["xyz_nan", "c0", "xyz_m_nan"], ["xyz_m"]),
        helper.make_node("ReduceSum", ["xyz_m", "axes01"], ["xyz_sum"], keepdims=0),  # (3,)
        helper.make_node("Max", ["count1", "c1"], ["count_safe"]),
        helper.make_node("Div", ["xyz_sum", "count_safe"], ["centroid_raw"]),
        helper.make_node("Less", ["count1", "cmin"], ["not_visible"]),
        helper.make_node("Where", ["not_visible", "c0", "centroid_raw"], ["centroid"]),
        helper.make_node("Not", ["not_visible"], ["visible_b"]),
        helper.make_node("Cast", ["visible_b"], ["visible"], to=TensorProto.FLOAT),
        # features
        helper.make_node("Slice", [state, "tcp_start", "tcp_end"], ["tcp"]),
        helper.make_node("Sub", ["centroid", "tcp"], ["delta"]),
        helper.make_node("Concat", ["centroid", "tcp", "delta", "visible"], ["features"], axis=0),
        # MLP head
        onnx_constant("row_shape", np.array([1, FEATURE_DIM]), np.int64),
        helper.make_node("Reshape", ["features", "row_shape"], ["features_row"]),
        *mlp_onnx_nodes(params, "features_row", "yd"),
        onnx_constant("out_shape", np.array([params.horizon, 3]), np.int64),
        helper.make_node("Reshape", ["yd", "out_shape"], ["actions"]),
    ]
    graph = helper.make_graph(
        n,
        model_id,
        [
            helper.make_tensor_value_info(rgb, TensorProto.UINT8, [height, width, 3]),
            helper.make_tensor_value_info(xyz, TensorProto.FLOAT, [height, width, 3]),
            helper.make_tensor_value_info(state, TensorProto.FLOAT, [STATE_DIM]),
        ],
        [
            helper.make_tensor_value_info("actions", TensorProto.FLOAT, [params.horizon, 3]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, [FEATURE_DIM]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="robot-stack")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model
