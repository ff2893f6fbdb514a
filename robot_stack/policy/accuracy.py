"""The accuracy gate: a candidate backend (TensorRT engine, ONNX Runtime GPU provider, torch) serves only if its
outputs match ONNX Runtime on the CPU, per output and per channel.

* **Per channel:** an output's last axis is its channels (``actions (B, 8, 3)``: x, y, z; a 4th gripper channel
  is checked on its own scale). Channel ``c`` passes if ``max|cand - ref| <= atol + rtol * max|ref[..., c]|``,
  so a small channel is not hidden behind a large one. Integer and bool outputs must match exactly.
* **Tolerances** (:data:`TOLERANCES`) per precision; ``tf32`` is FP32 with TensorFloat-32 math allowed (10-bit
  mantissa products), which needs the looser tolerance.
* **Inputs** (:func:`gate_inputs`): seeded random inputs at the shape profile's ``opt`` and ``max`` shapes, and for
  inputs the manifest allows to be non-finite (XYZ maps with invalid depth) the same with NaN holes; plus recorded
  frames when given. INT8 is judged on recorded frames only (random noise lies outside the calibrated ranges).
* **Memory:** :func:`reference_outputs` runs a CPU ONNX Runtime session and frees it before the candidate runs,
  so a small GPU board never holds the reference and the candidate at once.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.calibration.payload import CALIB_SIZE
from robot_stack.errors import PolicyError
from robot_stack.policy.manifest import PolicyManifest, TensorSpec

__all__ = [
    "TOLERANCES",
    "AccuracyReport",
    "ChannelFigure",
    "check_accuracy",
    "compare_outputs",
    "gate_candidate",
    "gate_inputs",
    "reference_outputs",
    "sample_inputs",
    "tolerance",
]

log = logging.getLogger("robot_stack.policy.accuracy")

#: tolerance name -> (rtol, atol): a channel passes if ``max|cand - ref| <= atol + rtol * max|ref channel|``.
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-3, 1e-4),
    "tf32": (1e-2, 1e-3),
    "fp16": (2e-2, 1e-3),
    "bf16": (5e-2, 2e-3),
    "int8": (1e-1, 1e-2),
}
#: Fraction of the positions of a non-finite-allowed input that the gate sets to NaN.
NAN_FRACTION = 0.1


def tolerance(precision: str, tf32: bool = False) -> str:
    """The :data:`TOLERANCES` key for a precision (``fp32`` with TF32 math allowed -> ``tf32``)."""
    key = "tf32" if precision == "fp32" and tf32 else precision
    if key not in TOLERANCES:
        raise PolicyError(f"no accuracy tolerance for precision {precision!r}; known: {sorted(TOLERANCES)}")
    return key


@dataclass(frozen=True)
class ChannelFigure:
    """One channel of one output: worst error over the samples and the tolerance it was held to.

    Attributes:
        output: output name. channel: index along the output's last axis (0 for outputs without channels).
        max_abs_err: worst ``max|cand - ref|`` over the samples (inf when the candidate produced NaN/Inf).
        allowed: ``atol + rtol * max|ref|`` of that channel (worst sample). ref_max_abs: ``max|ref|`` of it.
    """

    output: str
    channel: int
    max_abs_err: float
    allowed: float
    ref_max_abs: float

    @property
    def ok(self) -> bool:
        return self.max_abs_err <= self.allowed


@dataclass(frozen=True)
class AccuracyReport:
    """Outcome of comparing a candidate backend with ONNX Runtime (CPU).

    Attributes:
        ok: every channel of every output of every sample within tolerance.
        max_abs_err: output name -> worst channel error.
        allowed: output name -> the tolerance of the channel nearest to failing.
        samples: input sets compared. reason: empty when ok, else which channels failed and by how much.
        tolerance: the :data:`TOLERANCES` key used. channels: output name -> per-channel figures.
        nonfinite_samples: how many input sets held NaN in non-finite-allowed inputs.
    """

    ok: bool
    max_abs_err: Mapping[str, float]
    allowed: Mapping[str, float]
    samples: int
    reason: str = ""
    tolerance: str = ""
    channels: Mapping[str, tuple[ChannelFigure, ...]] = field(default_factory=dict)
    nonfinite_samples: int = 0

    def table(self, max_channels: int = 16) -> list[str]:
        """Printable gate figures: one line per output channel (the worst ``max_channels`` of wide outputs)."""
        tol = TOLERANCES.get(self.tolerance)
        head = f"accuracy gate ({self.tolerance or '?'}"
        head += f": rtol {tol[0]:g}, atol {tol[1]:g}" if tol else ""
        head += (
            f"; {self.samples} input sets, {self.nonfinite_samples} with NaN inputs): {'PASS' if self.ok else 'FAIL'}"
        )
        lines = [head]
        for name, figs in self.channels.items():
            shown = sorted(figs, key=lambda f: -_ratio(f))[:max_channels] if len(figs) > max_channels else figs
            for f in shown:
                lines.append(
                    f"  {name}[{f.channel}]: max err {f.max_abs_err:.3g} {'<=' if f.ok else '>'} allowed "
                    f"{f.allowed:.3g} (max |ref| {f.ref_max_abs:.3g})"
                )
            if len(shown) < len(figs):
                lines.append(f"  {name}: {len(figs) - len(shown)} more channels, all nearer to passing")
        if self.reason:
            lines.append(f"  reason: {self.reason}")
        return lines


def _ratio(f: ChannelFigure) -> float:
    return f.max_abs_err / f.allowed if f.allowed > 0 else (0.0 if f.max_abs_err == 0 else float("inf"))


def compare_outputs(
    reference: Sequence[Mapping[str, np.ndarray]],
    candidate: Sequence[Mapping[str, np.ndarray]],
    rtol: float,
    atol: float,
    tolerance_name: str = "",
    nonfinite_samples: int = 0,
) -> AccuracyReport:
    """Compare per-sample output maps per output and per channel (last axis); names and shapes must match
    exactly; integer/bool outputs must be equal; positions where both are NaN count as equal."""
    if len(reference) != len(candidate) or not reference:
        raise PolicyError(f"accuracy check needs equally many samples, got {len(reference)} and {len(candidate)}")
    worst: dict[tuple[str, int], ChannelFigure] = {}
    reasons: list[str] = []
    for k, (ref, cand) in enumerate(zip(reference, candidate, strict=True)):
        if set(ref) != set(cand):
            reasons.append(f"sample {k}: outputs {sorted(cand)} but expected {sorted(ref)}")
            continue
        for name, r in ref.items():
            r_arr, c_arr = np.asarray(r), np.asarray(cand[name])
            if r_arr.shape != c_arr.shape:
                reasons.append(f"sample {k}: output {name!r} shape {c_arr.shape}, expected {r_arr.shape}")
                continue
            exact = r_arr.dtype.kind in "biu"
            for fig in _channel_figures(name, r_arr, c_arr, 0.0 if exact else rtol, 0.0 if exact else atol):
                key = (name, fig.channel)
                if key not in worst or _ratio(fig) > _ratio(worst[key]):
                    worst[key] = fig
                if not fig.ok:
                    reasons.append(
                        f"sample {k}: output {name!r} channel {fig.channel} max abs error {fig.max_abs_err:.3g} > "
                        f"allowed {fig.allowed:.3g}"
                    )
    channels: dict[str, tuple[ChannelFigure, ...]] = {}
    for (name, _), fig in sorted(worst.items()):
        channels[name] = (*channels.get(name, ()), fig)
    errs = {n: max(f.max_abs_err for f in figs) for n, figs in channels.items()}
    allowed = {n: max(figs, key=_ratio).allowed for n, figs in channels.items()}
    return AccuracyReport(
        not reasons, errs, allowed, len(reference), "; ".join(reasons[:3]), tolerance_name, channels, nonfinite_samples
    )


def _channel_figures(name: str, r: np.ndarray, c: np.ndarray, rtol: float, atol: float) -> list[ChannelFigure]:
    r64, c64 = r.astype(np.float64), c.astype(np.float64)
    if r64.ndim >= 2:  # (batch, ..., channels)
        r2, c2 = r64.reshape(-1, r64.shape[-1]), c64.reshape(-1, c64.shape[-1])
    else:
        r2, c2 = r64.reshape(-1, 1), c64.reshape(-1, 1)
    if r2.shape[0] == 0:
        return [ChannelFigure(name, i, 0.0, atol, 0.0) for i in range(r2.shape[1])]
    both_nan = np.isnan(r2) & np.isnan(c2)
    diff = np.where(both_nan, 0.0, np.abs(c2 - r2))
    diff = np.where(np.isnan(diff), np.inf, diff)
    err = diff.max(axis=0)
    ref_max = np.where(np.isfinite(r2), np.abs(r2), 0.0).max(axis=0)
    return [
        ChannelFigure(name, i, float(err[i]), float(atol + rtol * ref_max[i]), float(ref_max[i]))
        for i in range(r2.shape[1])
    ]


# ------------------------------------------------------------------------------------------------ inputs


def sample_inputs(
    manifest: PolicyManifest,
    profiles: Sequence[Any],
    seed: int = 0,
    shapes: Sequence[str] = ("opt", "max"),
    *,
    nonfinite: bool = False,
) -> list[dict[str, np.ndarray]]:
    """Seeded random inputs at the profiles' ``opt``/``max`` shapes, in the inputs' raw (un-normalised) units:
    floats ~ mean + std * N(0, 1) of their normalisation stats (N(0, 1) without), uint8 over 0..255, other ints over
    0..9, bools fair coin flips; a depth stream's ``<camera>/calib`` and ``<camera>/depth`` are drawn as a camera
    could send them (:func:`_random_calibrations`; depth units 0..4999) — N(0, 1) intrinsics would put points
    kilometres away, a frame no engine is asked to serve.
    With ``nonfinite``, float inputs that allow NaN get :data:`NAN_FRACTION` NaN holes
    (whole points when the last axis has <= 4 entries, as in an XYZ map)."""
    rng = np.random.default_rng(seed)
    by_name = {p.name: p for p in profiles}
    out = []
    for which in shapes:
        arrays: dict[str, np.ndarray] = {}
        for spec in manifest.inputs:
            shape = tuple(getattr(by_name[spec.name], which))
            arrays[spec.name] = _random_tensor(rng, spec, shape, manifest)
            if nonfinite and spec.allow_nonfinite and spec.dtype.startswith("float"):
                arrays[spec.name] = _with_nan_holes(rng, arrays[spec.name])
        out.append(arrays)
    return out


def _random_calibrations(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Packed depth calibrations (:mod:`robot_stack.calibration.payload`) a camera could have: focal lengths 300-900
    px, principal point 100-500 px, 0.1-1 mm per depth unit, a proper rotation, translation ~N(0, 0.5 m)."""
    n = int(np.prod(shape[:-1]))
    out = np.empty((n, CALIB_SIZE), np.float32)
    for row in out:
        q, r = np.linalg.qr(rng.standard_normal((3, 3)))
        rot = q * np.sign(np.diag(r))
        rot *= np.linalg.det(rot)
        intrinsics = [*rng.uniform(300, 900, 2), *rng.uniform(100, 500, 2), rng.uniform(1e-4, 1e-3)]
        row[:] = [*intrinsics, *rot.reshape(-1), *rng.normal(0.0, 0.5, 3)]
    return out.reshape(shape)


