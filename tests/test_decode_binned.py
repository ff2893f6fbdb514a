"""Binned chunks: bin codec (property), de-tokenise + delegate for ee_delta_xyz / joint_position / joint_delta,
the in-graph binning head, and typed errors for bad bins."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from onnx import TensorProto, helper

from robot_stack.decoders import get_decoder
from robot_stack.decoders.binned import BinnedDecoder, BinSpec
from robot_stack.decoders.joint_delta import JointDeltaDecoder
from robot_stack.errors import ConfigError, DecodeError, ShapeError
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda
from robot_stack.training.demo_variants import binned_policy_head
from robot_stack.types import ActionChunk, RobotState

MS = 1_000_000
EE_SPEC = BinSpec([-0.2, -0.2, -0.2], [0.2, 0.2, 0.2], 256, "ee_delta_xyz")


@pytest.fixture(scope="module")
def ik():
    return panda_ik()


@pytest.fixture(scope="module")
def state(ik):
    return RobotState(3_000 * MS, panda.HOME_Q, np.zeros(7), ik.fk(panda.HOME_Q))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5, 3), elements=st.floats(-0.2, 0.2)))
def test_bin_round_trip_error_is_at_most_half_a_bin(values):
    bins = EE_SPEC.tokenize(values)
    assert bins.dtype == np.int64 and bins.min() >= 0 and bins.max() < 256
    back = EE_SPEC.detokenize(bins)
    assert np.all(np.abs(back - values) <= EE_SPEC.width / 2 + 1e-12)
    np.testing.assert_array_equal(EE_SPEC.tokenize(back), bins)  # centres map to their own bin


def test_values_outside_the_range_saturate():
    bins = EE_SPEC.tokenize([[-5.0, 0.0, 5.0]])
    np.testing.assert_array_equal(bins, [[0, 128, 255]])


def test_binned_ee_delta_chunk_drives_ik_to_the_bin_centres(ik, state):
    k = np.arange(6)[:, None]
    deltas = np.hstack([0.01 * k, -0.008 * k, -0.005 * k])
    bins = EE_SPEC.tokenize(deltas)
    chunk = ActionChunk(state.t_ns, 0.1, bins, "binned", gripper=np.ones(6))
    decoder = get_decoder("binned", spec=EE_SPEC, ik=ik)
    traj = decoder.decode(chunk, state)
    np.testing.assert_array_equal(traj.t_ns, chunk.step_times_ns())
    centres = EE_SPEC.detokenize(bins)
    for step in range(6):
        reached = ik.fk(traj.positions[step]).translation - state.ee_pose.translation
        assert np.linalg.norm(reached - centres[step]) < 1e-3
        assert np.all(np.abs(reached - deltas[step]) < EE_SPEC.width / 2 + 1e-3)


def test_binned_joint_position_and_joint_delta(state, tmp_path):
    absolute = BinSpec(panda.LIMITS.lower, panda.LIMITS.upper, 1024, "joint_position")
    targets = panda.HOME_Q + np.outer(np.linspace(0.0, 0.1, 4), np.ones(7))
    chunk = ActionChunk(state.t_ns, 0.05, absolute.tokenize(targets), "binned")
    traj = BinnedDecoder(absolute, limits=panda.LIMITS).decode(chunk, state)
    assert np.max(np.abs(traj.positions - targets)) <= np.max(absolute.width) / 2 + 1e-6

    delta = BinSpec.load(BinSpec(np.full(7, -0.3), np.full(7, 0.3), 256, "joint_delta").save(tmp_path / "b.yaml"))
    steps = np.outer(np.linspace(0.0, 0.2, 4), [1, -1, 1, -1, 1, -1, 1])
    traj = BinnedDecoder(tmp_path / "b.yaml").decode(
        ActionChunk(state.t_ns, 0.05, delta.tokenize(steps), "binned"), state
    )
    assert np.max(np.abs(traj.positions - (state.q + steps))) <= 0.3 / 256 + 1e-6
    assert traj.joint_names == panda.ARM_JOINTS


def test_joint_delta_decoder(state):
    steps = np.outer(np.linspace(0.0, 0.05, 3), np.ones(7))
    traj = JointDeltaDecoder(latency_offset_s=0.02).decode(ActionChunk(state.t_ns, 0.1, steps, "joint_delta"), state)
    np.testing.assert_allclose(traj.positions, state.q + steps.astype(np.float32), atol=1e-6)
    np.testing.assert_array_equal(traj.t_ns, state.t_ns + 20 * MS + np.arange(3) * 100 * MS)
    with pytest.raises(ShapeError, match=r"\(horizon, 7\)"):
        JointDeltaDecoder().decode(ActionChunk(0, 0.1, np.zeros((3, 6)), "joint_delta"), state)
    far = np.zeros((2, 7))
    far[1, 3] = 3.0  # joint 4 far above its upper limit
    with pytest.raises(ShapeError, match="panda_joint4"):
        JointDeltaDecoder(limits=panda.LIMITS).decode(ActionChunk(0, 0.1, far, "joint_delta"), state)


def test_bad_bins_are_typed_errors(ik, state):
    decoder = BinnedDecoder(EE_SPEC, ik=ik)
    good = np.full((4, 3), 128)
    decoder.decode(ActionChunk(state.t_ns, 0.1, good, "binned"), state)
    with pytest.raises(DecodeError, match="outside"):
        decoder.decode(ActionChunk(0, 0.1, good + 128, "binned"), state)
    with pytest.raises(DecodeError, match="outside"):
        decoder.decode(ActionChunk(0, 0.1, good - 129, "binned"), state)
    with pytest.raises(ShapeError, match=r"\(horizon, 3\)"):
        decoder.decode(ActionChunk(0, 0.1, np.zeros((4, 7)), "binned"), state)
    with pytest.raises(ShapeError, match="integers"):
        decoder.decode(ActionChunk(0, 0.1, good + 0.25, "binned"), state)
    with pytest.raises(ShapeError, match="NaN"):
        EE_SPEC.detokenize(np.full((2, 3), np.nan))
    with pytest.raises(ShapeError, match="NaN"):
        EE_SPEC.tokenize(np.full((2, 3), np.inf))
    with pytest.raises(DecodeError, match="binned"):
        decoder.decode(ActionChunk(0, 0.1, good, "ee_delta_xyz"), state)
    with pytest.raises(ConfigError, match="low < high"):
        BinSpec([0.1], [0.1], 8, "ee_delta_xyz")
    with pytest.raises(ConfigError, match="n_bins"):
        BinSpec([0.0], [1.0], 1, "ee_delta_xyz")
    with pytest.raises(ConfigError, match="continuous"):
        BinSpec([0.0], [1.0], 8, "latent_vq")
    with pytest.raises(ConfigError, match="exactly"):
        BinSpec.from_dict({"n_bins": 8})
    with pytest.raises(ConfigError, match="cannot be decoded"):
        BinnedDecoder({"action_space": "ee_pose_6d", "n_bins": 8, "low": [0.0], "high": [1.0]})


def test_binned_policy_head_equals_numpy_tokenize():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["actions"])],
        "toy",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 3])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, [8, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    session = ort.InferenceSession(binned_policy_head(model, EE_SPEC).SerializeToString())
    assert [o.name for o in session.get_outputs()] == ["bins"]
    rng = np.random.default_rng(0)
    for _ in range(20):
        # bin centres +- a third of a bin: far from float32 rounding at the bin edges; plus saturating values
        x = EE_SPEC.detokenize(rng.integers(0, 256, (8, 3))) + rng.uniform(-1, 1, (8, 3)) * EE_SPEC.width / 3
        x[0] = [-1.0, 0.5, 0.199999]
        (bins,) = session.run(["bins"], {"x": x.astype(np.float32)})
        assert bins.dtype == np.int64
        np.testing.assert_array_equal(bins, EE_SPEC.tokenize(x))
