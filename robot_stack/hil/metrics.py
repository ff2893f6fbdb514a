"""Scenario metrics from a :class:`~robot_stack.hil.harness.RunRecord`, and the checks against expectations.

Metrics every scenario reports (seconds, rad, counts):

* ``unsafe_commands``: commands sent to the robot that broke a joint limit (position, velocity, acceleration or
  jerk) — audited on every command; must be 0;
* ``actions_from_stale_data``: trajectories computed from a repeated, late (older than the guard's age limit when
  sent) or depth-less observation; must be 0;
* ``time_to_safe_hold_s``: fault start → first command of a watchdog hold at zero commanded velocity (worst
  window; None when no window led to a hold);
* ``hold_after_coverage_s``: the trajectory ran out → watchdog hold declared (worst);
* ``time_to_recover_s``: fault end → first new trajectory accepted by the executor (worst window);
* ``max_jerk_rad_s3`` / ``max_jerk_ratio``: largest third divided difference of the commands sent (and over the
  limit; the safety filter's output, so at most 1 while the filter works);
* the plan audit, from the executor's tick traces: ``prefilter_{velocity,acceleration,jerk}_ratio`` (the plan's
  own set-points, before the filter, as divided differences over the real tick times, over the limit: plans are
  feasible by construction, so <= 1), ``interventions`` (safety-filter fault events) and
  ``interventions_outside_faults`` (those outside every fault window and the horizon after it; must be 0),
  ``plan_vs_executed_p99_mrad`` / ``_max_mrad`` (largest joint difference between the plan's set-point and the one
  sent, per tick);
* ``task_success`` (all episodes), ``success_rate``, ``success_after_faults``;
* ``dropped_actions``: answers requested that never reached the executor (transport, decode, executor rejection);
  ``late_actions``: answers that arrived after their step 1 was due (``t_recv > t_obs + dt``);
* ``holds``, ``stop_events`` (times the arm ran out of trajectory), ``extensions`` (times the policy's steps ran
  out before the next chunk and the scheduler's come-to-rest extension was followed: late chunks), ``recoveries``
  (retreats from a blocked state), stale/camera/decode counts, safety interventions by kind (ticks where the
  command itself broke a limit) and catch-up ticks (the output only closing an earlier lag), clock offset figures,
  commanded- and measured-TCP workspace excursion, minimum joint-limit margin.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.control.audit import stream_ratios
from robot_stack.hil.scenario import Scenario

__all__ = ["Check", "Verdict", "compute_metrics", "evaluate", "plan_audit"]

#: Commanded joint speed below this (rad/s, every joint) counts as stopped.
HOLD_SPEED_RAD_S = 1e-3
#: Minimum fraction of valid XYZ pixels an observation must have had (the guard's default).
MIN_VALID_FRACTION = 0.05


@dataclass(frozen=True)
class Check:
    """One assertion of a scenario: ``name`` (the expectation or a built-in), whether it held, and why."""

    name: str
    ok: bool
    expected: Any
    actual: Any


class Verdict:
    """What a report made of :class:`Check` s (its ``checks``) says: whether it passed, which checks failed."""

    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def checks_dict(self) -> list[dict[str, Any]]:
        """The checks, JSON-ready."""
        return [{"name": c.name, "ok": c.ok, "expected": c.expected, "actual": c.actual} for c in self.checks]


def _round(x: float | None, nd: int = 3) -> float | None:
    return None if x is None else round(float(x), nd)


def _command_arrays(robot: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t ns, commanded q (N, n) rad, executor state per command) of the audited run."""
    t = np.asarray(robot.t_ns, dtype=np.int64)
    q = np.asarray(robot.q_cmd, dtype=np.float64).reshape(len(robot.q_cmd), -1)
    return t, q, np.asarray(robot.states, dtype=object)


