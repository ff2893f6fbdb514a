"""``latent_vq`` chunks: vector-quantised action tokens -> embodiment decoder (ONNX) -> ee_delta_xyz -> IK.

A VQ action tokenizer (trained by :mod:`robot_stack.training.vq_tokenizer` on the project's own scripted-expert
demonstrations) maps an ``ee_delta_xyz`` chunk (horizon, 3) to ``n_tokens`` latent vectors of ``latent_dim``
dims, each quantised by a residual VQ with ``levels`` codebooks (``levels == 1``: a single codebook). A policy
with a ``latent_vq`` head emits the token ids; this decoder turns them back into motion:

1. **Validate** ``ActionChunk.actions``: (n_tokens, levels) integer-valued ids (float32 on the wire, exact for
   ids < 2**24), id of level ``l`` in ``[0, codebook_sizes[l])``.
2. **Embodiment decoder** (ONNX Runtime, ``<tokenizer>.decoder.onnx``): codebook lookup (sum of the levels'
   codewords per token), then a network conditioned on the robot type (one-hot over
   :attr:`VqManifest.robot_types`) and the control rate (Hz between consecutive decoded actions) -> a
   normalised (horizon, 3) chunk.
3. **De-normalise** with the manifest's ``normalization`` stats (``chunk = out * std + mean``, metres), clip to
   the manifest's ``clip`` range (what the decoder saw in training, with a margin).
4. Delegate to :class:`~robot_stack.decoders.ee_delta.EeDeltaXyzDecoder` (pinocchio IK) for the timestamped
   :class:`~robot_stack.types.JointTrajectory`; decoded step ``k`` is meant for ``t_obs + k / control_rate_hz``.

The decoded ``ee_delta_xyz`` is expressed in the base frame of the robot type it was decoded for (a robot type
mounted rotated about z gets its displacements in its own base frame).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot_stack.config import check_keys, read_yaml, relative_path, resolve_path
from robot_stack.decoders.base import Decoder
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.policy.manifest import SHIPPED_MODELS_DIR
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["DEFAULT_VQ_MANIFEST", "VQ_MODELS_DIR", "LatentVQDecoder", "VqManifest"]

log = logging.getLogger("robot_stack.decoders.vq")

#: Where the shipped tokenizers live (package data; rebuilt by ``robot_stack.training.vq_tokenizer``).
VQ_MODELS_DIR = SHIPPED_MODELS_DIR / "vq"
#: The shipped residual-VQ tokenizer used when no manifest is given.
DEFAULT_VQ_MANIFEST = VQ_MODELS_DIR / "rvq-reach-v1.yaml"

_KEYS = (
    "tokenizer_id",
    "action_head",
    "action_space",
    "encoder",
    "decoder",
    "horizon",
    "action_dim",
    "dt_s",
    "n_tokens",
    "latent_dim",
    "levels",
    "codebook_sizes",
    "robot_types",
    "control_rate_hz",
    "control_rate_range_hz",
    "normalization",
    "clip",
)
_KEYS_OPTIONAL = ("metrics", "description")


def _array(value: Any, shape: tuple[int, ...], name: str, where: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {name} must be numbers, got {value!r}: {exc}") from exc
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise ConfigError(f"{where}: {name} must be finite with shape {shape}, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class VqManifest:
    """What the robot side needs to know about one exported VQ action tokenizer (``<id>.yaml``).

    Attributes:
        tokenizer_id: unique name of this tokenizer version.
        encoder_path, decoder_path: absolute paths of ``chunk -> tokens`` and ``tokens -> chunk`` ONNX graphs.
        action_space: what the decoded chunk means (``"ee_delta_xyz"``, metres, base frame of the robot type).
        horizon, action_dim: decoded chunk shape (horizon, action_dim).
        dt_s: seconds between the actions of the chunks the tokens were encoded from (the canonical rate).
        n_tokens, latent_dim: latent (n_tokens, latent_dim); the token ids are (n_tokens, levels) int64.
        levels: residual quantisation levels (1 = single codebook).
        codebook_sizes: (levels,) number of codewords per level; ids of level l lie in [0, codebook_sizes[l]).
        robot_types: names of the embodiments the decoder is conditioned on (one-hot in this order).
        control_rate_hz: the canonical decoding rate (1 / dt_s).
        control_rate_range_hz: (low, high) Hz the decoder was trained on; rates outside are refused.
        norm_mean, norm_std: (horizon, action_dim) float32; ``chunk = decoder_output * std + mean`` (metres).
        clip_low, clip_high: (horizon, action_dim) float32 bounds of the de-normalised chunk (metres).
        metrics: training report (held-out RMSE etc.), informational.
        description: free text.
        source: the YAML file this was loaded from.
    """

    tokenizer_id: str
    encoder_path: Path
    decoder_path: Path
    action_space: str
    horizon: int
    action_dim: int
    dt_s: float
    n_tokens: int
    latent_dim: int
    levels: int
    codebook_sizes: tuple[int, ...]
    robot_types: tuple[str, ...]
    control_rate_hz: float
    control_rate_range_hz: tuple[float, float]
    norm_mean: np.ndarray
    norm_std: np.ndarray
    clip_low: np.ndarray
    clip_high: np.ndarray
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    source: Path | None = None

    def __post_init__(self) -> None:
        where = f"VQ manifest {self.source or self.tokenizer_id}"
        for name in ("horizon", "action_dim", "n_tokens", "latent_dim", "levels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"{where}: {name} must be an int >= 1, got {v!r}")
        sizes = tuple(self.codebook_sizes)
        if len(sizes) != self.levels or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in sizes):
            raise ConfigError(f"{where}: codebook_sizes must be {self.levels} ints >= 1 (one per level), got {sizes}")
        object.__setattr__(self, "codebook_sizes", sizes)
        robots = tuple(str(r) for r in self.robot_types)
        if not robots or len(set(robots)) != len(robots):
            raise ConfigError(f"{where}: robot_types must be a non-empty list of unique names, got {robots}")
        object.__setattr__(self, "robot_types", robots)
        lo, hi = (float(x) for x in self.control_rate_range_hz)
        if not (0 < lo <= self.control_rate_hz <= hi and math.isfinite(hi)):
            raise ConfigError(
                f"{where}: need 0 < control_rate_range_hz[0] <= control_rate_hz <= control_rate_range_hz[1], "
                f"got {self.control_rate_hz} and {(lo, hi)}"
            )
        object.__setattr__(self, "control_rate_range_hz", (lo, hi))
        if not (self.dt_s > 0 and math.isfinite(self.dt_s)):
            raise ConfigError(f"{where}: dt_s must be a positive number of seconds, got {self.dt_s!r}")
        shape = (self.horizon, self.action_dim)
        for name in ("norm_mean", "norm_std", "clip_low", "clip_high"):
            object.__setattr__(self, name, _array(getattr(self, name), shape, name, where))
        if np.any(self.norm_std <= 0) or np.any(self.clip_low > self.clip_high):
            raise ConfigError(f"{where}: normalization std must be > 0 and clip low <= high everywhere")
        object.__setattr__(self, "encoder_path", Path(self.encoder_path))
        object.__setattr__(self, "decoder_path", Path(self.decoder_path))

    @property
    def token_shape(self) -> tuple[int, int]:
        """(n_tokens, levels): shape of one chunk's token ids."""
        return (self.n_tokens, self.levels)

    # ------------------------------------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | Path) -> VqManifest:
        """Load ``<tokenizer>.yaml``; the ONNX paths in it are relative to the YAML's folder."""
        path = Path(path)
        data = read_yaml(
            path,
            "VQ tokenizer manifest",
            missing="rebuild the shipped tokenizers with `python -m robot_stack.training.vq_tokenizer` or pass the "
            "path of your own",
        )
        return cls.from_dict(data, base_dir=path.parent, source=path)

    @classmethod
    def from_dict(cls, data: Any, base_dir: str | Path = ".", source: Path | None = None) -> VqManifest:
        """Build from a parsed YAML mapping (see :meth:`to_dict` for the keys)."""
        where = f"VQ manifest {source or '<dict>'}"
        check_keys(data, f"{where} (top level)", _KEYS, _KEYS_OPTIONAL)
        if data["action_head"] != "latent_vq":
            raise ConfigError(f"{where}: action_head must be 'latent_vq', got {data['action_head']!r}")
        norm, clip = data["normalization"], data["clip"]
        if not isinstance(norm, dict) or set(norm) != {"mean", "std"}:
            raise ConfigError(f"{where}: normalization must be a mapping with exactly mean and std")
        if not isinstance(clip, dict) or set(clip) != {"low", "high"}:
            raise ConfigError(f"{where}: clip must be a mapping with exactly low and high")
        rate_range = data["control_rate_range_hz"]
        if not isinstance(rate_range, list | tuple) or len(rate_range) != 2:
            raise ConfigError(f"{where}: control_rate_range_hz must be [low, high] in Hz, got {rate_range!r}")
        try:
            return cls(
                tokenizer_id=str(data["tokenizer_id"]),
                encoder_path=resolve_path(str(data["encoder"]), base_dir),
                decoder_path=resolve_path(str(data["decoder"]), base_dir),
                action_space=str(data["action_space"]),
                horizon=data["horizon"],
                action_dim=data["action_dim"],
                dt_s=float(data["dt_s"]),
                n_tokens=data["n_tokens"],
                latent_dim=data["latent_dim"],
                levels=data["levels"],
                codebook_sizes=tuple(data["codebook_sizes"]),
                robot_types=tuple(data["robot_types"]),
                control_rate_hz=float(data["control_rate_hz"]),
                control_rate_range_hz=(float(rate_range[0]), float(rate_range[1])),
                norm_mean=norm["mean"],
                norm_std=norm["std"],
                clip_low=clip["low"],
                clip_high=clip["high"],
                metrics=dict(data.get("metrics") or {}),
                description=str(data.get("description", "")),
                source=source,
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: invalid value: {exc}") from exc

    def to_dict(self, relative_to: str | Path | None = None) -> dict[str, Any]:
        """YAML-ready mapping; ONNX paths relative to ``relative_to`` when given."""
        return {
            "tokenizer_id": self.tokenizer_id,
            "action_head": "latent_vq",
            "action_space": self.action_space,
            "encoder": relative_path(self.encoder_path, relative_to),
            "decoder": relative_path(self.decoder_path, relative_to),
            "horizon": self.horizon,
            "action_dim": self.action_dim,
            "dt_s": self.dt_s,
            "n_tokens": self.n_tokens,
            "latent_dim": self.latent_dim,
            "levels": self.levels,
            "codebook_sizes": list(self.codebook_sizes),
            "robot_types": list(self.robot_types),
            "control_rate_hz": self.control_rate_hz,
            "control_rate_range_hz": list(self.control_rate_range_hz),
            "normalization": {"mean": self.norm_mean.tolist(), "std": self.norm_std.tolist()},
            "clip": {"low": self.clip_low.tolist(), "high": self.clip_high.tolist()},
            "metrics": dict(self.metrics),
            "description": self.description,
        }

    def save(self, path: str | Path) -> Path:
        """Write as YAML (ONNX paths relative to the YAML's folder); return the path."""
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(relative_to=path.parent), sort_keys=False))
        return path

    # ------------------------------------------------------------------------------------- validation
    def check_tokens(self, tokens: Any) -> np.ndarray:
        """Return ``tokens`` as a (n_tokens, levels) int64 array, or raise.

        Accepts integer arrays and float arrays holding integers (``ActionChunk.actions`` is float32).

        Raises:
            ShapeError: wrong shape, non-finite or non-integer values.
            DecodeError: an id outside ``[0, codebook_sizes[level])``.
        """
        arr = np.asarray(tokens)
        if arr.shape != self.token_shape:
            raise ShapeError(
                f"latent_vq tokens: expected shape (n_tokens, levels) = {self.token_shape} for tokenizer "
                f"{self.tokenizer_id}, got {arr.shape}; check the policy's action head matches this tokenizer"
            )
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ShapeError("latent_vq tokens: contain NaN/Inf; token ids must be finite integers")
            if np.any(arr != np.round(arr)):
                raise ShapeError(f"latent_vq tokens: ids must be integers, got {arr.tolist()}")
        elif arr.dtype.kind not in "iu":
            raise ShapeError(f"latent_vq tokens: expected an integer (or integer-valued float) array, got {arr.dtype}")
        ids = arr.astype(np.int64)
        sizes = np.asarray(self.codebook_sizes, dtype=np.int64)
        bad = (ids < 0) | (ids >= sizes[None, :])
        if np.any(bad):
            t, lev = (int(i) for i in np.argwhere(bad)[0])
            raise DecodeError(
                f"latent_vq token {t} level {lev}: id {ids[t, lev]} outside [0, {sizes[lev]}) of tokenizer "
                f"{self.tokenizer_id}; the policy and the decoder use different tokenizers or the model is broken"
            )
        return ids

    def robot_onehot(self, robot_type: str) -> np.ndarray:
        """(len(robot_types),) float32 one-hot of ``robot_type``; ConfigError if unknown."""
        if robot_type not in self.robot_types:
            raise ConfigError(
                f"robot type {robot_type!r} unknown to VQ tokenizer {self.tokenizer_id}; "
                f"it was trained for {list(self.robot_types)}"
            )
        onehot = np.zeros(len(self.robot_types), dtype=np.float32)
        onehot[self.robot_types.index(robot_type)] = 1.0
        return onehot

    def check_rate(self, rate_hz: float) -> float:
        """Return ``rate_hz`` if inside :attr:`control_rate_range_hz`, else raise ConfigError."""
        lo, hi = self.control_rate_range_hz
        rate = float(rate_hz)
        # a 1e-6 relative slack absorbs the rounding of 1 / dt_s
        if not (math.isfinite(rate) and lo * (1 - 1e-6) <= rate <= hi * (1 + 1e-6)):
            raise ConfigError(
                f"control rate {rate_hz!r} Hz outside the range {lo:g}..{hi:g} Hz the embodiment decoder of "
                f"{self.tokenizer_id} was trained on; pick a rate in that range"
            )
        return min(max(rate, lo), hi)


