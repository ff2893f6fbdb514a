"""Training pipeline: recorded dataset -> samples -> torch policy -> ONNX + manifest -> real server -> decoders.

The default tests record a tiny dataset with the real recorder (``robot-stack record --teleop expert``, two
1-second episodes), train for one epoch and check the export end to end; the ``slow`` test trains on a real
dataset and measures closed-loop success over 50 episodes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from served import served  # noqa: E402

from robot_stack.cli import build_parser, main  # noqa: E402
from robot_stack.decoders import get_decoder  # noqa: E402
from robot_stack.decoders.vq import VqManifest  # noqa: E402
from robot_stack.errors import DatasetError, ShapeError  # noqa: E402
from robot_stack.policy.manifest import PolicyManifest  # noqa: E402
from robot_stack.policy.runtime import OnnxPolicy  # noqa: E402
from robot_stack.training.evaluate import evaluate_expert, evaluate_served, tokenizer_for  # noqa: E402
from robot_stack.training.samples import STRIDE, chunk_labels, samples_from_dataset  # noqa: E402
from robot_stack.training.trainer import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two short expert episodes recorded by the real recorder (front camera, 640x480, 10 frames each)."""
    out = tmp_path_factory.mktemp("training") / "ds"
    rc = main(
        ["record", "--teleop", "expert", "--episodes", "2", "--out", str(out), "--cameras", "front"]
        + ["--max-duration", "1.0"]
    )
    assert rc == 0
    return out


@pytest.fixture(scope="module")
def samples(dataset: Path):  # type: ignore[no-untyped-def]
    return samples_from_dataset(dataset, "front", 8, successful_only=False)


def test_chunk_labels_follow_the_commanded_targets() -> None:
    tcp = np.array([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.02, 0.0, 0.0]])
    target = np.array([[0.01, 0.0, 0.0], [0.02, 0.0, 0.0], [0.03, 0.0, 0.0]])
    labels = chunk_labels(tcp, target, 4)
    assert labels.shape == (3, 4, 3) and labels.dtype == np.float32
    np.testing.assert_allclose(labels[0, :, 0], [0.0, 0.01, 0.02, 0.03], atol=1e-7)  # targets of frames 0, 1, 2
    np.testing.assert_allclose(labels[1, :, 0], [0.0, 0.01, 0.02, 0.02], atol=1e-7)  # last target held
    np.testing.assert_allclose(labels[2, :, 0], [0.0, 0.01, 0.01, 0.01], atol=1e-7)
    with pytest.raises(ShapeError):
        chunk_labels(tcp, target[:2], 4)


