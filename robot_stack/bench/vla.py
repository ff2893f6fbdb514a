"""``robot-stack bench vla``: what serving the project's VLA costs, per chunk, and what its payload costs.

Model: the shipped VLA (``robot_stack/policy/models/vla/vla-tabletop-v1.yaml``; ``ROBOT_STACK_VLA_MANIFEST``
overrides it): prefix encoder + flow-matching denoising step. Input: one real observation of the simulated cell
(scene ``vla_a0``, rendered once: RGB, uint16 depth, the scene's calibration), instruction ``touch the blue
cylinder``. All in one run, every engine on one intra-op thread:

* **per chunk, ONNX Runtime CPU**, K = 1 / 5 / 10 integration steps, with the prefix cache (prefix once, K steps on
  its keys/values: ``steps{K}_p50_ms``) and without (the prefix recomputed before every step, as without a cache:
  ``steps{K}_nocache_p50_ms``); ``prefix_cache_speedup`` = no-cache / cache at K = 10; ``prefix_p50_ms`` and
  ``denoise_step_p50_ms`` alone;
* **PyTorch eager** (the manifest's torch programs through the torch engine) on the same model and inputs:
  ``torch_steps{K}_p50_ms``;
* **micro-batched throughput** at 1 / 4 / 8 clients against a real server subprocess (``max_batch`` 8) and the
  same server unbatched (``max_batch`` 1): ``clients{N}_throughput_hz``, ``batching_speedup_8``;
* **payload** (issue item 7), the XYZ form (the robot projects depth into a float32 base-frame XYZ map and sends
  it, 3.7 MB) against the depth form (uint16 depth + the 17-float calibration, 0.6 MB; the model projects in its
  graph), each served by its own server, measured alternately: bytes, round trip, and the **overhead beyond
  inference** = robot-side preparation + round trip - the server's inference time (``payload_{xyz,depth}_*``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.bench.registry import register
from robot_stack.bench.server_process import stop_server
from robot_stack.metrics import latency_stats, time_calls
from robot_stack.policy.manifest import SHIPPED_MODELS_DIR

SHIPPED_VLA = SHIPPED_MODELS_DIR / "vla" / "vla-tabletop-v1.yaml"
INSTRUCTION = "touch the blue cylinder"
SCENE = "vla_a0"
STEPS = (1, 5, 10)


def _manifest_path() -> Path:
    path = Path(os.environ.get("ROBOT_STACK_VLA_MANIFEST", SHIPPED_VLA))
    if not path.is_file():
        raise FileNotFoundError(f"VLA manifest {path} not found; build it with robot-stack train-vla")
    return path


def _observation() -> tuple[Any, Any]:
    """One rendered observation of scene ``vla_a0`` (both forms) and the camera's projector."""
    from robot_stack.calibration.store import load_calibration
    from robot_stack.clock import FakeClock
    from robot_stack.sim.camera import SimCamera
    from robot_stack.sim.robot import SimRobot
    from robot_stack.sim.scene import scene_with_cameras
    from robot_stack.sim.tabletop import SCENE_OBJECTS, TabletopTask
    from robot_stack.sim.world import SimWorld
    from robot_stack.types import Observation

    world = SimWorld(FakeClock(), config=scene_with_cameras(["front"], SCENE, objects=SCENE_OBJECTS))
    TabletopTask(world, INSTRUCTION).reset(3)
    camera = SimCamera(world, "front")
    camera.start()
    try:
        frame = camera.read()
    finally:
        camera.stop()
    projector = load_calibration(SCENE, "front").projector()
    state = SimRobot(world).read_state()
    obs = Observation(frame.t_capture_ns, state, (projector.observe(frame),), INSTRUCTION)
    return obs, (frame, projector)


def _p(times_s: Any) -> dict[str, float]:
    stats = latency_stats(np.asarray(times_s))
    return {"p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"]}


def _chunk_latency(out: dict[str, Any], policy: Any, feed: dict[str, np.ndarray], prefix: str, runs: int) -> None:
    """Per-chunk latency for every K (and, for ORT, with and without the prefix cache), the settings interleaved
    round by round: a drift of the machine (load, clocks, caches) falls on all of them alike, where timing one
    setting after another once made K = 5 look slower than K = 10."""
    settings = [(k, cached) for k in STEPS for cached in ((True, False) if not prefix else (True,))]
    times: dict[tuple[int, bool], list[float]] = {s: [] for s in settings}
    for r in range(3 + runs):  # 3 warm-up rounds
        for k, cached in settings:
            policy.steps, policy.prefix_cache = k, cached
            t0 = time.perf_counter_ns()
            policy.run(feed)
            if r >= 3:
                times[(k, cached)].append((time.perf_counter_ns() - t0) / 1e9)
    for (k, cached), samples in times.items():
        stats = _p(samples)
        tag = f"{prefix}steps{k}" + ("" if cached else "_nocache")
        out[f"{tag}_p50_ms"], out[f"{tag}_p99_ms"] = stats["p50_ms"], stats["p99_ms"]
    policy.prefix_cache = True


