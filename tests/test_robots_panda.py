"""The Panda description is found through the installed example-robot-data distribution's metadata, wherever that
distribution lives (virtual environment, ``pip install --user``, a ``--target`` / ``PYTHONPATH`` layer)."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robot_stack.errors import ConfigError
from robot_stack.robots import panda

REPO = Path(__file__).resolve().parents[1]


def _layer(root: Path, with_files: bool = True) -> Path:
    """A PYTHONPATH-only install location of example-robot-data, as ``pip install --target root`` lays it out:
    ``<name>-<version>.dist-info`` (METADATA, RECORD) beside the files its RECORD lists (the Panda description)."""
    dist = importlib.metadata.distribution(panda.DISTRIBUTION)
    info = root / f"example_robot_data-{dist.version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {panda.DISTRIBUTION}\nVersion: {dist.version}\n")
    source = panda.description_dir()
    rel = Path("cmeel.prefix/share/example-robot-data/robots/panda_description")
    if with_files:
        shutil.copytree(source, root / rel)
    listed = [rel / p.relative_to(source) for p in source.rglob("*") if p.is_file()]
    (info / "RECORD").write_text("".join(f"{p.as_posix()},,\n" for p in listed) + f"{info.name}/RECORD,,\n")
    return root


def _description_dir_in(python_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(python_path), str(REPO)])}
    code = "from robot_stack.robots import panda; print(panda.description_dir()); print(panda.urdf_path().is_file())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_description_found_in_a_pythonpath_layer(tmp_path):
    """The layer comes first on sys.path, so ``import`` would take its example-robot-data: the description must be
    the layer's too (before: always the interpreter's own site-packages, wherever the distribution was)."""
    layer = _layer(tmp_path / "layer")
    out = _description_dir_in(layer).split()
    assert Path(out[0]) == layer / "cmeel.prefix/share/example-robot-data/robots/panda_description"
    assert out[1] == "True"


def test_description_resolves_in_this_environment_and_feeds_both_models():
    panda.description_dir.cache_clear()
    root = panda.description_dir()
    assert (root / "urdf" / "panda.urdf").is_file()
    dist = importlib.metadata.distribution(panda.DISTRIBUTION)
    assert root.is_relative_to(Path(str(dist.locate_file(""))))  # the distribution's own install location
    text = panda.urdf_text_with_absolute_paths()
    assert panda.URDF_PACKAGE not in text and f"{root}/meshes/" in text


def test_missing_or_empty_distribution_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr(panda, "DISTRIBUTION", "example-robot-data-not-installed")
    panda.description_dir.cache_clear()
    with pytest.raises(ConfigError, match="not installed.*pip install"):
        panda.description_dir()
    monkeypatch.undo()
    layer = _layer(tmp_path / "empty", with_files=False)  # metadata but its files were deleted
    monkeypatch.syspath_prepend(str(layer))
    importlib.invalidate_caches()
    panda.description_dir.cache_clear()
    try:
        with pytest.raises(ConfigError, match="Panda description not found in the installed example-robot-data"):
            panda.description_dir()
    finally:
        monkeypatch.undo()
        panda.description_dir.cache_clear()
