"""Wire format: round trips and every kind of bad input must give a clear typed error."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robot_stack.errors import PayloadTooLargeError, ProtocolError, VersionMismatchError
from robot_stack.transport.protocol import (
    ALLOWED_DTYPES,
    PROTOCOL_VERSION,
    Message,
    decode,
    encode,
    salvage_request_id,
)


def _header(**over: object) -> dict:
    h = {
        "v": PROTOCOL_VERSION,
        "kind": "infer",
        "id": 7,
        "robot": "r",
        "model": "",
        "t_send_ns": 1,
        "timeout_ms": 100.0,
        "arrays": [],
        "meta": {},
    }
    h.update(over)
    return h


def _frames(header: dict, *payloads: bytes) -> list[bytes]:
    return [msgpack.packb(header, use_bin_type=True), *payloads]


array_strategy = st.sampled_from(sorted(ALLOWED_DTYPES)).flatmap(
    lambda name: hnp.arrays(
        dtype=np.dtype(name),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    )
)


@settings(max_examples=150, deadline=None)
@given(
    arrays=st.dictionaries(st.text(min_size=1, max_size=12), array_strategy, max_size=4),
    meta=st.dictionaries(
        st.text(max_size=8), st.one_of(st.integers(-(2**62), 2**62), st.text(max_size=8), st.booleans(), st.none())
    ),
    request_id=st.integers(-1, 2**63 - 1),
)
def test_round_trip_preserves_arrays_and_meta(arrays: dict, meta: dict, request_id: int) -> None:
    msg = Message(
        kind="infer", id=request_id, robot="arm", model="m", t_send_ns=5, timeout_ms=2.5, arrays=arrays, meta=meta
    )
    frames = encode(msg)
    # What travels is bytes: copy each frame as the socket would.
    out = decode([bytes(f) for f in frames])
    assert (out.kind, out.id, out.robot, out.model, out.t_send_ns, out.timeout_ms) == (
        "infer",
        request_id,
        "arm",
        "m",
        5,
        2.5,
    )
    assert out.meta == meta
    assert list(out.arrays) == list(arrays)
    for name, want in arrays.items():
        got = out.arrays[name]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
        assert not got.flags.writeable


def test_non_contiguous_and_big_endian_are_normalised() -> None:
    base = np.arange(24, dtype=">f4").reshape(4, 6)
    view = base[:, ::2]  # non-contiguous, big-endian
    out = decode([bytes(f) for f in encode(Message("infer", 1, arrays={"x": view}))])
    assert out.arrays["x"].dtype == np.dtype("<f4")
    np.testing.assert_array_equal(out.arrays["x"], view.astype("<f4"))


def test_contiguous_arrays_are_sent_without_copy() -> None:
    a = np.arange(100_000, dtype=np.float32)
    frames = encode(Message("infer", 1, arrays={"a": a}))
    assert isinstance(frames[1], memoryview)
    assert np.shares_memory(np.frombuffer(frames[1], dtype=np.float32), a)


def test_decoded_arrays_are_zero_copy_views_of_frames() -> None:
    payload = np.arange(12, dtype=np.float32).tobytes()
    buf = bytearray(payload)
    out = decode([msgpack.packb(_header(arrays=[{"name": "x", "dtype": "float32", "shape": [3, 4]}])), buf])
    assert np.shares_memory(out.arrays["x"], np.frombuffer(buf, dtype=np.uint8))
    assert not out.arrays["x"].flags.writeable


@pytest.mark.parametrize(
    "dtype", [np.complex64, np.int8, np.uint32, np.float128 if hasattr(np, "float128") else np.int16, object]
)
def test_encode_rejects_dtypes_outside_whitelist(dtype: type) -> None:
    with pytest.raises(ProtocolError, match="not allowed"):
        encode(Message("infer", 1, arrays={"x": np.zeros(3, dtype=dtype)}))


def test_encode_rejects_oversized_payload_before_sending() -> None:
    with pytest.raises(PayloadTooLargeError, match="cap"):
        encode(Message("infer", 1, arrays={"x": np.zeros(1000, np.uint8)}), max_message_bytes=999)


def test_encode_rejects_unpackable_meta() -> None:
    with pytest.raises(ProtocolError, match="meta"):
        encode(Message("infer", 1, meta={"x": object()}))


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        ([b"\xc1\xff garbage"], ProtocolError, "not valid msgpack"),
        ([msgpack.packb([1, 2, 3])], ProtocolError, "must be a msgpack map"),
        ([msgpack.packb({1: 2})], ProtocolError, "not valid msgpack"),  # strict_map_key
        ([msgpack.packb(_header(v=PROTOCOL_VERSION + 1))], VersionMismatchError, "protocol version"),
        ([msgpack.packb({"kind": "infer"})], VersionMismatchError, "protocol version"),
        ([msgpack.packb(_header(kind="shell"))], ProtocolError, "unknown message kind"),
        ([msgpack.packb(_header(id="7"))], ProtocolError, "'id'"),
        ([msgpack.packb(_header(timeout_ms=float("nan")))], ProtocolError, "timeout_ms"),
        ([msgpack.packb(_header(evil=1))], ProtocolError, "unknown field"),
        ([msgpack.packb({k: v for k, v in _header().items() if k != "meta"})], ProtocolError, "lacks required"),
        ([msgpack.packb(_header(meta=[1]))], ProtocolError, "'meta' must be a map"),
        (
            [msgpack.packb(_header(arrays=[{"name": "x", "dtype": "complex64", "shape": [2]}])), b"\0" * 16],
            ProtocolError,
            "not allowed",
        ),
        (
            [msgpack.packb(_header(arrays=[{"name": "x", "dtype": "float32", "shape": [3]}])), b"\0" * 8],
            ProtocolError,
            "frame has 8 bytes",
        ),
        (
            [
                msgpack.packb(
                    _header(
                        arrays=[
                            {"name": "x", "dtype": "float32", "shape": [2]},
                            {"name": "y", "dtype": "uint8", "shape": [1]},
                        ]
                    )
                ),
                b"\0" * 8,
            ],
            ProtocolError,
            "truncated",
        ),
        ([msgpack.packb(_header()), b"extra"], ProtocolError, "extra frames"),
        (
            [msgpack.packb(_header(arrays=[{"name": "x", "dtype": "float32", "shape": [-1]}])), b""],
            ProtocolError,
            "non-negative",
        ),
        (
            [
                msgpack.packb(
                    _header(
                        arrays=[
                            {"name": "x", "dtype": "float32", "shape": [1, 1]},
                            {"name": "x", "dtype": "float32", "shape": [1]},
                        ]
                    )
                ),
                b"\0" * 4,
                b"\0" * 4,
            ],
            ProtocolError,
            "declared twice",
        ),
        (
            [msgpack.packb(_header(arrays=[{"name": "b", "dtype": "bool", "shape": [2]}])), b"\x01\x07"],
            ProtocolError,
            "bool",
        ),
        ([msgpack.packb(_header(meta=msgpack.ExtType(1, b"x")))], ProtocolError, "extension"),
        ([], ProtocolError, "empty message"),
    ],
)
def test_bad_messages_raise_typed_errors(frames: list[bytes], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        decode(frames)


def test_huge_declared_shape_is_rejected_without_allocating() -> None:
    # 2**40 * 2**40 * 8 bytes would be 8 YiB; the check happens on Python ints before any buffer is touched.
    header = _header(arrays=[{"name": "x", "dtype": "float64", "shape": [2**40, 2**40]}])
    with pytest.raises(PayloadTooLargeError, match="cap"):
        decode([msgpack.packb(header), b""])


def test_total_declared_bytes_are_capped() -> None:
    specs = [{"name": f"a{i}", "dtype": "uint8", "shape": [600]} for i in range(2)]
    frames = [msgpack.packb(_header(arrays=specs)), b"\0" * 600, b"\0" * 600]
    with pytest.raises(PayloadTooLargeError):
        decode(frames, max_message_bytes=1000)
    assert decode(frames, max_message_bytes=1200).arrays["a1"].shape == (600,)


def test_oversized_header_is_rejected() -> None:
    with pytest.raises(PayloadTooLargeError, match="header"):
        decode([msgpack.packb(_header(meta={"blob": "x" * 5000}))], max_header_bytes=1000)


def test_deeply_nested_header_is_a_protocol_error() -> None:
    nested = b"\x91" * 100_000 + b"\xc0"  # [[[[...None...]]]] 100k levels deep, hand-packed
    with pytest.raises(ProtocolError, match="not valid msgpack"):
        decode([nested])


def test_salvage_request_id() -> None:
    assert salvage_request_id(msgpack.packb(_header(v=99, id=41))) == 41
    assert salvage_request_id(b"\xc1garbage") == -1
    assert salvage_request_id(msgpack.packb({"id": "x"})) == -1
