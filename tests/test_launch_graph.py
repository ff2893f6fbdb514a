"""The graph description, its two derivations (``ros2 launch`` kwargs and ``robot-stack up`` argv) and the
supervisor. No ROS needed: the supervisor is exercised on plain processes; the launch files' behaviour (argument
declarations, refusals, restart policy, string parameters) is checked here through ``launch/graph_actions.py``
loaded over a minimal stand-in of ``launch``/``launch_ros`` (not installable here), and against the real launch
API in tests/test_launch_real.py where it is importable."""

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
from launch_stand_in import NODE_KWARGS, PROCESS_KWARGS

from robot_stack.cli import build_parser
from robot_stack.errors import ConfigError
from robot_stack.graph.spec import (
    GRAPHS_DIR,
    PACKAGE_CONFIG_DIR,
    PACKAGE_DIR,
    GraphSpec,
    command_line_overrides,
    launch_layout,
    load_graph,
    parse_overrides,
)
from robot_stack.graph.supervisor import Supervisor

LAUNCH_DIR = GRAPHS_DIR.parent
#: every shipped graph and the launch file that runs it under ros2 launch
LAUNCH_FILES = {"hardware": "robot_stack.launch.py", "sim": "sim.launch.py", "sim_composed": "sim_composed.launch.py"}
NODE_SOURCES = PACKAGE_DIR / "robot_stack_ros"


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


@pytest.mark.parametrize("graph", sorted(LAUNCH_FILES))
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
    assert sorted(p.stem for p in GRAPHS_DIR.glob("*.yaml")) == sorted(LAUNCH_FILES)  # a launch file per graph
    for graph, name in LAUNCH_FILES.items():
        text = (LAUNCH_DIR / name).read_text()
        tree = ast.parse(text)
        functions = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)}
        assert "generate_launch_description" in functions
        assert f'describe_shipped(HERE, "{graph}")' in text and "from graph_actions import describe_shipped" in text
        assert (GRAPHS_DIR / f"{graph}.yaml").is_file()
    helper = ast.parse((LAUNCH_DIR / "graph_actions.py").read_text())
    imported = {a.name for n in ast.walk(helper) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"Node", "ExecuteProcess", "DeclareLaunchArgument", "OpaqueFunction", "load_graph"} <= imported
    calls = {getattr(c.func, "attr", getattr(c.func, "id", "")) for c in ast.walk(helper) if isinstance(c, ast.Call)}
    assert {"launch_kwargs", "resolve", "Node", "ExecuteProcess"} <= calls  # derived from the spec, no copy of it
    # ros2 launch offers every file ending in "launch.py" as a launch file: the helper's name must not
    assert not (LAUNCH_DIR / "graph_actions.py").name.endswith("launch.py")


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
    """Import statements only (a probe script that ``doctor`` runs in a child process may name rclpy in a string)."""
    import ast

    ros = {"rclpy", "launch", "launch_ros", "sensor_msgs", "std_msgs"}
    core = Path(__file__).resolve().parents[1] / "robot_stack"
    offenders = []
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.relative_to(core)}: {n}" for n in names if n.split(".")[0] in ros]
    assert offenders == []


