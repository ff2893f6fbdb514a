"""The command-line face of :class:`~robot_stack.stack.config.StackConfig`: ``--config PRESET`` and ``--set``."""

from __future__ import annotations

import argparse

__all__ = ["add_stack_config_arguments", "stack_overrides"]


def add_stack_config_arguments(parser: argparse.ArgumentParser, default: str = "demo") -> None:
    """Add ``--config NAME|FILE`` (a preset in robot_stack/configs, or a YAML file) and repeatable
    ``--set section.field=value`` overrides to a subcommand's parser."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"stack preset name or YAML file (default: {default}; see robot_stack/configs)",
    )
    parser.add_argument(
        "--set",
        action="append",
        metavar="SECTION.FIELD=VALUE",
        help="override one config field, e.g. --set control.rate_hz=1000 --set cameras.front.width=848 (repeatable)",
    )
    parser.add_argument(
        "--allow-stale",
        action="store_true",
        help="use calibrations past their validity (logged; same as --set calibration.allow_stale=true)",
    )
    parser.add_argument(
        "--endpoint",
        help="use a running policy server: tcp://HOST:5555 (robot-stack serve) or ws://HOST:8000 (openpi protocol)",
    )


def stack_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides plus those of ``--allow-stale`` and ``--endpoint`` (the named flags win)."""
    out = list(getattr(args, "set", None) or ())
    if getattr(args, "allow_stale", False):
        out.append("calibration.allow_stale=true")
    if getattr(args, "endpoint", None):
        out.append(f"policy.endpoint={args.endpoint}")
    return out
