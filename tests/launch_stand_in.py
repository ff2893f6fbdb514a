"""Test helpers (not a test module) for the launch files where ROS 2 ``launch`` / ``launch_ros`` cannot be installed.

* :func:`install_package` installs ``ros2_ws/src/robot_stack_ros`` into a prefix the way colcon's ament_python build
  does (``setup.py egg_info build install --prefix ... --single-version-externally-managed``): console scripts in
  ``lib/robot_stack_ros``, data files (parameter, launch and graph files) in ``share/robot_stack_ros``, the ament
  index marker;
* :func:`stand_in_launch` puts a minimal stand-in of the ``launch`` / ``launch_ros`` classes that
  ``launch/graph_actions.py`` uses into ``sys.modules``: each records its constructor arguments and has the real
  class's signature for them (an unknown keyword is a ``TypeError``, as with the real one), nothing more. The real
  API is exercised by tests/test_launch_real.py where it is importable.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

from robot_stack.graph.spec import PACKAGE_DIR

#: keyword arguments launch_ros.actions.Node / launch.actions.ExecuteProcess accept (kilted: launch 3.7, launch_ros
#: 0.28); ExecuteProcess passes respawn*/output/additional_env/on_exit on to ExecuteLocal
NODE_KWARGS = {
    "package", "executable", "name", "namespace", "parameters", "remappings", "arguments", "respawn",
    "respawn_delay", "respawn_max_retries", "output", "additional_env", "on_exit", "ros_arguments", "exec_name",
}  # fmt: skip
PROCESS_KWARGS = {
    "cmd", "name", "respawn", "respawn_delay", "respawn_max_retries", "output", "additional_env", "on_exit", "cwd",
    "shell",
}  # fmt: skip


def install_package(prefix: Path, build: Path) -> Path:
    """Install the ament_python package into ``prefix`` as colcon does; return ``prefix/share/robot_stack_ros``."""
    build.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(build), "build", "--build-base", str(build),
        "install", "--prefix", str(prefix), "--record", str(build / "record.txt"),
        "--single-version-externally-managed",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"installing robot_stack_ros failed:\n{done.stdout}\n{done.stderr}")
    return prefix / "share" / "robot_stack_ros"


class Recorded:
    """A stand-in action: its constructor arguments, for the test to read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args, self.kwargs = args, kwargs


class DeclareLaunchArgument(Recorded):
    def __init__(self, name: str, *, default_value: Any = None, description: Any = None, choices: Any = None):
        super().__init__(name, default_value=default_value, description=description, choices=choices)
        self.name, self.default_value, self.description, self.choices = name, default_value, description, choices


class OpaqueFunction(Recorded):
    def __init__(self, *, function: Any, args: Any = None, kwargs: Any = None) -> None:
        super().__init__(function=function)
        self.function = function


class LaunchDescription(Recorded):
    def __init__(self, initial_entities: Any = None, *, deprecated_reason: Any = None) -> None:
        super().__init__(initial_entities)
        self.entities = list(initial_entities or [])


class Node(Recorded):
    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - NODE_KWARGS
        if unknown:
            raise TypeError(f"Node() got unexpected keyword arguments {sorted(unknown)}")
        super().__init__(**kwargs)


class ExecuteProcess(Recorded):
    def __init__(self, **kwargs: Any) -> None:
        unknown = set(kwargs) - PROCESS_KWARGS
        if unknown:
            raise TypeError(f"ExecuteProcess() got unexpected keyword arguments {sorted(unknown)}")
        super().__init__(**kwargs)


class ParameterValue(Recorded):
    def __init__(self, value: Any, *, value_type: Any = None) -> None:
        super().__init__(value, value_type=value_type)
        self.value, self.value_type = value, value_type


class LaunchConfiguration(Recorded):
    def __init__(self, variable_name: str, *, default: Any = None) -> None:
        super().__init__(variable_name)
        self.variable_name = variable_name

    def perform(self, context: Any) -> str:
        return str(context.launch_configurations[self.variable_name])


class EmitEvent(Recorded):
    def __init__(self, *, event: Any) -> None:
        super().__init__(event=event)
        self.event = event


class ShutdownProcess(Recorded):
    def __init__(self, *, process_matcher: Any) -> None:
        super().__init__(process_matcher=process_matcher)
        self.process_matcher = process_matcher


class Shutdown(Recorded):
    def __init__(self, *, reason: str = "reason not given") -> None:
        super().__init__(reason=reason)
        self.reason = reason


class LogInfo(Recorded):
    def __init__(self, *, msg: Any) -> None:
        super().__init__(msg=msg)
        self.msg = msg


def matches_action(target_action: Any) -> Any:
    return lambda action: action is target_action


def stand_in_launch(monkeypatch: Any) -> None:
    """Install the stand-in ``launch`` / ``launch_ros`` modules into ``sys.modules`` for the test's duration."""

    def module(name: str, **attrs: Any) -> None:
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)

    module("launch", LaunchDescription=LaunchDescription)
    module(
        "launch.actions",
        DeclareLaunchArgument=DeclareLaunchArgument, EmitEvent=EmitEvent, ExecuteProcess=ExecuteProcess,
        LogInfo=LogInfo, OpaqueFunction=OpaqueFunction, Shutdown=Shutdown,
    )  # fmt: skip
    module("launch.events", matches_action=matches_action)
    module("launch.events.process", ShutdownProcess=ShutdownProcess)
    module("launch.substitutions", LaunchConfiguration=LaunchConfiguration)
    module("launch_ros")
    module("launch_ros.actions", Node=Node)
    module("launch_ros.parameter_descriptions", ParameterValue=ParameterValue)


def load_launch_file(path: Path, monkeypatch: Any) -> types.ModuleType:
    """Import a ``*.launch.py`` file (and the ``graph_actions`` beside it) as ``ros2 launch`` would, fresh."""
    monkeypatch.delitem(sys.modules, "graph_actions", raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the launch file inserts its folder
    spec = importlib.util.spec_from_file_location(f"launch_file_{abs(hash(str(path)))}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context:
    """What the launch files' OpaqueFunction reads of a ``LaunchContext``: the command line (``argv``) and the
    launch configurations (the declared arguments' values: defaults, then the command line)."""

    def __init__(self, declared: list[DeclareLaunchArgument], argv: list[str]) -> None:
        self.argv = list(argv)
        self.launch_configurations = {d.name: d.default_value for d in declared}
        for item in argv:
            name, value = item.split(":=", 1)
            self.launch_configurations[name] = value


class ProcessExited:
    """What ``on_exit`` reads of a ``launch.events.process.ProcessExited`` event."""

    def __init__(self, returncode: int, action: Any) -> None:
        self.returncode, self.action = returncode, action