def _random_tensor(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...], m: PolicyManifest) -> np.ndarray:
    if spec.name.endswith("/calib") and shape[-1] == CALIB_SIZE and spec.dtype.startswith("float"):
        return _random_calibrations(rng, shape).astype(spec.dtype)
    if spec.name.endswith("/depth") and spec.dtype in ("uint16", "int32"):
        return rng.integers(0, 5000, shape).astype(spec.dtype)  # 0 = no return; up to 0.5-5 m with those scales
    if spec.dtype.startswith("float"):
        x = rng.standard_normal(shape)
        stats = m.normalization.get(spec.name)
        if stats is not None:
            x = x * stats.std + stats.mean
        return x.astype(spec.dtype)
    if spec.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    high = 256 if spec.dtype == "uint8" else 10
    return rng.integers(0, high, shape).astype(spec.dtype)


def _with_nan_holes(rng: np.random.Generator, x: np.ndarray) -> np.ndarray:
    x = x.copy()
    if x.ndim >= 2 and x.shape[-1] <= 4:
        mask = rng.random(x.shape[:-1]) < NAN_FRACTION
        x[mask] = np.nan
    else:
        x[rng.random(x.shape) < NAN_FRACTION] = np.nan
    return x


def gate_inputs(
    manifest: PolicyManifest,
    profiles: Sequence[Any],
    precision: str,
    recorded: Sequence[Mapping[str, np.ndarray]] | None = None,
) -> list[dict[str, np.ndarray]]:
    """The input sets a candidate is judged on (see the module docstring).

    Raises:
        PolicyError: ``int8`` without recorded frames.
    """
    frames = _recorded_batches(manifest, profiles, recorded or ())
    if precision == "int8":
        if not frames:
            raise PolicyError(
                "the INT8 accuracy gate needs recorded frames (random inputs lie outside the calibrated ranges); "
                "pass --calibration-data DATASET"
            )
        return frames
    out = sample_inputs(manifest, profiles)
    if any(s.allow_nonfinite and s.dtype.startswith("float") for s in manifest.inputs):
        out += sample_inputs(manifest, profiles, seed=1, nonfinite=True)
    return out + frames


