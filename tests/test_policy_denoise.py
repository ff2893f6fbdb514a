"""The sampling loop shared by both flow-matching forms (``flow_matching:``, ``vla:``): Euler integration against
closed-form answers, the RTC guidance it applies and the refusal it raises, exact inpainting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from robot_stack.errors import PolicyError
from robot_stack.policy.denoise import euler_sample, normalise_actions, rtc_guidance
from robot_stack.policy.manifest import NormStats, PolicyManifest, TensorSpec
from robot_stack.policy.rtc import RtcRequest, guidance_weights

H, D = 8, 3


def _manifest(mean: float = 0.5, std: float = 0.25) -> PolicyManifest:
    return PolicyManifest(
        model_id="loop",
        onnx_path=__file__,  # never loaded here
        inputs=(TensorSpec("state", "float32", (-1, 4)),),
        outputs=(TensorSpec("actions", "float32", (-1, H, D)),),
        action_space="joint_position",
        action_head="continuous",
        horizon=H,
        dt_s=0.1,
        normalization={"actions": NormStats(np.full(D, mean), np.full(D, std))},
    )


def test_euler_integrates_a_linear_field_exactly_in_its_steps() -> None:
    """v(x, tau) = c - x has the Euler solution x_K = c + (1 - 1/K)^K (x0 - c), step by step."""
    rng = np.random.default_rng(0)
    x0, c = rng.standard_normal((2, H, D)), rng.standard_normal((2, H, D))
    taus: list[float] = []

    def velocity(x: np.ndarray, tau: float) -> np.ndarray:
        taus.append(tau)
        return c - x

    for k in (1, 4, 10):
        taus.clear()
        x = euler_sample(velocity, x0, k)
        np.testing.assert_allclose(x, c + (1 - 1 / k) ** k * (x0 - c), atol=1e-12)
        assert taus == [i / k for i in range(k)]
    with pytest.raises(PolicyError, match=">= 1"):
        euler_sample(velocity, x0, 0)


def test_guidance_pulls_the_frozen_steps_onto_the_prefix_and_leaves_free_rows_alone() -> None:
    """A field that ignores the prefix (v = 0: the chunk would stay at its noise): guided, the frozen steps of the row
    with a prefix end on it; the row without one is integrated unchanged."""
    m = _manifest()
    prefix = np.full((4, D), 0.75, np.float32)  # raw units: normalised (0.75 - 0.5) / 0.25 = 1
    g = rtc_guidance(m, [RtcRequest(prefix, 2), None], 2, accepts=True, beta=5.0, section="vla")
    assert g is not None and g.target.shape == (2, H, D)
    np.testing.assert_allclose(g.target[0, :4], 1.0)
    np.testing.assert_array_equal(g.weights[0], guidance_weights(H, 4, 2))
    assert not g.weights[1].any()
    noise = np.random.default_rng(1).standard_normal((2, H, D))
    x = euler_sample(lambda x, tau: np.zeros_like(x), noise, 10, guidance=g)
    assert np.abs(x[0, :2] - 1.0).max() < 0.05 < np.abs(noise[0, :2] - 1.0).max()
    np.testing.assert_array_equal(x[1], noise[1])
    assert np.abs(x[0, 4:] - noise[0, 4:]).max() == 0.0  # beyond the prefix, weight 0


def test_rtc_guidance_refuses_by_section_and_counts_rows() -> None:
    m = _manifest()
    req = RtcRequest(np.zeros((3, D), np.float32), 1)
    assert rtc_guidance(m, None, 2, accepts=False, beta=5.0, section="vla") is None
    assert rtc_guidance(m, [None, None], 2, accepts=False, beta=5.0, section="vla") is None
    with pytest.raises(PolicyError, match=r"vla has no rtc: true.*rtc/prefix"):
        rtc_guidance(m, [req], 1, accepts=False, beta=5.0, section="vla")
    with pytest.raises(PolicyError, match=r"flow_matching has no rtc: true"):
        rtc_guidance(m, [req], 1, accepts=False, beta=5.0, section="flow_matching")
    with pytest.raises(PolicyError, match="1 RTC entries for a batch of 2"):
        rtc_guidance(m, [req], 2, accepts=True, beta=5.0, section="vla")


def test_exact_inpainting_ends_on_the_known_steps_and_normalisation_inverts_the_runtimes() -> None:
    m = _manifest()
    raw = np.random.default_rng(2).uniform(-1, 1, (1, 3, D))
    known = normalise_actions(m, raw)
    np.testing.assert_allclose(known * 0.25 + 0.5, raw, atol=1e-12)  # what finish_outputs applies to the chunk
    noise = np.random.default_rng(3).standard_normal((1, H, D))
    x = euler_sample(lambda x, tau: -x, noise, 5, known=known)
    np.testing.assert_allclose(x[:, :3], known, atol=1e-12)
    # statistics per step and dim (H, D): a prefix of P steps uses the first P rows
    mean, std = np.arange(H * D).reshape(H, D) / 10.0, np.full((H, D), 2.0)
    per_step = dataclasses.replace(m, normalization={"actions": NormStats(mean, std)})
    np.testing.assert_allclose(normalise_actions(per_step, raw[0]), (raw[0] - mean[:3]) / 2.0, atol=1e-6)
    plain = dataclasses.replace(m, normalization={})
    np.testing.assert_array_equal(normalise_actions(plain, raw), raw)  # no statistics: unchanged
