"""The demo task: "reach and touch the red cube"."""

from __future__ import annotations

import logging

import numpy as np

from robot_stack.sim.world import SimWorld

log = logging.getLogger("robot_stack.sim")

__all__ = ["ReachTouchTask"]


class ReachTouchTask:
    """Reach and touch the red cube.

    Success: a finger geom touches the cube, or the TCP is within ``touch_radius_m`` of the centre of the cube's
    top face. A touch is an event: once it happened, the episode stays successful until :meth:`reset` (a finger that
    brushes the cube and bounces off has touched it). The predicates read the world's *current* state and do not
    step it (the robot and cameras do that).

    Args:
        world: the simulated cell.
        max_duration_s: an episode times out this many clock seconds after :meth:`reset`.
        touch_radius_m: TCP-to-top-centre distance that counts as a touch, metres.
    """

    instruction = "reach and touch the red cube"

    def __init__(self, world: SimWorld, max_duration_s: float = 8.0, touch_radius_m: float = 0.02) -> None:
        self.world = world
        self.max_duration_s = max_duration_s
        self.touch_radius_m = touch_radius_m
        self._t_start_ns = world.clock.now_ns()
        self._touched_s: float | None = None

    def reset(self, seed: int | None = None) -> None:
        """Reset the world (arm home, cube at a seeded random pose) and restart the episode clock."""
        self.world.reset(seed)
        self._t_start_ns = self.world.clock.now_ns()
        self._touched_s = None

    def cube_top_center(self) -> np.ndarray:
        """(3,) float64 metres, robot base frame: centre of the cube's top face."""
        return self.world.cube_top_center()

    def tcp_distance_m(self) -> float:
        """Distance from the TCP to the centre of the cube's top face, metres."""
        with self.world.lock:
            return float(np.linalg.norm(self.world.tcp_pose().translation - self.world.cube_top_center()))

    def is_success(self) -> bool:
        """True once a finger touched the cube or the TCP came within ``touch_radius_m`` of the top-face centre."""
        if self._touched_s is None:
            with self.world.lock:
                touching = self.world.finger_cube_contacts() > 0 or self.tcp_distance_m() <= self.touch_radius_m
            if touching:
                self._touched_s = self.elapsed_s()
        return self._touched_s is not None

    def touched_object(self) -> str | None:
        """``"cube"`` once the cube was touched, else None (the tabletop tasks' interface)."""
        return "cube" if self.is_success() else None

    @property
    def time_to_success_s(self) -> float | None:
        """Episode seconds at which the touch was first seen, or None."""
        return self._touched_s

    def elapsed_s(self) -> float:
        """Clock seconds since :meth:`reset`."""
        return (self.world.clock.now_ns() - self._t_start_ns) / 1e9

    def is_timeout(self) -> bool:
        """True once ``max_duration_s`` has passed since :meth:`reset`."""
        return self.elapsed_s() >= self.max_duration_s

    def is_done(self) -> bool:
        """Episode over: success or timeout."""
        return self.is_success() or self.is_timeout()
