"""Scenario reports: a JSON file of metrics and checks, a PNG plot, and a metrics table across scenarios.

The plot (matplotlib, Agg backend) has four panels on one time axis (seconds since the first episode started),
fault windows shaded on each: measured joint positions (solid) with the commanded ones (dashed); the executor's
state; the policy round trip and model time of each call; the outcome of each policy cycle.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.hil.metrics import Check, Verdict

log = logging.getLogger("robot_stack.hil")

__all__ = ["TABLE_COLUMNS", "HilReport", "format_table", "plot_report", "write_report"]


@dataclass(frozen=True)
class HilReport(Verdict):
    """Result of one scenario run.

    Attributes:
        name, description: from the scenario.
        metrics: see :mod:`robot_stack.hil.metrics`.
        checks: every assertion and whether it held.
        record: the raw run record (timelines for the plot); not serialised.
    """

    name: str
    description: str
    metrics: dict[str, Any]
    checks: tuple[Check, ...]
    record: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "description": self.description,
            "passed": self.passed,
            "checks": self.checks_dict(),
            "metrics": self.metrics,
        }


def write_report(report: HilReport, folder: Path) -> tuple[Path, Path]:
    """Write ``<name>.json`` and ``<name>.png`` into ``folder`` (created); return both paths."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{report.name}.json"
    json_path.write_text(json.dumps(report.to_dict(), indent=2, default=_jsonable) + "\n")
    png_path = folder / f"{report.name}.png"
    plot_report(report, png_path)
    log.info("HIL report: %s, %s", json_path, png_path)
    return json_path, png_path


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


_STATE_LEVEL = {"idle": 0, "tracking": 1, "stopping": 2, "holding": 3, "stopped": 4}
_OUTCOME_LEVEL = {
    "ok": 0,
    "stale:late": 1,
    "stale:frozen": 2,
    "stale:no_depth": 3,
    "camera": 4,
    "transport": 5,
    "decode": 6,
    "rejected": 7,
}


def plot_report(report: HilReport, path: Path) -> None:
    """Save the four-panel plot of ``report`` (needs its record) as PNG.

    Raises:
        ConfigError: matplotlib is missing (``pip install matplotlib``) or the report carries no record.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ConfigError("HIL plots need matplotlib: pip install matplotlib") from exc
    rec = report.record
    if rec is None or rec.robot is None:
        raise ConfigError(f"report {report.name} has no run record to plot")
    t0 = rec.t0_ns
    robot = rec.robot
    t_cmd = (np.asarray(robot.t_ns, np.int64) - t0) / 1e9
    q_cmd = np.asarray(robot.q_cmd).reshape(len(robot.q_cmd), -1)
    t_meas = (np.asarray(robot.t_meas_ns, np.int64) - t0) / 1e9
    q_meas = np.asarray(robot.q_meas).reshape(len(robot.q_meas), -1)
    fig, axes = plt.subplots(4, 1, figsize=(12, 11), sharex=True, gridspec_kw={"height_ratios": [3, 1, 1.6, 1.2]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ax = axes[0]
    for j in range(q_cmd.shape[1] if q_cmd.size else 0):
        c = colors[j % len(colors)]
        ax.plot(t_cmd, q_cmd[:, j], "--", color=c, lw=0.8)
        if q_meas.size:
            ax.plot(t_meas, q_meas[:, j], "-", color=c, lw=1.2, label=f"q{j + 1}")
    ax.set_ylabel("joint position (rad)\nsolid measured, dashed commanded")
    ax.legend(loc="upper right", ncol=7, fontsize=7)
    m = report.metrics
    ax.set_title(
        f"HIL {report.name}: {'PASS' if report.passed else 'FAIL'} — unsafe commands {m['unsafe_commands']}, "
        f"holds {m['holds']}, success {m['task_success']}, max jerk {m['max_jerk_ratio']} x limit",
        fontsize=10,
    )
    axes[1].step(t_cmd, [_STATE_LEVEL.get(s, -1) for s in robot.states], where="post", lw=1.0)
    axes[1].set_yticks(list(_STATE_LEVEL.values()), list(_STATE_LEVEL))
    axes[1].set_ylabel("executor")
    calls = rec.calls
    if calls:
        t_call = (np.array([c.t_recv_ns for c in calls], np.int64) - t0) / 1e9
        axes[2].plot(t_call, [c.round_trip_ms for c in calls], "o-", ms=3, lw=0.8, label="round trip")
        axes[2].plot(t_call, [c.infer_ms for c in calls], "s", ms=3, label="model (server)")
        axes[2].plot(t_call, [(c.t_recv_ns - c.t_obs_ns) / 1e6 for c in calls], "^", ms=3, label="observation age")
        axes[2].legend(loc="upper right", fontsize=7)
    axes[2].set_ylabel("latency (ms)")
    if rec.cycles:
        t_cyc = (np.array([c[0] for c in rec.cycles], np.int64) - t0) / 1e9
        axes[3].plot(t_cyc, [_OUTCOME_LEVEL.get(c[1], 8) for c in rec.cycles], "o", ms=3)
    axes[3].set_yticks(list(_OUTCOME_LEVEL.values()), list(_OUTCOME_LEVEL), fontsize=7)
    axes[3].set_ylabel("cycle outcome")
    axes[3].set_xlabel("time since start (s, robot clock)")
    labels_seen: set[str] = set()
    for w in rec.windows:
        a, b = (w.start_ns - t0) / 1e9, (w.end_ns - t0) / 1e9
        for k, axis in enumerate(axes):
            axis.axvspan(a, b, color="tab:red", alpha=0.12, lw=0)
            if k == 0 and w.label not in labels_seen:
                axis.text(a, axis.get_ylim()[1], f" {w.label}", va="top", fontsize=7, color="tab:red")
                labels_seen.add(w.label)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


#: Columns of :func:`format_table` (metric key, header).
TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("unsafe_commands", "unsafe cmds"),
    ("time_to_safe_hold_s", "to hold (s)"),
    ("time_to_recover_s", "to recover (s)"),
    ("interventions", "interventions (outside faults)"),
    ("prefilter_jerk_ratio", "plan jerk / limit"),
    ("prefilter_acceleration_ratio", "plan acc / limit"),
    ("plan_vs_executed_p99_mrad", "plan vs sent p99 (mrad)"),
    ("task_success", "success"),
    ("dropped_actions", "dropped"),
    ("late_actions", "late"),
    ("holds", "holds"),
    ("stale", "stale refused"),
)


def format_table(reports: Sequence[HilReport]) -> str:
    """A Markdown table of the headline metrics, one row per scenario, plus a pass/fail column."""
    head = "| scenario | " + " | ".join(h for _, h in TABLE_COLUMNS) + " | checks |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 2)
    rows = [head, rule]
    for r in reports:
        cells = []
        for key, _ in TABLE_COLUMNS:
            v = r.metrics.get(key)
            if isinstance(v, dict):
                v = ", ".join(f"{k} {n}" for k, n in v.items()) or "0"
            elif key == "interventions":
                v = f"{v} ({r.metrics.get('interventions_outside_faults')})"
            cells.append("–" if v is None else str(v))
        verdict = "pass" if r.passed else "FAIL: " + ", ".join(c.name for c in r.failures)
        rows.append(f"| {r.name} | " + " | ".join(cells) + f" | {verdict} |")
    return "\n".join(rows)
