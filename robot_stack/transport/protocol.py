"""Wire format between robot client and policy server (see ``docs/protocol.md``).

A message is a ZeroMQ multipart message::

    frame 0      msgpack map (the header): {"v", "kind", "id", "robot", "model", "t_send_ns", "timeout_ms",
                 "arrays": [{"name", "dtype", "shape"[, "codec"]}, ...], "meta": {...}, "timing": {...} (replies)}
    frame 1..n   one frame per declared array, in declaration order: C-contiguous, little-endian bytes, or (v2,
                 when the spec names a ``codec``) the array compressed with that codec (see ``codecs.py``)

No pickle and no msgpack extension types anywhere. Decoding is two steps. :func:`decode_header` validates the
header (key types, version, every field's type *and range*, dtype whitelist, dims, declared total size against
the cap), the frame count and every raw frame's length, all without touching array bytes; :func:`decode_arrays`
then wraps raw frames as read-only zero-copy ``np.frombuffer`` views and decompresses compressed frames into new
arrays of exactly the declared dtype and shape (decoders are bounded by that size). :func:`decode` does both. A
server runs the cheap first step on its I/O thread and decides (caps, negotiated codecs, the model's inputs)
before it lets anyone pay for the second.

Times (``t_send_ns`` and everything in ``timing``) are integer nanoseconds on the *sender's* monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np

from robot_stack.errors import PayloadTooLargeError, ProtocolError, RobotStackError, VersionMismatchError
from robot_stack.transport.codecs import check_codec, decode_array, encode_array

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_MAX_HEADER_BYTES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "KINDS",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "MAX_DIM",
    "MAX_TIMEOUT_MS",
    "ArraySpec",
    "Header",
    "Message",
    "decode",
    "decode_arrays",
    "decode_header",
    "encode",
    "encode_error",
    "prepare_arrays",
    "salvage_request_id",
    "unpack_capped",
]

#: Version of the wire format this side sends. Bump on any change of the header or frame layout.
#: v2 = v1 + the optional ``codec`` key of an array spec (per-stream compression).
PROTOCOL_VERSION = 2
#: Versions this side accepts. A server answers in the version of the request.
SUPPORTED_VERSIONS = (1, 2)
#: Default cap on the sum of all declared array bytes of one message (64 MiB).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Default cap on the size of the msgpack header frame (1 MiB).
DEFAULT_MAX_HEADER_BYTES = 1024 * 1024
#: Most arrays one message may carry; most dimensions one array may have; longest name/id string.
MAX_ARRAYS = 256
MAX_NDIM = 16
MAX_NAME_LEN = 256
#: Largest single dimension of a declared array (a larger one only fits under the cap next to a zero dim).
MAX_DIM = 2**31 - 1
#: Longest request budget a header may carry: 24 h in ms (``timeout_ms`` beyond it is a protocol error).
MAX_TIMEOUT_MS = 86_400_000.0

KINDS = frozenset({"infer", "health", "metadata", "reply", "error"})

#: Wire dtype name -> numpy dtype (always little-endian on the wire).
ALLOWED_DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "bool": np.dtype("bool"),
}
_WIRE_NAMES: dict[np.dtype, str] = {dt: name for name, dt in ALLOWED_DTYPES.items()}
_REQUIRED_KEYS = ("v", "kind", "id", "robot", "model", "t_send_ns", "timeout_ms", "arrays", "meta")
_OPTIONAL_KEYS = ("timing",)
_SPEC_KEYS = {"name", "dtype", "shape"}
_SPEC_KEYS_V2 = {"name", "dtype", "shape", "codec"}
_ALL_KEYS = frozenset(_REQUIRED_KEYS + _OPTIONAL_KEYS)
_INT64_MAX = 2**63 - 1


def _keys_text(keys: Any) -> str:
    """Header/meta keys for an error message: reprs, sorted (keys may mix str and bytes), truncated."""
    return f"{sorted(repr(k) for k in keys)}"[:120]


@dataclass(frozen=True)
class ArraySpec:
    """Declaration of one array frame: name, wire dtype name (a key of :data:`ALLOWED_DTYPES`), shape of the
    (decoded) array, and the codec of its frame (``""`` = raw bytes; v2 only)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    codec: str = ""

    @property
    def np_dtype(self) -> np.dtype:
        """The little-endian numpy dtype of the decoded array."""
        return ALLOWED_DTYPES[self.dtype]

    @property
    def nbytes(self) -> int:
        """Decoded byte size (for raw frames: the exact frame length); a Python int, cannot overflow."""
        return math.prod(self.shape) * ALLOWED_DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class Message:
    """One protocol message, decoded or to be encoded.

    Attributes:
        kind: one of :data:`KINDS`.
        id: request id chosen by the client (replies carry the id of the request they answer; -1 = unknown).
        robot: robot id of the sender (client) or addressee (server reply).
        model: model id the request is meant for ("" = whatever the server serves).
        t_send_ns: send time on the sender's monotonic clock, ns.
        timeout_ms: requests only: time budget from the server's receipt; 0 = no deadline.
        arrays: name -> array. Decoded arrays are read-only views of the received frames.
        meta: small msgpack-native map (str keys; str/int/float/bool/None/bytes/list/map values).
        timing: replies only: server-clock timestamps and durations (see ``docs/protocol.md``).
        version: protocol version of the sender.
    """

    kind: str
    id: int
    robot: str = ""
    model: str = ""
    t_send_ns: int = 0
    timeout_ms: float = 0.0
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    timing: Mapping[str, int | float] | None = None
    version: int = PROTOCOL_VERSION

    @property
    def error_code(self) -> str:
        """For ``kind == "error"``: the machine-readable code (e.g. ``"deadline_exceeded"``)."""
        return str(self.meta.get("code", "unknown"))

    @property
    def error_reason(self) -> str:
        """For ``kind == "error"``: the human-readable reason."""
        return str(self.meta.get("reason", ""))


