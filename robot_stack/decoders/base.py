"""Decoder interface and registry: ``ActionChunk`` + the ``RobotState`` it was computed from -> ``JointTrajectory``.

Decoders are registered by the action space / head type they understand (``ActionChunk.action_space``), and
built with :func:`get_decoder`::

    decoder = get_decoder("ee_delta_xyz")          # default Panda IK
    traj = decoder.decode(chunk, observation.state)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from robot_stack.errors import ConfigError, DecodeError
from robot_stack.types import ActionChunk, JointTrajectory, RobotState

__all__ = ["Decoder", "available_decoders", "get_decoder", "register_decoder"]


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


DecoderFactory = Callable[..., Decoder]
_REGISTRY: dict[str, DecoderFactory] = {}


def register_decoder(name: str) -> Callable[[DecoderFactory], DecoderFactory]:
    """Decorator: make ``factory(**kwargs) -> Decoder`` available as ``get_decoder(name, **kwargs)``."""

    def wrap(factory: DecoderFactory) -> DecoderFactory:
        _REGISTRY[name] = factory
        return factory

    return wrap


def _load_builtin() -> None:
    # importing the modules registers them; done lazily to avoid import cycles
    from robot_stack.decoders import ee_delta, joint  # noqa: F401


def available_decoders() -> tuple[str, ...]:
    """Names accepted by :func:`get_decoder`."""
    _load_builtin()
    return tuple(sorted(_REGISTRY))


def get_decoder(name: str, **kwargs: Any) -> Decoder:
    """Build the decoder registered for action space / head type ``name`` with ``kwargs``."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"no decoder for action space {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)
