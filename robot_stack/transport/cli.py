"""``robot-stack keys``: ZeroMQ CURVE key files for the policy server and its clients."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_keys_parser"]


def _cmd_keys_generate(args: argparse.Namespace) -> int:
    from robot_stack.errors import ConfigError
    from robot_stack.transport.keys import ALLOW_DIR_NAME, ROBOTS_SUFFIX, generate_keys

    directory = Path(args.dir)
    allow = None if args.server else Path(args.allow_dir) if args.allow_dir else directory / ALLOW_DIR_NAME
    robots = [r.strip() for r in args.robots.split(",")] if args.robots is not None else None
    if robots is not None and args.server:
        raise ConfigError("--robots binds a client key to robot ids; a --server key has none")
    pair = generate_keys(directory, args.name, allow_dir=allow, overwrite=args.force, robot_ids=robots)
    if args.server:  # the server needs an allow-list folder to exist, even before the first client
        (directory / ALLOW_DIR_NAME).mkdir(exist_ok=True)
    print(f"public key  {pair.public_file}  ({pair.public_key.decode()})")
    print(f"secret key  {pair.secret_file}  (mode 600: keep it on this machine)")
    if allow is not None:
        bound = f", robot ids {robots} ({args.name}{ROBOTS_SUFFIX})" if robots is not None else ", any robot id"
        print(f"allow-listed in {allow}/{bound}")
    return 0


def add_keys_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``robot-stack keys generate <dir> --name <id> [--server] [--allow-dir D] [--robots IDS] [--force]``."""
    keys = subparsers.add_parser("keys", help="manage ZeroMQ CURVE key files")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    gen = keys_sub.add_parser("generate", help="create a CURVE key pair (and allow-list a client key)")
    gen.add_argument("dir", help="key folder, e.g. keys/")
    gen.add_argument("--name", required=True, help="identity name, e.g. robot1 or server")
    gen.add_argument("--server", action="store_true", help="a server pair: not added to the allow-list")
    gen.add_argument("--allow-dir", help="allow-list folder for client keys (default: <dir>/allowed)")
    gen.add_argument(
        "--robots",
        help="comma-separated robot ids this client key may use (writes <allow-dir>/<name>.robots; default: any id)",
    )
    gen.add_argument("--force", action="store_true", help="overwrite an existing pair of that name")
    gen.set_defaults(func=_cmd_keys_generate)
    return keys
