"""``binned`` chunks: integer bins per action dimension (RT-2 / OpenVLA style) -> continuous chunk -> joints.

Each action dimension ``j`` is split into ``n_bins`` uniform bins over ``[low[j], high[j]]``; a policy emits the
bin index per step and dimension, and the decoder maps it back to the bin centre
``low + (bin + 0.5) * (high - low) / n_bins`` (worst-case error half a bin width). The continuous chunk is then
decoded by the decoder registered for :attr:`BinSpec.action_space`: ``ee_delta_xyz`` (TCP displacement, IK),
``joint_position`` (absolute, rad) or ``joint_delta`` (displacement from the observed joints, rad).

The bin layout is a small YAML next to the model (``BinSpec.load``)::

    action_space: ee_delta_xyz      # the continuous space the bins encode
    n_bins: 256
    low:  [-0.2, -0.2, -0.2]        # per dimension, units of that space
    high: [0.2, 0.2, 0.2]

:func:`robot_stack.training.demo_variants.binned_policy_head` appends the tokenisation to a policy graph that
outputs a continuous chunk, so the served model emits bins.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot_stack.config import read_yaml
from robot_stack.decoders.base import Decoder
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.decoders.joint import JointPositionDecoder
from robot_stack.decoders.joint_delta import JointDeltaDecoder
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["BinSpec", "BinnedDecoder"]

#: Action spaces that are token heads themselves and therefore cannot be the target of binning.
_TOKEN_SPACES = ("binned", "latent_vq")
#: The continuous action spaces bins can encode, and their decoders.
_CONTINUOUS: dict[str, type[Decoder]] = {
    cls.action_space: cls for cls in (EeDeltaXyzDecoder, JointPositionDecoder, JointDeltaDecoder)
}


@dataclass(frozen=True)
class BinSpec:
    """Uniform per-dimension binning of a continuous action space.

    Attributes:
        low, high: (dim,) float64 range per action dimension (units of ``action_space``), ``low < high``.
        n_bins: bins per dimension (>= 2); bin ids lie in ``[0, n_bins)``.
        action_space: the continuous action space the bins encode (e.g. ``"ee_delta_xyz"``).
    """

    low: np.ndarray
    high: np.ndarray
    n_bins: int
    action_space: str

    def __post_init__(self) -> None:
        low = np.array(self.low, dtype=np.float64, copy=True).reshape(-1)
        high = np.array(self.high, dtype=np.float64, copy=True).reshape(-1)
        if low.shape != high.shape or low.size == 0 or not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))):
            raise ConfigError(f"BinSpec: low/high must be finite lists of equal length, got {low} and {high}")
        if np.any(low >= high):
            raise ConfigError(f"BinSpec: need low < high in every dimension, got low={low}, high={high}")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int | np.integer) or self.n_bins < 2:
            raise ConfigError(f"BinSpec: n_bins must be an int >= 2, got {self.n_bins!r}")
        if not isinstance(self.action_space, str) or not self.action_space or self.action_space in _TOKEN_SPACES:
            raise ConfigError(
                f"BinSpec: action_space must name a continuous space such as 'ee_delta_xyz', 'joint_position' or "
                f"'joint_delta', got {self.action_space!r}"
            )
        low.setflags(write=False)
        high.setflags(write=False)
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "n_bins", int(self.n_bins))

    @property
    def dim(self) -> int:
        return int(self.low.size)

    @property
    def width(self) -> np.ndarray:
        """(dim,) bin width per dimension."""
        return (self.high - self.low) / self.n_bins

    # --------------------------------------------------------------------------------------- codec
    def tokenize(self, values: Any) -> np.ndarray:
        """(..., dim) continuous values -> (..., dim) int64 bins; values outside [low, high] saturate.

        Raises ShapeError for a wrong last dimension or non-finite values.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.ndim < 1 or v.shape[-1] != self.dim:
            raise ShapeError(f"BinSpec.tokenize: expected (..., {self.dim}) values, got {v.shape}")
        if not np.all(np.isfinite(v)):
            raise ShapeError("BinSpec.tokenize: values contain NaN/Inf")
        bins = np.floor((v - self.low) / self.width)
        return np.clip(bins, 0, self.n_bins - 1).astype(np.int64)

    def check_bins(self, bins: Any) -> np.ndarray:
        """Return ``bins`` as a (horizon, dim) int64 array, or raise.

        Raises:
            ShapeError: wrong shape, non-finite or non-integer values (float32 holding integers is accepted).
            DecodeError: a bin outside ``[0, n_bins)``.
        """
        arr = np.asarray(bins)
        if arr.ndim != 2 or arr.shape[1] != self.dim or arr.shape[0] < 1:
            raise ShapeError(f"binned chunk: expected (horizon, {self.dim}) bin ids, got {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)):
                raise ShapeError("binned chunk: contains NaN/Inf; bin ids must be finite integers")
            if np.any(arr != np.round(arr)):
                raise ShapeError("binned chunk: bin ids must be integers")
        elif arr.dtype.kind not in "iu":
            raise ShapeError(f"binned chunk: expected integer bin ids, got dtype {arr.dtype}")
        ids = arr.astype(np.int64)
        bad = (ids < 0) | (ids >= self.n_bins)
        if np.any(bad):
            k, j = (int(i) for i in np.argwhere(bad)[0])
            raise DecodeError(
                f"binned chunk: step {k} dim {j} bin {ids[k, j]} outside [0, {self.n_bins}); the policy's bin "
                "layout does not match this decoder's BinSpec"
            )
        return ids

    def detokenize(self, bins: Any) -> np.ndarray:
        """(horizon, dim) bin ids -> (horizon, dim) float64 bin centres (validated by :meth:`check_bins`)."""
        return self.low + (self.check_bins(bins) + 0.5) * self.width

    # --------------------------------------------------------------------------------------- files
    @classmethod
    def from_dict(cls, data: Any, where: str = "<dict>") -> BinSpec:
        if not isinstance(data, dict) or set(data) != {"action_space", "n_bins", "low", "high"}:
            raise ConfigError(
                f"bin spec {where}: expected a mapping with exactly action_space, n_bins, low, high; got {data!r}"
            )
        try:
            return cls(data["low"], data["high"], data["n_bins"], data["action_space"])
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bin spec {where}: invalid value: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        return {
            "action_space": self.action_space,
            "n_bins": self.n_bins,
            "low": self.low.tolist(),
            "high": self.high.tolist(),
        }

    @classmethod
    def load(cls, path: str | Path) -> BinSpec:
        path = Path(path)
        data = read_yaml(path, "bin spec", missing="write one next to the model (see robot_stack.decoders.binned)")
        return cls.from_dict(data, str(path))

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


class BinnedDecoder(Decoder):
    """Decode ``binned`` chunks: de-tokenise to bin centres, then the continuous decoder of the spec's space.

    Args:
        spec: the bin layout (a :class:`BinSpec`, a mapping, or the path of its YAML).
        **decoder_kwargs: passed to the continuous decoder of ``spec.action_space`` (e.g. ``ik=``, ``orientation=``,
            ``limits=``, ``latency_offset_s=``).

    Input chunk: ``actions`` (horizon, dim) integer-valued float32 bin ids, ``gripper`` passed through.
    """

    action_space = "binned"

    def __init__(self, spec: BinSpec | dict | str | Path, **decoder_kwargs: Any) -> None:
        if isinstance(spec, dict):
            spec = BinSpec.from_dict(spec)
        elif not isinstance(spec, BinSpec):
            spec = BinSpec.load(spec)
        self.spec = spec
        if spec.action_space not in _CONTINUOUS:
            raise ConfigError(
                f"BinnedDecoder: bins of action space {spec.action_space!r} cannot be decoded; expected one of "
                f"{sorted(_CONTINUOUS)}"
            )
        self.continuous = _CONTINUOUS[spec.action_space](**decoder_kwargs)

    def detokenize(self, chunk: ActionChunk) -> ActionChunk:
        """The continuous chunk (``spec.action_space``) a binned chunk stands for."""
        self._check_space(chunk)
        values = self.spec.detokenize(chunk.actions)
        return ActionChunk(chunk.t_obs_ns, chunk.dt_s, values, self.spec.action_space, chunk.gripper, chunk.model_id)

    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        return self.continuous.decode(self.detokenize(chunk), state)
