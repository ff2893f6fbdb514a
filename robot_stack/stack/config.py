"""``StackConfig``: what one robot-side stack is made of, as frozen values loaded from YAML presets.

A preset is a YAML file in ``robot_stack/configs/`` (``demo``, ``hardware``, ...) or anywhere on disk; every field
has its default here, so a preset names only what differs. Command-line overrides use dotted paths, the way
LeRobot's config presets work::

    config = load_stack_config("demo", ["control.rate_hz=1000", "policy.action_head=binned"])

Sections: ``robot``, ``cameras`` (a list), ``calibration``, ``policy``, ``decoder``, ``control``, ``cycle``,
``task``. Unknown keys are errors (a typo must not silently keep a default). Units: seconds, metres, hertz.

**The arm.** ``robot.model`` names an arm described in :mod:`robot_stack.robots` (``panda``, ``ur5``, ``so101``);
what is robot-specific comes from its description: the joint limits (the robot's own), the control rate
(``control.rate_hz`` unset: :attr:`StackConfig.control_rate_hz`), the workspace box (``control.workspace_from_robot``:
:attr:`StackConfig.workspace`), the IK, home posture and "tool down" orientation of the decoders. ``--robot NAME``
(:func:`with_robot`) switches a preset to another arm: the model, and for a simulated arm its cell (calibration scene),
robot id and shipped cross-embodiment policy from ``robot_stack/configs/robots/<name>.yaml``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml

from robot_stack.config import read_yaml
from robot_stack.control.scheduler import BlendMode
from robot_stack.errors import ConfigError
from robot_stack.policy.manifest import PROVIDERS, SHIPPED_MODELS_DIR
from robot_stack.robots.embodiment import Box, Embodiment
from robot_stack.robots.registry import ROBOT_MODELS, get_embodiment
from robot_stack.types import ActionHead

__all__ = [
    "EXECUTOR_MODES",
    "PRESETS_DIR",
    "ROBOT_PRESETS_DIR",
    "TASK_SUITES",
    "CalibrationConfig",
    "CameraConfig",
    "ControlConfig",
    "CycleConfig",
    "DecoderConfig",
    "PolicyConfig",
    "RobotConfig",
    "StackConfig",
    "TaskConfig",
    "available_presets",
    "load_stack_config",
    "with_robot",
]

#: Where the control loop runs (``control.executor``).
EXECUTOR_MODES = ("thread", "process")
#: The presets shipped with the package.
PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"
#: How far inside the safety filter's tightened joint limits the decoders' IK stays, rad.
IK_LIMIT_SLACK_RAD = 0.005
#: Per-arm overlays applied by ``--robot`` (:func:`with_robot`): ``<name>.yaml``.
ROBOT_PRESETS_DIR = PRESETS_DIR / "robots"


def _positive(owner: str, name: str, value: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{owner}.{name}: expected a positive number, got {value!r}")


@dataclass(frozen=True)
class RobotConfig:
    """The arm.

    Attributes:
        kind: ``sim`` (MuJoCo cell), ``kinematic`` (perfect-tracking twin, no physics), or ``factory``
            (``factory`` names a function returning your connected :class:`~robot_stack.robots.base.Robot`).
        model: the arm's description (``panda`` | ``ur5`` | ``so101``: :mod:`robot_stack.robots.registry`).
        factory: ``package.module:function`` for ``kind: factory`` (e.g. ``robot_stack.robots.ur_rtde:connect``).
        options: keyword arguments of the factory (e.g. ``{host: 192.168.1.10}``).
        robot_id: the id sent to the policy server (scheduling, metrics).
    """

    kind: str = "sim"
    model: str = "panda"
    factory: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)
    robot_id: str = "sim-panda-0"

    def __post_init__(self) -> None:
        if self.kind not in ("sim", "kinematic", "factory"):
            raise ConfigError(f"robot.kind: {self.kind!r} unknown; expected sim | kinematic | factory")
        if self.kind == "factory" and ":" not in self.factory:
            raise ConfigError("robot.factory: expected package.module:function for kind: factory")
        if self.model not in ROBOT_MODELS:
            raise ConfigError(f"robot.model: {self.model!r} has no description; available: {', '.join(ROBOT_MODELS)}")

    @property
    def embodiment(self) -> Embodiment:
        """The arm's description."""
        return get_embodiment(self.model)


