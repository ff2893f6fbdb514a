"""``robot-stack bench hostile``: a real policy server under hostile clients, beside a well-behaved robot.

The server is ``python -m robot_stack.policy.service`` (its own process, ONNX Runtime on one thread) serving the
demo policy ``reach-touch-v1`` (front/rgb uint8[480,640,3], front/xyz float32[480,640,3], state float32[11]) with
the manifest declaring ``compression: {front/rgb: png, front/xyz: zstd}``. A *victim* client (this process, a
:class:`~robot_stack.transport.client.PolicyClient`, raw 2.5 MB observations at 20 Hz, 2 s budget) measures its
round trip (failed calls count with the time they took to fail) while the server is quiet and again while an
*attacker* process (a raw DEALER, paced at
:data:`CASES`, reading every answer) sends one of these floods:

``zstd_flood`` (issue 11 item 4)
    infer requests of ~200 bytes: one array ``obs`` float32[480,640,3] of zstd-compressed zeros (3.7 MB decoded),
    a new robot id each, no deadline. The codec was never negotiated for ``obs``.
``valid_flood``
    well-formed, negotiated observations (PNG zeros, zstd zeros: 4.5 KB on the wire, 4.6 MB decoded) that the
    model accepts, a new robot id each, no deadline: what the queue caps (``busy``) have to hold back.
``health_png`` (item 5)
    ``health`` requests each carrying one PNG array uint8[8000,8000] (62 KB on the wire, 64 MB decoded).

Per case: what was sent, the answers by code, the server's RSS (``/proc``) idle before the case, peak during it
and after it (queue drained, then 1.2 s; 0.3 s with ``--quick``), the server's log lines written during it, and
the victim's p50/p99 quiet vs under attack (``victim_p99_ratio``; same run, so machine load hits both) and vs
the same flood sent to a *decoy* sink in the attacker's own process (``victim_p99_ratio_vs_decoy``: what is left
once the attacker's own CPU, which a remote attacker would not spend here, is accounted for). Targets
(issue 11): RSS growth <= 64 MB and victim p99 ratio <= 1.5 for ``zstd_flood`` at 10,000 requests. A guard kills
the server above :data:`RSS_GUARD_BYTES` (an unprotected server would otherwise exhaust the machine). Attacker,
victim and server share this machine's cores: on a 2-core machine the attacker's own CPU is part of what the
victim feels, and with ~100 calls per phase a p99 is the worst call or two: ``victim_p50_ratio`` shows the
systematic effect.

``python -m robot_stack.bench.hostile --attacker CASE...`` is the attacker process (see :func:`main`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import yaml

from robot_stack.bench.registry import register
from robot_stack.metrics import latency_stats

__all__ = ["CASES", "RSS_GUARD_BYTES", "run", "run_cases"]

#: Victim request rate, Hz.
VICTIM_RATE_HZ = 20.0
#: The server is killed (and the case reported as such) if its RSS exceeds this.
RSS_GUARD_BYTES = 6 * 1024**3
#: case -> (requests in a full run, requests with --quick, messages per second the attacker sends). 2000/s is a
#: flood a 2-core machine can generate beside the server; the PNG health requests go at 10/s so that 30 of them
#: span 3 s of the victim's life, as in the issue's measurement.
CASES: dict[str, tuple[int, int, float]] = {
    "zstd_flood": (10_000, 1_000, 2000.0),
    "valid_flood": (10_000, 1_000, 2000.0),
    "health_png": (30, 5, 10.0),
}
_MODEL = Path(__file__).resolve().parents[1] / "policy" / "models" / "reach-touch-v1.yaml"
_SHAPE = (480, 640, 3)


def _observation(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    xyz = rng.uniform(-1.0, 1.0, _SHAPE).astype(np.float32)
    xyz[::7] = np.nan  # invalid depth, as in real XYZ maps
    return {
        "front/rgb": rng.integers(0, 256, _SHAPE, dtype=np.uint8),
        "front/xyz": xyz,
        "state": np.zeros(11, np.float32),
    }


def _manifest(folder: Path) -> Path:
    data = yaml.safe_load(_MODEL.read_text())
    data["onnx"] = str(_MODEL.with_name(data["onnx"]))
    data["compression"] = {"front/rgb": "png", "front/xyz": "zstd"}
    path = folder / "hostile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def start_ready_subprocess(
    cmd: list[str], what: str, env: dict[str, str] | None = None, **popen: Any
) -> tuple[subprocess.Popen[str], str]:
    """Start ``cmd``; wait for its first stdout line ``READY <endpoint>``; return (process, endpoint)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env, **popen)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY "):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{what} failed to start (got {line!r})")
    return proc, line.split()[1]


