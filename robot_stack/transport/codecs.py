"""Per-stream array compression for the wire protocol (protocol v2 ``codec`` field of an array spec).

A codec turns one array into bytes and back. The array's dtype and shape travel in the header, so the decoder
knows the exact decoded size *before* decompressing: every decoder is bounded by it (no decompression bombs) and
the result must match the declared dtype and shape exactly, otherwise :class:`ProtocolError`.

=========  =========  ==================================================================  ====================
codec      lossless   arrays                                                              needs
=========  =========  ==================================================================  ====================
``png``    yes        uint8 / uint16, shape ``(..., H, W)`` (grey) or ``(..., H, W, C)``  Pillow
                      with C in 1, 3, 4 (uint16: grey only). Leading dims are stacked
                      vertically into one image.
``jpeg``   **no**     uint8, ``(..., H, W)`` or ``(..., H, W, 3)``; quality 90            Pillow
``zstd``   yes        any dtype, any shape (level 1)                                      ``zstandard``
``lz4``    yes        any dtype, any shape (block format, size from the header)           ``lz4``
=========  =========  ==================================================================  ====================

Which streams use which codec is declared in the model manifest (``compression: {front/rgb: png}``); the server
advertises it in its ``metadata`` reply and ``PolicyClient.negotiate_compression()`` adopts the codecs both sides
have (see ``docs/protocol.md``).
"""

from __future__ import annotations

import importlib.util
import io
import math
from dataclasses import dataclass

import numpy as np

from robot_stack.errors import ProtocolError

__all__ = ["CODECS", "LOSSLESS", "available_codecs", "check_codec", "decode_array", "encode_array"]

#: Every codec name the protocol knows (whether or not this machine can run it).
CODECS = ("png", "jpeg", "zstd", "lz4")
#: Codecs whose round trip is bit-exact.
LOSSLESS = frozenset({"png", "zstd", "lz4"})
#: JPEG quality used by the ``jpeg`` codec.
JPEG_QUALITY = 90
_MODULES = {"png": "PIL", "jpeg": "PIL", "zstd": "zstandard", "lz4": "lz4"}


def available_codecs() -> tuple[str, ...]:
    """Codecs whose Python package is importable here, in :data:`CODECS` order."""
    return tuple(c for c in CODECS if importlib.util.find_spec(_MODULES[c]) is not None)


@dataclass(frozen=True)
class _ImageLayout:
    """How an array maps onto one 2-D image: (rows, cols, channels, Pillow mode)."""

    rows: int
    cols: int
    channels: int
    mode: str


def _image_layout(codec: str, dtype: np.dtype, shape: tuple[int, ...]) -> _ImageLayout:
    """Raise ProtocolError unless ``codec`` (png/jpeg) can carry this dtype/shape; return the image layout."""
    name = np.dtype(dtype).name
    gray_modes = {"uint8": "L", "uint16": "I;16"} if codec == "png" else {"uint8": "L"}
    colour_modes = {1: "L", 3: "RGB", 4: "RGBA"} if codec == "png" else {3: "RGB"}
    if len(shape) >= 3 and name == "uint8" and shape[-1] in colour_modes:
        rows, cols, channels, mode = math.prod(shape[:-2]), shape[-2], shape[-1], colour_modes[shape[-1]]
    elif len(shape) >= 2 and name in gray_modes:
        rows, cols, channels, mode = math.prod(shape[:-1]), shape[-1], 1, gray_modes[name]
    else:
        raise ProtocolError(
            f"codec {codec!r} cannot carry a {name} array of shape {list(shape)}; it takes "
            + (
                "uint8 (..., H, W[, 1|3|4]) or uint16 (..., H, W)"
                if codec == "png"
                else "uint8 (..., H, W) or (..., H, W, 3)"
            )
            + "; use zstd/lz4 (lossless, any dtype) or send it raw"
        )
    if rows == 0 or cols == 0 or rows > 65_500 or cols > 65_500:
        raise ProtocolError(f"codec {codec!r}: image of {rows}x{cols} pixels is outside 1..65500 per side")
    return _ImageLayout(rows, cols, channels, mode)


