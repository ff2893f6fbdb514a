"""Per-stream compression: codec round trips, protocol v2 codec frames, bounded decoding, negotiation."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robot_stack.errors import ConfigError, ProtocolError
from robot_stack.policy import OnnxPolicy, PolicyManifest
from robot_stack.policy.service import PolicyService
from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict
from robot_stack.transport import Message, PolicyClient, PolicyServer, decode, encode
from robot_stack.transport.codecs import available_codecs, check_codec, decode_array, encode_array

HAVE = set(available_codecs())
LOSSLESS_HERE = sorted({"png", "zstd", "lz4"} & HAVE)
needs = pytest.mark.skipif


def _roundtrip(codec: str, array: np.ndarray) -> np.ndarray:
    return decode_array(codec, encode_array(codec, array), array.dtype, array.shape)


@needs("png" not in HAVE, reason="Pillow missing")
@settings(max_examples=40, deadline=None)
@given(
    st.one_of(
        arrays(
            np.uint8, st.tuples(st.integers(1, 3), st.integers(1, 9), st.integers(1, 9), st.sampled_from([1, 3, 4]))
        ),
        arrays(np.uint8, st.tuples(st.integers(1, 9), st.integers(1, 9))),
        arrays(np.uint16, st.tuples(st.integers(1, 2), st.integers(1, 9), st.integers(1, 9))),
    )
)
def test_png_round_trip_is_exact(array: np.ndarray) -> None:
    out = _roundtrip("png", array)
    assert out.dtype == array.dtype and out.shape == array.shape
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("codec", sorted({"zstd", "lz4"} & HAVE))
@settings(max_examples=30, deadline=None)
@given(
    array=arrays(
        st.sampled_from([np.uint8, np.uint16, np.float32, np.int64, np.float64]),
        st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple),
    )
)
def test_byte_codecs_round_trip_exactly(codec: str, array: np.ndarray) -> None:
    out = _roundtrip(codec, array)
    assert out.shape == array.shape
    np.testing.assert_array_equal(out.reshape(-1).view(np.uint8), array.reshape(-1).view(np.uint8))  # bit-exact


@needs("jpeg" not in HAVE, reason="Pillow missing")
def test_jpeg_is_lossy_but_close_on_a_smooth_image() -> None:
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)
    out = _roundtrip("jpeg", img)
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 3.0


def test_codec_compatibility_is_checked() -> None:
    with pytest.raises(ProtocolError, match="unknown codec"):
        check_codec("gif", "uint8", (4, 4))
    with pytest.raises(ProtocolError, match="cannot carry a float32"):
        check_codec("png", "float32", (4, 4))
    with pytest.raises(ProtocolError, match="cannot carry a uint16"):
        check_codec("jpeg", "uint16", (4, 4))
    check_codec("png", "uint8", (-1, 480, 640, 3))
    check_codec("zstd", "float64", (3,))


@pytest.mark.parametrize("codec", LOSSLESS_HERE)
def test_protocol_v2_carries_compressed_frames(codec: str) -> None:
    depth = (np.arange(480 * 64, dtype=np.uint16) % 4000).reshape(480, 64)
    rgb = np.zeros((1, 48, 64, 3), np.uint8)
    rgb[:, 10:20, 5:30] = (255, 128, 3)
    codecs = {"depth": codec} | ({"rgb": "png"} if "png" in HAVE else {})
    frames = encode(Message("infer", 7, arrays={"depth": depth, "rgb": rgb, "state": np.ones(3)}), codecs=codecs)
    header = msgpack.unpackb(frames[0])
    assert [a.get("codec", "") for a in header["arrays"]] == [codec, codecs.get("rgb", ""), ""]
    assert len(frames[1]) < depth.nbytes  # it did compress
    msg = decode([bytes(f) for f in frames])
    np.testing.assert_array_equal(msg.arrays["depth"], depth)
    np.testing.assert_array_equal(msg.arrays["rgb"], rgb)
    assert not msg.arrays["depth"].flags.writeable


@pytest.mark.parametrize("codec", LOSSLESS_HERE)
def test_compressed_frame_that_does_not_match_its_declaration_is_rejected(codec: str) -> None:
    small = np.arange(12, dtype=np.uint16).reshape(3, 4)
    frames = encode(Message("infer", 1, arrays={"d": small}), codecs={"d": codec})
    header = msgpack.unpackb(frames[0])
    header["arrays"][0]["shape"] = [30, 40]  # declares more than the stream holds
    with pytest.raises(ProtocolError):
        decode([msgpack.packb(header), bytes(frames[1])])
    header["arrays"][0]["shape"] = [3, 4]
    with pytest.raises(ProtocolError):
        decode([msgpack.packb(header), b"\x00garbage" * 3])


@pytest.mark.parametrize("codec", sorted({"zstd", "lz4"} & HAVE))
def test_decompression_bomb_is_bounded_by_the_declared_size(codec: str) -> None:
    bomb = encode_array(codec, np.zeros(8 << 20, np.uint8))  # 8 MiB of zeros: a tiny frame
    assert len(bomb) < 1 << 20
    with pytest.raises(ProtocolError):
        decode_array(codec, bomb, np.dtype(np.uint8), (16,))


def test_v1_peers_cannot_use_codecs_and_v1_is_still_understood() -> None:
    with pytest.raises(ProtocolError, match="version 2"):
        encode(Message("infer", 1, arrays={"x": np.ones((4, 4), np.uint8)}, version=1), codecs={"x": "zstd"})
    frames = encode(Message("infer", 1, arrays={"x": np.ones(2, np.float32)}, version=1))
    assert decode(frames).version == 1
    header = msgpack.unpackb(frames[0])
    header["arrays"][0]["codec"] = "zstd"
    with pytest.raises(ProtocolError, match="exactly the keys name, dtype, shape"):
        decode([msgpack.packb(header), bytes(frames[1])])


@needs(not {"png", "zstd"} <= HAVE, reason="needs png and zstd")
def test_client_adopts_the_manifest_compression_and_results_are_exact(tmp_path: Path) -> None:
    model = build_toy_model(
        tmp_path / "m.onnx", [("rgb", "uint8", (6, 8, 3)), ("depth", "uint16", (6, 8))], ("actions", (2, 3))
    )
    data = toy_manifest_dict(model, "m", compression={"rgb": "png", "depth": "zstd"})
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(data))
    service = PolicyService(OnnxPolicy(PolicyManifest.load(tmp_path / "m.yaml"), "cpu"))
    rng = np.random.default_rng(0)
    obs = {
        "rgb": rng.integers(0, 256, (1, 6, 8, 3), dtype=np.uint8),
        "depth": rng.integers(0, 4000, (1, 6, 8), dtype=np.uint16),
    }
    with PolicyServer(service, bind="tcp://127.0.0.1:*") as srv, PolicyClient(srv.endpoint, "r", timeout_s=5) as c:
        raw = c.infer(obs).arrays["actions"]
        assert c.negotiate_compression() == {"rgb": "png", "depth": "zstd"}
        compressed = c.infer(obs).arrays["actions"]
    np.testing.assert_array_equal(compressed, raw)  # lossless: the model saw identical inputs
    np.testing.assert_allclose(raw, model.reference(obs), rtol=1e-4, atol=1e-4)


def test_manifest_compression_is_validated(tmp_path: Path) -> None:
    model = build_toy_model(tmp_path / "m.onnx", [("state", "float32", (3,))], ("actions", (2,)))
    with pytest.raises(ConfigError, match="cannot carry a float32"):
        PolicyManifest.from_dict(toy_manifest_dict(model, "m", compression={"state": "png"}), tmp_path)
    with pytest.raises(ConfigError, match="not a request input"):
        PolicyManifest.from_dict(toy_manifest_dict(model, "m", compression={"rgb": "png"}), tmp_path)
