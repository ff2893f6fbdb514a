"""``robot-stack bench ros``: ROS 2 transport figures of the graph, against raw ZeroMQ in the same run.

* **image** (topics mode): 640x480 RGB-D (rgb8 + 16UC1 ``sensor_msgs/Image`` pairs, 1.5 MB) captured at 30 Hz on a
  camera thread and published by the camera node's publishers with the shipped image QoS profiles (``sensor_data``:
  best effort; ``reliable``: :data:`robot_stack_ros.common.RELIABLE_IMAGE_QOS`) to another process that takes them
  as the policy client does (paired by stamp): the fraction of pairs delivered, stamp→pair latency p50/p99, and the
  **frame age at the policy** p50/p99 (the age of the newest frame at a policy loop's reads, ~30 per second at
  random phase). Baseline: the same bytes as a two-frame ZeroMQ PUSH/PULL message between two processes at the same
  rate.
* **composed mode**: the same camera thread inside the policy's process (what the policy client does with
  ``camera_source`` set): the frame age at the policy p50/p99 without DDS on its path, while the frames are still
  republished (reliable) for an observer process, whose delivered fraction is reported.
* **executor**: a node's inputs (100 Hz ``JointState`` + reliable 640x480 RGB-D pairs at 10 Hz, one mutually
  exclusive callback group, two threads) spun by rclpy's own ``MultiThreadedExecutor`` and by the nodes'
  :class:`~robot_stack_ros.spin.NodeExecutor`, one after the other in this run: the fraction of joint states taken
  (the depth-5 state queue replaces what the node does not take in time), the images' age when taken, and the
  subscriber's CPU time. rclpy 9.1.2's executor resubmits queued callbacks and busy-loops (ros2/rclpy#1452).
* **state→command round trip**: a ``JointState`` goes out, a relay process answers each with a
  ``Float64MultiArray`` command (as a controller reacting to state does), the sender measures the round trip.
  Baseline: the same values through a ZeroMQ DEALER/ROUTER echo.

Why reliable used to lose pairs (0.933-0.983 delivered): the benchmark's publisher waited for the colour topic only
(depth halves published before the depth subscription matched were lost) and exited 1 s after its last frame without
waiting for acknowledgements (the last frames, still being repaired, were lost); and KEEP_LAST history bounds
"reliable": when the Python subscriber falls a few frames behind (a busy core), a new sample replaces the oldest
unread one — at the nodes' old depth 2, 9-18 % of pairs were lost beside a CPU hog. The publisher now waits for both
subscriptions and for every acknowledgement, and the shipped reliable profile keeps 30 frames (1 s at 30 Hz).

The ROS sides run ``robot_stack_ros.bench_probe`` (rclpy) in subprocesses on a private loopback domain; this module
never imports rclpy. ``ratio_*`` = p50(ROS) / p50(ZeroMQ). Without rclpy the result says ``skipped``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np
import zmq

from robot_stack.bench.registry import register
from robot_stack.graph.spec import PACKAGE_DIR
from robot_stack.metrics import latency_stats

RATE_HZ = 30.0


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_DIR), os.environ.get("PYTHONPATH", "")) if p),
        "ROS_DOMAIN_ID": str(1 + (os.getpid() + 25) % 101),  # 1..101: safe with every DDS port mapping
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "PYTHONUNBUFFERED": "1",
    }


def _spawn(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, text=True, env=_env())


def _result(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout_s)
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            return dict(json.loads(line))
    raise RuntimeError(f"benchmark process {proc.args} printed no result (exit {proc.returncode})")


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if line != "READY":
        proc.kill()
        raise RuntimeError(f"benchmark process {proc.args} did not start: {line!r}")


def _ros_frames(count: int, qos: str, composed: bool) -> dict[str, Any]:
    """One camera process and one policy-side process (topics mode: the policy; composed: an observer)."""
    probe = ["-m", "robot_stack_ros.bench_probe"]
    timeout = count / RATE_HZ + 30.0
    sub = _spawn(*probe, "policy", "--count", str(count), "--timeout", str(timeout), "--qos", qos)
    _wait_ready(sub)
    cam = [*probe, "camera", "--count", str(count), "--rate", str(RATE_HZ), "--qos", qos]
    sent = _result(_spawn(*cam, *(["--policy"] if composed else [])), timeout + 30)
    got = _result(sub, timeout + 30)
    return {"camera": sent, "policy": got, "delivered": round(got["received"] / max(1, sent["sent"]), 3)}


def _zmq_images(count: int) -> dict[str, Any]:
    ctx = zmq.Context.instance()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    pub = _spawn("-m", "robot_stack.bench.ros", "zmq_push", str(port), str(count))
    lat, arrivals = [], []
    pull.setsockopt(zmq.RCVTIMEO, 20_000)
    try:
        for _ in range(count):
            parts = pull.recv_multipart(copy=False)
            now = time.time_ns()
            arrivals.append(time.monotonic())
            lat.append((now - int(bytes(parts[0].buffer))) / 1e9)
    except zmq.Again:
        pass
    finally:
        pub.wait(30)
        pull.close(0)
    rate = (len(arrivals) - 1) / (arrivals[-1] - arrivals[0]) if len(arrivals) > 1 else 0.0
    stats = latency_stats(np.array(lat), prefix="latency_") if lat else {}
    return {"received": len(lat), "rate_hz": rate, **stats}


def _zmq_push(port: int, count: int) -> None:
    """Subprocess side of the image baseline: the same 1.5 MB pair as two frames at RATE_HZ."""
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(300, 3000, (480, 640), dtype=np.uint16)
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    time.sleep(0.3)
    t0 = time.monotonic()
    for i in range(count):
        delay = t0 + i / RATE_HZ - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        push.send_multipart([str(time.time_ns()).encode(), color.tobytes(), depth.tobytes()], copy=False)
    push.close(linger=5000)


def _zmq_rtt(count: int) -> dict[str, Any]:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    echo = _spawn("-m", "robot_stack.bench.ros", "zmq_echo", str(port), str(count))
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    rtts = []
    try:
        ident, _ = router.recv_multipart()  # the echo's hello
        state = np.zeros(15, np.float64)
        for i in range(count):
            state[0] = i
            t0 = time.perf_counter_ns()
            router.send_multipart([ident, state.tobytes()])
            router.recv_multipart()
            rtts.append((time.perf_counter_ns() - t0) / 1e9)
            time.sleep(max(0.0, 1.0 / 100.0 - rtts[-1]))
    finally:
        echo.wait(30)
        dealer.close(0)
        router.close(0)
    return latency_stats(np.array(rtts), prefix="rtt_")


def _zmq_echo(port: int, count: int) -> None:
    """Subprocess side of the round-trip baseline: answer each state with a command of the same values."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send_multipart([b"hello"])
    for _ in range(count):
        (msg,) = dealer.recv_multipart()
        dealer.send_multipart([np.frombuffer(msg, np.float64).copy().tobytes()])
    dealer.close(linger=1000)


