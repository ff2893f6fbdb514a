"""Measurement processes for ``robot-stack bench ros`` (run as ``python -m robot_stack_ros.bench_probe <mode>``).

Modes (each prints one JSON line on stdout when done):

* ``camera --count N --rate R --qos reliable|sensor_data [--policy]``: a 640x480 RGB-D frame source read at R Hz on
  its own thread (:class:`~robot_stack.cameras.threaded.ThreadedCamera`, the composed mode's camera) whose frames are
  published on ``/camera/color/image_raw`` + ``/camera/aligned_depth_to_color/image_raw`` by the camera node's
  publishers (:class:`~robot_stack_ros.camera_node.CameraStreams`, same conversion) with the shipped image QoS; with
  ``--policy`` a policy loop in the same process reads the newest frame in-process (composed mode) and reports
  the frame age at its reads (:class:`PolicyLoop`); waits until every frame is acknowledged before it exits;
* ``policy --count N --timeout S --qos ...``: what the policy client does with the topics (topics mode): both images
  into a :class:`~robot_stack.graph.streams.StreamedCamera` (paired by stamp), a policy loop reading the newest
  frame; reports the pairs delivered, stamp→pair latency and the frame age at the policy's reads (one host: stamps
  and receive times are on the same clocks);
* ``echo``: a state→command relay: each ``/bench/joint_states`` becomes a ``/bench/commands`` Float64MultiArray
  of its positions (what a controller that reacts to state does; position[0] carries the sequence number);
* ``rtt --count N --rate R``: publishes JointState, measures the round trip to the relay's command;
* ``sink --executor rclpy|node``: a node's inputs (one mutually exclusive group: 100 Hz ``JointState`` at
  ``STATE_QOS``, reliable RGB-D images) spun by two threads of rclpy's ``MultiThreadedExecutor`` or of
  :class:`~robot_stack_ros.spin.NodeExecutor`; reports the states and images taken, the images' age when taken and
  the process' CPU time; ends 3 s after the last message;
* ``flood --seconds S --rate R``: what the sink takes: joint states at 100 Hz and RGB-D pairs at R Hz for S s.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from robot_stack.cameras.base import Camera
from robot_stack.graph.diagnostics import StreamMonitor
from robot_stack.graph.streams import StreamedCamera
from robot_stack.metrics import latency_stats
from robot_stack.types import CameraModel, Frame
from robot_stack_ros.camera_node import publishing_camera
from robot_stack_ros.common import (
    RELIABLE_IMAGE_QOS,
    STATE_QOS,
    image_msg,
    image_qos,
    stamp,
    stamp_ns,
    subscribe_camera,
)

#: the policy loop's mean read rate in both modes, Hz
POLICY_HZ = 30.0


def _spin_until(node: Node, done: object, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not done():  # type: ignore[operator]
            rclpy.spin_once(node, timeout_sec=0.01)
    except ExternalShutdownException:  # SIGINT/SIGTERM: finish and report
        pass


class BenchCamera(Camera):
    """A benchmark frame source: the same 640x480 RGB (uint8) + depth (uint16 mm) arrays, a new capture time and
    sequence number at each read (what a driver hands over; the bytes are what the transports carry)."""

    camera_id = "front"

    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        self.depth = rng.integers(300, 3000, (480, 640), dtype=np.uint16)
        self.seq = 0
        self._model = CameraModel.from_fovy(640, 480, 58.0)

    def start(self) -> None:
        """Nothing to open."""

    def stop(self) -> None:
        """Nothing to close."""

    @property
    def model(self) -> CameraModel:
        return self._model

    def read(self) -> Frame:
        self.seq += 1
        return Frame(self.color, self.depth, 0.001, time.monotonic_ns(), self.camera_id, self.seq)


class PolicyLoop:
    """A policy's frame intake on its own thread: at random times (mean rate :data:`POLICY_HZ`, so that every phase
    against the camera is sampled) it takes the newest frame and records its age (read time - capture time, s):
    how old the freshest frame a policy cycle can act on is."""

    def __init__(self, camera: Camera) -> None:
        self.camera, self.ages_s, self.frames = camera, [], 0
        self._stop = threading.Event()
        self._rng = np.random.default_rng(1)
        self._thread = threading.Thread(target=self._run, name="bench-policy", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last = 0
        while not self._stop.wait(float(self._rng.uniform(0.5, 1.5)) / POLICY_HZ):
            try:
                frame = self.camera.read()
            except Exception:  # noqa: BLE001 - no frame yet
                continue
            self.ages_s.append((time.monotonic_ns() - frame.t_capture_ns) / 1e9)
            if frame.seq != last:
                last, self.frames = frame.seq, self.frames + 1

    def stop(self) -> dict[str, object]:
        self._stop.set()
        self._thread.join(5.0)
        stats = latency_stats(np.array(self.ages_s), prefix="age_") if self.ages_s else {}
        return {"policy_frames": self.frames, **stats}


def camera(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_camera")
    source = BenchCamera()
    threaded, streams = publishing_camera(node, source, args.rate, "bench", image_qos(args.qos))
    _spin_until(
        node, lambda: streams.color.get_subscription_count() > 0 and streams.depth.get_subscription_count() > 0, 30
    )  # both halves matched: a pair half published before discovery would be lost
    time.sleep(0.5)
    threaded.start()
    policy = PolicyLoop(threaded) if args.policy else None
    t0 = time.monotonic()
    while threaded.stats().frames < args.count and time.monotonic() - t0 < args.count / args.rate + 30:
        time.sleep(0.01)
    threaded.stop()  # no more frames; the observer thread has handed over the last one
    acked = all(pub.wait_for_all_acked(Duration(seconds=10)) for pub in (streams.color, streams.depth))
    stats = threaded.stats()
    out: dict[str, object] = {
        "sent": stats.observed, "captured": stats.frames, "publish_skipped": stats.observer_skipped, "acked": acked,
        "capture_rate_hz": stats.frames / max(1e-9, time.monotonic() - t0),
    }  # fmt: skip
    if policy is not None:
        out.update(policy.stop())
    return out


def policy(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_policy")
    qos = image_qos(args.qos)
    monitor = StreamMonitor("frames", latency_window=100_000)
    cam = StreamedCamera("front", CameraModel.from_fovy(640, 480, 58.0), 0.001, monitor)
    subscribe_camera(node, cam, qos)
    print("READY", flush=True)
    loop = PolicyLoop(cam)
    last = [time.monotonic(), 0]

    def done() -> bool:  # every frame arrived, or none for 3 s after the first (best effort loses some)
        if monitor.count != last[1]:
            last[:] = [time.monotonic(), monitor.count]
        return monitor.count >= args.count or (monitor.count > 0 and time.monotonic() - last[0] > 3.0)

    _spin_until(node, done, args.timeout)
    lat = monitor.latency()  # stamp -> pair complete (both halves here), s
    nan = float("nan")
    return {
        "received": monitor.count, "drops": dict(monitor.drops),
        "latency_p50_ms": lat.get("latency_p50_ms", nan), "latency_p99_ms": lat.get("latency_p99_ms", nan),
        **loop.stop(),
    }  # fmt: skip


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


FLOOD_TOPICS = ("/bench/flood/joint_states", "/bench/flood/color", "/bench/flood/depth")
FLOOD_STATE_HZ = 100.0


def sink(args: argparse.Namespace) -> dict[str, object]:
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from rclpy.executors import MultiThreadedExecutor

    from robot_stack_ros.spin import NodeExecutor

    node = Node("bench_sink")
    group = MutuallyExclusiveCallbackGroup()  # as a node's input group
    states = [0]
    ages_s: list[float] = []
    last = [time.monotonic()]

    def on_state(msg: JointState) -> None:
        states[0] += 1
        last[0] = time.monotonic()

    def on_image(msg: Image) -> None:
        ages_s.append((time.time_ns() - stamp_ns(msg.header.stamp)) / 1e9)
        last[0] = time.monotonic()

    node.create_subscription(JointState, FLOOD_TOPICS[0], on_state, STATE_QOS, callback_group=group)
    for topic in FLOOD_TOPICS[1:]:
        node.create_subscription(Image, topic, on_image, RELIABLE_IMAGE_QOS, callback_group=group)
    executor = (NodeExecutor if args.executor == "node" else MultiThreadedExecutor)(num_threads=2)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    cpu0 = time.process_time()
    spin.start()
    print("READY", flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and not (states[0] and time.monotonic() - last[0] > 3.0):
        time.sleep(0.05)
    cpu_s = time.process_time() - cpu0
    executor.shutdown()
    spin.join(10)
    arr = np.array(ages_s) if ages_s else np.array([np.nan])
    return {
        "states": states[0],
        "images": len(ages_s),
        "cpu_s": cpu_s,
        "image_age_p50_ms": float(np.percentile(arr, 50) * 1e3),
        "image_age_p99_ms": float(np.percentile(arr, 99) * 1e3),
        "image_age_max_ms": float(np.max(arr) * 1e3),
    }


def flood(args: argparse.Namespace) -> dict[str, object]:
    node = Node("bench_flood")
    js_pub = node.create_publisher(JointState, FLOOD_TOPICS[0], STATE_QOS)
    color_pub, depth_pub = (node.create_publisher(Image, t, RELIABLE_IMAGE_QOS) for t in FLOOD_TOPICS[1:])
    pubs = (js_pub, color_pub, depth_pub)
    _spin_until(node, lambda: min(p.get_subscription_count() for p in pubs) > 0, 20)
    time.sleep(0.5)
    rng = np.random.default_rng(0)
    color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    depth = rng.integers(400, 2000, (480, 640), dtype=np.uint16)
    names = [f"panda_joint{i}" for i in range(1, 8)]
    n_states = n_pairs = 0
    t0 = time.monotonic()
    next_pair = t0
    while (now := time.monotonic()) < t0 + args.seconds:
        msg = JointState(name=names, position=[0.0] * 7, velocity=[0.0] * 7)
        msg.header.stamp = stamp(time.time_ns())
        js_pub.publish(msg)
        n_states += 1
        if now >= next_pair:
            t_wall = time.time_ns()
            color_pub.publish(image_msg(color, "rgb8", t_wall, "bench"))
            depth_pub.publish(image_msg(depth, "16UC1", t_wall, "bench"))
            n_pairs += 1
            next_pair += 1.0 / args.rate
        time.sleep(max(0.0, t0 + n_states / FLOOD_STATE_HZ - time.monotonic()))
    time.sleep(1.0)  # the last samples' repairs
    return {"states_sent": n_states, "images_sent": 2 * n_pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robot_stack_ros.bench_probe")
    parser.add_argument("mode", choices=["camera", "policy", "echo", "rtt", "sink", "flood"])
    parser.add_argument("--seconds", type=float, default=8.0, help="flood: how long, s")
    parser.add_argument("--executor", default="node", choices=["rclpy", "node"], help="sink: which executor spins")
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--rate", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--qos", default="reliable", choices=["sensor_data", "reliable"], help="shipped image QoS")
    parser.add_argument("--policy", action="store_true", help="camera: also run the policy loop in-process")
    args = parser.parse_args(argv)
    rclpy.init()
    try:
        modes = {"camera": camera, "policy": policy, "echo": echo, "rtt": rtt, "sink": sink, "flood": flood}
        result = modes[args.mode](args)
    finally:
        rclpy.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