@dataclass(frozen=True)
class CameraConfig:
    """One RGB-D camera.

    Attributes:
        camera_id: logical name (model inputs ``<camera_id>/rgb`` and ``/xyz``; calibration file name).
        kind: ``sim`` (rendered from the MuJoCo cell), ``realsense`` (live, by ``serial``), ``playback``
            (a ``.db3`` recording at ``playback``).
        serial: RealSense serial number (a string: serials are not numbers).
        playback: recording path for ``kind: playback``.
        width, height: image size, pixels; fps: frame rate, Hz.
    """

    camera_id: str = "front"
    kind: str = "sim"
    serial: str = ""
    playback: str = ""
    width: int = 640
    height: int = 480
    fps: int = 30

    def __post_init__(self) -> None:
        if self.kind not in ("sim", "realsense", "playback"):
            raise ConfigError(
                f"cameras[{self.camera_id}].kind: {self.kind!r} unknown; expected sim | realsense | playback"
            )
        if self.kind == "playback" and not self.playback:
            raise ConfigError(f"cameras[{self.camera_id}].playback: a .db3 path is required for kind: playback")
        object.__setattr__(self, "serial", str(self.serial))


@dataclass(frozen=True)
class CalibrationConfig:
    """Where the cameras' calibration files are: ``<root>/<scene>/<camera_id>.yaml`` (root None = the repo's).
    ``allow_stale``: use a calibration past its ``valid_days`` (a warning is logged; ``--allow-stale``)."""

    scene: str = "sim_tabletop"
    root: str | None = None
    allow_stale: bool = False


@dataclass(frozen=True)
class PolicyConfig:
    """The policy and how to reach it.

    Attributes:
        manifest: model manifest: a path, or the name of a shipped model (``robot_stack/policy/models/<name>.yaml``).
        endpoint: ZeroMQ endpoint of a running server (``tcp://host:5555``), or an openpi-protocol websocket server
            (``ws://host:8000``); empty = start a local server subprocess for ``manifest``.
        provider: ONNX Runtime execution provider of a local server (``cpu | cuda | tensorrt``).
        engine: local server backend (``ort | tensorrt``).
        threads: intra-op threads of a local server (1 leaves the cores to the control loop on small machines).
        action_head: the action language (demo variants re-express the shipped model's chunks in it).
        timeout_s: the client's per-call deadline (s) for metadata, health and clock sync.
        request_timeout_s: per-cycle deadline at the server (s); None = ``timeout_s``.
        curve_server_key, curve_client_secret: CURVE key files (both or neither).
    """

    manifest: str = "reach-touch-v1"
    endpoint: str = ""
    provider: str = "cpu"
    engine: str = "ort"
    threads: int | None = 1
    action_head: str = ActionHead.CONTINUOUS.value
    timeout_s: float = 2.0
    request_timeout_s: float | None = None
    curve_server_key: str = ""
    curve_client_secret: str = ""

    def __post_init__(self) -> None:
        if self.provider not in PROVIDERS:
            raise ConfigError(f"policy.provider: {self.provider!r} unknown; expected one of {PROVIDERS}")
        if self.engine not in ("ort", "tensorrt"):
            raise ConfigError(f"policy.engine: {self.engine!r} unknown; expected ort | tensorrt")
        object.__setattr__(self, "action_head", ActionHead.parse(self.action_head).value)
        _positive("policy", "timeout_s", self.timeout_s)
        if self.request_timeout_s is not None:
            _positive("policy", "request_timeout_s", self.request_timeout_s)
        if bool(self.curve_server_key) != bool(self.curve_client_secret):
            raise ConfigError("policy: curve_server_key and curve_client_secret go together (both or neither)")

    def manifest_path(self) -> Path:
        """The manifest file: ``manifest`` as a path if it names a file, else the shipped model of that name."""
        path = Path(self.manifest)
        if path.suffix in (".yaml", ".yml") or path.is_file():
            return path
        return SHIPPED_MODELS_DIR / f"{self.manifest}.yaml"


