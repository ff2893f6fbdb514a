"""The VLA end to end in a tiny configuration (seconds): expert demonstrations in the lockstep simulator, the project's
tokenizer, training, export of the prefix encoder and the denoising step (ONNX + torch programs), the served model
(real server, real client, the instruction sent as text and tokenized by the server, depth + calibration on the
wire, the XYZ computed in the graph), micro-batching, the prefix cache, inpainting, and one closed-loop episode.

The full-size training is ``test_train_vla_full`` (``slow``)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from robot_stack.calibration.payload import xyz_from_depth  # noqa: E402
from robot_stack.cycle import RequestLayout, chunk_from_reply  # noqa: E402
from robot_stack.errors import ConfigError, DatasetError, PolicyError, ServerError  # noqa: E402
from robot_stack.policy.backends import load_backend  # noqa: E402
from robot_stack.policy.instruction import InstructionSpec, InstructionTokenizer  # noqa: E402
from robot_stack.policy.manifest import PolicyManifest  # noqa: E402
from robot_stack.policy.rtc import RTC_DELAY_STEPS, RTC_PREFIX, RtcRequest  # noqa: E402
from robot_stack.policy.runtime import OnnxPolicy  # noqa: E402
from robot_stack.policy.service import PolicyService  # noqa: E402
from robot_stack.policy.vla import KnownPrefix  # noqa: E402
from robot_stack.training.train_vla import train_vla  # noqa: E402
from robot_stack.training.vla_data import VlaSamples, collect_vla  # noqa: E402
from robot_stack.training.vla_export import full_resolution  # noqa: E402
from robot_stack.training.vla_model import VlaConfig, VlaModel, depth_to_points  # noqa: E402
from robot_stack.training.vla_tokenizer import build_tokenizer  # noqa: E402
from robot_stack.training.vla_train import VlaTrainConfig, load_state  # noqa: E402

TINY_HW = (120, 160)
TINY = VlaConfig(stride=4, offset=2, patch=10, slots=2, d_pix=8, d_model=32, heads=2, layers=1, mlp=64, bands=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("vla")
    samples = collect_vla(
        ["vla_a1"],
        2,
        seed=0,
        stride=4,
        offset=2,
        max_duration_s=2.0,
        instructions=["touch the red cube", "touch the blue cylinder"],
        image_hw=TINY_HW,
    )
    data = out / "demos.npz"
    samples.save(data)
    report = train_vla(
        out,
        model_id="tiny-vla",
        data=data,
        model_config=TINY,
        train_config=VlaTrainConfig(steps=4, batch_size=8, warmup_steps=1),
        steps=4,
    )
    return {"out": out, "manifest": Path(report["manifest"]), "samples": samples, "report": report}


def _feed(tiny: dict, i: int = 0, text: str = "touch the red cube") -> dict[str, np.ndarray]:
    manifest = PolicyManifest.load(tiny["manifest"])
    assert manifest.instruction is not None
    feed = full_resolution(tiny["samples"], i, *TINY_HW)
    feed["instruction"] = InstructionTokenizer(manifest.instruction).encode_rows(text, 1)
    return feed


def test_training_report_and_files(tiny: dict) -> None:
    report = tiny["report"]
    assert report["samples"] == len(tiny["samples"]) > 20 and report["episodes"] == 2
    assert report["served_max_abs_err_m_ort"] < 1e-4 and report["served_max_abs_err_m_torch"] < 1e-4
    names = {p.name for p in tiny["out"].iterdir()}
    for suffix in ("prefix.onnx", "prefix.pt2", "denoise.onnx", "denoise.pt2", "tokenizer.json", "yaml"):
        assert f"tiny-vla.{suffix}" in names
    assert {"tiny-vla-xyz.yaml", "tiny-vla-xyz.prefix.onnx"} <= names
    assert json.loads((tiny["out"] / "tiny-vla.train.json").read_text())["frame"] == "base"
    assert "tiny-vla.state.pt" in names  # the weights, for a warm start


def test_warm_start_loads_the_weights_of_a_previous_run(tiny: dict, tmp_path: Path) -> None:
    """``train-vla --init``: the saved state dict loads into the same architecture (the served model's weights
    exactly); another architecture or a missing file is a ConfigError naming the flags."""
    state = tiny["out"] / "tiny-vla.state.pt"
    config = VlaConfig(**tiny["report"]["model_config"])
    model = VlaModel(config)
    load_state(model, state)
    saved = torch.load(state, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    with pytest.raises(ConfigError, match="same --layers"):
        load_state(VlaModel(replace(config, d_model=64, mlp=128)), state)
    with pytest.raises(ConfigError, match="cannot warm-start"):
        load_state(model, tmp_path / "missing.state.pt")


def test_partial_warm_start_keeps_the_new_parts_fresh_and_refuses_shape_clashes(tiny: dict, tmp_path: Path) -> None:
    """A warm start across an architecture change (what ``train-vla --init`` does): the parameters the file holds
    are loaded exactly, the ones it lacks are named and keep their initialisation, stale ones are ignored; a
    parameter of another shape is still a ConfigError."""
    state = tiny["out"] / "tiny-vla.state.pt"
    saved = torch.load(state, weights_only=True)
    old = {k: v for k, v in saved.items() if not k.startswith("pointer.")}
    old["aux_out.0.weight"] = torch.zeros(3, 3)  # a part an older model had
    torch.save(old, tmp_path / "old.state.pt")
    model = VlaModel(VlaConfig(**tiny["report"]["model_config"]))
    fresh_query = model.pointer.word_query[0].weight.detach().clone()
    with pytest.raises(ConfigError, match="Missing key"):
        load_state(model, tmp_path / "old.state.pt")
    missing = load_state(model, tmp_path / "old.state.pt", partial=True)
    assert sorted(missing) == sorted(k for k in saved if k.startswith("pointer."))
    assert torch.equal(model.pointer.word_query[0].weight, fresh_query)
    assert all(torch.equal(v, old[k]) for k, v in model.state_dict().items() if k in old)
    camera = VlaModel(replace(VlaConfig(**tiny["report"]["model_config"]), frame="camera"))
    assert load_state(camera, state, partial=True) == []  # the base-frame run's weights...
    assert camera.vision.centre.tolist() == pytest.approx([0.0, 0.0, 1.1])  # ...keep the camera frame's centre
    clash = dict(saved, **{"goal_kind": torch.zeros(5)})
    torch.save(clash, tmp_path / "clash.state.pt")
    with pytest.raises(ConfigError, match="shapes differ for goal_kind"):
        load_state(model, tmp_path / "clash.state.pt", partial=True)


def test_the_goal_is_read_off_the_depths_points(tiny: dict) -> None:
    """The goal pointer: its goal lies within the grid's valid points (plus the bounded correction); its logits
    do not depend on the rest of the scene (a pixel's score is its own); its loss is lowest when it attends where
    the target is; the goal is the cache's last token."""
    from robot_stack.training.vla_model import _GOAL_REFINE
    from robot_stack.training.vla_train import pointer_loss

    config = VlaConfig(**tiny["report"]["model_config"])
    model = VlaModel(config).eval()
    load_state(model, tiny["out"] / "tiny-vla.state.pt")
    samples: VlaSamples = tiny["samples"]
    spec = PolicyManifest.load(tiny["manifest"]).instruction
    assert spec is not None
    ids = torch.from_numpy(InstructionTokenizer(spec).encode_rows("touch the red cube", 3).astype(np.int64))
    depth, calib = torch.from_numpy(samples.depth[:3].astype(np.int32)), torch.from_numpy(samples.calib[:3])
    points, valid = depth_to_points(depth, calib, config)
    rgb = torch.from_numpy(samples.rgb[:3])
    with torch.no_grad():
        pre = model.prefix(rgb, points, valid, ids)
    assert pre.kv.shape == (3, 2 * config.layers, config.prefix_tokens, config.d_model)
    assert pre.mask.shape == (3, config.prefix_tokens) and bool((pre.mask[:, -1] == 1).all())
    for b in range(3):
        pts = pre.pixel_points[b][pre.pixel_valid[b] > 0]
        assert bool((pre.goal[b] >= pts.min(0).values - _GOAL_REFINE - 1e-6).all())
        assert bool((pre.goal[b] <= pts.max(0).values + _GOAL_REFINE + 1e-6).all())
    # a pixel's score is its own: repainting the left half of the image leaves the right half's logits unchanged
    painted = rgb.clone()
    painted[:, :, : rgb.shape[2] // 2] = 255 - painted[:, :, : rgb.shape[2] // 2]
    with torch.no_grad():
        other = model.prefix(painted, points, valid, ids)
    right = torch.zeros(valid.shape, dtype=torch.bool)
    right[:, :, rgb.shape[2] // 2 :] = True
    right = right.reshape(3, -1)
    assert torch.allclose(other.goal_logits[right], pre.goal_logits[right], atol=1e-5)
    assert not torch.allclose(other.goal_logits[~right], pre.goal_logits[~right], atol=1e-3)
    # the loss is lowest when the pointer attends where the target is
    first = int(torch.nonzero(pre.pixel_valid[0])[0, 0])
    target = pre.pixel_points[:, first].clone()
    near = (pre.pixel_points - target[:, None]).pow(2).sum(-1)
    sharp = pre._replace(goal_logits=-1e3 * near + (pre.pixel_valid - 1) * 1e4)
    flat = pre._replace(goal_logits=torch.zeros_like(pre.goal_logits))
    assert float(pointer_loss(sharp, target)) < float(pointer_loss(flat, target))


def test_the_action_expert_sees_the_goal_relative_to_the_tcp(tiny: dict) -> None:
    """The denoising step takes the prefix's goal; the expert's offset is ``goal - tcp`` in decimetres, the TCP read
    from the normalised state with the statistics the model saved (the manifest's); the velocity depends on it."""
    from robot_stack.training.vla_model import _OFFSET_BOX, _SCALE

    manifest = PolicyManifest.load(tiny["manifest"])
    assert manifest.vla is not None
    assert [t.name for t in manifest.vla.prefix_outputs] == ["prefix_kv", "prefix_mask", "goal"]
    assert "goal" in {t.name for t in manifest.vla.denoise_inputs}
    config = VlaConfig(**tiny["report"]["model_config"])
    model = VlaModel(config).eval()
    load_state(model, tiny["out"] / "tiny-vla.state.pt")
    mean = manifest.normalization["state"].mean
    std = manifest.normalization["state"].std
    np.testing.assert_allclose(model.state_mean.numpy(), mean)
    np.testing.assert_allclose(model.state_std.numpy(), std)
    raw = np.tile(mean, (2, 1))
    raw[:, -4:-1] = [[0.45, -0.10, 0.20], [0.60, 0.05, 0.02]]  # TCP, base frame, metres
    state = torch.from_numpy((raw - mean) / std)
    goal_m = torch.tensor([[0.50, -0.12, 0.05], [0.58, 0.05, 0.02]])
    goal = (goal_m - torch.tensor([0.5, 0.0, 0.15])) * _SCALE
    offset = model.goal_offset(goal, state)
    np.testing.assert_allclose(offset.numpy(), (goal_m.numpy() - raw[:, -4:-1]) / 0.1, atol=1e-4)
    far = model.goal_offset(goal + 10.0, state)
    assert float(far.max()) == _OFFSET_BOX  # bounded, whatever the pointer says
    with torch.no_grad():
        pre = model.prefix(
            torch.zeros(2, *config.grid, 3, dtype=torch.uint8),
            torch.zeros(2, *config.grid, 3),
            torch.ones(2, *config.grid),
            torch.ones(2, config.max_tokens, dtype=torch.int64),
        )
        x = torch.zeros(2, config.horizon, config.action_dim)
        t = torch.zeros(2, 1)
        v_near = model.velocity(x, t, state, goal, pre.kv, pre.mask)
        v_far = model.velocity(x, t, state, goal + 0.5, pre.kv, pre.mask)
    assert not torch.allclose(v_near, v_far, atol=1e-6)


def test_expert_only_keeps_the_prefix_and_fresh_expert_reinitialises_the_suffix(tiny: dict) -> None:
    """``--expert-only``: the warm-started prefix (vision, trunk, pointer) is not trained; ``--fresh-expert``: the
    action expert starts from a new initialisation, not from the file (a near-zero learning rate shows both)."""
    from robot_stack.training.train_vla import instruction_ids
    from robot_stack.training.vla_model import EXPERT_PARTS
    from robot_stack.training.vla_train import train_vla_model

    config = VlaConfig(**tiny["report"]["model_config"])
    state = tiny["out"] / "tiny-vla.state.pt"
    saved = torch.load(state, weights_only=True)
    samples: VlaSamples = tiny["samples"]
    ids = instruction_ids(tiny["out"] / "tiny-vla.tokenizer.json", samples.instructions, config.max_tokens)
    fit = VlaTrainConfig(steps=2, batch_size=4, warmup_steps=1, lr=1e-9, expert_only=True, fresh_expert=True)
    model = train_vla_model(samples, config, fit, ids, init=state).model
    own = model.state_dict()
    suffix = [k for k in saved if k.split(".")[0] in EXPERT_PARTS and saved[k].dtype.is_floating_point]
    prefix = [k for k in saved if k.split(".")[0] in ("vision", "words", "trunk", "pointer", "goal_in")]
    assert suffix and prefix
    assert all(torch.equal(own[k], saved[k]) for k in prefix)
    assert any(not torch.allclose(own[k], saved[k], atol=1e-6) for k in suffix if "expert." in k)


def test_manifest_contract(tiny: dict) -> None:
    manifest = PolicyManifest.load(tiny["manifest"])
    request = {t.name for t in manifest.request_inputs}
    assert request == {"front/rgb", "front/depth", "front/calib", "state"}  # the instruction is filled by the server
    summary = manifest.summary()
    assert "tokenizer" not in summary["instruction"] and "onnx" not in summary["vla"]["denoise"]
    prefix, denoise = manifest.vla_prefix_manifest(), manifest.vla_denoise_manifest()
    assert [t.dtype for t in prefix.inputs] == ["uint8", "int32", "float32", "int32"]  # uint16 widened for TensorRT
    assert set(denoise.normalization) == {"state"}
    with pytest.raises(PolicyError, match="is a VLA"):
        OnnxPolicy(manifest)
    doc = manifest.to_dict(tiny["out"])
    doc["vla"]["denoise"]["inputs"] = doc["vla"]["denoise"]["inputs"][1:]  # no noisy_actions
    with pytest.raises(ConfigError, match="must include"):
        PolicyManifest.from_dict(doc, tiny["out"])
    doc = manifest.to_dict(tiny["out"])
    doc["instruction"]["max_tokens"] = 8
    with pytest.raises(ConfigError, match="instruction.input"):
        PolicyManifest.from_dict(doc, tiny["out"])


def test_instruction_tokenizer(tmp_path: Path) -> None:
    path = tmp_path / "tok.json"
    build_tokenizer(path=path)
    tok = InstructionTokenizer(InstructionSpec("instruction", path, 8))
    ids = tok.encode("Touch the BLUE cylinder!")
    assert ids.dtype == np.int32 and ids.shape == (8,) and np.count_nonzero(ids) == 4
    assert np.array_equal(ids, tok.encode("touch the blue cylinder"))
    assert tok.unk_id in tok.encode("touch the purple pyramid")
    for bad in ("", "   ", None, 3):
        with pytest.raises(PolicyError, match="needs an instruction"):
            tok.encode(bad)
    with pytest.raises(PolicyError, match="at most 8"):
        tok.encode("touch the red cube and then touch the blue cylinder")
    with pytest.raises(ConfigError, match="not found"):
        InstructionTokenizer(InstructionSpec("instruction", tmp_path / "missing.json", 8))


def test_graph_projection_matches_the_reference(tiny: dict) -> None:
    samples: VlaSamples = tiny["samples"]
    depth = np.repeat(np.repeat(samples.depth[0], 4, 0), 4, 1)
    ref = xyz_from_depth(depth, samples.calib[0], stride=4, offset=2)
    for frame in ("base", "camera"):
        cfg = VlaConfig(height=120, width=160, stride=4, offset=2, frame=frame)
        pts, valid = depth_to_points(
            torch.from_numpy(samples.depth[:1].astype(np.int32)), torch.from_numpy(samples.calib[:1]), cfg
        )
        want = ref if frame == "base" else xyz_from_depth(depth, samples.calib[0], 4, 2, frame="camera")
        ok = ~np.isnan(want[..., 0])
        assert np.array_equal(valid[0].numpy() > 0, ok)
        assert np.abs(pts[0].numpy()[ok] - want[ok]).max() < 1e-5


def test_batching_cache_and_inpainting(tiny: dict) -> None:
    manifest = PolicyManifest.load(tiny["manifest"])
    policy = load_backend(manifest, "ort", threads=1).policy
    try:
        a, b = _feed(tiny, 0), _feed(tiny, 20, "touch the blue cylinder")
        batch = {k: np.concatenate([a[k], b[k]]) for k in a}
        noise = np.random.default_rng(1).standard_normal((2, 8, 3)).astype(np.float32)
        together = policy.sample(batch, noise=noise)
        alone = np.concatenate([policy.sample(a, noise=noise[:1]), policy.sample(b, noise=noise[1:])])
        assert np.abs(together - alone).max() < 1e-5  # the dynamic batch axis keeps rows independent
        policy.prefix_cache = False
        assert np.abs(policy.sample(batch, noise=noise) - together).max() < 1e-5  # same maths without the cache
        policy.prefix_cache = True
        assert policy.last_timing is not None and policy.last_timing.steps == policy.steps
        known = np.full((2, 8, 3), 0.004, np.float32)
        x = policy.sample(batch, noise=noise, known=KnownPrefix(known, 3))
        stats = manifest.normalization["actions"]
        raw = x * stats.std + stats.mean
        assert np.abs(raw[:, :3] - known[:, :3]).max() < 1e-6  # the executed prefix is kept exactly
        out = policy.run(batch)["actions"]
        assert out.shape == (2, 8, 3) and np.isfinite(out).all()
        with pytest.raises(PolicyError, match="does not fit"):
            policy.sample(batch, known=KnownPrefix(known, 9))
        for k in (1, 5):
            assert policy.sample(a, steps=k).shape == (1, 8, 3)
    finally:
        policy.close()


def test_served_by_the_real_server(tiny: dict) -> None:
    from robot_stack.cycle import RtcPrefix
    from robot_stack.kinematics.ik import panda_ik
    from robot_stack.training.evaluate import served
    from robot_stack.transport.client import PolicyClient

    manifest = PolicyManifest.load(tiny["manifest"])
    feed = _feed(tiny, 5)
    arrays = {k: v for k, v in feed.items() if k != "instruction"}
    with served(tiny["manifest"]) as endpoint, PolicyClient(endpoint, "test", timeout_s=20.0) as client:
        metadata = client.metadata()
        layout = RequestLayout.from_metadata(metadata)
        assert layout == RequestLayout(depth_form=True, batched=True)
        reply = client.infer(arrays, {"t_obs_ns": 5, "task": "touch the red cube"})
        chunk = chunk_from_reply(reply, 5)
        assert chunk.actions.shape == (manifest.horizon, 3) and reply.meta["model_id"] == "tiny-vla"
        # real-time chunking: the robot side sees the VLA's flag, and the server takes the prefix
        fk = panda_ik().fk_xyz
        assert metadata["vla"]["rtc"] is True
        assert RtcPrefix.for_model(metadata, fk) == RtcPrefix("ee_delta_xyz", manifest.horizon, manifest.dt_s, fk)
        prefix = reply.arrays["actions"][0, :4].copy()
        guided = client.infer(
            {**arrays, RTC_PREFIX: prefix}, {"t_obs_ns": 6, "task": "touch the red cube", RTC_DELAY_STEPS: 2}
        )
        assert guided.meta["rtc_delay_steps"] == 2 and guided.meta["rtc_prefix_steps"] == 4
        assert "rtc_delay_steps" not in reply.meta
        with pytest.raises(ServerError, match="rtc/prefix"):
            client.infer(
                {**arrays, RTC_PREFIX: prefix[:, :2].copy()}, {"task": "touch the red cube", RTC_DELAY_STEPS: 1}
            )
        with pytest.raises(ServerError, match="needs an instruction"):
            client.infer(arrays, {"t_obs_ns": 6})
        with pytest.raises(ServerError, match="at most 16"):
            client.infer(arrays, {"t_obs_ns": 7, "task": " ".join(["touch"] * 17)})
        # the connection survives the rejected requests
        assert client.infer(arrays, {"t_obs_ns": 8, "task": "push the green cube to the left"}).arrays["actions"].shape


def _rtc_requests(tiny: dict) -> tuple[dict[str, np.ndarray], dict]:
    arrays = {k: v for k, v in _feed(tiny, 5).items() if k != "instruction"}
    return arrays, {"task": "touch the red cube"}


def test_rtc_guides_the_vla_onto_the_executing_prefix(tiny: dict) -> None:
    """The exported VLA accepts real-time chunking (``vla.rtc``); a chunk requested with the executing chunk's
    prefix and ``d`` frozen steps follows it on those steps, where free chunks (fresh noise) scatter around."""
    manifest = PolicyManifest.load(tiny["manifest"])
    assert manifest.vla is not None and manifest.vla.rtc and manifest.summary()["vla"]["rtc"] is True
    svc = PolicyService.from_manifest(manifest, "cpu", threads=1)
    try:
        assert svc.accepts_rtc
        arrays, meta = _rtc_requests(tiny)
        reference = svc(arrays, meta)[0]["actions"][0]  # the chunk the robot is executing (m, ee_delta_xyz)
        prefix, d = reference[:6].copy(), 3
        free = np.array([svc(arrays, meta)[0]["actions"][0] for _ in range(20)])
        guided, metas = [], []
        for _ in range(20):
            out, reply_meta = svc({**arrays, RTC_PREFIX: prefix}, {**meta, RTC_DELAY_STEPS: d})
            guided.append(out["actions"][0])
            metas.append(reply_meta)
        guided_a = np.array(guided)
        frozen_free = np.abs(free[:, :d] - reference[:d]).mean()
        frozen_guided = np.abs(guided_a[:, :d] - reference[:d]).mean()
        print(f"VLA RTC frozen steps: free {frozen_free * 1e3:.3f} mm, guided {frozen_guided * 1e3:.3f} mm")
        assert frozen_guided < 0.4 * frozen_free, (frozen_guided, frozen_free)
        splice_free = np.abs(free[:, d] - reference[d]).mean()
        splice_guided = np.abs(guided_a[:, d] - reference[d]).mean()
        print(f"VLA RTC splice step: free {splice_free * 1e3:.3f} mm, guided {splice_guided * 1e3:.3f} mm")
        assert splice_guided < 0.7 * splice_free, (splice_guided, splice_free)
        assert all(m["rtc_delay_steps"] == d and m["rtc_prefix_steps"] == 6 for m in metas)
        assert svc.policy.rtc_runs == 20 and svc.policy.runs == 41  # reference + 20 free + 20 guided
    finally:
        svc.policy.close()


def test_a_vla_without_rtc_refuses_the_prefix_by_name(tiny: dict) -> None:
    from robot_stack.transport.protocol import ArraySpec

    doc = PolicyManifest.load(tiny["manifest"]).to_dict(tiny["out"])
    doc["vla"]["rtc"] = "yes"
    with pytest.raises(ConfigError, match="vla.rtc"):
        PolicyManifest.from_dict(doc, tiny["out"])
    doc["vla"]["rtc"] = False
    flat = PolicyManifest.from_dict(doc, tiny["out"])
    svc = PolicyService.from_manifest(flat, "cpu", threads=1)
    try:
        assert not svc.accepts_rtc and svc.metadata()["vla"]["rtc"] is False
        arrays, meta = _rtc_requests(tiny)
        prefix = np.zeros((3, 3), np.float32)
        with pytest.raises(PolicyError, match="rtc/prefix"):
            svc({**arrays, RTC_PREFIX: prefix}, {**meta, RTC_DELAY_STEPS: 1})
        declared = [
            ArraySpec(t.name, t.dtype, tuple(1 if n == -1 else n for n in t.shape)) for t in flat.request_inputs
        ]
        svc.check_request(declared)
        with pytest.raises(PolicyError, match="rtc/prefix"):
            svc.check_request([*declared, ArraySpec(RTC_PREFIX, "float32", (3, 3))])
        with pytest.raises(PolicyError, match="vla has no rtc: true"):
            svc.policy.run(_feed(tiny, 5), rtc=[RtcRequest(prefix, 1)])
        assert svc(arrays, meta)[0]["actions"].shape == (1, 8, 3)  # without the prefix it serves as before
    finally:
        svc.policy.close()


def test_torch_engine_serves_the_vla(tiny: dict) -> None:
    manifest = PolicyManifest.load(tiny["manifest"])
    choice = load_backend(manifest, "torch", threads=1, torch_options={"device": "cpu"})
    ort = load_backend(manifest, "ort", threads=1).policy
    try:
        assert choice.backend == "torch" and "torch-cpu" in choice.policy.provider
        feed = _feed(tiny, 3)
        noise = np.random.default_rng(2).standard_normal((1, 8, 3)).astype(np.float32)
        assert np.abs(choice.policy.sample(feed, noise=noise) - ort.sample(feed, noise=noise)).max() < 1e-4
    finally:
        choice.policy.close()
        ort.close()


def test_closed_loop_episode_through_the_stack(tiny: dict) -> None:
    from robot_stack.training.suite_evaluate import evaluate_suite

    report = evaluate_suite(
        tiny["manifest"],
        ["vla_b0"],
        instructions=["touch the red cube"],
        episodes=1,
        max_duration_s=0.6,
        image_hw=TINY_HW,
        mismatched=True,
    )
    (episode,) = report.episodes
    assert episode.sent != episode.instruction and episode.steps >= 5 and episode.infer_ms > 0
    summary = report.summary()
    assert summary["mismatched_instruction"] and summary["per_instruction"]["touch the red cube"]["episodes"] == 1


def test_bench_vla_times_every_k_with_and_without_the_cache_interleaved(tiny: dict) -> None:
    """``bench vla``'s per-chunk figures on the real ORT backend: every K with and without the prefix cache, timed
    round by round (one call of each setting per round), so that drift cannot favour one K."""
    from robot_stack.bench.vla import STEPS, _chunk_latency

    choice = load_backend(PolicyManifest.load(tiny["manifest"]), "ort", provider="cpu", threads=1)
    order: list[tuple[int, bool]] = []
    run = choice.policy.run

    def recorded(feed):  # type: ignore[no-untyped-def]
        order.append((choice.policy.steps, choice.policy.prefix_cache))
        return run(feed)

    choice.policy.run = recorded
    out: dict = {}
    try:
        _chunk_latency(out, choice.policy, _feed(tiny), "", runs=2)
    finally:
        choice.policy.close()
    settings = [(k, c) for k in STEPS for c in (True, False)]
    assert order == settings * 5  # 3 warm-up rounds + 2 timed, each round every setting once
    for k in STEPS:
        assert 0 < out[f"steps{k}_p50_ms"] <= out[f"steps{k}_p99_ms"] and out[f"steps{k}_nocache_p50_ms"] > 0
    assert choice.policy.prefix_cache


def test_dagger_round_labels_the_learners_states_with_the_expert(tiny: dict, tmp_path: Path) -> None:
    """``train-vla --dagger-from``: the served model drives (beta 0: always), the expert labels what it visits,
    the round is saved, and training runs on demonstrations + DAgger samples with distinct episode numbers."""
    from robot_stack.training.suite_evaluate import served_policy

    calls: list[str] = []
    with served_policy(tiny["manifest"]) as served:

        def learner(obs, text):  # type: ignore[no-untyped-def]
            calls.append(text)
            return served(obs, text)

        dagger = collect_vla(
            ["vla_a1"], 1, seed=7, stride=4, offset=2, max_duration_s=1.0, image_hw=TINY_HW,
            instructions=["touch the blue cylinder"], learner=learner, beta=0.0,
        )  # fmt: skip
    assert len(calls) == len(dagger) > 0 and set(calls) == {"touch the blue cylinder"}
    # labels are the expert's (0.25 m/s at most: step k within 0.025 k m of the start), whatever the learner did
    reach = np.linalg.norm(dagger.chunks, axis=-1)  # (N, horizon) metres from the TCP at the observation
    assert np.all(np.isfinite(reach)) and np.all(reach <= 0.25 * dagger.dt_s * np.arange(reach.shape[1]) + 1e-5)
    both = VlaSamples.concat([tiny["samples"], dagger])
    assert len(both) == len(tiny["samples"]) + len(dagger) and both.episodes == 3
    assert set(np.unique(both.episode)) == {0, 1, 2} and both.scenes == ("vla_a1",)
    assert both.instructions == ("touch the red cube", "touch the blue cylinder")  # merged by name
    assert np.all(both.instruction[len(tiny["samples"]) :] == 1)
    with pytest.raises(DatasetError, match="pixel grid"):
        VlaSamples.concat([tiny["samples"], replace(dagger, stride=8)])
    with pytest.raises(ValueError, match="beta"):
        collect_vla(["vla_a1"], 1, learner=learner, beta=1.5)
    path = tmp_path / "dagger.npz"
    dagger.save(path)
    report = train_vla(
        tmp_path / "out", model_id="tiny-vla", data=tiny["out"] / "demos.npz", model_config=TINY,
        train_config=VlaTrainConfig(steps=2, batch_size=8, warmup_steps=1), steps=2,
        dagger_from=tiny["manifest"], dagger_data=path,
    )  # fmt: skip
    assert report["dagger_episodes"] == 1 and report["samples"] == len(both)


@pytest.mark.slow
def test_train_vla_full(tmp_path: Path) -> None:
    """The real recipe at a reduced size: 40 episodes over scene set A, 10 minutes of training."""
    report = train_vla(tmp_path, episodes=40, train_config=VlaTrainConfig(steps=100_000, time_budget_s=600))
    assert report["val_chunk_rmse_mm_k10"] < 25.0
    assert report["served_max_abs_err_m_ort"] < 1e-4


def test_compile_builds_and_gates_both_graphs(tiny: dict, tmp_path: Path, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """``robot-stack compile`` on a VLA: one TensorRT engine per graph (through the fake TensorRT 10 / 11 modules that
    really compute), each behind the accuracy gate, timed per chunk against ONNX Runtime."""
    from fake_gpu import fake_gpu

    from robot_stack.cli import main

    for version in ("11.4.0.106",):  # TensorRT 10.x builds the VLA in test_gpu_check_times_the_vla_per_chunk
        with fake_gpu(monkeypatch, version) as gpu:
            args = ["compile", str(tiny["manifest"]), "--fp16", "--cache-dir", str(tmp_path / version), "--json"]
            rc = main(args)
        report = json.loads(capsys.readouterr().out)
        assert rc == 0 and report["ok"], report["reason"]
        assert report["backend"] == "tensorrt" and report["trt_p50_ms"] > 0 and report["ort_p50_ms"] > 0
        assert len(report["engine_path"].split("; ")) == 2
        gated = {line.split(":")[0] for line in report["gate"]}
        assert gated == {"tiny-vla/prefix", "tiny-vla/denoise"}
        assert sum(1 for c in gpu.trt.calls if c[0] == "build") == 2  # one engine per graph


def test_gpu_check_times_the_vla_per_chunk(tiny: dict, monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """scripts/gpu_check.py with a VLA manifest: both graphs through every GPU section, then per-chunk latency at
    batch 1 and 8 on ORT CPU, ORT CUDA and TensorRT FP16 (fake GPU modules that really compute)."""
    import importlib.util
    import re

    from fake_gpu import fake_gpu, fake_ort_gpu

    script = Path(__file__).resolve().parent.parent / "scripts" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", script)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    args = ["--quick", "--runs", "2", "--models", str(tiny["manifest"])]
    fake_ort_gpu(monkeypatch)
    with fake_gpu(monkeypatch, "10.16.1.11"):
        assert module.main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"INFO tiny-vla: per chunk \(K = 10\) ONNX Runtime CPU: batch 1 p50 [\d.]+ ms, batch 8", text)
    assert "PASS tiny-vla/prefix: TensorRT 10.16.1.11 fp16 built and gated" in text
    assert "PASS tiny-vla/denoise: TensorRT 10.16.1.11 fp16 built and gated" in text
    for path in ("ONNX Runtime CUDA", "TensorRT 10.16.1.11 FP16"):
        assert f"PASS tiny-vla: per chunk (K = 10) {path}: both graphs built and gated" in text
        assert re.search(rf"INFO tiny-vla: per chunk \(K = 10\) {path}: batch 1 p50 .* batch 8 p50", text)
    assert not re.search(r"^FAIL", text, re.M)
