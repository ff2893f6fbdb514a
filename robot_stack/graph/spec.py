"""One declarative description of a process graph; ``ros2 launch`` and ``robot-stack up`` are both derived from it.

A graph file (``launch/graphs/*.yaml``)::

    name: sim
    description: MuJoCo Panda cell driven through ROS 2
    arguments:                       # launch arguments; "$(var name)" substitutes one
      policy_endpoint: tcp://127.0.0.1:5555          # short form: name -> default (type auto)
      camera_serial:                                 # long form
        default: ""
        type: str                    # auto (YAML rules) | str | int | float | bool; str keeps "0123" as text
        description: RealSense serial number ('' = the only connected device)
        choices: []                  # optional: the values allowed
      manifest: $(python_package robot_stack)/policy/models/reach-touch-v1.yaml
                                     # $(python_package X): folder of the importable Python package X;
                                     # $(dirname): the graph file's folder (as in launch's YAML frontend)
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
        max_restarts: 5              # give up after this many restarts
        required: true               # when it exits on its own, stop the whole graph
      - name: policy_server          # a plain process (launch's ExecuteProcess) has cmd instead
        cmd: [robot-stack, serve, --manifest, "$(var manifest)", --bind, "$(var policy_endpoint)"]

:meth:`GraphSpec.resolve` checks and substitutes the arguments and gives :class:`NodeLaunch` es;
``launch/graph_actions.py`` turns each into ``launch_ros.actions.Node(**node.launch_kwargs())`` (or
``ExecuteProcess``), and :mod:`robot_stack.graph.supervisor` into ``node.argv()`` — the same names, parameters, files,
remappings and restart policy. A node that exits with :data:`CONFIG_ERROR_EXIT_CODE` (it refused its configuration)
is never restarted by either launcher.
"""

from __future__ import annotations

import difflib
import importlib.util
import math
import os
import re
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robot_stack.config import read_yaml
from robot_stack.errors import ConfigError

__all__ = [
    "ARGUMENT_TYPES",
    "CONFIG_ERROR_EXIT_CODE",
    "GRAPHS_DIR",
    "LAUNCHER_ARGUMENTS",
    "MIN_RESPAWN_DELAY_S",
    "PACKAGE_CONFIG_DIR",
    "PACKAGE_DIR",
    "GraphArgument",
    "GraphSpec",
    "NodeLaunch",
    "command_line_overrides",
    "python_package_dir",
    "graph_path",
    "launch_layout",
    "load_graph",
    "parse_overrides",
]

_REPO = Path(__file__).resolve().parents[2]
#: The graph files shipped with the repository.
GRAPHS_DIR = _REPO / "launch" / "graphs"
#: The ament_python package of the ROS 2 nodes (added to PYTHONPATH by the supervisor when it is not installed).
PACKAGE_DIR = _REPO / "ros2_ws" / "src" / "robot_stack_ros"
#: Its parameter files (installed as share/robot_stack_ros/config by colcon).
PACKAGE_CONFIG_DIR = PACKAGE_DIR / "config"

#: Exit code of a node that refused its configuration (a missing/invalid parameter or file): restarting it cannot
#: help, so neither ``robot-stack up`` nor ``ros2 launch`` restarts it (``robot_stack_ros.common.run_node``).
CONFIG_ERROR_EXIT_CODE = 2

#: Shortest restart delay of a respawning node, s: ``ros2 launch`` decides on a restart after this delay, which is
#: when ``launch/graph_actions.py`` stops a node that exited with :data:`CONFIG_ERROR_EXIT_CODE`.
MIN_RESPAWN_DELAY_S = 0.1

#: How a whole-value ``$(var name)`` is typed: ``auto`` = YAML rules ("2.5" -> 2.5, "true" -> True, "0123" -> 83!).
ARGUMENT_TYPES = ("auto", "str", "int", "float", "bool")

#: ``name:=value`` items that ``ros2 launch`` itself adds to the command line (``--launch-prefix ...``).
LAUNCHER_ARGUMENTS = frozenset({"launch-prefix", "launch-prefix-filter"})

_VAR = re.compile(r"\$\(var ([A-Za-z_][A-Za-z0-9_]*)\)")
_PYTHON_PACKAGE = re.compile(r"\$\(python_package ([A-Za-z_][A-Za-z0-9_.]*)\)")
_NODE_KEYS = {
    "name", "package", "executable", "namespace", "parameters_files", "parameters", "remappings", "arguments",
    "respawn", "respawn_delay_s", "required", "cmd", "env", "max_restarts",
}  # fmt: skip
_ARGUMENT_KEYS = {"default", "type", "description", "choices"}