@dataclass(frozen=True)
class DecoderConfig:
    """How chunks become joint trajectories (see :class:`~robot_stack.kinematics.reach.ReachPolicy`).

    Attributes:
        orientation: TCP orientation of position-only heads (``down`` = gripper pointing down).
        best_effort_m, best_effort_rad: an IK residual within these counts as solved.
        clamp_m: targets up to this far beyond reach are clamped onto the reachable set.
        drop_unreachable: drop steps that stay unreachable (else the chunk is refused).
        floor_z_m: targets below this height over the table top are raised to it.
        options: extra keyword arguments of the decoder (e.g. a bin spec or tokenizer manifest path).
    """

    orientation: str = "down"
    best_effort_m: float = 0.005
    best_effort_rad: float = 0.01
    clamp_m: float = 0.05
    drop_unreachable: bool = True
    floor_z_m: float | None = 0.015
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ControlConfig:
    """The executor and the chunk scheduler.

    Attributes:
        rate_hz: control rate, Hz; None = the arm's own (:attr:`StackConfig.control_rate_hz`).
        watchdog_s: seconds without a trajectory covering now before a safe hold.
        blend: chunk-to-chunk blending, ``splice | ensemble | none``.
        extend_s: a late chunk's predecessor comes to rest over at least this long; None = ``watchdog_s``.
        executor: where the control loop runs: ``thread`` (a thread of this process) or ``process`` (its own
            process, pinned to a CPU with ``SCHED_FIFO`` where the host allows: docs/realtime.md). Lock-step
            (simulated-time) loops always tick in-process.
        realtime_cpu: ``process`` only: the CPU to pin it to (None: the last one this process may use; -1: none).
        realtime_priority: ``process`` only: the ``SCHED_FIFO`` priority to ask for (1-99; None: do not ask).
        workspace_lower, workspace_upper: TCP box in the base frame (m), both or neither.
        workspace_from_robot: without an explicit box, keep the TCP in the arm's own box (``embodiment.workspace``;
            :attr:`StackConfig.workspace`); False and no box = no workspace limit.
        workspace_margin_m: the safety filter brakes this far inside the box.
        limit_margin_rad: the safety filter tightens every joint's position limits by this (rad); the decoders' IK
            keeps a further :data:`IK_LIMIT_SLACK_RAD` inside, so plans never meet the filter's bound.
    """

    rate_hz: float | None = None
    watchdog_s: float = 0.3
    blend: str = BlendMode.SPLICE.value
    extend_s: float | None = None
    executor: str = "thread"
    realtime_cpu: int | None = None
    realtime_priority: int | None = 80
    workspace_lower: tuple[float, float, float] | None = None
    workspace_upper: tuple[float, float, float] | None = None
    workspace_margin_m: float = 0.01
    workspace_from_robot: bool = False
    limit_margin_rad: float = 0.02

    def __post_init__(self) -> None:
        if self.rate_hz is not None:
            _positive("control", "rate_hz", self.rate_hz)
        _positive("control", "watchdog_s", self.watchdog_s)
        if self.executor not in EXECUTOR_MODES:
            raise ConfigError(f"control.executor: {self.executor!r} unknown; expected thread | process")
        if self.realtime_priority is not None and not 1 <= self.realtime_priority <= 99:
            raise ConfigError(f"control.realtime_priority: expected 1..99 or null, got {self.realtime_priority!r}")
        try:
            BlendMode(self.blend)
        except ValueError:
            raise ConfigError(f"control.blend: {self.blend!r} unknown; expected splice | ensemble | none") from None
        if not (math.isfinite(self.limit_margin_rad) and self.limit_margin_rad >= 0):
            raise ConfigError(f"control.limit_margin_rad: expected rad >= 0, got {self.limit_margin_rad!r}")
        if (self.workspace_lower is None) != (self.workspace_upper is None):
            raise ConfigError("control: workspace_lower and workspace_upper go together (both or neither)")
        for name in ("workspace_lower", "workspace_upper"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != 3:
                    raise ConfigError(f"control.{name}: expected [x, y, z] metres, got {value!r}")
                object.__setattr__(self, name, tuple(float(v) for v in value))

    @property
    def extension_s(self) -> float:
        return self.watchdog_s if self.extend_s is None else self.extend_s


@dataclass(frozen=True)
class CycleConfig:
    """The policy cycle (see :class:`~robot_stack.cycle.PolicyCycle`).

    Attributes:
        max_frame_age_s: older frames are never acted on.
        pipelining: capture the next observation while a slow request is in flight.
        send_ahead: also send the next request as soon as an answer arrives (needs a spare core).
        recovery: retreat to the start posture when the policy is stuck at a limit.
        recovery_blocked_s: a blocked run this long (s) also triggers the retreat; None = cycles only.
        rtc: send the executing plan's prefix with every request to a model that takes it (real-time chunking of
            flow-matching policies; a model that declares neither ``flow_matching: {rtc: true}`` nor
            ``vla: {rtc: true}`` gets none).
    """

    max_frame_age_s: float = 0.25
    pipelining: bool = True
    send_ahead: bool = False
    recovery: bool = True
    recovery_blocked_s: float | None = 1.5
    rtc: bool = True

    def __post_init__(self) -> None:
        _positive("cycle", "max_frame_age_s", self.max_frame_age_s)


#: Task suites of the simulated cell: ``reach`` (touch the red cube, the demo's task) and ``tabletop`` (three objects,
#: language-conditioned instructions: :mod:`robot_stack.sim.tabletop`).
TASK_SUITES = ("reach", "tabletop")


@dataclass(frozen=True)
class TaskConfig:
    """The task: its instruction (sent with every observation), how long an episode may take (s), and which task
    suite a simulated cell is set up for (``reach`` | ``tabletop``: the objects on its table)."""

    instruction: str = ""
    max_duration_s: float = 10.0
    suite: str = "reach"

    def __post_init__(self) -> None:
        _positive("task", "max_duration_s", self.max_duration_s)
        if self.suite not in TASK_SUITES:
            raise ConfigError(f"task.suite: {self.suite!r} unknown; expected one of {TASK_SUITES}")


@dataclass(frozen=True)
class StackConfig:
    """One robot-side stack: robot, cameras, calibration, policy, decoder, control, cycle, task."""

    name: str = "custom"
    robot: RobotConfig = field(default_factory=RobotConfig)
    cameras: tuple[CameraConfig, ...] = (CameraConfig(),)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    cycle: CycleConfig = field(default_factory=CycleConfig)
    task: TaskConfig = field(default_factory=TaskConfig)

    def __post_init__(self) -> None:
        if not self.cameras:
            raise ConfigError("cameras: at least one camera is required")
        ids = [c.camera_id for c in self.cameras]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"cameras: camera ids must be unique, got {ids}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "stack config") -> StackConfig:
        """Build from plain data (a parsed YAML document); unknown keys and wrong types are ConfigErrors."""
        return _build(cls, data, where)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-ready) that :meth:`from_dict` reads back to an equal config."""
        return _plain(dataclasses.asdict(self))

    def with_overrides(self, overrides: Sequence[str]) -> StackConfig:
        """A copy with ``section.field=value`` overrides applied (values parsed as YAML scalars/lists)."""
        data = self.to_dict()
        for item in overrides:
            path, sep, raw = item.partition("=")
            if not sep or not path.strip():
                raise ConfigError(f"override {item!r}: expected section.field=value, e.g. control.rate_hz=1000")
            _set_path(data, path.strip().split("."), _parse_value(raw), item)
        return StackConfig.from_dict(data, f"{self.name} with overrides")

    def replace(self, **sections: Any) -> StackConfig:
        """A copy with whole sections replaced, e.g.
        ``config.replace(control=dataclasses.replace(config.control, rate_hz=1000.0))``."""
        return dataclasses.replace(self, **sections)

    @property
    def embodiment(self) -> Embodiment:
        """The arm's description (``robot.model``)."""
        return self.robot.embodiment

    @property
    def control_rate_hz(self) -> float:
        """The executor rate, Hz: ``control.rate_hz``, else the arm's own."""
        rate = self.control.rate_hz
        return float(rate) if rate is not None else float(self.embodiment.control_rate_hz)

    @property
    def workspace(self) -> Box | None:
        """The TCP box the safety filter keeps the tool in (base frame, m): ``control.workspace_*``, else the arm's
        with ``control.workspace_from_robot``, else None (no box)."""
        c = self.control
        if c.workspace_lower is not None and c.workspace_upper is not None:
            return Box(c.workspace_lower, c.workspace_upper)
        return self.embodiment.workspace if c.workspace_from_robot else None