def stop_subprocess(proc: subprocess.Popen[str], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; always reaps the process."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


# ------------------------------------------------------------------------------------------------ attacker


def _attack_frames(case: str) -> tuple[dict[str, Any], list[bytes]]:
    """(header template, array frames) of one hostile request of ``case``."""
    from robot_stack.transport.codecs import encode_array
    from robot_stack.transport.protocol import PROTOCOL_VERSION

    head: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "kind": "infer",
        "id": 0,
        "robot": "",
        "model": "",
        "t_send_ns": 0,
        "timeout_ms": 0.0,
        "meta": {},
    }
    if case == "zstd_flood":
        spec = {"name": "obs", "dtype": "float32", "shape": list(_SHAPE), "codec": "zstd"}
        return {**head, "arrays": [spec]}, [encode_array("zstd", np.zeros(_SHAPE, np.float32))]
    if case == "valid_flood":
        specs = [
            {"name": "front/rgb", "dtype": "uint8", "shape": list(_SHAPE), "codec": "png"},
            {"name": "front/xyz", "dtype": "float32", "shape": list(_SHAPE), "codec": "zstd"},
            {"name": "state", "dtype": "float32", "shape": [11]},
        ]
        frames = [
            encode_array("png", np.zeros(_SHAPE, np.uint8)),
            encode_array("zstd", np.zeros(_SHAPE, np.float32)),
            np.zeros(11, np.float32).tobytes(),
        ]
        return {**head, "arrays": specs}, frames
    if case == "health_png":
        import io

        from PIL import Image

        png = io.BytesIO()  # the attacker's own encoder settings: maximal compression (~62 KB)
        Image.fromarray(np.zeros((8000, 8000), np.uint8)).save(png, format="PNG", compress_level=9)
        spec = {"name": "img", "dtype": "uint8", "shape": [8000, 8000], "codec": "png"}
        return {**head, "kind": "health", "arrays": [spec]}, [png.getvalue()]
    raise ValueError(f"unknown case {case!r}; cases: {sorted(CASES)}")