def _recorded_batches(
    manifest: PolicyManifest, profiles: Sequence[Any], frames: Sequence[Mapping[str, np.ndarray]]
) -> list[dict[str, np.ndarray]]:
    """Recorded single-observation frames as gate input sets: stacked to the profile's opt and max batch when the
    model is batch-dynamic (frames cycled), else up to 4 frames as they are."""
    if not frames:
        return []
    dynamic = all(s.shape and s.shape[0] == -1 for s in manifest.inputs)
    if not dynamic:
        return [dict(f) for f in frames[:4]]
    by_name = {p.name: p for p in profiles}
    first = by_name[manifest.inputs[0].name]
    out = []
    for n in sorted({int(first.opt[0]), int(first.max[0])}):
        idx = [i % len(frames) for i in range(n)]
        out.append({s.name: np.concatenate([np.asarray(frames[i][s.name]) for i in idx], 0) for s in manifest.inputs})
    return out


# -------------------------------------------------------------------------------------------------- gate


def reference_outputs(
    manifest: PolicyManifest, inputs: Sequence[Mapping[str, np.ndarray]], threads: int | None = None
) -> list[dict[str, np.ndarray]]:
    """ONNX Runtime (CPU) outputs on ``inputs``; the session is released before returning (memory order)."""
    from robot_stack.policy.runtime import OnnxPolicy

    ref = OnnxPolicy(manifest, "cpu", intra_op_threads=threads)
    try:
        return [ref.run(x) for x in inputs]
    finally:
        ref.close()
        del ref
        gc.collect()