def available_presets() -> tuple[str, ...]:
    """Names of the shipped presets."""
    return tuple(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))


def with_robot(config: StackConfig, robot: str) -> StackConfig:
    """``config`` for the arm ``robot``: ``robot.model``, and for a simulated (or kinematic) arm the fields of its
    overlay ``robot_stack/configs/robots/<robot>.yaml`` (its cell's calibration scene, robot id, the shipped policy
    that serves every arm). A real arm (``kind: factory``) gets only the model: its factory, options and calibration
    scene are the cell's own."""
    get_embodiment(robot)  # ConfigError naming the known arms
    data = config.to_dict()
    data["robot"]["model"] = robot
    if config.robot.kind != "factory":
        path = ROBOT_PRESETS_DIR / f"{robot}.yaml"
        overlay = read_yaml(path, "robot overlay") if path.is_file() else {}
        if not isinstance(overlay, Mapping):
            raise ConfigError(f"robot overlay {path}: expected a mapping of sections")
        for section, values in overlay.items():
            if section not in data or not isinstance(values, Mapping) or not isinstance(data[section], dict):
                raise ConfigError(f"robot overlay {path}: {section!r} is not a section with fields")
            data[section].update(values)
    return StackConfig.from_dict(data, f"{config.name} for robot {robot}")