@dataclass(frozen=True)
class Header:
    """A validated header (see :func:`decode_header`): every :class:`Message` field but the arrays, plus the
    declared arrays. Nothing in it has touched an array frame.

    Attributes:
        specs: the declared arrays, in frame order (dtype/shape of the *decoded* arrays, codec or "").
    """

    kind: str
    id: int
    robot: str
    model: str
    t_send_ns: int
    timeout_ms: float
    meta: Mapping[str, Any]
    timing: Mapping[str, int | float] | None
    version: int
    specs: tuple[ArraySpec, ...]

    @property
    def declared_bytes(self) -> int:
        """Sum of the decoded sizes of the declared arrays (bytes; what decoding them will allocate at most)."""
        return sum(s.nbytes for s in self.specs)

    @property
    def compressed(self) -> bool:
        """True if any declared array travels compressed (decoding it costs CPU and a new buffer)."""
        return any(s.codec for s in self.specs)

    def message(self, arrays: Mapping[str, np.ndarray]) -> Message:
        """The :class:`Message` of this header with its decoded ``arrays``."""
        return Message(
            kind=self.kind,
            id=self.id,
            robot=self.robot,
            model=self.model,
            t_send_ns=self.t_send_ns,
            timeout_ms=self.timeout_ms,
            arrays=arrays,
            meta=self.meta,
            timing=self.timing,
            version=self.version,
        )


# ------------------------------------------------------------------------------------------------ encode