def _hold_timing(record: Any, t: np.ndarray, q: np.ndarray, states: np.ndarray) -> dict[str, Any]:
    """Fault start -> arm held at rest; coverage lost -> watchdog hold; stop events; fault end -> recovery."""
    speed = np.zeros(len(t))
    if len(t) > 1:
        speed[1:] = np.max(np.abs(np.diff(q, axis=0)), axis=1) / record.robot.period_s
    holding = states == "holding"
    disruptive = [w for w in record.windows if w.kind not in ("clock_skew",)]
    to_hold: list[float] = []
    for w in disruptive:
        idx = np.flatnonzero((t >= w.start_ns) & holding & (speed < HOLD_SPEED_RAD_S))
        if idx.size and (w.end_ns + 2e9 >= t[idx[0]]):
            to_hold.append((t[idx[0]] - w.start_ns) / 1e9)
    after_coverage: list[float] = []
    stop_events = 0
    for i in range(1, len(states)):
        if states[i] in ("stopping", "holding") and states[i - 1] == "tracking":
            stop_events += 1
        if states[i] == "holding" and states[i - 1] == "tracking":
            after_coverage.append(0.0)  # the watchdog cut a come-to-rest extension: held the moment coverage ended
        if states[i] == "holding" and states[i - 1] == "stopping":
            j = i - 1
            while j > 0 and states[j] == "stopping":
                j -= 1
            after_coverage.append((t[i] - t[j]) / 1e9)
    ok_times = np.array([c[0] for c in record.cycles if c[1] == "ok"], dtype=np.int64)
    to_recover: list[float] = []
    for w in disruptive:
        later = ok_times[ok_times >= w.end_ns]
        if later.size:
            to_recover.append((later[0] - w.end_ns) / 1e9)
    return {
        "time_to_safe_hold_s": _round(max(to_hold)) if to_hold else None,
        "hold_after_coverage_s": _round(max(after_coverage)) if after_coverage else None,
        "time_to_recover_s": _round(max(to_recover)) if to_recover else None,
        "stop_events": stop_events,
    }


def _executor_totals(record: Any) -> dict[str, Any]:
    """Holds, extensions, executor rejections and safety interventions summed over the episodes."""
    rejected_exec: Counter[str] = Counter()
    safety: Counter[str] = Counter()
    holds = extensions = catch_up = 0
    for st in record.executor:
        extensions += int(st.get("extensions", 0))
        rejected_exec.update(st.get("trajectories_rejected", {}))
        safety.update({k: v for k, v in st.get("safety", {}).items() if k not in ("calls", "total", "catch_up_ticks")})
        catch_up += int(st.get("safety", {}).get("catch_up_ticks", 0))
        holds += int(st.get("holds", 0))
    ex_rates = [st["achieved_rate_hz"] for st in record.executor if st.get("achieved_rate_hz")]
    ex_p99 = [st["lateness_p99_ms"] for st in record.executor if st.get("lateness_p99_ms") is not None]
    return {
        "holds": holds,
        "extensions": extensions,
        "executor_rejections": dict(rejected_exec),
        "safety_interventions": dict(safety),
        "safety_catch_up_ticks": catch_up,
        "executor_rate_hz_min": min(ex_rates) if ex_rates else None,
        "executor_lateness_p99_ms_max": max(ex_p99) if ex_p99 else None,
    }


def _cycle_outcomes(record: Any, executor_rejections: dict[str, int]) -> dict[str, Any]:
    """What the policy cycles produced: outcomes, stale-frame refusals, dropped, late and stale-data actions."""
    outcomes = Counter(c[1] for c in record.cycles)
    dropped = outcomes["transport"] + outcomes["decode"] + outcomes["rejected"] + sum(executor_rejections.values())
    dt_ns = record.policy_dt_s * 1e9
    late = sum(1 for c in record.calls if c.t_recv_ns > c.t_obs_ns + dt_ns)
    stale_actions = sum(
        1
        for t_obs, age_ms, valid in record.fresh
        if age_ms < 0 or age_ms > record.guard_max_age_s * 1e3 or valid < MIN_VALID_FRACTION
    )
    rtt = [c.round_trip_ms for c in record.calls]
    return {
        "actions_from_stale_data": stale_actions,
        "cycles": len(record.cycles),
        "outcomes": dict(outcomes),
        "stale": {k.split(":", 1)[1]: n for k, n in outcomes.items() if k.startswith("stale:")},
        "camera_errors": outcomes["camera"],
        "decode_rejections": outcomes["decode"],
        "transport_errors": outcomes["transport"],
        "dropped_actions": int(dropped),
        "late_actions": int(late),
        "round_trip_p50_ms": _round(float(np.percentile(rtt, 50)), 2) if rtt else None,
        "round_trip_max_ms": _round(max(rtt), 2) if rtt else None,
    }