def _payload(out: dict[str, Any], obs: Any, frame_projector: Any, manifests: dict[str, Path], rounds: int) -> None:
    """Round trip and overhead beyond inference of the XYZ and the depth form, measured alternately."""
    from robot_stack.bench.serve import _start
    from robot_stack.cycle import RequestLayout
    from robot_stack.transport.client import PolicyClient
    from robot_stack.types import Observation

    frame, projector = frame_projector
    procs = {form: _start(path, 8) for form, path in manifests.items()}
    try:
        clients = {form: PolicyClient(ep, f"payload-{form}", timeout_s=10.0) for form, (_, ep) in procs.items()}
        layouts = {form: RequestLayout.from_metadata(c.metadata()) for form, c in clients.items()}
        samples: dict[str, dict[str, list[float]]] = {f: {"rt": [], "over": [], "prep": []} for f in procs}
        for i in range(rounds + 3):
            for form in procs:
                t0 = time.perf_counter()
                # what the robot does per cycle beyond capture: project (XYZ form) or attach the calibration
                view = projector.observe(frame, xyz=not layouts[form].depth_form)
                o = Observation(obs.t_obs_ns, obs.state, (view,), obs.task)
                arrays, meta = layouts[form].arrays(o), layouts[form].meta(o)
                t_prep = time.perf_counter() - t0
                reply = clients[form].infer(arrays, meta)
                total = time.perf_counter() - t0
                if i >= 3:  # warm-up rounds
                    samples[form]["rt"].append(reply.timing.round_trip_ms / 1e3)
                    samples[form]["prep"].append(t_prep)
                    samples[form]["over"].append(total - reply.timing.infer_ms / 1e3)
                    out[f"payload_{form}_bytes"] = int(sum(np.asarray(a).nbytes for a in arrays.values()))
        for form, s in samples.items():
            for key, values in (("round_trip", s["rt"]), ("overhead", s["over"]), ("robot_prep", s["prep"])):
                stats = _p(values)
                out[f"payload_{form}_{key}_p50_ms"] = stats["p50_ms"]
                out[f"payload_{form}_{key}_p99_ms"] = stats["p99_ms"]
        for c in clients.values():
            c.close()
    finally:
        for proc, _ in procs.values():
            stop_server(proc)


@register("vla")
def run(quick: bool) -> dict[str, Any]:
    from robot_stack.bench.serve import batching_sweep
    from robot_stack.cycle import RequestLayout
    from robot_stack.policy.backends import load_backend
    from robot_stack.policy.instruction import InstructionTokenizer
    from robot_stack.policy.manifest import PolicyManifest

    runs = 10 if quick else 40
    path = _manifest_path()
    manifest = PolicyManifest.load(path)
    obs, frame_projector = _observation()
    layout = RequestLayout.from_metadata(manifest.summary())
    feed = layout.arrays(obs)
    assert manifest.instruction is not None
    feed["instruction"] = InstructionTokenizer(manifest.instruction).encode_rows(INSTRUCTION, 1)
    out: dict[str, Any] = {
        "model": f"{manifest.model_id}, ORT cpu 1 thread, instruction {INSTRUCTION!r}, scene {SCENE}",
        "default_steps": manifest.vla.steps if manifest.vla else None,
    }
    policy = load_backend(manifest, "ort", provider="cpu", threads=1).policy
    out["prefix_p50_ms"] = _p(time_calls(lambda: policy.encode_prefix(feed), runs))["p50_ms"]
    prefix = policy.encode_prefix(feed)
    x = np.zeros((1, *manifest.outputs[0].shape[1:]), np.float32)
    out["denoise_step_p50_ms"] = _p(time_calls(lambda: policy.velocity(prefix, feed, x, 0.5), runs))["p50_ms"]
    _chunk_latency(out, policy, feed, "", runs)
    out["prefix_cache_speedup"] = round(out["steps10_nocache_p50_ms"] / max(out["steps10_p50_ms"], 1e-9), 3)
    policy.close()
    torch_choice = load_backend(manifest, "torch", threads=1, torch_options={"device": "cpu"})
    if torch_choice.backend == "torch":
        _chunk_latency(out, torch_choice.policy, feed, "torch_", runs)
        out["torch_vs_ort_steps10"] = round(out["torch_steps10_p50_ms"] / max(out["steps10_p50_ms"], 1e-9), 3)
    else:
        out["torch_skipped"] = torch_choice.reason
    torch_choice.policy.close()
    duration = 1.5 if quick else 4.0
    meta = layout.meta(obs)

    def obs_fn(i: int) -> dict[str, np.ndarray]:
        return layout.arrays(obs)

    out.update(batching_sweep(path, 8, duration, "vla-", obs_fn, meta))
    xyz_manifest = path.with_name(f"{manifest.model_id}-xyz.yaml")
    if xyz_manifest.is_file():
        _payload(out, obs, frame_projector, {"xyz": xyz_manifest, "depth": path}, 10 if quick else 40)
    else:
        out["payload_skipped"] = f"{xyz_manifest} (the XYZ form of the model) not found"
    return out