def prepare_arrays(
    arrays: Mapping[str, Any], max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> tuple[list[ArraySpec], list[np.ndarray]]:
    """Validate arrays for sending; return their specs and C-contiguous little-endian arrays (copies only if needed).

    Raises:
        ProtocolError: bad name, dtype not whitelisted, too many arrays or dimensions.
        PayloadTooLargeError: the arrays together exceed ``max_message_bytes``.
    """
    if not isinstance(arrays, Mapping):
        raise ProtocolError(f"arrays must be a mapping name -> numpy array, got {type(arrays).__name__}")
    if len(arrays) > MAX_ARRAYS:
        raise ProtocolError(f"{len(arrays)} arrays in one message; at most {MAX_ARRAYS} are allowed")
    specs: list[ArraySpec] = []
    out: list[np.ndarray] = []
    total = 0
    for name, value in arrays.items():
        if type(name) is not str or not name or len(name) > MAX_NAME_LEN:
            raise ProtocolError(f"array name {name!r}: expected a non-empty str of at most {MAX_NAME_LEN} chars")
        array = value if type(value) is np.ndarray else np.asarray(value)
        wire = _WIRE_NAMES.get(array.dtype)
        if wire is None:  # big-endian input of an allowed type is converted to the wire byte order
            little = array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else None
            wire = _WIRE_NAMES.get(little) if little is not None else None
            if wire is None:
                raise ProtocolError(
                    f"array {name!r}: dtype {array.dtype} is not allowed on the wire; allowed: "
                    f"{', '.join(ALLOWED_DTYPES)}. Cast it before sending."
                )
            array = array.astype(little)
        if array.ndim > MAX_NDIM:
            raise ProtocolError(f"array {name!r}: {array.ndim} dimensions; at most {MAX_NDIM} are allowed")
        if not array.flags.c_contiguous:
            array = array.copy(order="C")  # (np.ascontiguousarray would turn 0-d arrays into 1-d)
        total += array.nbytes
        if total > max_message_bytes:
            raise PayloadTooLargeError(
                f"arrays total more than {max_message_bytes} bytes (cap) at array {name!r}; send smaller "
                f"images or raise max_message_bytes on both client and server"
            )
        specs.append(ArraySpec(name, wire, array.shape))
        out.append(array)
    return specs, out


def encode(
    message: Message,
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    codecs: Mapping[str, str] | None = None,
) -> list[bytes | memoryview]:
    """Serialise ``message`` into frames for ``socket.send_multipart(frames, copy=False)``.

    Array frames are memoryviews of the (contiguous) arrays themselves: no copy is made for C-contiguous
    little-endian input. The arrays must not be mutated until the message has been sent.

    Args:
        codecs: array name -> codec (see :mod:`robot_stack.transport.codecs`) for the arrays to compress; names
            not in ``message.arrays`` are ignored. Needs ``message.version >= 2``.
    """
    if message.kind not in KINDS:
        raise ProtocolError(f"unknown message kind {message.kind!r}; expected one of {sorted(KINDS)}")
    if message.version not in SUPPORTED_VERSIONS:
        raise ProtocolError(f"cannot encode protocol version {message.version}; supported: {SUPPORTED_VERSIONS}")
    specs, arrays = prepare_arrays(message.arrays, max_message_bytes)
    payload: list[bytes | memoryview] = [memoryview(a.reshape(-1).view(np.uint8)) for a in arrays]
    if codecs:
        if message.version < 2:
            raise ProtocolError("per-stream compression needs protocol version 2; the peer speaks version 1")
        for i, spec in enumerate(specs):
            codec = codecs.get(spec.name)
            if codec:
                payload[i] = encode_array(codec, arrays[i])
                specs[i] = ArraySpec(spec.name, spec.dtype, spec.shape, codec)
    header: dict[str, Any] = {
        "v": int(message.version),
        "kind": message.kind,
        "id": int(message.id),
        "robot": message.robot,
        "model": message.model,
        "t_send_ns": int(message.t_send_ns),
        "timeout_ms": float(message.timeout_ms),
        "arrays": [_spec_dict(s) for s in specs],
        "meta": dict(message.meta),
    }
    if message.timing is not None:
        header["timing"] = dict(message.timing)
    try:
        head = msgpack.packb(header, use_bin_type=True, strict_types=False)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ProtocolError(
            f"header/meta cannot be encoded ({exc}); meta values must be str, int, float, bool, None, bytes, "
            f"lists or str-keyed maps of these"
        ) from exc
    return [head, *payload]


def encode_error(
    request_id: int,
    robot: str,
    model: str,
    code: str,
    reason: str,
    t_send_ns: int,
    timing: Mapping[str, int | float] | None = None,
    version: int = PROTOCOL_VERSION,
) -> list[bytes]:
    """The frames of an ``error`` answer: what :func:`encode` makes of ``Message("error", ..., meta={"code",
    "reason"})``, without its general machinery (a server rejecting a flood sends many of these)."""
    header: dict[str, Any] = {
        "v": int(version),
        "kind": "error",
        "id": int(request_id),
        "robot": robot,
        "model": model,
        "t_send_ns": int(t_send_ns),
        "timeout_ms": 0.0,
        "arrays": [],
        "meta": {"code": code, "reason": reason},
    }
    if timing is not None:
        header["timing"] = dict(timing)
    return [msgpack.packb(header, use_bin_type=True)]


def _spec_dict(spec: ArraySpec) -> dict[str, Any]:
    out: dict[str, Any] = {"name": spec.name, "dtype": spec.dtype, "shape": list(spec.shape)}
    if spec.codec:
        out["codec"] = spec.codec
    return out


# ------------------------------------------------------------------------------------------------ decode


def _reject_ext(code: int, data: bytes) -> Any:
    raise ProtocolError(f"msgpack extension type {code} in header; extension types are not allowed")


def unpack_capped(data: bytes, cap: int, what: str, **options: Any) -> Any:
    """Decode one msgpack document of at most ``cap`` bytes (``what`` it is names it in errors); ``options`` are
    :func:`msgpack.unpackb`'s (limits, hooks; strings are always decoded as UTF-8).

    Raises:
        PayloadTooLargeError: ``data`` is larger than ``cap``.
        ProtocolError: anything msgpack rejects (a hook's own :class:`RobotStackError` passes through as raised).
    """
    if len(data) > cap:
        raise PayloadTooLargeError(f"{what} is {len(data)} bytes; the cap is {cap}")
    try:
        return msgpack.unpackb(data, raw=False, **options)
    except RobotStackError:
        raise
    except Exception as exc:  # msgpack raises many types (ValueError, ExtraData, StackError, UnicodeDecodeError)
        raise ProtocolError(f"{what} is not valid msgpack ({type(exc).__name__}: {exc})") from exc


def _unpack_header(head: bytes, max_header_bytes: int) -> Any:
    return unpack_capped(
        head,
        max_header_bytes,
        "header frame",
        strict_map_key=True,
        use_list=True,
        ext_hook=_reject_ext,
        max_str_len=max_header_bytes,
        max_bin_len=max_header_bytes,
        max_array_len=max_header_bytes,
        max_map_len=max_header_bytes,
        max_ext_len=max_header_bytes,  # so that _reject_ext names the problem
    )


def _frame_bytes(frame: Any) -> bytes:
    """Bytes of a frame given as bytes, memoryview or ``zmq.Frame``."""
    inner = getattr(frame, "bytes", None)
    if isinstance(inner, bytes):
        return inner
    return bytes(frame)


def _frame_buffer(frame: Any) -> memoryview:
    buf = getattr(frame, "buffer", None)
    return buf if isinstance(buf, memoryview) else memoryview(frame)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_str(header: Mapping[str, Any], key: str) -> str:
    value = header[key]
    if not isinstance(value, str) or len(value) > MAX_NAME_LEN:
        raise ProtocolError(f"header field {key!r} must be a str of at most {MAX_NAME_LEN} chars, got {value!r:.80}")
    return value


def _parse_specs(raw: Any, max_message_bytes: int, version: int = PROTOCOL_VERSION) -> tuple[ArraySpec, ...]:
    """Validated declarations; sizes are checked on exact Python ints (for compressed arrays: the decoded
    size), so a huge shape can neither overflow nor allocate."""
    if type(raw) is not list:
        raise ProtocolError(f"header field 'arrays' must be a list, got {type(raw).__name__}")
    if len(raw) > MAX_ARRAYS:
        raise ProtocolError(f"{len(raw)} arrays declared; at most {MAX_ARRAYS} are allowed")
    specs: list[ArraySpec] = []
    names: set[str] = set()
    total = 0
    for i, entry in enumerate(raw):
        if type(entry) is not dict or not (
            entry.keys() == _SPEC_KEYS or (version >= 2 and entry.keys() == _SPEC_KEYS_V2)
        ):
            allowed = "name, dtype, shape" + (" and optionally codec" if version >= 2 else "")
            raise ProtocolError(f"arrays[{i}] must be a map with exactly the keys {allowed}; got {entry!r:.120}")
        name, dtype, shape = entry["name"], entry["dtype"], entry["shape"]
        if type(name) is not str or not name or len(name) > MAX_NAME_LEN:
            raise ProtocolError(f"arrays[{i}].name must be a non-empty str of at most {MAX_NAME_LEN} chars")
        if name in names:
            raise ProtocolError(f"array name {name!r} declared twice")
        names.add(name)
        np_dtype = ALLOWED_DTYPES.get(dtype) if type(dtype) is str else None
        if np_dtype is None:
            raise ProtocolError(
                f"array {name!r}: dtype {dtype!r:.40} not allowed; allowed: {', '.join(ALLOWED_DTYPES)}"
            )
        if type(shape) is not list or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
            raise ProtocolError(
                f"array {name!r}: shape must be a list of at most {MAX_NDIM} non-negative ints, got {shape!r:.80}"
            )
        total += math.prod(shape) * np_dtype.itemsize
        if total > max_message_bytes:
            raise PayloadTooLargeError(
                f"message declares more than {max_message_bytes} bytes of arrays (at {name!r}, shape {shape}); "
                f"the cap is {max_message_bytes} bytes"
            )
        if any(d > MAX_DIM for d in shape):  # fits under the cap only beside a zero dim: numpy cannot shape it
            raise ProtocolError(f"array {name!r}: shape {shape!r:.80} has a dimension above {MAX_DIM}")
        codec = entry.get("codec", "")
        if codec != "":
            if type(codec) is not str:
                raise ProtocolError(f"array {name!r}: codec must be a str, got {codec!r:.40}")
            check_codec(codec, np_dtype, tuple(shape))
        specs.append(ArraySpec(name, dtype, tuple(shape), codec))
    return tuple(specs)


def _check_fields(header: dict[Any, Any]) -> int:
    """Check the presence, type and range of every top-level header field; return the version."""
    version = header.get("v")
    if not _is_int(version) or version not in SUPPORTED_VERSIONS:
        raise VersionMismatchError(
            f"protocol version {version!r:.40} received, this side speaks versions {list(SUPPORTED_VERSIONS)}; "
            f"upgrade robot-stack on the older side so client and server match"
        )
    unknown = [k for k in header if k not in _ALL_KEYS]  # (bytes keys never match: they are unknown too)
    if unknown:
        raise ProtocolError(
            f"header has unknown field(s) {_keys_text(unknown)}; allowed (all str): {sorted(_ALL_KEYS)}"
        )
    missing = [k for k in _REQUIRED_KEYS if k not in header]
    if missing:
        raise ProtocolError(f"header lacks required field(s) {missing}")
    kind = header["kind"]
    if type(kind) is not str or kind not in KINDS:
        raise ProtocolError(f"unknown message kind {kind!r:.40}; expected one of {sorted(KINDS)}")
    request_id = header["id"]
    if not _is_int(request_id) or not -1 <= request_id <= _INT64_MAX:
        raise ProtocolError(f"header field 'id' must be an int in [-1, 2**63), got {request_id!r:.40}")
    _check_str(header, "robot")
    _check_str(header, "model")
    t_send_ns = header["t_send_ns"]
    if not _is_int(t_send_ns) or not 0 <= t_send_ns <= _INT64_MAX:
        raise ProtocolError(f"header field 't_send_ns' must be an int in [0, 2**63) (ns), got {t_send_ns!r:.40}")
    timeout_ms = header["timeout_ms"]
    if (
        isinstance(timeout_ms, bool)
        or not isinstance(timeout_ms, int | float)
        or not 0 <= timeout_ms <= MAX_TIMEOUT_MS  # (NaN fails every comparison)
    ):
        raise ProtocolError(
            f"header field 'timeout_ms' must be a number in [0, {MAX_TIMEOUT_MS:.0f}] (0 = no deadline, at most "
            f"24 h), got {timeout_ms!r:.40}"
        )
    meta = header["meta"]
    if not isinstance(meta, dict):
        raise ProtocolError(f"header field 'meta' must be a map, got {type(meta).__name__}")
    if not all(type(k) is str for k in meta):
        raise ProtocolError(f"header field 'meta' must have str keys, got {_keys_text(meta)}")
    timing = header.get("timing")
    if timing is not None and (
        not isinstance(timing, dict)
        or not all(type(k) is str for k in timing)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in timing.values())
    ):
        raise ProtocolError("header field 'timing' must be a map of str -> finite number")
    return version