def load_stack_config(
    preset: str | Path = "demo", overrides: Sequence[str] = (), robot: str | None = None
) -> StackConfig:
    """Load a preset (a shipped name such as ``demo``, or a YAML path), switch it to arm ``robot`` (:func:`with_robot`)
    when given, and apply ``overrides``."""
    path = Path(preset)
    if not path.is_file():
        if path.suffix or "/" in str(preset):
            raise ConfigError(f"stack config {preset}: no such file")
        path = PRESETS_DIR / f"{preset}.yaml"
        if not path.is_file():
            raise ConfigError(f"stack config preset {preset!r} unknown; available: {', '.join(available_presets())}")
    data = read_yaml(path, "stack config")
    if not isinstance(data, Mapping):
        raise ConfigError(f"stack config {path}: expected a mapping of sections, got {type(data).__name__}")
    config = StackConfig.from_dict({"name": path.stem, **data}, str(path))
    if robot is not None:
        config = with_robot(config, robot)
    return config.with_overrides(overrides) if overrides else config


# ------------------------------------------------------------------------------------------------ plumbing


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _parse_value(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override value {raw!r} is not a YAML value: {exc}") from exc


def _set_path(data: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    node: Any = data
    for i, key in enumerate(path[:-1]):
        if isinstance(node, list):
            matches = [c for c in node if isinstance(c, dict) and c.get("camera_id") == key]
            if not matches:
                raise ConfigError(f"override {item!r}: no camera {key!r} (cameras are addressed by camera_id)")
            node = matches[0]
        elif isinstance(node, dict) and key in node and isinstance(node[key], dict | list):
            node = node[key]
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(path[: i + 1])} is not a section")
    free_mapping = len(path) >= 2 and path[-2] == "options"  # robot.options / decoder.options take any key
    if not isinstance(node, dict) or (path[-1] not in node and not free_mapping):
        raise ConfigError(f"override {item!r}: unknown field {'.'.join(path)}")
    node[path[-1]] = value


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    kwargs = {name: _coerce(hints[name], value, f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """``value`` (plain YAML data) as the annotated type: nested config dataclasses, tuples, numbers."""
    origin, args = get_origin(hint), get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if origin is tuple and args and args[-1] is Ellipsis:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if args and type(None) in args:  # Optional[X]
        if value is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, bool) or value is None or isinstance(value, list | dict):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)  # a serial number parsed as a YAML integer stays a string
    if origin is Mapping or hint is Mapping:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value
