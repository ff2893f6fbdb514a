"""``robot-stack compile``: build (or load) a manifest's TensorRT engine, gate it against ONNX Runtime, time it.

A VLA manifest (two graphs) gets an engine per graph, each gated on its own, and its latency is timed per chunk
(:func:`compile_vla`). INT8 is calibrated on recorded episodes (``--calibration-data DATASET``: the project's
LeRobot-layout datasets, :mod:`robot_stack.policy.calibration_data`); a quarter of the sampled frames are held out
and the INT8 gate is judged on them. The gate's per-output, per-channel figures are printed (and in ``--json``).

:func:`run_compile` is the handler of the ``compile`` parser (:mod:`robot_stack.policy.cli`).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.console import print_summary, report_progress
from robot_stack.errors import ConfigError
from robot_stack.metrics import time_calls
from robot_stack.policy.accuracy import sample_inputs
from robot_stack.policy.backends import load_backend
from robot_stack.policy.manifest import PolicyManifest

__all__ = ["CompileReport", "compile_manifest", "compile_model", "compile_vla", "run_compile"]

log = logging.getLogger("robot_stack.policy.compiler")


@dataclass(frozen=True)
class CompileReport:
    """Result of ``robot-stack compile``: what was built, whether it passed, and latency vs ONNX Runtime.

    ``trt_p50_ms``/``ort_p50_ms`` are per-call latencies at the profile's opt shapes (ORT on its best provider,
    measured after the engine was released). ``gate``: the accuracy gate's printable figures (per output and
    channel). ``cache_error``: why the engine could not be cached ("" when it was). ``calibration``: where the INT8
    calibration frames came from.
    """

    model_id: str
    precision: str
    ok: bool
    backend: str
    reason: str = ""
    engine_path: str = ""
    cache_key: str = ""
    cache_hit: bool = False
    max_abs_err: Mapping[str, float] = field(default_factory=dict)
    trt_p50_ms: float = 0.0
    ort_p50_ms: float = 0.0
    ort_provider: str = ""
    gate: Sequence[str] = ()
    cache_error: str = ""
    calibration: str = ""


def compile_model(
    manifest_path: str | Path,
    precision: str = "fp32",
    *,
    max_batch: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    timing_runs: int = 50,
    calibration_data: str | Path | None = None,
    calibration_frames: int = 32,
    tf32: bool = False,
    workspace_mb: int = 1024,
) -> CompileReport:
    """Build (or load from cache) and gate the engine of a manifest's model (and of its backbone, first, if
    any — the report is the main model's); time it against ONNX Runtime.

    Args:
        calibration_data: a recorded dataset (``robot-stack record``); its frames calibrate INT8 and are gate
            inputs for every precision.
        calibration_frames: frames sampled from it (evenly over all episodes).
    """
    manifest = PolicyManifest.load(manifest_path)
    opts: dict[str, Any] = {
        "max_batch": max_batch,
        "cache_dir": cache_dir,
        "rebuild": rebuild,
        "tf32": tf32,
        "workspace_mb": workspace_mb,
    }
    if manifest.vla is not None:
        if calibration_data is not None:
            raise ConfigError(
                f"{manifest.model_id} is a VLA: INT8 calibration from recorded datasets is not supported for its "
                "graphs (depth + calibration + instruction inputs); build --fp16"
            )
        return compile_vla(manifest, precision, timing_runs=timing_runs, **opts)
    frames: list[dict[str, np.ndarray]] | None = None
    source = ""
    if calibration_data is not None:
        from robot_stack.policy.calibration_data import recorded_frames

        recorded = recorded_frames(manifest, calibration_data, calibration_frames)
        frames = [dict(f) for f in recorded.frames]
        source = f"{len(frames)} frames from {recorded.episodes} episodes of {recorded.source}"
    if manifest.backbone is not None:
        bb = manifest.backbone_manifest()
        bb_frames = [{t.name: f[t.name] for t in bb.inputs} for f in frames] if frames else None
        sub = compile_manifest(bb, precision, frames=bb_frames, timing_runs=0, **opts)
        if not sub.ok:
            return CompileReport(manifest.model_id, precision, False, "ort", f"backbone: {sub.reason}", gate=sub.gate)
        if frames:
            frames = _with_backbone_features(bb, frames)
    report = compile_manifest(manifest, precision, frames=frames, timing_runs=timing_runs, **opts)
    return CompileReport(**{**asdict(report), "calibration": source})


def _with_backbone_features(bb: PolicyManifest, frames: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    """The main model's inputs of each recorded frame: the backbone's outputs (ONNX Runtime, CPU) added."""
    from robot_stack.policy.runtime import OnnxPolicy

    ref = OnnxPolicy(bb, "cpu")
    try:
        return [{**f, **ref.run({t.name: f[t.name] for t in bb.inputs})} for f in frames]
    finally:
        ref.close()


def compile_manifest(
    manifest: PolicyManifest,
    precision: str,
    *,
    frames: Sequence[Mapping[str, np.ndarray]] | None = None,
    max_batch: int | None = None,
    cache_dir: str | Path | None = None,
    rebuild: bool = False,
    timing_runs: int = 50,
    tf32: bool = False,
    workspace_mb: int = 1024,
) -> CompileReport:
    """:func:`compile_model` for an already loaded manifest (without its backbone); ``frames``: recorded input
    sets (model inputs, raw units), three quarters calibrate INT8, every fourth is held out for the gate."""
    calibration: Sequence[Mapping[str, np.ndarray]] | None = None
    held: Sequence[Mapping[str, np.ndarray]] | None = None
    if frames:
        held = [f for i, f in enumerate(frames) if i % 4 == 3] or list(frames[-1:])
        calibration = [f for i, f in enumerate(frames) if i % 4 != 3] or list(frames)
    options = {
        "max_batch": max_batch,
        "cache_dir": cache_dir,
        "rebuild": rebuild,
        "tf32": tf32,
        "workspace_mb": workspace_mb,
    }
    report_progress(f"compile {manifest.model_id}", 0, 3, "stages", "build + accuracy gate")
    choice = load_backend(
        manifest,
        "tensorrt",
        precision=precision,
        calibration=calibration if precision == "int8" else None,
        gate_frames=held,
        trt_options=options,
        fallback=False,
        runtime_fallback=False,
    )
    acc = dict(choice.accuracy.max_abs_err) if choice.accuracy else {}
    gate = tuple(choice.accuracy.table()) if choice.accuracy else ()
    if choice.backend != "tensorrt":
        report_progress(f"compile {manifest.model_id}", 3, 3, "stages", "no engine")
        return CompileReport(manifest.model_id, precision, False, "ort", choice.reason, max_abs_err=acc, gate=gate)
    report_progress(f"compile {manifest.model_id}", 1, 3, "stages", "time TensorRT")
    trt_policy = choice.policy
    report: dict[str, Any] = dict(
        model_id=manifest.model_id,
        precision=precision,
        ok=True,
        backend="tensorrt",
        engine_path=str(trt_policy.engine_path),
        cache_key=trt_policy.key.digest(),
        cache_hit=trt_policy.cache_hit,
        max_abs_err=acc,
        gate=gate,
        cache_error=trt_policy.cache_error,
    )
    if timing_runs:
        feed = sample_inputs(manifest, trt_policy.profiles, shapes=("opt",))[0]
        report["trt_p50_ms"] = _p50_ms(trt_policy.run, feed, timing_runs)
    trt_policy.close()  # one model on the device at a time, also while timing
    del trt_policy, choice
    gc.collect()
    report_progress(f"compile {manifest.model_id}", 2, 3, "stages", "time ONNX Runtime")
    if timing_runs:
        from robot_stack.policy.runtime import OnnxPolicy

        ort_policy = OnnxPolicy(manifest)  # the manifest's preferred EP (CUDA on a GPU box)
        report["ort_p50_ms"] = _p50_ms(ort_policy.run, feed, timing_runs)
        report["ort_provider"] = ort_policy.provider
        ort_policy.close()
    report_progress(f"compile {manifest.model_id}", 3, 3, "stages", "done")
    return CompileReport(**report)


def compile_vla(manifest: PolicyManifest, precision: str, *, timing_runs: int = 50, **opts: Any) -> CompileReport:
    """Build and gate the TensorRT engines of both graphs of a VLA (prefix encoder, then denoising step: each an
    ordinary :func:`compile_manifest`), then time one **chunk** (prefix + ``vla.steps`` denoising steps at batch 1)
    on the engines against ONNX Runtime. The report's engine paths, cache keys and gate lines cover both graphs."""
    from robot_stack.policy.vla import load_vla

    parts = []
    for sub in (manifest.vla_prefix_manifest(), manifest.vla_denoise_manifest()):
        part = compile_manifest(sub, precision, timing_runs=0, **opts)
        parts.append(part)
        if not part.ok:
            return CompileReport(
                manifest.model_id, precision, False, "ort", f"{sub.model_id}: {part.reason}", gate=part.gate
            )
    report: dict[str, Any] = dict(
        model_id=manifest.model_id,
        precision=precision,
        ok=True,
        backend="tensorrt",
        engine_path="; ".join(p.engine_path for p in parts),
        cache_key="; ".join(p.cache_key for p in parts),
        cache_hit=all(p.cache_hit for p in parts),
        max_abs_err={f"{p.model_id}:{k}": v for p in parts for k, v in p.max_abs_err.items()},
        gate=tuple(f"{p.model_id}: {line}" for p in parts for line in p.gate),
        cache_error="; ".join(p.cache_error for p in parts if p.cache_error),
    )
    if timing_runs:
        from robot_stack.policy.tensorrt import default_profiles

        feed = sample_inputs(manifest, default_profiles(manifest), shapes=("opt",))[0]
        trt_opts = {k: v for k, v in opts.items() if k != "rebuild"}
        engines, _ = load_vla(
            manifest, "tensorrt", precision=precision, trt_options=trt_opts, fallback=False, runtime_fallback=False
        )
        if engines is not None:
            report["trt_p50_ms"] = _p50_ms(engines.run, feed, timing_runs)
            engines.close()
        del engines
        gc.collect()
        ort, _ = load_vla(manifest, "ort")
        assert ort is not None
        report["ort_p50_ms"] = _p50_ms(ort.run, feed, timing_runs)
        report["ort_provider"] = ort.provider
        ort.close()
    return CompileReport(**report)


