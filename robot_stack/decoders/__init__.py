"""Action heads: turn a policy's ``ActionChunk`` into a ``JointTrajectory`` (see :func:`get_decoder`)."""

from robot_stack.decoders.base import Decoder
from robot_stack.decoders.registry import available_decoders, decoder_name_for, get_decoder

__all__ = ["Decoder", "available_decoders", "decoder_name_for", "get_decoder"]
