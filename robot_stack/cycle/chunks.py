"""The one conversion from a policy server's reply to the :class:`~robot_stack.types.ActionChunk` it carries."""

from __future__ import annotations

import numpy as np

from robot_stack.errors import DecodeError
from robot_stack.transport.client import Reply
from robot_stack.types import ActionChunk, ActionHead

__all__ = ["chunk_from_reply"]


def chunk_from_reply(reply: Reply, t_obs_ns: int) -> ActionChunk:
    """The chunk in ``reply`` for the observation taken at ``t_obs_ns`` (robot clock, ns).

    The reply's meta names the model's ``action_head`` (default ``continuous``), ``action_space``, ``horizon``,
    ``dt_s`` and ``model_id``; the chunk is the head's output (:attr:`ActionHead.output`), whose leading batch axis
    (of one row: a model served with micro-batching answers one robot's request in ``(1, ...)``) is dropped. Raises
    DecodeError when the meta or the output is missing, ShapeError for a malformed chunk.
    """
    try:
        head = ActionHead.parse(str(reply.meta.get("action_head", ActionHead.CONTINUOUS.value)))
        horizon = int(reply.meta["horizon"])
        actions = np.asarray(reply.arrays[head.output])
        if actions.ndim == 3 and actions.shape[0] == 1:
            actions = actions[0]
        dt_s = float(reply.meta["dt_s"])
        action_space = str(reply.meta["action_space"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DecodeError(f"policy reply lacks what makes an action chunk ({type(exc).__name__}: {exc})") from exc
    return ActionChunk(
        t_obs_ns, dt_s, actions, action_space, np.ones(horizon, np.float32), str(reply.meta.get("model_id", ""))
    )