def _clock_figures(record: Any) -> dict[str, Any]:
    """Server timestamps corrected by the measured offset must fall inside the client's send/receive window."""
    clock = record.clock
    offset_ns = clock.get("measured_offset_ms", 0.0) * 1e6
    unc_ns = clock.get("uncertainty_ms", 0.0) * 1e6 + 1e5
    corrected_bad = raw_bad = 0
    for c in record.calls:
        if not c.server_start_ns:
            continue
        for shift, counter in ((offset_ns, "c"), (0.0, "r")):
            start, end = c.server_start_ns - shift, c.server_end_ns - shift
            bad = start < c.t_send_ns - unc_ns or end > c.t_recv_ns + unc_ns
            if bad and counter == "c":
                corrected_bad += 1
            elif bad:
                raw_bad += 1
    return {
        "clock_offset_injected_ms": _round(clock.get("injected_offset_ms"), 3),
        "clock_offset_measured_ms": _round(clock.get("measured_offset_ms"), 3),
        "clock_offset_error_ms": _round(
            abs(clock.get("measured_offset_ms", 0.0) - clock.get("injected_offset_ms", 0.0))
        ),
        "clock_offset_uncertainty_ms": _round(clock.get("uncertainty_ms"), 3),
        "clock_skew_method": clock.get("method"),
        "server_timing_outside_window_corrected": corrected_bad,
        "server_timing_outside_window_uncorrected": raw_bad,
    }


def _limits_figures(record: Any, q: np.ndarray) -> dict[str, Any]:
    """How far the commanded (and measured) TCP went outside the workspace box; the smallest joint-limit margin."""
    scenario: Scenario = record.scenario
    robot = record.robot
    ws_excursion = ws_measured = None
    if scenario.workspace is not None and len(q):
        from robot_stack.control.safety import WorkspaceBox
        from robot_stack.kinematics.ik import ik_for

        box = WorkspaceBox(np.array(scenario.workspace[0]), np.array(scenario.workspace[1]))
        fk = ik_for(getattr(record, "robot_model", "panda")).fk_xyz
        ws_excursion = max(box.outside_by(fk(qi)) for qi in q)
        if robot.tcp_meas:
            ws_measured = max(box.outside_by(np.asarray(p)) for p in robot.tcp_meas)
    lim = robot.limits
    margin = float(np.min(np.minimum(q - lim.lower, lim.upper - q))) if len(q) else None
    return {
        "tcp_outside_workspace_m": _round(ws_excursion, 4),
        "tcp_outside_workspace_measured_m": _round(ws_measured, 4),
        "min_joint_limit_margin_rad": _round(margin, 4),
    }


def _task_figures(record: Any) -> dict[str, Any]:
    """Success, success after the first fault, times to success, recoveries."""
    scenario: Scenario = record.scenario
    episodes = record.episodes
    first_fault = min((f.start_s for f in scenario.faults if f.kind != "clock_skew"), default=0.0)
    succ_times = [e["time_to_success_s"] for e in episodes]
    return {
        "episodes": len(episodes),
        "task_success": bool(episodes) and all(e["success"] for e in episodes),
        "success_rate": sum(e["success"] for e in episodes) / max(1, len(episodes)),
        "success_after_faults": bool(episodes) and all(s is not None and s >= first_fault for s in succ_times),
        "time_to_success_s": [_round(s) for s in succ_times],
        "recoveries": sum(int(e.get("recoveries", 0)) for e in episodes),
    }


def _plan_audit(record: Any) -> dict[str, Any]:
    """:func:`plan_audit` of a scenario run. An intervention counts as *inside* a fault window from the window's
    start until ``policy_dt_s * horizon`` after its end: the last chunk a fault shaped may execute for its whole
    horizon."""
    grace_ns = int(record.policy_dt_s * record.horizon * 1e9)
    windows = [(w.start_ns, w.end_ns + grace_ns) for w in record.windows if w.kind != "clock_skew"]
    audit = plan_audit(record.robot, windows)
    outside = audit.pop("outside_times_ns")
    audit["interventions_outside_faults_at_s"] = [_round((t - record.t0_ns) / 1e9) for t in outside[:20]]
    return audit