@dataclass(frozen=True)
class NodeLaunch:
    """One process of a resolved graph.

    Attributes:
        name: node name (ROS ``__node``) or process name.
        package, executable: the ROS package and console-script (empty for a plain process).
        cmd: argv of a plain process (empty for a ROS node).
        namespace: ROS namespace ("" = root).
        parameters_files: absolute parameter-file paths, applied in order.
        parameters: inline parameters, applied after the files (a ``str`` value is a string parameter, whatever
            its text looks like: both launchers must keep it one).
        remappings: (from, to) topic/service remappings.
        arguments: extra command-line arguments before ``--ros-args``.
        respawn, respawn_delay_s, max_restarts: restart policy when it exits on its own (never after an exit with
            :data:`CONFIG_ERROR_EXIT_CODE`).
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
        """Keyword arguments for ``launch_ros.actions.Node`` (ROS node) or ``launch.actions.ExecuteProcess``.

        ``respawn_max_retries`` carries :attr:`max_restarts` (launch's default, -1, restarts forever). String
        parameters are plain ``str`` here: launch_ros parses plain strings as YAML, so ``launch/graph_actions.py``
        wraps them in ``ParameterValue(value, value_type=str)``.
        """
        common: dict[str, Any] = {
            "respawn": self.respawn,
            "respawn_delay": self.respawn_delay_s,
            "respawn_max_retries": self.max_restarts,
            "output": "screen",
        }
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
        """The inline parameters as a ROS parameter file (``/**: ros__parameters: {...}``); written with
        ``yaml.safe_dump``, a string that looks like a number is quoted, and rcl reads a quoted scalar as a string."""
        return {"/**": {"ros__parameters": dict(self.parameters)}}


def _yaml_scalar(raw: str) -> Any:
    """A launch-argument string as the YAML scalar it spells (``"2.5"`` -> 2.5, ``"true"`` -> True)."""
    import yaml

    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if isinstance(value, (bool, int, float, str)) else raw


def python_package_dir(name: str) -> Path:
    """Folder of the importable Python package ``name`` (installed, editable or on PYTHONPATH).

    Raises:
        ConfigError: it is not importable here.
    """
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ConfigError(f"$(python_package {name}): no importable package {name!r}; install it (pip install ...)")
    return Path(locations[0]).resolve()


def _expand_builtins(text: str, dirname: str) -> str:
    """``$(dirname)`` and ``$(python_package X)`` expanded (paths normalised when the text is a path)."""
    if "$(" not in text:
        return text
    out = _PYTHON_PACKAGE.sub(lambda m: str(python_package_dir(m.group(1))), text.replace("$(dirname)", dirname))
    return os.path.normpath(out) if out.startswith(os.sep) and _VAR.search(out) is None else out


@dataclass(frozen=True)
class GraphArgument:
    """One launch argument of a graph.

    Attributes:
        name: ``name:=value`` on both command lines.
        default: its value when not given, as text (may hold ``$(dirname)`` / ``$(python_package X)``).
        description: what it sets (``ros2 launch -s`` and ``robot-stack up --print`` show it).
        type: how a whole-value ``$(var name)`` is typed (:data:`ARGUMENT_TYPES`); ``str`` keeps digit strings
            such as serial numbers as text, ``int``/``float``/``bool`` refuse values that do not spell one.
        choices: the allowed values (empty = any).
    """

    name: str
    default: str
    description: str = ""
    type: str = "auto"
    choices: tuple[str, ...] = ()

    def value(self, raw: str, where: str) -> Any:
        """``raw`` (command-line text) as this argument's type.

        Raises:
            ConfigError: not one of :attr:`choices`, or not a value of :attr:`type`.
        """
        if self.choices and raw not in self.choices:
            hint = difflib.get_close_matches(raw, self.choices, n=1)
            raise ConfigError(
                f"{where}: argument {self.name}:={raw!r} is not one of {list(self.choices)}"
                + (f"; did you mean {hint[0]!r}?" if hint else "")
            )
        what = f"{where}: argument {self.name}:={raw!r} ({self.description or 'no description'})"
        if self.type == "str":
            return raw
        if self.type == "auto":
            return _yaml_scalar(raw)
        if self.type == "bool":
            if raw.lower() not in ("true", "false"):
                raise ConfigError(f"{what}: expected true or false")
            return raw.lower() == "true"
        try:
            value: Any = int(raw, 10) if self.type == "int" else float(raw)
        except ValueError:
            kind = "an integer" if self.type == "int" else "a number"
            raise ConfigError(f"{what}: expected {kind}, e.g. {self.name}:={self.default or 0}") from None
        if self.type == "float" and not math.isfinite(value):
            raise ConfigError(f"{what}: expected a finite number")
        return value

    def help(self) -> str:
        """One line for ``ros2 launch -s`` / ``robot-stack up --show-args``: description and type."""
        kind = {"auto": "", "str": "text", "int": "integer", "float": "number", "bool": "true | false"}[self.type]
        text = self.description or "(no description in the graph file)"
        return f"{text} [{kind}]" if kind and not self.choices else text  # launch lists the choices itself

    def readable_default(self, dirname: str) -> str:
        """:attr:`default` with ``$(dirname)`` and ``$(python_package X)`` expanded (what ``ros2 launch -s``
        shows and what a launcher uses when the argument is not given)."""
        return _expand_builtins(self.default, dirname)

    @classmethod
    def from_yaml(cls, name: str, doc: Any, where: str) -> GraphArgument:
        """From a graph file's ``arguments`` entry: a scalar default or a mapping (see the module docstring).

        Raises:
            ConfigError: unknown keys, an unknown type, choices that are not a list, a default not in them.
        """
        if not isinstance(doc, dict):
            return cls(name, "" if doc is None else _text(doc))
        unknown = set(doc) - _ARGUMENT_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: argument {name}: unknown keys {sorted(unknown)}; allowed {sorted(_ARGUMENT_KEYS)}"
            )
        kind = str(doc.get("type", "auto"))
        if kind not in ARGUMENT_TYPES:
            raise ConfigError(f"{where}: argument {name}: type {kind!r} is not one of {list(ARGUMENT_TYPES)}")
        choices = doc.get("choices") or []
        if not isinstance(choices, list):
            raise ConfigError(f"{where}: argument {name}: 'choices' must be a list of values")
        arg = cls(
            name,
            "" if doc.get("default") is None else _text(doc["default"]),
            str(doc.get("description", "")),
            kind,
            tuple(_text(c) for c in choices),
        )
        if "$(" not in arg.default:
            arg.value(arg.default, f"{where} (default)")
        return arg


def _text(value: Any) -> str:
    """A YAML scalar as command-line text (``True`` -> ``"true"``, as ``name:=true`` would be written)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _substitute(value: Any, args: Mapping[str, str], typed: Mapping[str, Any], where: str, dirname: str) -> Any:
    if isinstance(value, str):
        value = _expand_builtins(value, dirname)

        def one(m: re.Match[str]) -> str:
            if m.group(1) not in args:
                raise ConfigError(f"{where}: $(var {m.group(1)}) is not a declared argument; declared: {sorted(args)}")
            return str(args[m.group(1)])

        whole = _VAR.fullmatch(value)
        if whole is not None:  # a whole-value substitution takes the argument's type ("str" keeps "0123" text)
            one(whole)
            return typed[whole.group(1)]
        return _VAR.sub(one, value)
    if isinstance(value, list):
        return [_substitute(v, args, typed, where, dirname) for v in value]
    if isinstance(value, dict):
        return {k: _substitute(v, args, typed, f"{where}.{k}", dirname) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class GraphSpec:
    """A graph file, unresolved (arguments not yet substituted)."""

    name: str
    description: str
    arguments: Mapping[str, GraphArgument]
    nodes: tuple[Mapping[str, Any], ...]
    source: str = "<dict>"

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> GraphSpec:
        """Validate a parsed graph document.

        Raises:
            ConfigError: missing name/nodes, unknown keys, duplicate node names, a node that is neither a ROS node
                (package + executable) nor a process (cmd), a malformed argument.
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
            {str(k): GraphArgument.from_yaml(str(k), v, source) for k, v in args.items()},
            tuple(doc["nodes"]),
            source,
        )

    @property
    def dirname(self) -> str:
        """The graph file's folder (``$(dirname)``); "." for a graph built from a dict."""
        return str(Path(self.source).resolve().parent) if self.source != "<dict>" else "."

    def defaults(self) -> dict[str, str]:
        """Every argument's readable default (``$(dirname)`` / ``$(python_package X)`` expanded)."""
        return {name: arg.readable_default(self.dirname) for name, arg in self.arguments.items()}

    def check_argument_names(self, names: Iterable[str]) -> None:
        """Refuse names that are not declared arguments (a typo such as ``sed:=3`` must not run with defaults).

        Raises:
            ConfigError: naming each unknown argument, the closest declared one, and the declared ones.
        """
        unknown = sorted(set(names) - set(self.arguments))
        if not unknown:
            return
        hints = [f"{u!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(u, self.arguments, n=1))
                 else repr(u) for u in unknown]  # fmt: skip
        raise ConfigError(f"{self.source}: unknown arguments {', '.join(hints)}; declared: {sorted(self.arguments)}")

    def resolve(
        self, overrides: Mapping[str, str] | None = None, config_dir: str | Path | None = None
    ) -> list[NodeLaunch]:
        """Check and substitute the arguments (defaults, then ``overrides``); return the processes in start order.

        Args:
            config_dir: where relative ``parameters_files`` live (default :data:`PACKAGE_CONFIG_DIR`).

        Raises:
            ConfigError: an override names an undeclared argument, a value is not of its argument's type or not
                one of its choices, a ``$(var)`` is undeclared, or a parameter file is missing.
        """
        self.check_argument_names(overrides or {})
        dirname = self.dirname
        args = {**self.defaults(), **{k: _expand_builtins(str(v), dirname) for k, v in (overrides or {}).items()}}
        typed = {k: self.arguments[k].value(v, self.source) for k, v in args.items()}
        cfg = Path(config_dir) if config_dir is not None else PACKAGE_CONFIG_DIR
        out = []
        for raw in self.nodes:
            node = _substitute(dict(raw), args, typed, f"{self.source}: {raw['name']}", dirname)
            files = []
            for f in node.get("parameters_files") or []:
                path = Path(f) if Path(f).is_absolute() else cfg / f
                if not path.is_file():
                    raise ConfigError(f"{self.source}: {node['name']}: parameter file {path} not found")
                files.append(str(path))
            cmd = node.get("cmd") or ()
            delay = float(node.get("respawn_delay_s", 1.0))
            if node.get("respawn") and delay < MIN_RESPAWN_DELAY_S:
                raise ConfigError(
                    f"{self.source}: {node['name']}: respawn_delay_s {delay} is below {MIN_RESPAWN_DELAY_S} s (under "
                    "ros2 launch a shorter delay restarts the node before a configuration error can stop it)"
                )
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
                    respawn_delay_s=delay,
                    max_restarts=int(node.get("max_restarts", 5)),
                    required=bool(node.get("required", False)),
                    env={str(k): str(v) for k, v in (node.get("env") or {}).items()},
                )
            )
        return out


def launch_layout(launch_dir: str | Path) -> tuple[Path, Path]:
    """Where the launch files in ``launch_dir`` find the graph files and the nodes' parameter files.

    Installed with the package (colcon: ``share/robot_stack_ros/launch``) -> ``share/robot_stack_ros/graphs`` and
    ``share/robot_stack_ros/config``; in the source tree (``launch/``) -> ``launch/graphs`` and
    ``ros2_ws/src/robot_stack_ros/config``.

    Returns:
        (graphs folder, parameter-files folder).

    Raises:
        ConfigError: neither layout is there.
    """
    here = Path(launch_dir)
    share = here.parent
    if (share / "package.xml").is_file() and (share / "graphs").is_dir():
        return share / "graphs", share / "config"
    source = here / "graphs", share / "ros2_ws" / "src" / "robot_stack_ros" / "config"
    if source[0].is_dir() and source[1].is_dir():
        return source
    raise ConfigError(
        f"launch files in {here}: no graph files beside them (looked for {share / 'graphs'} with "
        f"{share / 'package.xml'}, and for {source[0]} with {source[1]}); build the package "
        "(colcon build --packages-select robot_stack_ros) or run them from the repository"
    )


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
    """``["name:=value", ...]`` (``ros2 launch`` syntax) -> {name: value} (the last one wins, as in ros2 launch).

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


def command_line_overrides(argv: Sequence[str]) -> dict[str, str]:
    """The ``name:=value`` items of a launcher's command line (``LaunchContext.argv`` under ``ros2 launch``),
    without the ones ``ros2 launch`` adds itself (:data:`LAUNCHER_ARGUMENTS`); other items are ignored."""
    return {k: v for k, v in parse_overrides([a for a in argv if ":=" in a]).items() if k not in LAUNCHER_ARGUMENTS}