def check_codec(codec: str, dtype: str | np.dtype, shape: tuple[int, ...]) -> None:
    """Raise :class:`ProtocolError` unless ``codec`` is known and can carry arrays of this dtype and shape.

    ``shape`` may contain -1 (dynamic) dims; they are checked as 1. Availability on this machine is not checked
    (see :func:`available_codecs`).
    """
    if codec not in CODECS:
        raise ProtocolError(f"unknown codec {codec!r:.40}; known codecs: {', '.join(CODECS)}")
    if codec in ("png", "jpeg"):
        _image_layout(codec, np.dtype(dtype), tuple(1 if d == -1 else d for d in shape))


def _require(codec: str) -> None:
    if codec not in CODECS:
        raise ProtocolError(f"unknown codec {codec!r:.40}; known codecs: {', '.join(CODECS)}")
    if codec not in available_codecs():
        raise ProtocolError(
            f"codec {codec!r} is not available on this machine (Python package {_MODULES[codec]!r} missing); "
            f"install it or send the stream uncompressed"
        )


def encode_array(codec: str, array: np.ndarray) -> bytes:
    """Compress a C-contiguous little-endian array with ``codec``.

    Raises:
        ProtocolError: unknown/unavailable codec, or the array's dtype/shape does not suit the codec.
    """
    _require(codec)
    array = np.ascontiguousarray(array)
    if codec in ("png", "jpeg"):
        from PIL import Image

        layout = _image_layout(codec, array.dtype, array.shape)
        flat = array.reshape(layout.rows, layout.cols, layout.channels)
        img = Image.fromarray(flat[..., 0] if layout.channels == 1 else flat)
        out = io.BytesIO()
        if codec == "png":
            img.save(out, format="PNG", compress_level=1)
        else:
            img.save(out, format="JPEG", quality=JPEG_QUALITY)
        return out.getvalue()
    raw = memoryview(array.reshape(-1).view(np.uint8))
    if codec == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(raw)
    import lz4.block

    return lz4.block.compress(raw, store_size=False)


def decode_array(codec: str, data: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """Decompress ``data`` into a new array of exactly ``dtype`` and ``shape`` (size known beforehand).

    The decoder never produces more than ``prod(shape) * itemsize`` bytes; image headers are checked against
    the declared size before any pixel is decoded.

    Raises:
        ProtocolError: unknown/unavailable codec, corrupt data, or data that does not decode to the declared
            dtype and shape.
    """
    _require(codec)
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    try:
        if codec in ("png", "jpeg"):
            return _decode_image(codec, data, dtype, shape)
        if codec == "zstd":
            import zstandard

            params = zstandard.get_frame_parameters(bytes(data[:18]))
            if params.content_size not in (nbytes, zstandard.CONTENTSIZE_UNKNOWN):
                raise ProtocolError(
                    f"zstd frame holds {params.content_size} bytes but {dtype.name}{list(shape)} needs {nbytes}"
                )
            raw = zstandard.ZstdDecompressor().decompress(bytes(data), max_output_size=nbytes)
        else:
            import lz4.block

            raw = lz4.block.decompress(bytes(data), uncompressed_size=nbytes) if nbytes else b""
    except ProtocolError:
        raise
    except Exception as exc:  # zstandard.ZstdError, lz4.block.LZ4BlockError, ...
        raise ProtocolError(f"{codec} stream does not decode ({type(exc).__name__}: {exc})") from exc
    if len(raw) != nbytes:
        raise ProtocolError(f"{codec} stream decoded to {len(raw)} bytes but {dtype.name}{list(shape)} needs {nbytes}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _decode_image(codec: str, data: bytes | memoryview, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    layout = _image_layout(codec, dtype, shape)
    try:
        img = Image.open(io.BytesIO(bytes(data)), formats=["PNG"] if codec == "png" else ["JPEG"])
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ProtocolError(f"{codec} stream is not a valid {codec.upper()} image ({exc})") from exc
    modes = {layout.mode} | ({"I", "I;16B"} if layout.mode == "I;16" else set())
    if img.size != (layout.cols, layout.rows) or img.mode not in modes:
        raise ProtocolError(
            f"{codec} image is {img.size[0]}x{img.size[1]} {img.mode} but the header declares "
            f"{dtype.name}{list(shape)} ({layout.cols}x{layout.rows} {layout.mode}); refusing to decode it"
        )
    try:
        img.load()
        pixels = np.asarray(img)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ProtocolError(f"{codec} image is corrupt ({exc})") from exc
    return pixels.astype(dtype, copy=False).reshape(shape)
