"""The project's vision-language-action model (torch): patch tokens with 3D position embeddings, language tokens, a
transformer trunk, and a flow-matching action expert that attends to the trunk's cached keys and values.

**Points** (in the graph, :func:`depth_to_points`): the camera's uint16 depth on the model's pixel grid (every
``stride``-th pixel from ``offset``: 60x80 of a 480x640 image) is projected with the calibration the robot sent
(:mod:`robot_stack.calibration.payload`) into the robot **base frame** (the 4D-VLA idea: every rig's pixels share one
coordinate system) — or, for the ablation, left in the camera's optical frame.

**Vision tokens** (:class:`PatchTokenizer`): every pixel of the grid is embedded (colour, validity, its point) by a
small MLP; the grid is cut into ``patch`` x ``patch`` patches (6x8 patches of 10x10), and each patch becomes
``slots`` tokens by learned attention pooling over its valid pixels (a patch embedding that can pick out an object
smaller than the patch). Each token's **3D position embedding** is a Fourier-feature embedding of the point its
pooling attends to, so a token knows *where in the base frame* its content is to about a pixel (~2 cm).

**Language tokens**: ids from the model's own ``tokenizers`` vocabulary (:mod:`robot_stack.training.vla_tokenizer`),
learned embeddings plus positions; padding masked.

**Trunk** (the prefix): pre-norm transformer layers over vision and language tokens. Its per-layer keys and values
are the **prefix cache** (:meth:`VlaModel.prefix`): computed once per request.

**Goal pointer** (:class:`GoalPointer`, an object-centric readout): a query made from the instruction's words
scores every pixel of the grid by its own colour and point; the instruction's target point is the
attention-weighted mean of the pixels' 3D points plus a bounded learned correction (<= 4 cm). Reading the goal *off
the points* keeps it as precise as the depth, and scoring each pixel on its own keeps it from memorising placements
(a readout from the trunk's states, tried first, reached ~2 cm on training placements and ~55 mm on held-out ones;
touching needs 2 cm). The goal becomes one more token of the cache (its keys and values made by each expert
layer's own projections), so the action expert sees where to go as a point, and the served graphs keep their
two-graph interface.

**Action expert** (the suffix; :meth:`VlaModel.velocity`): a state token and one token per chunk step (noisy action
+ flow time + step embedding), through as many layers as the trunk, each attending to the trunk's cached keys and
values of the same layer and to the suffix itself (pi0's layout); it predicts the flow-matching velocity
``a - noise`` of the normalised chunk. :meth:`VlaModel.sample` integrates it with K Euler steps.

**Goal offset** (:meth:`VlaModel.goal_offset`): the chunk the robot needs is a function of *where the goal is
relative to the TCP* — a difference the expert would otherwise have to compute, to millimetres, from a Fourier
token of the goal and a linear embedding of the proprio vector. So the prefix also outputs the pointer's ``goal``,
the denoising step takes it, and every suffix token gets an embedding of ``goal - tcp`` (the TCP read from the
normalised state with the model's own copy of the state statistics, ``state_mean``/``state_std``). In the
camera-frame ablation the goal is in the camera's frame and the TCP in the base frame: the offset then means
nothing without the calibration the ablation lacks — which is what it tests.

The export wrappers (:class:`PrefixGraph`, :class:`PrefixXyzGraph`, :class:`DenoiseGraph`) take the server's
batched tensors and are what ONNX and ``torch.export`` serialise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "DenoiseGraph",
    "GoalPointer",
    "Prefix",
    "PrefixGraph",
    "PrefixXyzGraph",
    "VlaConfig",
    "VlaModel",
    "depth_to_points",
]

#: Workspace centre (metres) and scale (1/m) of the points fed to the network, per frame.
_CENTRE = {"base": (0.5, 0.0, 0.15), "camera": (0.0, 0.0, 1.1)}
_SCALE = 1.0 / 0.4
_NEG = -1e4  # additive mask logit (finite in fp16)
#: Largest correction the goal pointer adds to its attention-weighted token point (normalised units: 4 cm).
_GOAL_REFINE = 0.1
#: The goal is clamped to this box (normalised units: +-1.2 m around the workspace centre): no reachable goal lies
#: outside it, and it bounds the arguments of the goal token's Fourier features.
_GOAL_BOX = 3.0
#: The goal's offset from the TCP is fed to the action expert (an MLP of it) in units of this many metres, clamped
#: to +-``_OFFSET_BOX`` units.
_OFFSET_UNIT_M = 0.1
_OFFSET_BOX = 6.0
#: The action expert's parameters (the suffix): what ``train-vla --fresh-expert`` re-initialises.
EXPERT_PARTS = ("state_in", "action_in", "time_in", "step_pos", "expert", "action_norm", "action_out", "offset_in")


@dataclass(frozen=True)
class VlaConfig:
    """Architecture of the VLA.

    Attributes:
        height, width: camera image size (pixels) the graphs take.
        stride, offset: the pixel grid: rows ``offset + stride * i``, columns ``offset + stride * j``.
        patch: grid pixels per patch side; slots: tokens per patch.
        d_pix: pixel embedding width. d_model, heads, layers, mlp: trunk and expert transformer sizes.
        bands: Fourier bands of the 3D position embedding (frequencies 2^0 .. 2^(bands-1) cycles per unit).
        vocab_size, max_tokens: language vocabulary and instruction length.
        horizon, action_dim, state_dim: chunk steps, action channels, proprio vector length.
        frame: ``base`` (base-frame points, the model) or ``camera`` (camera-frame points, the ablation).
        max_range_m: depth beyond this is invalid.
    """

    height: int = 480
    width: int = 640
    stride: int = 8
    offset: int = 4
    patch: int = 10
    slots: int = 2
    d_pix: int = 24
    d_model: int = 64
    heads: int = 4
    layers: int = 3
    mlp: int = 128
    bands: int = 6
    vocab_size: int = 32
    max_tokens: int = 16
    horizon: int = 8
    action_dim: int = 3
    state_dim: int = 11
    frame: str = "base"
    max_range_m: float = 3.0

    def __post_init__(self) -> None:
        if self.frame not in _CENTRE:
            raise ValueError(f"VlaConfig.frame must be one of {tuple(_CENTRE)}, got {self.frame!r}")
        h, w = self.grid
        if h % self.patch or w % self.patch:
            raise ValueError(f"pixel grid {h}x{w} is not divisible into {self.patch}x{self.patch} patches")
        if self.d_model % self.heads:
            raise ValueError("d_model must be divisible by heads")

    @property
    def grid(self) -> tuple[int, int]:
        """(h, w) of the pixel grid."""
        return len(range(self.offset, self.height, self.stride)), len(range(self.offset, self.width, self.stride))

    @property
    def vision_tokens(self) -> int:
        h, w = self.grid
        return (h // self.patch) * (w // self.patch) * self.slots

    @property
    def prefix_tokens(self) -> int:
        """N: vision tokens + language tokens + the goal token."""
        return self.vision_tokens + self.max_tokens + 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


# ------------------------------------------------------------------------------------------------- points


def depth_to_points(depth: torch.Tensor, calib: torch.Tensor, config: VlaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid depth (B, h, w) in depth units (any real dtype) and packed calibrations (B, 17) -> points (B, h, w, 3)
    metres in ``config.frame`` (0 where invalid) and validity (B, h, w) float (1 = valid)."""
    depth = depth.to(torch.float32)
    fx, fy, cx, cy, scale = (calib[:, i].reshape(-1, 1, 1) for i in range(5))
    h, w = depth.shape[1], depth.shape[2]
    v = (config.offset + config.stride * torch.arange(h, dtype=torch.float32, device=depth.device)).reshape(1, h, 1)
    u = (config.offset + config.stride * torch.arange(w, dtype=torch.float32, device=depth.device)).reshape(1, 1, w)
    z = depth * scale
    valid = ((depth > 0) & (z <= config.max_range_m)).to(torch.float32)
    z = z * valid
    pts = torch.stack([(u - cx) / fx * z, (v - cy) / fy * z, z], dim=-1)  # optical frame
    if config.frame == "base":
        rot_t = calib[:, 5:14].reshape(-1, 1, 3, 3).transpose(-1, -2)  # (B, 1, 3, 3): rows of R^T
        pts = pts @ rot_t + calib[:, 14:17].reshape(-1, 1, 1, 3)  # (B, h, w, 3) @ (B, 1, 3, 3)
    return pts * valid.unsqueeze(-1), valid


