"""Hardware-in-the-loop scenarios as data: which faults to inject when, and what the stack must do about them.

A scenario file (YAML) looks like::

    name: partition
    description: the network between robot and policy server goes silent for 1.4 s
    stack: demo            # the stack preset (robot_stack/configs) or a YAML file next to the scenario
    tier: short            # short (CI) | soak (marked slow)
    seed: 3                # cube placement of episode 0 (episode i uses seed + i)
    episodes: 1
    duration_s: 6.0        # an episode ends at this time, or earlier once the task succeeded after every fault
    client_timeout_s: 0.5  # per-request deadline of the policy client
    watchdog_s: 0.3        # executor watchdog
    workspace: {lower: [0.1, -0.5, 0.0], upper: [0.75, 0.5, 0.8]}   # optional TCP box, metres, base frame
    faults:
      - {kind: partition, start_s: 0.6, end_s: 2.0}
    expect:
      success: true
      holds_min: 1
      time_to_safe_hold_max_s: 1.6
    robots:                # optional: per-arm replacements of workspace / faults / expect / duration_s / seed
      so101: {workspace: {lower: [0.1, -0.3, 0.0], upper: [0.35, 0.3, 0.4]}}

The scenario runs on the preset's arm, or the one ``robot-stack hil --robot`` names (:meth:`Scenario.for_robot`
applies that arm's ``robots:`` entry). ``rate_hz`` unset = the arm's control rate; a ``push`` without ``body``
pushes the arm's hand (the TCP's parent link).

Times (``start_s``, ``end_s``) are seconds since the start of each episode (robot clock). The fault kinds and
their parameters are listed in :data:`FAULT_PARAMS`; the expectations in :data:`EXPECTATION_KEYS`. Unknown keys
are errors (a typo must not silently disable an assertion). ``unsafe_commands`` must be 0 in every scenario; no
file can relax that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from robot_stack.config import read_yaml
from robot_stack.errors import ConfigError

__all__ = ["EXPECTATION_KEYS", "FAULT_PARAMS", "FaultSpec", "Scenario", "load_scenario", "scenario_paths"]

#: Fault kind -> allowed parameters (name -> default). ``None`` default = required.
FAULT_PARAMS: dict[str, dict[str, Any]] = {
    # proxy between client and server: one-way delay per message, uniform jitter, drop probability per message
    "network": {"delay_ms": 0.0, "jitter_ms": 0.0, "loss": 0.0},
    # proxy drops every message both ways
    "partition": {},
    # SIGKILL the policy-server process at start_s; start it again (same endpoint) at end_s
    "server_kill": {},
    # camera frames: late (delivered late_ms after capture), drop (read fails), frozen (same frame), no_depth
    "camera": {"mode": None, "late_ms": 400.0},
    # the policy server's answers: nan | inf | out_of_range | jump | reach | slow
    "policy": {"mode": None, "sleep_ms": 250.0, "amplitude_m": 0.15, "target": None, "speed_m_per_step": 0.04},
    # external force on a MuJoCo body, newtons in the world (= base) frame
    "push": {"force_n": None, "body": ""},  # "" = the arm's hand (the TCP's parent link)
    # the server host's monotonic clock runs offset_s ahead of the robot's for the whole run
    "clock_skew": {"offset_s": None},
}

_POLICY_MODES = ("nan", "inf", "out_of_range", "jump", "reach", "slow")
_CAMERA_MODES = ("late", "drop", "frozen", "no_depth")

#: Expectation key -> meaning. Checked by :func:`robot_stack.hil.metrics.evaluate`.
EXPECTATION_KEYS: dict[str, str] = {
    "success": "bool: every episode touched the cube",
    "success_after_faults": "bool: the touch came after the first fault started (the task resumed)",
    "holds_min": "int: at least this many watchdog holds",
    "holds_max": "int: at most this many watchdog holds",
    "stop_events_max": "int: at most this many times the arm ran out of trajectory (motion discontinuities)",
    "time_to_safe_hold_max_s": "float: fault start -> arm held at zero velocity",
    "hold_after_coverage_max_s": "float: trajectory ran out -> watchdog hold declared",
    "time_to_recover_max_s": "float: fault end -> first new trajectory accepted",
    "stale_min": "map reason -> int: at least this many cycles refused for late/frozen/no_depth frames",
    "camera_errors_min": "int: at least this many cycles without a frame (dropped)",
    "decode_rejections_min": "int: at least this many answers rejected before the executor",
    "safety_interventions_min": "map kind -> int: at least this many safety-filter interventions of a kind",
    "prefilter_jerk_ratio_max": "float: the plan's own set-points (before the filter): peak jerk / limit",
    "prefilter_acceleration_ratio_max": "float: the plan's own set-points: peak acceleration / limit",
    "plan_vs_executed_p99_max_mrad": "float: p99 of the largest joint difference plan vs sent per tick, mrad",
    "max_jerk_ratio_max": "float: max |jerk| of the commands / jerk limit",
    "late_actions_max": "int: at most this many answers that arrived after their first step was due",
    "dropped_actions_min": "int: at least this many answers that never reached the executor",
    "dropped_actions_max": "int: at most this many answers that never reached the executor",
    "clock_offset_error_max_ms": "float: |measured - injected server clock offset|",
    "tcp_outside_workspace_max_m": "float: commanded TCP beyond the workspace box",
    "tcp_measured_outside_workspace_max_m": "float: measured TCP (robot state) beyond the workspace box",
    "warnings_min": "map logger suffix -> int: at least this many warnings logged by robot_stack.<suffix>",
}


@dataclass(frozen=True)
class FaultSpec:
    """One fault window.

    Attributes:
        kind: a key of :data:`FAULT_PARAMS`.
        start_s, end_s: window in seconds since the episode start (robot clock), ``0 <= start_s < end_s``.
        params: the kind's parameters with defaults filled in.
    """

    kind: str
    start_s: float
    end_s: float
    params: Mapping[str, Any] = field(default_factory=dict)

    def active(self, t_s: float) -> bool:
        """Whether the window covers ``t_s`` (seconds since episode start)."""
        return self.start_s <= t_s < self.end_s

    @property
    def label(self) -> str:
        mode = self.params.get("mode")
        return f"{self.kind}:{mode}" if mode else self.kind


@dataclass(frozen=True)
class Scenario:
    """A parsed scenario file (see the module docstring).

    Attributes:
        name: identifier (report file names).
        description: one line for humans.
        stack: the stack under test: a preset name (``robot_stack/configs/<stack>.yaml``) or a YAML path
            (relative to the scenario file); the scenario's settings below override it.
        tier: ``short`` (runs in CI) or ``soak`` (pytest marker ``slow``).
        seed: cube placement of the first episode.
        episodes: episodes run back to back with the same fault schedule.
        duration_s: maximum episode length, seconds.
        client_timeout_s: policy client per-request deadline, seconds.
        watchdog_s: executor watchdog timeout, seconds.
        rate_hz: executor rate, Hz; None = the arm's.
        workspace: ((3,), (3,)) lower/upper TCP box corners in metres (base frame), or None (the arm's box).
        faults: the fault windows.
        expect: expectation key -> value (see :data:`EXPECTATION_KEYS`).
        source: the file it came from.
        robots: per-arm replacements (arm name -> raw scenario keys), applied by :meth:`for_robot`.
        robot: the arm this scenario was specialised for by :meth:`for_robot` (None: the preset's).
    """

    name: str
    description: str = ""
    stack: str = "demo"
    tier: str = "short"
    seed: int = 0
    episodes: int = 1
    duration_s: float = 6.0
    client_timeout_s: float = 0.5
    watchdog_s: float = 0.3
    rate_hz: float | None = None
    workspace: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    faults: tuple[FaultSpec, ...] = ()
    expect: Mapping[str, Any] = field(default_factory=dict)
    source: str = ""
    robots: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    robot: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    def for_robot(self, robot: str) -> Scenario:
        """This scenario for arm ``robot``: its ``robots:`` entry (if any) replaces the listed keys."""
        from robot_stack.robots.registry import get_embodiment

        get_embodiment(robot)  # ConfigError naming the known arms
        override = self.robots.get(robot, {})
        raw = {k: v for k, v in self.raw.items() if k != "robots"}
        specialised = Scenario.from_dict({**raw, **override}, self.source) if override else self
        return replace(specialised, robot=robot, robots=self.robots, raw=self.raw)

    def stack_path(self) -> str | Path:
        """The stack preset name, or its file resolved against the scenario's folder."""
        if not self.stack.endswith((".yaml", ".yml")):
            return self.stack
        path = Path(self.stack)
        return path if path.is_absolute() or not self.source else Path(self.source).parent / path

    @property
    def faults_end_s(self) -> float:
        """End of the last fault window (0 without faults), seconds since episode start."""
        return max((f.end_s for f in self.faults if f.kind != "clock_skew"), default=0.0)

    @property
    def clock_skew_s(self) -> float:
        """Injected server clock offset, seconds (0 without a ``clock_skew`` fault)."""
        return sum(float(f.params["offset_s"]) for f in self.faults if f.kind == "clock_skew")

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "") -> Scenario:
        """Validate a parsed YAML mapping. Raises :class:`ConfigError` naming the file, key and what was expected."""
        where = source or "scenario"
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")
        known = {
            "name",
            "description",
            "stack",
            "tier",
            "seed",
            "episodes",
            "duration_s",
            "client_timeout_s",
            "watchdog_s",
            "rate_hz",
            "workspace",
            "faults",
            "expect",
            "robots",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(known)}")
        if not isinstance(raw.get("name"), str) or not raw["name"]:
            raise ConfigError(f"{where}: 'name' must be a non-empty string")
        tier = str(raw.get("tier", "short"))
        if tier not in ("short", "soak"):
            raise ConfigError(f"{where}: tier must be 'short' or 'soak', got {tier!r}")

        def positive(key: str, default: float) -> float:
            value = raw.get(key, default)
            if not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive number, got {value!r}")
            return float(value)

        duration = positive("duration_s", cls.duration_s)
        episodes = raw.get("episodes", 1)
        if not isinstance(episodes, int) or not 1 <= episodes <= 1000:
            raise ConfigError(f"{where}: episodes must be an integer in [1, 1000], got {episodes!r}")
        workspace = None
        if raw.get("workspace") is not None:
            ws = raw["workspace"]
            try:
                lo = tuple(float(v) for v in ws["lower"])
                hi = tuple(float(v) for v in ws["upper"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"{where}: workspace needs lower: [x, y, z] and upper: [x, y, z] metres") from exc
            if len(lo) != 3 or len(hi) != 3 or any(a >= b for a, b in zip(lo, hi, strict=True)):
                raise ConfigError(f"{where}: workspace lower {lo} must be below upper {hi} on all 3 axes")
            workspace = (lo, hi)
        faults = tuple(_parse_fault(f, i, duration, where) for i, f in enumerate(raw.get("faults") or ()))
        expect = dict(raw.get("expect") or {})
        bad = sorted(set(expect) - set(EXPECTATION_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown expectations {bad}; allowed: {sorted(EXPECTATION_KEYS)}")
        robots = dict(raw.get("robots") or {})
        for arm, override in robots.items():
            allowed = {"workspace", "faults", "expect", "duration_s", "seed", "rate_hz"}
            if not isinstance(override, Mapping) or set(override) - allowed:
                raise ConfigError(f"{where}: robots.{arm} may replace {sorted(allowed)}; got {override!r}")
            Scenario.from_dict({**{k: v for k, v in raw.items() if k != "robots"}, **override}, f"{where} [{arm}]")
        return cls(
            name=raw["name"],
            description=str(raw.get("description", "")),
            stack=str(raw.get("stack", "demo")),
            tier=tier,
            seed=int(raw.get("seed", 0)),
            episodes=episodes,
            duration_s=duration,
            client_timeout_s=positive("client_timeout_s", cls.client_timeout_s),
            watchdog_s=positive("watchdog_s", cls.watchdog_s),
            rate_hz=None if raw.get("rate_hz") is None else positive("rate_hz", 0.0),
            workspace=workspace,
            faults=faults,
            expect=expect,
            source=source,
            robots=robots,
            raw=dict(raw),
        )


def _parse_fault(raw: Any, index: int, duration_s: float, where: str) -> FaultSpec:
    label = f"{where}: faults[{index}]"
    if not isinstance(raw, Mapping) or raw.get("kind") not in FAULT_PARAMS:
        raise ConfigError(f"{label}: needs 'kind', one of {sorted(FAULT_PARAMS)}; got {raw!r}")
    kind = str(raw["kind"])
    allowed = FAULT_PARAMS[kind]
    extra = sorted(set(raw) - {"kind", "start_s", "end_s"} - set(allowed))
    if extra:
        raise ConfigError(f"{label} ({kind}): unknown parameters {extra}; allowed: {sorted(allowed)}")
    start, end = float(raw.get("start_s", 0.0)), float(raw.get("end_s", duration_s))
    if not (0.0 <= start < end) or not math.isfinite(end):
        raise ConfigError(f"{label} ({kind}): need 0 <= start_s < end_s, got {start}..{end}")
    params = {name: raw.get(name, default) for name, default in allowed.items()}
    missing = [name for name, value in params.items() if value is None and name != "target"]
    if missing:
        raise ConfigError(f"{label} ({kind}): missing required parameters {missing}")
    if kind == "policy" and params["mode"] not in _POLICY_MODES:
        raise ConfigError(f"{label}: policy mode must be one of {_POLICY_MODES}, got {params['mode']!r}")
    if kind == "policy" and params["mode"] == "reach" and params["target"] is None:
        raise ConfigError(f"{label}: policy mode 'reach' needs target: [x, y, z] metres (base frame)")
    if kind == "camera" and params["mode"] not in _CAMERA_MODES:
        raise ConfigError(f"{label}: camera mode must be one of {_CAMERA_MODES}, got {params['mode']!r}")
    if kind == "network" and not 0.0 <= float(params["loss"]) <= 1.0:
        raise ConfigError(f"{label}: loss is a probability in [0, 1], got {params['loss']}")
    if kind == "network" and (float(params["delay_ms"]) < 0 or float(params["jitter_ms"]) < 0):
        raise ConfigError(f"{label}: delay_ms and jitter_ms must be >= 0")
    if kind == "push" and len(params["force_n"]) != 3:
        raise ConfigError(f"{label}: force_n must be [fx, fy, fz] newtons")
    return FaultSpec(kind, start, end, params)


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate one scenario YAML file. Raises :class:`ConfigError` if it is missing or invalid."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"scenario file {p} not found; see scenarios/*.yaml for examples")
    return Scenario.from_dict(read_yaml(p, "scenario file"), str(p))


def scenario_paths(folder: str | Path) -> list[Path]:
    """The ``*.yaml`` scenario files of ``folder``, sorted by name."""
    return sorted(Path(folder).glob("*.yaml"))