def _ros_rtt(count: int) -> dict[str, Any]:
    probe = ["-m", "robot_stack_ros.bench_probe"]
    echo = _spawn(*probe, "echo", "--timeout", str(count / 100.0 + 30.0))
    _wait_ready(echo)
    rtt = _result(_spawn(*probe, "rtt", "--count", str(count), "--rate", "100"), count / 100.0 + 60)
    echo.terminate()
    echo.wait(10)
    return rtt


def _executor_flood(executor: str, seconds: float) -> dict[str, Any]:
    """One sink process spun by ``executor`` (rclpy | node) taking a flood from another process."""
    probe = ["-m", "robot_stack_ros.bench_probe"]
    sink = _spawn(*probe, "sink", "--executor", executor, "--timeout", str(seconds + 60.0))
    _wait_ready(sink)
    sent = _result(_spawn(*probe, "flood", "--seconds", str(seconds), "--rate", "10"), seconds + 60.0)
    taken = _result(sink, seconds + 90.0)
    return {
        "states_delivered": round(taken["states"] / max(1, sent["states_sent"]), 3),
        "images_delivered": round(taken["images"] / max(1, sent["images_sent"]), 3),
        "image_age_p50_ms": round(taken["image_age_p50_ms"], 1),
        "image_age_p99_ms": round(taken["image_age_p99_ms"], 1),
        "cpu_s": round(taken["cpu_s"], 2),
    }


