"""TaskEpisodes (robot_stack/graph/episodes.py): the sim bridge's demo-task episodes, on a real SimWorld with a
fake clock (no ROS needed)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.clock import FakeClock
from robot_stack.errors import ConfigError
from robot_stack.graph.episodes import TaskEpisodes
from robot_stack.sim.task import ReachTouchTask
from robot_stack.sim.world import SimWorld

MS = 1_000_000


def _episodes(auto_reset: bool = True) -> tuple[TaskEpisodes, FakeClock]:
    clock = FakeClock(start_ns=1_000 * MS)
    task = ReachTouchTask(SimWorld(clock), max_duration_s=5.0)
    return TaskEpisodes(task, base_seed=3, auto_reset=auto_reset, reset_pause_s=1.0), clock


def _touch(episodes: TaskEpisodes) -> None:
    world = episodes.task.world
    tcp = world.tcp_pose().translation
    world.set_cube_pose(tcp - np.array([0.0, 0.0, world.cube_half_size_m + 0.01]))  # top face 10 mm below the TCP


def test_touch_ends_the_episode_and_auto_reset_starts_the_next_with_the_arm_in_place() -> None:
    episodes, clock = _episodes()
    status, changed = episodes.update()
    assert (status.episode, status.seed, status.state, changed) == (0, 3, "running", False)
    assert status.distance_m > 0.1 and not status.touched
    clock.advance(700 * MS)
    _touch(episodes)
    status, changed = episodes.update()
    assert changed and status.touched and status.touches == 1
    assert status.time_to_success_s == pytest.approx(0.7)
    assert dict(status.values())["touched"] == "true" and dict(status.values())["time_to_success_s"] == "0.700"
    world = episodes.task.world
    world.set_arm_q(world.arm_q() + 0.05)  # the arm moves on after the touch
    q_end = world.arm_q()
    clock.advance(500 * MS)
    assert episodes.update() == (episodes.status(), False)  # still within the pause: still touched
    assert episodes.status().touched
    clock.advance(600 * MS)
    status, changed = episodes.update()
    assert changed and (status.episode, status.seed, status.state) == (1, 4, "running")
    assert status.time_to_success_s is None and status.elapsed_s == 0.0
    np.testing.assert_allclose(world.arm_q(), q_end)  # the executor owns the arm: not sent home
    # a new seeded cube pose, the same as a fresh world reset with that seed gives
    fresh = SimWorld(FakeClock())
    fresh.reset(4)
    np.testing.assert_allclose(episodes.task.cube_top_center(), fresh.cube_top_center(), atol=1e-9)


def test_timeout_and_manual_reset_without_auto_reset() -> None:
    episodes, clock = _episodes(auto_reset=False)
    clock.advance(5_000 * MS)
    status, changed = episodes.update()
    assert changed and status.state == "timeout" and status.timeouts == 1 and not status.touched
    clock.advance(60_000 * MS)
    status, changed = episodes.update()
    assert not changed and status.state == "timeout" and status.episode == 0  # no auto reset
    status = episodes.reset()
    assert (status.episode, status.state, status.timeouts) == (1, "running", 1)


def test_negative_pause_is_refused() -> None:
    clock = FakeClock()
    with pytest.raises(ConfigError, match="reset_pause_s"):
        TaskEpisodes(ReachTouchTask(SimWorld(clock)), reset_pause_s=-1.0)