def xyz_to_points(xyz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A robot-side base-frame XYZ grid (B, h, w, 3), NaN = invalid -> points (0 where invalid) and validity."""
    valid = ~torch.isnan(xyz).any(dim=-1)
    return torch.where(valid.unsqueeze(-1), xyz, torch.zeros_like(xyz)), valid.to(torch.float32)


# ------------------------------------------------------------------------------------------------- blocks


class Fourier3d(nn.Module):
    """3D position embedding: [p, sin(2^k pi p), cos(2^k pi p)] of normalised points -> d_model."""

    def __init__(self, bands: int, d_model: int) -> None:
        super().__init__()
        self.register_buffer("freqs", math.pi * 2.0 ** torch.arange(bands, dtype=torch.float32))
        self.proj = nn.Linear(3 + 6 * bands, d_model)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        x = (p.unsqueeze(-1) * self.freqs).flatten(-2)  # (..., 3 * bands)
        return self.proj(torch.cat([p, torch.sin(x), torch.cos(x)], dim=-1))


class PatchTokenizer(nn.Module):
    """Pixel grid -> ``slots`` attention-pooled tokens per patch with 3D position embeddings, and their mask."""

    def __init__(self, config: VlaConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        # derived from the frame, not learned: not saved, so a warm start from the other frame keeps this one's
        self.register_buffer("centre", torch.tensor(_CENTRE[c.frame], dtype=torch.float32), persistent=False)
        self.pixel = nn.Sequential(nn.Linear(7, c.d_pix), nn.ReLU(), nn.Linear(c.d_pix, c.d_pix), nn.ReLU())
        self.score = nn.Linear(c.d_pix, c.slots)
        self.token = nn.Linear(2 * c.d_pix, c.d_model)
        self.pos = Fourier3d(c.bands, c.d_model)
        self.slot = nn.Parameter(torch.zeros(c.slots, c.d_model))

    def features(
        self, rgb: torch.Tensor, points: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb (B, h, w, 3) uint8, points (B, h, w, 3) metres, valid (B, h, w) -> per-pixel features (B, h, w, 7)
        (colour, validity, normalised point) and normalised points (B, h, w, 3) (0 where invalid)."""
        pn = (points - self.centre) * _SCALE * valid.unsqueeze(-1)
        return torch.cat([rgb.to(torch.float32) / 255.0 - 0.5, valid.unsqueeze(-1), pn], dim=-1), pn

    def forward(self, feat: torch.Tensor, pn: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel features (B, h, w, 7) and normalised points (B, h, w, 3) from :meth:`features`, valid
        (B, h, w) -> tokens (B, T, d), mask (B, T) float."""
        c = self.config
        b, h, w = valid.shape
        p = c.patch
        ph, pw = h // p, w // p
        hid = self.pixel(feat)  # (B, h, w, d_pix)

        def patches(x: torch.Tensor) -> torch.Tensor:  # (B, h, w, C) -> (B, P, p*p, C)
            return x.reshape(b, ph, p, pw, p, -1).permute(0, 1, 3, 2, 4, 5).reshape(b, ph * pw, p * p, -1)

        hid_p, pts_p, val_p = patches(hid), patches(pn), patches(valid.unsqueeze(-1))
        logits = self.score(hid_p) + (val_p - 1.0) * -_NEG  # (B, P, p*p, S); invalid pixels never win
        alpha = torch.softmax(logits, dim=2)
        pooled = alpha.transpose(2, 3) @ hid_p  # (B, P, S, d_pix)
        where = alpha.transpose(2, 3) @ pts_p  # (B, P, S, 3)
        count = val_p.sum(dim=2)  # (B, P, 1)
        mean = (hid_p * val_p).sum(dim=2) / torch.clamp(count, min=1.0)  # (B, P, d_pix)
        tok = self.token(torch.cat([pooled, mean.unsqueeze(2).expand(-1, -1, c.slots, -1)], dim=-1))
        tok = tok + self.pos(where) + self.slot
        mask = (count > 0).to(torch.float32).expand(-1, -1, c.slots)  # (B, P, S)
        return tok.reshape(b, -1, c.d_model), mask.reshape(b, -1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention with an additive key mask. q (B, Nq, d), k/v (B, Nk, d), mask (B, Nk) 1 = attend."""
    b, nq, d = q.shape
    dh = d // heads
    qh = q.reshape(b, nq, heads, dh).transpose(1, 2)
    kh = k.reshape(b, -1, heads, dh).transpose(1, 2)
    vh = v.reshape(b, -1, heads, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh) + ((1.0 - mask) * _NEG)[:, None, None, :]
    out = torch.softmax(scores, dim=-1) @ vh
    return out.transpose(1, 2).reshape(b, nq, d)


class GoalPointer(nn.Module):
    """The instruction's target point read off the depth's points (module docstring, "Goal pointer").

    A per-pixel score — a small MLP of each pixel's own colour, validity and point, dotted with a query made from the
    instruction's word embeddings alone — is softmaxed over the valid pixels of the grid; the goal is the
    attention-weighted mean of their points plus a bounded correction (the target is a top centre or an object
    centre, the camera sees surfaces), clamped to the workspace box. Neither side sees the rest of the scene, so
    the pointer cannot memorise placements: it has to recognise the named object where it is."""

    def __init__(self, config: VlaConfig) -> None:
        super().__init__()
        d = config.d_model
        self.pixel_key = nn.Sequential(nn.Linear(7, d), nn.GELU(), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.word_query = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.correct = nn.Sequential(nn.Linear(7 + d, d), nn.GELU(), nn.Linear(d, 3))
        nn.init.zeros_(self.correct[-1].weight)
        nn.init.zeros_(self.correct[-1].bias)

    def forward(
        self,
        feat: torch.Tensor,
        pn: torch.Tensor,
        valid: torch.Tensor,
        words: torch.Tensor,
        word_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel features (B, P, 7), normalised points (B, P, 3) and validity (B, P) of the grid's P pixels,
        word embeddings (B, L, d) with mask (B, L) -> goal (B, 3) normalised, logits (B, P) (invalid ~-1e4)."""
        keep = word_mask.unsqueeze(-1)
        q = self.word_query((words * keep).sum(1) / torch.clamp(keep.sum(1), min=1.0))  # (B, d)
        logits = (self.pixel_key(feat) @ q.unsqueeze(-1)).squeeze(-1) / math.sqrt(q.shape[-1])
        logits = logits + (1.0 - valid) * _NEG
        att = torch.softmax(logits, dim=-1).unsqueeze(1)  # (B, 1, P)
        point = (att @ pn).squeeze(1)
        seen = (att @ feat).squeeze(1)
        goal = point + _GOAL_REFINE * torch.tanh(self.correct(torch.cat([seen, q], dim=-1)))
        return torch.clamp(goal, -_GOAL_BOX, _GOAL_BOX), logits


class Prefix(NamedTuple):
    """What :meth:`VlaModel.prefix` computes.

    Attributes:
        kv: (B, 2 * layers, N, d) the cache: keys then values per layer (trunk tokens, then the goal token).
        mask: (B, N) float, 1 = attend.
        pixel_points: (B, P, 3) the grid's normalised points (0 where invalid); pixel_valid: (B, P) float.
        goal: (B, 3) the pointer's target point, normalised, the model's frame.
        goal_logits: (B, P) the pointer's logits over the grid's pixels.
    """

    kv: torch.Tensor
    mask: torch.Tensor
    pixel_points: torch.Tensor
    pixel_valid: torch.Tensor
    goal: torch.Tensor
    goal_logits: torch.Tensor


class Block(nn.Module):
    """Pre-norm transformer layer; ``forward`` also returns its keys and values (the cache)."""

    def __init__(self, d: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, mlp), nn.GELU(), nn.Linear(mlp, d))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        cache_k: torch.Tensor | None = None,
        cache_v: torch.Tensor | None = None,
        cache_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, N, d) with mask (B, N); optionally attending also to cached keys/values (B, M, d) with their mask."""
        q, k, v = self.qkv(self.norm1(x)).chunk(3, dim=-1)
        keys, values, keep = k, v, mask
        if cache_k is not None and cache_v is not None and cache_mask is not None:
            keys = torch.cat([cache_k, k], dim=1)
            values = torch.cat([cache_v, v], dim=1)
            keep = torch.cat([cache_mask, mask], dim=1)
        x = x + self.out(_attend(q, keys, values, keep, self.heads))
        x = x + self.ff(self.norm2(x))
        return x, k, v


def _time_features(t: torch.Tensor, d: int) -> torch.Tensor:
    """Sinusoidal embedding of flow time t (B, 1) in [0, 1] -> (B, d)."""
    half = d // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    x = t * 1000.0 * freqs
    return torch.cat([torch.sin(x), torch.cos(x)], dim=-1)


# -------------------------------------------------------------------------------------------------- model


class VlaModel(nn.Module):
    """Prefix encoder (vision + language trunk) and flow-matching action expert (see the module docstring)."""

    def __init__(self, config: VlaConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.vision = PatchTokenizer(c)
        self.words = nn.Embedding(c.vocab_size, c.d_model)
        self.word_pos = nn.Parameter(torch.zeros(c.max_tokens, c.d_model))
        self.kind = nn.Parameter(torch.zeros(2, c.d_model))  # vision, language
        self.trunk = nn.ModuleList([Block(c.d_model, c.heads, c.mlp) for _ in range(c.layers)])
        self.state_in = nn.Linear(c.state_dim, c.d_model)
        self.action_in = nn.Linear(c.action_dim, c.d_model)
        self.time_in = nn.Sequential(nn.Linear(c.d_model, c.d_model), nn.GELU(), nn.Linear(c.d_model, c.d_model))
        self.step_pos = nn.Parameter(torch.zeros(c.horizon + 1, c.d_model))
        self.expert = nn.ModuleList([Block(c.d_model, c.heads, c.mlp) for _ in range(c.layers)])
        self.action_norm = nn.LayerNorm(c.d_model)
        self.action_out = nn.Linear(c.d_model, c.action_dim)
        self.pointer = GoalPointer(c)
        self.goal_in = Fourier3d(c.bands, c.d_model)
        self.goal_kind = nn.Parameter(torch.zeros(c.d_model))
        self.offset_in = nn.Sequential(
            nn.Linear(3, 2 * c.d_model),
            nn.GELU(),
            nn.Linear(2 * c.d_model, 2 * c.d_model),
            nn.GELU(),
            nn.Linear(2 * c.d_model, c.d_model),
        )
        nn.init.zeros_(self.offset_in[-1].weight)  # a warm start from a model without it starts where that one was
        nn.init.zeros_(self.offset_in[-1].bias)
        # the training set's state statistics (the served state is normalised with them): the TCP for the offset
        self.register_buffer("state_mean", torch.zeros(c.state_dim))
        self.register_buffer("state_std", torch.ones(c.state_dim))
        nn.init.normal_(self.word_pos, std=0.02)
        nn.init.normal_(self.step_pos, std=0.02)
        nn.init.normal_(self.kind, std=0.02)
        nn.init.normal_(self.goal_kind, std=0.02)
        nn.init.normal_(self.vision.slot, std=0.02)
        nn.init.zeros_(self.action_out.weight)
        nn.init.zeros_(self.action_out.bias)

    # -------------------------------------------------------------------------------------------- prefix
    def prefix(self, rgb: torch.Tensor, points: torch.Tensor, valid: torch.Tensor, ids: torch.Tensor) -> Prefix:
        """Grid rgb (B, h, w, 3) uint8, points (B, h, w, 3), valid (B, h, w), instruction ids (B, L) int -> the
        :class:`Prefix` (its cache ends with the goal token)."""
        feat, pn = self.vision.features(rgb, points, valid)
        vis, vis_mask = self.vision(feat, pn, valid)
        ids = ids.to(torch.int64)
        words = self.words(ids)
        lang = words + self.word_pos + self.kind[1]
        lang_mask = (ids != 0).to(torch.float32)
        x = torch.cat([vis + self.kind[0], lang], dim=1)
        mask = torch.cat([vis_mask, lang_mask], dim=1)
        kv = []
        for block in self.trunk:
            x, k, v = block(x, mask)
            kv += [k, v]
        b = valid.shape[0]
        flat_feat, flat_pn, flat_valid = feat.reshape(b, -1, 7), pn.reshape(b, -1, 3), valid.reshape(b, -1)
        goal, logits = self.pointer(flat_feat, flat_pn, flat_valid, words, lang_mask)
        goal_tok = (self.goal_in(goal) + self.goal_kind).unsqueeze(1)  # (B, 1, d)
        for i, block in enumerate(self.expert):  # the goal token's keys/values, as each expert layer makes them
            _, k, v = block.qkv(block.norm1(goal_tok)).chunk(3, dim=-1)
            kv[2 * i] = torch.cat([kv[2 * i], k], dim=1)
            kv[2 * i + 1] = torch.cat([kv[2 * i + 1], v], dim=1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        return Prefix(torch.stack(kv, dim=1), mask, flat_pn, flat_valid, goal, logits)

    # -------------------------------------------------------------------------------------------- expert
    def set_state_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the statistics (S,) the served state is normalised with (the TCP of :meth:`goal_offset`)."""
        self.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.state_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def goal_offset(self, goal: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Goal (B, 3) normalised (model frame) and normalised state (B, S) -> ``goal - tcp`` (B, 3) in units of
        ``_OFFSET_UNIT_M``, clamped to +-``_OFFSET_BOX``. The TCP is the state's three values before the gripper
        (:meth:`robot_stack.types.RobotState.vector`), in the base frame."""
        s = self.config.state_dim
        tcp = state[:, s - 4 : s - 1] * self.state_std[s - 4 : s - 1] + self.state_mean[s - 4 : s - 1]
        goal_m = goal / _SCALE + self.vision.centre
        return torch.clamp((goal_m - tcp) / _OFFSET_UNIT_M, -_OFFSET_BOX, _OFFSET_BOX)

    def velocity(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        state: torch.Tensor,
        goal: torch.Tensor,
        prefix_kv: torch.Tensor,
        prefix_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Noisy normalised chunk (B, H, A), time (B, 1), normalised state (B, S), the prefix's goal (B, 3) and
        cache -> velocity (B, H, A)."""
        c = self.config
        b = x_t.shape[0]
        time_tok = self.time_in(_time_features(t, c.d_model)).unsqueeze(1)  # (B, 1, d)
        offset_tok = self.offset_in(self.goal_offset(goal, state)).unsqueeze(1)  # (B, 1, d)
        acts = self.action_in(x_t) + time_tok + self.step_pos[1:] + offset_tok
        state_tok = (self.state_in(state) + self.step_pos[0]).unsqueeze(1) + offset_tok
        tokens = torch.cat([state_tok, acts], dim=1)
        mask = torch.ones(b, c.horizon + 1, dtype=torch.float32, device=x_t.device)
        for i, block in enumerate(self.expert):
            tokens, _, _ = block(tokens, mask, prefix_kv[:, 2 * i], prefix_kv[:, 2 * i + 1], prefix_mask)
        return self.action_out(self.action_norm(tokens[:, 1:]))

    @torch.no_grad()
    def sample(
        self,
        state: torch.Tensor,
        goal: torch.Tensor,
        prefix_kv: torch.Tensor,
        prefix_mask: torch.Tensor,
        steps: int,
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Euler integration from noise (t = 0) to a normalised chunk (t = 1) in ``steps`` steps on one prefix."""
        c = self.config
        x = noise if noise is not None else torch.randn(state.shape[0], c.horizon, c.action_dim)
        for i in range(steps):
            t = torch.full((state.shape[0], 1), i / steps)
            x = x + self.velocity(x, t, state, goal, prefix_kv, prefix_mask) / steps
        return x


# ------------------------------------------------------------------------------------------------ exports


def _grid(image: torch.Tensor, config: VlaConfig) -> torch.Tensor:
    """Full-resolution (B, H, W, ...) -> the model's pixel grid (a strided slice, as in training)."""
    return image[:, config.offset :: config.stride, config.offset :: config.stride]


class PrefixGraph(nn.Module):
    """Served prefix encoder, depth form: rgb (B, H, W, 3) uint8, depth (B, H, W) int32 (uint16 values), calib
    (B, 17) float32, instruction (B, L) int32 -> prefix_kv, prefix_mask, goal (B, 3). The XYZ is computed here, in
    the graph."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, rgb: torch.Tensor, depth: torch.Tensor, calib: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.model.config
        points, valid = depth_to_points(_grid(depth, c), calib, c)
        out = self.model.prefix(_grid(rgb, c), points, valid, ids)
        return out.kv, out.mask, out.goal


class PrefixXyzGraph(nn.Module):
    """Served prefix encoder, XYZ form (base-frame models only): rgb (B, H, W, 3) uint8, xyz (B, H, W, 3) float32
    with NaN holes (computed on the robot), instruction (B, L) int32 -> prefix_kv, prefix_mask, goal."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        if model.config.frame != "base":
            raise ValueError("the XYZ form carries base-frame points; the camera-frame ablation has no XYZ form")
        self.model = model

    def forward(
        self, rgb: torch.Tensor, xyz: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        c = self.model.config
        points, valid = xyz_to_points(_grid(xyz, c))
        out = self.model.prefix(_grid(rgb, c), points, valid, ids)
        return out.kv, out.mask, out.goal


class DenoiseGraph(nn.Module):
    """Served denoising step: noisy_actions (B, H, A), time (B, 1), state (B, S) normalised, the prefix's goal,
    prefix_kv, prefix_mask -> velocity (B, H, A)."""

    def __init__(self, model: VlaModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        state: torch.Tensor,
        goal: torch.Tensor,
        prefix_kv: torch.Tensor,
        prefix_mask: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.velocity(x_t, t, state, goal, prefix_kv, prefix_mask)
