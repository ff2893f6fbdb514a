"""Policy server under hostile input (issue 11, items 1-6): header ranges, every reply path for REQ and DEALER
peers, queue caps answered ``busy``, negotiated codecs only, decoding off the I/O thread, and latest-wins keyed on
(client, robot id) with robot ids bound to CURVE keys. Real PolicyServer, real ZeroMQ sockets on loopback."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from robot_stack.errors import PolicyError, ServerBusyError, ServerError
from robot_stack.transport import PROTOCOL_VERSION, Message, PolicyClient, PolicyServer, decode, encode, memory
from robot_stack.transport import protocol as protocol_module
from robot_stack.transport.admission import AdmissionLimits, FairQueue
from robot_stack.transport.codecs import available_codecs, encode_array

ANY_PORT = "tcp://127.0.0.1:*"
HAVE_ZSTD = "zstd" in available_codecs()
SOCKETS = {"dealer": zmq.DEALER, "req": zmq.REQ}


class Handler:
    """Echo handler; meta ``block`` waits for :attr:`gate`, ``fail`` = "policy" | "other" raises."""

    compression = {"img": "zstd"}

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.seen: list[tuple[str, Any]] = []

    def __call__(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
        if meta.get("block"):
            self.entered.set()
            assert self.gate.wait(10), "test never opened the gate"
        self.seen.append((str(meta.get("tag", "")), {k: v.shape for k, v in arrays.items()}))
        if meta.get("fail") == "policy":
            raise PolicyError("the model rejects this observation")
        if meta.get("fail") == "other":
            raise RuntimeError("kaboom")
        return {k: np.array(v) for k, v in arrays.items()}, dict(meta)


def head(**over: Any) -> dict[str, Any]:
    h: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "kind": "health",
        "id": 21,
        "robot": "r",
        "model": "",
        "t_send_ns": 1,
        "timeout_ms": 0.0,
        "arrays": [],
        "meta": {},
    }
    h.update(over)
    return h


def packed(**over: Any) -> bytes:
    return msgpack.packb(head(**over), use_bin_type=True)


def connect(endpoint: str, kind: int = zmq.DEALER) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 3000)
    sock.connect(endpoint)
    return sock


def ask(sock: zmq.Socket, frames: list[Any]) -> Message:
    """Send one message, return the one answer (zmq.Again = no answer within 3 s)."""
    sock.send_multipart(frames)
    return decode(sock.recv_multipart())


def infer_frames(rid: int, robot: str = "r", timeout_ms: float = 0.0, **meta: Any) -> list[Any]:
    x = np.arange(4, dtype=np.float32)
    return encode(Message("infer", rid, robot=robot, timeout_ms=timeout_ms, arrays={"x": x}, meta=meta))


@pytest.fixture
def handler() -> Handler:
    return Handler()


@pytest.fixture
def server(handler: Handler) -> Iterator[PolicyServer]:
    limits = AdmissionLimits(max_pending=2, max_pending_per_connection=2, max_pending_bytes=1 << 20)
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=1 << 20, model_id="echo", limits=limits) as srv:
        yield srv
    handler.gate.set()


# ------------------------------------------------------------------------------------ items 1 and 2


def test_mixed_key_types_are_a_protocol_error_with_one_log_line(
    server: PolicyServer, caplog: pytest.LogCaptureFixture
) -> None:
    sock = connect(server.endpoint)
    try:
        header = {**head(), b"x": 1, "y": 1}
        with caplog.at_level(logging.DEBUG, logger="robot_stack.transport.server"):
            reply = ask(sock, [msgpack.packb(header, use_bin_type=True)])
    finally:
        sock.close(0)
    assert (reply.kind, reply.error_code, reply.id) == ("error", "protocol_error", 21)
    assert "unknown field(s)" in reply.error_reason and "b'x'" in reply.error_reason
    records = [r for r in caplog.records if r.name == "robot_stack.transport.server" and r.levelno >= logging.INFO]
    assert len(records) == 1 and not records[0].exc_info, [r.getMessage() for r in records]
    assert "protocol_error" in records[0].getMessage()
    assert server.stats()["internal_error"] == 0


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"kind": "infer", "timeout_ms": 1e308}, "timeout_ms"),
        ({"kind": "infer", "timeout_ms": 86_400_001.0}, "timeout_ms"),
        ({"t_send_ns": -5}, "t_send_ns"),
        ({"t_send_ns": 2**64 - 1}, "t_send_ns"),
        ({"kind": "infer", "arrays": [{"name": "a", "dtype": "uint8", "shape": [0, 2**64 - 1]}]}, "dimension"),
        ({"meta": {b"k": 1}}, "str keys"),
        ({"timing": {"t": float("nan")}}, "finite"),
    ],
)
def test_out_of_range_header_fields_are_protocol_errors(server: PolicyServer, over: dict[str, Any], match: str) -> None:
    frames = [packed(**over)] + ([b""] if over.get("arrays") else [])
    sock = connect(server.endpoint)
    try:
        reply = ask(sock, frames)
    finally:
        sock.close(0)
    assert (reply.kind, reply.error_code, reply.id) == ("error", "protocol_error", 21), reply.error_reason
    assert match in reply.error_reason
    assert server.stats()["internal_error"] == 0


# ---------------------------------------------------------------------------------------------- item 3


@pytest.mark.parametrize("peer", sorted(SOCKETS))
def test_every_immediate_reply_path_reaches_req_and_dealer_peers(
    server: PolicyServer, handler: Handler, peer: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = connect(server.endpoint, SOCKETS[peer])
    zstd_img = [b"\x28\xb5\x2f\xfd" + bytes(12)]  # (never decoded: refused on its header)
    cases: list[tuple[str, list[Any], str]] = [
        ("health", encode(Message("health", 1)), "reply"),
        ("metadata", encode(Message("metadata", 2)), "reply"),
        ("infer", infer_frames(3), "reply"),
        ("garbage", [b"\xc1 not msgpack"], "protocol_error"),
        ("mixed keys", [msgpack.packb({**head(), b"x": 1, "y": 1})], "protocol_error"),
        ("huge timeout", [packed(kind="infer", timeout_ms=1e308)], "protocol_error"),
        ("version", [packed(v=99)], "version_mismatch"),
        (
            "too large",
            [packed(kind="infer", arrays=[{"name": "a", "dtype": "float64", "shape": [2**20, 2**20]}]), b""],
            "payload_too_large",
        ),
        ("model", [packed(model="other")], "model_mismatch"),
        ("kind", [packed(kind="reply")], "bad_kind"),
        (
            "codec not negotiated",
            [packed(kind="infer", arrays=[{"name": "x", "dtype": "uint8", "shape": [16], "codec": "zstd"}]), *zstd_img],
            "protocol_error",
        ),
        (
            "health with arrays",
            [packed(arrays=[{"name": "x", "dtype": "uint8", "shape": [4]}]), b"\0" * 4],
            "protocol_error",
        ),
        ("policy", infer_frames(4, fail="policy"), "policy_error"),
        ("handler", infer_frames(5, fail="other"), "handler_error"),
    ]
    try:
        for name, frames, want in cases:
            reply = ask(sock, frames)
            got = reply.kind if reply.kind == "reply" else reply.error_code
            assert got == want, (name, reply.error_reason)
        # A server bug on the I/O thread, then one on the worker: both still answer, with the REQ delimiter.
        with monkeypatch.context() as patch:
            patch.setattr(server, "_admit", _raise)
            reply = ask(sock, infer_frames(6))
        assert (reply.error_code, reply.id) == ("internal_error", -1)
        with monkeypatch.context() as patch:
            patch.setattr(server, "_process", _raise)
            reply = ask(sock, infer_frames(7))
        assert (reply.error_code, reply.id) == ("internal_error", 7)
        assert ask(sock, encode(Message("health", 8))).kind == "reply"  # and it keeps serving
    finally:
        sock.close(0)


def _raise(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("injected server bug")


@pytest.mark.parametrize("peer", sorted(SOCKETS))
def test_busy_and_deadline_replies_reach_req_and_dealer_peers(
    server: PolicyServer, handler: Handler, peer: str
) -> None:
    blockers = connect(server.endpoint)
    sock = connect(server.endpoint, SOCKETS[peer])
    other = connect(server.endpoint, SOCKETS[peer])
    try:
        blockers.send_multipart(infer_frames(100, robot="b0", block=True))  # runs, holds the worker
        assert handler.entered.wait(5)
        blockers.send_multipart(infer_frames(101, robot="b1"))  # queued: 1 of max_pending 2
        sock.send_multipart(infer_frames(9, robot="r", timeout_ms=1.0))  # queued: 2 of 2, expires there
        wait_until(lambda: server.stats()["queued"] == 2)
        busy = ask(other, infer_frames(10, robot="r2"))  # a 3rd request: over max_pending
        assert (busy.error_code, busy.id) == ("busy", 10), busy.error_reason
        assert "cap 2" in busy.error_reason
        time.sleep(0.02)  # request 9's 1 ms budget has surely run out before the worker is free again
        handler.gate.set()
        expired = decode(sock.recv_multipart())
        assert (expired.error_code, expired.id) == ("deadline_exceeded", 9)
        assert {decode(blockers.recv_multipart()).id for _ in range(2)} == {100, 101}
    finally:
        for s in (blockers, sock, other):
            s.close(0)
    stats = server.stats()
    assert stats["busy"] == 1 and stats["deadline_exceeded"] == 1


# ---------------------------------------------------------------------------------------------- item 4


def test_per_connection_and_global_caps_answer_busy(handler: Handler) -> None:
    limits = AdmissionLimits(max_pending=4, max_pending_per_connection=2, max_pending_bytes=1 << 20)
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=1 << 16, limits=limits) as srv:
        a, b, c = (connect(srv.endpoint) for _ in range(3))
        try:
            a.send_multipart(infer_frames(1, robot="run", block=True))
            assert handler.entered.wait(5)
            # One connection, a new robot id for each request: only 2 are queued, the rest answered busy at once.
            for rid in range(2, 12):
                a.send_multipart(infer_frames(rid, robot=f"robot{rid}"))
            busy = [decode(a.recv_multipart()) for _ in range(8)]
            assert {m.error_code for m in busy} == {"busy"} and {m.id for m in busy} == set(range(4, 12))
            assert "this connection already has 2" in busy[0].error_reason
            assert srv.stats()["queued"] == 2
            b.send_multipart(infer_frames(20, robot="b1"))
            b.send_multipart(infer_frames(21, robot="b2"))
            wait_until(lambda: srv.stats()["queued"] == 4)
            over = ask(c, infer_frames(30, robot="c"))  # the server holds 4 in all
            assert over.error_code == "busy" and "the server has 4" in over.error_reason
            handler.gate.set()
            answered = {decode(a.recv_multipart()).id for _ in range(3)} | {
                decode(b.recv_multipart()).id for _ in range(2)
            }
            assert answered == {1, 2, 3, 20, 21}
        finally:
            for s in (a, b, c):
                s.close(0)
        assert srv.stats()["queued"] == 0 and srv.stats()["busy"] == 9


def test_queued_bytes_cap_answers_busy_and_client_raises_server_busy_error(handler: Handler) -> None:
    limits = AdmissionLimits(max_pending=8, max_pending_per_connection=8, max_pending_bytes=1000)
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=1000, limits=limits) as srv:
        blocker = PolicyClient(srv.endpoint, "blocker", timeout_s=10)
        sock = connect(srv.endpoint)
        t = threading.Thread(target=lambda: blocker.infer({"x": np.zeros(4, np.float32)}, {"block": True}))
        t.start()
        try:
            assert handler.entered.wait(5)
            sock.send_multipart(encode(Message("infer", 1, robot="a", arrays={"x": np.zeros(600, np.uint8)})))
            wait_until(lambda: srv.stats()["queued_bytes"] == 600)
            with PolicyClient(srv.endpoint, "b", timeout_s=5) as client, pytest.raises(ServerBusyError) as info:
                client.infer({"x": np.zeros(600, np.uint8)})
            assert info.value.code == "busy" and "1200 bytes (cap 1000)" in info.value.reason
            assert isinstance(info.value, ServerError)
        finally:
            handler.gate.set()
            t.join(10)
            blocker.close()
            sock.close(0)


def test_a_connection_over_its_rejection_budget_is_muted_others_are_served(handler: Handler) -> None:
    limits = AdmissionLimits(rejections_per_s=1, rejection_burst=5)
    with PolicyServer(handler, bind=ANY_PORT, limits=limits) as srv:
        flood = connect(srv.endpoint)
        try:
            for i in range(50):
                flood.send_multipart([packed(v=99, id=i)])
            answers = []
            while flood.poll(300):
                answers.append(decode(flood.recv_multipart()))
            assert [m.id for m in answers] == [0, 1, 2, 3, 4]  # the budget: 5 answers, then silence
            assert {m.error_code for m in answers} == {"version_mismatch"}
            wait_until(lambda: srv.stats()["received"] == 50)
            with PolicyClient(srv.endpoint, "good", timeout_s=5) as good:  # another connection: unaffected
                assert good.infer({"x": np.ones(2, np.float32)}).arrays["x"].shape == (2,)
        finally:
            flood.close(0)
        stats = srv.stats()
    assert stats["muted"] == 45 and stats["version_mismatch"] == 5 and stats["infer_ok"] == 1


@pytest.mark.skipif(not HAVE_ZSTD, reason="needs zstandard")
def test_only_negotiated_codecs_are_decoded(handler: Handler, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = protocol_module.decode_array

    def counting(codec: str, *args: Any) -> np.ndarray:
        calls.append(codec)
        return real(codec, *args)

    monkeypatch.setattr(protocol_module, "decode_array", counting)
    zeros = np.zeros((1024, 1024), np.uint8)
    bomb = encode_array("zstd", zeros)  # 1 MiB of zeros in a few dozen bytes
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=4 << 20, model_id="m") as srv:
        sock = connect(srv.endpoint)
        try:
            spec = {"dtype": "uint8", "shape": [1024, 1024], "codec": "zstd"}
            # "x" has no negotiated codec: refused on its header, never decompressed.
            reply = ask(sock, [packed(kind="infer", arrays=[{"name": "x", **spec}]), bomb])
            assert reply.error_code == "protocol_error" and "negotiated codecs: {'img': 'zstd'}" in reply.error_reason
            assert calls == []
            # "img" is negotiated (Handler.compression): decoded off the I/O thread and served.
            reply = ask(sock, [packed(kind="infer", id=22, arrays=[{"name": "img", **spec}]), bomb])
            assert reply.kind == "reply" and reply.arrays["img"].shape == (1024, 1024), reply.error_reason
            assert calls == ["zstd"] and "decode_ms" in reply.timing
            with PolicyClient(srv.endpoint, "r", timeout_s=5) as client:
                assert client.metadata()["compression"] == {"img": "zstd"}
        finally:
            sock.close(0)


def test_declared_shapes_are_checked_against_the_model_before_decoding(
    handler: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(protocol_module, "decode_array", lambda codec, *a: calls.append(codec))

    def check_request(specs: Any) -> None:
        for s in specs:
            if s.shape != (4,):
                raise PolicyError(f"input {s.name!r}: shape {s.shape} but the model needs (4,)")

    handler.check_request = check_request  # type: ignore[attr-defined]
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=64 << 20) as srv:
        sock = connect(srv.endpoint)
        try:
            frames = [
                packed(
                    kind="infer", arrays=[{"name": "img", "dtype": "uint8", "shape": [8000, 8000], "codec": "zstd"}]
                ),
                b"\x28\xb5\x2f\xfd" + bytes(60),
            ]
            reply = ask(sock, frames)
        finally:
            sock.close(0)
    assert reply.error_code == "policy_error" and "needs (4,)" in reply.error_reason
    assert calls == []  # 64 MB declared, nothing decompressed


# ---------------------------------------------------------------------------------------------- item 5


def test_health_and_metadata_carrying_arrays_are_refused_undecoded(
    server: PolicyServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(protocol_module, "decode_array", lambda codec, *a: calls.append(codec))
    sock = connect(server.endpoint)
    try:
        for kind in ("health", "metadata"):
            spec = {"name": "img", "dtype": "uint8", "shape": [800, 800], "codec": "png"}
            reply = ask(sock, [packed(kind=kind, arrays=[spec]), b"\x89PNG\r\n\x1a\n" + bytes(64)])
            assert (reply.kind, reply.error_code) == ("error", "protocol_error")
            assert f"{kind} requests carry no arrays" in reply.error_reason
    finally:
        sock.close(0)
    assert calls == [] and server.stats()["health"] == 0


@pytest.mark.skipif(not HAVE_ZSTD, reason="needs zstandard")
def test_decoding_one_clients_stream_does_not_stall_another_client(
    handler: Handler, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoding = threading.Event()
    release = threading.Event()
    real = protocol_module.decode_array

    def slow(codec: str, *args: Any) -> np.ndarray:  # a decode that takes as long as the test wants
        decoding.set()
        assert release.wait(10)
        return real(codec, *args)

    monkeypatch.setattr(protocol_module, "decode_array", slow)
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=4 << 20) as srv:
        heavy = connect(srv.endpoint)
        try:
            img = np.zeros((512, 512), np.uint8)
            heavy.send_multipart(
                encode(Message("infer", 1, robot="heavy", arrays={"img": img}), codecs={"img": "zstd"})
            )
            assert decoding.wait(5)
            with PolicyClient(srv.endpoint, "light", timeout_s=2) as light:
                assert light.health()["status"] == "ok"  # answered while the other stream is being decoded
                reply = light.infer({"x": np.ones(3, np.float32)})  # raw request: served by the worker meanwhile
                assert reply.arrays["x"].shape == (3,)
            release.set()
            answer = decode(heavy.recv_multipart())
            assert answer.kind == "reply" and answer.arrays["img"].shape == (512, 512)
        finally:
            release.set()
            heavy.close(0)


def test_fair_queue_serves_connections_round_robin() -> None:
    q: FairQueue[str] = FairQueue()
    for i in range(3):
        q.push(b"flood", f"f{i}")
    q.push(b"victim", "v0")
    q.push(b"flood", "f3")
    assert [q.pop() for _ in range(5)] == ["f0", "v0", "f1", "f2", "f3"]
    q.close()
    assert q.pop() is None


# ---------------------------------------------------------------------------------------------- item 6


def test_two_connections_sharing_a_robot_id_never_supersede_each_other(handler: Handler) -> None:
    with PolicyServer(handler, bind=ANY_PORT) as srv:
        a, b, c = (connect(srv.endpoint) for _ in range(3))
        try:
            c.send_multipart(infer_frames(1, robot="other", block=True))
            assert handler.entered.wait(5)
            a.send_multipart(infer_frames(2, robot="arm", tag="a"))
            wait_until(lambda: srv.stats()["queued"] == 1)
            b.send_multipart(infer_frames(3, robot="arm", tag="b"))  # same robot id, another client: queued too
            wait_until(lambda: srv.stats()["queued"] == 2)
            a.send_multipart(infer_frames(4, robot="arm", tag="a2"))  # same client and robot: latest wins
            first = decode(a.recv_multipart())
            assert (first.id, first.error_code) == (2, "superseded")
            handler.gate.set()
            assert decode(b.recv_multipart()).kind == "reply"
            last = decode(a.recv_multipart())
            assert (last.id, last.kind) == (4, "reply")
        finally:
            for s in (a, b, c):
                s.close(0)
        assert srv.stats()["superseded"] == 1
    assert sorted(tag for tag, _ in handler.seen) == ["", "a2", "b"]


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
@pytest.mark.parametrize("peer", sorted(SOCKETS))
def test_curve_keys_are_bound_to_their_robot_ids(handler: Handler, peer: str) -> None:
    from robot_stack.transport.admission import ClientGrant

    server_pub, server_sec = zmq.curve_keypair()
    bound_pub, bound_sec = zmq.curve_keypair()
    free_pub, free_sec = zmq.curve_keypair()
    grants = {bound_pub: ClientGrant.of("bound", ["arm-a"]), free_pub: "free"}

    def curve_socket(endpoint: str, pub: bytes, sec: bytes, kind: int = zmq.DEALER) -> zmq.Socket:
        sock = zmq.Context.instance().socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, 3000)
        sock.curve_serverkey, sock.curve_publickey, sock.curve_secretkey = server_pub, pub, sec
        sock.connect(endpoint)
        return sock

    with PolicyServer(handler, bind=ANY_PORT, curve_secret_key=server_sec, authorized_client_keys=grants) as srv:
        bound = curve_socket(srv.endpoint, bound_pub, bound_sec, SOCKETS[peer])
        bound2 = curve_socket(srv.endpoint, bound_pub, bound_sec)  # the same key on a second connection
        free = curve_socket(srv.endpoint, free_pub, free_sec)
        try:
            forbidden = ask(bound, infer_frames(1, robot="arm-b"))
            assert forbidden.error_code == "robot_forbidden" and "'bound'" in forbidden.error_reason
            assert "arm-a" in forbidden.error_reason
            assert ask(bound, infer_frames(2, robot="arm-a")).kind == "reply"
            assert ask(free, infer_frames(3, robot="arm-b")).kind == "reply"  # no sidecar: any id
            # Queue behind a blocked request: the free key using "arm-a" never supersedes the bound key's "arm-a",
            # while the bound key's own second connection does (one key = one client).
            free.send_multipart(infer_frames(10, robot="run", block=True))
            assert handler.entered.wait(5)
            bound.send_multipart(infer_frames(11, robot="arm-a"))
            free.send_multipart(infer_frames(12, robot="arm-a"))
            wait_until(lambda: srv.stats()["queued"] == 2)
            bound2.send_multipart(infer_frames(13, robot="arm-a"))
            superseded = decode(bound.recv_multipart())
            assert (superseded.id, superseded.error_code) == (11, "superseded")
            handler.gate.set()
            assert {decode(free.recv_multipart()).id for _ in range(2)} == {10, 12}
            assert decode(bound2.recv_multipart()).id == 13
        finally:
            handler.gate.set()
            for s in (bound, bound2, free):
                s.close(0)
        stats = srv.stats()
    assert stats["robot_forbidden"] == 1 and stats["superseded"] == 1


def wait_until(cond: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``cond`` (a bound on how long the test may hang, not a timing assertion)."""
    t_end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < t_end, "condition not reached"
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------ bench smoke


