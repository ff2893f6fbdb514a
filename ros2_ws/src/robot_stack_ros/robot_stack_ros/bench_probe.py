"""Measurement processes for ``robot-stack bench ros`` (run as ``python -m robot_stack_ros.bench_probe <mode>``).

Modes (each prints one JSON line on stdout when done):

* ``image_pub --count N --rate R --reliability best_effort|reliable``: publishes N 640x480 RGB-D pairs (rgb8 +
  16UC1) at R Hz, each stamped with its send time;
* ``image_sub --count N --timeout S --reliability ...``: receives pairs, reports rate and stamp→receive latency
  (one host: stamps and receive times are on the same wall clock);
* ``echo``: a state→command relay: each ``/bench/joint_states`` becomes a ``/bench/commands`` Float64MultiArray
  of its positions (what a controller that reacts to state does; position[0] carries the sequence number);
* ``rtt --count N --rate R``: publishes JointState, measures the round trip to the relay's command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable

import numpy as np
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import QoSHistoryPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from robot_stack_ros.common import STATE_QOS, image_msg, stamp, stamp_ns


def _image_qos(reliability: str) -> QoSProfile:
    rel = QoSReliabilityPolicy.RELIABLE if reliability == "reliable" else QoSReliabilityPolicy.BEST_EFFORT
    return QoSProfile(depth=5, reliability=rel, history=QoSHistoryPolicy.KEEP_LAST)


def _spin_until(node: Node, done: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done():  # type: ignore[operator]
            rclpy.spin_once(node, timeout_sec=0.01)
    except ExternalShutdownException:  # SIGINT/SIGTERM: finish and report
        pass


def image_pub(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_image_pub")
    qos = _image_qos(args.reliability)
    color_pub = node.create_publisher(Image, "/bench/color", qos)
    depth_pub = node.create_publisher(Image, "/bench/depth", qos)
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(300, 3000, (480, 640), dtype=np.uint16)
    _spin_until(node, lambda: color_pub.get_subscription_count() > 0, 20.0)
    time.sleep(0.5)  # let discovery settle on both topics
    period = 1.0 / args.rate
    t0 = time.monotonic()
    for i in range(args.count):
        delay = t0 + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t = time.time_ns()
        color_pub.publish(image_msg(color, "rgb8", t, "bench"))
        depth_pub.publish(image_msg(depth, "16UC1", t, "bench"))
    time.sleep(1.0)
    return {"sent": args.count, "send_rate_hz": args.count / (time.monotonic() - t0 - 1.0)}


def image_sub(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_image_sub")
    qos = _image_qos(args.reliability)
    color: dict[int, int] = {}  # stamp -> receive time of the half whose partner has not arrived
    depth: dict[int, int] = {}
    pairs: list[tuple[float, float]] = []  # (receive monotonic s, latency s)

    def pairing(mine: dict[int, int], partner: dict[int, int]) -> Callable[[Image], None]:
        """Callback for one half: completes a pair when the partner half with the same stamp has arrived."""

        def on_half(msg: Image) -> None:
            now = time.time_ns()
            t = stamp_ns(msg.header.stamp)
            if t in partner:
                pairs.append((time.monotonic(), (max(now, partner.pop(t)) - t) / 1e9))
            else:
                mine[t] = now

        return on_half

    node.create_subscription(Image, "/bench/color", pairing(color, depth), qos)
    node.create_subscription(Image, "/bench/depth", pairing(depth, color), qos)
    print("READY", flush=True)
    # done when every pair arrived, or 2 s after the last arrival (best effort loses some)
    _spin_until(
        node, lambda: len(pairs) >= args.count or (pairs and time.monotonic() - pairs[-1][0] > 2.0), args.timeout
    )
    lat = np.array([p[1] for p in pairs]) if pairs else np.array([np.nan])
    span = pairs[-1][0] - pairs[0][0] if len(pairs) > 1 else float("nan")
    return {
        "received": len(pairs),
        "rate_hz": (len(pairs) - 1) / span if len(pairs) > 1 else 0.0,
        "latency_p50_ms": float(np.percentile(lat, 50) * 1e3),
        "latency_p99_ms": float(np.percentile(lat, 99) * 1e3),
    }


def echo(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_echo")
    pub = node.create_publisher(Float64MultiArray, "/bench/commands", STATE_QOS)
    n = [0]

    def on_state(msg: JointState) -> None:
        pub.publish(Float64MultiArray(data=list(msg.position)))
        n[0] += 1

    node.create_subscription(JointState, "/bench/joint_states", on_state, STATE_QOS)
    print("READY", flush=True)
    _spin_until(node, lambda: False, args.timeout)
    return {"echoed": n[0]}


def rtt(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_rtt")
    pub = node.create_publisher(JointState, "/bench/joint_states", STATE_QOS)
    sent: dict[int, int] = {}
    rtts: list[float] = []

    def on_command(msg: Float64MultiArray) -> None:
        seq = int(msg.data[0])
        if seq in sent:
            rtts.append((time.perf_counter_ns() - sent.pop(seq)) / 1e9)

    node.create_subscription(Float64MultiArray, "/bench/commands", on_command, STATE_QOS)
    _spin_until(node, lambda: pub.get_subscription_count() > 0 and node.count_publishers("/bench/commands") > 0, 20)
    time.sleep(0.5)
    names = [f"panda_joint{i}" for i in range(1, 8)]
    period = 1.0 / args.rate
    for i in range(args.count):
        msg = JointState(name=names, position=[float(i)] * 7, velocity=[0.0] * 7)  # position[0] = sequence number
        msg.header.stamp = stamp(time.time_ns())
        sent[i] = time.perf_counter_ns()
        pub.publish(msg)
        n = len(rtts)
        _spin_until(node, lambda: len(rtts) > n, period)  # noqa: B023 - evaluated within this iteration
    arr = np.array(rtts) if rtts else np.array([np.nan])
    return {
        "sent": args.count,
        "received": len(rtts),
        "rtt_p50_ms": float(np.percentile(arr, 50) * 1e3),
        "rtt_p99_ms": float(np.percentile(arr, 99) * 1e3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robot_stack_ros.bench_probe")
    parser.add_argument("mode", choices=["image_pub", "image_sub", "echo", "rtt"])
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--reliability", default="best_effort", choices=["best_effort", "reliable"])
    args = parser.parse_args(argv)
    rclpy.init()
    try:
        result = {"image_pub": image_pub, "image_sub": image_sub, "echo": echo, "rtt": rtt}[args.mode](args)
    finally:
        rclpy.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
