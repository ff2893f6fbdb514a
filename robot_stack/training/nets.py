"""Torch modules of the trained demo policies (imported only for training and export; serving uses ONNX).

**Trunk** (:class:`VisuomotorTrunk`), batched, everything learned from pixels and points:

1. Input image (7 channels at the subsampled resolution, :data:`~robot_stack.training.samples.STRIDE`): RGB
   scaled to [-0.5, 0.5], base-frame XYZ centred on :data:`XYZ_CENTRE_M` and scaled by :data:`XYZ_SCALE` (zero
   where depth is invalid), and the validity mask.
2. CNN: a 4x4 stride-4 "patchify" conv (16) -> ReLU -> conv 3x3 (32) -> ReLU -> conv 1x1 (``keypoints`` maps),
   one logit per 4x4 cell (:data:`CELL`).
3. Spatial softmax per map over the cells with valid depth -> attention; each keypoint is the attention-weighted
   mean of the cells' base-frame XYZ (the mean XYZ of a cell's valid pixels), metres. The network decides *what*
   to look at; the calibrated depth says *where* that is in the robot's base frame (4D-VLA's premise: points in
   the base frame transfer across cameras). Keypoint 0 is trained with an auxiliary loss to attend to where the
   demonstrator ended the episode (the target; :func:`robot_stack.training.trainer._goal_loss`).
4. MLP on [keypoints (K, 3), keypoints - TCP (K, 3), normalised state (S)] -> ``hidden`` features. The state is
   ``RobotState.vector()`` of one arm (S = n + 4) or, for a policy serving several arms, its arm-independent last
   four entries (TCP xyz, gripper: S = 4); the TCP is always ``state[-4:-1]``.

**Heads:** :class:`ContinuousPolicy` regresses the normalised ``ee_delta_xyz`` chunk (horizon, 3);
:class:`TokenPolicy` classifies each (token, level) of a VQ tokenizer's ids. The ``*Export`` wrappers take the
server's unbatched tensors (full-resolution ``<camera>/rgb`` uint8 (H, W, 3), ``<camera>/xyz`` float32
(H, W, 3) with NaN, ``state``: normalised (S,) by the manifest, or with ``ee_state`` the raw
``RobotState.vector()`` of any arm (any length), whose last four entries are taken and normalised in-graph),
subsample in-graph and emit the manifest's outputs.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from robot_stack.training.samples import EE_STATE_DIM, STRIDE, TCP_FROM_END

__all__ = [
    "XYZ_CENTRE_M",
    "XYZ_SCALE",
    "ContinuousExport",
    "ContinuousPolicy",
    "TokenExport",
    "TokenPolicy",
    "VisuomotorTrunk",
]

#: Centre of the demo workspace in the base frame (metres); points are fed to the network relative to it.
XYZ_CENTRE_M = (0.5, 0.0, 0.2)
#: Scale of base-frame points fed to the network (1/m: decimetres).
XYZ_SCALE = 10.0
#: Side of the square cell (input pixels) that one keypoint logit covers (the first conv's kernel and stride).
CELL = 4
#: Initial multiplier of the keypoint logits.
INIT_TEMPERATURE = 10.0
#: Logit penalty of pixels without valid depth (they never win the spatial softmax).
_INVALID_LOGIT = 1e4


class VisuomotorTrunk(nn.Module):
    """CNN + spatial-softmax keypoints in the base frame + MLP (see module docstring).

    Args:
        state_mean, state_std: (S,) float32 statistics the state arrives normalised with; used to recover the TCP
            position in metres inside the graph.
        keypoints: number of attention maps. hidden: MLP width.
    """

    def __init__(
        self, state_mean: torch.Tensor, state_std: torch.Tensor, keypoints: int = 8, hidden: int = 256
    ) -> None:
        super().__init__()
        self.keypoints = keypoints
        self.hidden = hidden
        self.conv1 = nn.Conv2d(7, 16, CELL, stride=CELL)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, keypoints, 1)
        # softmax sharpness (learned): near-uniform attention over ~1000 cells would pass almost no gradient
        self.log_temperature = nn.Parameter(torch.tensor(math.log(INIT_TEMPERATURE)))
        state_dim = int(torch.as_tensor(state_mean).numel())
        self.state_dim = state_dim
        self.register_buffer("state_mean", torch.as_tensor(state_mean, dtype=torch.float32).reshape(state_dim))
        self.register_buffer("state_std", torch.as_tensor(state_std, dtype=torch.float32).reshape(state_dim))
        self.register_buffer("xyz_centre", torch.tensor(XYZ_CENTRE_M, dtype=torch.float32))
        self.mlp = nn.Sequential(
            nn.Linear(keypoints * 6 + state_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU()
        )

    def attention(self, rgb: torch.Tensor, xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, h, w, 3) uint8 RGB and float32 base-frame XYZ (NaN = invalid) -> log-attention (B, K, cells),
        cell XYZ (B, cells, 3) metres (mean of the cell's valid pixels) and cell validity (B, 1, cells)."""
        valid = ~torch.isnan(xyz).any(dim=-1, keepdim=True)  # (B, h, w, 1)
        xyz0 = torch.where(valid, xyz, 0.0)
        validf = valid.to(torch.float32)
        img = torch.cat(
            [rgb.to(torch.float32) / 255.0 - 0.5, (xyz0 - self.xyz_centre) * XYZ_SCALE * validf, validf], dim=-1
        ).permute(0, 3, 1, 2)
        h = torch.relu(self.conv1(img))
        h = torch.relu(self.conv2(h))
        logits = self.conv3(h).flatten(2) * torch.exp(self.log_temperature)  # (B, K, cells), conv1's grid
        count = nn.functional.avg_pool2d(validf.permute(0, 3, 1, 2), CELL)  # (B, 1, h/CELL, w/CELL)
        total = nn.functional.avg_pool2d((xyz0 * validf).permute(0, 3, 1, 2), CELL)  # (B, 3, ., .)
        pts = (total / torch.clamp(count, min=1e-6)).flatten(2).transpose(1, 2)  # (B, cells, 3)
        mask = (count > 0).to(torch.float32).flatten(2)  # (B, 1, cells)
        return torch.log_softmax(logits + (mask - 1.0) * _INVALID_LOGIT, dim=-1), pts, mask

    def forward(
        self, rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched: rgb (B, h, w, 3) uint8, xyz (B, h, w, 3) float32, state (B, S) normalised -> features
        (B, hidden), keypoints (B, K, 3) metres, and :meth:`attention`'s outputs (for auxiliary losses)."""
        log_att, pts, mask = self.attention(rgb, xyz)
        kp = torch.exp(log_att) @ pts  # (B, K, 3)
        tcp = state[:, TCP_FROM_END] * self.state_std[TCP_FROM_END] + self.state_mean[TCP_FROM_END]
        feats = torch.cat(
            [
                ((kp - self.xyz_centre) * XYZ_SCALE).flatten(1),
                ((kp - tcp[:, None, :]) * XYZ_SCALE).flatten(1),
                state,
            ],
            dim=1,
        )
        return self.mlp(feats), kp, log_att, pts, mask


class ContinuousPolicy(nn.Module):
    """Trunk + linear chunk head: -> (B, horizon, 3) normalised ``ee_delta_xyz`` (de-normalise with the
    manifest's ``actions`` stats). ``low``/``high``: (horizon, 3) normalised bounds the exported graph clips to."""

    def __init__(self, trunk: VisuomotorTrunk, horizon: int, low: torch.Tensor, high: torch.Tensor) -> None:
        super().__init__()
        self.trunk = trunk
        self.horizon = horizon
        self.head = nn.Linear(trunk.hidden, horizon * 3)
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).reshape(horizon, 3))
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).reshape(horizon, 3))

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> normalised chunks (B, horizon, 3), then the trunk's outputs after its features."""
        feats, *rest = self.trunk(rgb, xyz, state)
        return (self.head(feats).reshape(-1, self.horizon, 3), *rest)


