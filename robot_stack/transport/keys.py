"""ZeroMQ CURVE key files: generation, loading, and the server's allow-list folder.

Files are exactly those of ``zmq.auth.create_certificates`` (ZPL "certificates"), so keys made with pyzmq's own
tools work too::

    <dir>/<name>.key            public key   (mode 0644): give it to peers
    <dir>/<name>.key_secret     key pair     (mode 0600): keep it on this machine only
    <dir>/allowed/<name>.key    copy of a *client* public key: the server's allow-list folder
    <dir>/allowed/<name>.robots the robot ids that key may use (optional sidecar, below)

``robot-stack keys generate keys/ --name server --server`` makes the server's pair; ``robot-stack keys generate
keys/ --name robot1 --robots arm-left,arm-right`` makes a client pair, drops its public key into ``keys/allowed/``
and binds it to those robot ids. The server then runs with ``--curve-secret keys/server.key_secret --allow-dir
keys/allowed`` and the robot with ``--server-key keys/server.key --curve-secret keys/robot1.key_secret``. Secret
files readable by group or others are refused (like ssh does).

**Robot-id sidecar** ``<name>.robots`` (UTF-8 text, next to ``<name>.key``): one robot id per line (no spaces);
blank lines and lines starting with ``#`` are ignored; a line ``*`` allows any id. A request whose robot id the
sending key does not list is answered ``robot_forbidden``. A key without a sidecar may use any robot id
(allow-lists from before the sidecar keep working); latest-wins only ever replaces requests of the *same* key,
whatever ids the keys use::

    # keys/allowed/robot1.robots
    arm-left
    arm-right
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robot_stack.errors import ConfigError
from robot_stack.transport.admission import ANY_ROBOT, ClientGrant
from robot_stack.transport.protocol import MAX_NAME_LEN

__all__ = [
    "ALLOW_DIR_NAME",
    "ROBOTS_SUFFIX",
    "CurveKeyPair",
    "client_curve_kwargs",
    "generate_keys",
    "load_allow_dir",
    "load_allow_list",
    "load_key_pair",
    "load_robot_ids",
    "load_public_key",
]

log = logging.getLogger("robot_stack.transport.keys")

#: Default allow-list folder name inside a key folder.
ALLOW_DIR_NAME = "allowed"
#: Suffix of the robot-id sidecar of an allow-listed key (``<name>.robots`` next to ``<name>.key``).
ROBOTS_SUFFIX = ".robots"


@dataclass(frozen=True)
class CurveKeyPair:
    """One CURVE identity: z85 public and secret keys (40 ASCII bytes each) and where they live on disk."""

    name: str
    public_key: bytes
    secret_key: bytes
    public_file: Path
    secret_file: Path


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_." for c in name) or name.startswith("."):
        raise ConfigError(f"key name {name!r} invalid: use letters, digits, '-', '_' or '.' (e.g. robot1, server)")


def generate_keys(
    directory: str | Path,
    name: str,
    *,
    allow_dir: str | Path | None = None,
    overwrite: bool = False,
    robot_ids: Sequence[str] | None = None,
) -> CurveKeyPair:
    """Create ``<directory>/<name>.key`` and ``<name>.key_secret`` (mode 0600); optionally allow-list it.

    Args:
        directory: key folder (created, mode 0700, if missing).
        name: identity name, e.g. ``robot1`` or ``server``.
        allow_dir: if given, the public key is copied there (the server's allow-list folder).
        overwrite: replace an existing pair of that name (otherwise :class:`ConfigError`).
        robot_ids: with ``allow_dir``: the robot ids the key may use, written to ``<allow_dir>/<name>.robots``
            (None = no sidecar: any id; an existing sidecar is then removed).
    Returns:
        the new key pair.
    """
    import zmq.auth

    _check_name(name)
    if robot_ids is not None:
        if allow_dir is None:
            raise ConfigError("robot ids bind an allow-listed key: pass allow_dir too (a server key has none)")
        robot_ids = [_check_robot_id(r, f"robot id for key {name!r}") for r in robot_ids]
        if not robot_ids:
            raise ConfigError(f"key {name!r}: an empty robot-id list would let it send nothing; give at least one id")
    directory = Path(directory)
    public_file, secret_file = directory / f"{name}.key", directory / f"{name}.key_secret"
    if not overwrite and (public_file.exists() or secret_file.exists()):
        raise ConfigError(f"keys {public_file} / {secret_file} already exist; pass overwrite=True (--force) to replace")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # Write the secret with a restrictive umask so it is never readable by others, not even for a moment.
    old_umask = os.umask(0o077)
    try:
        zmq.auth.create_certificates(str(directory), name)
    finally:
        os.umask(old_umask)
    os.chmod(secret_file, 0o600)
    os.chmod(public_file, 0o644)
    pair = load_key_pair(secret_file)
    if allow_dir is not None:
        allow = Path(allow_dir)
        allow.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(public_file, allow / public_file.name)
        os.chmod(allow / public_file.name, 0o644)
        sidecar = allow / f"{name}{ROBOTS_SUFFIX}"
        if robot_ids is not None:
            sidecar.write_text(
                f"# robot ids the key {name}.key may use (one per line; '*' = any); see robot_stack/transport/keys.py\n"
                + "".join(f"{r}\n" for r in robot_ids)
            )
            os.chmod(sidecar, 0o644)
        elif sidecar.exists():
            sidecar.unlink()
    log.info(
        "generated CURVE key pair %r in %s%s", name, directory, f" (allow-listed in {allow_dir})" * bool(allow_dir)
    )
    return pair


def _load(path: Path) -> tuple[bytes | None, bytes | None]:
    import zmq.auth

    if not path.is_file():
        raise ConfigError(f"key file {path} not found; create one with `robot-stack keys generate <dir> --name <id>`")
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not a ZeroMQ CURVE key file ({exc})") from exc
    if public is None or len(public) != 40:
        raise ConfigError(f"{path} holds no valid z85 public key (expected 40 characters)")
    return public, secret


def load_key_pair(secret_file: str | Path) -> CurveKeyPair:
    """Load a ``.key_secret`` file; refuse it if group/others may read it (fix with ``chmod 600``)."""
    path = Path(secret_file)
    public, secret = _load(path)
    if secret is None or len(secret) != 40:
        raise ConfigError(f"{path} holds no secret key; pass the .key_secret file, not the public .key")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"secret key file {path} has mode {mode:o}: readable by others; run `chmod 600 {path}`")
    assert public is not None
    name = path.name.removesuffix(".key_secret")
    return CurveKeyPair(name, public, secret, path.with_name(f"{name}.key"), path)


def load_public_key(path: str | Path) -> bytes:
    """The z85 public key of a ``.key`` (or ``.key_secret``) file."""
    public, _ = _load(Path(path))
    assert public is not None
    return public


def load_allow_dir(directory: str | Path) -> dict[bytes, str]:
    """Public keys of every ``*.key`` file in the allow-list folder -> the file's identity name.

    Raises:
        ConfigError: missing folder, unreadable key file, or an empty folder (nobody could connect: most likely a
            mistake).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"allow-list folder {directory} not found; `robot-stack keys generate` creates it")
    keys = {load_public_key(p): p.name.removesuffix(".key") for p in sorted(directory.glob("*.key"))}
    if not keys:
        raise ConfigError(f"allow-list folder {directory} holds no *.key files: no client could connect")
    return keys