def attack(
    endpoint: str,
    prepared: tuple[dict[str, Any], list[bytes]],
    count: int,
    rate_hz: float,
    drain_s: float = 3.0,
) -> dict[str, Any]:
    """Send ``count`` requests (``prepared`` = :func:`_attack_frames` of the case) at ``rate_hz`` from one new
    DEALER, reading answers as they come until all are answered or none came for ``drain_s``; return what was
    sent, the answers by error code (``reply`` for successes, ``unanswered`` for the rest: a muted connection's
    messages) and ``t_active_end``, the ``time.monotonic()`` of the last send or answer."""
    import zmq

    from robot_stack.transport.protocol import decode

    template, arrays = prepared
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    sock.connect(endpoint)
    codes: Counter[str] = Counter()
    wire = 0

    def receive(timeout_ms: int) -> bool:
        nonlocal t_active
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return False
        msg = decode(sock.recv_multipart(copy=False))
        codes["reply" if msg.kind == "reply" else msg.error_code] += 1
        t_active = time.monotonic()
        return True

    t0 = time.perf_counter()
    t_active = time.monotonic()  # last send or answer (CLOCK_MONOTONIC: comparable across processes)
    for i in range(count):
        head = msgpack.packb({**template, "id": i + 1, "robot": f"hostile-{i}", "t_send_ns": time.monotonic_ns()})
        frames = [head, *arrays]
        wire += sum(len(f) for f in frames)
        sock.send_multipart(frames, copy=False)
        t_active = time.monotonic()
        while receive(0):
            pass
        while (wait := t0 + (i + 1) / rate_hz - time.perf_counter()) > 0:  # pace; read answers meanwhile
            receive(max(1, int(wait * 1e3)))
    t_sent = time.perf_counter() - t0
    last = time.perf_counter()
    while sum(codes.values()) < count and time.perf_counter() - last < drain_s:
        if receive(100):
            last = time.perf_counter()
    sock.close(0)
    answered = sum(codes.values())
    return {
        "sent": count,
        "bytes_per_request": round(wire / max(count, 1)),
        "send_s": round(t_sent, 3),
        "answers": dict(sorted(codes.items())) | ({"unanswered": count - answered} if answered < count else {}),
        "t_active_end": t_active,
    }


# ------------------------------------------------------------------------------------------------- victim


class _Victim:
    """A well-behaved robot: one observation every ``1 / VICTIM_RATE_HZ`` s; records round trips per phase."""

    def __init__(self, endpoint: str) -> None:
        from robot_stack.transport.client import PolicyClient

        self.client = PolicyClient(endpoint, "victim", timeout_s=2.0)
        self.obs = _observation()
        self.errors: Counter[str] = Counter()

    def run_for(self, stop: Callable[[], bool]) -> list[tuple[float, float, bool]]:
        """Send at the victim rate until ``stop()``; return (send time ``time.monotonic()``, seconds to the
        answer, succeeded) per call. A failed call (timeout, error) counts with the time it took to fail: that is
        what the robot waited."""
        samples: list[tuple[float, float, bool]] = []
        period = 1.0 / VICTIM_RATE_HZ
        t_next = time.monotonic()
        while not stop():
            t0 = time.monotonic()
            ok = True
            try:
                self.client.infer(self.obs)
            except Exception as exc:  # counted and reported, never hidden
                self.errors[getattr(exc, "code", type(exc).__name__)] += 1
                ok = False
            samples.append((t0, time.monotonic() - t0, ok))
            t_next = max(t_next + period, time.monotonic())
            time.sleep(max(0.0, t_next - time.monotonic()))
        return samples


def _rss_mb(pid: int) -> float:
    from robot_stack.transport.memory import rss_bytes

    return rss_bytes(pid) / 2**20


