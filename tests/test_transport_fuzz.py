"""Property-based fuzzing of a live loopback server: random and mutated multipart messages never crash it, each
gets exactly one well-formed answer, and a good client keeps being served correctly."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from conftest import wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robot_stack.transport import PROTOCOL_VERSION, PolicyClient, PolicyServer, decode
from robot_stack.transport.protocol import ALLOWED_DTYPES

CAP = 1 << 16  # small caps so that "huge" declarations are cheap to produce


def echo(arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> tuple[dict, dict]:
    return {k: np.array(v) for k, v in arrays.items()}, {}


@pytest.fixture(scope="module")
def server() -> Iterator[PolicyServer]:
    with PolicyServer(echo, bind="tcp://127.0.0.1:*", max_message_bytes=CAP, max_header_bytes=CAP) as srv:
        yield srv


@pytest.fixture(scope="module")
def rogue(server: PolicyServer) -> Iterator[zmq.Socket]:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    sock.connect(server.endpoint)
    yield sock
    sock.close(0)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)
dims = st.lists(st.one_of(st.integers(0, 6), st.integers(-3, 2**40), st.text(max_size=2)), max_size=4)
specs = st.fixed_dictionaries(
    {
        "name": st.one_of(st.sampled_from(["a", "b", "rgb"]), st.text(max_size=5), st.integers()),
        "dtype": st.one_of(st.sampled_from(sorted(ALLOWED_DTYPES)), st.sampled_from(["complex64", "object", "V8"])),
        "shape": dims,
    },
    optional={"codec": st.sampled_from(["png", "jpeg", "zstd", "lz4", "gif", ""])},
)
headers = st.fixed_dictionaries(
    {
        "v": st.one_of(st.just(PROTOCOL_VERSION), st.just(1), st.integers(-2, 5), st.text(max_size=2)),
        "kind": st.one_of(st.sampled_from(["infer", "health", "metadata", "reply", "error"]), st.text(max_size=6)),
        "id": st.one_of(st.integers(-(2**65), 2**65), st.none()),
        "robot": st.one_of(st.sampled_from(["r1", "r2"]), st.text(max_size=300)),
        "model": st.one_of(st.just(""), st.text(max_size=4)),
        "t_send_ns": st.one_of(st.integers(0, 2**62), st.floats()),
        "timeout_ms": st.one_of(st.floats(allow_nan=True), st.integers(-5, 5000)),
        "arrays": st.one_of(st.lists(specs, max_size=3), values),
        "meta": st.one_of(st.dictionaries(st.text(max_size=5), values, max_size=3), values),
    },
    optional={"timing": values, "extra": values},
)


def _pack(header: dict[str, Any]) -> bytes:
    """msgpack of the header; integers beyond 64 bits cannot be packed and become a (bad) msgpack string."""
    try:
        return msgpack.packb(header, use_bin_type=True)
    except (OverflowError, ValueError, TypeError) as exc:
        return msgpack.packb(f"unpackable header: {exc}")


@st.composite
def near_valid(draw: st.DrawFn) -> list[bytes]:
    """A well-formed infer request (small arrays, right frame lengths, maybe a codec over random bytes, maybe a
    huge declared shape) with at most one field replaced by a random value."""
    arrays, frames = [], []
    for i in range(draw(st.integers(0, 3))):
        dtype = draw(st.sampled_from(sorted(ALLOWED_DTYPES)))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        if draw(st.integers(0, 9)) == 0:
            shape = [2**20, 2**20]
        nbytes = int(np.prod(shape)) * ALLOWED_DTYPES[dtype].itemsize
        spec: dict[str, Any] = {"name": f"a{i}", "dtype": dtype, "shape": shape}
        if draw(st.integers(0, 3)) == 0:
            spec["codec"] = draw(st.sampled_from(["png", "jpeg", "zstd", "lz4"]))
            frames.append(draw(st.binary(max_size=64)))
        else:
            frames.append(bytes(max(0, min(nbytes, 4096) + draw(st.sampled_from([0, 0, 0, 1, -1])))))
        arrays.append(spec)
    header: dict[str, Any] = {
        "v": PROTOCOL_VERSION,
        "kind": "infer",
        "id": draw(st.integers(0, 2**40)),
        "robot": "r1",
        "model": "",
        "t_send_ns": 0,
        "timeout_ms": 0.0,
        "arrays": arrays,
        "meta": {},
    }
    if draw(st.booleans()):
        header[draw(st.sampled_from(sorted(header)))] = draw(values)
    return [_pack(header), *frames]


@st.composite
def messages(draw: st.DrawFn) -> list[bytes]:
    """Garbage bytes, a near-valid request, or a random msgpack header plus random frames (too few, too many,
    wrong lengths)."""
    choice = draw(st.integers(0, 2))
    if choice == 0:
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
    if choice == 1:
        return draw(near_valid())
    header = draw(headers)
    if draw(st.booleans()):
        header.pop(draw(st.sampled_from(sorted(header))))
    head = _pack(header)
    n = len(header["arrays"]) if isinstance(header.get("arrays"), list) else 0
    frames = draw(st.lists(st.binary(max_size=96), min_size=max(0, n - 1), max_size=n + 1))
    return [head, *frames]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frames=messages())
def test_garbage_never_crashes_the_server(server: PolicyServer, rogue: zmq.Socket, frames: list[bytes]) -> None:
    rogue.send_multipart(frames)
    raw = rogue.recv_multipart()
    if frames[0] == b"":  # an empty first frame reads as a REQ delimiter, and is echoed as one
        assert raw[0] == b""
        raw = raw[1:]
    reply = decode(raw)  # exactly one answer, itself a valid protocol message
    assert reply.kind in ("reply", "error")
    if reply.kind == "error":
        assert reply.error_code and reply.error_reason


def test_server_still_serves_a_good_client_after_fuzzing(server: PolicyServer) -> None:
    # Runs after the fuzz test (file order): the server thread is alive and answers correctly.
    with PolicyClient(server.endpoint, "good", timeout_s=5, max_message_bytes=CAP) as client:
        x = np.arange(6, dtype=np.float32).reshape(2, 3)
        np.testing.assert_array_equal(client.infer({"x": x}).arrays["x"], x)
        assert client.health()["status"] == "ok"
    # the I/O thread counts a reply just after sending it: let it catch up
    wait_until(lambda: server.stats()["replied"] == server.stats()["received"], timeout_s=5, poll_s=0.005)
    stats = server.stats()
    assert stats["internal_error"] == 0
    assert stats["replied"] == stats["received"] > 0  # one answer per message, nothing left behind
