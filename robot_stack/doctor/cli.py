"""``robot-stack doctor`` and ``robot-stack ping``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_doctor_parser", "add_ping_parser"]

_MARK = {"ok": "ok", "warn": "WARN", "fail": "FAIL"}


def _cmd_doctor(args: argparse.Namespace) -> int:
    from robot_stack.console import print_table
    from robot_stack.doctor.checks import DoctorOptions, failed, rows_to_json, run_checks

    opts = DoctorOptions(
        gpu=args.gpu,
        hardware=args.hardware,
        calibration_root=Path(args.calibration_root) if args.calibration_root else None,
        key_dirs=tuple(Path(k) for k in args.keys or ()),
    )
    rows = run_checks(opts)
    if args.json:
        print(rows_to_json(rows))
    else:
        print_table(
            "robot-stack doctor" + (" --gpu" if args.gpu else "") + (" --hardware" if args.hardware else ""),
            ["area", "check", "status", "found", "fix"],
            [(r.area, r.name, _MARK[r.status], r.detail, r.fix) for r in rows],
        )
    bad = failed(rows)
    warned = sum(r.status == "warn" for r in rows)
    summary = f"{len(rows) - len(bad) - warned} ok, {warned} warnings, {len(bad)} failed"
    print(
        summary if not bad else f"{summary}: " + "; ".join(f"{r.area}/{r.name}: {r.fix}" for r in bad), file=sys.stderr
    )
    return 1 if bad else 0


def add_doctor_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack doctor [--gpu] [--hardware] [--keys DIR] [--json]``."""
    doctor = subparsers.add_parser(
        "doctor",
        help="check this machine: rendering, video, ONNX Runtime, CUDA/TensorRT, ROS 2, cameras, calibration, ...",
        description="A table of checks, each with its fix. Exit 1 when a check required for the roles asked for "
        "fails (--gpu: CUDA and TensorRT; --hardware: RealSense, ROS 2, calibration).",
        epilog="examples:\n  robot-stack doctor\n  robot-stack doctor --gpu            # on the GPU serving box\n"
        "  robot-stack doctor --hardware --keys keys/   # on the robot computer",
    )
    doctor.add_argument(
        "--gpu", action="store_true", help="this machine serves on an NVIDIA GPU (CUDA, TensorRT required)"
    )
    doctor.add_argument(
        "--hardware", action="store_true", help="this machine drives hardware (RealSense, ROS 2, calibration required)"
    )
    doctor.add_argument(
        "--calibration-root", help="calibration folder (default: $ROBOT_STACK_CALIBRATION_DIR or the repo's)"
    )
    doctor.add_argument(
        "--keys", action="append", metavar="DIR", help="CURVE key folder to check (default: keys/ if present)"
    )
    doctor.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    doctor.set_defaults(func=_cmd_doctor)
    return doctor


def _cmd_ping(args: argparse.Namespace) -> int:
    from robot_stack.console import print_table
    from robot_stack.doctor.ping import ping

    report = ping(
        args.endpoint,
        n=args.n,
        infer=args.infer,
        timeout_s=args.timeout,
        curve_server_key=args.curve_server_key,
        curve_secret=args.curve_secret,
    )
    if args.json:
        print(json.dumps(report.to_dict()))
    else:
        print_table(f"robot-stack ping {args.endpoint}", ["", "value"], report.rows())
    return 0


def add_ping_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack ping ENDPOINT [-n N] [--infer] [--curve-server-key K --curve-secret S]``."""
    p = subparsers.add_parser(
        "ping",
        help="check a running policy server: health, model, round trip p50/p99, clock offset",
        description="Ping a policy server (tcp:// ZeroMQ, or ws:// openpi protocol). Exit 1 when it does not answer.",
        epilog="examples:\n  robot-stack ping tcp://127.0.0.1:5555\n"
        "  robot-stack ping tcp://gpu-box:5555 --curve-server-key keys/server.key "
        "--curve-secret keys/robot1.key_secret\n"
        "  robot-stack ping ws://127.0.0.1:8000 -n 50   # an openpi-protocol server",
    )
    p.add_argument("endpoint", help="tcp://HOST:PORT (robot-stack serve) or ws://HOST:PORT (openpi protocol)")
    p.add_argument("-n", type=int, default=20, help="round trips to measure")
    p.add_argument("--infer", action="store_true", help="time inference calls on a zero observation, not health pings")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for each answer")
    p.add_argument("--curve-server-key", help="the server's public .key file (CURVE)")
    p.add_argument("--curve-secret", help="your client .key_secret file (CURVE, with --curve-server-key)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.set_defaults(func=_cmd_ping)
    return p
