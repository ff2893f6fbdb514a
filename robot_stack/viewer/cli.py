"""The command-line face of the viewer: ``--display``, ``--save PATH``, ``--web-port``; shared by every command
that runs a stack (demo, record, replay, hil, up)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_view_arguments", "open_view"]


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--display`` / ``--save`` / ``--web-port`` to a subcommand's parser."""
    parser.add_argument(
        "--display",
        action="store_true",
        help="show the run live in rerun (native viewer, or its web viewer when there is no display)",
    )
    parser.add_argument("--save", metavar="OUT.rrd", help="save a rerun recording of the run (open: rerun OUT.rrd)")
    parser.add_argument("--web-port", type=int, default=9090, help="port of rerun's web viewer (headless --display)")


def open_view(args: argparse.Namespace, app_id: str) -> Any:
    """A :class:`~robot_stack.viewer.live.LiveView` for the command line's flags, or None without them."""
    if not getattr(args, "display", False) and not getattr(args, "save", None):
        return None
    from robot_stack.viewer.live import LiveView

    return LiveView(app_id, save=args.save, display=args.display, web_port=args.web_port)
