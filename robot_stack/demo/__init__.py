"""``robot-stack demo``: the whole control loop, live, on the embedded simulated cell (see :mod:`.loop`)."""

from robot_stack.demo.loop import DemoReport, format_report, run_demo

__all__ = ["DemoReport", "format_report", "run_demo"]
