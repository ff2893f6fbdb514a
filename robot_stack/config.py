"""Reading configuration: one place that turns a malformed YAML file, or a bad ``package.module:name`` reference,
into a clear ``ConfigError``."""

from __future__ import annotations

import importlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

import yaml

from robot_stack.errors import ConfigError


def read_yaml(path: Path, what: str, missing: str | None = None) -> Any:
    """Parse ``path`` as YAML; ``ConfigError("<what> <path> is not valid YAML: ...")`` if it is not. With ``missing``
    (what to do about it), an absent file is ``ConfigError("<what> <path> not found; <missing>")``."""
    if missing is not None and not path.is_file():
        raise ConfigError(f"{what} {path} not found; {missing}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


def check_keys(raw: Any, where: str, required: Collection[str], optional: Collection[str] = ()) -> dict[str, Any]:
    """``raw`` (parsed YAML) as a mapping with every ``required`` key and no key outside ``required`` and
    ``optional``; else a ``ConfigError`` that names ``where`` (the mapping, e.g. ``manifest m.yaml: vla``), what was
    missing or unknown, and the keys it takes."""
    need, may = set(required), set(optional) - set(required)
    takes = f"{sorted(need)}" + (f" (optionally {sorted(may)})" if may else "")
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping with {takes}, got {type(raw).__name__}")
    missing = sorted(need - set(raw))
    unknown = sorted(str(k) for k in set(raw) - need - may)
    wrong = ([f"missing required key(s) {missing}"] if missing else []) + (
        [f"unknown key(s) {unknown}"] if unknown else []
    )
    if wrong:
        raise ConfigError(f"{where}: {', '.join(wrong)}; it takes {takes}")
    return raw


def resolve_path(path: str | Path, base_dir: str | Path) -> Path:
    """A path written in a YAML file (absolute, or relative to the file's folder ``base_dir``) as an absolute path."""
    out = Path(path)
    return out if out.is_absolute() else (Path(base_dir) / out).resolve()


def relative_path(path: Path, relative_to: str | Path | None) -> str:
    """``path`` as a YAML file in folder ``relative_to`` should write it: relative to that folder when it lies
    below it, else absolute; as is when ``relative_to`` is None."""
    if relative_to is None:
        return str(path)
    try:
        return str(path.resolve().relative_to(Path(relative_to).resolve()))
    except ValueError:
        return str(path.resolve())


def import_object(spec: str, what: str = "object") -> Any:
    """The object named by ``spec`` = ``"package.module:attribute"`` (e.g. a robot factory given in a config or on
    the command line); ``ConfigError`` naming ``what`` if the spec is malformed or does not import."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{what}: expected package.module:name, got {spec!r}")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} {spec!r}: cannot import it: {exc}") from exc
