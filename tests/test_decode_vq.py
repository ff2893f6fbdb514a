"""VQ action tokens: the shipped tokenizer reconstructs held-out expert chunks; ONNX == numpy; the latent_vq
decoder turns tokens into a joint trajectory; bad tokens are typed errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from robot_stack.decoders import get_decoder
from robot_stack.decoders.vq import DEFAULT_VQ_MANIFEST, VQ_MODELS_DIR, LatentVQDecoder, VqManifest
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda
from robot_stack.training.vq_tokenizer import (
    EMBODIMENTS,
    TokenizerConfig,
    build_decoder_onnx,
    build_encoder_onnx,
    chunk_step_rmse_mm,
    expert_chunks,
    sample_states,
    train_tokenizer,
    vq_policy_head,
)
from robot_stack.types import ActionChunk, RobotState

MS = 1_000_000
#: The stated reconstruction bound of the shipped residual-VQ tokenizer (per-step Euclidean RMSE).
RVQ_BOUND_MM = 3.0


def _session(model_or_path) -> ort.InferenceSession:
    src = model_or_path.SerializeToString() if isinstance(model_or_path, onnx.ModelProto) else str(model_or_path)
    return ort.InferenceSession(src, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def fresh():
    """Situations drawn with a seed the tokenizer never saw (training samples with seed 0)."""
    tcp, cube = sample_states(240, np.random.default_rng(2024))
    return tcp, cube, expert_chunks(tcp, cube).astype(np.float32)


@pytest.fixture(scope="module")
def small_tok():
    """A small tokenizer trained in-test (seconds), for properties that need the numpy reference."""
    return train_tokenizer(TokenizerConfig(n_states=1500, codebook_size=32, epochs=4, hidden=(32, 32), kmeans_iters=8))


@pytest.fixture(scope="module")
def rvq():
    return LatentVQDecoder(DEFAULT_VQ_MANIFEST, ik=panda_ik())


def _encode_all(manifest: VqManifest, chunks: np.ndarray) -> np.ndarray:
    enc = _session(manifest.encoder_path)
    return np.stack([enc.run(["tokens"], {"chunk": c})[0] for c in chunks])


def test_shipped_rvq_reconstructs_held_out_expert_chunks(rvq, fresh):
    _, _, chunks = fresh
    ids = _encode_all(rvq.manifest, chunks)
    assert ids.shape == (len(chunks), *rvq.manifest.token_shape) and ids.dtype == np.int64
    decoded = np.stack([rvq.decode_tokens(t) for t in ids])
    rmse = chunk_step_rmse_mm(decoded, chunks)
    assert rmse <= RVQ_BOUND_MM, rmse
    assert rvq.manifest.metrics["heldout_rmse_mm"] <= RVQ_BOUND_MM  # what training measured on its held-out split


@pytest.mark.parametrize("profile", EMBODIMENTS, ids=lambda p: p.name)
def test_embodiment_decoder_follows_robot_type_and_rate(profile, fresh):
    tcp, cube, chunks = fresh
    decoder = LatentVQDecoder(robot_type=profile.name, control_rate_hz=20.0, ik=panda_ik())
    ids = _encode_all(decoder.manifest, chunks[:80])
    decoded = np.stack([decoder.decode_tokens(t) for t in ids])
    truth = expert_chunks(tcp[:80], cube[:80], profile, 20.0)
    assert chunk_step_rmse_mm(decoded, truth) <= 4.0
    # the conditioning matters: the canonical chunk is far from what this robot type at 20 Hz needs
    assert chunk_step_rmse_mm(chunks[:80], truth) > 20.0


def test_single_codebook_variant_is_coarser_than_residual(rvq, fresh):
    _, _, chunks = fresh
    single = LatentVQDecoder(VQ_MODELS_DIR / "vq-reach-v1.yaml", ik=panda_ik())
    assert single.manifest.levels == 1
    ids = _encode_all(single.manifest, chunks)
    err_single = chunk_step_rmse_mm(np.stack([single.decode_tokens(t) for t in ids]), chunks)
    err_rvq = chunk_step_rmse_mm(np.stack([rvq.decode_tokens(t) for t in _encode_all(rvq.manifest, chunks)]), chunks)
    assert err_rvq < err_single <= 10.0, (err_rvq, err_single)


def test_more_residual_levels_lower_the_error(small_tok, fresh):
    _, _, chunks = fresh
    ids = small_tok.encode(chunks)
    errs = [chunk_step_rmse_mm(small_tok.decode(ids[:, :, :k]), chunks) for k in range(1, 4)]
    assert errs[0] > errs[1] > errs[2], errs
    latent = small_tok.metrics["latent_rmse_mm_levels"]  # quantiser alone, training's held-out split
    assert latent[0] > latent[1] > latent[2], latent


def test_onnx_encoder_and_decoder_equal_numpy(small_tok, fresh):
    _, _, chunks = fresh
    enc, dec = _session(build_encoder_onnx(small_tok)), _session(build_decoder_onnx(small_tok))
    ids_np = small_tok.encode(chunks)
    ids_onnx = np.stack([enc.run(["tokens"], {"chunk": c})[0] for c in chunks])
    assert np.mean(ids_onnx == ids_np) >= 0.99  # float32 argmin: only exact near-ties may differ
    rng = np.random.default_rng(0)
    for i in range(20):
        robot = small_tok.robot_types[i % len(small_tok.robot_types)]
        rate = float(rng.uniform(10, 20))
        want = small_tok.decode_normalised(ids_np[i : i + 1], robot, rate)[0]
        onehot = small_tok.onehot(robot, 1)[0]
        (got,) = dec.run(["chunk_norm"], {"tokens": ids_np[i], "robot": onehot, "rate_hz": np.float32([rate])})
        np.testing.assert_allclose(got, want, atol=2e-4)


def test_vq_policy_head_makes_a_policy_emit_tokens(small_tok, fresh):
    _, _, chunks = fresh
    nodes = [helper.make_node("Identity", ["chunk_in"], ["actions"])]
    graph = helper.make_graph(
        nodes,
        "toy_policy",
        [helper.make_tensor_value_info("chunk_in", TensorProto.FLOAT, [8, 3])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [8, 3])],
    )
    policy = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    policy.ir_version = 8
    headed = _session(vq_policy_head(policy, small_tok))
    assert [o.name for o in headed.get_outputs()] == ["tokens"]
    ids = np.stack([headed.run(["tokens"], {"chunk_in": c})[0] for c in chunks[:50]])
    assert np.mean(ids == small_tok.encode(chunks[:50])) >= 0.99
    # grafting the shipped encoder from its manifest gives the shipped tokens
    shipped = VqManifest.load(DEFAULT_VQ_MANIFEST)
    grafted = _session(vq_policy_head(policy, DEFAULT_VQ_MANIFEST, keep_actions=True))
    tokens, actions = grafted.run(["tokens", "actions"], {"chunk_in": chunks[0]})
    np.testing.assert_array_equal(tokens, _encode_all(shipped, chunks[:1])[0])
    np.testing.assert_array_equal(actions, chunks[0])


def test_latent_vq_decoder_produces_a_trajectory_reaching_the_decoded_targets(rvq, fresh):
    ik = rvq.ee_decoder.ik
    q0 = panda.HOME_Q
    pose = ik.fk(q0)
    state = RobotState(7_000 * MS, q0, np.zeros(7), pose)
    cube = np.array([pose.translation[0] + 0.08, pose.translation[1] - 0.05, 0.05])
    truth = expert_chunks(pose.translation[None], cube[None])[0].astype(np.float32)
    ids = _encode_all(rvq.manifest, truth[None])[0]
    chunk = ActionChunk(state.t_ns, 0.1, ids, "latent_vq", gripper=np.array([1.0, 0.0]))
    decoder = get_decoder("latent_vq", ik=ik)
    traj = decoder.decode(chunk, state)
    assert len(traj) == 8
    np.testing.assert_array_equal(traj.t_ns, state.t_ns + np.arange(8) * 100 * MS)
    np.testing.assert_allclose(traj.gripper, np.linspace(1, 0, 8), atol=1e-6)
    decoded = rvq.decode_tokens(ids)
    for k in range(8):
        assert np.linalg.norm(ik.fk(traj.positions[k]).translation - (pose.translation + decoded[k])) < 1e-3
    assert chunk_step_rmse_mm(decoded, truth) < 5.0
    # a 20 Hz robot: same tokens, steps 50 ms apart, shorter displacements
    fast = LatentVQDecoder(control_rate_hz=20.0, ik=ik).decode(chunk, state)
    np.testing.assert_array_equal(fast.t_ns, state.t_ns + np.arange(8) * 50 * MS)


def test_bad_tokens_are_typed_errors(rvq):
    m = rvq.manifest
    good = np.zeros(m.token_shape, dtype=np.int64)
    rvq.decode_tokens(good)
    with pytest.raises(ShapeError, match="expected shape"):
        rvq.decode_tokens(np.zeros((m.n_tokens + 1, m.levels), np.int64))
    with pytest.raises(ShapeError, match="expected shape"):
        rvq.decode_tokens(np.zeros(m.n_tokens * m.levels, np.int64))
    with pytest.raises(ShapeError, match="NaN"):
        rvq.decode_tokens(np.full(m.token_shape, np.nan, np.float32))
    with pytest.raises(ShapeError, match="integers"):
        rvq.decode_tokens(good + 0.5)
    too_big = good.copy()
    too_big[1, m.levels - 1] = m.codebook_sizes[-1]
    with pytest.raises(DecodeError, match="outside"):
        rvq.decode_tokens(too_big)
    with pytest.raises(DecodeError, match="outside"):
        rvq.decode_tokens(good - 1)
    state = RobotState(0, panda.HOME_Q, np.zeros(7), rvq.ee_decoder.ik.fk(panda.HOME_Q))
    with pytest.raises(DecodeError, match="latent_vq"):  # wrong action space
        rvq.decode(ActionChunk(0, 0.1, good, "ee_delta_xyz"), state)
    with pytest.raises(DecodeError, match="outside the range"):  # 2 Hz: the decoder was not trained for it
        rvq.decode(ActionChunk(0, 0.5, good, "latent_vq"), state)
    with pytest.raises(ConfigError, match="unknown"):
        LatentVQDecoder(robot_type="ur5e")
    with pytest.raises(ConfigError, match="outside the range"):
        LatentVQDecoder(control_rate_hz=100.0)
    with pytest.raises(ConfigError, match="not found"):
        LatentVQDecoder("/nonexistent/tokenizer.yaml")


def test_manifest_round_trip_and_validation(tmp_path):
    m = VqManifest.load(DEFAULT_VQ_MANIFEST)
    assert m.levels == len(m.codebook_sizes) >= 2 and m.robot_types[0] == "panda"
    copy = VqManifest.from_dict(m.to_dict(relative_to=DEFAULT_VQ_MANIFEST.parent), base_dir=DEFAULT_VQ_MANIFEST.parent)
    assert copy.decoder_path == m.decoder_path and copy.codebook_sizes == m.codebook_sizes
    np.testing.assert_array_equal(copy.norm_std, m.norm_std)
    bad = m.to_dict()
    bad["codebook_sizes"] = [256]
    with pytest.raises(ConfigError, match="codebook_sizes"):
        VqManifest.from_dict(bad)
    bad = m.to_dict()
    bad["action_head"] = "binned"
    with pytest.raises(ConfigError, match="latent_vq"):
        VqManifest.from_dict(bad)
    (tmp_path / "x.yaml").write_text("[1, 2")
    with pytest.raises(ConfigError, match="YAML"):
        VqManifest.load(tmp_path / "x.yaml")


@pytest.mark.slow
def test_rebuilding_the_shipped_tokenizers_meets_the_bound(tmp_path):
    from robot_stack.training.vq_tokenizer import build_shipped

    report = build_shipped(tmp_path)
    assert report["rvq-reach-v1"]["heldout_rmse_mm"] <= RVQ_BOUND_MM
    levels = report["rvq-reach-v1"]["heldout_rmse_mm_levels"]
    assert levels == sorted(levels, reverse=True)
    assert report["total_s"] < 120
