"""What one observation looks like on the wire, for the model being served: its form and its batch axis.

The served model's metadata (``request_inputs``) says what it takes:

* the **XYZ form** (``<camera>/xyz``, float32, computed on the robot) or the **depth form** (``<camera>/depth``
  uint16 + ``<camera>/calib``: the model computes the XYZ in its graph; the robot then skips the projection);
* inputs with or without a leading **batch axis** (a model exported for micro-batching takes ``(1, ...)`` from one
  robot; the reply's chunk then has the axis too, :func:`~robot_stack.cycle.chunks.chunk_from_reply` drops it).

The request meta carries the instruction (``task``) and, in the depth form, the version of each camera's calibration
file (``calibration: {camera: digest}``), so the server can tell which calibration a request was computed with.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.types import Observation

__all__ = ["RequestLayout"]


@dataclass(frozen=True)
class RequestLayout:
    """How observations are packed for the served model.

    Attributes:
        depth_form: send ``<camera>/depth`` + ``<camera>/calib`` instead of ``<camera>/xyz``.
        batched: add a leading batch axis of 1 to every array.
    """

    depth_form: bool = False
    batched: bool = False

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> RequestLayout:
        """The layout the server's ``metadata`` reply asks for (``request_inputs``; the XYZ form, unbatched, when
        it names none)."""
        specs = metadata.get("request_inputs") or metadata.get("inputs") or []
        shapes = {str(s.get("name")): list(s.get("shape") or []) for s in specs if isinstance(s, Mapping)}
        depth_form = any(name.endswith("/depth") for name in shapes)
        state = shapes.get("state")
        batched = state is not None and len(state) == 2
        return cls(depth_form=depth_form, batched=batched)

    def arrays(self, obs: Observation) -> dict[str, np.ndarray]:
        """The request arrays of ``obs`` (views; a batch axis adds no copy)."""
        arrays = obs.arrays(depth_form=self.depth_form)
        return {k: v[None] for k, v in arrays.items()} if self.batched else arrays

    def meta(self, obs: Observation) -> dict[str, Any]:
        """Request meta describing ``obs``: ``t_obs_ns``, the instruction (``task``) when there is one, and the
        calibration versions in the depth form."""
        out: dict[str, Any] = {"t_obs_ns": obs.t_obs_ns}
        if obs.task:
            out["task"] = obs.task
        if self.depth_form:
            out["calibration"] = {cam.camera_id: cam.calib_version for cam in obs.cameras}
        return out
