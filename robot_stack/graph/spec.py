"""One declarative description of a process graph; ``ros2 launch`` and ``robot-stack up`` are both derived from it.

A graph file (``launch/graphs/*.yaml``)::

    name: sim
    description: MuJoCo Panda cell driven through ROS 2
    arguments:                       # launch arguments: name -> default; "$(var name)" substitutes, and
                                     # "$(dirname)" is the graph file's folder (as in launch's YAML frontend)
      policy_endpoint: tcp://127.0.0.1:5555
    nodes:
      - name: executor               # ROS node name (a ROS node has package + executable)
        package: robot_stack_ros
        executable: executor_node
        namespace: ""
        parameters_files: [executor.yaml]   # in the package's config/ folder (share/robot_stack_ros/config)
        parameters: {rate_hz: 250.0}        # applied after the files
        remappings: {~/commands: /forward_position_controller/commands}
        respawn: false               # restart when it exits on its own
        respawn_delay_s: 1.0
        required: true               # when it exits on its own, stop the whole graph
      - name: policy_server          # a plain process (launch's ExecuteProcess) has cmd instead
        cmd: [robot-stack, serve, --manifest, "$(var manifest)", --bind, "$(var policy_endpoint)"]

:meth:`GraphSpec.resolve` substitutes the arguments and gives :class:`NodeLaunch` es; ``launch/graph_launch.py``
turns each into ``launch_ros.actions.Node(**node.launch_kwargs())`` (or ``ExecuteProcess``), and
:mod:`robot_stack.graph.supervisor` into ``node.argv()`` — the same names, parameters, files and remappings.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_stack.config import read_yaml
from robot_stack.errors import ConfigError

__all__ = [
    "GRAPHS_DIR",
    "PACKAGE_CONFIG_DIR",
    "PACKAGE_DIR",
    "GraphSpec",
    "NodeLaunch",
    "graph_path",
    "load_graph",
]

_REPO = Path(__file__).resolve().parents[2]
#: The graph files shipped with the repository.
GRAPHS_DIR = _REPO / "launch" / "graphs"
#: The ament_python package of the ROS 2 nodes (added to PYTHONPATH by the supervisor when it is not installed).
PACKAGE_DIR = _REPO / "ros2_ws" / "src" / "robot_stack_ros"
#: Its parameter files (installed as share/robot_stack_ros/config by colcon).
PACKAGE_CONFIG_DIR = PACKAGE_DIR / "config"

_VAR = re.compile(r"\$\(var ([A-Za-z_][A-Za-z0-9_]*)\)")
_NODE_KEYS = {
    "name", "package", "executable", "namespace", "parameters_files", "parameters", "remappings", "arguments",
    "respawn", "respawn_delay_s", "required", "cmd", "env", "max_restarts",
}  # fmt: skip


@dataclass(frozen=True)
class NodeLaunch:
    """One process of a resolved graph.

    Attributes:
        name: node name (ROS ``__node``) or process name.
        package, executable: the ROS package and console-script (empty for a plain process).
        cmd: argv of a plain process (empty for a ROS node).
        namespace: ROS namespace ("" = root).
        parameters_files: absolute parameter-file paths, applied in order.
        parameters: inline parameters, applied after the files.
        remappings: (from, to) topic/service remappings.
        arguments: extra command-line arguments before ``--ros-args``.
        respawn, respawn_delay_s, max_restarts: restart policy when it exits on its own.
        required: its exit on its own stops the whole graph.
        env: extra environment variables.
    """

    name: str
    package: str = ""
    executable: str = ""
    cmd: tuple[str, ...] = ()
    namespace: str = ""
    parameters_files: tuple[str, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    arguments: tuple[str, ...] = ()
    respawn: bool = False
    respawn_delay_s: float = 1.0
    max_restarts: int = 5
    required: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_ros_node(self) -> bool:
        return bool(self.executable)

    def launch_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``launch_ros.actions.Node`` (ROS node) or ``launch.actions.ExecuteProcess``."""
        common: dict[str, Any] = {"respawn": self.respawn, "respawn_delay": self.respawn_delay_s, "output": "screen"}
        if self.env:
            common["additional_env"] = dict(self.env)
        if not self.is_ros_node:
            return {"cmd": list(self.cmd), "name": self.name, **common}
        kwargs: dict[str, Any] = {
            "package": self.package,
            "executable": self.executable,
            "name": self.name,
            "namespace": self.namespace,
            "parameters": [*self.parameters_files, *([dict(self.parameters)] if self.parameters else [])],
            "remappings": list(self.remappings),
            **common,
        }
        if self.arguments:
            kwargs["arguments"] = list(self.arguments)
        return kwargs

    def ros_args(self, inline_params_file: str | None = None) -> list[str]:
        """The ``--ros-args`` part of the argv: node name, namespace, parameter files (the inline parameters
        written to ``inline_params_file`` by the caller, applied last) and remappings."""
        out = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            out += ["-r", f"__ns:={self.namespace if self.namespace.startswith('/') else '/' + self.namespace}"]
        for path in self.parameters_files:
            out += ["--params-file", path]
        if inline_params_file:
            out += ["--params-file", inline_params_file]
        for src, dst in self.remappings:
            out += ["-r", f"{src}:={dst}"]
        return out

    def argv(self, inline_params_file: str | None = None, python: str | None = None) -> list[str]:
        """The command the supervisor runs: ``python -m <package>.<executable> <arguments> --ros-args ...`` for a
        ROS node (the console script's module, importable without colcon), else ``cmd``."""
        if not self.is_ros_node:
            return list(self.cmd)
        return [
            python or sys.executable,
            "-m",
            f"{self.package}.{self.executable}",
            *self.arguments,
            *self.ros_args(inline_params_file),
        ]

    def inline_params_document(self) -> dict[str, Any]:
        """The inline parameters as a ROS parameter file (``/**: ros__parameters: {...}``)."""
        return {"/**": {"ros__parameters": dict(self.parameters)}}


