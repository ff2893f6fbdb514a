"""A small flow-matching policy with a known answer, built in code as ONNX (tests, benchmarks, drills; no torch).

:func:`build_gaussian_flow_model` writes a prefix encoder, a denoising step and their manifest. The model's action
chunks (``joint_position``, (H, 7) rad) are Gaussian given the state ``[q, goal]`` (14 floats): mean
``mu_k = q + alpha_k (goal - q)`` with ``alpha_k = min(1, (k + 1) / H)``, and, per joint, a smooth covariance
``Sigma`` over the H steps (a random offset, slope and curvature plus a little white noise). For Gaussian data the
flow-matching velocity is exact and linear (interpolant ``x_tau = tau x1 + (1 - tau) x0``, ``x0 ~ N(0, I)``)::

    v(x, tau) = mu + U diag((tau lam - (1 - tau)) / (tau^2 lam + (1 - tau)^2)) U^T (x - tau mu),

with ``Sigma = U diag(lam) U^T`` (in normalised units: the manifest's action normalisation scales by ``std``). The
step graph computes exactly that, so samples of the served model are draws from the known Gaussian, and the
conditional distribution given a prefix (what real-time chunking approximates) is known in closed form
(:meth:`GaussianFlowModel.conditional_mean`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

__all__ = ["GaussianFlowModel", "build_gaussian_flow_model"]

_N = 7  # joints


@dataclass(frozen=True)
class GaussianFlowModel:
    """What :func:`build_gaussian_flow_model` wrote, and the exact distribution its samples follow.

    Attributes:
        manifest: the manifest YAML.
        horizon, dt_s: chunk steps and their spacing.
        std: the action normalisation's scale (rad per normalised unit).
        covariance: (H, H) covariance of one joint's chunk in normalised units (joints independent).
    """

    manifest: Path
    horizon: int
    dt_s: float
    std: float
    covariance: np.ndarray

    goal: np.ndarray | None = None

    def mean(self, state: np.ndarray) -> np.ndarray:
        """(H, 7) mean chunk (rad) for ``state``: ``[q, goal]`` (14,), or with a fixed :attr:`goal` the robot's
        state vector ``[q (7), tcp (3), gripper]`` (11,)."""
        q = np.asarray(state[:_N], np.float64)
        goal = np.asarray(state[_N : 2 * _N] if self.goal is None else self.goal, np.float64)
        alpha = np.minimum(1.0, np.arange(1, self.horizon + 1) / self.horizon)
        return q[None, :] + alpha[:, None] * (goal - q)[None, :]

    def conditional_mean(self, state: np.ndarray, prefix: np.ndarray) -> np.ndarray:
        """(H, 7) mean chunk (rad) given that its first ``len(prefix)`` steps equal ``prefix`` (Gaussian
        conditioning: what exact inpainting would sample around)."""
        mu = self.mean(state)
        p = len(prefix)
        s = self.covariance
        gain = s[p:, :p] @ np.linalg.inv(s[:p, :p])
        out = mu.copy()
        out[:p] = prefix
        out[p:] = mu[p:] + gain @ (np.asarray(prefix, np.float64) - mu[:p])
        return out


def _smooth_covariance(horizon: int, dt_s: float) -> np.ndarray:
    t = np.arange(horizon) * dt_s
    basis = np.stack([np.ones(horizon), t, t * t], axis=1)
    return basis @ np.diag([0.1**2, 0.6**2, 1.0**2]) @ basis.T + 0.01**2 * np.eye(horizon)


def build_gaussian_flow_model(
    folder: str | Path,
    horizon: int = 8,
    dt_s: float = 0.1,
    steps: int = 10,
    std: float = 0.05,
    rtc: bool = True,
    seed: int | None = 0,
    goal: np.ndarray | None = None,
    cameras: tuple[str, ...] = (),
    control_rate_hz: float | None = None,
) -> GaussianFlowModel:
    """Write ``gaussian-flow.encoder.onnx``, ``gaussian-flow.step.onnx`` and ``gaussian-flow.yaml`` into
    ``folder``; return the model (see the module docstring). ``std``: rad per normalised action unit.

    With ``goal`` ((7,) rad) the model takes what the robot stack sends instead of ``[q, goal]``, unbatched like the
    demo's policy: ``state`` (11,) and, per camera in ``cameras``, ``<camera>/rgb`` (480, 640, 3) uint8 and
    ``<camera>/xyz`` (480, 640, 3) float32 (accepted, unused); every chunk heads for the fixed ``goal``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    h, n = int(horizon), _N
    cov = _smooth_covariance(h, dt_s)
    lam, u = np.linalg.eigh(cov)

    # encoder: state -> mu (B, H, 7) in normalised units: mu = (state @ A + b) / std
    alpha = np.minimum(1.0, np.arange(1, h + 1) / h)
    state_dim = 2 * n if goal is None else n + 4
    a = np.zeros((state_dim, h * n))
    b = np.zeros(h * n)
    for k in range(h):
        for j in range(n):
            a[j, k * n + j] = 1.0 - alpha[k]
            if goal is None:
                a[n + j, k * n + j] = alpha[k]
            else:
                b[k * n + j] = alpha[k] * float(goal[j])
    batched = goal is None
    lead: list[str | int] = ["B"] if batched else []
    spec_lead = [-1] if batched else []
    inputs = [helper.make_tensor_value_info("state", TensorProto.FLOAT, [*lead, state_dim])]
    specs = [{"name": "state", "dtype": "float32", "shape": [*spec_lead, state_dim]}]
    for cam in cameras:
        inputs.append(helper.make_tensor_value_info(f"{cam}/rgb", TensorProto.UINT8, [*lead, 480, 640, 3]))
        inputs.append(helper.make_tensor_value_info(f"{cam}/xyz", TensorProto.FLOAT, [*lead, 480, 640, 3]))
        specs.append({"name": f"{cam}/rgb", "dtype": "uint8", "shape": [*spec_lead, 480, 640, 3]})
        specs.append(
            {"name": f"{cam}/xyz", "dtype": "float32", "shape": [*spec_lead, 480, 640, 3], "allow_nonfinite": True}
        )
    enc = helper.make_graph(
        [
            helper.make_node("Reshape", ["state", "row"], ["state2"]),  # (B, S) either way
            helper.make_node("MatMul", ["state2", "A"], ["flat0"]),
            helper.make_node("Add", ["flat0", "b"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["mu"]),
        ],
        "gaussian_flow_encoder",
        inputs,
        [helper.make_tensor_value_info("mu", TensorProto.FLOAT, [*lead, h, n])],
        [
            numpy_helper.from_array(np.array([-1, state_dim], dtype=np.int64), "row"),
            numpy_helper.from_array((a / std).astype(np.float32), "A"),
            numpy_helper.from_array((b / std).astype(np.float32), "b"),
            numpy_helper.from_array(np.array([*spec_lead, h, n], dtype=np.int64), "shape"),
        ],
    )

    # step: v = mu + (U ((g(tau) * (U^T y))) with y = x - tau mu along the time axis, per joint
    f32 = np.float32
    perm = [0, 2, 1] if batched else [1, 0]
    step = helper.make_graph(
        [
            helper.make_node("Unsqueeze", ["tau", "ax"], ["tau3"]),  # (B, 1, 1) or (1, 1)
            helper.make_node("Mul", ["tau3", "mu"], ["tmu"]),
            helper.make_node("Sub", ["x_t", "tmu"], ["y"]),
            helper.make_node("Transpose", ["y"], ["yt"], perm=perm),  # (B, 7, H)
            helper.make_node("MatMul", ["yt", "U"], ["z"]),  # eigen coordinates (B, 7, H)
            helper.make_node("Sub", ["one", "tau3"], ["omt"]),
            helper.make_node("Mul", ["tau3", "lam"], ["tl"]),
            helper.make_node("Sub", ["tl", "omt"], ["num"]),
            helper.make_node("Mul", ["tau3", "tau3"], ["t2"]),
            helper.make_node("Mul", ["t2", "lam"], ["t2l"]),
            helper.make_node("Mul", ["omt", "omt"], ["omt2"]),
            helper.make_node("Add", ["t2l", "omt2"], ["den"]),
            helper.make_node("Div", ["num", "den"], ["g"]),  # (B, 1, H)
            helper.make_node("Mul", ["z", "g"], ["zg"]),
            helper.make_node("MatMul", ["zg", "Ut"], ["back"]),  # (B, 7, H)
            helper.make_node("Transpose", ["back"], ["backt"], perm=perm),
            helper.make_node("Add", ["mu", "backt"], ["velocity"]),
        ],
        "gaussian_flow_step",
        [
            helper.make_tensor_value_info("x_t", TensorProto.FLOAT, [*lead, h, n]),
            helper.make_tensor_value_info("tau", TensorProto.FLOAT, ["B", 1] if batched else [1]),
            helper.make_tensor_value_info("mu", TensorProto.FLOAT, [*lead, h, n]),
        ],
        [helper.make_tensor_value_info("velocity", TensorProto.FLOAT, [*lead, h, n])],
        [
            numpy_helper.from_array(np.array([2] if batched else [1], dtype=np.int64), "ax"),
            numpy_helper.from_array(np.array(1.0, dtype=f32), "one"),
            numpy_helper.from_array(lam.astype(f32)[None, None, :] if batched else lam.astype(f32)[None, :], "lam"),
            numpy_helper.from_array(u.astype(f32), "U"),
            numpy_helper.from_array(u.T.astype(f32).copy(), "Ut"),
        ],
    )
    opset = [helper.make_opsetid("", 17)]
    for graph, name in ((enc, "gaussian-flow.encoder.onnx"), (step, "gaussian-flow.step.onnx")):
        model = helper.make_model(graph, opset_imports=opset, ir_version=8)
        onnx.checker.check_model(model)
        onnx.save(model, str(folder / name))
    manifest = {
        "model_id": "gaussian-flow-v1",
        "onnx": "gaussian-flow.encoder.onnx",
        "description": "Gaussian flow-matching policy with an exact velocity field (robot_stack.policy.flow_toy)",
        "inputs": specs,
        "outputs": [{"name": "actions", "dtype": "float32", "shape": [*spec_lead, h, n]}],
        "action_space": "joint_position",
        "action_head": "continuous",
        "horizon": h,
        "dt_s": dt_s,
        **({} if control_rate_hz is None else {"control_rate_hz": float(control_rate_hz)}),
        "normalization": {"actions": {"mean": [0.0] * n, "std": [std] * n}},
        "max_batch": 8 if batched else 1,
        "flow_matching": {
            "step_graph": "gaussian-flow.step.onnx",
            "steps": int(steps),
            "context": [{"name": "mu", "dtype": "float32", "shape": [*spec_lead, h, n]}],
            "rtc": bool(rtc),
            **({} if seed is None else {"seed": int(seed)}),
        },
    }
    path = folder / "gaussian-flow.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return GaussianFlowModel(path, h, float(dt_s), float(std), cov, None if goal is None else np.asarray(goal, float))