def _p50_ms(run: Any, feed: Mapping[str, np.ndarray], runs: int) -> float:
    return round(float(np.median(time_calls(lambda: run(feed), runs))) * 1e3, 4)


def run_compile(args: argparse.Namespace) -> int:
    """Handler of ``robot-stack compile``: print the result and the gate figures; 0 = engine built and gated."""
    precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
    report = compile_model(
        args.manifest,
        precision,
        max_batch=args.max_batch,
        cache_dir=args.cache_dir,
        rebuild=args.rebuild,
        calibration_data=getattr(args, "calibration_data", None),
        calibration_frames=getattr(args, "calibration_frames", 32),
        tf32=getattr(args, "tf32", False),
        workspace_mb=getattr(args, "workspace_mb", 1024),
    )
    summary = {
        k: v
        for k, v in asdict(report).items()
        if k in ("model_id", "precision", "ok", "backend", "cache_hit", "trt_p50_ms", "ort_p50_ms", "ort_provider")
        or (k == "reason" and v)
    }
    if args.json:
        print(json.dumps(asdict(report)))
        print_summary("robot-stack compile", summary, to_stderr=True)
        return 0 if report.ok else 1
    if report.ok:
        print(
            f"{report.model_id}: {precision} engine {'loaded from cache' if report.cache_hit else 'built'} and "
            f"validated against ONNX Runtime\n  {report.engine_path}"
            + (f"\n  not cached: {report.cache_error}" if report.cache_error else "")
            + f"\n  latency p50: TensorRT {report.trt_p50_ms} ms vs ONNX Runtime ({report.ort_provider}) "
            f"{report.ort_p50_ms} ms"
        )
    else:
        print(
            f"{report.model_id}: no TensorRT engine; serving would fall back to ONNX Runtime. Reason: {report.reason}"
        )
    if report.calibration:
        print(f"  calibration: {report.calibration}")
    for line in report.gate:
        print(f"  {line}")
    print_summary("robot-stack compile", summary)
    return 0 if report.ok else 1
