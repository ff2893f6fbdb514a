"""A real ONNX model served over loopback ZeroMQ: in-process and as a ``python -m`` subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from robot_stack.errors import ServerError
from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.service import PolicyService, serve
from robot_stack.transport import PolicyClient, PolicyServer

ANY_PORT = "tcp://127.0.0.1:*"


def make_model(folder: Path) -> Path:
    """actions (N, 8, 3) = reshape(sqrt(state) @ W + B): NaN for negative state entries. Returns the manifest."""
    rng = np.random.default_rng(3)
    graph = helper.make_graph(
        [
            helper.make_node("Sqrt", ["state"], ["s"]),
            helper.make_node("MatMul", ["s", "W"], ["h"]),
            helper.make_node("Add", ["h", "B"], ["flat"]),
            helper.make_node("Reshape", ["flat", "shape"], ["actions"]),
        ],
        "sqrt_linear",
        [helper.make_tensor_value_info("state", TensorProto.FLOAT, ["N", 6])],
        [helper.make_tensor_value_info("actions", TensorProto.FLOAT, ["N", 8, 3])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(6, 24)).astype(np.float32), "W"),
            numpy_helper.from_array(rng.normal(size=24).astype(np.float32), "B"),
            numpy_helper.from_array(np.array([-1, 8, 3], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "policy.onnx")
    manifest = {
        "model_id": "sqrt-linear",
        "onnx": "policy.onnx",
        "inputs": [{"name": "state", "dtype": "float32", "shape": [-1, 6]}],
        "outputs": [{"name": "actions", "dtype": "float32", "shape": [-1, 8, 3]}],
        "action_space": "ee_delta_xyz",
        "action_head": "continuous",
        "horizon": 8,
        "dt_s": 0.05,
        "control_rate_hz": 5,
    }
    path = folder / "policy.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


def local_run(folder: Path, state: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "policy.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["actions"], {"state": state})[0]


def test_served_model_matches_local_onnxruntime_and_nan_is_an_error(tmp_path: Path) -> None:
    manifest = PolicyManifest.load(make_model(tmp_path))
    service = PolicyService(OnnxPolicy(manifest, "cpu", intra_op_threads=1))
    state = np.abs(np.random.default_rng(1).normal(size=(1, 6))).astype(np.float32)
    with PolicyServer(service, bind=ANY_PORT) as srv, PolicyClient(srv.endpoint, "arm", timeout_s=10) as client:
        reply = client.infer({"state": state}, {"t_obs_ns": 123})
        np.testing.assert_allclose(reply.arrays["actions"], local_run(tmp_path, state), rtol=1e-6)
        assert reply.meta["model_id"] == "sqrt-linear" and reply.meta["action_space"] == "ee_delta_xyz"
        assert reply.meta["dt_s"] == 0.05 and reply.meta["horizon"] == 8 and reply.meta["t_obs_ns"] == 123
        assert reply.timing.infer_ms > 0
        with pytest.raises(ServerError, match="non-finite") as info:
            client.infer({"state": -state})
        assert info.value.code == "policy_error"
        with pytest.raises(ServerError, match="dtype float64"):
            client.infer({"state": state.astype(np.float64)})
        meta = client.metadata()
        assert meta["model_id"] == "sqrt-linear" and meta["inputs"][0]["shape"] == [-1, 6]
        assert client.infer({"state": state * 4}).arrays["actions"].shape == (1, 8, 3)  # still serving
        assert srv.model_id == "sqrt-linear"
    assert srv.stats()["policy_error"] == 2 and srv.stats()["infer_ok"] == 2


def test_serve_blocks_until_stopped(tmp_path: Path) -> None:
    manifest_path = make_model(tmp_path)
    ready: list[str] = []
    bound = threading.Event()
    stop = threading.Event()

    def on_ready(endpoint: str) -> None:
        ready.append(endpoint)
        bound.set()

    thread = threading.Thread(
        target=serve, args=(manifest_path, ANY_PORT), kwargs={"on_ready": on_ready, "stop_event": stop}
    )
    thread.start()
    try:
        assert bound.wait(30)
        with PolicyClient(ready[0], "arm", timeout_s=10) as client:
            assert client.health()["model"] == "sqrt-linear"
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_subprocess_entry_prints_ready_and_stops_on_sigterm(tmp_path: Path) -> None:
    manifest_path = make_model(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "robot_stack.policy.service", "--manifest", str(manifest_path), "--bind", ANY_PORT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("READY tcp://127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        endpoint = line.split()[1]
        state = np.ones((2, 6), np.float32)
        with PolicyClient(endpoint, "arm", timeout_s=10) as client:
            np.testing.assert_allclose(
                client.infer({"state": state}).arrays["actions"], local_run(tmp_path, state), rtol=1e-6
            )
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_subprocess_entry_reports_bad_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("model_id: x\n")
    result = subprocess.run(
        [sys.executable, "-m", "robot_stack.policy.service", "--manifest", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "missing required" in result.stderr and "READY" not in result.stdout