def test_up_is_wired_into_the_cli(capsys):
    args = build_parser().parse_args(["up", "sim", "seed:=3", "--print"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "executor: " in out and "robot_stack_ros.executor_node" in out and "--params-file" in out
    assert str(PACKAGE_CONFIG_DIR / "executor.yaml") in out
    args = build_parser().parse_args(["up", "sim", "nope:=1"])
    assert args.func(args) == 2
    args = build_parser().parse_args(["up", "hardware", "-s"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "'camera_serial':\n        RealSense serial number" in out and "(default: '')" in out
    assert "Valid choices are: ['forward_position', 'joint_trajectory']" in out


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


# ------------------------------------------------------------------------------------------- launch arguments


@pytest.mark.parametrize("graph", sorted(LAUNCH_FILES))
def test_every_argument_has_a_description_a_type_and_a_readable_default(graph):
    spec = load_graph(graph)
    defaults = spec.defaults()
    for name, arg in spec.arguments.items():
        assert arg.description, f"{graph}: argument {name} has no description"
        assert arg.type != "auto", f"{graph}: argument {name} has no type"
        assert "$(" not in defaults[name], (name, defaults[name])  # what ros2 launch -s shows and uses
        arg.value(defaults[name], graph)  # every default is a valid value of its type
    if graph == "sim":
        manifest = Path(defaults["manifest"])
        assert manifest.is_absolute() and manifest.is_file() and ".." not in manifest.parts


def test_serial_numbers_stay_strings_and_typed_arguments_are_checked():
    spec = load_graph("hardware")
    for serial in ("123456789012", "036522070660", "0x1F"):  # YAML: an int, an octal int, a hex int
        (camera,) = [n for n in spec.resolve({"camera_serial": serial}) if n.name == "camera"]
        assert camera.parameters["serial"] == serial
        doc = yaml.safe_load(yaml.safe_dump(camera.inline_params_document()))  # what robot-stack up writes
        assert doc["/**"]["ros__parameters"]["serial"] == serial
    executor = [n for n in spec.resolve({"executor_rate_hz": "100"}) if n.name == "executor"][0]
    assert executor.parameters["rate_hz"] == 100.0 and isinstance(executor.parameters["rate_hz"], float)
    sim = load_graph("sim")
    bridge = [n for n in sim.resolve({"seed": "7", "auto_reset": "false"}) if n.name == "sim_bridge"][0]
    assert bridge.parameters["seed"] == 7 and bridge.parameters["auto_reset"] is False
    with pytest.raises(ConfigError, match=r"seed:='abc'.*expected an integer"):
        sim.resolve({"seed": "abc"})
    with pytest.raises(ConfigError, match=r"expected true or false"):
        sim.resolve({"auto_reset": "yes please"})
    with pytest.raises(ConfigError, match=r"not one of \['forward_position', 'joint_trajectory'\]; did you mean"):
        sim.resolve({"command_interface": "joint_trajectories"})
    with pytest.raises(ConfigError, match="finite"):
        sim.resolve({"policy_rate_hz": "nan"})


def test_undeclared_arguments_are_refused_with_the_closest_name():
    spec = load_graph("sim")
    with pytest.raises(ConfigError, match=r"unknown arguments 'sed' \(did you mean 'seed'\?\)"):
        spec.resolve({"sed": "3"})
    # ros2 launch: the command line as LaunchContext.argv has it; its own launch-prefix items are not the graph's
    given = command_line_overrides(["seed:=3", "launch-prefix:=gdb -ex run", "not-an-argument"])
    assert given == {"seed": "3"}
    spec.check_argument_names(given)
    with pytest.raises(ConfigError, match="sed"):
        spec.check_argument_names(command_line_overrides(["sed:=3"]))


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"a": {"default": "1", "type": "integer"}}, "type 'integer' is not one of"),
        ({"a": {"default": "x", "type": "int"}}, "expected an integer"),
        ({"a": {"default": "x", "choices": ["y", "z"]}}, "not one of"),
        ({"a": {"default": "x", "descripton": "typo"}}, "unknown keys"),
        ({"a": {"default": "x", "choices": "y"}}, "must be a list"),
    ],
)
def test_bad_argument_declarations_are_refused(doc, match):
    with pytest.raises(ConfigError, match=match):
        GraphSpec.from_dict({"arguments": doc, "nodes": [{"name": "n", "cmd": ["x"]}]})


def test_launch_kwargs_carry_max_restarts_as_respawn_max_retries():
    nodes = _graph([
        {"name": "a", "cmd": ["x"], "respawn": True, "max_restarts": 3},
        {"name": "b", "package": "robot_stack_ros", "executable": "camera_node", "respawn": True},
    ])  # fmt: skip
    assert nodes[0].launch_kwargs()["respawn_max_retries"] == 3
    assert nodes[1].launch_kwargs()["respawn_max_retries"] == 5  # the supervisor's default too
    for graph in ("sim", "hardware"):
        for node in load_graph(graph).resolve():
            assert node.launch_kwargs()["respawn_max_retries"] == node.max_restarts
    with pytest.raises(ConfigError, match="respawn_delay_s 0.0 is below"):
        _graph([{"name": "a", "cmd": ["x"], "respawn": True, "respawn_delay_s": 0.0}])


