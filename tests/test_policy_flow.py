"""Flow-matching serving and real-time chunking: the manifest hook, the denoising loop (a Gaussian flow model with a
known answer, ONNX, no torch), the RTC prefix's inpainting and its checks, end to end over the real server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_stack.errors import ConfigError, PolicyError
from robot_stack.policy.flow_toy import build_gaussian_flow_model
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.policy.rtc import RTC_DELAY_STEPS, RTC_PREFIX, guidance_weights
from robot_stack.policy.service import PolicyService
from robot_stack.robots import panda
from robot_stack.transport.client import PolicyClient
from robot_stack.transport.protocol import ArraySpec
from robot_stack.transport.server import PolicyServer

STATE = np.concatenate([panda.HOME_Q, panda.HOME_Q + 0.3]).astype(np.float32)[None]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_gaussian_flow_model(tmp_path_factory.mktemp("flow"), seed=0)


@pytest.fixture()
def service(model):
    svc = PolicyService.from_manifest(PolicyManifest.load(model.manifest), "cpu", threads=1)
    svc.warmup()
    return svc


def _samples(svc: PolicyService, n: int, **rtc) -> np.ndarray:
    arrays = {"state": STATE}
    meta = {}
    if rtc:
        arrays[RTC_PREFIX] = rtc["prefix"].astype(np.float32)
        meta[RTC_DELAY_STEPS] = rtc["delay"]
    return np.array([svc(arrays, meta)[0]["actions"][0] for _ in range(n)])


def test_the_manifest_declares_the_flow_loop_and_its_rtc_and_advertises_it(model) -> None:
    m = PolicyManifest.load(model.manifest)
    assert m.flow_matching is not None and m.flow_matching.steps == 10 and m.flow_matching.rtc
    assert m.flow_matching.step_graph.is_file()
    summary = m.summary()
    assert summary["flow_matching"]["rtc"] is True and "step_graph" not in summary["flow_matching"]
    step = m.flow_step_manifest()
    assert [t.name for t in step.inputs] == ["x_t", "tau", "mu"] and step.outputs[0].name == "velocity"
    assert [t.name for t in m.flow_encoder_manifest().outputs] == ["mu"]
    # round trip through YAML keeps it
    again = PolicyManifest.from_dict(m.to_dict(relative_to=model.manifest.parent), model.manifest.parent)
    assert again.flow_matching == m.flow_matching


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "steps"),
        ({"rtc": "yes"}, "rtc"),
        ({"extra": 1}, "unknown key"),
        ({"noise_input": "mu"}, "unique"),
    ],
)
def test_a_bad_flow_section_is_a_config_error_naming_the_field(model, change, message) -> None:
    doc = yaml.safe_load(Path(model.manifest).read_text())
    doc["flow_matching"].update(change)
    with pytest.raises(ConfigError, match=message):
        PolicyManifest.from_dict(doc, model.manifest.parent)


def test_the_served_loop_samples_the_models_distribution(model, service) -> None:
    samples = _samples(service, 120)
    mean = model.mean(STATE[0])
    np.testing.assert_allclose(samples.mean(axis=0), mean, atol=4 * model.std * 0.1)
    # per step, the spread of the samples follows the model's (K = 10 Euler steps shrink it by ~10 %)
    spread = samples[:, :, 0].std(axis=0) / (np.sqrt(np.diag(model.covariance)) * model.std)
    assert np.all((spread > 0.6) & (spread < 1.2)), spread


def test_rtc_inpaints_the_executing_prefix_and_continues_it(model, service) -> None:
    reference = _samples(service, 1)[0]  # the chunk being executed
    prefix, d = reference[:6], 3
    free = _samples(service, 80)
    guided = _samples(service, 80, prefix=prefix, delay=d)
    frozen_free = np.abs(free[:, :d] - reference[:d]).mean()
    frozen_guided = np.abs(guided[:, :d] - reference[:d]).mean()
    assert frozen_guided < 0.4 * frozen_free, (frozen_guided, frozen_free)
    # where the robot splices the new chunk in (step d), it now lands much closer to what it is executing
    splice_free = np.abs(free[:, d] - reference[d]).mean()
    splice_guided = np.abs(guided[:, d] - reference[d]).mean()
    assert splice_guided < 0.7 * splice_free, (splice_guided, splice_free)
    assert service.policy.rtc_runs == 80


def test_guidance_weights_follow_the_soft_mask() -> None:
    w = guidance_weights(8, 6, 2)
    assert list(w[:2]) == [1.0, 1.0] and np.all(w[6:] == 0.0)
    assert np.all(np.diff(w[2:6]) < 0) and 0.0 < w[5] < w[2] < 1.0


@pytest.mark.parametrize(
    ("arrays", "meta", "message"),
    [
        ({RTC_PREFIX: np.zeros((3, 7), np.float32)}, {}, "both"),
        ({}, {RTC_DELAY_STEPS: 1}, "both"),
        ({RTC_PREFIX: np.zeros((3, 6), np.float32)}, {RTC_DELAY_STEPS: 1}, "action dims"),
        ({RTC_PREFIX: np.zeros((9, 7), np.float32)}, {RTC_DELAY_STEPS: 1}, "P <= 8"),
        ({RTC_PREFIX: np.zeros((3, 7), np.float64)}, {RTC_DELAY_STEPS: 1}, "float32"),
        ({RTC_PREFIX: np.zeros((3, 7), np.float32)}, {RTC_DELAY_STEPS: 4}, "int in"),
        ({RTC_PREFIX: np.full((3, 7), np.nan, np.float32)}, {RTC_DELAY_STEPS: 1}, "NaN"),
    ],
)
def test_a_malformed_prefix_is_refused_with_the_reason(service, arrays, meta, message) -> None:
    with pytest.raises(PolicyError, match=message):
        service({"state": STATE, **arrays}, meta)


def test_a_model_without_rtc_refuses_a_prefix_by_name(tmp_path) -> None:
    flat = build_gaussian_flow_model(tmp_path, rtc=False, seed=1)
    svc = PolicyService.from_manifest(PolicyManifest.load(flat.manifest), "cpu", threads=1)
    assert not svc.accepts_rtc
    with pytest.raises(PolicyError, match="rtc/prefix"):
        svc({"state": STATE, RTC_PREFIX: np.zeros((3, 7), np.float32)}, {RTC_DELAY_STEPS: 1})
    with pytest.raises(PolicyError, match="rtc/prefix"):
        svc.check_request([ArraySpec("state", "float32", (1, 14)), ArraySpec(RTC_PREFIX, "float32", (3, 7))])


def test_declared_prefixes_are_checked_before_decoding(service) -> None:
    service.check_request([ArraySpec("state", "float32", (1, 14)), ArraySpec(RTC_PREFIX, "float32", (3, 7))])
    with pytest.raises(PolicyError, match="rtc/prefix"):
        service.check_request([ArraySpec("state", "float32", (1, 14)), ArraySpec(RTC_PREFIX, "float32", (3, 2))])


def test_a_micro_batch_mixes_requests_with_and_without_a_prefix(model, service) -> None:
    from robot_stack.transport.server import BatchItem

    prefix = model.mean(STATE[0])[:4].astype(np.float32)
    items = [
        BatchItem("a", {"state": STATE, RTC_PREFIX: prefix}, {RTC_DELAY_STEPS: 2}, 0, None),
        BatchItem("b", {"state": STATE}, {}, 0, None),
        BatchItem("c", {"state": STATE, RTC_PREFIX: prefix}, {}, 0, None),  # malformed: fails alone
    ]
    with_prefix, without, bad = service.run_batch(items)
    assert with_prefix[1]["rtc_delay_steps"] == 2 and "rtc_delay_steps" not in without[1]
    assert isinstance(bad, PolicyError)
    assert np.abs(with_prefix[0]["actions"][0, :2] - prefix[:2]).max() < 3 * model.std * 0.1


def test_rtc_end_to_end_over_the_real_server(model, service) -> None:
    server = PolicyServer(service, bind="tcp://127.0.0.1:*").start()
    client = PolicyClient(server.endpoint, robot_id="rtc", timeout_s=5.0)
    try:
        assert client.metadata()["flow_matching"]["rtc"] is True
        prefix = model.mean(STATE[0])[:5].astype(np.float32)
        reply = client.infer({"state": STATE, RTC_PREFIX: prefix}, {RTC_DELAY_STEPS: 3, "t_obs_ns": 1})
        assert reply.meta["rtc_delay_steps"] == 3 and reply.arrays["actions"].shape == (1, 8, 7)
        from robot_stack.errors import ServerError

        with pytest.raises(ServerError, match="rtc"):
            client.infer({"state": STATE, RTC_PREFIX: prefix[:, :3].copy()}, {RTC_DELAY_STEPS: 1})
    finally:
        client.close()
        server.close()