def _substitute(value: Any, args: Mapping[str, str], where: str) -> Any:
    if isinstance(value, str):
        value = value.replace("$(dirname)", args.get("__dirname__", "."))

        def one(m: re.Match[str]) -> str:
            if m.group(1) not in args:
                raise ConfigError(f"{where}: $(var {m.group(1)}) is not a declared argument; declared: {sorted(args)}")
            return str(args[m.group(1)])

        whole = _VAR.fullmatch(value)
        if whole is not None:  # a whole-value substitution keeps YAML typing of the argument
            raw = one(whole)
            return _typed(raw)
        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [_substitute(v, args, where) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, args, f"{where}.{k}") for k, v in value.items()}
    return value


def _typed(raw: str) -> Any:
    """A launch-argument string as the YAML scalar it spells (``"2.5"`` -> 2.5, ``"true"`` -> True)."""
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (bool, int, float, str)) else raw


@dataclass(frozen=True)
class GraphSpec:
    """A graph file, unresolved (arguments not yet substituted)."""

    name: str
    description: str
    arguments: Mapping[str, str]
    nodes: tuple[Mapping[str, Any], ...]
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> GraphSpec:
        """Validate a parsed graph document.

        Raises:
            ConfigError: missing name/nodes, unknown keys, duplicate node names, a node that is neither a ROS node
                (package + executable) nor a process (cmd).
        """
        if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
            raise ConfigError(f"{source}: a graph needs a non-empty 'nodes' list (see robot_stack/graph/spec.py)")
        args = doc.get("arguments") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"{source}: 'arguments' must map names to default values")
        seen: set[str] = set()
        for i, node in enumerate(doc["nodes"]):
            where = f"{source}: nodes[{i}]"
            if not isinstance(node, dict) or not isinstance(node.get("name"), str) or not node["name"]:
                raise ConfigError(f"{where}: every node needs a 'name'")
            unknown = set(node) - _NODE_KEYS
            if unknown:
                raise ConfigError(
                    f"{where} ({node['name']}): unknown keys {sorted(unknown)}; allowed {sorted(_NODE_KEYS)}"
                )
            if node["name"] in seen:
                raise ConfigError(f"{where}: duplicate node name {node['name']!r}")
            seen.add(node["name"])
            ros = "executable" in node or "package" in node
            if ros == ("cmd" in node) or (ros and not (node.get("package") and node.get("executable"))):
                raise ConfigError(
                    f"{where} ({node['name']}): give either package + executable (a ROS node) or cmd (a process)"
                )
        return cls(
            str(doc.get("name") or Path(source).stem),
            str(doc.get("description", "")),
            {str(k): "" if v is None else str(v) for k, v in args.items()},
            tuple(doc["nodes"]),
            source,
        )

    def resolve(
        self, overrides: Mapping[str, str] | None = None, config_dir: str | Path | None = None
    ) -> list[NodeLaunch]:
        """Substitute the arguments (defaults, then ``overrides``) and return the processes in start order.

        Args:
            config_dir: where relative ``parameters_files`` live (default :data:`PACKAGE_CONFIG_DIR`).

        Raises:
            ConfigError: an override names an undeclared argument, a ``$(var)`` is undeclared, or a parameter file
                is missing.
        """
        unknown = set(overrides or {}) - set(self.arguments)
        if unknown:
            raise ConfigError(f"{self.source}: unknown arguments {sorted(unknown)}; declared: {sorted(self.arguments)}")
        args = {**self.arguments, **{k: str(v) for k, v in (overrides or {}).items()}}
        dirname = str(Path(self.source).resolve().parent) if self.source != "<dict>" else "."
        args = {k: v.replace("$(dirname)", dirname) for k, v in args.items()}
        args["__dirname__"] = dirname
        cfg = Path(config_dir) if config_dir is not None else PACKAGE_CONFIG_DIR
        out = []
        for raw in self.nodes:
            node = _substitute(dict(raw), args, f"{self.source}: {raw['name']}")
            files = []
            for f in node.get("parameters_files") or []:
                path = Path(f) if Path(f).is_absolute() else cfg / f
                if not path.is_file():
                    raise ConfigError(f"{self.source}: {node['name']}: parameter file {path} not found")
                files.append(str(path))
            cmd = node.get("cmd") or ()
            out.append(
                NodeLaunch(
                    name=node["name"],
                    package=node.get("package", ""),
                    executable=node.get("executable", ""),
                    cmd=tuple(shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]),
                    namespace=str(node.get("namespace") or ""),
                    parameters_files=tuple(files),
                    parameters=dict(node.get("parameters") or {}),
                    remappings=tuple((str(a), str(b)) for a, b in (node.get("remappings") or {}).items()),
                    arguments=tuple(str(a) for a in node.get("arguments") or ()),
                    respawn=bool(node.get("respawn", False)),
                    respawn_delay_s=float(node.get("respawn_delay_s", 1.0)),
                    max_restarts=int(node.get("max_restarts", 5)),
                    required=bool(node.get("required", False)),
                    env={str(k): str(v) for k, v in (node.get("env") or {}).items()},
                )
            )
        return out


def graph_path(name_or_path: str | Path) -> Path:
    """A graph file path from a path or the name of a shipped graph (``sim`` -> launch/graphs/sim.yaml)."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return GRAPHS_DIR / f"{name_or_path}.yaml"


def load_graph(name_or_path: str | Path) -> GraphSpec:
    """Read and validate a graph file (a path, or a shipped graph's name).

    Raises:
        ConfigError: the file is missing, malformed YAML, or not a valid graph.
    """
    path = graph_path(name_or_path)
    if not path.is_file():
        shipped = sorted(p.stem for p in GRAPHS_DIR.glob("*.yaml"))
        raise ConfigError(f"graph file {path} not found; shipped graphs: {shipped}")
    return GraphSpec.from_dict(read_yaml(path, what="graph file"), str(path))


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["name:=value", ...]`` (``ros2 launch`` syntax) -> {name: value}.

    Raises:
        ConfigError: an item without ``:=``.
    """
    out = {}
    for item in items:
        if ":=" not in item:
            raise ConfigError(f"argument {item!r}: expected name:=value (as with ros2 launch)")
        k, v = item.split(":=", 1)
        out[k.strip()] = v
    return out