def test_launch_layout_source_tree_and_installed_share(tmp_path):
    graphs, config = launch_layout(LAUNCH_DIR)
    assert graphs == GRAPHS_DIR and config.resolve() == PACKAGE_CONFIG_DIR.resolve()
    share = tmp_path / "share" / "robot_stack_ros"
    for sub in ("launch", "graphs", "config"):
        (share / sub).mkdir(parents=True)
    (share / "package.xml").write_text("<package/>")
    assert launch_layout(share / "launch") == (share / "graphs", share / "config")
    with pytest.raises(ConfigError, match="no graph files beside them"):
        launch_layout(tmp_path)


def test_supervisor_never_restarts_a_configuration_error(tmp_path):
    refuses = _script(
        tmp_path, "refuses", "import sys; print('refusing to start: bad parameter', flush=True); sys.exit(2)"
    )
    crashes = _script(tmp_path, "crashes", "import sys; sys.exit(1)")
    nodes = _graph([
        {"name": "refuses", "cmd": refuses, "respawn": True, "respawn_delay_s": 0.1, "max_restarts": 5},
        {"name": "crashes", "cmd": crashes, "respawn": True, "respawn_delay_s": 0.1, "max_restarts": 2},
    ])  # fmt: skip
    sup = Supervisor(nodes, log_dir=tmp_path / "logs", echo=False, stop_timeout_s=1.0)
    sup.start()
    try:
        assert wait_until(lambda: sup.status()["crashes"].starts == 3 and not sup.status()["crashes"].running)
        time.sleep(0.5)
        assert sup.status()["refuses"].starts == 1 and sup.status()["refuses"].exit_code == 2  # not retried
        assert sup.status()["crashes"].starts == 3  # another failure is retried max_restarts times
    finally:
        sup.stop()


def test_up_exits_1_with_a_summary_when_a_node_was_given_up(tmp_path, capsys):
    # a node that keeps crashing uses up its restarts: the graph ran degraded, so `up` must not report success
    graph = tmp_path / "g.yaml"
    graph.write_text(yaml.safe_dump({"nodes": [
        {"name": "steady", "cmd": [sys.executable, "-c", "import time; time.sleep(30)"]},
        {"name": "crashes", "cmd": [sys.executable, "-c", "import sys; sys.exit(3)"], "respawn": True,
         "respawn_delay_s": 0.1, "max_restarts": 2},
    ]}))  # fmt: skip
    args = build_parser().parse_args(["up", str(graph), "--duration", "2.5", "--log-dir", str(tmp_path / "logs")])
    assert args.func(args) == 1
    err = capsys.readouterr().err
    summary = [line for line in err.splitlines() if line.startswith(("steady", "crashes"))]
    assert any("GAVE UP: gave up after 2 restarts (exit code 3)" in line and " 3 " in line for line in summary), err
    assert any("stopped" in line for line in summary if line.startswith("steady")), err


# -------------------------------------------------------------------- the launch files over a stand-in launch API


def _described(launch_file: Path, monkeypatch) -> tuple[list, object]:
    """(declared arguments, the OpaqueFunction's setup) of a launch file's generate_launch_description()."""
    from launch_stand_in import DeclareLaunchArgument, OpaqueFunction, load_launch_file, stand_in_launch

    stand_in_launch(monkeypatch)
    entities = load_launch_file(launch_file, monkeypatch).generate_launch_description().entities
    declared = [e for e in entities if isinstance(e, DeclareLaunchArgument)]
    (setup,) = [e.function for e in entities if isinstance(e, OpaqueFunction)]
    return declared, setup


@pytest.mark.parametrize(("graph", "launch_file"), sorted(LAUNCH_FILES.items()))
def test_launch_files_declare_every_argument_with_description_and_readable_default(launch_file, graph, monkeypatch):
    declared, _ = _described(LAUNCH_DIR / launch_file, monkeypatch)
    spec = load_graph(graph)
    assert [d.name for d in declared] == list(spec.arguments)
    for d in declared:
        arg = spec.arguments[d.name]
        assert d.description == arg.help() and arg.description in d.description  # ros2 launch -s shows it
        assert d.default_value == spec.defaults()[d.name] and "$(" not in d.default_value
        assert d.choices == (list(arg.choices) or None)
    assert {d.name: d.choices for d in declared}["command_interface"] == ["forward_position", "joint_trajectory"]


