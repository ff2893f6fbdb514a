"""Reading configuration files: one place that turns a malformed YAML file into a clear ``ConfigError``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from robot_stack.errors import ConfigError


def read_yaml(path: Path, what: str) -> Any:
    """Parse ``path`` (an existing file) as YAML; ``ConfigError("<what> <path> is not valid YAML: ...")`` if not."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc
