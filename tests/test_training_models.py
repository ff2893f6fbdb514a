"""The shipped trained policies (robot_stack/policy/models/reach-visuomotor/) load, are served by the real server
and decoded by the registry decoders. No torch needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from served import served

from robot_stack.decoders import get_decoder
from robot_stack.decoders.vq import VqManifest
from robot_stack.policy.manifest import PolicyManifest
from robot_stack.stack.lockstep import LockstepRig
from robot_stack.training.evaluate import tokenizer_for
from robot_stack.transport.client import PolicyClient
from robot_stack.types import ActionChunk

MODELS = Path(__file__).resolve().parent.parent / "robot_stack" / "policy" / "models" / "reach-visuomotor"
CONTINUOUS = MODELS / "reach-visuomotor-continuous.yaml"
VQ = MODELS / "reach-visuomotor-vq.yaml"


@pytest.fixture(scope="module")
def scene():  # type: ignore[no-untyped-def]
    """A real lockstep observation (seeded cube pose) and the cube's top centre (base frame, metres)."""
    rig = LockstepRig()
    try:
        rig.task.reset(3)
        return rig.observe(), rig.task.cube_top_center()
    finally:
        rig.close()


def _ask(manifest: Path, obs) -> tuple[dict, dict]:  # type: ignore[no-untyped-def]
    with served(manifest) as endpoint, PolicyClient(endpoint, "test", timeout_s=30.0) as client:
        reply = client.infer(obs.arrays(), {"t_obs_ns": obs.t_obs_ns})
        return reply.arrays, reply.meta


def test_shipped_files_are_small_and_manifests_validate() -> None:
    for path in MODELS.glob("*.onnx"):
        assert path.stat().st_size < 2_000_000, path
    cont = PolicyManifest.load(CONTINUOUS)
    assert (cont.action_head, cont.action_space, cont.horizon, cont.dt_s) == ("continuous", "ee_delta_xyz", 8, 0.1)
    assert cont.control_rate_hz == 10 and {"state", "actions"} <= set(cont.normalization)
    vq = PolicyManifest.load(VQ)
    tok = VqManifest.load(tokenizer_for(VQ))
    assert vq.action_head == "latent_vq" and vq.outputs[0].shape == tok.token_shape


def test_shipped_continuous_policy_is_served_and_decoded(scene) -> None:  # type: ignore[no-untyped-def]
    observation, cube = scene
    arrays, meta = _ask(CONTINUOUS, observation)
    actions = arrays["actions"]
    assert actions.shape == (8, 3) and np.all(np.isfinite(actions))
    # the chunk heads for the cube: its last step ends closer to the cube top than the TCP is now
    tcp = observation.state.ee_pose.translation
    assert np.linalg.norm(tcp + actions[-1] - cube) < np.linalg.norm(tcp - cube)
    chunk = ActionChunk(observation.t_obs_ns, meta["dt_s"], actions, meta["action_space"])
    traj = get_decoder("ee_delta_xyz", orientation="down").decode(chunk, observation.state)
    assert np.all(np.isfinite(traj.positions))


def test_shipped_vq_policy_is_served_and_decoded(scene) -> None:  # type: ignore[no-untyped-def]
    observation, cube = scene
    arrays, meta = _ask(VQ, observation)
    tokens = arrays["tokens"]
    decoder = get_decoder("latent_vq", manifest=tokenizer_for(VQ), orientation="down")
    assert tokens.dtype == np.int64 and tokens.shape == decoder.manifest.token_shape
    chunk = ActionChunk(observation.t_obs_ns, meta["dt_s"], tokens.astype(np.float32), meta["action_space"])
    traj = decoder.decode(chunk, observation.state)
    assert np.all(np.isfinite(traj.positions)) and traj.positions.shape[1] == 7
    tcp = observation.state.ee_pose.translation
    decoded = decoder.decode_tokens(tokens)
    assert np.linalg.norm(tcp + decoded[-1] - cube) < np.linalg.norm(tcp - cube)
