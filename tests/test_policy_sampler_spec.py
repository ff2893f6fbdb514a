"""The two manifest forms of a flow-matching action expert (``flow_matching:``, ``vla:``) share one sampling-loop spec
(:class:`~robot_stack.policy.manifest.SamplerSpec`): read, checked and loaded the same way, each error naming its own
section. Runs on the shipped VLA manifest (YAML only) and the Gaussian flow toy (ONNX Runtime, no torch)."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from robot_stack.errors import ConfigError
from robot_stack.policy.backends import load_sampler
from robot_stack.policy.flow import FlowMatchingPolicy
from robot_stack.policy.flow_toy import build_gaussian_flow_model
from robot_stack.policy.manifest import SHIPPED_MODELS_DIR, FlowMatchingSpec, PolicyManifest, SamplerSpec, VlaSpec

VLA = SHIPPED_MODELS_DIR / "vla" / "vla-tabletop-v1.yaml"


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(build_gaussian_flow_model(tmp_path_factory.mktemp("flow"), seed=0).manifest)


def _forms(flow: Path) -> dict[str, tuple[dict, Path]]:
    """Section name -> (the parsed YAML of a manifest with that section, its folder)."""
    return {
        "flow_matching": (yaml.safe_load(flow.read_text()), flow.parent),
        "vla": (yaml.safe_load(VLA.read_text()), VLA.parent),
    }


def test_both_forms_are_one_sampler_spec_and_round_trip(flow: Path) -> None:
    for path, cls in ((flow, FlowMatchingSpec), (VLA, VlaSpec)):
        m = PolicyManifest.load(path)
        assert isinstance(m.sampler, cls) and isinstance(m.sampler, SamplerSpec)
        assert m.sampler.steps == 10 and m.sampler.rtc and m.sampler.guidance_beta == 5.0
        assert getattr(m, cls.section) is m.sampler
        again = PolicyManifest.from_dict(m.to_dict(relative_to=path.parent), path.parent, source=path)
        assert again.sampler == m.sampler and again.to_dict() == m.to_dict()
        encoder, step = m.sampler_graphs()
        assert encoder.onnx_path == m.onnx_path and step.onnx_path.is_file()
        assert {encoder.max_batch, step.max_batch} == {m.max_batch} and step.horizon == m.horizon
    assert PolicyManifest.load(SHIPPED_MODELS_DIR / "reach-touch-v1.yaml").sampler is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"steps": 0}, "{section}.steps must be an int in 1..1000, got 0"),
        ({"steps": True}, "{section}.steps must be an int"),
        ({"guidance_beta": -1.0}, "{section}.guidance_beta must be > 0"),
        ({"rtc": "yes"}, "{section}.rtc must be true or false"),
        ({"bogus": 1}, r"{section}: unknown key\(s\) \['bogus'\]"),
    ],
)
def test_a_bad_loop_is_refused_alike_in_both_forms_naming_the_section(flow: Path, change: dict, message: str) -> None:
    for section, (doc, folder) in _forms(flow).items():
        bad = copy.deepcopy(doc)
        bad[section].update(change)
        with pytest.raises(ConfigError, match=message.format(section=section)):
            PolicyManifest.from_dict(bad, folder)


def test_a_section_without_its_keys_or_with_a_backbone_is_refused_alike(flow: Path) -> None:
    for section, (doc, folder) in _forms(flow).items():
        bad = copy.deepcopy(doc)
        del bad[section]["steps"]
        with pytest.raises(ConfigError, match=rf"{section}: missing required key\(s\) \['steps'\]"):
            PolicyManifest.from_dict(bad, folder)
        bad = copy.deepcopy(doc)
        features = {"name": "features", "dtype": "float32", "shape": [-1, 4]}
        bad["backbone"] = {"onnx": "b.onnx", "inputs": [features], "outputs": doc["inputs"][:1], "rate_hz": 5}
        with pytest.raises(ConfigError, match=f"{section} with a backbone is not supported"):
            PolicyManifest.from_dict(bad, folder)
    doc, folder = _forms(flow)["flow_matching"]
    both = {**doc, "vla": _forms(flow)["vla"][0]["vla"]}
    with pytest.raises(ConfigError, match="flow_matching or vla, not both"):
        PolicyManifest.from_dict(both, folder)


def test_load_sampler_composes_the_flow_form_and_refuses_vla_options(flow: Path) -> None:
    m = PolicyManifest.load(flow)
    choice = load_sampler(m, "ort", provider="cpu", threads=1)
    try:
        assert isinstance(choice.policy, FlowMatchingPolicy) and choice.backend == "ort" and choice.reason == ""
        out = choice.policy.run({"state": np.zeros((1, *m.inputs[0].shape[1:]), np.float32)})
        assert out["actions"].shape == (1, m.horizon, m.action_dim) and np.all(np.isfinite(out["actions"]))
    finally:
        choice.policy.close()
    with pytest.raises(ConfigError, match="options of a vla: model"):
        load_sampler(m, "ort", steps=3)
    with pytest.raises(ConfigError, match="no flow_matching or vla section"):
        load_sampler(PolicyManifest.load(SHIPPED_MODELS_DIR / "reach-touch-v1.yaml"), "ort")