def test_bench_hostile_quick_runs_a_real_server_through_every_flood() -> None:
    """``robot-stack bench hostile --quick``: the figures exist and the limits hold (no timing thresholds)."""
    proc = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "bench", "hostile", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    zstd, valid, health = figures["zstd_flood"], figures["valid_flood"], figures["health_png"]
    assert zstd["sent"] == 1000 and "reply" not in zstd["answers"]  # never served, never decoded
    assert zstd["answers"].get("protocol_error", 0) > 0
    assert valid["answers"]["busy"] > 0 and valid["answers"].get("reply", 0) <= valid["sent"] - valid["answers"]["busy"]
    assert health["answers"] == {"protocol_error": 5}
    for case in (zstd, valid, health):
        assert case["rss_growth_mb"] <= 64, case
        assert case["victim_failed"] == [0, 0, 0] and case["server_log_lines"] <= 15, case
    assert figures["victim_errors"] == {} and "server_died" not in figures


def test_pending_queue_releases_the_frames_of_superseded_and_expired_requests() -> None:
    from robot_stack.transport.admission import PendingQueue, QueuedRequest
    from robot_stack.transport.protocol import decode_header

    now = [1_000]
    queue = PendingQueue(AdmissionLimits(), clock=lambda: now[0])

    def item(rid: int, deadline: int | None) -> QueuedRequest:
        frames = infer_frames(rid, robot="arm")
        return QueuedRequest([b"id"], decode_header(frames), list(frames), 0, deadline, "c", b"id")

    old, new = item(1, None), item(2, 500)
    queue.admit(old)
    assert queue.admit(new) is old and old.frames == [] and len(new.frames) == 2
    assert queue.take(1) == ([], [new]) and new.frames == []  # deadline 500 < now: expired, released
    assert len(queue) == 0 and queue.queued_bytes == 0


