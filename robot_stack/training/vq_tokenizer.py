"""Train, export and graft a VQ action tokenizer on the project's own scripted-expert demonstrations.

**Data.** Action chunks come from the scripted expert (:func:`robot_stack.sim.expert.expert_actions`, a pure
function of the TCP and the cube's top centre): TCP positions and cube positions are sampled uniformly in the
demo workspace (:data:`TCP_BOUNDS`, :data:`CUBE_BOUNDS`, base frame, metres); no rendering. A fraction of the
states is held out and never used for fitting.

**Tokenizer** (everything in metres, base frame of the canonical robot, chunk (horizon, 3) ``ee_delta_xyz``):

1. *Encoder* (linear, learned by PCA on the training chunks): ``latent = (chunk.flat - mean) @ components.T``,
   reshaped to (n_tokens, latent_dim); token ``t`` holds principal components ``t*d .. (t+1)*d - 1``.
2. *Residual VQ*: per token and level a codebook learned by k-means (k-means++ initialisation, dead codes
   re-seeded) on the residual left by the previous levels; ``levels == 1`` is the single-codebook variant.
   Token ids: (n_tokens, levels) int64.
3. *Embodiment decoder*: codebook lookup (sum of the levels' codewords) -> ``z`` (n_tokens*latent_dim,), then
   ``chunk_norm = Phi(z, robot, rate) @ W + MLP([z, robot, rate])`` where ``robot`` is the one-hot robot type and
   ``rate`` the control rate in Hz between decoded actions. ``Phi`` is the outer product
   ``robot ⊗ [1, r, r²] ⊗ [z / scale, 1]`` (``r`` the rate mapped to [-1, 1]): a linear head per robot type
   whose weights vary smoothly with the rate (fitted by least squares); the MLP
   (:func:`robot_stack.training.reach_model.train_mlp`, numpy + Adam) learns the remaining non-linear part.
   The output is normalised; the manifest's stats de-normalise it (``chunk = chunk_norm * std + mean``).

**Embodiments** (:data:`EMBODIMENTS`) are variants of the demo arm the decoder is conditioned on: the canonical
Panda (the tokens' own embodiment), a Panda mounted rotated 90° about z (its ``ee_delta_xyz`` are expressed in
its own base frame) and a Panda limited to 0.15 m/s. Each decoded chunk is what the expert would command *that*
robot at *that* rate for the same situation; the tokens are always encoded from the canonical chunk (10 Hz).

**Cross-embodiment** (:func:`arm_profiles`): the described arms (Panda, UR5, SO-101) as profiles, each with the
TCP speed limit of its description. Tokens are end-effector motion in the base frame, shared by every arm; an arm's
decoder output is the same path at most at that arm's speed (:func:`retime_chunk`), which its IK then turns into
its own joint trajectory.

**Export** (:func:`export_tokenizer`): ``<id>.encoder.onnx`` (``chunk`` (horizon, 3) float32 -> ``tokens``
(n_tokens, levels) int64, in-graph argmin over codebook distances per level on the residual),
``<id>.decoder.onnx`` (``tokens``, ``robot`` (R,) float32, ``rate_hz`` (1,) float32 -> ``chunk_norm``
(horizon, 3) float32) and ``<id>.yaml`` (:class:`~robot_stack.decoders.vq.VqManifest`).
:func:`vq_policy_head` appends the encoder to a policy graph that outputs a chunk, so the served model emits
token ids. :func:`build_shipped` rebuilds the files under ``robot_stack/policy/models/vq/`` (under 2 minutes)::

    python -m robot_stack.policy.vq_tokenizer            # or --out DIR
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from robot_stack.decoders.vq import VQ_MODELS_DIR, VqManifest
from robot_stack.errors import ConfigError, PolicyError, ShapeError
from robot_stack.sim.expert import ExpertConfig, expert_actions
from robot_stack.training.reach_model import MlpParams, mlp_onnx_nodes, onnx_constant, train_mlp

__all__ = [
    "CUBE_BOUNDS",
    "EMBODIMENTS",
    "arm_profiles",
    "retime_chunk",
    "TCP_BOUNDS",
    "EmbodimentProfile",
    "ResidualVQ",
    "TokenizerConfig",
    "TokenizerData",
    "VqTokenizer",
    "build_decoder_onnx",
    "build_encoder_onnx",
    "build_shipped",
    "chunk_step_rmse_mm",
    "encoder_nodes",
    "expert_chunks",
    "export_tokenizer",
    "kmeans",
    "make_dataset",
    "sample_states",
    "train_tokenizer",
    "vq_policy_head",
]

log = logging.getLogger("robot_stack.policy.vq_tokenizer")

#: (low, high) per axis of the sampled TCP positions, base frame, metres.
TCP_BOUNDS = ((0.25, 0.70), (-0.30, 0.30), (0.02, 0.55))
#: (low, high) per axis of the sampled cube top centres, base frame, metres (the table top is z = 0.05).
CUBE_BOUNDS = ((0.40, 0.60), (-0.15, 0.15), (0.05, 0.05))
#: The expert speed of the demo's demonstrations (``train_demo`` uses the same).
EXPERT_SPEED_MPS = 0.25


@dataclass(frozen=True)
class EmbodimentProfile:
    """One robot type the embodiment decoder is conditioned on.

    Attributes:
        name: robot type name (one-hot position = index in the tokenizer's ``robot_types``).
        mount_yaw_rad: rotation of the robot's base frame about the canonical base z axis, rad; its
            ``ee_delta_xyz`` are expressed in its own base frame (``d_base = R_z(yaw)^T d_canonical``).
        max_speed_mps: TCP speed limit the expert respects on this robot, m/s.
        description: free text.
    """

    name: str
    mount_yaw_rad: float = 0.0
    max_speed_mps: float = EXPERT_SPEED_MPS
    description: str = ""


EMBODIMENTS = (
    EmbodimentProfile("panda", 0.0, EXPERT_SPEED_MPS, "the demo Panda (canonical; tokens are encoded from it)"),
    EmbodimentProfile("panda_yaw90", np.pi / 2, EXPERT_SPEED_MPS, "a Panda mounted rotated +90 deg about z"),
    EmbodimentProfile("panda_slow", 0.0, 0.15, "a Panda limited to 0.15 m/s (collaborative mode)"),
)


def arm_profiles(names: Sequence[str] | None = None) -> tuple[EmbodimentProfile, ...]:
    """The described arms (:mod:`robot_stack.robots.registry`; all when ``names`` is None) as decoder profiles:
    each keeps to its description's TCP speed limit, in its own base frame (no mount rotation)."""
    from robot_stack.robots.registry import ROBOT_MODELS, get_embodiment

    out = []
    for name in names or ROBOT_MODELS:
        emb = get_embodiment(name)
        out.append(EmbodimentProfile(emb.name, 0.0, emb.max_tcp_speed_mps, emb.description))
    return tuple(out)


def retime_chunk(chunk: np.ndarray, max_speed_mps: float, dt_s: float) -> np.ndarray:
    """``chunk`` ((..., horizon, 3) ``ee_delta_xyz``, metres, step 0 = 0) following the same path no faster than
    ``max_speed_mps``: step ``k`` advances along the chunk's polyline by ``min(its own progress, the previous step's
    + max_speed * dt_s)``. A chunk already within the speed is returned unchanged (float64)."""
    c = np.asarray(chunk, dtype=np.float64)
    if c.ndim < 2 or c.shape[-1] != 3 or not (max_speed_mps > 0 and dt_s > 0):
        raise ShapeError(f"retime_chunk: expected (..., horizon, 3) metres and positive speed/dt, got {c.shape}")
    flat = c.reshape(-1, *c.shape[-2:])
    out = np.empty_like(flat)
    step = max_speed_mps * dt_s
    for i, path in enumerate(flat):
        seg = np.linalg.norm(np.diff(path, axis=0), axis=1)
        cum = np.concatenate([[0.0], np.cumsum(seg)])
        s = cum.copy()
        for k in range(1, len(s)):
            s[k] = min(cum[k], s[k - 1] + step)
        out[i] = np.stack([np.interp(s, cum, path[:, d]) for d in range(3)], axis=1) if cum[-1] > 0 else path
    return out.reshape(c.shape)


def sample_states(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform (TCP, cube top) pairs: two (n, 3) float64 arrays, base frame, metres."""
    tcp = np.stack([rng.uniform(lo, hi, n) for lo, hi in TCP_BOUNDS], axis=1)
    cube = np.stack([rng.uniform(lo, hi, n) for lo, hi in CUBE_BOUNDS], axis=1)
    return tcp, cube


def expert_chunks(
    tcp: np.ndarray,
    cube: np.ndarray,
    profile: EmbodimentProfile = EMBODIMENTS[0],
    rate_hz: float | np.ndarray = 10.0,
    horizon: int = 8,
) -> np.ndarray:
    """(n, horizon, 3) float64 expert ``ee_delta_xyz`` chunks for ``profile`` at ``rate_hz`` (scalar or (n,)).

    ``tcp``, ``cube``: (n, 3) metres, canonical base frame; the result is in ``profile``'s base frame.
    """
    tcp, cube = np.atleast_2d(tcp), np.atleast_2d(cube)
    rates = np.broadcast_to(np.asarray(rate_hz, dtype=np.float64), (len(tcp),))
    out = np.empty((len(tcp), horizon, 3))
    for i, (p, c, rate) in enumerate(zip(tcp, cube, rates, strict=True)):
        config = ExpertConfig(horizon=horizon, dt_s=1.0 / float(rate), max_speed_mps=profile.max_speed_mps)
        out[i] = expert_actions(p, c, config)
    cos, sin = np.cos(profile.mount_yaw_rad), np.sin(profile.mount_yaw_rad)
    r_z = np.array([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]])
    return out @ r_z  # row vectors: d_base = R_z^T d  <=>  d_row @ R_z


def chunk_step_rmse_mm(pred: np.ndarray, truth: np.ndarray) -> float:
    """Root-mean-square Euclidean error per chunk step, mm. ``pred``, ``truth``: (..., 3) metres."""
    err = np.asarray(pred, np.float64).reshape(-1, 3) - np.asarray(truth, np.float64).reshape(-1, 3)
    return float(1000.0 * np.sqrt(np.mean(np.sum(err**2, axis=1))))


# ------------------------------------------------------------------------------------------ quantisation


def _sq_dists(x: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """(N, K) squared distances between rows of ``x`` (N, d) and ``codebook`` (K, d)."""
    return (x * x).sum(1)[:, None] - 2.0 * x @ codebook.T + (codebook * codebook).sum(1)[None, :]


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iters: int = 20) -> np.ndarray:
    """(k, d) float64 codebook of ``x`` (N, d) by Lloyd's k-means: k-means++ start, dead codes re-seeded on the
    worst-quantised points. Raises ShapeError if ``N < k``."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or len(x) < k:
        raise ShapeError(f"kmeans: need (N, d) data with N >= k = {k}, got {x.shape}")
    centres = np.empty((k, x.shape[1]))
    centres[0] = x[rng.integers(len(x))]
    closest = ((x - centres[0]) ** 2).sum(1)
    for j in range(1, k):  # k-means++: next centre with probability proportional to squared distance
        total = closest.sum()
        idx = rng.choice(len(x), p=closest / total) if total > 0 else rng.integers(len(x))
        centres[j] = x[idx]
        closest = np.minimum(closest, ((x - centres[j]) ** 2).sum(1))
    for _ in range(iters):
        d = _sq_dists(x, centres)
        assign = d.argmin(1)
        counts = np.bincount(assign, minlength=k)
        sums = np.zeros_like(centres)
        np.add.at(sums, assign, x)
        alive = counts > 0
        centres[alive] = sums[alive] / counts[alive, None]
        dead = np.flatnonzero(~alive)
        if dead.size:
            worst = np.argsort(d[np.arange(len(x)), assign])[-dead.size :]
            centres[dead] = x[worst]
    return centres


@dataclass(frozen=True)
class ResidualVQ:
    """Residual vector quantiser with one codebook per (level, token).

    Attributes:
        codebooks: per level a (n_tokens, K_level, latent_dim) float32 array, latent units (metres).
    """

    codebooks: tuple[np.ndarray, ...]

    @property
    def levels(self) -> int:
        return len(self.codebooks)

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(int(c.shape[1]) for c in self.codebooks)

    @classmethod
    def fit(cls, latent: np.ndarray, sizes: Sequence[int], rng: np.random.Generator, iters: int = 20) -> ResidualVQ:
        """Learn codebooks level by level on the residual of ``latent`` (N, n_tokens, d) metres."""
        residual = np.array(latent, dtype=np.float64)
        books = []
        for k in sizes:
            book = np.stack([kmeans(residual[:, t], int(k), rng, iters) for t in range(residual.shape[1])])
            books.append(book.astype(np.float32))
            residual -= cls._gather(books[-1], cls._nearest(residual.astype(np.float32), books[-1]))
        return cls(tuple(books))

    @staticmethod
    def _nearest(residual: np.ndarray, book: np.ndarray) -> np.ndarray:
        # float32, same arithmetic as the ONNX encoder: sum over d of (r - c)^2, argmin over codes
        out = np.empty(residual.shape[:2], dtype=np.int64)
        for start in range(0, len(residual), 256):  # batches bound the (n, T, K, d) temporary
            diff = residual[start : start + 256, :, None, :] - book[None]
            out[start : start + 256] = np.argmin(np.sum(diff * diff, axis=-1), axis=-1)
        return out  # (N, T)

    @staticmethod
    def _gather(book: np.ndarray, ids: np.ndarray) -> np.ndarray:
        return book[np.arange(book.shape[0])[None, :], ids]  # (N, T, d)

    def encode(self, latent: np.ndarray, levels: int | None = None) -> np.ndarray:
        """(N, n_tokens, d) latents -> (N, n_tokens, levels) int64 ids (first ``levels`` levels)."""
        residual = np.asarray(latent, dtype=np.float32).copy()
        ids = []
        for book in self.codebooks[: levels or self.levels]:
            level_ids = self._nearest(residual, book)
            residual -= self._gather(book, level_ids)
            ids.append(level_ids)
        return np.stack(ids, axis=-1)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """(N, n_tokens, l) ids of the first ``l`` levels -> (N, n_tokens, d) float32 sum of codewords."""
        ids = np.asarray(ids, dtype=np.int64)
        out = np.zeros((*ids.shape[:2], self.codebooks[0].shape[2]), dtype=np.float32)
        for level in range(ids.shape[2]):
            out += self._gather(self.codebooks[level], ids[:, :, level])
        return out


# -------------------------------------------------------------------------------------------- tokenizer


@dataclass(frozen=True)
class TokenizerConfig:
    """Hyper-parameters of :func:`train_tokenizer` (defaults: the shipped residual-VQ tokenizer).

    Attributes:
        n_tokens, latent_dim: latent shape (n_tokens, latent_dim); n_tokens * latent_dim <= horizon * 3.
        levels: residual levels (1 = single codebook); codebook_size: codes per level and token.
        n_states: sampled (TCP, cube) situations; held_out_fraction of them are never fitted.
        rate_range_hz: control rates the decoder is trained on (uniform); canonical_rate_hz: the tokens' rate.
        hidden, epochs, batch_size, lr: the residual MLP (:func:`~robot_stack.training.reach_model.train_mlp`).
        kmeans_iters: Lloyd iterations per codebook. seed: every random choice.
    """

    n_tokens: int = 2
    latent_dim: int = 6
    levels: int = 3
    codebook_size: int = 256
    n_states: int = 8000
    held_out_fraction: float = 0.15
    horizon: int = 8
    canonical_rate_hz: float = 10.0
    rate_range_hz: tuple[float, float] = (10.0, 20.0)
    hidden: tuple[int, ...] = (128, 128)
    epochs: int = 25
    batch_size: int = 128
    lr: float = 2e-3
    kmeans_iters: int = 20
    seed: int = 0
    embodiments: tuple[EmbodimentProfile, ...] = EMBODIMENTS


@dataclass(frozen=True)
class TokenizerData:
    """Training data for the tokenizer.

    Attributes:
        tcp, cube: (N, 3) sampled situations (metres, canonical base frame); ``train``/``held_out``: index arrays.
        canonical: (N, horizon, 3) expert chunks of the canonical robot at the canonical rate (metres).
        robot: (N,) int index of a random embodiment per situation; rate_hz: (N,) its random control rate.
        conditioned: (N, horizon, 3) the expert chunk for (robot, rate_hz) of each situation (metres).
    """

    tcp: np.ndarray
    cube: np.ndarray
    train: np.ndarray
    held_out: np.ndarray
    canonical: np.ndarray
    robot: np.ndarray
    rate_hz: np.ndarray
    conditioned: np.ndarray


def make_dataset(config: TokenizerConfig) -> TokenizerData:
    """Sample situations and label them with the expert (canonical + one random embodiment/rate each)."""
    rng = np.random.default_rng(config.seed)
    tcp, cube = sample_states(config.n_states, rng)
    order = rng.permutation(config.n_states)
    n_held = max(1, round(config.held_out_fraction * config.n_states))
    canonical = expert_chunks(tcp, cube, config.embodiments[0], config.canonical_rate_hz, config.horizon)
    robot = rng.integers(0, len(config.embodiments), config.n_states)
    rate = rng.uniform(*config.rate_range_hz, config.n_states)
    conditioned = np.empty_like(canonical)
    for r, profile in enumerate(config.embodiments):
        sel = robot == r
        conditioned[sel] = expert_chunks(tcp[sel], cube[sel], profile, rate[sel], config.horizon)
    return TokenizerData(
        tcp, cube, np.sort(order[n_held:]), np.sort(order[:n_held]), canonical, robot, rate, conditioned
    )


@dataclass(frozen=True)
class VqTokenizer:
    """A trained tokenizer: the numpy reference of the exported encoder and decoder graphs.

    Attributes:
        config: how it was trained.
        robot_types: embodiment names, in one-hot order.
        chunk_mean: (horizon*3,) float32 PCA centre, metres; components: (n_tokens*latent_dim, horizon*3) float32.
        rvq: the residual quantiser.
        latent_scale: (n_tokens*latent_dim,) float32 scale of the latent inside the linear head's features.
        linear: (R*3*(D+1), horizon*3) float32 weights of the conditioned linear head (normalised output).
        mlp: the residual MLP on ``[z, robot one-hot, rate_hz]`` (normalised output).
        norm_mean, norm_std: (horizon, 3) float32 output de-normalisation (metres).
        clip_low, clip_high: (horizon, 3) float32 bounds of de-normalised chunks (metres).
        metrics: held-out evaluation (see :func:`train_tokenizer`).
    """

    config: TokenizerConfig
    robot_types: tuple[str, ...]
    chunk_mean: np.ndarray
    components: np.ndarray
    rvq: ResidualVQ
    latent_scale: np.ndarray
    linear: np.ndarray
    mlp: MlpParams
    norm_mean: np.ndarray
    norm_std: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray
    metrics: dict[str, Any]

    @property
    def rate_centre_halfwidth(self) -> tuple[float, float]:
        lo, hi = self.config.rate_range_hz
        return (lo + hi) / 2.0, max((hi - lo) / 2.0, 1e-6)

    def latent(self, chunks: np.ndarray) -> np.ndarray:
        """(N, horizon, 3) metres -> (N, n_tokens, latent_dim) float32 continuous latents."""
        c = self.config
        flat = np.asarray(chunks, dtype=np.float32).reshape(-1, c.horizon * 3)
        return ((flat - self.chunk_mean) @ self.components.T).reshape(-1, c.n_tokens, c.latent_dim)

    def encode(self, chunks: np.ndarray, levels: int | None = None) -> np.ndarray:
        """(N, horizon, 3) chunks (metres, canonical robot and rate) -> (N, n_tokens, levels) int64 ids."""
        chunks = np.asarray(chunks)
        if chunks.ndim != 3 or chunks.shape[1:] != (self.config.horizon, 3) or not np.all(np.isfinite(chunks)):
            raise ShapeError(f"VqTokenizer.encode: expected finite (N, {self.config.horizon}, 3), got {chunks.shape}")
        return self.rvq.encode(self.latent(chunks), levels)

    def _decoder_inputs(self, z: np.ndarray, onehot: np.ndarray, rate_hz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Linear-head features Phi (N, F) and MLP inputs (N, D+R+1) for latents ``z`` (N, D)."""
        centre, half = self.rate_centre_halfwidth
        r = ((np.asarray(rate_hz, np.float32) - centre) / half).reshape(-1, 1)
        ones = np.ones_like(r)
        poly = np.concatenate([ones, r, r * r], axis=1)  # (N, 3)
        zz = np.concatenate([z / self.latent_scale, ones], axis=1)  # (N, D+1)
        phi = (onehot[:, :, None, None] * poly[:, None, :, None] * zz[:, None, None, :]).reshape(len(z), -1)
        return phi.astype(np.float32), np.concatenate([z, onehot, r * half + centre], axis=1).astype(np.float32)

    def onehot(self, robot_type: str | Sequence[str] | np.ndarray, n: int) -> np.ndarray:
        """(n, R) float32 one-hot rows for a robot type name (or n names / n indices)."""
        if isinstance(robot_type, str):
            robot_type = [robot_type] * n
        idx = []
        for r in robot_type:
            if isinstance(r, str):
                if r not in self.robot_types:
                    raise ConfigError(f"robot type {r!r} unknown; this tokenizer knows {list(self.robot_types)}")
                idx.append(self.robot_types.index(r))
            else:
                idx.append(int(r))
        return np.eye(len(self.robot_types), dtype=np.float32)[np.asarray(idx, dtype=np.int64)]

    def decode_normalised(
        self, ids: np.ndarray, robot_type: str | Sequence[str] | np.ndarray = "panda", rate_hz: Any = None
    ) -> np.ndarray:
        """What the decoder graph computes: ids (N, n_tokens, l <= levels) -> (N, horizon, 3) normalised chunks."""
        ids = np.asarray(ids, dtype=np.int64)
        n = len(ids)
        rate = np.broadcast_to(
            np.asarray(self.config.canonical_rate_hz if rate_hz is None else rate_hz, np.float32), (n,)
        )
        z = self.rvq.lookup(ids).reshape(n, -1)
        phi, x = self._decoder_inputs(z, self.onehot(robot_type, n), rate)
        out = phi @ self.linear + self.mlp.predict(x).reshape(n, -1)
        return out.reshape(n, self.config.horizon, 3).astype(np.float32)

    def decode(
        self, ids: np.ndarray, robot_type: str | Sequence[str] | np.ndarray = "panda", rate_hz: Any = None
    ) -> np.ndarray:
        """ids (N, n_tokens, l) -> (N, horizon, 3) float32 ``ee_delta_xyz`` chunks, metres, robot's base frame.

        ``rate_hz``: scalar or (N,) Hz between decoded actions (default: the canonical rate).
        """
        out = self.decode_normalised(ids, robot_type, rate_hz) * self.norm_std + self.norm_mean
        return np.clip(out, self.clip_low, self.clip_high).astype(np.float32)


def train_tokenizer(
    config: TokenizerConfig = TokenizerConfig(),  # noqa: B008 - frozen, immutable default
    data: TokenizerData | None = None,
) -> VqTokenizer:
    """Fit encoder (PCA), residual VQ (k-means) and embodiment decoder on expert data; evaluate on held-out.

    ``data`` (from :func:`make_dataset` with the same ``n_states``/``horizon``/``seed``) can be shared between
    tokenizers. The returned tokenizer's ``metrics`` hold per-step RMSE in mm on held-out situations:
    ``heldout_rmse_mm`` (canonical robot, canonical rate, all levels), ``heldout_rmse_mm_levels`` (decoding
    only the first 1..levels levels), ``heldout_rmse_mm_<robot>`` (random rates in range),
    ``latent_rmse_mm_levels`` (quantiser alone: PCA inverse of the quantised latent vs the chunk).
    """
    c = config
    dim = c.n_tokens * c.latent_dim
    if dim > c.horizon * 3:
        raise ConfigError(f"n_tokens * latent_dim = {dim} exceeds the chunk size {c.horizon * 3}")
    t0 = time.perf_counter()
    data = data if data is not None else make_dataset(c)
    if len(data.canonical) != c.n_states or data.canonical.shape[1] != c.horizon:
        raise ConfigError("train_tokenizer: data was made with a different n_states/horizon than the config")
    rng = np.random.default_rng(c.seed + 1)
    tr, ho = data.train, data.held_out
    flat = data.canonical.reshape(len(data.canonical), -1)

    # 1. encoder: PCA of the training chunks
    mean = flat[tr].mean(0)
    _, _, vt = np.linalg.svd(flat[tr] - mean, full_matrices=False)
    components = vt[:dim]
    latent = ((flat - mean) @ components.T).reshape(-1, c.n_tokens, c.latent_dim)
    # 2. residual VQ
    rvq = ResidualVQ.fit(latent[tr], [c.codebook_size] * c.levels, rng, c.kmeans_iters)
    t_vq = time.perf_counter() - t0

    # 3. embodiment decoder on quantised latents: canonical targets + one random (robot, rate) per situation
    f32 = np.float32
    scaffold = VqTokenizer(
        config=c,
        robot_types=tuple(p.name for p in c.embodiments),
        chunk_mean=mean.astype(f32),
        components=components.astype(f32),
        rvq=rvq,
        latent_scale=latent[tr].reshape(len(tr), -1).std(0).astype(f32) + f32(1e-6),
        linear=np.zeros((0, 0), f32),
        mlp=None,  # type: ignore[arg-type]
        norm_mean=np.zeros((c.horizon, 3), f32),
        norm_std=np.ones((c.horizon, 3), f32),
        clip_low=np.zeros((c.horizon, 3), f32),
        clip_high=np.zeros((c.horizon, 3), f32),
        metrics={},
    )
    ids = rvq.encode(latent)
    z = rvq.lookup(ids).reshape(len(ids), -1)
    robots = np.concatenate([np.zeros(len(tr), np.int64), data.robot[tr]])
    rates = np.concatenate([np.full(len(tr), c.canonical_rate_hz), data.rate_hz[tr]])
    targets = np.concatenate([data.canonical[tr], data.conditioned[tr]]).reshape(2 * len(tr), -1)
    norm_mean = targets.mean(0)
    norm_std = np.maximum(targets.std(0), 1e-3)  # step 0 is always 0: floor the scale at 1 mm
    tn = (targets - norm_mean) / norm_std
    phi, x = scaffold._decoder_inputs(
        np.concatenate([z[tr], z[tr]]), np.eye(len(c.embodiments), dtype=f32)[robots], rates
    )
    w, *_ = np.linalg.lstsq(phi.astype(np.float64), tn, rcond=None)
    mlp, mlp_metrics = train_mlp(
        x,
        tn - phi @ w,
        horizon=c.horizon,
        dt_s=1.0 / c.canonical_rate_hz,
        hidden=c.hidden,
        epochs=c.epochs,
        batch_size=c.batch_size,
        lr=c.lr,
        seed=c.seed,
    )
    span = targets.max(0) - targets.min(0)
    tok = replace(
        scaffold,
        linear=w.astype(f32),
        mlp=mlp,
        norm_mean=norm_mean.reshape(c.horizon, 3).astype(f32),
        norm_std=norm_std.reshape(c.horizon, 3).astype(f32),
        clip_low=(targets.min(0) - 0.1 * span - 1e-3).reshape(c.horizon, 3).astype(f32),
        clip_high=(targets.max(0) + 0.1 * span + 1e-3).reshape(c.horizon, 3).astype(f32),
    )
    t_train = time.perf_counter() - t0

    # 4. held-out evaluation
    truth = data.canonical[ho]
    ids_ho = tok.encode(truth)
    metrics: dict[str, Any] = {
        "heldout_rmse_mm": round(chunk_step_rmse_mm(tok.decode(ids_ho), truth), 3),
        "heldout_rmse_mm_levels": [
            round(chunk_step_rmse_mm(tok.decode(ids_ho[:, :, :k]), truth), 3) for k in range(1, c.levels + 1)
        ],
        "latent_rmse_mm_levels": [
            round(chunk_step_rmse_mm(rvq.lookup(ids_ho[:, :, :k]).reshape(len(ho), -1) @ components + mean, truth), 3)
            for k in range(1, c.levels + 1)
        ],
        "pca_floor_rmse_mm": round(chunk_step_rmse_mm(latent[ho].reshape(len(ho), -1) @ components + mean, truth), 3),
    }
    for r, profile in enumerate(c.embodiments):
        sel = ho[data.robot[ho] == r]
        pred = tok.decode(tok.encode(data.canonical[sel]), profile.name, data.rate_hz[sel])
        metrics[f"heldout_rmse_mm_{profile.name}"] = round(chunk_step_rmse_mm(pred, data.conditioned[sel]), 3)
    metrics.update(
        n_train=int(len(tr)),
        n_held_out=int(len(ho)),
        mlp_val_mse_normalised=round(float(mlp_metrics["val_mse_normalised"]), 5),
        vq_s=round(t_vq, 2),
        train_s=round(t_train, 2),
    )
    log.info("tokenizer levels=%d K=%d: %s", c.levels, c.codebook_size, metrics)
    return replace(tok, metrics=metrics)


# ------------------------------------------------------------------------------------------------- ONNX


def encoder_nodes(tok: VqTokenizer, chunk: str, tokens: str, prefix: str = "vq/") -> list[onnx.NodeProto]:
    """Nodes mapping the graph tensor ``chunk`` ((horizon, 3) float32, metres) to ``tokens`` ((n_tokens, levels)
    int64): PCA projection, then per level an argmin over squared codebook distances on the residual."""
    c, p = tok.config, prefix
    nodes = [
        onnx_constant(f"{p}flat_shape", np.array([1, c.horizon * 3]), np.int64),
        helper.make_node("Reshape", [chunk, f"{p}flat_shape"], [f"{p}flat"]),
        onnx_constant(f"{p}mean", tok.chunk_mean),
        helper.make_node("Sub", [f"{p}flat", f"{p}mean"], [f"{p}centred"]),
        onnx_constant(f"{p}proj", np.ascontiguousarray(tok.components.T)),
        helper.make_node("MatMul", [f"{p}centred", f"{p}proj"], [f"{p}latent"]),
        onnx_constant(f"{p}tok_shape", np.array([c.n_tokens, 1, c.latent_dim]), np.int64),
        helper.make_node("Reshape", [f"{p}latent", f"{p}tok_shape"], [f"{p}r0"]),  # (T, 1, d)
        onnx_constant(f"{p}axis2", np.array([2]), np.int64),
    ]
    ids = []
    for level, book in enumerate(tok.rvq.codebooks):
        k = book.shape[1]
        r, q = f"{p}r{level}", f"{p}l{level}_"
        nodes += [
            onnx_constant(f"{q}book", book),  # (T, K, d)
            helper.make_node("Sub", [r, f"{q}book"], [f"{q}diff"]),
            helper.make_node("Mul", [f"{q}diff", f"{q}diff"], [f"{q}sq"]),
            helper.make_node("ReduceSum", [f"{q}sq", f"{p}axis2"], [f"{q}dist"], keepdims=0),  # (T, K)
            helper.make_node("ArgMin", [f"{q}dist"], [f"{q}ids"], axis=1, keepdims=1),  # (T, 1) int64
            onnx_constant(f"{q}offset", (np.arange(c.n_tokens) * k).reshape(-1, 1), np.int64),
            helper.make_node("Add", [f"{q}ids", f"{q}offset"], [f"{q}flat_ids"]),
            onnx_constant(f"{q}book_flat", book.reshape(-1, c.latent_dim)),
            helper.make_node("Gather", [f"{q}book_flat", f"{q}flat_ids"], [f"{q}code"], axis=0),  # (T, 1, d)
            helper.make_node("Sub", [r, f"{q}code"], [f"{p}r{level + 1}"]),
        ]
        ids.append(f"{q}ids")
    nodes.append(helper.make_node("Concat", ids, [tokens], axis=1))
    return nodes


def _model(nodes: list[onnx.NodeProto], name: str, inputs: list, outputs: list) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="robot-stack")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def build_encoder_onnx(tok: VqTokenizer, name: str = "vq_encoder") -> onnx.ModelProto:
    """``chunk`` (horizon, 3) float32 metres -> ``tokens`` (n_tokens, levels) int64."""
    c = tok.config
    return _model(
        encoder_nodes(tok, "chunk", "tokens", prefix=""),
        name,
        [helper.make_tensor_value_info("chunk", TensorProto.FLOAT, [c.horizon, 3])],
        [helper.make_tensor_value_info("tokens", TensorProto.INT64, [c.n_tokens, tok.rvq.levels])],
    )


def build_decoder_onnx(tok: VqTokenizer, name: str = "vq_decoder") -> onnx.ModelProto:
    """``tokens`` (n_tokens, levels) int64, ``robot`` (R,) float32 one-hot, ``rate_hz`` (1,) float32 ->
    ``chunk_norm`` (horizon, 3) float32 (de-normalise with the manifest's stats)."""
    c = tok.config
    n_robots, dim = len(tok.robot_types), c.n_tokens * c.latent_dim
    centre, half = tok.rate_centre_halfwidth
    nodes: list[onnx.NodeProto] = []
    codes = []
    for level, book in enumerate(tok.rvq.codebooks):
        q = f"l{level}_"
        nodes += [
            onnx_constant(f"{q}index", np.array(level), np.int64),
            helper.make_node("Gather", ["tokens", f"{q}index"], [f"{q}ids"], axis=1),  # (T,)
            onnx_constant(f"{q}offset", np.arange(c.n_tokens) * book.shape[1], np.int64),
            helper.make_node("Add", [f"{q}ids", f"{q}offset"], [f"{q}flat_ids"]),
            onnx_constant(f"{q}book_flat", book.reshape(-1, c.latent_dim)),
            helper.make_node("Gather", [f"{q}book_flat", f"{q}flat_ids"], [f"{q}code"], axis=0),  # (T, d)
        ]
        codes.append(f"{q}code")
    nodes.append(helper.make_node("Sum", codes, ["z_tokens"]))
    nodes += [
        onnx_constant("z_shape", np.array([1, dim]), np.int64),
        helper.make_node("Reshape", ["z_tokens", "z_shape"], ["z"]),  # (1, D)
        # conditioned linear head: Phi = robot ⊗ [1, r, r²] ⊗ [z / scale, 1]
        onnx_constant("one_11", np.ones((1, 1)), np.float32),
        onnx_constant("one_1", np.ones(1), np.float32),
        onnx_constant("latent_scale", tok.latent_scale),
        helper.make_node("Div", ["z", "latent_scale"], ["zn"]),
        helper.make_node("Concat", ["zn", "one_11"], ["zz"], axis=1),  # (1, D+1)
        onnx_constant("rate_centre", np.array([centre]), np.float32),
        onnx_constant("rate_half", np.array([half]), np.float32),
        helper.make_node("Sub", ["rate_hz", "rate_centre"], ["rate_c"]),
        helper.make_node("Div", ["rate_c", "rate_half"], ["rn"]),
        helper.make_node("Mul", ["rn", "rn"], ["rn2"]),
        helper.make_node("Concat", ["one_1", "rn", "rn2"], ["poly"], axis=0),  # (3,)
        onnx_constant("robot_shape3", np.array([n_robots, 1, 1]), np.int64),
        onnx_constant("poly_shape3", np.array([1, 3, 1]), np.int64),
        onnx_constant("zz_shape3", np.array([1, 1, dim + 1]), np.int64),
        helper.make_node("Reshape", ["robot", "robot_shape3"], ["robot3"]),
        helper.make_node("Reshape", ["poly", "poly_shape3"], ["poly3"]),
        helper.make_node("Reshape", ["zz", "zz_shape3"], ["zz3"]),
        helper.make_node("Mul", ["robot3", "poly3"], ["rp3"]),
        helper.make_node("Mul", ["rp3", "zz3"], ["phi3"]),  # (R, 3, D+1)
        onnx_constant("phi_shape", np.array([1, n_robots * 3 * (dim + 1)]), np.int64),
        helper.make_node("Reshape", ["phi3", "phi_shape"], ["phi"]),
        onnx_constant("linear_w", tok.linear),
        helper.make_node("MatMul", ["phi", "linear_w"], ["lin"]),  # (1, horizon*3)
        # residual MLP on [z, robot, rate_hz]
        onnx_constant("robot_row_shape", np.array([1, n_robots]), np.int64),
        helper.make_node("Reshape", ["robot", "robot_row_shape"], ["robot_row"]),
        onnx_constant("rate_row_shape", np.array([1, 1]), np.int64),
        helper.make_node("Reshape", ["rate_hz", "rate_row_shape"], ["rate_row"]),
        helper.make_node("Concat", ["z", "robot_row", "rate_row"], ["mlp_in"], axis=1),
        *mlp_onnx_nodes(tok.mlp, "mlp_in", "res", prefix="mlp/"),
        helper.make_node("Add", ["lin", "res"], ["out_flat"]),
        onnx_constant("out_shape", np.array([c.horizon, 3]), np.int64),
        helper.make_node("Reshape", ["out_flat", "out_shape"], ["chunk_norm"]),
    ]
    return _model(
        nodes,
        name,
        [
            helper.make_tensor_value_info("tokens", TensorProto.INT64, [c.n_tokens, tok.rvq.levels]),
            helper.make_tensor_value_info("robot", TensorProto.FLOAT, [n_robots]),
            helper.make_tensor_value_info("rate_hz", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("chunk_norm", TensorProto.FLOAT, [c.horizon, 3])],
    )


def export_tokenizer(tok: VqTokenizer, out_dir: str | Path, tokenizer_id: str, description: str = "") -> Path:
    """Write ``<id>.encoder.onnx``, ``<id>.decoder.onnx`` and the manifest ``<id>.yaml``; return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    enc, dec = out / f"{tokenizer_id}.encoder.onnx", out / f"{tokenizer_id}.decoder.onnx"
    enc.write_bytes(build_encoder_onnx(tok, f"{tokenizer_id}-encoder").SerializeToString())
    dec.write_bytes(build_decoder_onnx(tok, f"{tokenizer_id}-decoder").SerializeToString())
    c = tok.config
    manifest = VqManifest(
        tokenizer_id=tokenizer_id,
        encoder_path=enc,
        decoder_path=dec,
        action_space="ee_delta_xyz",
        horizon=c.horizon,
        action_dim=3,
        dt_s=1.0 / c.canonical_rate_hz,
        n_tokens=c.n_tokens,
        latent_dim=c.latent_dim,
        levels=tok.rvq.levels,
        codebook_sizes=tok.rvq.sizes,
        robot_types=tok.robot_types,
        control_rate_hz=c.canonical_rate_hz,
        control_rate_range_hz=c.rate_range_hz,
        norm_mean=tok.norm_mean,
        norm_std=tok.norm_std,
        clip_low=tok.clip_low,
        clip_high=tok.clip_high,
        metrics=dict(tok.metrics),
        description=description,
    )
    return manifest.save(out / f"{tokenizer_id}.yaml")


def vq_policy_head(
    model: onnx.ModelProto,
    tokenizer: VqTokenizer | VqManifest | str | Path,
    actions_output: str = "actions",
    tokens_output: str = "tokens",
    keep_actions: bool = False,
) -> onnx.ModelProto:
    """Append the tokenizer's encoder to ``model`` so that it emits token ids instead of a chunk.

    Args:
        model: a policy graph with an output ``actions_output`` of shape (horizon, 3) float32
            (``ee_delta_xyz``, metres, canonical robot and rate).
        tokenizer: a trained :class:`VqTokenizer`, or a manifest (object or YAML path) whose encoder ONNX is
            grafted in (names prefixed ``vq/``).
        tokens_output: name of the new (n_tokens, levels) int64 output.
        keep_actions: also keep the chunk output (debugging); it is dropped by default.

    Returns a new, checked model. Serve it with a manifest whose output is ``tokens_output`` (int64,
    [n_tokens, levels]), ``action_space: latent_vq``, ``action_head: latent_vq`` and ``horizon: n_tokens``;
    the robot side decodes with ``get_decoder("latent_vq", manifest=<tokenizer yaml>)``.
    """
    if isinstance(tokenizer, VqTokenizer):
        nodes = encoder_nodes(tokenizer, actions_output, tokens_output)
        shape = [tokenizer.config.n_tokens, tokenizer.rvq.levels]
    else:
        vq = tokenizer if isinstance(tokenizer, VqManifest) else VqManifest.load(tokenizer)
        encoder = onnx.load(str(vq.encoder_path))
        rename = {"chunk": actions_output, "tokens": tokens_output}
        nodes = []
        for node in encoder.graph.node:
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.input[:] = [rename.get(n, f"vq/{n}") for n in node.input]
            new.output[:] = [rename.get(n, f"vq/{n}") for n in node.output]
            nodes.append(new)
        shape = list(vq.token_shape)
    graph = model.graph
    if actions_output not in {o.name for o in graph.output}:
        raise PolicyError(
            f"vq_policy_head: model has no output {actions_output!r} (outputs: {[o.name for o in graph.output]})"
        )
    outputs = [o for o in graph.output if keep_actions or o.name != actions_output]
    outputs.append(helper.make_tensor_value_info(tokens_output, TensorProto.INT64, shape))
    new_graph = helper.make_graph(
        list(graph.node) + nodes, graph.name, list(graph.input), outputs, initializer=list(graph.initializer)
    )
    merged = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name="robot-stack")
    merged.ir_version = model.ir_version
    onnx.checker.check_model(merged)
    return merged


# ------------------------------------------------------------------------------------------ shipped files

#: The shipped tokenizers: id -> config (a residual VQ and its single-codebook variant).
SHIPPED: dict[str, TokenizerConfig] = {
    "rvq-reach-v1": TokenizerConfig(levels=3, codebook_size=256),
    "vq-reach-v1": TokenizerConfig(levels=1, codebook_size=1024),
}


def build_shipped(out_dir: str | Path = VQ_MODELS_DIR) -> dict[str, Any]:
    """Rebuild the shipped tokenizers (:data:`SHIPPED`) into ``out_dir``; return {id: metrics} (under 2 min)."""
    t0 = time.perf_counter()
    data = make_dataset(next(iter(SHIPPED.values())))
    report: dict[str, Any] = {}
    for tokenizer_id, config in SHIPPED.items():
        tok = train_tokenizer(config, data)
        kind = f"residual VQ, {config.levels} levels" if config.levels > 1 else "single codebook"
        description = (
            f"VQ action tokenizer ({kind} of {config.codebook_size} codes, {config.n_tokens} tokens x "
            f"{config.latent_dim} dims) trained on {len(data.train)} scripted-expert reach chunks; embodiment "
            f"decoder conditioned on {list(tok.robot_types)} and {config.rate_range_hz[0]:g}-"
            f"{config.rate_range_hz[1]:g} Hz. Held-out per-step RMSE {tok.metrics['heldout_rmse_mm']} mm."
        )
        path = export_tokenizer(tok, out_dir, tokenizer_id, description)
        report[tokenizer_id] = {"manifest": str(path), **tok.metrics}
    report["total_s"] = round(time.perf_counter() - t0, 1)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m robot_stack.policy.vq_tokenizer [--out DIR]``: rebuild the shipped tokenizers, print a report."""
    parser = argparse.ArgumentParser(prog="python -m robot_stack.policy.vq_tokenizer", description=__doc__)
    parser.add_argument("--out", default=str(VQ_MODELS_DIR), help="output folder (default: the package's)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    print(json.dumps(build_shipped(args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
