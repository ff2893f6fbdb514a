"""Multi-robot serving: earliest-deadline-first scheduling, micro-batching, per-client metrics, split rates."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zmq

from robot_stack.clock import FakeClock
from robot_stack.errors import ConfigError, PolicyError, ServerError
from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.service import PolicyService
from robot_stack.policy.toy_models import ToyModel, build_toy_model, toy_manifest_dict
from robot_stack.transport import Message, PolicyClient, PolicyServer, decode, encode
from robot_stack.transport.server import BatchItem

ANY_PORT = "tcp://127.0.0.1:*"


class GatedBatchHandler:
    """Batch handler: the first call blocks until ``gate`` is set; records the robots of every batch."""

    def __init__(self, max_batch: int) -> None:
        self.max_batch = max_batch
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.batches: list[list[str]] = []

    def run_batch(self, items: Sequence[BatchItem]) -> list[Any]:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        self.batches.append([it.robot for it in items])
        out: list[Any] = []
        for it in items:
            if it.meta.get("bad"):
                out.append(PolicyError(f"robot {it.robot} sent a bad observation"))
            else:
                out.append(({"x": np.asarray(it.arrays["x"]) * 2}, {"robot": it.robot}))
        return out

    def __call__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        raise AssertionError("the server must use run_batch when the handler has one")


def dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(endpoint)
    return sock


def test_queued_requests_run_earliest_deadline_first_and_in_micro_batches() -> None:
    handler = GatedBatchHandler(max_batch=2)
    with PolicyServer(handler, bind=ANY_PORT) as srv:
        sock = dealer(srv.endpoint)
        try:
            x = {"x": np.ones(1, np.float32)}
            sock.send_multipart(encode(Message("infer", 1, robot="busy", arrays=x)))
            assert handler.entered.wait(5)
            # Queued while the worker is busy: arrival order differs from deadline order.
            for rid, robot, timeout_ms in ((2, "relaxed", 0.0), (3, "late", 9000.0), (4, "urgent", 3000.0)):
                sock.send_multipart(encode(Message("infer", rid, robot=robot, arrays=x, timeout_ms=timeout_ms)))
            sock.send_multipart(encode(Message("infer", 5, robot="bad", arrays=x, meta={"bad": True})))
            t_end = time.monotonic() + 5  # bound on the wait, not a timing assertion
            while srv.stats()["received"] < 5:
                assert time.monotonic() < t_end, "server did not receive all requests"
                time.sleep(0.005)
            handler.gate.set()
            replies = {m.id: m for m in (decode(sock.recv_multipart()) for _ in range(5))}
        finally:
            sock.close(0)
    # Deadlines first (urgent 3 s before late 9 s), then no-deadline work by arrival; at most 2 per batch.
    assert handler.batches == [["busy"], ["urgent", "late"], ["relaxed", "bad"]]
    assert replies[4].timing is not None and replies[4].timing["batch"] == 2
    assert all(replies[i].kind == "reply" for i in (1, 2, 3, 4))
    np.testing.assert_array_equal(replies[3].arrays["x"], [2.0])
    # A bad request fails alone; its batch mate is answered normally.
    assert replies[5].kind == "error" and replies[5].error_code == "policy_error"
    stats = srv.stats()
    assert stats["batches"] == 3 and stats["infer_ok"] == 4 and stats["policy_error"] == 1


def test_per_client_metrics_in_stats_and_health() -> None:
    def echo(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        return {"y": np.ones(2, np.float32)}, {}

    with PolicyServer(echo, bind=ANY_PORT) as srv:
        clients = [PolicyClient(srv.endpoint, f"arm{i}", timeout_s=5) for i in range(3)]
        try:
            for k, client in enumerate(clients):
                for _ in range(k + 2):
                    client.infer({})
            health = clients[0].health()
        finally:
            for c in clients:
                c.close()
        per_client = srv.stats()["clients"]
    assert sorted(per_client) == ["arm0", "arm1", "arm2"]
    for k in range(3):
        entry = per_client[f"arm{k}"]
        assert entry["n"] == k + 2 and entry["batch_mean"] == 1.0
        for stage in ("queue", "infer", "total"):
            assert 0 <= entry[f"{stage}_p50_ms"] <= entry[f"{stage}_p99_ms"]
        assert entry["total_p99_ms"] >= entry["infer_p99_ms"]
    assert health["clients"]["arm2"]["n"] == 4 and health["max_batch"] == 1


# ------------------------------------------------------------------------------- real models, batching


@pytest.fixture
def batched(tmp_path: Path) -> tuple[PolicyManifest, ToyModel]:
    model = build_toy_model(
        tmp_path / "mlp.onnx", [("state", "float32", (6,)), ("rgb", "uint8", (4, 4, 3))], ("actions", (4, 3)), 16
    )
    data = toy_manifest_dict(model, "mlp", max_batch=4)
    (tmp_path / "mlp.yaml").write_text(yaml.safe_dump(data))
    return PolicyManifest.load(tmp_path / "mlp.yaml"), model


def _obs(rng: np.random.Generator, rows: int = 1) -> dict[str, np.ndarray]:
    return {
        "state": rng.normal(size=(rows, 6)).astype(np.float32),
        "rgb": rng.integers(0, 256, (rows, 4, 4, 3), dtype=np.uint8),
    }


def test_service_batches_compatible_requests_into_one_call(batched: tuple[PolicyManifest, ToyModel]) -> None:
    manifest, model = batched
    service = PolicyService(OnnxPolicy(manifest, "cpu"))
    assert service.max_batch == 4
    rng = np.random.default_rng(0)
    obs = [_obs(rng), _obs(rng, rows=2), _obs(rng)]
    bad = {**_obs(rng), "state": np.full((1, 6), np.nan, np.float32)}
    items = [BatchItem(f"r{i}", o, {"step": i}, i, None) for i, o in enumerate([*obs, bad])]
    results = service.run_batch(items)
    assert service.decoder_runs == 1  # three valid requests, one model call
    for i, o in enumerate(obs):
        arrays, meta = results[i]
        np.testing.assert_allclose(arrays["actions"], model.reference(o), rtol=1e-4, atol=1e-4)
        assert meta["step"] == i and meta["model_id"] == "mlp"
    assert isinstance(results[3], PolicyError) and "NaN" in str(results[3])


def test_batched_serving_over_loopback_matches_reference(batched: tuple[PolicyManifest, ToyModel]) -> None:
    manifest, model = batched
    service = PolicyService(OnnxPolicy(manifest, "cpu"))
    rng = np.random.default_rng(1)
    errors: list[BaseException] = []
    with PolicyServer(service, bind=ANY_PORT) as srv:
        assert srv.max_batch == 4

        def robot(i: int) -> None:
            try:
                with PolicyClient(srv.endpoint, f"robot{i}", timeout_s=5) as client:
                    for step in range(15):
                        o = _obs(np.random.default_rng(100 * i + step))
                        reply = client.infer(o, {"step": step})
                        np.testing.assert_allclose(reply.arrays["actions"], model.reference(o), rtol=1e-4, atol=1e-4)
                        assert reply.meta["step"] == step
            except BaseException as exc:  # reported to the main thread below
                errors.append(exc)

        threads = [threading.Thread(target=robot, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        with PolicyClient(srv.endpoint, "bad", timeout_s=5) as client, pytest.raises(ServerError) as info:
            client.infer({"state": rng.normal(size=(1, 5)).astype(np.float32)})
        assert info.value.code == "policy_error"
        stats = srv.stats()
    assert not errors, errors
    assert stats["infer_ok"] == 60 and stats["policy_error"] == 1
    assert len(stats["clients"]) == 4  # the bad request was refused on its header, before it was queued


def test_max_batch_needs_dynamic_batch_dims(tmp_path: Path) -> None:
    model = build_toy_model(tmp_path / "m.onnx", [("state", "float32", (3,))], ("actions", (2,)))
    data = toy_manifest_dict(model, "m", max_batch=4)
    data["inputs"][0]["shape"] = [1, 3]
    with pytest.raises(ConfigError, match="dynamic first"):
        PolicyManifest.from_dict(data, tmp_path)


# ----------------------------------------------------------------------------------------- split rates


@pytest.fixture
def split(tmp_path: Path) -> tuple[PolicyManifest, ToyModel, ToyModel]:
    backbone = build_toy_model(tmp_path / "backbone.onnx", [("rgb", "uint8", (8, 8, 3))], ("features", (16,)), 32)
    decoder = build_toy_model(
        tmp_path / "decoder.onnx", [("features", "float32", (16,)), ("state", "float32", (4,))], ("actions", (5, 3))
    )
    bb_in, bb_out = backbone.tensor_specs()
    data = toy_manifest_dict(
        decoder,
        "split",
        max_batch=4,
        backbone={"onnx": "backbone.onnx", "rate_hz": 5, "inputs": bb_in, "outputs": bb_out},
    )
    (tmp_path / "split.yaml").write_text(yaml.safe_dump(data))
    return PolicyManifest.load(tmp_path / "split.yaml"), backbone, decoder


def test_backbone_runs_only_when_its_cached_output_is_older_than_its_period(
    split: tuple[PolicyManifest, ToyModel, ToyModel],
) -> None:
    manifest, backbone, decoder = split
    assert [t.name for t in manifest.request_inputs] == ["rgb", "state"]
    clock = FakeClock()
    service = PolicyService.from_manifest(manifest, "cpu", clock=clock)
    rng = np.random.default_rng(2)

    def obs() -> dict[str, np.ndarray]:
        return {
            "rgb": rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8),
            "state": rng.normal(size=(1, 4)).astype(np.float32),
        }

    def expected(first: dict[str, np.ndarray], now: dict[str, np.ndarray]) -> np.ndarray:
        features = backbone.reference({"rgb": first["rgb"]})
        return decoder.reference({"features": features, "state": now["state"]})

    o1 = obs()
    actions, meta = service(o1, {})
    assert service.backbone_runs == 1 and meta["backbone_ran"] and meta["backbone_age_ms"] == 0
    np.testing.assert_allclose(actions["actions"], expected(o1, o1), rtol=1e-4, atol=1e-5)
    for k in range(1, 4):  # 50, 100, 150 ms later: the 5 Hz backbone's output (200 ms period) is still fresh
        clock.advance(50_000_000)
        o = obs()
        actions, meta = service(o, {})
        assert service.backbone_runs == 1 and not meta["backbone_ran"]
        assert meta["backbone_age_ms"] == pytest.approx(50 * k)
        np.testing.assert_allclose(actions["actions"], expected(o1, o), rtol=1e-4, atol=1e-5)
    clock.advance(50_000_000)  # 200 ms: stale
    o5 = obs()
    actions, meta = service(o5, {})
    assert service.backbone_runs == 2 and meta["backbone_ran"]
    np.testing.assert_allclose(actions["actions"], expected(o5, o5), rtol=1e-4, atol=1e-5)
    assert service.decoder_runs == 5


def test_backbone_cache_is_per_robot_and_batched(split: tuple[PolicyManifest, ToyModel, ToyModel]) -> None:
    manifest, _, _ = split
    clock = FakeClock()
    service = PolicyService.from_manifest(manifest, "cpu", clock=clock)
    rng = np.random.default_rng(3)

    def item(robot: str) -> BatchItem:
        arrays = {
            "rgb": rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8),
            "state": rng.normal(size=(1, 4)).astype(np.float32),
        }
        return BatchItem(robot, arrays, {}, 0, None)

    first = service.run_batch([item("a"), item("b"), item("c")])
    assert service.backbone_runs == 1 and service.decoder_runs == 1  # one batched call each
    assert all(r[1]["backbone_ran"] for r in first)
    clock.advance(100_000_000)
    second = service.run_batch([item("a"), item("d")])  # a: cached; d: new robot -> backbone for d only
    assert [r[1]["backbone_ran"] for r in second] == [False, True]
    assert service.backbone_runs == 2


def test_backbone_cache_is_never_shared_between_clients_using_one_robot_id(
    split: tuple[PolicyManifest, ToyModel, ToyModel],
) -> None:
    manifest, backbone, decoder = split
    service = PolicyService.from_manifest(manifest, "cpu", clock=FakeClock())
    rng = np.random.default_rng(5)
    mine, theirs = (
        {"rgb": rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8), "state": np.zeros((1, 4), np.float32)}
        for _ in range(2)
    )
    service.run_batch([BatchItem("arm", mine, {}, 0, None, client="key-a")])
    ((actions, meta),) = service.run_batch([BatchItem("arm", theirs, {}, 1, None, client="key-b")])
    assert meta["backbone_ran"]  # key-b's own image, not key-a's cached features
    want = decoder.reference({"features": backbone.reference({"rgb": theirs["rgb"]}), "state": theirs["state"]})
    np.testing.assert_allclose(actions["actions"], want, rtol=1e-4, atol=1e-5)


def test_split_rate_model_served_end_to_end(split: tuple[PolicyManifest, ToyModel, ToyModel]) -> None:
    manifest, _, _ = split
    service = PolicyService.from_manifest(manifest, "cpu")
    rng = np.random.default_rng(4)
    with PolicyServer(service, bind=ANY_PORT) as srv, PolicyClient(srv.endpoint, "arm", timeout_s=5) as client:
        meta = client.metadata()
        assert [t["name"] for t in meta["request_inputs"]] == ["rgb", "state"]
        assert meta["backbone"]["rate_hz"] == 5
        obs = {
            "rgb": rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8),
            "state": rng.normal(size=(1, 4)).astype(np.float32),
        }
        first = client.infer(obs)
        second = client.infer(obs)
    assert first.meta["backbone_ran"] and first.arrays["actions"].shape == (1, 5, 3)
    # Within 200 ms of the first call (no sleep: the server is quick), the backbone output is reused.
    if second.meta["backbone_age_ms"] < 200:
        assert not second.meta["backbone_ran"]


def test_backbone_outputs_must_feed_the_decoder(tmp_path: Path) -> None:
    decoder = build_toy_model(tmp_path / "d.onnx", [("state", "float32", (4,))], ("actions", (2,)))
    data = toy_manifest_dict(
        decoder,
        "bad",
        backbone={
            "onnx": "b.onnx",
            "rate_hz": 5,
            "inputs": [{"name": "rgb", "dtype": "uint8", "shape": [-1, 8, 8, 3]}],
            "outputs": [{"name": "features", "dtype": "float32", "shape": [-1, 16]}],
        },
    )
    with pytest.raises(ConfigError, match="backbone output 'features'"):
        PolicyManifest.from_dict(data, tmp_path)
