"""ZeroMQ transport between robot client and policy server: versioned header + zero-copy array frames.

See ``docs/protocol.md`` for the wire format.
"""

from __future__ import annotations

from robot_stack.transport.client import CallTiming, PolicyClient, Reply
from robot_stack.transport.protocol import (
    ALLOWED_DTYPES,
    DEFAULT_MAX_MESSAGE_BYTES,
    PROTOCOL_VERSION,
    SUPPORTED_VERSIONS,
    Message,
    decode,
    encode,
)
from robot_stack.transport.server import BatchItem, Handler, PolicyServer

__all__ = [
    "ALLOWED_DTYPES",
    "DEFAULT_MAX_MESSAGE_BYTES",
    "PROTOCOL_VERSION",
    "SUPPORTED_VERSIONS",
    "BatchItem",
    "CallTiming",
    "Handler",
    "Message",
    "PolicyClient",
    "PolicyServer",
    "Reply",
    "decode",
    "encode",
]