def decode_header(
    frames: Sequence[Any],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> Header:
    """Validate received frames (bytes, memoryviews or ``zmq.Frame``) without decoding any array.

    Checks the header (see module docstring), the number of array frames, each raw frame's exact length and each
    compressed frame's length against the cap. Cost: one msgpack parse of at most ``max_header_bytes``.

    Raises:
        VersionMismatchError: the header's ``v`` is not in :data:`SUPPORTED_VERSIONS`.
        PayloadTooLargeError: header or declared arrays exceed their caps.
        ProtocolError: anything else that does not follow the protocol.
    """
    if len(frames) < 1:
        raise ProtocolError("empty message: expected a header frame followed by one frame per array")
    header = _unpack_header(_frame_bytes(frames[0]), max_header_bytes)
    if not isinstance(header, dict):
        raise ProtocolError(f"header must be a msgpack map, got {type(header).__name__}")
    version = _check_fields(header)
    specs = _parse_specs(header["arrays"], max_message_bytes, version)
    if len(frames) - 1 != len(specs):
        raise ProtocolError(
            f"header declares {len(specs)} array frame(s) but {len(frames) - 1} followed "
            f"({'truncated' if len(frames) - 1 < len(specs) else 'extra frames'} multipart message)"
        )
    for spec, frame in zip(specs, frames[1:], strict=True):
        size = _frame_buffer(frame).nbytes
        if spec.codec:
            if size > max_message_bytes:
                raise PayloadTooLargeError(f"array {spec.name!r}: compressed frame of {size} bytes exceeds the cap")
        elif size != spec.nbytes:
            raise ProtocolError(
                f"array {spec.name!r}: frame has {size} bytes but {spec.dtype}{list(spec.shape)} needs {spec.nbytes}"
            )
    return Header(
        kind=header["kind"],
        id=header["id"],
        robot=header["robot"],
        model=header["model"],
        t_send_ns=header["t_send_ns"],
        timeout_ms=float(header["timeout_ms"]),
        meta=header["meta"],
        timing=header.get("timing"),
        version=version,
        specs=specs,
    )


def decode_arrays(header: Header, frames: Sequence[Any]) -> dict[str, np.ndarray]:
    """The arrays of a message whose ``frames[0]`` passed :func:`decode_header` as ``header``.

    Raw frames become read-only zero-copy views (they keep the frames alive); compressed frames are decoded into
    new read-only arrays, bounded by their declared size.

    Raises:
        ProtocolError: a compressed frame does not decode to its declaration, or a bool frame holds bytes other
            than 0 and 1.
    """
    arrays: dict[str, np.ndarray] = {}
    for spec, frame in zip(header.specs, frames[1:], strict=True):
        buf = _frame_buffer(frame)
        if spec.codec:
            array = decode_array(spec.codec, buf, spec.np_dtype, spec.shape)
        else:
            array = np.frombuffer(buf, dtype=spec.np_dtype).reshape(spec.shape)
        if spec.np_dtype.kind == "b" and array.size and array.view(np.uint8).max() > 1:
            raise ProtocolError(f"array {spec.name!r}: bool frame holds bytes other than 0 and 1")
        array.flags.writeable = False
        arrays[spec.name] = array
    return arrays


def decode(
    frames: Sequence[Any],
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
) -> Message:
    """Parse and validate received frames (bytes, memoryviews or ``zmq.Frame``) into a :class:`Message`:
    :func:`decode_header` then :func:`decode_arrays`.

    Returned arrays are read-only zero-copy views of the frames (they keep the frames alive).

    Raises:
        VersionMismatchError: the header's ``v`` is not in :data:`SUPPORTED_VERSIONS`.
        PayloadTooLargeError: header or declared arrays exceed their caps (checked before reading array frames).
        ProtocolError: anything else that does not follow the protocol.
    """
    header = decode_header(frames, max_message_bytes, max_header_bytes)
    return header.message(decode_arrays(header, frames))


def salvage_request_id(head: Any, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> int:
    """Best effort: the request id of a header frame that failed validation, or -1 if it has none."""
    try:
        header = _unpack_header(_frame_bytes(head), max_header_bytes)
    except Exception:
        return -1
    if isinstance(header, dict):
        rid = header.get("id")
        if _is_int(rid) and -1 <= rid <= _INT64_MAX:
            return int(rid)
    return -1
