"""``robot_stack.config.check_keys``: the one check of a YAML mapping's keys (manifests, their sections, VQ
tokenizer manifests) says what was missing or unknown and what the mapping takes."""

from __future__ import annotations

import pytest

from robot_stack.config import check_keys
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
