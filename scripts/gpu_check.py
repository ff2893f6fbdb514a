#!/usr/bin/env python3
"""One prepared check of every GPU serving path on this machine, in under 5 minutes.

Every output line starts with ``PASS``, ``FAIL`` or ``INFO``:

* versions (Python, ONNX Runtime and its providers, TensorRT, cuda-python, driver, torch), the GPU and its compute
  capability, and the backend plan :func:`robot_stack.policy.gpu_env.check_backends` predicts;
* per model (a batch-dynamic toy model, timed at batch 1 and 8, and every shipped model at batch 1) and engine —
  native TensorRT (fp16), ONNX Runtime's TensorRT and CUDA providers, torch on CUDA (fp32, fp16, fp16 + CUDA
  graphs) — built, judged by the accuracy gate (PASS/FAIL), timed against ONNX Runtime on the CPU on the same
  inputs (INFO);
* the engine cache hit on a second load (native TensorRT; files in the TensorRT EP's cache);
* the VLA (``robot_stack/policy/models/vla``): each of its graphs (prefix encoder, denoising step) through every
  section above, then the latency **per chunk** (prefix + K = 10 denoising steps) at batch 1 and 8 on ONNX Runtime
  CPU, ONNX Runtime CUDA and native TensorRT FP16 (each gated; INFO lines with the figures for the README);
* a read-only engine cache: the engine is served from memory with the reason logged, and the ONNX Runtime
  TensorRT provider with an unwritable cache still yields a serving session (its own provider or the gated
  fallback), never a crash.

What the machine lacks (TensorRT, a GPU, torch) is skipped with an INFO line saying why; on a CPU-only machine
the run ends with no FAIL. Exit code 1 iff a line says FAIL.

    python scripts/gpu_check.py                 # everything (GPU box)
    python scripts/gpu_check.py --quick         # fewer timing runs, toy model and one shipped model only
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from robot_stack.policy.manifest import PolicyManifest  # noqa: E402

MODELS = ROOT / "robot_stack" / "policy" / "models"
VLA = MODELS / "vla" / "vla-tabletop-v1.yaml"
SHIPPED = (
    MODELS / "reach-touch-v1.yaml",
    MODELS / "reach-visuomotor" / "reach-visuomotor-continuous.yaml",
    MODELS / "reach-visuomotor" / "reach-visuomotor-vq.yaml",
    VLA,
)
#: Integration steps per chunk in the VLA latency section.
VLA_STEPS = 10


class Report:
    """Prints the PASS/FAIL/INFO lines and remembers whether anything failed."""

    def __init__(self, budget_s: float) -> None:
        self.failed = False
        self.t0 = time.monotonic()
        self.budget_s = budget_s

    def line(self, status: str, text: str) -> None:
        assert status in ("PASS", "FAIL", "INFO")
        self.failed |= status == "FAIL"
        for i, part in enumerate(str(text).splitlines() or [""]):
            print(f"{status} {'  ' if i else ''}{part}", flush=True)

    def check(self, ok: bool, text: str) -> bool:
        self.line("PASS" if ok else "FAIL", text)
        return ok

    def out_of_time(self, what: str) -> bool:
        if time.monotonic() - self.t0 > self.budget_s:
            self.line("INFO", f"skipped {what}: the {self.budget_s:.0f} s budget is used up")
            return True
        return False


def p50_ms(run: Callable[[Any], Any], feed: Any, runs: int) -> float:
    """Median latency (ms) of ``run(feed)`` after 3 warm-up calls (:func:`robot_stack.metrics.time_calls`)."""
    from robot_stack.metrics import time_calls

    return float(np.median(time_calls(lambda: run(feed), runs))) * 1e3


# ---------------------------------------------------------------------------------------------- sections


def versions(rep: Report, engine_reports: dict[str, Any]) -> None:
    from robot_stack.policy.gpu_env import check_backends

    rep.line("INFO", f"python {platform.python_version()} on {platform.machine()}, {platform.platform()}")
    for engine in ("ort", "tensorrt", "torch"):
        report = check_backends(engine, "tensorrt" if engine != "torch" else None)
        engine_reports[engine] = report
    seen: set[str] = set()
    for report in engine_reports.values():
        for c in report.checks:
            if c.name in seen:
                continue
            seen.add(c.name)
            broken = not c.ok and ("installed" in c.detail and "several" in c.detail or "needs a CUDA" in c.detail)
            status = "PASS" if c.ok else ("FAIL" if broken else "INFO")
            rep.line(status, f"{c.name}: {c.detail}" + (f" -> {c.fix}" if c.fix and not c.ok else ""))
    dev = engine_reports["tensorrt"].device
    if dev is not None:
        rep.line("INFO", f"GPU 0: {dev.name}, compute capability {dev.sm}, {dev.total_memory_bytes / 2**30:.1f} GiB")
    else:
        rep.line("INFO", "no usable CUDA device from cuda-python: every GPU section below is skipped")
    for engine, report in engine_reports.items():
        rep.line("INFO", f"plan for --engine {engine}: {report.plan.path} ({report.plan.reason})")


def toy_manifest(folder: Path) -> PolicyManifest:
    from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict

    model = build_toy_model(
        folder / "toy.onnx",
        [("state", "float32", (32,)), ("front/xyz", "float32", (48, 64, 3))],
        ("actions", (8, 3)),
        256,
        nan_to_zero=["front/xyz"],
    )
    (folder / "toy.yaml").write_text(yaml.safe_dump(toy_manifest_dict(model, "toy-batch8", max_batch=8)))
    return PolicyManifest.load(folder / "toy.yaml")


def feeds(manifest: PolicyManifest) -> dict[int, dict[str, np.ndarray]]:
    """Batch size -> the same seeded inputs for every engine (NaN holes where allowed); batch 8 if batch-dynamic."""
    from robot_stack.policy.accuracy import sample_inputs
    from robot_stack.policy.tensorrt import default_profiles

    profiles = default_profiles(manifest)
    sets = sample_inputs(manifest, profiles, seed=42, nonfinite=True)  # at the profile's opt (1) and max shapes
    out = {1: sets[0]}
    if manifest.max_batch >= 8:
        out[8] = sample_inputs(manifest, default_profiles(manifest, 8), seed=42, shapes=("max",), nonfinite=True)[0]
    return out


def ort_cpu(rep: Report, manifest: PolicyManifest, inputs: dict[int, Any], runs: int) -> dict[int, float]:
    from robot_stack.policy.runtime import OnnxPolicy

    policy = OnnxPolicy(manifest, "cpu")
    times = {b: p50_ms(policy.run, x, runs) for b, x in inputs.items()}
    policy.close()
    shown = ", ".join(f"batch {b} {t:.3f} ms" for b, t in times.items())
    rep.line("INFO", f"{manifest.model_id}: ONNX Runtime CPU p50 {shown}")
    return times


def timed(rep: Report, label: str, policy: Any, inputs: dict[int, Any], base: dict[int, float], runs: int) -> None:
    parts = []
    for b, x in inputs.items():
        t = p50_ms(policy.run, x, runs)
        parts.append(f"batch {b} p50 {t:.3f} ms ({base[b] / t:.1f}x ORT CPU)")
    rep.line("INFO", f"{label}: " + ", ".join(parts))


def native_tensorrt(rep: Report, manifest: PolicyManifest, inputs: dict, base: dict, runs: int, work: Path) -> None:
    from robot_stack.policy.backends import load_backend
    from robot_stack.policy.tensorrt import prepare_engine, trt_environment

    env = trt_environment()
    if isinstance(env, str):
        rep.line("INFO", f"{manifest.model_id}: native TensorRT skipped: {env}")
        return
    cache = work / f"engines-{manifest.model_id.replace('/', '_')}"
    t0 = time.monotonic()
    choice = load_backend(
        manifest, "tensorrt", precision="fp16", trt_options={"cache_dir": cache}, fallback=False, runtime_fallback=False
    )
    label = f"{manifest.model_id}: TensorRT {env.version} fp16"
    built = choice.backend == "tensorrt"
    if not rep.check(
        built, f"{label} built and gated in {time.monotonic() - t0:.1f} s" if built else f"{label}: {choice.reason}"
    ):
        for line in choice.accuracy.table() if choice.accuracy else ():
            rep.line("INFO", line)
        return
    for line in choice.accuracy.table(max_channels=4):
        rep.line("INFO", line)
    timed(rep, label, choice.policy, inputs, base, runs)
    choice.policy.close()
    again = prepare_engine(manifest, "fp16", cache_dir=cache)
    hit = "hits" if again.cache_hit else "MISSES"
    rep.check(again.cache_hit, f"{label}: second load {hit} the engine cache ({again.path.name[:16]}...)")
    blocker = work / "read-only"
    blocker.write_text("a file where the cache folder should be: the cache cannot be written")
    ro = load_backend(
        manifest, "tensorrt", precision="fp16", trt_options={"cache_dir": blocker / "engines"}, runtime_fallback=False
    )
    ok = ro.backend == "tensorrt" and bool(ro.policy.cache_error)
    rep.check(ok, f"{label}: read-only cache -> engine served from memory ({ro.policy.cache_error or ro.reason})")
    ro.policy.close()


def ort_gpu(rep: Report, manifest: PolicyManifest, inputs: dict, base: dict, runs: int, work: Path) -> None:
    import onnxruntime as ort

    from robot_stack.policy.backends import load_backend

    have = ort.get_available_providers()
    for provider, ep in (("tensorrt", "TensorrtExecutionProvider"), ("cuda", "CUDAExecutionProvider")):
        if ep not in have:
            rep.line(
                "INFO", f"{manifest.model_id}: ONNX Runtime {provider} provider skipped: not in this build ({have})"
            )
            continue
        cache = work / f"ort-trt-{manifest.model_id.replace('/', '_')}"
        t0 = time.monotonic()
        choice = load_backend(manifest, "ort", provider=provider, trt_options={"cache_dir": cache})
        label = f"{manifest.model_id}: ONNX Runtime {provider} provider"
        ok = choice.policy.provider == provider
        if not rep.check(
            ok, f"{label} loaded and gated in {time.monotonic() - t0:.1f} s" if ok else f"{label}: {choice.reason}"
        ):
            continue
        timed(rep, label, choice.policy, inputs, base, runs)
        choice.policy.close()
        if provider == "tensorrt":
            files = [p for p in cache.rglob("*") if p.is_file()]
            t1 = time.monotonic()
            second = load_backend(manifest, "ort", provider=provider, trt_options={"cache_dir": cache})
            rep.check(
                bool(files) and second.policy.provider == provider,
                f"{label}: engine cache holds {len(files)} file(s); second session {time.monotonic() - t1:.1f} s",
            )
            second.policy.close()
            blocker = work / "ort-read-only"
            blocker.write_text("not a folder")
            ro = load_backend(manifest, "ort", provider=provider, trt_options={"cache_dir": blocker / "c"})
            rep.check(
                ro.policy is not None,
                f"{label}: unwritable cache -> serving on {ro.policy.provider}"
                + (f" ({ro.reason})" if ro.reason else ""),
            )
            ro.policy.close()


def torch_engine(rep: Report, manifest: PolicyManifest, inputs: dict, base: dict, runs: int, gpu_only: bool) -> None:
    if manifest.torch is None:
        rep.line("INFO", f"{manifest.model_id}: torch engine skipped: the manifest names no torch program")
        return
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        rep.line("INFO", f"{manifest.model_id}: torch engine skipped: torch is not installed")
        return
    import torch

    from robot_stack.policy.backends import load_backend

    variants = [("fp32", False), ("fp16", False), ("fp16", True)] if torch.cuda.is_available() else []
    if not variants:
        rep.line("INFO", f"{manifest.model_id}: torch on CUDA skipped: torch {torch.__version__} sees no CUDA device")
        if gpu_only:
            return
        variants = [("fp32", False)]
    for precision, graphs in variants:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        t0 = time.monotonic()
        choice = load_backend(
            manifest, "torch", precision=precision, threads=2, torch_options={"device": device, "cuda_graphs": graphs}
        )
        label = f"{manifest.model_id}: torch {device} {precision}{' + CUDA graphs' if graphs else ''}"
        ok = choice.backend == "torch"
        said = f"{label} loaded and gated in {time.monotonic() - t0:.1f} s" if ok else f"{label}: {choice.reason}"
        if rep.check(ok, said):
            rep.line("INFO", choice.accuracy.table(max_channels=3)[0])
            timed(rep, label, choice.policy, inputs, base, runs)
        choice.policy.close()


def vla_chunks(rep: Report, manifest: PolicyManifest, runs: int, work: Path) -> None:
    """Latency per chunk (prefix + K denoising steps) at batch 1 and 8: ORT CPU, ORT CUDA, TensorRT FP16."""
    import onnxruntime as ort

    from robot_stack.policy.accuracy import sample_inputs
    from robot_stack.policy.tensorrt import default_profiles, trt_environment
    from robot_stack.policy.vla import load_vla

    inputs = {1: sample_inputs(manifest, default_profiles(manifest), seed=5, shapes=("opt",))[0]}
    if manifest.max_batch >= 8:
        inputs[8] = sample_inputs(manifest, default_profiles(manifest, 8), seed=5, shapes=("max",))[0]
    label = f"{manifest.model_id}: per chunk (K = {VLA_STEPS})"
    cpu, _ = load_vla(manifest, "ort", provider="cpu", threads=2, steps=VLA_STEPS)
    assert cpu is not None
    base = {b: p50_ms(cpu.run, x, runs) for b, x in inputs.items()}
    cpu.close()
    rep.line("INFO", f"{label} ONNX Runtime CPU: " + ", ".join(f"batch {b} p50 {t:.2f} ms" for b, t in base.items()))
    paths: list[tuple[str, str, dict[str, Any]]] = []
    if "CUDAExecutionProvider" in ort.get_available_providers():
        paths.append(("ONNX Runtime CUDA", "ort", {"provider": "cuda"}))
    else:
        rep.line("INFO", f"{label} ONNX Runtime CUDA skipped: not in this onnxruntime build")
    env = trt_environment()
    if isinstance(env, str):
        rep.line("INFO", f"{label} TensorRT FP16 skipped: {env}")
    else:
        cache = {"cache_dir": work / "vla-engines"}
        paths.append((f"TensorRT {env.version} FP16", "tensorrt", {"precision": "fp16", "trt_options": cache}))
    for name, engine, kwargs in paths:
        t0 = time.monotonic()
        policy, reason = load_vla(manifest, engine, steps=VLA_STEPS, fallback=False, runtime_fallback=False, **kwargs)
        if not rep.check(
            policy is not None,
            f"{label} {name}: both graphs built and gated in {time.monotonic() - t0:.1f} s"
            if policy is not None
            else f"{label} {name}: {reason}",
        ):
            continue
        timed(rep, f"{label} {name}", policy, inputs, base, runs)
        policy.close()


# -------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", type=Path, default=None, help="manifests (default: every shipped one)")
    parser.add_argument("--runs", type=int, default=50, help="timed calls per measurement (default 50)")
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop starting new sections after this")
    parser.add_argument("--quick", action="store_true", help="10 timed calls; the toy and one shipped model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # the library's own warnings would break the line format
    rep = Report(args.budget_s)
    runs = min(args.runs, 10) if args.quick else args.runs
    try:
        engine_reports: dict[str, Any] = {}
        versions(rep, engine_reports)
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            work = Path(tmp)
            models = [toy_manifest(work)]
            default = (SHIPPED[1], VLA) if args.quick else SHIPPED
            paths = args.models if args.models is not None else [p for p in default if p.is_file()]
            vlas = []
            for path in paths:
                loaded = PolicyManifest.load(path)
                if loaded.vla is not None:  # a VLA's two graphs are checked like any model, then timed per chunk
                    vlas.append(loaded)
                    models += [loaded.vla_prefix_manifest(), loaded.vla_denoise_manifest()]
                else:
                    models.append(loaded)
            if not vlas:
                rep.line("INFO", "no VLA manifest given: build it with robot-stack train-vla (issue 14)")
            for manifest in models:
                if rep.out_of_time(manifest.model_id):
                    break
                inputs = feeds(manifest)
                base = ort_cpu(rep, manifest, inputs, runs)
                native_tensorrt(rep, manifest, inputs, base, runs, work)
                if rep.out_of_time(f"{manifest.model_id} (ONNX Runtime GPU, torch)"):
                    break
                ort_gpu(rep, manifest, inputs, base, runs, work)
                torch_engine(rep, manifest, inputs, base, runs, gpu_only=manifest is not models[-1])
            for vla in vlas:
                if rep.out_of_time(f"{vla.model_id} per-chunk latency"):
                    break
                vla_chunks(rep, vla, runs, work)
    except Exception as exc:  # the check itself must report, not crash
        import traceback

        rep.line("FAIL", f"gpu_check stopped: {type(exc).__name__}: {exc}")
        for line in traceback.format_exc().splitlines()[-6:]:
            rep.line("INFO", line)
    rep.line("PASS" if not rep.failed else "FAIL", f"gpu_check finished in {time.monotonic() - rep.t0:.1f} s")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
