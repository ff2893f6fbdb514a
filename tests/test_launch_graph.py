"""The graph description, its two derivations (``ros2 launch`` kwargs and ``robot-stack up`` argv) and the
supervisor. No ROS needed: the supervisor is exercised on plain processes; the launch files are checked for syntax
and for reading the shipped graph files (``launch``/``launch_ros`` themselves are not installable here)."""

from __future__ import annotations

import ast
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from conftest import wait_until

from robot_stack.cli import build_parser
from robot_stack.errors import ConfigError
from robot_stack.graph.spec import GRAPHS_DIR, PACKAGE_CONFIG_DIR, PACKAGE_DIR, GraphSpec, load_graph, parse_overrides
from robot_stack.graph.supervisor import Supervisor

LAUNCH_DIR = GRAPHS_DIR.parent
NODE_SOURCES = PACKAGE_DIR / "robot_stack_ros"
#: keyword arguments launch_ros.actions.Node / launch.actions.ExecuteProcess accept (kilted)
NODE_KWARGS = {
    "package", "executable", "name", "namespace", "parameters", "remappings", "arguments", "respawn",
    "respawn_delay", "output", "additional_env", "on_exit", "ros_arguments", "exec_name",
}  # fmt: skip
PROCESS_KWARGS = {"cmd", "name", "respawn", "respawn_delay", "output", "additional_env", "on_exit", "cwd", "shell"}


def _declared_parameters(executable: str) -> set[str]:
    """Parameter names a node declares (``declare(self, "name", ...)`` / ``require(self, "name", ...)``)."""
    tree = ast.parse((NODE_SOURCES / f"{executable}.py").read_text())
    names = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in ("declare", "require"):
            names.add(call.args[1].value)
    return names


def _console_scripts() -> set[str]:
    text = (PACKAGE_DIR / "setup.py").read_text()
    return set(re.findall(r'"(\w+) = robot_stack_ros\.\w+:main"', text))


@pytest.mark.parametrize("graph", ["sim", "hardware"])
def test_shipped_graphs_resolve_and_both_derivations_agree(graph):
    nodes = load_graph(graph).resolve()
    assert nodes
    scripts = _console_scripts()
    for node in nodes:
        kwargs = node.launch_kwargs()
        if not node.is_ros_node:
            assert set(kwargs) <= PROCESS_KWARGS and kwargs["cmd"] == node.argv()
            continue
        assert set(kwargs) <= NODE_KWARGS, set(kwargs) - NODE_KWARGS
        assert node.executable in scripts and (NODE_SOURCES / f"{node.executable}.py").is_file()
        # the same parameter files (then the inline parameters), names and remappings on both paths
        argv = node.argv("inline.yaml" if node.parameters else None)
        files = [argv[i + 1] for i, a in enumerate(argv) if a == "--params-file"]
        assert files == [
            *kwargs["parameters"][: len(node.parameters_files)],
            *(["inline.yaml"] * bool(node.parameters)),
        ]
        if node.parameters:
            assert kwargs["parameters"][-1] == dict(node.parameters)
        remaps = [argv[i + 1] for i, a in enumerate(argv) if a == "-r"]
        assert remaps[0] == f"__node:={kwargs['name']}"
        assert [r for r in remaps if not r.startswith("__")] == [f"{a}:={b}" for a, b in kwargs["remappings"]]
        assert argv[1:3] == ["-m", f"robot_stack_ros.{node.executable}"]
        # every parameter the graph or its files set is one the node declares (no silently ignored keys)
        declared = _declared_parameters(node.executable)
        for path in node.parameters_files:
            doc = yaml.safe_load(Path(path).read_text())
            assert set(doc) == {"/**"}, path
            assert set(doc["/**"]["ros__parameters"]) <= declared, (path, set(doc["/**"]["ros__parameters"]) - declared)
        assert set(node.parameters) <= declared, set(node.parameters) - declared