@register("ros")
def run(quick: bool = False) -> dict[str, Any]:
    """Image delivery/latency and frame age at the policy (topics and composed modes), state→command round trip
    through ROS 2, with ZeroMQ baselines."""
    if importlib.util.find_spec("rclpy") is None:
        return {"skipped": "rclpy is not installed (pip install -e .[ros])"}
    n_img = 60 if quick else 300
    n_rtt = 100 if quick else 1000
    best = _ros_frames(n_img, "sensor_data", composed=False)
    reliable = _ros_frames(n_img, "reliable", composed=False)
    composed = _ros_frames(n_img, "reliable", composed=True)
    zimg = _zmq_images(n_img)
    rtt = _ros_rtt(n_rtt)
    zrtt = _zmq_rtt(n_rtt)
    flood_s = 4.0 if quick else 10.0
    executors = {name: _executor_flood(name, flood_s) for name in ("rclpy", "node")}
    nan = float("nan")

    def r(x: float) -> float:
        return round(float(x), 3)

    return {
        "image_size": "640x480 rgb8 + 16UC1",
        "image_publish_hz": RATE_HZ,
        "image_capture_rate_hz": r(reliable["camera"]["capture_rate_hz"]),
        "image_best_effort_delivered": best["delivered"],
        "image_best_effort_latency_p50_ms": r(best["policy"]["latency_p50_ms"]),
        "image_best_effort_latency_p99_ms": r(best["policy"]["latency_p99_ms"]),
        "image_reliable_delivered": reliable["delivered"],
        "image_reliable_acked": reliable["camera"]["acked"],
        "image_reliable_latency_p50_ms": r(reliable["policy"]["latency_p50_ms"]),
        "image_reliable_latency_p99_ms": r(reliable["policy"]["latency_p99_ms"]),
        "policy_frame_age_topics_p50_ms": r(reliable["policy"].get("age_p50_ms", nan)),
        "policy_frame_age_topics_p99_ms": r(reliable["policy"].get("age_p99_ms", nan)),
        "policy_frame_age_composed_p50_ms": r(composed["camera"].get("age_p50_ms", nan)),
        "policy_frame_age_composed_p99_ms": r(composed["camera"].get("age_p99_ms", nan)),
        "policy_frames_topics": reliable["policy"]["policy_frames"],
        "policy_frames_composed": composed["camera"]["policy_frames"],
        "composed_observer_delivered": composed["delivered"],
        "image_zmq_rate_hz": r(zimg["rate_hz"]),
        "image_zmq_latency_p50_ms": r(zimg.get("latency_p50_ms", nan)),
        "image_zmq_latency_p99_ms": r(zimg.get("latency_p99_ms", nan)),
        "image_ratio_best_effort_vs_zmq": r(best["policy"]["latency_p50_ms"] / zimg.get("latency_p50_ms", nan)),
        "image_ratio_reliable_vs_zmq": r(reliable["policy"]["latency_p50_ms"] / zimg.get("latency_p50_ms", nan)),
        "rtt_state_to_command_p50_ms": r(rtt["rtt_p50_ms"]),
        "rtt_state_to_command_p99_ms": r(rtt["rtt_p99_ms"]),
        "rtt_received": rtt["received"],
        "rtt_sent": rtt["sent"],
        "rtt_zmq_p50_ms": r(zrtt["rtt_p50_ms"]),
        "rtt_zmq_p99_ms": r(zrtt["rtt_p99_ms"]),
        "rtt_ratio_vs_zmq": r(rtt["rtt_p50_ms"] / zrtt["rtt_p50_ms"]),
        **{f"executor_{name}_{key}": value for name, res in executors.items() for key, value in res.items()},
        "executor_node_vs_rclpy_states_delivered_ratio": r(
            executors["node"]["states_delivered"] / max(executors["rclpy"]["states_delivered"], 1e-3)
        ),
    }


if __name__ == "__main__":
    mode, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    {"zmq_push": _zmq_push, "zmq_echo": _zmq_echo}[mode](port, count)
