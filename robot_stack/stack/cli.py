"""The command-line face of :class:`~robot_stack.stack.config.StackConfig`: ``--config PRESET``, ``--set`` and
``--robot``."""

from __future__ import annotations

import argparse

__all__ = ["add_robot_argument", "add_stack_config_arguments", "stack_overrides"]


def add_robot_argument(parser: argparse.ArgumentParser, help_extra: str = "") -> None:
    """Add ``--robot panda|ur5|so101``: the arm (``robot.model``; a simulated arm also gets its cell and the policy
    that serves every arm, :func:`~robot_stack.stack.config.with_robot`). Default None: the preset's arm."""
    from robot_stack.robots.registry import ROBOT_MODELS

    parser.add_argument(
        "--robot",
        choices=ROBOT_MODELS,
        help="the arm: its description gives limits, control rate, workspace, IK and home; a simulated arm runs in "
        f"its own cell (default: the preset's arm, the Panda){help_extra}",
    )


def add_stack_config_arguments(parser: argparse.ArgumentParser, default: str | None = "demo") -> None:
    """Add ``--config NAME|FILE`` (a preset in robot_stack/configs, or a YAML file) and repeatable
    ``--set section.field=value`` overrides to a subcommand's parser (``default`` None: the command picks it)."""
    parser.add_argument(
        "--config",
        default=default,
        help=f"stack preset name or YAML file (default: {default or 'by the command'}; see robot_stack/configs)",
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
