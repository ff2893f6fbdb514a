"""Cross-embodiment latent actions: one policy for every arm (ee state layout), a tokenizer whose decoder knows every
described arm, and the retiming that makes a decoded chunk keep to an arm's TCP speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_stack.errors import DatasetError, ShapeError
from robot_stack.training.samples import EE_STATE_DIM, TrainingSamples, concat_samples
from robot_stack.training.vq_tokenizer import arm_profiles, retime_chunk

torch = pytest.importorskip("torch")


def test_retime_keeps_the_path_and_the_speed_limit() -> None:
    rng = np.random.default_rng(0)
    chunks = np.cumsum(rng.normal(0.0, 0.02, (20, 8, 3)), axis=1)
    chunks[:, 0] = 0.0
    out = retime_chunk(chunks, 0.10, 0.1)
    assert out.shape == chunks.shape
    step = np.linalg.norm(np.diff(out, axis=1), axis=-1)
    assert step.max() <= 0.10 * 0.1 + 1e-12  # never faster than the arm's TCP speed
    np.testing.assert_allclose(out[:, 0], 0.0)
    # every retimed point lies on the original polyline, no further along it than the original step
    slow = retime_chunk(chunks, 1e-6, 0.1)
    assert np.abs(slow).max() < 1e-6 * 0.1 * 8
    within = retime_chunk(chunks, 10.0, 0.1)  # an arm faster than the chunk: unchanged
    np.testing.assert_allclose(within, chunks)
    with pytest.raises(ShapeError):
        retime_chunk(chunks[..., :2], 0.1, 0.1)
    assert [p.name for p in arm_profiles()] == ["panda", "ur5", "so101"]
    assert arm_profiles(["so101"])[0].max_speed_mps == pytest.approx(0.10)


def _samples(robot: str, n: int, episode0: int, seed: int, layout: str = "ee") -> TrainingSamples:
    """Synthetic samples: a red blob on a dark image, its base-frame XYZ, chunks toward it (a learnable toy)."""
    rng = np.random.default_rng(seed)
    h, w = 12, 16  # 48 x 64 images subsampled by 4
    rgb = np.zeros((n, h, w, 3), np.uint8)
    xyz = np.full((n, h, w, 3), np.nan, np.float32)
    goal = rng.uniform([0.4, -0.1, 0.05], [0.6, 0.1, 0.05], (n, 3)).astype(np.float32)
    tcp = goal + rng.uniform(-0.1, 0.1, (n, 3)).astype(np.float32)
    for i in range(n):
        r, c = rng.integers(2, h - 2), rng.integers(2, w - 2)
        rgb[i, r - 1 : r + 2, c - 1 : c + 2, 0] = 220
        xyz[i, :, :] = [0.5, 0.0, 0.0]
        xyz[i, r - 1 : r + 2, c - 1 : c + 2] = goal[i]
    chunks = (np.linspace(0.0, 1.0, 8)[None, :, None] * (goal - tcp)[:, None, :]).astype(np.float32)
    state = np.concatenate([tcp, np.ones((n, 1), np.float32)], axis=1)
    if layout == "full":
        state = np.concatenate([rng.normal(size=(n, 6)).astype(np.float32), state], axis=1)
    return TrainingSamples(
        rgb,
        xyz,
        state,
        chunks,
        episode0 + np.arange(n) // 10,
        0.1,
        "front",
        (48, 64),
        robot=np.full(n, robot),
        state_layout=layout,
    )


def test_concat_samples_of_several_arms() -> None:
    a, b = _samples("panda", 30, 0, 1), _samples("so101", 20, 0, 2)
    both = concat_samples([a, b])
    assert len(both) == 50 and both.robots == ("panda", "so101") and both.episodes == 5
    assert both.state.shape[1] == EE_STATE_DIM
    with pytest.raises(DatasetError, match="state layout"):
        concat_samples([a, _samples("ur5", 10, 0, 3, layout="full")])


def test_one_token_policy_serves_every_arm(tmp_path: Path) -> None:
    """Trained on two arms (ee layout): the served graph takes any arm's state vector (its length differs per arm),
    uses only TCP + gripper, emits tokens; the tokenizer's decoder knows all three arms, the held-out one too."""
    from robot_stack.decoders.vq import LatentVQDecoder, VqManifest
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.policy.runtime import OnnxPolicy
    from robot_stack.training.trainer import TrainConfig, train

    samples = concat_samples([_samples("panda", 60, 0, 1), _samples("so101", 60, 0, 2)])
    config = TrainConfig(
        epochs=1, hidden=32, latent_dim=3, levels=2, codebook_size=8, tokenizer_epochs=1, threads=1,
        robot_types=("panda", "ur5", "so101"),
    )  # fmt: skip
    result = train(samples, "latent_vq", tmp_path, "tiny-xemb", config)
    manifest = PolicyManifest.load(result.manifest_path)
    state_spec = next(t for t in manifest.inputs if t.name == "state")
    assert state_spec.shape == (-1,) and "state" not in manifest.normalization
    vq = VqManifest.load(result.tokenizer_path)
    assert vq.robot_types == ("panda", "ur5", "so101")

    policy = OnnxPolicy(manifest, "cpu", intra_op_threads=1)
    up = np.repeat(np.repeat(samples.rgb[3], 4, 0), 4, 1)
    up_xyz = np.repeat(np.repeat(samples.xyz[3], 4, 0), 4, 1)
    ee = samples.state[3]
    tokens = []
    for joints in (np.zeros(7), np.full(6, 0.3), np.full(5, -0.2)):  # a Panda's, a UR5's, an SO-101's state
        state = np.concatenate([joints, ee]).astype(np.float32)
        tokens.append(policy.run({"front/rgb": up, "front/xyz": up_xyz, "state": state})["tokens"])
    assert all(np.array_equal(tokens[0], t) for t in tokens[1:])  # only the shared part is used

    program = torch.export.load(str(Path(tmp_path) / "tiny-xemb.pt2")).module()
    for n_joints in (5, 7):
        state = torch.from_numpy(np.concatenate([np.zeros(n_joints), ee]).astype(np.float32))
        out = program(torch.from_numpy(up), torch.from_numpy(up_xyz), state)
        assert tuple(out.shape) == vq.token_shape

    for robot in vq.robot_types:  # every arm's decoder turns the same tokens into its own chunk
        decoded = LatentVQDecoder(vq, robot_type=robot).decode_tokens(tokens[0])
        assert decoded.shape == (vq.horizon, 3) and np.all(np.isfinite(decoded))