def test_samples_from_recorded_dataset(dataset: Path, samples) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.dataset import load_dataset

    ds = load_dataset(dataset)
    ep = ds.load_episode(0, highrate=False, cameras=("front",))
    n0 = ep.length
    assert len(samples) == sum(ds.load_episode(i, rgb=False, depth=False, highrate=False).length for i in range(2))
    assert samples.image_shape == (480, 640) and samples.rgb.shape[1:] == (480 // STRIDE, 640 // STRIDE, 3)
    assert samples.dt_s == pytest.approx(1.0 / ds.fps)
    # state in the server's layout: q (7), TCP xyz (3), gripper (1)
    np.testing.assert_allclose(samples.state[:n0, :7], ep.q)
    np.testing.assert_allclose(samples.state[:n0, 7:10], ep.ee_pose[:, :3])
    # images are the recording's, subsampled; XYZ through the recorded calibration
    np.testing.assert_array_equal(samples.rgb[3], ep.cameras["front"].rgb[3][::STRIDE, ::STRIDE])
    np.testing.assert_array_equal(samples.xyz[3], ep.xyz_base("front", 3)[::STRIDE, ::STRIDE])
    # label step 1 = the TCP target commanded at that frame, relative to the TCP
    np.testing.assert_allclose(samples.chunks[:n0, 1], ep.ee_target[:, :3] - ep.ee_pose[:, :3], atol=1e-6)
    # the 1-second episodes did not reach the cube: skipped by default
    with pytest.raises(DatasetError, match="no successful episodes"):
        samples_from_dataset(dataset)


def _full_res(samples, i: int) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    up = {k: np.repeat(np.repeat(a[i], STRIDE, 0), STRIDE, 1) for k, a in (("rgb", samples.rgb), ("xyz", samples.xyz))}
    return {"front/rgb": up["rgb"], "front/xyz": up["xyz"], "state": samples.state[i]}


def test_continuous_export_matches_torch_and_is_served(samples, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from robot_stack.transport.client import PolicyClient
    from robot_stack.types import ActionChunk

    result = train(samples, "continuous", tmp_path, "tiny-continuous", TrainConfig(epochs=1, hidden=32, threads=1))
    manifest = PolicyManifest.load(result.manifest_path)
    assert manifest.action_head == "continuous" and manifest.action_space == "ee_delta_xyz"
    assert manifest.horizon == 8 and manifest.dt_s == pytest.approx(samples.dt_s)
    assert set(manifest.normalization) == {"state", "actions"}
    assert {t.name for t in manifest.inputs} == {"front/rgb", "front/xyz", "state"}
    # the torch program for `serve --engine torch` is exported beside the ONNX graph and passes the same gate
    assert manifest.torch is not None and manifest.torch.program == tmp_path / "tiny-continuous.pt2"
    from robot_stack.policy.backends import load_backend

    torch_choice = load_backend(manifest, "torch", threads=1)
    assert torch_choice.backend == "torch" and torch_choice.accuracy.ok, torch_choice.reason

    # ONNX Runtime (through the project's runtime, manifest normalisation) vs the torch model on the batched,
    # subsampled training tensors
    model = result.model
    st = manifest.normalization["state"]
    act = manifest.normalization["actions"]
    idx = [0, len(samples) // 2, len(samples) - 1]
    with torch.no_grad():
        ref, *_ = model(
            torch.from_numpy(samples.rgb[idx]),
            torch.from_numpy(samples.xyz[idx]),
            torch.from_numpy(((samples.state[idx] - st.mean) / st.std).astype(np.float32)),
        )
    ref = np.clip(ref.numpy(), model.low.numpy(), model.high.numpy()) * act.std + act.mean
    policy = OnnxPolicy(manifest, "cpu", intra_op_threads=1)
    for row, i in enumerate(idx):
        out = policy.run(_full_res(samples, i))["actions"]
        assert out.shape == (8, 3)
        np.testing.assert_allclose(out, ref[row], atol=2e-5)

    # served by the real server, decoded by the registry decoder into a joint trajectory
    from robot_stack.stack.lockstep import LockstepRig

    rig = LockstepRig()
    try:
        obs = rig.observe()
    finally:
        rig.close()
    with served(result.manifest_path) as endpoint, PolicyClient(endpoint, "test", timeout_s=30.0) as client:
        reply = client.infer(obs.arrays(), {"t_obs_ns": obs.t_obs_ns})
    assert reply.meta["model_id"] == "tiny-continuous" and reply.meta["action_head"] == "continuous"
    chunk = ActionChunk(obs.t_obs_ns, reply.meta["dt_s"], reply.arrays["actions"], reply.meta["action_space"])
    traj = get_decoder(manifest.action_space).decode(chunk, obs.state)
    assert traj.positions.shape[1] == 7 and np.all(np.isfinite(traj.positions))


def test_vq_export_matches_torch_and_is_served_and_decoded(samples, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=1, hidden=32, latent_dim=3, levels=2, codebook_size=4, tokenizer_epochs=1, threads=1)
    result = train(samples, "vq", tmp_path, "tiny-vq", config)
    manifest = PolicyManifest.load(result.manifest_path)
    assert manifest.action_head == "latent_vq" and manifest.action_space == "latent_vq"
    assert result.tokenizer_path == tokenizer_for(result.manifest_path)
    vq = VqManifest.load(result.tokenizer_path)
    assert vq.token_shape == (2, 2) and vq.codebook_sizes == (4, 4) and vq.robot_types == ("panda",)
    assert manifest.outputs[0].shape == vq.token_shape and manifest.horizon == vq.n_tokens

    # tokenizer trained on the recorded chunks: encoding then decoding a chunk stays close to it
    tok = result.tokenizer
    recon = tok.decode(tok.encode(samples.chunks))
    assert np.sqrt(np.mean(np.sum((recon - samples.chunks) ** 2, -1))) < 0.05  # metres; codebooks of 4 codes

    model = result.model
    st = manifest.normalization["state"]
    policy = OnnxPolicy(manifest, "cpu", intra_op_threads=1)
    for i in (0, len(samples) - 1):
        with torch.no_grad():
            logits, *_ = model(
                torch.from_numpy(samples.rgb[i : i + 1]),
                torch.from_numpy(samples.xyz[i : i + 1]),
                torch.from_numpy(((samples.state[i : i + 1] - st.mean) / st.std).astype(np.float32)),
            )
        tokens = policy.run(_full_res(samples, i))["tokens"]
        assert tokens.dtype == np.int64 and tokens.shape == (2, 2)
        np.testing.assert_array_equal(tokens, logits.argmax(-1).numpy().reshape(2, 2))
        decoded = get_decoder("latent_vq", manifest=result.tokenizer_path).decode_tokens(tokens)
        np.testing.assert_allclose(decoded, tok.decode(tokens[None])[0], atol=1e-5)

    # the real server + LatentVQDecoder closed loop (one lockstep episode)
    report = evaluate_served(result.manifest_path, episodes=1, seed=7, max_duration_s=0.5)
    assert len(report.results) == 1 and report.results[0].steps > 0


def test_serving_path_never_imports_torch() -> None:
    code = (
        "import sys; import robot_stack.training, robot_stack.training.evaluate, robot_stack.training.cli, "
        "robot_stack.training.samples, robot_stack.policy.service, robot_stack.cycle.policy_cycle, robot_stack.cli; "
        "robot_stack.cli.build_parser(); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"


def test_cli_parses_train_and_evaluate() -> None:
    args = build_parser().parse_args(["train", "--dataset", "d", "--head", "vq", "--out", "o", "--epochs", "3"])
    assert (args.head, args.epochs, args.codebook_size) == ("vq", 3, 64)
    args = build_parser().parse_args(["evaluate", "--manifest", "m.yaml", "--expert", "--episodes", "5"])
    assert args.expert and args.episodes == 5 and args.seed == 1000
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "d", "--head", "transformer", "--out", "o"])


def test_evaluate_table_skips_the_report_s_plain_entries(capsys: pytest.CaptureFixture[str]) -> None:
    """`robot-stack evaluate` prints its JSON report, then this table: the report's ``robot`` entry (a string) is
    not a row (it crashed the command after the JSON, exit 1)."""
    from robot_stack.training.cli import _eval_table

    summary = {"label": "m", "successes": 4, "episodes": 5, "success_rate": 0.8, "wall_s": 1.0}
    _eval_table({"policy": summary, "robot": "so101"})
    table = capsys.readouterr().err
    assert "4/5" in table and "80%" in table and "so101" not in table


@pytest.mark.slow
def test_full_train_and_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Record 40 expert episodes, train both heads, evaluate each over 50 served episodes (tens of minutes)."""
    data = tmp_path / "reach"
    assert main(["record", "--teleop", "expert", "--episodes", "40", "--out", str(data), "--cameras", "front"]) == 0
    expert = evaluate_expert(50)
    for head, floor in (("continuous", 0.8), ("vq", 0.7)):
        capsys.readouterr()
        assert main(["train", "--dataset", str(data), "--head", head, "--out", str(tmp_path / head)]) == 0
        manifest = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["manifest"]
        report = evaluate_served(manifest, 50)
        assert report.success_rate >= floor, (head, report.summary(), expert.summary())
