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


def test_fleet_route_accepts_an_rtc_prefix_for_a_vla_model() -> None:
    """Regression: the fleet's model route took RTC support from ``flow_matching:`` only, so the shipped VLA (``vla:``
    with ``rtc: true``) had its robots' ``rtc/prefix`` refused behind ``serve --ray``."""
    import types

    from robot_stack.errors import PolicyError
    from robot_stack.fleet.cluster import DeployedModel
    from robot_stack.fleet.dispatcher import FleetDispatcher
    from robot_stack.policy.manifest import SHIPPED_MODELS_DIR, PolicyManifest
    from robot_stack.policy.rtc import RTC_PREFIX
    from robot_stack.transport.protocol import ArraySpec

    path = SHIPPED_MODELS_DIR / "vla" / "vla-tabletop-v1.yaml"
    manifest = PolicyManifest.load(path)
    assert manifest.vla is not None and manifest.vla.rtc
    model = DeployedModel(manifest.model_id, str(path), 1, 1, 1)
    route = FleetDispatcher._route(types.SimpleNamespace(_replica_states={}), model)  # type: ignore[arg-type]
    assert route.check_request is not None
    specs = [ArraySpec(t.name, t.dtype, (1, *t.shape[1:])) for t in manifest.request_inputs]
    route.check_request(specs)
    route.check_request([*specs, ArraySpec(RTC_PREFIX, "float32", (1, 3, manifest.action_dim))])
    with pytest.raises(PolicyError):
        route.check_request([*specs, ArraySpec(RTC_PREFIX, "float32", (1, manifest.horizon + 1, manifest.action_dim))])
