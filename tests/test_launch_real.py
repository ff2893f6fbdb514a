"""The launch files under the real ROS 2 ``launch`` / ``launch_ros`` API (launch 3.7 / launch_ros 0.28 on kilted).

Skipped where they are not importable: they are neither on PyPI as kilted wheels nor in Debian, so not on this
project's CI machines; on a ROS 2 machine (``source /opt/ros/kilted/setup.bash``) these run. What they check is
also checked everywhere through ``launch/graph_actions.py`` over a stand-in of the launch API
(tests/test_launch_graph.py). ``ros2 launch`` is played by tests/launch_runner.py (what ros2launch does).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip(
    "launch_ros",
    reason="ROS 2 launch/launch_ros are not installable here (no kilted wheels on PyPI, not in Debian); "
    "run on a ROS 2 machine",
)

from robot_stack.graph.spec import GRAPHS_DIR, load_graph  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAUNCH_DIR = GRAPHS_DIR.parent
RUNNER = Path(__file__).resolve().parent / "launch_runner.py"


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1", **extra}


def _launch(launch_file: Path, *arguments: str, timeout_s: float = 60.0, env: dict | None = None):
    return subprocess.run(
        [sys.executable, str(RUNNER), str(launch_file), *arguments],
        capture_output=True, text=True, timeout=timeout_s, env=env or _env(), cwd=REPO,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("launch_file", "graph"),
    [("robot_stack.launch.py", "hardware"), ("sim.launch.py", "sim"), ("sim_composed.launch.py", "sim_composed")],
)
def test_show_args_lists_descriptions_and_readable_defaults(launch_file, graph):
    """What ``ros2 launch <file> -s`` prints: every argument with its description and a readable default."""
    from launch.launch_description_sources import get_launch_description_from_python_launch_file

    spec = load_graph(graph)
    arguments = get_launch_description_from_python_launch_file(str(LAUNCH_DIR / launch_file)).get_launch_arguments()
    assert [a.name for a in arguments] == list(spec.arguments)
    for a in arguments:
        assert a.description.startswith(spec.arguments[a.name].help()) and "no description" not in a.description
        shown = " + ".join(token.describe() for token in a.default_value)
        assert shown == repr(spec.defaults()[a.name]) and "$(" not in shown


def test_restart_policy_under_launch(tmp_path):
    """respawn_max_retries = max_restarts; exit code 2 (configuration error) is never restarted; a required node's
    exit ends the launch."""
    starts = tmp_path / "starts"
    starts.mkdir()

    def script(name: str, body: str) -> list[str]:
        path = tmp_path / f"{name}.py"
        path.write_text(f"open({str(starts / name)!r}, 'a').write('x')\n" + textwrap.dedent(body))
        return [sys.executable, str(path)]

    graph = tmp_path / "g.yaml"
    graph.write_text(yaml.safe_dump({"nodes": [
        {"name": "refuses", "cmd": script("refuses", "raise SystemExit(2)"), "respawn": True,
         "respawn_delay_s": 0.2, "max_restarts": 5},
        {"name": "crashes", "cmd": script("crashes", "raise SystemExit(3)"), "respawn": True,
         "respawn_delay_s": 0.2, "max_restarts": 2},
        {"name": "ender", "cmd": script("ender", "import time; time.sleep(4.0)"), "required": True},
    ]}))  # fmt: skip
    launch_file = tmp_path / "g.launch.py"
    launch_file.write_text(
        f"import sys\nsys.path.insert(0, {str(LAUNCH_DIR)!r})\nfrom graph_actions import describe\n\n"
        f"def generate_launch_description():\n    return describe({str(graph)!r})\n"
    )
    t0 = time.monotonic()
    done = _launch(launch_file, timeout_s=60)
    out = done.stdout + done.stderr
    assert time.monotonic() - t0 < 30, out
    assert (starts / "refuses").read_text() == "x", out  # not restarted
    assert (starts / "crashes").read_text() == "xxx", out  # 1 + max_restarts
    assert "refused its configuration (exit code 2): not restarted" in out
    assert "process[ender-3] was required: shutting down launched system" in out


def test_undeclared_argument_stops_the_launch_before_any_node():
    done = _launch(LAUNCH_DIR / "sim.launch.py", "sed:=3", timeout_s=60)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "unknown arguments 'sed' (did you mean 'seed'?)" in out
    assert "process started" not in out


def test_readme_hardware_example_from_the_installed_package(tmp_path):
    """``ros2 launch robot_stack_ros robot_stack.launch.py ... camera_serial:=123456789012`` from a colcon-style
    install: the launch file is found in the package's share folder and the camera node runs with its serial as a
    string parameter."""
    rclpy = pytest.importorskip("rclpy")
    from launch_stand_in import install_package
    from rcl_interfaces.msg import ParameterType
    from rcl_interfaces.srv import GetParameters
    from ros_graph_probe import ros_env, unique_domain_id

    prefix = tmp_path / "install"
    share = install_package(prefix, tmp_path / "build")
    site = next((prefix / "lib").glob("python3*/site-packages"))
    domain = 1 + (unique_domain_id() + 20) % 101
    env = _env(**ros_env(domain), AMENT_PREFIX_PATH=str(prefix))
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]])
    readme = [
        "policy_endpoint:=tcp://gpu-box:5555", "scene:=cell", "camera_serial:=123456789012",
        "command_interface:=forward_position", "executor_rate_hz:=500.0",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, str(RUNNER), str(share / "launch" / "robot_stack.launch.py"), *readme],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node("test_readme", context=ctx)
    try:
        client = node.create_client(GetParameters, "/camera/get_parameters")
        assert client.wait_for_service(timeout_sec=60)
        future = client.call_async(GetParameters.Request(names=["serial"]))
        executor = rclpy.executors.SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        end = time.monotonic() + 20
        while not future.done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        (value,) = future.result().values
        assert (value.type, value.string_value) == (ParameterType.PARAMETER_STRING, "123456789012")
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=ctx)
        proc.send_signal(2)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert "got 123456789012" not in out and "refusing to start: parameter 'serial'" not in out