def test_launch_files_are_valid_python_and_read_the_graph_files():
    for name, graph in [("robot_stack.launch.py", "hardware.yaml"), ("sim.launch.py", "sim.yaml")]:
        text = (LAUNCH_DIR / name).read_text()
        tree = ast.parse(text)
        functions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
        assert "generate_launch_description" in functions
        assert f'"graphs" / "{graph}"' in text and "from graph_launch import describe" in text
        assert (GRAPHS_DIR / graph).is_file()
    helper = ast.parse((LAUNCH_DIR / "graph_launch.py").read_text())
    imported = {a.name for n in ast.walk(helper) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"Node", "ExecuteProcess", "DeclareLaunchArgument", "OpaqueFunction", "load_graph"} <= imported
    calls = {getattr(c.func, "attr", getattr(c.func, "id", "")) for c in ast.walk(helper) if isinstance(c, ast.Call)}
    assert {"launch_kwargs", "resolve", "Node", "ExecuteProcess"} <= calls  # derived from the spec, no copy of it


def test_arguments_substitute_typed_and_unknown_ones_are_refused(tmp_path):
    (tmp_path / "p.yaml").write_text("/**:\n  ros__parameters: {a: 1}\n")
    spec = GraphSpec.from_dict(
        {
            "arguments": {"rate": "2.5", "ep": "tcp://x:1", "here": "$(dirname)/m.yaml"},
            "nodes": [
                {
                    "name": "n",
                    "package": "robot_stack_ros",
                    "executable": "executor_node",
                    "parameters_files": ["p.yaml"],
                    "parameters": {"rate_hz": "$(var rate)", "s": "at $(var ep)"},
                },
                {"name": "srv", "cmd": ["serve", "--bind", "$(var ep)", "$(var here)"]},
            ],
        },  # fmt: skip
        str(tmp_path / "g.yaml"),
    )
    ros, srv = spec.resolve({"rate": "100"}, tmp_path)
    assert ros.parameters == {"rate_hz": 100, "s": "at tcp://x:1"}
    assert ros.parameters_files == (str(tmp_path / "p.yaml"),)
    assert srv.cmd == ("serve", "--bind", "tcp://x:1", f"{tmp_path}/m.yaml")
    with pytest.raises(ConfigError, match="unknown arguments"):
        spec.resolve({"nope": "1"}, tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        spec.resolve({}, tmp_path / "elsewhere")
    assert parse_overrides(["a:=1", "b:=x:=y"]) == {"a": "1", "b": "x:=y"}
    with pytest.raises(ConfigError, match="name:=value"):
        parse_overrides(["a=1"])


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"nodes": []}, "non-empty"),
        ({"nodes": [{"name": "a", "cmd": ["x"]}, {"name": "a", "cmd": ["y"]}]}, "duplicate"),
        ({"nodes": [{"name": "a"}]}, "either package"),
        ({"nodes": [{"name": "a", "package": "p"}]}, "either package"),
        ({"nodes": [{"name": "a", "cmd": ["x"], "respwan": True}]}, "unknown keys"),
        ({"nodes": [{"name": "a", "cmd": ["$(var missing)"]}]}, None),
    ],
)
def test_bad_graphs_are_refused(doc, match):
    if match is None:
        with pytest.raises(ConfigError, match="not a declared argument"):
            GraphSpec.from_dict(doc).resolve()
    else:
        with pytest.raises(ConfigError, match=match):
            GraphSpec.from_dict(doc)


def test_the_core_never_imports_ros():
    core = Path(__file__).resolve().parents[1] / "robot_stack"
    offenders = [
        str(path.relative_to(core))
        for path in core.rglob("*.py")
        if re.search(r"^\s*(import|from)\s+(rclpy|launch|launch_ros|sensor_msgs|std_msgs)\b", path.read_text(), re.M)
    ]
    assert offenders == []


