"""Hardware-in-the-loop rehearsals: inject real-world faults into the full stack on a schedule, assert the outcome.

``run_scenario(load_scenario("scenarios/partition.yaml"), report_dir="out")`` runs the demo's stack (sim cell,
policy server subprocess, client, decoder, executor) with the scenario's faults and returns a
:class:`~robot_stack.hil.report.HilReport` (metrics, checks, JSON + PNG when ``report_dir`` is given).
"""

from robot_stack.hil.harness import run_scenario
from robot_stack.hil.metrics import Check, compute_metrics, evaluate
from robot_stack.hil.report import HilReport, format_table, write_report
from robot_stack.hil.scenario import FaultSpec, Scenario, load_scenario, scenario_paths

__all__ = [
    "Check",
    "FaultSpec",
    "HilReport",
    "Scenario",
    "compute_metrics",
    "evaluate",
    "format_table",
    "load_scenario",
    "run_scenario",
    "scenario_paths",
    "write_report",
]
