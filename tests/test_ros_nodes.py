"""Single nodes under real rclpy, driven from the test process: bad input never becomes a command, missing
parameters refuse the start with the reason, the recorder hands episodes to the dataset writer."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import QoSProfile, QoSReliabilityPolicy  # noqa: E402
from ros_graph_probe import ros_env, unique_domain_id  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import SetBool, Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from robot_stack.graph.messages import image_to_fields, mono_to_wall, split_stamp  # noqa: E402
from robot_stack.graph.spec import PACKAGE_DIR  # noqa: E402
from robot_stack.robots import panda  # noqa: E402

RELIABLE = QoSProfile(depth=30, reliability=QoSReliabilityPolicy.RELIABLE)  # the nodes' reliable image QoS


def _node_process(executable: str, domain: int, *ros_args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **ros_env(domain), "PYTHONPATH": str(PACKAGE_DIR), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", f"robot_stack_ros.{executable}", "--ros-args", *ros_args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(2)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.stdout.read() if proc.stdout else ""


@pytest.fixture
def ros_node():
    domain = 1 + (unique_domain_id() + 50) % 101  # not the graph test's domain
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = Node("test_driver", context=ctx)
    executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    yield domain, node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown(context=ctx)


def _stamp(msg, t_mono_ns: int) -> None:
    msg.header.stamp.sec, msg.header.stamp.nanosec = split_stamp(mono_to_wall(t_mono_ns))


def _joint_state(q: np.ndarray, t_mono_ns: int | None = None) -> JointState:
    """A joint state of ``q`` measured at ``t_mono_ns`` (default: now)."""
    msg = JointState(name=list(panda.ARM_JOINTS), position=[float(x) for x in q], velocity=[0.0] * 7)
    _stamp(msg, time.monotonic_ns() if t_mono_ns is None else t_mono_ns)
    return msg


def _spin_for(executor, seconds: float, tick=None) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if tick is not None:
            tick()
        executor.spin_once(timeout_sec=0.01)


@pytest.mark.parametrize(
    ("executable", "missing"), [("policy_client_node", "policy_endpoint"), ("recorder_node", "root")]
)
def test_missing_required_parameter_refuses_to_start_with_the_reason(executable, missing):
    proc = _node_process(executable, unique_domain_id())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert f"refusing to start: parameter '{missing}' is required" in out


def test_executor_never_commands_from_bad_trajectories(ros_node):
    domain, node, executor = ros_node
    proc = _node_process("executor_node", domain, "-p", "rate_hz:=100", "-r", "~/trajectory:=/policy/trajectory")
    try:
        states, commands = [], []
        js_pub = node.create_publisher(JointState, "/joint_states", 5)
        traj_pub = node.create_publisher(JointTrajectory, "/policy/trajectory", 1)
        node.create_subscription(String, "/executor/state", lambda m: states.append(m.data), 10)
        node.create_subscription(
            Float64MultiArray, "/executor/commands", lambda m: commands.append(np.array(m.data)), 10
        )
        diagnostics: dict[str, dict[str, str]] = {}

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        q0 = panda.HOME_Q.copy()
        publish_state = lambda: js_pub.publish(_joint_state(q0))  # noqa: E731

        def wait(pred, timeout_s):
            end = time.monotonic() + timeout_s
            while time.monotonic() < end and not pred():
                _spin_for(executor, 0.02, publish_state)
            return pred()

        assert wait(lambda: states and states[-1] == "idle" and len(commands) > 10, 40), _stop(proc)

        def trajectory(names, rows, dt_s=0.2) -> JointTrajectory:
            msg = JointTrajectory(joint_names=list(names))
            _stamp(msg, time.monotonic_ns() + 50_000_000)
            for k, row in enumerate(rows):
                p = JointTrajectoryPoint(positions=[float(x) for x in row])
                p.time_from_start.sec, p.time_from_start.nanosec = split_stamp(int((k + 1) * dt_s * 1e9))
                msg.points.append(p)
            return msg

        target = q0 + np.array([0.3, 0, 0, 0, 0, 0, 0])
        bad = [
            trajectory(["a", "b", "c", "d", "e", "f", "g"], [target]),  # wrong joints
            trajectory(panda.ARM_JOINTS, [[float("nan")] * 7]),  # NaN
            trajectory(panda.ARM_JOINTS, [target[:6]]),  # ragged
            trajectory(panda.ARM_JOINTS, []),  # empty
        ]
        stale = trajectory(panda.ARM_JOINTS, [target])
        stale.header.stamp.sec -= 5  # ended seconds ago

        def drops(reason: str) -> int:
            return int(diagnostics.get("executor: trajectories", {}).get(f"drops_{reason}", "0"))

        def rejected(msg: JointTrajectory, reason: str) -> bool:
            """Publish ``msg`` until the node's own drop counter for ``reason`` moves (≤ 30 s). The command topic
            keeps only the newest message (depth 1), so a message published while the node is stalled on a loaded
            host may be replaced by the next one before it is taken: each is confirmed before the next goes out."""
            before, end = drops(reason), time.monotonic() + 30
            while time.monotonic() < end:
                traj_pub.publish(msg)
                if wait(lambda: drops(reason) > before, 3.0):
                    return True
            return False

        # the node's counters are read from /diagnostics, and nothing goes out before discovery matched the
        # executor's subscription (on a host at load 5 it had not, and no bad trajectory reached the node)
        assert wait(lambda: traj_pub.get_subscription_count() >= 1 and "executor: trajectories" in diagnostics, 30)
        for msg in bad:
            assert rejected(msg, "malformed"), _stop(proc)
        assert rejected(stale, "refused"), _stop(proc)
        n_before = len(commands)
        # liveness waits on the count (a loaded host may deliver the 100 Hz commands in bursts); the safety
        # assertion below, every command equal to the start, is exact whatever the load
        assert wait(lambda: len(commands) - n_before > 10, 30), _stop(proc)
        assert proc.poll() is None, _stop(proc)  # still running
        assert states[-1] == "idle"
        held = np.array(commands[n_before:])
        assert len(held) > 10 and np.max(np.abs(held - q0)) < 1e-6  # still holding the start: nothing was used
        # a good trajectory is followed. It is stamped at publication and lasts 2.5 s; a host stalled longer than
        # that delivers it stale, and the executor rightly refuses it, so a fresh one goes out every 3 s until the
        # executor tracks one
        end = time.monotonic() + 60
        while time.monotonic() < end and states[-1] != "tracking":
            steps = [q0 + (target - q0) * s for s in np.linspace(0.2, 1, 5)]
            traj_pub.publish(trajectory(panda.ARM_JOINTS, steps, dt_s=0.5))
            wait(lambda: states[-1] == "tracking", 3.0)
        assert states[-1] == "tracking", _stop(proc)
        assert wait(lambda: abs(commands[-1][0] - q0[0]) > 0.05, 20)
        # and when it ends the watchdog holds
        assert wait(lambda: states[-1] == "holding", 20)
    finally:
        out = _stop(proc)
    assert "trajectory rejected" in out and "joints ['panda_joint1'" in out  # the reasons are logged


def test_recorder_hands_episodes_to_the_dataset_writer(ros_node, tmp_path):
    pytest.importorskip("pyarrow")
    pytest.importorskip("av")
    from robot_stack.dataset import load_dataset

    domain, node, executor = ros_node
    root = tmp_path / "ds"
    proc = _node_process(
        "recorder_node", domain, "-p", f"root:={root}", "-p", "task:=reach the cube", "-p", "fps:=10",
        "-p", "image_qos:=reliable", "-p", "max_frame_age_s:=3.0", "-p", "max_state_age_s:=2.0",
        "-r", "~/commands:=/forward_position_controller/commands",
    )  # fmt: skip
    try:
        js_pub = node.create_publisher(JointState, "/joint_states", 100)  # 1 s of states, as the recorder queues
        cmd_pub = node.create_publisher(Float64MultiArray, "/forward_position_controller/commands", 1)
        color_pub = node.create_publisher(Image, "/camera/color/image_raw", RELIABLE)
        depth_pub = node.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", RELIABLE)
        start = node.create_client(Trigger, "/recorder/start_episode")
        stop = node.create_client(SetBool, "/recorder/stop_episode")
        rng = np.random.default_rng(0)
        color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        depth = rng.integers(400, 2000, (480, 640), dtype=np.uint16)
        q = panda.HOME_Q.copy()
        last_image = [0.0]
        sent_ns: list[int] = []  # capture time (monotonic) of every good pair sent
        sent_q0: list[float] = []  # the arm's q[0] published with it (the joint state of the same tick)
        image_period_s = 0.25  # 4 Hz, below the 10 fps recorded: every pair is due

        def images(encoding_ok: bool = True) -> None:
            t_mono = time.monotonic_ns()
            t = mono_to_wall(t_mono)  # one stamp for both halves of the capture
            if encoding_ok:
                sent_ns.append(t_mono)
                sent_q0.append(float(q[0]))
            for pub, arr, enc in ((color_pub, color, "rgb8" if encoding_ok else "mono8"), (depth_pub, depth, "16UC1")):
                f = image_to_fields(arr if encoding_ok or enc != "mono8" else arr[..., 0].copy(), enc)
                msg = Image(height=f.height, width=f.width, encoding=f.encoding, step=f.step)
                msg.data = f.data
                msg.header.stamp.sec, msg.header.stamp.nanosec = split_stamp(t)
                pub.publish(msg)

        sending = [False]  # images from the start of the episode on: none sent earlier waits in the node's queue
        rows: dict[str, str] = {}  # the recorder's "recorded rows" diagnostics: frames recorded and skipped so far

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name == "recorder: recorded rows":
                    rows.update({kv.key: kv.value for kv in status.values})

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)

        def tick() -> None:
            # the state measured 1 ms before it is published, and before an image of the same tick is captured: the
            # two stamps are far enough apart that no clock conversion (wall <-> monotonic, in both processes) can
            # swap them (50-100 us apart, the recorder at times paired a frame with the previous tick's state)
            js_pub.publish(_joint_state(q, time.monotonic_ns() - 1_000_000))
            cmd_pub.publish(Float64MultiArray(data=[float(x) for x in q]))
            if sending[0] and time.monotonic() - last_image[0] > image_period_s:
                images()
                last_image[0] = time.monotonic()

        def call(client, request):
            assert client.wait_for_service(timeout_sec=40), _stop(proc)
            future = client.call_async(request)
            end = time.monotonic() + 60
            while not future.done() and time.monotonic() < end:
                _spin_for(executor, 0.02, tick)
            assert future.done(), _stop(proc)[-3000:]
            return future.result()

        assert call(start, Trigger.Request()).success
        sending[0] = True
        end = time.monotonic() + 30  # the bad image must not go out before the recorder's subscriptions matched
        while min(color_pub.get_subscription_count(), depth_pub.get_subscription_count()) == 0:
            assert time.monotonic() < end, _stop(proc)
            _spin_for(executor, 0.05, tick)
        images(encoding_ok=False)  # a colour image in the wrong encoding: logged, dropped, recording goes on
        last_image[0] = time.monotonic()
        # 3 s recorded: encoding runs on the recorder's threads, never in the node's callbacks, and frames are taken
        # by capture time as they arrive, so every pair sent while recording is recorded, on a loaded machine too
        # (when the node encoded in its timer callback and took the newest frame per tick: 3 of 15 in 1.5 s)
        t_loop = time.monotonic_ns()
        for _ in range(12):
            q = q + 0.01
            _spin_for(executor, image_period_s, tick)
        t_loop_end = time.monotonic_ns()
        # the episode stops once the node has handled every pair sent (recorded, or skipped with a counter naming
        # why), by its own diagnostics: a fixed wait once stopped with a pair still in flight on a loaded host, lost
        # to the stop without a counter (the accounting below would then blame the recorder)
        sending[0] = False
        handled = lambda: int(rows.get("count", 0)) + int(rows.get("drops", 0))  # noqa: E731
        end = time.monotonic() + 30
        while handled() < len(sent_ns) and time.monotonic() < end:
            _spin_for(executor, 0.1, tick)
        handled_before_stop = (handled(), len(sent_ns), dict(rows))
        reply = call(stop, SetBool.Request(data=True))
        assert reply.success, (reply.message, _stop(proc)[-2000:])
    finally:
        out = _stop(proc)
    assert "image rejected" in out and "mono8" in out
    ds = load_dataset(root)
    assert len(ds) == 1
    episode = ds.load_episode(0)
    assert episode.success and episode.task == "reach the cube"
    n = episode.state.shape[0]
    cam = episode.cameras["front"]
    recorded = np.asarray(cam.t_capture_ns, dtype=np.int64)
    sent = np.asarray(sent_ns, dtype=np.int64)
    # each recorded frame is one the test sent (stamps survive the wall-clock round trip within a millisecond) ...
    match = np.abs(recorded[:, None] - sent[None, :]).argmin(axis=1)
    assert np.all(np.abs(sent[match] - recorded) < 2_000_000), (recorded, sent)
    # ... and none sent during the 3 s is missing unless the episode's drop counters name it: refused as older than
    # max_frame_age_s when it arrived, or no fresh joint state to go with it. The limits are generous (3 s / 2 s):
    # on a loaded 2-core CI host the node (2 encoders on 2 cores beside the suite) stalled > 1 s at times, and 5
    # frames in a row were refused as late at max_frame_age_s 1.0; refusing late frames has tests of its own
    recorded_set = set(sent[match].tolist())
    window = [int(t) for t in sent if t_loop <= t <= t_loop_end]
    missing = [t for t in window if t not in recorded_set]
    drops = episode.meta["drops"]
    accounted = drops.get("stale_frame", 0) + drops.get("input", 0)
    print(f"recorded {n} frames, {len(missing)} of {len(window)} sent in 3 s missing; {reply.message}")  # pytest -s
    assert n == recorded.size and len(window) >= 8, (n, window)
    assert len(missing) <= accounted, (missing, reply.message, handled_before_stop)  # none lost without a counter
    # and the recorder keeps up with the bulk of them (a loaded 2-core CI host delivered 3 of 12 more than 1 s late)
    assert accounted <= len(window) // 3, (missing, reply.message)
    assert episode.meta["dropped_frames"] == 0, episode.meta  # the encoders kept up: nothing dropped
    assert np.all(np.diff(episode.state[:, 0]) >= 0) and episode.state[-1, 0] > episode.state[0, 0]  # q rose
    # each frame is paired with the joint state in force at its capture: the newest the node received measured at
    # or before it (its control-rate stream holds every state it received), however late the frame was taken ...
    received = np.asarray(episode.highrate.t_ns, dtype=np.int64)
    for t_state, t_capture in zip(np.asarray(episode.t_ns, dtype=np.int64), recorded, strict=True):
        before = received[received <= t_capture]
        assert before.size and t_state == before.max(), (t_state, t_capture, received[-5:])
    # ... which is the arm the test published with that image (at load, frames taken after the loop had ended were
    # once all paired with the final state, many 0.01 rad steps off). OPEN: in ~1 of 10 runs the joint state of one
    # image's own tick is missing from the node's control-rate stream (a 10 ms gap in it, both queues 100 deep: not
    # yet explained), and that frame rightly gets the state a tick earlier; at most one such frame is tolerated
    off = np.abs(episode.state[:, 0] - np.asarray(sent_q0)[match])
    assert np.all(off <= 0.01 + 1e-6) and np.count_nonzero(off > 1e-6) <= 1, off
    np.testing.assert_array_equal(np.asarray(cam.depth[0]), depth)  # lossless depth through ROS and the writer


@pytest.mark.slow
def test_bench_ros_quick_reports_rates_latencies_and_baselines():
    from robot_stack.bench.ros import run

    result = run(quick=True)
    assert result["image_reliable_delivered"] == 1.0 and result["image_reliable_acked"]  # every pair arrives
    assert result["composed_observer_delivered"] == 1.0  # observers still get every frame in composed mode
    assert result["rtt_received"] == result["rtt_sent"]
    for key in (
        "image_reliable_latency_p50_ms", "image_zmq_latency_p50_ms", "rtt_state_to_command_p50_ms",
        "policy_frame_age_topics_p50_ms", "policy_frame_age_composed_p99_ms",
    ):  # fmt: skip
        assert 0 < result[key] < 1000, (key, result[key])
    assert result["rtt_ratio_vs_zmq"] > 0 and result["image_ratio_reliable_vs_zmq"] > 0
    # the nodes' executor takes the flood (rclpy's own is measured beside it for the ratio, not asserted on)
    assert result["executor_node_images_delivered"] == 1.0 and result["executor_node_states_delivered"] >= 0.9
    assert 0 < result["executor_node_image_age_p50_ms"] < 1000 and result["executor_rclpy_cpu_s"] > 0


@pytest.mark.realtime
def test_reliable_image_profile_delivers_every_frame_at_30hz():
    """The shipped reliable image QoS between two processes: every RGB-D pair published at 30 Hz (90 captured)
    arrives and is paired (with a CPU hog beside it too: the history and the pairing hold 1 s of frames while the
    subscriber catches up), and the publisher sees each acknowledged. A machine too busy to publish every capture
    skips captures at the source (latest wins, counted): those were never sent."""
    from robot_stack.bench import ros as bench

    frames = bench._ros_frames(90, "reliable", composed=False)
    camera, policy = frames["camera"], frames["policy"]
    assert camera["captured"] == 90 and camera["sent"] + camera["publish_skipped"] == 90, frames
    assert camera["sent"] > 0 and camera["acked"], frames
    assert policy["received"] == camera["sent"] and frames["delivered"] == 1.0, frames
    assert policy["drops"] == {}, frames  # nothing unpaired, out of order or malformed


@pytest.mark.parametrize("serial", ["123456789012", "036522070660"])  # the README's; one YAML would read as octal
def test_readme_hardware_example_starts_the_camera_with_its_serial_intact(ros_node, tmp_path, serial):
    """``robot-stack up hardware ... camera_serial:=<digits>`` (the README's example): the camera node runs with the
    serial as a string parameter; its configure retries (no calibration for scene ``cell`` here, no device) log
    at most one line per cause per second, with the count of the folded ones."""
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters

    from robot_stack.graph.spec import load_graph, parse_overrides
    from robot_stack.graph.supervisor import Supervisor

    domain, node, executor = ros_node
    readme = "policy_endpoint:=tcp://gpu-box:5555 scene:=cell command_interface:=forward_position executor_rate_hz:=500"
    overrides = parse_overrides([*readme.split(), f"camera_serial:={serial}"])
    camera = [n for n in load_graph("hardware").resolve(overrides) if n.name == "camera"]
    assert camera[0].parameters["serial"] == serial
    sup = Supervisor(camera, log_dir=tmp_path, echo=False, env=ros_env(domain), stop_timeout_s=5.0)
    sup.start()
    try:
        client = node.create_client(GetParameters, "/camera/get_parameters")
        assert client.wait_for_service(timeout_sec=40), sup.log_text("camera")[-3000:]
        future = client.call_async(GetParameters.Request(names=["serial", "scene"]))
        end = time.monotonic() + 20
        while not future.done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        values = future.result().values
        assert (values[0].type, values[0].string_value) == (ParameterType.PARAMETER_STRING, serial)
        assert values[1].string_value == "cell"

        def failures() -> list[str]:
            return [line for line in sup.log_text("camera").splitlines() if "camera configure failed" in line]

        before, t0 = len(failures()), time.monotonic()
        time.sleep(4.0)  # autostart retries configure every 0.5 s meanwhile: 8 attempts
        window_s, lines = time.monotonic() - t0, failures()[before:]
        assert sup.status()["camera"].running and sup.status()["camera"].starts == 1
    finally:
        sup.stop()
    out = sup.log_text("camera")
    assert "refusing to start" not in out
    assert lines and "calibration" in lines[0]
    assert len(lines) <= window_s + 1, lines  # one line per second (twice a second without folding)
    assert any("(repeated " in line for line in lines), lines


def test_policy_client_in_composed_mode_owns_the_camera_and_serves_observers(ros_node):
    """``camera_source: sim``: the policy client renders the cell itself (its twin arm following /joint_states),
    its policy takes the frames in-process, and each frame is republished on the camera topics for observers. No
    camera node runs; no policy server either (cycles end at the transport: the frames were there)."""

    domain, node, executor = ros_node
    proc = _node_process(
        "policy_client_node", domain, "-p", "policy_endpoint:=tcp://127.0.0.1:9", "-p", "camera_source:=sim",
        "-p", "camera_rate_hz:=10.0", "-p", "rate_hz:=4.0", "-p", "max_state_age_s:=2.0",
        "-p", "request_timeout_s:=0.2", "-p", "image_qos:=reliable", "-p", "scene:=sim_tabletop",
        # composition, not staleness, is under test here (the frame guard has its own tests): on a loaded 2-core
        # host rendering 640x480 in-process can age a frame past the default 250 ms
        "-p", "max_frame_age_s:=3.0",
    )  # fmt: skip
    images: list[Image] = []
    diagnostics: dict[str, dict[str, str]] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for status in msg.status:
            diagnostics[status.name] = {kv.key: kv.value for kv in status.values}

    try:
        js_pub = node.create_publisher(JointState, "/joint_states", 5)
        node.create_subscription(Image, "/camera/color/image_raw", images.append, RELIABLE)
        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        q = panda.HOME_Q.copy()
        end = time.monotonic() + 60

        def sent() -> int:
            text = diagnostics.get("policy_client: policy", {}).get("outcomes", "{}")
            return int(ast.literal_eval(text).get("transport", 0))

        while time.monotonic() < end and not (len(images) >= 5 and sent() >= 1):
            _spin_for(executor, 0.05, lambda: js_pub.publish(_joint_state(q)))
        assert len(images) >= 5, _stop(proc)[-3000:]
        assert proc.poll() is None
    finally:
        out = _stop(proc)
    assert "camera: composed (sim)" in out, out[-3000:]
    assert (images[0].width, images[0].height, images[0].encoding) == (640, 480, "rgb8")
    assert len({(m.header.stamp.sec, m.header.stamp.nanosec) for m in images}) == len(images)  # new frames
    outcomes = ast.literal_eval(diagnostics["policy_client: policy"]["outcomes"])
    assert outcomes.get("transport", 0) >= 1, outcomes  # a fresh in-process frame, observation sent (no server)


def test_policy_client_carries_the_instruction_to_a_vla_server(ros_node, tmp_path):
    """The shipped VLA served by ``robot-stack serve``; the policy-client node learns from the server's metadata to
    send the depth form, and sends its ``task``. Without an instruction the server refuses (no chunk); an instruction
    published on ``~/task`` makes the chunks flow."""
    from std_msgs.msg import Float32MultiArray

    from robot_stack.policy.manifest import SHIPPED_MODELS_DIR

    manifest = SHIPPED_MODELS_DIR / "vla" / "vla-tabletop-v1.yaml"
    if not manifest.is_file():
        pytest.skip("the VLA is not built (robot-stack train-vla)")
    domain, node, executor = ros_node
    server = subprocess.Popen(
        [sys.executable, "-m", "robot_stack.policy.service", "--manifest", str(manifest), "--bind",
         "tcp://127.0.0.1:*", "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    proc = None
    try:
        line = server.stdout.readline().strip() if server.stdout else ""
        assert line.startswith("READY "), line
        # rcl reads a parameter override's value as YAML: '' is the empty string (a bare "task:=" is refused)
        proc = _node_process(
            "policy_client_node", domain, "-p", f"policy_endpoint:={line.split()[1]}", "-p", "scene:=vla_a0",
            "-p", "rate_hz:=5.0", "-p", "request_timeout_s:=2.0", "-p", "max_frame_age_s:=1.0",
            "-p", "image_qos:=reliable", "-p", "stack_config:=vla", "-p", "task:=''",
        )  # fmt: skip
        lines: list[str] = []  # the node's log, read as it is written (the refusal is waited for, not timed)
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
        reader.start()
        chunks = []
        node.create_subscription(Float32MultiArray, "/policy_client/action_chunk", chunks.append, 10)
        js_pub = node.create_publisher(JointState, "/joint_states", 5)
        color_pub = node.create_publisher(Image, "/camera/color/image_raw", RELIABLE)
        depth_pub = node.create_publisher(Image, "/camera/aligned_depth_to_color/image_raw", RELIABLE)
        task_pub = node.create_publisher(String, "/policy_client/task", RELIABLE)
        rng = np.random.default_rng(1)
        color = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        depth = rng.integers(600, 1500, (480, 640), dtype=np.uint16)
        last = [0.0]

        def tick() -> None:
            js_pub.publish(_joint_state(panda.HOME_Q))
            if time.monotonic() - last[0] > 0.1:
                t = mono_to_wall(time.monotonic_ns())
                for pub, arr, enc in ((color_pub, color, "rgb8"), (depth_pub, depth, "16UC1")):
                    f = image_to_fields(arr, enc)
                    msg = Image(height=f.height, width=f.width, encoding=f.encoding, step=f.step)
                    msg.data = f.data
                    msg.header.stamp.sec, msg.header.stamp.nanosec = split_stamp(t)
                    pub.publish(msg)
                last[0] = time.monotonic()

        end = time.monotonic() + 60  # no instruction: the server refuses every request, with its reason
        while not any("needs an instruction" in x for x in lines) and time.monotonic() < end:
            _spin_for(executor, 0.5, tick)
        assert not chunks, "a chunk without an instruction"
        end = time.monotonic() + 60
        while not chunks and time.monotonic() < end:
            task_pub.publish(String(data="touch the blue cylinder"))
            _spin_for(executor, 0.5, tick)
        assert chunks, "".join(lines)[-3000:]
        assert chunks[-1].layout.dim[0].size == 8 and len(chunks[-1].data) == 24
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(2)  # the reader thread drains its output
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        server.terminate()
        server.wait(10)
    reader.join(10)
    out = "".join(lines)
    assert "needs an instruction" in out  # the refusal was logged with its reason
    assert "instruction: 'touch the blue cylinder'" in out


def test_node_executor_hands_each_ready_callback_to_the_pool_once(monkeypatch):
    """The nodes' executor (``robot_stack_ros.spin``): rclpy 9.1.2's thread pool resubmits a task still queued in
    the pool and busy-loops (a reliable 100 Hz stream lost ~97 % to it); this one submits each task once, keeps
    mutually exclusive callbacks apart and delivers every sample of a flood in order."""
    from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
    from std_msgs.msg import Int32

    monkeypatch.syspath_prepend(str(PACKAGE_DIR))
    from robot_stack_ros.spin import NodeExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=1 + (unique_domain_id() + 25) % 101)
    sink, source = Node("sink", context=ctx), Node("source", context=ctx)
    executor = NodeExecutor(2, context=ctx)
    spin = threading.Thread(target=executor.spin, daemon=True)
    try:
        qos = QoSProfile(depth=1000, reliability=QoSReliabilityPolicy.RELIABLE)
        group = MutuallyExclusiveCallbackGroup()
        inside, overlaps, received, ticks = threading.Lock(), [0], [], [0]

        def exclusive(work) -> None:
            if not inside.acquire(blocking=False):
                overlaps[0] += 1  # two callbacks of one mutually exclusive group at once
                return
            try:
                work()
            finally:
                inside.release()

        sink.create_subscription(
            Int32, "flood", lambda m: exclusive(lambda: received.append(m.data)), qos, callback_group=group
        )
        sink.create_timer(0.01, lambda: exclusive(lambda: ticks.__setitem__(0, ticks[0] + 1)), callback_group=group)
        executor.add_node(sink)
        spin.start()
        pub = source.create_publisher(Int32, "flood", qos)
        end = time.monotonic() + 30
        while pub.get_subscription_count() == 0:
            assert time.monotonic() < end, "discovery never matched"
            time.sleep(0.05)
        n = 500
        for i in range(n):
            pub.publish(Int32(data=i))
            time.sleep(0.002)
        while len(received) < n and time.monotonic() < end:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        spin.join(10)
        sink.destroy_node()
        source.destroy_node()
        rclpy.try_shutdown(context=ctx)
    assert received == list(range(n)), f"{len(received)} of {n} delivered"  # all, in order
    assert overlaps[0] == 0 and ticks[0] > 0  # the timer ran beside the flood, never inside a callback of its group
    # each callback was handed to the pool once (rclpy's own executor submits a queued task again and again)
    assert executor.submitted <= n + ticks[0] + 20, (executor.submitted, n, ticks[0], executor.requeues_avoided)
    print(f"submitted {executor.submitted}, requeues avoided {executor.requeues_avoided}, ticks {ticks[0]}")