def plan_audit(robot: Any, windows: Sequence[tuple[int, int]] = ()) -> dict[str, Any]:
    """The plan's own set-points (before the safety filter) against the limits, the filter's interventions and
    whether they fell inside ``windows`` ((start, end) ns, robot clock), and how far what was sent strayed from the
    plan, from the tick traces a :class:`~robot_stack.hil.audit.RecordingRobot` recorded (see the module
    docstring for the keys; ``outside_times_ns`` lists when each intervention outside the windows happened)."""
    n_cmd = len(robot.t_ns)
    limits = robot.limits
    empty: dict[str, Any] = {
        "traced_commands": 0,
        "prefilter_velocity_ratio": None,
        "prefilter_acceleration_ratio": None,
        "prefilter_jerk_ratio": None,
        "plan_vs_executed_p99_mrad": None,
        "plan_vs_executed_max_mrad": None,
        "interventions": 0,
        "interventions_outside_faults": 0,
        "outside_times_ns": [],
    }
    if n_cmd == 0 or len(robot.q_plan) != n_cmd:
        return empty
    t = np.asarray(robot.t_ns, dtype=np.int64)
    q_sent = np.asarray(robot.q_cmd, dtype=np.float64).reshape(n_cmd, -1)
    q_plan = np.asarray(robot.q_plan, dtype=np.float64).reshape(n_cmd, -1)
    count = np.asarray(robot.interventions, dtype=np.int64)
    traced = np.all(np.isfinite(q_plan), axis=1) & (count >= 0)
    if not np.any(traced):
        return empty
    peaks = {"velocity": 0.0, "acceleration": 0.0, "jerk": 0.0}
    deviation: list[np.ndarray] = []
    events: list[int] = []
    bounds = [*robot.episode_starts, n_cmd]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        idx = np.arange(a, b)[traced[a:b]]
        if len(idx) == 0:
            continue
        keep = np.append(True, np.diff(t[idx]) > 0)  # tick times increase; a repeated one is a duplicate record
        idx = idx[keep]
        if len(idx) >= 2:
            for kind, value in stream_ratios(t[idx], q_plan[idx], limits).items():
                peaks[kind] = max(peaks[kind], value)
        deviation.append(np.max(np.abs(q_sent[idx] - q_plan[idx]), axis=1))
        c = count[idx]
        jumps = np.flatnonzero(np.diff(c) > 0) + 1
        for j in jumps:
            events += [int(t[idx[j]])] * int(c[j] - c[j - 1])
        if len(c) and c[0] > 0:  # interventions before the first traced command of the episode
            events += [int(t[idx[0]])] * int(c[0])
    dev = np.concatenate(deviation) if deviation else np.zeros(1)
    outside = [e for e in events if not any(lo <= e <= hi for lo, hi in windows)]
    return {
        "traced_commands": int(np.count_nonzero(traced)),
        "prefilter_velocity_ratio": _round(peaks["velocity"], 4),
        "prefilter_acceleration_ratio": _round(peaks["acceleration"], 4),
        "prefilter_jerk_ratio": _round(peaks["jerk"], 4),
        "plan_vs_executed_p99_mrad": _round(float(np.percentile(dev, 99)) * 1e3, 4),
        "plan_vs_executed_max_mrad": _round(float(np.max(dev)) * 1e3, 4),
        "interventions": len(events),
        "interventions_outside_faults": len(outside),
        "outside_times_ns": outside,
    }


def compute_metrics(record: Any) -> dict[str, Any]:
    """Compute the metrics (see the module docstring) from a finished run's record."""
    robot = record.robot
    t, q, states = _command_arrays(robot)
    executor = _executor_totals(record)
    return {
        "scenario": record.scenario.name,
        "commands": int(robot.commands),
        "unsafe_commands": robot.unsafe_total,
        "unsafe_by_limit": dict(robot.unsafe),
        "max_jerk_rad_s3": _round(robot.max_jerk, 1),
        "max_jerk_ratio": _round(robot.max_jerk_ratio, 4),
        **_plan_audit(record),
        **_task_figures(record),
        **_hold_timing(record, t, q, states),
        **executor,
        **_cycle_outcomes(record, executor["executor_rejections"]),
        **_limits_figures(record, q),
        **_clock_figures(record),
        "fault_windows": [
            {
                "fault": w.label,
                "episode": w.episode,
                "start_s": _round((w.start_ns - record.t0_ns) / 1e9),
                "end_s": _round((w.end_ns - record.t0_ns) / 1e9),
            }
            for w in record.windows
        ],
        "injectors": dict(record.extra),
    }