class LatentVQDecoder(Decoder):
    """Decode VQ action-token chunks (``action_space == "latent_vq"``) into joint trajectories.

    Args:
        manifest: a :class:`VqManifest`, a path to its YAML, or None for the shipped residual-VQ tokenizer
            (:data:`DEFAULT_VQ_MANIFEST`).
        robot_type: embodiment to decode for (one of ``manifest.robot_types``).
        control_rate_hz: Hz between consecutive decoded actions (the decoder's conditioning); None = take it
            from each chunk (``1 / chunk.dt_s``). Must lie in ``manifest.control_rate_range_hz``.
        ik, orientation, latency_offset_s, max_iters, reach: passed to the
            :class:`~robot_stack.decoders.ee_delta.EeDeltaXyzDecoder` that turns the decoded chunk into joints.
        intra_op_threads: ONNX Runtime threads for the embodiment decoder (1: it is tiny, leave the cores to the
            control loop).

    Input chunk: ``actions`` (n_tokens, levels) integer-valued float32 token ids; ``gripper`` (n_tokens,) or
    None (interpolated linearly over the decoded horizon). Output: the IK decoder's :class:`JointTrajectory`.
    """

    action_space = "latent_vq"

    def __init__(
        self,
        manifest: VqManifest | str | Path | None = None,
        robot_type: str = "panda",
        control_rate_hz: float | None = None,
        ik: Any = None,
        orientation: str | np.ndarray = "keep",
        latency_offset_s: float = 0.0,
        max_iters: int = 50,
        intra_op_threads: int = 1,
        reach: Any = None,
    ) -> None:
        import onnxruntime as ort

        from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder

        if manifest is None:
            manifest = DEFAULT_VQ_MANIFEST
        self.manifest = manifest if isinstance(manifest, VqManifest) else VqManifest.load(manifest)
        m = self.manifest
        if m.action_space != "ee_delta_xyz" or m.action_dim != 3:
            raise ConfigError(
                f"VQ tokenizer {m.tokenizer_id} decodes to {m.action_space!r} ({m.action_dim} dims); this decoder "
                "handles ee_delta_xyz (3 dims)"
            )
        self.robot_type = robot_type
        self._robot = m.robot_onehot(robot_type)
        self.control_rate_hz = None if control_rate_hz is None else m.check_rate(control_rate_hz)
        if not m.decoder_path.is_file():
            raise ConfigError(f"embodiment decoder {m.decoder_path} (from {m.source}) not found")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(
                str(m.decoder_path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ConfigError(f"cannot load embodiment decoder {m.decoder_path}: {exc}") from exc
        self.ee_decoder = EeDeltaXyzDecoder(
            ik=ik, orientation=orientation, latency_offset_s=latency_offset_s, max_iters=max_iters, reach=reach
        )

    def decode_tokens(self, tokens: Any, control_rate_hz: float | None = None) -> np.ndarray:
        """Token ids (n_tokens, levels) -> (horizon, 3) float32 ``ee_delta_xyz`` chunk, metres.

        ``control_rate_hz`` overrides the decoder's rate (None: the constructor's, else the canonical rate).
        Raises ShapeError / DecodeError for bad ids (see :meth:`VqManifest.check_tokens`).
        """
        m = self.manifest
        ids = m.check_tokens(tokens)
        rate = control_rate_hz if control_rate_hz is not None else (self.control_rate_hz or m.control_rate_hz)
        rate = m.check_rate(rate)
        try:
            (out,) = self._session.run(
                ["chunk_norm"],
                {"tokens": ids, "robot": self._robot, "rate_hz": np.array([rate], dtype=np.float32)},
            )
        except Exception as exc:
            raise DecodeError(f"embodiment decoder {m.tokenizer_id} failed: {exc}") from exc
        chunk = np.clip(out * m.norm_std + m.norm_mean, m.clip_low, m.clip_high).astype(np.float32)
        if not np.all(np.isfinite(chunk)):
            raise DecodeError(f"embodiment decoder {m.tokenizer_id} produced non-finite actions")
        return chunk

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        self._check_space(chunk)
        if self.control_rate_hz is not None:
            rate = self.control_rate_hz
        else:
            try:
                rate = self.manifest.check_rate(1.0 / chunk.dt_s)
            except ConfigError as exc:
                raise DecodeError(f"latent_vq chunk dt_s {chunk.dt_s} s: {exc}") from exc
        actions = self.decode_tokens(chunk.actions, rate)
        gripper = None
        if chunk.gripper is not None:
            src = np.linspace(0.0, 1.0, len(chunk.gripper)) if len(chunk.gripper) > 1 else np.zeros(1)
            gripper = np.interp(np.linspace(0.0, 1.0, len(actions)), src, chunk.gripper).astype(np.float32)
        ee_chunk = ActionChunk(chunk.t_obs_ns, 1.0 / rate, actions, "ee_delta_xyz", gripper, chunk.model_id)
        return self.ee_decoder.decode(ee_chunk, state)
