"""``robot-stack bench serve``: several robots on one policy server: throughput and latency, micro-batched vs not.

Model: a real ONNX MLP built on the fly (:mod:`robot_stack.policy.toy_models`): a 48x64 RGB image + 64-float state
-> 256 hidden -> a (16, 7) action chunk, dynamic batch dim. Two server subprocesses serve it with ONNX Runtime on
one intra-op thread: one with micro-batching (``max_batch`` 8), one without (the same-run baseline). For 1, 4 and
8 concurrent clients (threads of this process, each its own DEALER and robot id, back-to-back requests) the
benchmark reports throughput (answers/s over all clients), client-side p50/p99 round trip, and the server's own
per-client p99 total (from ``health``). ``batching_speedup_8`` = throughput(batched) / throughput(unbatched) at 8
clients.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from robot_stack.bench.registry import register
from robot_stack.bench.server_process import start_server, stop_server
from robot_stack.metrics import latency_stats

CONCURRENCY = (1, 4, 8)
MAX_BATCH = 8


def _obs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.integers(0, 256, (1, 48, 64, 3), dtype=np.uint8),
        "state": rng.normal(size=(1, 64)).astype(np.float32),
    }


def _write_model(folder: Path) -> Path:
    from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict

    model = build_toy_model(
        folder / "serve_bench.onnx",
        [("rgb", "uint8", (48, 64, 3)), ("state", "float32", (64,))],
        ("actions", (16, 7)),
        hidden=256,
        scale=0.01,
    )
    path = folder / "serve_bench.yaml"
    path.write_text(yaml.safe_dump(toy_manifest_dict(model, "serve-bench", max_batch=MAX_BATCH)))
    return path


def _start(manifest: Path | str, max_batch: int) -> tuple[subprocess.Popen[str], str]:
    return start_server("robot_stack.bench.serve", [str(manifest), str(max_batch)], "serve")


def _load(
    endpoint: str,
    clients: int,
    duration_s: float,
    tag: str,
    obs_fn: Callable[[int], dict[str, np.ndarray]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``clients`` threads hammer the server for ``duration_s`` (robot ``i`` sends ``obs_fn(i)`` with ``meta``);
    return throughput and latency figures."""
    from robot_stack.transport.client import PolicyClient

    lat: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    start = threading.Barrier(clients + 1)

    def robot(i: int) -> None:
        obs = (obs_fn or _obs)(i)
        with PolicyClient(endpoint, f"{tag}-robot{i}", timeout_s=10.0) as client:
            client.infer(obs, meta)  # connect + warm
            start.wait()
            t_end = time.perf_counter() + duration_s
            while time.perf_counter() < t_end:
                t0 = time.perf_counter()
                try:
                    client.infer(obs, meta)
                except Exception as exc:  # counted and reported, never hidden
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                lat[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=robot, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(duration_s + 10)
    wall = time.perf_counter() - t0
    with PolicyClient(endpoint, f"{tag}-monitor", timeout_s=5.0) as monitor:
        per_client = monitor.health()["clients"]
    mine = [v for k, v in per_client.items() if k.startswith(f"{tag}-robot")]
    samples = np.concatenate([np.asarray(x) for x in lat]) if any(lat) else np.zeros(1)
    stats = latency_stats(samples)
    return {
        "throughput_hz": round(sum(len(x) for x in lat) / wall, 1),
        "p50_ms": stats["p50_ms"],
        "p99_ms": stats["p99_ms"],
        "server_total_p99_ms": round(max(v["total_p99_ms"] for v in mine), 3),
        "server_batch_mean": round(float(np.mean([v["batch_mean"] for v in mine])), 2),
        "errors": len(errors),
    }


def batching_sweep(
    manifest: Path | str,
    max_batch: int,
    duration_s: float,
    tag: str,
    obs_fn: Callable[[int], dict[str, np.ndarray]] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Serve ``manifest`` twice, micro-batching up to ``max_batch`` robots and unbatched, and load each with 1, 4
    and 8 concurrent robots for ``duration_s`` (:func:`_load`); return ``clients<n>_<figure>`` (batched) and
    ``clients<n>_unbatched_<figure>``, and ``batching_speedup_8`` (throughput at 8 robots, batched / unbatched)."""
    out: dict[str, Any] = {}
    procs = {}
    try:
        procs["batched"] = _start(manifest, max_batch)
        procs["unbatched"] = _start(manifest, 1)
        for n in CONCURRENCY:
            for mode in ("unbatched", "batched"):
                res = _load(procs[mode][1], n, duration_s, f"{tag}{mode}{n}", obs_fn, meta)
                prefix = f"clients{n}_" if mode == "batched" else f"clients{n}_unbatched_"
                out.update({prefix + k: v for k, v in res.items()})
    finally:
        for proc, _ in procs.values():
            stop_server(proc)
    out["batching_speedup_8"] = round(
        out["clients8_throughput_hz"] / max(out["clients8_unbatched_throughput_hz"], 1e-9), 3
    )
    return out


@register("serve")
def run(quick: bool) -> dict[str, Any]:
    duration = 0.8 if quick else 2.0
    out: dict[str, Any] = {"model": "mlp rgb48x64+state64 -> 16x7, ORT cpu 1 thread", "max_batch": MAX_BATCH}
    with tempfile.TemporaryDirectory(prefix="robot-stack-bench-serve-") as tmp:
        out.update(batching_sweep(_write_model(Path(tmp)), MAX_BATCH, duration, ""))
    out["scaling_1_to_8"] = round(out["clients8_throughput_hz"] / max(out["clients1_throughput_hz"], 1e-9), 3)
    return out


def _serve(manifest: str, max_batch: int) -> None:
    """Subprocess entry: serve ``manifest`` on a free loopback port with ``max_batch``; print READY."""
    import signal

    from robot_stack.policy import PolicyManifest
    from robot_stack.policy.backends import load_backend
    from robot_stack.policy.service import PolicyService
    from robot_stack.transport.server import PolicyServer

    policy = load_backend(PolicyManifest.load(manifest), "ort", provider="cpu", threads=1).policy
    service = PolicyService(policy, max_batch=max_batch)
    service.warmup()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with PolicyServer(service, bind="tcp://127.0.0.1:*") as server:
        print(f"READY {server.endpoint}", flush=True)
        stop.wait()


if __name__ == "__main__":  # ``python -m robot_stack.bench.serve <manifest> <max_batch>``
    _serve(sys.argv[1], int(sys.argv[2]))