class _RssSampler(threading.Thread):
    """Samples the server's RSS every 20 ms; kills it above the guard."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.peak_mb = 0.0
        self.killed = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(0.02):
            try:
                rss = _rss_mb(self.proc.pid)
            except OSError:
                return
            self.peak_mb = max(self.peak_mb, rss)
            if rss * 2**20 > RSS_GUARD_BYTES:
                self.killed = True
                self.proc.kill()
                return


def _flood(
    attacker: subprocess.Popen[str],
    endpoint: str,
    case: str,
    count: int,
    drain_s: float,
    victim: _Victim,
    abort: Callable[[], bool],
) -> tuple[list[tuple[float, float, bool]], dict[str, Any]]:
    """Have the attacker flood ``endpoint`` (``"decoy"``: its own sink) while the victim runs; return the victim's
    calls and the attacker's JSON result (plus ``rate_hz``)."""
    assert attacker.stdin is not None and attacker.stdout is not None
    attacker.stdin.write(f"{endpoint} {case} {count} {CASES[case][2]} {drain_s}\n")
    attacker.stdin.flush()
    answer: list[str] = []
    reader = threading.Thread(target=lambda: answer.append(attacker.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    calls = victim.run_for(lambda: not reader.is_alive() or abort())
    reader.join(120)
    return calls, {"rate_hz": CASES[case][2], **json.loads(answer[0])}


def _queue_empty(victim: _Victim) -> bool:
    try:
        return int(victim.client.health(timeout_s=2.0).get("queued", 0)) == 0
    except Exception:
        return False


def _run_case(
    case: str,
    count: int,
    endpoint: str,
    proc: subprocess.Popen[str],
    attacker: subprocess.Popen[str],
    victim: _Victim,
    quiet_s: float,
    drain_s: float,
    settle_s: float,
    log: Path,
) -> dict[str, Any]:
    assert attacker.stdin is not None and attacker.stdout is not None
    t_quiet = time.monotonic() + quiet_s
    quiet = victim.run_for(lambda: time.monotonic() > t_quiet)
    rss_idle = _rss_mb(proc.pid)
    log_start = len(log.read_text().splitlines())
    sampler = _RssSampler(proc)
    sampler.start()
    # Decoy: the same flood at a sink in the attacker's own process (never read): what the attacker's CPU alone
    # costs the victim on this machine. Then the attack on the server.
    decoy, _ = _flood(attacker, "decoy", case, count, 0.0, victim, lambda: False)
    during, result = _flood(attacker, endpoint, case, count, drain_s, victim, lambda: sampler.killed)
    sampler.stop_event.set()
    sampler.join()
    t_end = result.pop("t_active_end")
    under_attack = [s for s in during if s[0] <= t_end]  # not the calls after the attack and its answers ended
    if sampler.killed:
        return {**result, "server_killed_above_rss_mb": RSS_GUARD_BYTES / 2**20, "rss_idle_mb": round(rss_idle, 1)}
    t_wait = time.monotonic() + 60
    while not _queue_empty(victim) and time.monotonic() < t_wait:
        time.sleep(0.1)
    time.sleep(settle_s)  # the server trims its heap once its queue is empty after a burst (at most once a second)
    rss_after = _rss_mb(proc.pid)
    quiet_stats = latency_stats(np.asarray([s[1] for s in quiet] or [np.nan]))
    decoy_stats = latency_stats(np.asarray([s[1] for s in decoy] or [np.nan]))
    attack_stats = latency_stats(np.asarray([s[1] for s in under_attack] or [np.nan]))
    return {
        **result,
        "rss_idle_mb": round(rss_idle, 1),
        "rss_peak_mb": round(max(sampler.peak_mb, rss_after), 1),
        "rss_after_mb": round(rss_after, 1),
        "rss_growth_mb": round(rss_after - rss_idle, 1),
        "server_log_lines": len(log.read_text().splitlines()) - log_start,
        "victim_quiet_p50_ms": quiet_stats["p50_ms"],
        "victim_quiet_p99_ms": quiet_stats["p99_ms"],
        "victim_decoy_p50_ms": decoy_stats["p50_ms"],
        "victim_decoy_p99_ms": decoy_stats["p99_ms"],
        "victim_attack_p50_ms": attack_stats["p50_ms"],
        "victim_attack_p99_ms": attack_stats["p99_ms"],
        "victim_calls": [len(quiet), len(decoy), len(under_attack)],
        "victim_failed": [
            sum(not s[2] for s in quiet),
            sum(not s[2] for s in decoy),
            sum(not s[2] for s in under_attack),
        ],
        "victim_p50_ratio": round(attack_stats["p50_ms"] / quiet_stats["p50_ms"], 3),
        "victim_p99_ratio": round(attack_stats["p99_ms"] / quiet_stats["p99_ms"], 3),
        "victim_p99_ratio_vs_decoy": round(attack_stats["p99_ms"] / decoy_stats["p99_ms"], 3),
    }


def run_cases(
    counts: dict[str, int], quiet_s: float = 3.0, drain_s: float = 3.0, settle_s: float = 1.2
) -> dict[str, Any]:
    """Start the server and the attacker, then run each case of ``counts`` (case -> requests) in order; return
    the figures. ``quiet_s``: the victim's quiet phase before each case; ``drain_s``: how long the attacker waits
    for answers that may never come (muted); ``settle_s``: wait after the queue drained before RSS is read."""
    out: dict[str, Any] = {
        "model": "reach-touch-v1 (ORT cpu, 1 thread), compression front/rgb png + front/xyz zstd",
        "victim_rate_hz": VICTIM_RATE_HZ,
    }
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="robot-stack-bench-hostile-") as tmp:
        manifest = _manifest(Path(tmp))
        log = Path(tmp) / "server.log"
        cmd = [sys.executable, "-m", "robot_stack.policy.service", "--manifest", str(manifest)]
        cmd += ["--bind", "tcp://127.0.0.1:*", "--provider", "cpu", "--threads", "1"]
        # The attacker process prepares every case's messages (imports, encoding) while the server starts: that
        # CPU is not part of any attack.
        attack_cmd = [sys.executable, "-m", "robot_stack.bench.hostile", "--attacker", *counts]
        attacker = subprocess.Popen(attack_cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        with log.open("w") as stderr:
            proc, endpoint = start_ready_subprocess(cmd, "hostile bench server", env, stderr=stderr)
        victim = _Victim(endpoint)
        try:
            assert attacker.stdout is not None
            if not attacker.stdout.readline().startswith("READY"):
                raise RuntimeError("hostile bench attacker failed to start")
            victim.run_for(_countdown(10))  # connect + warm up
            for case, count in counts.items():
                out[case] = _run_case(case, count, endpoint, proc, attacker, victim, quiet_s, drain_s, settle_s, log)
                if proc.poll() is not None:
                    out["server_died"] = f"after {case} (exit {proc.returncode})"
                    break
            out["victim_errors"] = dict(victim.errors)
        finally:
            victim.client.close()
            if attacker.stdin is not None:
                attacker.stdin.close()
            stop_subprocess(attacker)
            stop_subprocess(proc)
    return out


def _countdown(n: int) -> Callable[[], bool]:
    left = [n]

    def stop() -> bool:
        left[0] -= 1
        return left[0] < 0

    return stop


@register("hostile")
def run(quick: bool) -> dict[str, Any]:
    counts = {case: quick_n if quick else full_n for case, (full_n, quick_n, _) in CASES.items()}
    if quick:  # a smoke test: short phases, RSS read soon after the burst
        return run_cases(counts, quiet_s=0.5, drain_s=0.3, settle_s=0.3)
    return run_cases(counts)


def main(argv: list[str] | None = None) -> int:
    """The attacker process: prepare the cases' messages, print READY, then per stdin line ``ENDPOINT CASE COUNT
    RATE DRAIN_S`` attack (``ENDPOINT`` ``decoy``: a sink socket of this process that never reads) and print one
    JSON line."""
    parser = argparse.ArgumentParser(prog="python -m robot_stack.bench.hostile")
    parser.add_argument("--attacker", nargs="+", metavar="CASE", required=True, choices=sorted(CASES))
    args = parser.parse_args(argv)
    import zmq

    prepared = {case: _attack_frames(case) for case in args.attacker}
    sink = zmq.Context.instance().socket(zmq.ROUTER)  # the decoy: receives (libzmq does the work), never read
    sink.setsockopt(zmq.LINGER, 0)
    sink.setsockopt(zmq.RCVHWM, 0)
    sink_endpoint = f"tcp://127.0.0.1:{sink.bind_to_random_port('tcp://127.0.0.1')}"
    print("READY attacker", flush=True)
    for line in sys.stdin:
        endpoint, case, count, rate, drain_s = line.split()
        target = sink_endpoint if endpoint == "decoy" else endpoint
        result = attack(target, prepared[case], int(count), float(rate), float(drain_s))
        print(json.dumps(result), flush=True)
    sink.close(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