class TokenPolicy(nn.Module):
    """Trunk + one classifier per (token, level): -> (B, n_tokens * levels, codebook_size) logits."""

    def __init__(self, trunk: VisuomotorTrunk, n_tokens: int, levels: int, codebook_size: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.n_tokens, self.levels, self.codebook_size = n_tokens, levels, codebook_size
        self.head = nn.Linear(trunk.hidden, n_tokens * levels * codebook_size)

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """-> logits (B, n_tokens * levels, codebook_size), then the trunk's outputs after its features."""
        feats, *rest = self.trunk(rgb, xyz, state)
        return (self.head(feats).reshape(-1, self.n_tokens * self.levels, self.codebook_size), *rest)


def _batch(
    rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor, stride: int, trunk: VisuomotorTrunk, ee_state: bool
) -> tuple[torch.Tensor, ...]:
    """Server tensors (unbatched, full resolution) -> the trunk's batched, subsampled inputs. With ``ee_state`` the
    state is any arm's raw ``RobotState.vector()``: its last four entries (TCP xyz, gripper), normalised here."""
    if ee_state:
        state = (state[-EE_STATE_DIM:] - trunk.state_mean) / trunk.state_std
    return rgb[::stride, ::stride].unsqueeze(0), xyz[::stride, ::stride].unsqueeze(0), state.unsqueeze(0)


class ContinuousExport(nn.Module):
    """Serving graph: (H, W, 3) uint8, (H, W, 3) float32, (S,) float32 -> ``actions`` (horizon, 3), normalised
    and clipped to the demonstrations' range (the runtime de-normalises with the manifest)."""

    def __init__(self, policy: ContinuousPolicy, stride: int = STRIDE, ee_state: bool = False) -> None:
        super().__init__()
        self.policy, self.stride, self.ee_state = policy, stride, ee_state

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        out = self.policy(*_batch(rgb, xyz, state, self.stride, self.policy.trunk, self.ee_state))[0][0]
        return torch.minimum(torch.maximum(out, self.policy.low), self.policy.high)


class TokenExport(nn.Module):
    """Serving graph: same inputs -> ``tokens`` (n_tokens, levels) int64, the most likely id per (token, level)."""

    def __init__(self, policy: TokenPolicy, stride: int = STRIDE, ee_state: bool = False) -> None:
        super().__init__()
        self.policy, self.stride, self.ee_state = policy, stride, ee_state

    def forward(self, rgb: torch.Tensor, xyz: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        logits = self.policy(*_batch(rgb, xyz, state, self.stride, self.policy.trunk, self.ee_state))[0][0]
        return torch.argmax(logits, dim=-1).reshape(self.policy.n_tokens, self.policy.levels)