def test_hardware_launch_file_readme_example(monkeypatch):
    """``ros2 launch ... camera_serial:=123456789012`` (README): the serial reaches launch_ros as a string parameter,
    restarts are bounded by max_restarts, a configuration error is shut down instead of restarted, the required
    executor's exit ends the launch; an undeclared argument stops the launch before any node starts."""
    from launch_stand_in import Context, EmitEvent, LogInfo, Node, ParameterValue, ProcessExited, Shutdown

    declared, setup = _described(LAUNCH_DIR / "robot_stack.launch.py", monkeypatch)
    readme = [
        "policy_endpoint:=tcp://gpu-box:5555", "scene:=cell", "camera_serial:=123456789012",
        "command_interface:=forward_position", "executor_rate_hz:=500.0",
    ]  # fmt: skip
    actions = setup(Context(declared, [*readme, "launch-prefix:=xterm -e"]))
    by_name = {a.kwargs["name"]: a for a in actions}
    assert list(by_name) == ["camera", "policy_client", "executor"] and all(isinstance(a, Node) for a in actions)
    camera = by_name["camera"].kwargs
    assert camera["parameters"][0] == str(PACKAGE_CONFIG_DIR / "camera_realsense.yaml")
    inline = camera["parameters"][1]
    assert isinstance(inline["serial"], ParameterValue) and inline["serial"].value_type is str
    assert inline["serial"].value == "123456789012"
    assert camera["respawn"] is True and camera["respawn_max_retries"] == 5 and camera["respawn_delay"] == 2.0
    rate = by_name["executor"].kwargs["parameters"][1]["rate_hz"]
    assert rate == 500.0 and isinstance(rate, float)  # typed values are passed as they are
    # exit code 2 (configuration refused): logged and shut down, never restarted; other exits: the respawn policy
    on_exit = camera["on_exit"]
    exit2 = on_exit(ProcessExited(2, by_name["camera"]), None)
    assert any(isinstance(a, LogInfo) and "not restarted" in a.msg for a in exit2)
    (shutdown,) = [a for a in exit2 if isinstance(a, EmitEvent)]
    assert shutdown.event.process_matcher(by_name["camera"]) and not shutdown.event.process_matcher(by_name["executor"])
    assert on_exit(ProcessExited(1, by_name["camera"]), None) == []
    required = by_name["executor"].kwargs["on_exit"](ProcessExited(0, by_name["executor"]), None)
    assert [type(a) for a in required] == [Shutdown] and "executor" in required[0].reason
    with pytest.raises(ConfigError, match=r"unknown arguments 'camera_seriall' \(did you mean 'camera_serial'\?\)"):
        setup(Context(declared, ["camera_seriall:=123456789012"]))
    with pytest.raises(ConfigError, match="expected a number"):
        setup(Context(declared, ["executor_rate_hz:=fast"]))


def test_built_package_installs_launch_and_graph_files_that_find_each_other(tmp_path, monkeypatch):
    """colcon-style install of the ament_python package: launch files, their helper, graph files and parameter
    files land in share/robot_stack_ros, and the installed launch files read the installed graphs and configs."""
    from launch_stand_in import Context, install_package

    share = install_package(tmp_path / "install", tmp_path / "build")
    assert sorted(p.name for p in (share / "launch").iterdir()) == sorted(["graph_actions.py", *LAUNCH_FILES.values()])
    assert sorted(p.name for p in (share / "graphs").iterdir()) == sorted(p.name for p in GRAPHS_DIR.glob("*.yaml"))
    assert sorted(p.name for p in (share / "config").iterdir()) == sorted(
        p.name for p in PACKAGE_CONFIG_DIR.glob("*.yaml")
    )
    scripts = tmp_path / "install" / "lib" / "robot_stack_ros"
    assert {p.name for p in scripts.iterdir()} == _console_scripts()  # where launch_ros looks for executables
    assert (share.parent / "ament_index" / "resource_index" / "packages" / "robot_stack_ros").is_file()
    for graph, launch_file in LAUNCH_FILES.items():
        declared, setup = _described(share / "launch" / launch_file, monkeypatch)
        actions = setup(Context(declared, []))
        assert len(actions) == len(load_graph(graph).nodes)
        for action in actions:
            for f in action.kwargs.get("parameters", []):
                if isinstance(f, str):
                    assert Path(f).parent == share / "config" and Path(f).is_file()
        if graph.startswith("sim"):
            server = [a for a in actions if a.kwargs["name"] == "policy_server"][0]
            manifest = Path(server.kwargs["cmd"][server.kwargs["cmd"].index("--manifest") + 1])
            assert manifest.is_file()  # $(python_package robot_stack) works from share/ too
