"""Action heads: turn a policy's ``ActionChunk`` into a ``JointTrajectory`` (see :func:`get_decoder`)."""

from robot_stack.decoders import binned, joint_delta, vq  # noqa: F401 - importing registers the token decoders
from robot_stack.decoders.base import Decoder, available_decoders, get_decoder, register_decoder

__all__ = ["Decoder", "available_decoders", "get_decoder", "register_decoder"]

from robot_stack.decoders import motion_tracks as _motion_tracks  # noqa: E402,F401  (registers "motion_tracks")
