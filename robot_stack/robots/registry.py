"""The arm models robot-stack describes: name -> :class:`~robot_stack.robots.embodiment.Embodiment`.

``StackConfig.robot.model``, ``--robot`` on the command line and the VQ embodiment decoder's robot types all use
these names. To add an arm: write its description module next to ``panda.py`` and list it here.
"""

from __future__ import annotations

from robot_stack.errors import ConfigError
from robot_stack.robots import panda, so101, ur5
from robot_stack.robots.embodiment import Embodiment

__all__ = ["EMBODIMENTS", "ROBOT_MODELS", "get_embodiment"]

#: Every described arm, by name.
EMBODIMENTS: dict[str, Embodiment] = {e.name: e for e in (panda.EMBODIMENT, ur5.EMBODIMENT, so101.EMBODIMENT)}
#: Their names, in a fixed order (``--robot`` choices).
ROBOT_MODELS: tuple[str, ...] = tuple(EMBODIMENTS)


def get_embodiment(name: str) -> Embodiment:
    """The description of arm ``name``; ConfigError naming the known arms otherwise."""
    try:
        return EMBODIMENTS[name]
    except KeyError:
        raise ConfigError(f"robot model {name!r} has no description; available: {', '.join(ROBOT_MODELS)}") from None
