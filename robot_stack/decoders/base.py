"""The decoder interface: ``ActionChunk`` + the ``RobotState`` it was computed from -> ``JointTrajectory``.

Decoders are built by name from the one table in :mod:`robot_stack.decoders.registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from robot_stack.errors import DecodeError
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["Decoder"]


class Decoder(ABC):
    """Turns one action chunk into a timestamped joint trajectory for the executor."""

    #: The ``ActionChunk.action_space`` this decoder accepts.
    action_space: str = ""

    @abstractmethod
    def decode(self, chunk: ActionChunk, state: RobotState) -> JointTrajectory:
        """Decode ``chunk`` given ``state``, the robot state the chunk's observation carried.

        Raises :class:`~robot_stack.errors.DecodeError` (or its subclass ``IKError``) or
        :class:`~robot_stack.errors.ShapeError` for input that cannot be decoded.
        """

    def _check_space(self, chunk: ActionChunk) -> None:
        if not isinstance(chunk, ActionChunk):
            raise DecodeError(f"{type(self).__name__}: expected an ActionChunk, got {type(chunk).__name__}")
        if chunk.action_space != self.action_space:
            raise DecodeError(
                f"{type(self).__name__} decodes action_space {self.action_space!r}, got {chunk.action_space!r}; "
                f"pick the decoder with get_decoder({chunk.action_space!r})"
            )
