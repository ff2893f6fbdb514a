"""openpi interop both ways: openpi's own WebsocketClientPolicy against ``serve --openpi-port``, and the robot side
using an openpi-protocol server as its policy endpoint (``policy.endpoint: ws://...``) with the same guards."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robot_stack.doctor.ping import zero_observation
from robot_stack.errors import (
    PayloadTooLargeError,
    ProtocolError,
    RequestTimeoutError,
    StaleObservationError,
    TransportError,
)
from robot_stack.policy.manifest import DEMO_MANIFEST
from robot_stack.transport.openpi import OpenPIClient, OpenPIGateway, flatten, pack, unpack

openpi_client = pytest.importorskip("openpi_client", reason="pip install --no-deps openpi-client (scripts/setup.sh)")
from openpi_client import msgpack_numpy  # noqa: E402
from openpi_client.websocket_client_policy import WebsocketClientPolicy  # noqa: E402


@contextmanager
def serving(**kwargs: Any) -> Iterator[dict[str, str]]:
    """The real ``serve()`` of the demo model with its openpi face on a free port; yields both endpoints."""
    from robot_stack.policy.service import serve

    eps: dict[str, str] = {}
    ready, stop = threading.Event(), threading.Event()

    def on_ready(endpoint: str) -> None:
        eps["zmq"] = endpoint
        ready.set()

    thread = threading.Thread(
        target=serve,
        args=(DEMO_MANIFEST, "tcp://127.0.0.1:*", "cpu"),
        kwargs={
            "threads": 1,
            "on_ready": on_ready,
            "stop_event": stop,
            "openpi_port": 0,
            "on_openpi_ready": lambda e: eps.__setitem__("ws", e),
            **kwargs,
        },
        daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(60), "server did not start"
        yield eps
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def _host_port(ws: str) -> tuple[str, int]:
    host, port = ws.rsplit(":", 1)
    return host, int(port)


def test_openpi_client_package_uses_a_robot_stack_server() -> None:
    from robot_stack.transport.client import PolicyClient

    with serving() as eps:
        policy = WebsocketClientPolicy(*_host_port(eps["ws"]))
        md = policy.get_server_metadata()
        assert md["model_id"] == "reach-touch-v1" and md["action_head"] == "continuous"
        obs = zero_observation(md)
        obs["state"] = np.linspace(0, 1, 11, dtype=np.float32)
        result = policy.infer(obs)
        with PolicyClient(eps["zmq"], "direct") as direct:
            expected = direct.infer(obs).arrays["actions"]
        assert result["actions"].shape == (8, 3)
        np.testing.assert_allclose(result["actions"], expected, rtol=1e-6)  # the same model answered
        assert result["horizon"] == 8 and result["dt_s"] == pytest.approx(0.1)
        assert result["server_timing"]["infer_ms"] > 0
        # openpi's nested layout: {"observation": {...}} -> "observation/state" -> "state"
        nested = {"observation": dict(obs), "prompt": "touch the red cube"}
        np.testing.assert_allclose(policy.infer(nested)["actions"], expected, rtol=1e-6)
        # a wrong observation is refused by the server's own checks, as a text message; the connection stays usable
        with pytest.raises(RuntimeError, match="state"):
            policy.infer({**obs, "state": np.zeros(5, np.float32)})
        with pytest.raises(RuntimeError, match="refused"):  # an object array: never unpickled
            policy._ws.send(
                msgpack.packb({"state": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": (1,)}})
            )
            raise RuntimeError(policy._ws.recv())
        np.testing.assert_allclose(policy.infer(obs)["actions"], expected, rtol=1e-6)


def test_gateway_checks_the_api_key_and_curve_is_kept(tmp_path) -> None:
    from websockets.exceptions import InvalidStatus

    from robot_stack.transport.keys import generate_keys

    generate_keys(tmp_path, "server")
    generate_keys(tmp_path, "robot1", allow_dir=tmp_path / "allowed", robot_ids=["arm1"])
    # CURVE with an allow-list: the gateway's loopback clients use an ephemeral key allow-listed in memory
    with serving(
        openpi_api_key="s3cret", curve_secret=tmp_path / "server.key_secret", allow_dir=tmp_path / "allowed"
    ) as eps:
        with pytest.raises(InvalidStatus):
            WebsocketClientPolicy(*_host_port(eps["ws"]))  # no key
        with pytest.raises(InvalidStatus):
            WebsocketClientPolicy(*_host_port(eps["ws"]), api_key="wrong")
        policy = WebsocketClientPolicy(*_host_port(eps["ws"]), api_key="s3cret")
        assert policy.infer(zero_observation(policy.get_server_metadata()))["actions"].shape == (8, 3)


@contextmanager
def fake_openpi_server(delays_s: list[float]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """openpi's server behaviour with openpi_client's own codec (metadata, then one answer per observation whose
    ``actions`` carry the request's ``step``), each answer delayed by the next of ``delays_s``; yields the endpoint
    and the observations received."""
    from websockets.sync.server import serve

    received: list[dict[str, Any]] = []

    def handler(ws: Any) -> None:
        packer = msgpack_numpy.Packer()
        ws.send(packer.pack({"policy": "fake", "action_space": "ee_delta_xyz", "dt_s": 0.1}))
        for raw in ws:
            obs = msgpack_numpy.unpackb(raw)
            received.append(obs)
            delay = delays_s.pop(0) if delays_s else 0.0
            time.sleep(delay)
            try:
                ws.send(packer.pack({"actions": np.full((8, 3), float(obs["step"]), np.float32)}))
            except Exception:
                return

    server = serve(handler, "127.0.0.1", 0, compression=None)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.socket.getsockname()[1]}", received
    finally:
        server.shutdown()
        thread.join(5)


def test_robot_side_endpoint_keeps_deadlines_and_never_takes_a_late_answer() -> None:
    obs = {"state": np.zeros(11, np.float32)}
    with fake_openpi_server([0.0, 0.6, 0.0]) as (endpoint, received):
        client = OpenPIClient(endpoint, timeout_s=0.3)
        assert client.metadata()["policy"] == "fake"
        first = client.infer(obs, {"step": 1})
        assert first.arrays["actions"][0, 0] == 1.0 and first.meta["horizon"] == 8
        assert first.meta["action_space"] == "ee_delta_xyz" and first.meta["dt_s"] == 0.1  # from the metadata
        assert not first.arrays["actions"].flags.writeable
        t0 = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            client.infer(obs, {"step": 2})
        assert time.monotonic() - t0 < 0.5  # the deadline held
        third = client.infer(obs, {"step": 3})  # a new connection: the late answer for step 2 is never read
        assert third.arrays["actions"][0, 0] == 3.0
        assert client.timeouts == 1 and client.gaps_s  # the outage was recorded
        # the age check right before sending refuses a stale observation: nothing leaves
        n = len(received)

        def too_old() -> None:
            raise StaleObservationError("observation would be 900 ms old")

        with pytest.raises(StaleObservationError):
            client.infer(obs, {"step": 4}, before_send=too_old)
        assert len(received) == n and client.refused_stale == 1
        with pytest.raises(PayloadTooLargeError):
            OpenPIClient(endpoint, max_message_bytes=1000).infer({"x": np.zeros(1000, np.float32)})
        client.close()
    with pytest.raises(TransportError):
        OpenPIClient(endpoint, timeout_s=0.5).infer(obs)  # nobody listens any more


def test_a_demo_episode_runs_with_an_openpi_protocol_endpoint() -> None:
    from robot_stack.demo.loop import demo_config, run_demo

    with serving() as eps:
        config = demo_config("demo", [f"policy.endpoint={eps['ws']}"], max_duration_s=8.0)
        report = run_demo(config, episodes=1, seed=0)
    assert report.episodes[0]["success"], report.episodes
    assert report.episodes[0]["outcomes"].get("ok", 0) >= 5
    assert report.stages["inference"]["p50_ms"] > 0  # the server's timing came through the websocket


def test_strict_decoding_refuses_what_openpi_client_would_accept() -> None:
    ok = pack({"a": np.arange(6, dtype=np.int16).reshape(2, 3), "s": np.float32(2.5), "t": "x"})
    out = unpack(ok)
    assert out["a"].shape == (2, 3) and out["s"] == np.float32(2.5) and out["t"] == "x"
    bad = [
        {"a": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": (1,)}},  # object array
        {"a": {b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": (2,)}},  # wrong byte count
        {"a": {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<c8", b"shape": (1,)}},  # complex
        {"a": {b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": (-1,)}},
        {f"k{i}": i for i in range(300)},  # too many keys
    ]
    for doc in bad:
        with pytest.raises(ProtocolError):
            unpack(msgpack.packb(doc, use_bin_type=True))
    with pytest.raises(ProtocolError):
        unpack(b"\xc1garbage")
    with pytest.raises(PayloadTooLargeError):
        unpack(ok, max_message_bytes=10)
    assert flatten({"observation": {"image": {"front": 1}}, "p": 2}) == {"observation/image/front": 1, "p": 2}


@settings(max_examples=40, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from([np.uint8, np.int32, np.float32, np.float64, np.bool_]),
        shape=hnp.array_shapes(max_dims=3, max_side=5),
    )
)
def test_codec_round_trips_with_openpi_clients_own(arr: np.ndarray) -> None:
    ours = unpack(msgpack_numpy.packb({"x": arr}))["x"]
    theirs = msgpack_numpy.unpackb(pack({"x": arr}))["x"]
    np.testing.assert_array_equal(ours, arr)
    np.testing.assert_array_equal(theirs, arr)
    assert ours.dtype == theirs.dtype == arr.dtype


def test_gateway_refuses_text_and_keeps_serving() -> None:
    with serving() as eps:
        from websockets.sync.client import connect

        with connect(eps["ws"]) as ws:
            md = msgpack_numpy.unpackb(ws.recv())
            ws.send("hello")
            assert "binary msgpack" in ws.recv()
            ws.send(msgpack_numpy.packb(zero_observation(md)))
            assert msgpack_numpy.unpackb(ws.recv())["actions"].shape == (8, 3)
    assert isinstance(OpenPIGateway, type)
