"""``robot_stack.config`` helpers the YAML files share: ``check_keys`` (the one check of a mapping's keys: manifests,
their sections, VQ tokenizer manifests) says what was missing or unknown and what the mapping takes; ``read_yaml``'s
not-found message; ``relative_path`` / ``resolve_path`` (file paths written relative to the YAML file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_stack.config import check_keys, read_yaml, relative_path, resolve_path
from robot_stack.errors import ConfigError


def test_a_mapping_with_its_keys_passes_through_unchanged() -> None:
    raw = {"onnx": "a.onnx", "rate_hz": 5}
    assert check_keys(raw, "backbone", ["onnx", "rate_hz"], ["normalization"]) is raw
    full = {"onnx": "a.onnx", "normalization": {}, "rate_hz": 1}
    assert check_keys(full, "backbone", ["onnx", "rate_hz"], ["normalization"]) == full


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ([1, 2], r"^vla must be a mapping with \['steps'\] \(optionally \['rtc'\]\), got list$"),
        ({"rtc": True}, r"^vla: missing required key\(s\) \['steps'\]; it takes \['steps'\] \(optionally \['rtc'\]\)$"),
        ({"steps": 1, 3: 0, "x": 1}, r"^vla: unknown key\(s\) \['3', 'x'\]; it takes"),
        ({"x": 1}, r"^vla: missing required key\(s\) \['steps'\], unknown key\(s\) \['x'\]; it takes"),
    ],
)
def test_a_wrong_mapping_is_a_config_error_saying_what_and_what_it_takes(raw: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        check_keys(raw, "vla", ["steps"], ["rtc"])


def test_paths_written_relative_to_a_yaml_file_resolve_back(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    inside, outside = folder / "sub" / "m.onnx", tmp_path / "elsewhere" / "w.onnx"
    assert relative_path(inside, folder) == "sub/m.onnx"
    assert resolve_path(relative_path(inside, folder), folder) == inside.resolve()
    assert relative_path(outside, folder) == str(outside.resolve())  # not below the folder: absolute
    assert resolve_path(relative_path(outside, folder), folder) == outside.resolve()
    assert relative_path(Path("a/b.onnx"), None) == "a/b.onnx"  # no folder: as is
    assert resolve_path("/abs/x.onnx", folder) == Path("/abs/x.onnx")


def test_read_yaml_names_a_missing_file_and_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^bin spec .*nope.yaml not found; write one next to the model$"):
        read_yaml(tmp_path / "nope.yaml", "bin spec", missing="write one next to the model")
    (tmp_path / "bad.yaml").write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match="bin spec .*bad.yaml is not valid YAML"):
        read_yaml(tmp_path / "bad.yaml", "bin spec", missing="write one")
