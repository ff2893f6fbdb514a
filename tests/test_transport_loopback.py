"""Real PolicyServer and PolicyClient on loopback TCP: replies, errors, timeouts, latest-wins, restarts, CURVE."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import wait_until

from robot_stack.errors import PayloadTooLargeError, RequestTimeoutError, ServerError
from robot_stack.transport import PROTOCOL_VERSION, Message, PolicyClient, PolicyServer, decode, encode

ANY_PORT = "tcp://127.0.0.1:*"


def echo(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
    """Doubles every float array; echoes meta."""
    return {k: v * 2 if v.dtype.kind == "f" else np.array(v) for k, v in arrays.items()}, dict(meta)


class GatedHandler:
    """Blocks each call until ``gate`` is set; records the meta it saw."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.seen: list[Any] = []

    def __call__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        self.entered.set()
        assert self.gate.wait(10), "test never opened the gate"
        self.seen.append(meta.get("n"))
        return {"n": np.array([meta.get("n", -1)], np.int64)}, dict(meta)


@pytest.fixture
def server() -> Iterator[PolicyServer]:
    with PolicyServer(echo, bind=ANY_PORT, max_message_bytes=1 << 20, model_id="echo") as srv:
        yield srv


@pytest.fixture
def raw_dealer(server: PolicyServer) -> Iterator[zmq.Socket]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(server.endpoint)
    yield sock
    sock.close(0)


def test_infer_round_trip_with_timing_and_clock_offset(server: PolicyServer) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    state = np.linspace(-1, 1, 11, dtype=np.float32)
    with PolicyClient(server.endpoint, "arm0", timeout_s=5) as client:
        reply = client.infer({"rgb": rgb, "state": state}, {"step": 3})
        np.testing.assert_array_equal(reply.arrays["rgb"], rgb)
        np.testing.assert_array_equal(reply.arrays["state"], state * 2)
        assert reply.meta == {"step": 3}
        st = reply.server_timing
        assert st["t_recv_ns"] <= st["t_start_ns"] <= st["t_end_ns"] <= st["t_reply_ns"]
        assert st["t_client_send_ns"] <= reply.timing.t_send_ns
        t = reply.timing
        assert t.round_trip_ms >= t.server_ms >= t.infer_ms >= 0
        assert t.network_ms == pytest.approx(t.round_trip_ms - t.server_ms)
        # Same host, same monotonic clock: the estimated offset must lie within its own uncertainty (+ slack).
        offset = client.sync_clock(samples=5)
        assert abs(offset) <= client.clock_offset_uncertainty_ns + 1_000_000
        health = client.health()
        assert health["status"] == "ok" and health["model"] == "echo"
        assert client.metadata()["model"] == "echo"
    stats = server.stats()
    assert stats["infer_ok"] == 1 and stats["health"] >= 6 and stats["metadata"] == 1


def test_malformed_messages_get_error_replies_and_server_keeps_serving(
    server: PolicyServer, raw_dealer: zmq.Socket
) -> None:
    head = {
        "v": PROTOCOL_VERSION,
        "kind": "infer",
        "id": 11,
        "robot": "r",
        "model": "",
        "t_send_ns": 0,
        "timeout_ms": 0.0,
        "arrays": [{"name": "x", "dtype": "float32", "shape": [4]}],
        "meta": {},
    }
    bad_messages = [
        ([b"\xc1 garbage"], "protocol_error", -1),
        ([msgpack.packb([1, 2])], "protocol_error", -1),
        ([msgpack.packb({**head, "v": 99})], "version_mismatch", 11),
        ([msgpack.packb(head)], "protocol_error", 11),  # truncated: array frame missing
        ([msgpack.packb(head), b"\0" * 3], "protocol_error", 11),  # wrong byte count
        (
            [msgpack.packb({**head, "arrays": [{"name": "x", "dtype": "float64", "shape": [2**31, 2**31]}]}), b""],
            "payload_too_large",
            11,
        ),
        ([msgpack.packb({**head, "kind": "reply", "arrays": []})], "bad_kind", 11),
        ([msgpack.packb({**head, "model": "other", "arrays": []})], "model_mismatch", 11),
    ]
    for frames, code, rid in bad_messages:
        raw_dealer.send_multipart(frames)
        reply = decode(raw_dealer.recv_multipart())
        assert (reply.kind, reply.error_code, reply.id) == ("error", code, rid), reply.error_reason
        assert reply.error_reason
    stats = server.stats()
    assert stats["protocol_error"] == 4
    assert stats["version_mismatch"] == stats["payload_too_large"] == stats["bad_kind"] == stats["model_mismatch"] == 1
    with PolicyClient(server.endpoint, "good", timeout_s=5) as client:
        out = client.infer({"x": np.ones(4, np.float32)})
        np.testing.assert_array_equal(out.arrays["x"], np.full(4, 2, np.float32))