@pytest.mark.skipif(not memory.trim_heap(), reason="not glibc: no malloc_trim")
def test_heap_is_trimmed_after_a_burst_but_not_in_steady_state(handler: Handler) -> None:
    limits = AdmissionLimits(max_pending=8, max_pending_per_connection=8)
    big = {"x": np.zeros(5 << 20, np.uint8)}  # 5 MiB raw
    with PolicyServer(handler, bind=ANY_PORT, max_message_bytes=8 << 20, limits=limits) as srv:
        with PolicyClient(srv.endpoint, "steady", timeout_s=5, max_message_bytes=8 << 20) as client:
            for _ in range(12):  # 60 MiB, one request at a time: buffers are reused, nothing to trim
                client.infer(big)
        time.sleep(0.3)  # (the I/O loop checks every 100 ms at least)
        assert srv.stats()["heap_trims"] == 0
        sock = connect(srv.endpoint)
        try:
            sock.send_multipart(infer_frames(1, robot="run", block=True))
            assert handler.entered.wait(5)
            for rid in range(2, 6):  # 4 x 5 MiB queued at once: a burst
                sock.send_multipart(encode(Message("infer", rid, robot=f"r{rid}", arrays=big)))
            wait_until(lambda: srv.stats()["queued"] == 4)
            handler.gate.set()
            assert {decode(sock.recv_multipart()).id for _ in range(5)} == {1, 2, 3, 4, 5}
            wait_until(lambda: srv.stats()["heap_trims"] == 1)
        finally:
            sock.close(0)


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_a_curve_server_restarts_at_once_and_a_second_one_on_its_context_is_refused(handler: Handler) -> None:
    """ZeroMQ has one ZAP handler per context: a server restarted right after a close gets it (the bind waits while
    libzmq releases the old one); a second CURVE server on a context whose handler is held gets a clear ConfigError,
    and one on its own context runs beside it."""
    from robot_stack.errors import ConfigError

    _, server_sec = zmq.curve_keypair()
    for _ in range(5):  # close and start again at once, on the shared context
        with PolicyServer(handler, bind=ANY_PORT, curve_secret_key=server_sec):
            pass
    with PolicyServer(handler, bind=ANY_PORT, curve_secret_key=server_sec) as first:
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match="ZAP"):
            PolicyServer(handler, bind=ANY_PORT, curve_secret_key=server_sec)
        assert time.monotonic() - t0 >= 1.5  # it waited for a release before giving up
        own = zmq.Context()
        try:
            with PolicyServer(handler, bind=ANY_PORT, curve_secret_key=server_sec, context=own) as second:
                assert second.endpoint != first.endpoint
        finally:
            own.term()
