"""Action heads: turn a policy's ``ActionChunk`` into a ``JointTrajectory`` (see :func:`get_decoder`)."""

from robot_stack.decoders.base import Decoder, available_decoders, get_decoder, register_decoder

__all__ = ["Decoder", "available_decoders", "get_decoder", "register_decoder"]