#: Expectation key -> (metric, comparison) for the scalar expectations.
_BOUNDS: dict[str, tuple[str, str]] = {
    "holds_min": ("holds", ">="),
    "holds_max": ("holds", "<="),
    "stop_events_max": ("stop_events", "<="),
    "time_to_safe_hold_max_s": ("time_to_safe_hold_s", "<="),
    "hold_after_coverage_max_s": ("hold_after_coverage_s", "<="),
    "time_to_recover_max_s": ("time_to_recover_s", "<="),
    "camera_errors_min": ("camera_errors", ">="),
    "decode_rejections_min": ("decode_rejections", ">="),
    "max_jerk_ratio_max": ("max_jerk_ratio", "<="),
    "prefilter_jerk_ratio_max": ("prefilter_jerk_ratio", "<="),
    "prefilter_acceleration_ratio_max": ("prefilter_acceleration_ratio", "<="),
    "plan_vs_executed_p99_max_mrad": ("plan_vs_executed_p99_mrad", "<="),
    "late_actions_max": ("late_actions", "<="),
    "dropped_actions_min": ("dropped_actions", ">="),
    "dropped_actions_max": ("dropped_actions", "<="),
    "clock_offset_error_max_ms": ("clock_offset_error_ms", "<="),
    "tcp_outside_workspace_max_m": ("tcp_outside_workspace_m", "<="),
    "tcp_measured_outside_workspace_max_m": ("tcp_outside_workspace_measured_m", "<="),
}


def _at_least(name: str, expected: Mapping[str, int], actual: Mapping[str, int]) -> Check:
    ok = all(actual.get(k, 0) >= v for k, v in expected.items())
    return Check(name, ok, {k: f">= {v}" for k, v in expected.items()}, {k: actual.get(k, 0) for k in expected})


def evaluate(scenario: Scenario, m: Mapping[str, Any]) -> list[Check]:
    """Check the metrics against the scenario's expectations plus the built-in ones every scenario must meet."""
    checks = [
        Check("unsafe_commands", m["unsafe_commands"] == 0, 0, m["unsafe_commands"]),
        Check("actions_from_stale_data", m["actions_from_stale_data"] == 0, 0, m["actions_from_stale_data"]),
        Check("commands_sent", m["commands"] > 0, "> 0", m["commands"]),
        # plans are feasible by construction: a safety intervention outside the fault windows is a defect
        Check("plan_audited", m["traced_commands"] > 0, "> 0 traced commands", m["traced_commands"]),
        Check(
            "interventions_outside_faults",
            m["interventions_outside_faults"] == 0,
            0,
            m["interventions_outside_faults"],
        ),
    ]
    for key, want in scenario.expect.items():
        if key in ("success", "success_after_faults"):
            actual = m["task_success"] if key == "success" else m["success_after_faults"]
            checks.append(Check(key, actual == bool(want), bool(want), actual))
        elif key in ("stale_min", "safety_interventions_min"):
            source = m["stale"] if key == "stale_min" else m["safety_interventions"]
            checks.append(_at_least(key, want, source))
        elif key == "warnings_min":
            counts = {k.removeprefix("robot_stack."): v for k, v in m["injectors"].get("warnings", {}).items()}
            checks.append(_at_least(key, want, counts))
        else:
            metric, op = _BOUNDS[key]
            actual = m[metric]
            if op == ">=":
                ok = actual is not None and actual >= want
            elif key.startswith(("time_", "hold_")):
                ok = actual is not None and actual <= want  # the hold/recovery must have happened, in time
            else:
                ok = actual is None or actual <= want
            checks.append(Check(key, ok, f"{op} {want}", actual))
    return checks