def gate_candidate(
    candidate: Any,
    inputs: Sequence[Mapping[str, np.ndarray]],
    reference: Sequence[Mapping[str, np.ndarray]],
    precision: str,
    tf32: bool = False,
) -> AccuracyReport:
    """Run ``candidate`` (anything with ``run(arrays) -> outputs``) on ``inputs`` and compare with ``reference``
    outputs. A candidate that raises — anything, not only :class:`PolicyError` — fails, its error the reason."""
    key = tolerance(precision, tf32)
    rtol, atol = TOLERANCES[key]
    nan_sets = sum(any(np.asarray(a).dtype.kind == "f" and np.isnan(a).any() for a in x.values()) for x in inputs)
    try:
        cand = [candidate.run(x) for x in inputs]
    except Exception as exc:
        return AccuracyReport(
            False, {}, {}, len(inputs), f"candidate failed to run: {type(exc).__name__}: {exc}", key, {}, nan_sets
        )
    return compare_outputs(reference, cand, rtol, atol, key, nan_sets)


def check_accuracy(
    reference: Any, candidate: Any, inputs: Sequence[Mapping[str, np.ndarray]], precision: str, tf32: bool = False
) -> AccuracyReport:
    """Run both backends (anything with ``run(arrays) -> outputs``) on ``inputs`` and compare (:data:`TOLERANCES`).
    A candidate that raises fails the check (its error is the reason)."""
    return gate_candidate(candidate, inputs, [reference.run(x) for x in inputs], precision, tf32)
