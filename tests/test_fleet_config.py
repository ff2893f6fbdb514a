"""``serve --ray`` flags and :class:`FleetConfig` (no Ray needed)."""

from __future__ import annotations

import pytest

from robot_stack.cli import build_parser, main
from robot_stack.errors import ConfigError
from robot_stack.fleet import FleetConfig, parse_autoscale
from robot_stack.fleet.cli import fleet_config


def test_serve_ray_flags_become_a_fleet_config() -> None:
    args = build_parser().parse_args(
        ["serve", "--ray", "--manifest", "a.yaml", "--manifest", "b.yaml", "--autoscale", "1,4"]
        + ["--gpus-per-replica", "0.5", "--address", "ray://head:10001"]
    )
    assert args.manifest == ["a.yaml", "b.yaml"]
    config = fleet_config(args)
    assert config.autoscale == (1, 4) and config.max_replicas == 4
    assert config.gpus_per_replica == 0.5 and config.address == "ray://head:10001"
    fixed = fleet_config(build_parser().parse_args(["serve", "--ray", "--manifest", "a.yaml", "--replicas", "3"]))
    assert fixed.replicas == 3 and fixed.autoscale is None and fixed.address is None


def test_replicas_and_autoscale_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["serve", "--ray", "--manifest", "a", "--replicas", "2", "--autoscale", "1,2"])
    assert info.value.code == 2


def test_several_manifests_need_ray(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["serve", "--manifest", "a.yaml", "--manifest", "b.yaml"]) == 1
    assert "several need --ray" in caplog.text


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"replicas": 0}, "replicas must be a positive int"),
        ({"autoscale": (3, 2)}, "autoscale must be MIN,MAX"),
        ({"gpus_per_replica": 1.5}, "whole GPUs"),
        ({"gpus_per_replica": -1.0}, ">= 0"),
        ({"max_batch": 0}, "max_batch"),
        ({"threads": 0}, "threads"),
    ],
)
def test_bad_fleet_settings_are_refused_with_the_reason(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        FleetConfig(**kwargs)


def test_autoscale_text_is_min_comma_max() -> None:
    assert parse_autoscale("0,8") == (0, 8)
    for bad in ("4", "1,2,3", "a,b"):
        with pytest.raises(ConfigError, match="MIN,MAX"):
            parse_autoscale(bad)
