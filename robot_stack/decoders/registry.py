"""The one table of action decoders: name (the ``ActionChunk.action_space`` a decoder accepts) -> decoder class.

::

    decoder = get_decoder("ee_delta_xyz")          # default Panda IK
    traj = decoder.decode(chunk, observation.state)

To add a decoder: subclass :class:`~robot_stack.decoders.base.Decoder` in a module of this package and add its
class to :data:`DECODERS` (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

from robot_stack.decoders.base import Decoder
from robot_stack.decoders.binned import BinnedDecoder
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.decoders.joint import JointPositionDecoder
from robot_stack.decoders.joint_delta import JointDeltaDecoder
from robot_stack.decoders.motion_tracks import MotionTrackDecoder
from robot_stack.decoders.vq import LatentVQDecoder
from robot_stack.errors import ConfigError
from robot_stack.types import ActionHead

__all__ = ["DECODERS", "available_decoders", "decoder_name_for", "get_decoder"]

#: Decoder name (= the action space it accepts) -> class; each class is built with its own keyword arguments.
DECODERS: dict[str, type[Decoder]] = {
    cls.action_space: cls
    for cls in (
        EeDeltaXyzDecoder,
        JointPositionDecoder,
        JointDeltaDecoder,
        BinnedDecoder,
        LatentVQDecoder,
        MotionTrackDecoder,
    )
}


def available_decoders() -> tuple[str, ...]:
    """Names accepted by :func:`get_decoder`."""
    return tuple(sorted(DECODERS))


def get_decoder(name: str, **kwargs: Any) -> Decoder:
    """Build the decoder for action space ``name`` with ``kwargs`` (ConfigError for an unknown name)."""
    if name not in DECODERS:
        raise ConfigError(f"no decoder for action space {name!r}; available: {', '.join(available_decoders())}")
    try:
        return DECODERS[name](**kwargs)
    except TypeError as exc:  # an option the decoder does not take (e.g. a typo in the config's decoder.options)
        raise ConfigError(f"decoder {name!r}: bad options {sorted(kwargs)}: {exc}") from exc


def decoder_name_for(head: ActionHead | str, action_space: str) -> str:
    """The decoder for a model's ``action_head`` and ``action_space`` (manifest fields): a continuous head is
    decoded by its action space (``ee_delta_xyz``, ``joint_position``, ``joint_delta``); the token and track heads by
    their own decoder."""
    head = ActionHead.parse(head)
    return action_space if head is ActionHead.CONTINUOUS else head.value