def test_frame_over_maxmsgsize_is_dropped_by_libzmq_and_server_survives(server: PolicyServer) -> None:
    # One 2 MiB frame against a 1 MiB cap: libzmq disconnects the peer before the server sees anything.
    ctx = zmq.Context.instance()
    rogue = ctx.socket(zmq.DEALER)
    rogue.setsockopt(zmq.LINGER, 0)
    rogue.connect(server.endpoint)
    rogue.send_multipart([b"\x80", b"\0" * (2 << 20)])
    assert not rogue.poll(300)
    rogue.close(0)
    assert server.stats()["received"] == 0
    with PolicyClient(server.endpoint, "good", timeout_s=5) as client:
        assert client.infer({"x": np.ones(2, np.float32)}).arrays["x"][0] == 2


def test_client_refuses_oversized_payload_locally(server: PolicyServer) -> None:
    with PolicyClient(server.endpoint, "r", max_message_bytes=1000) as client, pytest.raises(PayloadTooLargeError):
        client.infer({"img": np.zeros(2000, np.uint8)})
    assert server.stats()["received"] == 0


def test_handler_exception_becomes_server_error_and_serving_continues() -> None:
    def flaky(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        if meta.get("boom"):
            raise RuntimeError("kaboom")
        return {"ok": np.ones(1, np.float32)}, {}

    with PolicyServer(flaky, bind=ANY_PORT) as srv, PolicyClient(srv.endpoint, "r", timeout_s=5) as client:
        with pytest.raises(ServerError, match="kaboom") as info:
            client.infer({}, {"boom": True})
        assert info.value.code == "handler_error"
        assert client.infer({}).arrays["ok"][0] == 1
        assert srv.stats()["handler_error"] == 1


def test_unsendable_handler_output_is_an_error_reply() -> None:
    def bad(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        return {"z": np.zeros(2, np.complex64)}, {}

    with PolicyServer(bad, bind=ANY_PORT) as srv, PolicyClient(srv.endpoint, "r", timeout_s=5) as client:
        with pytest.raises(ServerError, match="complex64") as info:
            client.infer({})
        assert info.value.code == "handler_error"
        assert srv.stats()["handler_error"] == 1


def test_timeout_then_next_request_never_sees_the_stale_reply() -> None:
    handler = GatedHandler()
    with PolicyServer(handler, bind=ANY_PORT) as srv, PolicyClient(srv.endpoint, "r", timeout_s=5) as client:
        with pytest.raises(RequestTimeoutError, match="no reply"):
            client.infer({}, {"n": 1}, timeout_s=0.2)
        assert client.timeouts == 1
        handler.gate.set()  # the late reply to n=1 is produced now, addressed to the closed socket
        reply = client.infer({}, {"n": 2})
        assert reply.meta["n"] == 2 and int(reply.arrays["n"][0]) == 2
        assert handler.seen == [1, 2]
        assert client.infer({}, {"n": 3}).meta["n"] == 3


def test_latest_wins_per_robot() -> None:
    handler = GatedHandler()
    with PolicyServer(handler, bind=ANY_PORT) as srv:
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 5000)
        sock.connect(srv.endpoint)
        try:
            # Robot A's first request occupies the worker; then A sends 2 more and B sends 1 while it is busy.
            sock.send_multipart(encode(Message("infer", 1, robot="A", meta={"n": 1})))
            assert handler.entered.wait(5)
            for rid, robot in ((2, "A"), (3, "A"), (4, "B")):
                sock.send_multipart(encode(Message("infer", rid, robot=robot, meta={"n": rid})))
            assert wait_until(lambda: srv.stats()["received"] == 4, timeout_s=5, poll_s=0.005), "condition not reached"
            handler.gate.set()
            replies = {}
            for _ in range(4):
                msg = decode(sock.recv_multipart())
                replies[msg.id] = msg
        finally:
            sock.close(0)
        assert replies[2].kind == "error" and replies[2].error_code == "superseded"
        assert replies[1].kind == replies[3].kind == replies[4].kind == "reply"
        assert handler.seen == [1, 3, 4]  # 2 was replaced by 3 before it ran; FIFO across robots
        assert srv.stats()["superseded"] == 1


def test_expired_queued_work_is_dropped_with_deadline_exceeded() -> None:
    handler = GatedHandler()
    with PolicyServer(handler, bind=ANY_PORT) as srv:
        blocker = PolicyClient(srv.endpoint, "A", timeout_s=10)
        t = threading.Thread(target=lambda: blocker.infer({}, {"n": 1}))
        t.start()
        assert handler.entered.wait(5)
        with PolicyClient(srv.endpoint, "B", timeout_s=0.05) as late, pytest.raises(RequestTimeoutError):
            late.infer({}, {"n": 2})
        handler.gate.set()
        t.join(5)
        assert wait_until(lambda: srv.stats()["deadline_exceeded"] == 1, timeout_s=5, poll_s=0.005), (
            "condition not reached"
        )
        assert handler.seen == [1]  # the expired request never reached the model
        blocker.close()


def test_client_recovers_after_server_restart() -> None:
    first = PolicyServer(echo, bind=ANY_PORT).start()
    endpoint = first.endpoint
    with PolicyClient(endpoint, "r", timeout_s=5) as client:
        assert client.infer({"x": np.ones(1, np.float32)}).arrays["x"][0] == 2
        first.close()
        with pytest.raises(RequestTimeoutError):
            client.infer({"x": np.ones(1, np.float32)}, timeout_s=0.2)
        with PolicyServer(echo, bind=endpoint):
            assert client.infer({"x": np.full(1, 3, np.float32)}).arrays["x"][0] == 6
        # the outage is reported: one gap, at least as long as the failed request's timeout
        assert len(client.gaps_s) == 1 and client.gaps_s[0] >= 0.2


def test_req_socket_peer_is_supported(server: PolicyServer) -> None:
    req = zmq.Context.instance().socket(zmq.REQ)
    req.setsockopt(zmq.LINGER, 0)
    req.setsockopt(zmq.RCVTIMEO, 5000)
    req.connect(server.endpoint)
    try:
        req.send_multipart(encode(Message("health", 5)))
        reply = decode(req.recv_multipart())
    finally:
        req.close(0)
    assert reply.kind == "reply" and reply.id == 5 and reply.meta["status"] == "ok"


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_only_admits_authorised_clients() -> None:
    server_pub, server_sec = zmq.curve_keypair()
    good_pub, good_sec = zmq.curve_keypair()
    bad_pub, bad_sec = zmq.curve_keypair()
    with PolicyServer(echo, bind=ANY_PORT, curve_secret_key=server_sec, authorized_client_keys=[good_pub]) as srv:
        with PolicyClient(
            srv.endpoint,
            "r",
            timeout_s=5,
            server_public_key=server_pub,
            client_secret_key=good_sec,
            client_public_key=good_pub,
        ) as good:
            assert good.infer({"x": np.ones(1, np.float32)}).arrays["x"][0] == 2
        with (
            PolicyClient(
                srv.endpoint,
                "r",
                timeout_s=0.3,
                server_public_key=server_pub,
                client_secret_key=bad_sec,
                client_public_key=bad_pub,
            ) as bad,
            pytest.raises(RequestTimeoutError),
        ):
            bad.health()
        with PolicyClient(srv.endpoint, "r", timeout_s=0.3) as plain, pytest.raises(RequestTimeoutError):
            plain.health()
        assert srv.stats()["received"] == 1
