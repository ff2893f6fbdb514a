"""The full control loop in simulated time (lockstep), for data generation and policy evaluation.

Same components as the live demo, from the same builder — SimCamera → calibrated DepthProjector → policy → decoder
(IK, reach policy) → Executor (safety filter, watchdog) → SimRobot — but driven by a
:class:`~robot_stack.clock.FakeClock`: each policy step renders an observation, asks the policy for a chunk, then
ticks the executor for one policy period. Results do not depend on how busy the machine is, so training data and
success rates are reproducible.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from robot_stack.clock import FakeClock
from robot_stack.cycle import ObservationSource
from robot_stack.errors import ConfigError, RobotStackError
from robot_stack.robots.base import Robot
from robot_stack.sim.task import ReachTouchTask
from robot_stack.stack.build import build_cell, build_decoder, build_executor, build_scheduler
from robot_stack.stack.config import StackConfig, load_stack_config
from robot_stack.types import ActionChunk, ActionHead, Observation

log = logging.getLogger("robot_stack.stack.lockstep")

#: A policy maps an observation to an action chunk (``ee_delta_xyz``), or to None when it has no answer for it (a
#: failed request): nothing new is submitted and the executor finishes its plan, then holds (its watchdog).
PolicyFn = Callable[[Observation], ActionChunk | None]
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
        final_distance_m: TCP distance to the target's top centre at the end.
        touched: the object the episode ended on (the target on success; another object when that was touched
            first in a tabletop task), None on a timeout.
        instruction: the task's instruction.
    """

    seed: int
    success: bool
    duration_s: float
    steps: int
    final_distance_m: float
    touched: str | None = None
    instruction: str = ""


class LockstepRig:
    """The stack's cell, decoder, executor and chunk scheduler on a fake clock, stepped in simulated time.

    The task follows ``config.task.suite``: the demo's :class:`~robot_stack.sim.task.ReachTouchTask`, or a
    :class:`~robot_stack.sim.tabletop.TabletopTask` for ``config.task.instruction`` (its first instruction when
    empty; :meth:`TabletopTask.set_instruction` changes it between episodes).

    Built by the same builder as the live stack (:func:`~robot_stack.stack.build.build_cell`,
    :func:`~robot_stack.stack.build.build_decoder`, :func:`~robot_stack.stack.build.build_executor`,
    :func:`~robot_stack.stack.build.build_scheduler`) from a
    :class:`StackConfig` (default: the ``demo`` preset); the policy is a function of the observation instead of a
    server.

    Args:
        config: the stack (its robot must be simulated).
        policy_period_s: simulated seconds between policy queries (and chunk ``dt``).
        robot_wrapper: wraps the robot (e.g. the recording taps of a data-collection session).
        scene, camera_id, rate_hz, max_duration_s: shorthands for overriding the config's calibration scene, the
            single camera, the control rate and the episode limit (None: the config's own).
        xyz: compute the base-frame XYZ of every observation (False: depth form only, see
            :class:`~robot_stack.cycle.ObservationSource`).
    """

    def __init__(
        self,
        config: StackConfig | None = None,
        *,
        scene: str | None = None,
        camera_id: str | None = None,
        rate_hz: float | None = None,
        policy_period_s: float = 0.1,
        max_duration_s: float | None = 8.0,
        robot_wrapper: Callable[[Robot], Robot] | None = None,
        xyz: bool = True,
    ) -> None:
        config = config or load_stack_config("demo")
        overrides = [] if max_duration_s is None else [f"task.max_duration_s={max_duration_s}"]
        if scene is not None:
            overrides.append(f"calibration.scene={scene}")
        if rate_hz is not None:
            overrides.append(f"control.rate_hz={rate_hz}")
        config = config.with_overrides(overrides)
        if camera_id is not None:
            config = config.replace(cameras=(dataclasses.replace(config.cameras[0], camera_id=camera_id),))
        if config.robot.kind != "sim":
            raise ConfigError(f"LockstepRig needs the simulated robot (robot.kind: sim), got {config.robot.kind!r}")
        self.config = config
        self.clock = FakeClock(start_ns=1_000_000_000)
        self.cell = build_cell(config, self.clock, robot_wrapper=robot_wrapper)
        self.world = self.cell.world
        self.robot = self.cell.robot
        self.source = ObservationSource(self.cell.cameras, self.robot, xyz=xyz)
        self.camera, self.projector = self.cell.cameras[0]
        self.decoder: Any = build_decoder(config, ActionHead.CONTINUOUS.value, "ee_delta_xyz")[0]
        self.task: Any
        if config.task.suite == "tabletop":
            from robot_stack.sim.tabletop import INSTRUCTIONS, TabletopTask

            instruction = config.task.instruction or INSTRUCTIONS[0].text
            self.task = TabletopTask(self.world, instruction, max_duration_s=config.task.max_duration_s)
        else:
            self.task = ReachTouchTask(self.world, max_duration_s=config.task.max_duration_s)
        self.rate_hz = config.control_rate_hz
        self.policy_period_ns = round(policy_period_s * 1e9)
        #: the executor of the episode that runs (or ran last): its ``stats()`` (safety interventions, holds)
        self.executor: Any = None

    def close(self) -> None:
        self.cell.close()

    def observe(self) -> Observation:
        """Render every camera, project depth into the base frame, read proprioception."""
        return self.source.observe(self.task.instruction)

    def run_episode(
        self,
        policy: PolicyFn,
        seed: int,
        *,
        initial_q_noise_rad: float = 0.0,
        on_step: StepHook | None = None,
        execute: Callable[[ActionChunk, Observation], ActionChunk] | None = None,
    ) -> EpisodeResult:
        """Run one episode; ``execute`` may alter the chunk that is actually executed (e.g. exploration noise).

        A step whose ``policy`` returns None submits nothing (``on_step`` and ``execute`` are not called): the
        executor goes on with the plan it has and holds when that runs out, as on a robot whose request failed.
        """
        self.task.reset(seed)
        if initial_q_noise_rad > 0:
            rng = np.random.default_rng(10_000 + seed)
            emb = self.config.embodiment
            q0 = np.clip(
                emb.home_q + rng.normal(0.0, initial_q_noise_rad, emb.dof),
                emb.limits.lower + 0.1,
                emb.limits.upper - 0.1,
            )
            self.world.set_arm_q(q0, gripper=1.0)
        # the same executor and scheduler as the live stack (control.executor does not apply: simulated time is
        # ticked here, in this process)
        executor = self.executor = build_executor(self.config, self.robot, self.clock)
        scheduler = build_scheduler(self.config, executor)
        period_ns = executor.period_ns
        executor.tick(self.clock.now_ns())  # seeded at the episode's start posture before the first chunk
        steps = 0
        while not self.task.is_done():
            obs = self.observe()
            chunk = policy(obs)
            if chunk is not None:
                if on_step is not None:
                    on_step(obs, chunk)
                if execute is not None:
                    chunk = execute(chunk, obs)
                try:
                    scheduler.submit(self.decoder.decode(chunk, obs.state))
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
            touched=self.task.touched_object(),
            instruction=self.task.instruction,
        )
