"""The full control loop in simulated time (lockstep), for data generation and policy evaluation.

Same components as the live demo — SimCamera → calibrated DepthProjector → policy → EeDeltaXyzDecoder (IK) →
Executor (safety filter, watchdog) → SimRobot — but driven by a :class:`~robot_stack.clock.FakeClock`: each policy
step renders an observation, asks the policy for a chunk, then ticks the executor for one policy period. Results do
not depend on how busy the machine is, so training data and success rates are reproducible.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from robot_stack.calibration.store import load_calibration
from robot_stack.clock import FakeClock
from robot_stack.control.executor import Executor
from robot_stack.decoders.ee_delta import EeDeltaXyzDecoder
from robot_stack.errors import RobotStackError
from robot_stack.robots import panda
from robot_stack.sim.camera import SimCamera
from robot_stack.sim.robot import SimRobot
from robot_stack.sim.task import ReachTouchTask
from robot_stack.sim.world import SimWorld
from robot_stack.types import ActionChunk, Observation

log = logging.getLogger("robot_stack.sim.lockstep")

#: A policy maps an observation to an action chunk (``ee_delta_xyz``).
PolicyFn = Callable[[Observation], ActionChunk]
#: Called after each observation with (observation, chunk the policy returned); used to record data.
StepHook = Callable[[Observation, ActionChunk], None]


@dataclass(frozen=True)
class EpisodeResult:
    """Outcome of one episode.

    Attributes:
        seed: the episode's randomisation seed.
        success: task solved before the time limit.
        duration_s: simulated seconds until success or timeout.
        steps: policy steps taken.
        final_distance_m: TCP distance to the cube's top centre at the end.
    """

    seed: int
    success: bool
    duration_s: float
    steps: int
    final_distance_m: float


class LockstepRig:
    """World, camera, calibration, decoder and executor wired together on a fake clock.

    Args:
        scene: calibration scene name (``calibration/<scene>/<camera>.yaml``).
        camera_id: camera to observe with.
        rate_hz: executor rate, Hz.
        policy_period_s: simulated seconds between policy queries (and chunk ``dt``).
    """

    def __init__(
        self,
        scene: str = "sim_tabletop",
        camera_id: str = "front",
        rate_hz: float = 500.0,
        policy_period_s: float = 0.1,
        max_duration_s: float = 8.0,
    ) -> None:
        self.clock = FakeClock(start_ns=1_000_000_000)
        self.world = SimWorld(clock=self.clock)
        self.robot = SimRobot(self.world)
        self.camera = SimCamera(self.world, camera_id=camera_id)
        self.camera.start()
        self.projector = load_calibration(scene, camera_id).projector()
        self.decoder = EeDeltaXyzDecoder(orientation="down")
        self.task = ReachTouchTask(self.world, max_duration_s=max_duration_s)
        self.rate_hz = rate_hz
        self.policy_period_ns = round(policy_period_s * 1e9)

    def close(self) -> None:
        self.camera.stop()

    def observe(self) -> Observation:
        """Render, project depth into the base frame, read proprioception."""
        frame = self.camera.read()
        state = self.robot.read_state()
        return Observation(frame.t_capture_ns, state, (self.projector.observe(frame),), self.task.instruction)

    def run_episode(
        self,
        policy: PolicyFn,
        seed: int,
        *,
        initial_q_noise_rad: float = 0.0,
        on_step: StepHook | None = None,
        execute: Callable[[ActionChunk, Observation], ActionChunk] | None = None,
    ) -> EpisodeResult:
        """Run one episode; ``execute`` may alter the chunk that is actually executed (e.g. exploration noise)."""
        self.task.reset(seed)
        if initial_q_noise_rad > 0:
            rng = np.random.default_rng(10_000 + seed)
            q0 = np.clip(
                panda.HOME_Q + rng.normal(0.0, initial_q_noise_rad, 7),
                panda.LIMITS.lower + 0.1,
                panda.LIMITS.upper - 0.1,
            )
            self.world.set_arm_q(q0, gripper=1.0)
        executor = Executor(self.robot, self.clock, rate_hz=self.rate_hz)
        period_ns = executor.period_ns
        steps = 0
        while not self.task.is_done():
            obs = self.observe()
            chunk = policy(obs)
            if on_step is not None:
                on_step(obs, chunk)
            if execute is not None:
                chunk = execute(chunk, obs)
            try:
                executor.set_trajectory(self.decoder.decode(chunk, obs.state))
            except RobotStackError as exc:  # an undecodable chunk is skipped; the executor holds safely
                log.warning("seed %d step %d: chunk rejected: %s", seed, steps, exc)
            t_end = self.clock.now_ns() + self.policy_period_ns
            while self.clock.now_ns() < t_end:
                self.clock.advance(period_ns)
                executor.tick(self.clock.now_ns())
            steps += 1
        return EpisodeResult(
            seed=seed,
            success=self.task.is_success(),
            duration_s=self.task.elapsed_s(),
            steps=steps,
            final_distance_m=self.task.tcp_distance_m(),
        )
