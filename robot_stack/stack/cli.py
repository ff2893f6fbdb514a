"""The command-line face of :class:`~robot_stack.stack.config.StackConfig`: ``--config PRESET`` and ``--set``."""

from __future__ import annotations

import argparse

__all__ = ["add_stack_config_arguments"]


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