def _check_robot_id(robot: str, where: str) -> str:
    if not robot or len(robot) > MAX_NAME_LEN or any(c.isspace() for c in robot) or robot.startswith("#"):
        raise ConfigError(
            f"{where}: {robot!r} is not a robot id (non-empty, at most {MAX_NAME_LEN} chars, no spaces, not starting "
            f"with '#'; '{ANY_ROBOT}' = any)"
        )
    return robot


def load_robot_ids(path: str | Path) -> frozenset[str]:
    """The robot ids of a ``<name>.robots`` sidecar (see the module docstring).

    Raises:
        ConfigError: unreadable file, a malformed id, or no id at all (the key could send nothing).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"robot-id file {path} cannot be read ({exc})") from exc
    ids = []
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if text and not text.startswith("#"):
            ids.append(_check_robot_id(text, f"{path}:{number}"))
    if not ids:
        raise ConfigError(
            f"robot-id file {path} lists no robot id: its key could send nothing. List the ids (one per line), "
            f"write '{ANY_ROBOT}' for any, or delete the file"
        )
    return frozenset(ids)


def load_allow_list(directory: str | Path) -> dict[bytes, ClientGrant]:
    """Allowed client keys with what each may do: z85 public key -> :class:`ClientGrant` (name = file name, robot
    ids from the ``<name>.robots`` sidecar, or any id without one).

    Raises:
        ConfigError: as :func:`load_allow_dir`, a bad sidecar, or a sidecar without its ``.key`` file.
    """
    directory = Path(directory)
    names = load_allow_dir(directory)
    orphans = sorted(p.name for p in directory.glob(f"*{ROBOTS_SUFFIX}") if not p.with_suffix(".key").is_file())
    if orphans:
        raise ConfigError(
            f"allow-list folder {directory}: robot-id file(s) {orphans} without a matching .key file; "
            "rename them to <key name>.robots or delete them"
        )
    grants: dict[bytes, ClientGrant] = {}
    claimed: dict[str, list[str]] = {}
    for key, name in names.items():
        sidecar = directory / f"{name}{ROBOTS_SUFFIX}"
        grant = ClientGrant.of(name, load_robot_ids(sidecar) if sidecar.exists() else None)
        grants[key] = grant
        for robot in grant.robot_ids or ():
            claimed.setdefault(robot, []).append(name)
        log.info(
            "allow-listed key %r: robot ids %s",
            name,
            "any (no sidecar)" if grant.robot_ids is None else sorted(grant.robot_ids),
        )
    for robot, owners in claimed.items():
        if len(owners) > 1:
            log.warning(
                "robot id %r is granted to several keys %s; their requests never supersede each other", robot, owners
            )
    return grants


def client_curve_kwargs(server_key: str | Path, client_secret: str | Path) -> dict[str, Any]:
    """``PolicyClient(**client_curve_kwargs("keys/server.key", "keys/robot1.key_secret"))`` keyword arguments."""
    pair = load_key_pair(client_secret)
    return {
        "server_public_key": load_public_key(server_key),
        "client_secret_key": pair.secret_key,
        "client_public_key": pair.public_key,
    }
