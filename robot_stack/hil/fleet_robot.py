"""One simulated robot of a fleet check: its arm's lockstep cell driven by a served policy, every command audited.

:func:`run_robot` builds the rig of one arm (:func:`~robot_stack.training.evaluate.served_rig`: the ``demo`` stack
in the arm's cell, on a fake clock, with the decoder of the policy's action head), wraps the robot in the HIL
command audit (:class:`~robot_stack.hil.audit.RecordingRobot`), and runs randomised episodes whose every policy
step goes through the real :class:`~robot_stack.transport.client.PolicyClient` to the endpoint (a
``robot-stack serve`` or the fleet's ingress). The simulated clock waits for each answer, so the episodes'
outcomes do not depend on how loaded the machine is or how long a request took (within its timeout).

What a step does with an answer, as a robot must:

* no answer (timeout, ``deadline_exceeded``, any server or transport error): nothing new is executed; the arm
  finishes its current plan and the executor's watchdog holds it (counted: ``failed``, ``held_steps``);
* an answer that is not for this observation (its echoed ``t_obs_ns`` / episode / step, or its model, differ):
  refused, never executed (``stale_replies``; an ingress or fleet that mixes answers up is a defect);
* else its chunk is decoded and executed; the chunk's actions are kept (``actions``) so that two runs can be
  compared step by step.

Runs in a process of its own per robot (:mod:`robot_stack.hil.fleet_check` starts them): the argument and the
result are plain values.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robot_stack.control.safety import WorkspaceBox
from robot_stack.errors import RequestTimeoutError, ServerError, TransportError
from robot_stack.hil.audit import RecordingRobot, WarningCounter
from robot_stack.types import ActionChunk, Observation

__all__ = ["EpisodeOutcome", "RobotRun", "RobotSpec", "run_robot"]

log = logging.getLogger("robot_stack.hil.fleet")


@dataclass(frozen=True)
class RobotSpec:
    """One robot of the fleet.

    Attributes:
        arm: ``panda`` | ``ur5`` | ``so101`` (its own cell, limits, control rate, workspace box).
        manifest: the policy manifest it runs (absolute path); model_id: that manifest's model id (what it asks
            the server for).
        robot_id: its id on the wire (unique in the fleet).
    """

    arm: str
    manifest: str
    model_id: str
    robot_id: str

    @property
    def label(self) -> str:
        return f"{self.robot_id} ({self.model_id})"


@dataclass(frozen=True)
class EpisodeOutcome:
    """One episode: ``seed``, ``success``, policy ``steps``, simulated ``duration_s``, final TCP distance (mm)."""

    seed: int
    success: bool
    steps: int
    duration_s: float
    final_distance_mm: float


@dataclass(frozen=True)
class RobotRun:
    """What one robot did against one endpoint (counters summed over its episodes).

    Attributes:
        spec: the robot; endpoint: the server it used.
        episodes: one :class:`EpisodeOutcome` per seed.
        requests: policy requests sent; answered: of those, answered with a chunk.
        failed: requests that got no chunk, by reason (``timeout``, a server error code such as
            ``deadline_exceeded`` / ``busy`` / ``handler_error``, ``transport``).
        held_steps: policy steps on which nothing new was executed (a failed request or a refused reply): the arm
            finished its plan and then held.
        stale_replies: answers refused because they were for another observation or model (never executed).
        interventions: safety-filter interventions (the filter is a monitor: a nominal run has none).
        unsafe_commands: commands sent to the robot that broke a joint limit (position, velocity, acceleration or
            jerk; audited on every command), by limit in ``unsafe_by_limit``.
        outside_box_commands: commands whose TCP (forward kinematics of the commanded joints) lay outside the
            stack's workspace box, or the arm's own box (``embodiment.workspace``) where the stack enforces none
            (the ``demo`` preset); outside_box_max_m: by how far at most, m (summed over the axes).
        holds: watchdog holds of the executor; commands: set-points sent.
        replicas: fleet replica id -> answers it gave (empty against a single server).
        round_trip_p50_ms, round_trip_max_ms: wall-clock round trips of the answered requests.
        warnings: WARNING records per logger during the run (IK best-effort notes, ...).
        wall_s: wall-clock seconds of the run (rig start-up included).
        actions: per episode, per answered step, the chunk's actions as served (``(horizon, dim)``).
    """

    spec: RobotSpec
    endpoint: str
    episodes: tuple[EpisodeOutcome, ...]
    requests: int = 0
    answered: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    held_steps: int = 0
    stale_replies: int = 0
    interventions: int = 0
    unsafe_commands: int = 0
    unsafe_by_limit: dict[str, int] = field(default_factory=dict)
    outside_box_commands: int = 0
    outside_box_max_m: float = 0.0
    holds: int = 0
    commands: int = 0
    replicas: dict[str, int] = field(default_factory=dict)
    round_trip_p50_ms: float | None = None
    round_trip_max_ms: float | None = None
    warnings: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    actions: tuple[tuple[np.ndarray, ...], ...] = ()

    @property
    def successes(self) -> int:
        return sum(e.success for e in self.episodes)

    @property
    def safety_counters(self) -> dict[str, int]:
        """The counters that must be 0 on every robot, fleet or not."""
        return {
            "interventions": self.interventions,
            "unsafe_commands": self.unsafe_commands,
            "outside_box_commands": self.outside_box_commands,
            "stale_replies": self.stale_replies,
        }

    def summary(self) -> dict[str, Any]:
        """JSON-ready figures (without the actions)."""
        return {
            "robot_id": self.spec.robot_id,
            "arm": self.spec.arm,
            "model_id": self.spec.model_id,
            "endpoint": self.endpoint,
            "episodes": len(self.episodes),
            "successes": self.successes,
            "success_by_seed": {str(e.seed): e.success for e in self.episodes},
            "steps": sum(e.steps for e in self.episodes),
            "requests": self.requests,
            "answered": self.answered,
            "failed": dict(self.failed),
            "held_steps": self.held_steps,
            **self.safety_counters,
            "unsafe_by_limit": dict(self.unsafe_by_limit),
            "outside_box_max_m": round(self.outside_box_max_m, 4),
            "holds": self.holds,
            "commands": self.commands,
            "replicas": dict(self.replicas),
            "round_trip_p50_ms": self.round_trip_p50_ms,
            "round_trip_max_ms": self.round_trip_max_ms,
            "warnings": dict(self.warnings),
            "wall_s": round(self.wall_s, 1),
        }


@dataclass
class _Tally:
    counts: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    replicas: Counter[str] = field(default_factory=Counter)
    round_trips: list[float] = field(default_factory=list)
    outside_max_m: float = 0.0


class _Steps:
    """The policy of one episode: ask the server for each observation, return the chunk or None (hold)."""

    def __init__(self, client: Any, spec: RobotSpec, episode: int, tally: _Tally) -> None:
        self.client, self.spec, self.episode, self.tally = client, spec, episode, tally
        self.step = 0
        self.actions: list[np.ndarray] = []

    def __call__(self, obs: Observation) -> ActionChunk | None:
        from robot_stack.cycle import chunk_from_reply

        self.step += 1
        tally = self.tally
        meta = {"t_obs_ns": obs.t_obs_ns, "episode": self.episode, "step": self.step}
        tally.counts["requests"] += 1
        try:
            reply = self.client.infer(obs.arrays(), meta)
        except RequestTimeoutError:
            tally.failed["timeout"] += 1
        except ServerError as exc:
            tally.failed[str(getattr(exc, "code", "server_error"))] += 1
        except TransportError as exc:
            tally.failed["transport"] += 1
            log.warning("episode %d step %d: %s", self.episode, self.step, exc)
        else:
            echoed = {k: reply.meta.get(k) for k in meta}
            model = reply.meta.get("model_id")
            if echoed != meta or model != self.spec.model_id:
                tally.counts["stale_replies"] += 1
                log.error(
                    "refused an answer for %s of model %s: it was asked for %s of %s",
                    echoed,
                    model,
                    meta,
                    self.spec.model_id,
                )
            else:
                tally.counts["answered"] += 1
                tally.round_trips.append(reply.timing.round_trip_ms)
                replica = (reply.meta.get("fleet") or {}).get("replica")
                if replica:
                    tally.replicas[str(replica)] += 1
                chunk = chunk_from_reply(reply, obs.t_obs_ns)
                self.actions.append(np.array(chunk.actions))
                return chunk
        tally.counts["held_steps"] += 1
        return None


def run_robot(
    spec: RobotSpec,
    endpoint: str,
    episodes: int,
    seed: int,
    *,
    timeout_s: float = 10.0,
    max_duration_s: float = 8.0,
    overrides: Sequence[str] = (),
    log_level: int = logging.ERROR,
) -> RobotRun:
    """Run ``episodes`` lockstep episodes (seeds ``seed ..``) of robot ``spec`` against ``endpoint``.

    Args:
        timeout_s: each request's deadline, wall-clock seconds (the simulated clock waits meanwhile).
        max_duration_s: simulated seconds before an episode counts as failed.
        overrides: ``section.field=value`` overrides of the arm's ``demo`` stack.
        log_level: level of this process's log on stderr (a worker process starts without logging set up;
            WARNING records are counted in :attr:`RobotRun.warnings` whatever the level).
    """
    handler = _log_to_stderr(log_level, spec.robot_id)
    try:
        return _drive(spec, endpoint, episodes, seed, timeout_s, max_duration_s, overrides)
    finally:
        logging.getLogger().removeHandler(handler)


def _drive(
    spec: RobotSpec,
    endpoint: str,
    episodes: int,
    seed: int,
    timeout_s: float,
    max_duration_s: float,
    overrides: Sequence[str],
) -> RobotRun:
    from robot_stack.kinematics.ik import ik_for
    from robot_stack.stack.config import load_stack_config
    from robot_stack.training.evaluate import served_rig
    from robot_stack.transport.client import PolicyClient

    t0 = time.perf_counter()
    config = load_stack_config("demo", overrides, robot=spec.arm)
    limits = config.workspace or config.embodiment.workspace  # the stack's box, else the arm's own
    box = WorkspaceBox(np.asarray(limits.lower), np.asarray(limits.upper))
    clock: list[Any] = []
    audited: list[RecordingRobot] = []

    def audit(robot: Any) -> RecordingRobot:
        audited.append(RecordingRobot(robot, lambda: clock[0].now_ns(), 1.0 / config.control_rate_hz, 1 << 30))
        return audited[0]

    rig, _ = served_rig(
        spec.manifest, spec.arm, max_duration_s=max_duration_s, robot_wrapper=audit, overrides=overrides
    )
    clock.append(rig.clock)
    recorder = audited[0]
    fk = ik_for(config.embodiment).fk_xyz
    tally = _Tally()
    outcomes: list[EpisodeOutcome] = []
    actions: list[tuple[np.ndarray, ...]] = []
    try:
        with (
            WarningCounter() as warnings,
            PolicyClient(endpoint, spec.robot_id, timeout_s=timeout_s, model_id=spec.model_id) as client,
        ):
            for episode, ep_seed in enumerate(range(seed, seed + episodes)):
                steps = _Steps(client, spec, episode, tally)
                recorder.reset_history()
                result = rig.run_episode(steps, ep_seed)
                stats = rig.executor.stats()
                tally.counts["interventions"] += int(stats["faults"]["safety_interventions"])
                tally.counts["holds"] += int(stats["holds"])
                for q in recorder.q_cmd:  # every command of this episode: where its TCP lies against the box
                    out = box.outside_by(fk(q))
                    if out > 0:
                        tally.counts["outside_box_commands"] += 1
                        tally.outside_max_m = max(tally.outside_max_m, out)
                recorder.clear_record()
                outcomes.append(
                    EpisodeOutcome(
                        result.seed,
                        result.success,
                        result.steps,
                        round(result.duration_s, 3),
                        round(1000 * result.final_distance_m, 1),
                    )
                )
                actions.append(tuple(steps.actions))
                log.info("seed %d: %s in %d steps", ep_seed, "success" if result.success else "FAIL", result.steps)
    finally:
        rig.close()
    rtt = tally.round_trips
    return RobotRun(
        spec,
        endpoint,
        tuple(outcomes),
        requests=tally.counts["requests"],
        answered=tally.counts["answered"],
        failed=dict(tally.failed),
        held_steps=tally.counts["held_steps"],
        stale_replies=tally.counts["stale_replies"],
        interventions=tally.counts["interventions"],
        unsafe_commands=recorder.unsafe_total,
        unsafe_by_limit=dict(recorder.unsafe),
        outside_box_commands=tally.counts["outside_box_commands"],
        outside_box_max_m=tally.outside_max_m,
        holds=tally.counts["holds"],
        commands=recorder.commands,
        replicas=dict(tally.replicas),
        round_trip_p50_ms=round(float(np.percentile(rtt, 50)), 2) if rtt else None,
        round_trip_max_ms=round(max(rtt), 2) if rtt else None,
        warnings=dict(warnings.counts),
        wall_s=time.perf_counter() - t0,
        actions=tuple(actions),
    )


def _log_to_stderr(level: int, robot_id: str) -> logging.Handler:
    """This process's log while the robot runs: records of ``level`` and above on stderr, tagged with the robot;
    WARNING records are created whatever ``level`` (the run counts them). Returns the handler to remove after."""
    handler = logging.StreamHandler()
    handler.setLevel(level)
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s {robot_id} %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(min(root.level or logging.WARNING, level, logging.WARNING))
    return handler
