"""The hand-eye collection procedure on a robot + camera pair (the simulated Panda and its fixed camera)."""

from __future__ import annotations

import numpy as np
import pytest

from robot_stack.calibration.charuco import DEFAULT_BOARD
from robot_stack.calibration.handeye_collect import HandEyeCollector, collect_stations
from robot_stack.clock import FakeClock
from robot_stack.kinematics.ik import panda_ik
from robot_stack.robots import panda
from robot_stack.sim.camera import SimCamera
from robot_stack.sim.handeye import build_board_model, random_board_poses
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.world import SimWorld


@pytest.fixture(scope="module")
def cell():
    world = SimWorld(FakeClock(), model=build_board_model(DEFAULT_BOARD, "front"))
    camera = SimCamera(world, "front", 1280, 960)
    camera.start()
    truth = world.T_world_base.inverse() @ camera.ground_truth_pose()
    yield world, SimRobot(world), camera, truth
    camera.stop()


def _joint_stations(truth, n: int, seed: int) -> list[np.ndarray]:
    ik = panda_ik()
    q = panda.HOME_Q.copy()
    stations = []
    for target in random_board_poses(n, seed, truth.translation, 30.0):
        result = ik.solve_with_info(target, q, restarts=4, fallbacks=(panda.HOME_Q,))
        if result.converged:
            q = result.q
            stations.append(q.copy())
    return stations


def test_guided_collection_meets_the_accuracy_target(cell) -> None:
    world, robot, camera, truth = cell
    stations = _joint_stations(truth, 12, seed=3)
    collector = HandEyeCollector(robot, camera, DEFAULT_BOARD)
    lines: list[str] = []

    def move(k: int) -> bool:  # on hardware: the operator moves the arm and presses Enter
        world.set_arm_q(stations[k])
        return True

    results = collect_stations(collector, move, len(stations), say=lines.append)
    assert sum(r.sample is not None for r in results) >= 8
    assert collector.diversity_problem() is None
    result = collector.calibrate("park")
    dt, dr = result.X.distance_to(truth)
    assert dt <= 2e-3 and np.rad2deg(dr) <= 0.2, (dt, np.rad2deg(dr))
    assert len(lines) == len(stations) and lines[0].startswith("station 1:")


def test_a_station_without_the_board_in_view_is_refused_with_advice(cell) -> None:
    world, robot, camera, _ = cell
    collector = HandEyeCollector(robot, camera, DEFAULT_BOARD)
    away = panda.HOME_Q.copy()
    away[0] = 2.5  # the arm (and the board on the hand) turned away from the camera
    world.set_arm_q(away)
    station = collector.capture()
    assert station.sample is None and "keep it fully in view" in station.reason
    assert collector.refused == [station.reason] and not collector.samples


def test_operator_can_stop_early_and_is_told_the_set_is_not_enough(cell) -> None:
    world, robot, camera, truth = cell
    stations = _joint_stations(truth, 4, seed=5)
    collector = HandEyeCollector(robot, camera, DEFAULT_BOARD)
    lines: list[str] = []

    def move(k: int) -> bool:
        if k >= 1:
            return False  # operator quits after one station
        world.set_arm_q(stations[k])
        return True

    collect_stations(collector, move, 10, say=lines.append)
    assert len(collector.samples) <= 1
    assert lines[-1].startswith("not enough diversity yet")


def test_hardware_cli_without_a_robot_says_what_to_pass() -> None:
    from robot_stack.cli import main

    assert main(["calibrate", "hand-eye"]) == 1  # ConfigError: tells the user about --robot / --sim, no crash
