"""``robot-stack serve`` and ``robot-stack compile``: serve a model over ZeroMQ; build and validate its engine."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

__all__ = ["add_compile_parser", "add_serve_parser"]


def _cmd_serve(args: argparse.Namespace) -> int:
    from robot_stack.errors import ConfigError
    from robot_stack.policy.service import serve

    if getattr(args, "ray", False):
        return int(args.fleet_runner(args))
    if len(args.manifest) > 1:
        raise ConfigError(f"{len(args.manifest)} manifests given; one server serves one model (several need --ray)")
    serve(
        args.manifest[0],
        bind=args.bind,
        provider=args.provider,
        strict=args.strict,
        threads=args.threads,
        curve_secret=args.curve_secret,
        allow_dir=args.allow_dir,
        engine=args.engine,
        precision=args.precision,
        openpi_port=args.openpi_port,
        openpi_host=args.openpi_host,
        openpi_timeout_s=args.openpi_timeout,
        openpi_api_key=_read_key(args.openpi_api_key_file),
    )
    return 0


def _read_key(path: str | None) -> str | None:
    """The api key in ``path`` (first line, stripped); None without a path."""
    if path is None:
        return None
    from pathlib import Path

    from robot_stack.errors import ConfigError

    key = Path(path).read_text(encoding="utf-8").strip().splitlines()
    if not key or not key[0].strip():
        raise ConfigError(f"--openpi-api-key-file {path} is empty; write the key on its first line")
    return key[0].strip()


def add_serve_parser(
    subparsers: Any,
    fleet: tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]] | None = None,
) -> argparse.ArgumentParser:
    """Register ``robot-stack serve --manifest M [--bind ...] [--provider ...] [--engine ...] [CURVE flags]``.

    ``fleet``: (add its flags, run it) of ``serve --ray`` (:mod:`robot_stack.fleet.cli`, a layer above this one,
    handed in by the CLI that assembles the commands); None = no ``--ray``."""
    serve = subparsers.add_parser(
        "serve",
        help="serve a policy over ZeroMQ (and the openpi websocket protocol)",
        epilog="examples:\n  robot-stack serve --manifest models/reach.yaml\n"
        "  robot-stack serve --manifest models/reach.yaml --bind tcp://0.0.0.0:5555 "
        "--curve-secret keys/server.key_secret "
        "--allow-dir keys/allowed\n"
        "  robot-stack serve --manifest models/reach.yaml --openpi-port 8000   # openpi clients too\n"
        "  robot-stack serve --ray --replicas 2 --manifest models/reach.yaml   # a Ray Serve fleet (docs/fleet.md)",
    )
    serve.add_argument(
        "--manifest",
        required=True,
        action="append",
        help="model manifest YAML (next to the .onnx); repeat with --ray to serve several models (by model_id)",
    )
    serve.add_argument("--bind", default="tcp://127.0.0.1:5555", help="endpoint (localhost unless you say so)")
    serve.add_argument("--provider", default=None, choices=["cpu", "cuda", "tensorrt"], help="execution provider")
    serve.add_argument("--strict", action="store_true", help="fail instead of falling back to CPU")
    serve.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all)")
    serve.add_argument("--curve-secret", help="server .key_secret file: enables CURVE authentication")
    serve.add_argument("--allow-dir", help="folder of allowed client .key files (needs --curve-secret)")
    serve.add_argument(
        "--engine", default="ort", choices=["ort", "tensorrt", "torch"], help="ONNX Runtime, native TensorRT or torch"
    )
    serve.add_argument("--precision", default=None, help="fp32|fp16|int8 (TensorRT), fp32|fp16|bf16 (torch)")
    serve.add_argument(
        "--openpi-port", type=int, help="also speak openpi's websocket + msgpack-numpy protocol on this port"
    )
    serve.add_argument("--openpi-host", default="127.0.0.1", help="where the openpi face listens")
    serve.add_argument("--openpi-timeout", type=float, default=1.0, help="per-request deadline of openpi requests, s")
    serve.add_argument("--openpi-api-key-file", help="file with the key openpi clients must send (api_key=...)")
    if fleet is not None:
        add_flags, run = fleet
        add_flags(serve)
        serve.set_defaults(fleet_runner=run)
    serve.set_defaults(func=_cmd_serve)
    return serve


def _cmd_compile(args: argparse.Namespace) -> int:
    from robot_stack.policy.compiler import run_compile

    return run_compile(args)


def add_compile_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack compile MANIFEST [--fp16 | --int8] [--max-batch N] [--cache-dir D] [--rebuild]
    [--calibration-data DATASET] [--tf32]`` (the work: :func:`robot_stack.policy.compiler.run_compile`);
    exit code 0 = engine built (or cached) and validated, 1 = it could not be (reason printed)."""
    parser = subparsers.add_parser(
        "compile",
        help="build and validate a TensorRT engine for a model manifest",
        epilog="examples:\n  robot-stack compile models/reach.yaml --fp16\n"
        "  robot-stack compile models/reach.yaml --int8 --calibration-data data/reach",
    )
    parser.add_argument("manifest", help="model manifest YAML (or its .onnx with the YAML next to it)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--fp16", action="store_true", help="allow FP16 kernels")
    group.add_argument("--int8", action="store_true", help="INT8 (+FP16), calibrated on --calibration-data")
    parser.add_argument("--max-batch", type=int, default=None, help="batch-dim profile max (default: manifest)")
    parser.add_argument("--cache-dir", default=None, help="engine cache (default: <model dir>/.trt_engines)")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached engine")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object")
    parser.add_argument(
        "--calibration-data",
        metavar="DATASET",
        default=None,
        help="recorded dataset (robot-stack record): calibrates --int8 and adds held-out frames to the accuracy gate",
    )
    parser.add_argument("--calibration-frames", type=int, default=32, help="frames sampled from it (default 32)")
    parser.add_argument("--tf32", action="store_true", help="allow TF32 math in FP32 layers (looser FP32 gate)")
    parser.add_argument("--workspace-mb", type=int, default=1024, help="TensorRT builder workspace (default 1024)")
    parser.set_defaults(func=_cmd_compile)
    return parser