def test_up_is_wired_into_the_cli(capsys):
    args = build_parser().parse_args(["up", "sim", "seed:=3", "--print"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "executor: " in out and "robot_stack_ros.executor_node" in out and "--params-file" in out
    assert str(PACKAGE_CONFIG_DIR / "executor.yaml") in out
    args = build_parser().parse_args(["up", "sim", "nope:=1"])
    assert args.func(args) == 2


# ------------------------------------------------------------------------------------------------ supervisor


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _graph(nodes: list[dict]) -> list:
    return GraphSpec.from_dict({"nodes": nodes}).resolve()


def test_supervisor_respawns_stops_in_order_and_escalates(tmp_path):
    marker = tmp_path / "order.txt"
    polite = _script(
        tmp_path,
        "polite",
        f"""
        import signal, sys, time
        name = sys.argv[1]
        def bye(*_):
            open({str(marker)!r}, "a").write(name + "\\n"); sys.exit(0)
        signal.signal(signal.SIGINT, bye)
        print("up", name, flush=True)
        while True: time.sleep(0.05)
    """,
    )
    stubborn = _script(
        tmp_path,
        "stubborn",
        """
        import signal, time
        signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("up", flush=True)
        while True: time.sleep(0.05)
    """,
    )
    crasher = _script(tmp_path, "crasher", "import time; print('up', flush=True); time.sleep(0.2); raise SystemExit(3)")
    nodes = _graph([
        {"name": "first", "cmd": [*polite, "first"]},
        {"name": "second", "cmd": [*polite, "second"]},
        {"name": "stubborn", "cmd": stubborn},
        {"name": "crasher", "cmd": crasher, "respawn": True, "respawn_delay_s": 0.1, "max_restarts": 2},
    ])  # fmt: skip
    sup = Supervisor(nodes, log_dir=tmp_path / "logs", echo=False, stop_timeout_s=1.0)
    sup.start()
    try:
        assert wait_until(lambda: sup.status()["crasher"].starts == 3 and not sup.status()["crasher"].running)
        time.sleep(0.5)
        assert sup.status()["crasher"].starts == 3  # gave up after max_restarts
        assert sup.status()["crasher"].exit_code == 3
        assert sup.log_text("crasher").count("--- start") == 3
        assert wait_until(lambda: "up first" in sup.log_text("first"))
        assert all(sup.status()[n].running for n in ("first", "second", "stubborn"))
        sup.kill("second", signal.SIGKILL)  # no respawn: stays down, graph goes on
        assert wait_until(lambda: not sup.status()["second"].running)
        sup.restart("second")
        assert wait_until(lambda: sup.status()["second"].running and sup.status()["second"].starts == 2)
        assert wait_until(lambda: sup.log_text("second").count("up second") == 2)
    finally:
        t0 = time.monotonic()
        sup.stop()
    assert not any(s.running for s in sup.status().values())
    assert time.monotonic() - t0 < 6.0  # stubborn: SIGINT, SIGTERM ignored, then SIGKILL
    assert marker.read_text().split() == ["second", "first"]  # reverse start order


def test_required_node_exit_stops_the_graph(tmp_path):
    sleeper = _script(tmp_path, "sleeper", "import time\nwhile True: time.sleep(0.05)")
    dies = _script(tmp_path, "dies", "import time; time.sleep(0.3); raise SystemExit(7)")
    sup = Supervisor(
        _graph([{"name": "sleeper", "cmd": sleeper}, {"name": "core", "cmd": dies, "required": True}]),
        log_dir=tmp_path / "logs", echo=False, stop_timeout_s=1.0,
    )  # fmt: skip
    t0 = time.monotonic()
    assert sup.run(duration_s=20.0) == 1
    assert time.monotonic() - t0 < 10.0
    assert "required node 'core' exited with code 7" in (sup.failure or "")
    assert not sup.status()["sleeper"].running


def test_up_runs_a_graph_for_a_duration(tmp_path):
    graph = tmp_path / "g.yaml"
    graph.write_text(yaml.safe_dump({"arguments": {"msg": "hi"}, "nodes": [
        {"name": "talker", "cmd": [sys.executable, "-c", "import sys, time; print(sys.argv[1], flush=True); "
                                   "time.sleep(30)", "$(var msg)"]},
    ]}))  # fmt: skip
    args = build_parser().parse_args(["up", str(graph), "msg:=hello", "--duration", "1", "--log-dir", str(tmp_path)])
    assert args.func(args) == 0
    assert "hello" in (tmp_path / "talker.log").read_text()
