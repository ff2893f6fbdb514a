"""``robot-stack fleet check``: a fleet of simulated robots against single servers, then against the Ray fleet.

Several robots (each in its own process: :func:`~robot_stack.hil.fleet_robot.run_robot`, the arm's lockstep cell
on a fake clock, every command audited) run the same randomised episodes at the same time twice:

(a) **single**: one ``robot-stack serve`` per model (the real :class:`~robot_stack.transport.server.PolicyServer`
    with :class:`~robot_stack.policy.service.PolicyService`, :func:`~robot_stack.training.evaluate.served`);
(b) **fleet**: one ingress (``robot-stack serve --ray``: :func:`~robot_stack.fleet.serve.open_fleet`) in front of
    ``replicas`` Ray Serve replicas per model, the robots choosing their model by ``model_id``; optionally one
    replica of the busiest model is killed (SIGKILL) mid-run and Serve must replace it.

Both go through the real :class:`~robot_stack.transport.client.PolicyClient` over ZeroMQ on loopback. Because the
simulated clock waits for every answer, a robot's episodes depend only on the answers it got, not on the machine's
load: with the same answers, (a) and (b) must give the same outcomes. The checks (:attr:`FleetCheckReport.checks`):

* every safety counter is 0 on every robot in both runs (safety-filter interventions, unsafe commands, commands
  outside the workspace box, answers for another observation);
* no request was lost (each got its chunk: a replica failure is retried within the request's deadline);
* each robot's episode outcomes (success per seed) are the same in both runs, up to ``success_tolerance`` seeds
  (default 0: with a model served at batch size 1 the chunks are bit-identical, see docs/fleet.md);
* with ``kill_replica``: the kill happened while the robots ran, and the replica was replaced.

The step-by-step comparison of the served chunks (identical steps, largest difference) is reported with them.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.hil.fleet_robot import RobotRun, RobotSpec, run_robot
from robot_stack.hil.metrics import Check, Verdict

__all__ = [
    "DEFAULT_ROBOTS",
    "FleetCheckReport",
    "FleetRun",
    "KillRecord",
    "compare_runs",
    "parse_robots",
    "run_fleet_check",
]

log = logging.getLogger("robot_stack.hil.fleet")

#: Three arms on the cross-embodiment policy and a Panda on the demo policy: two models side by side.
DEFAULT_ROBOTS = "panda,ur5,so101,panda:reach-touch-v1"
#: How long Serve may take to replace a killed replica (s); replicas start in 6-7 s on an idle 2-core machine.
REPLACE_TIMEOUT_S = 180.0


def parse_robots(text: str, overrides: Sequence[str] = ()) -> tuple[RobotSpec, ...]:
    """``ARM[:MODEL],...`` -> robot specs. MODEL is a shipped model name (``reach-touch-v1``,
    ``reach-xemb/reach-xemb-vq``) or a manifest path; without it the arm runs its demo stack's policy (the
    cross-embodiment ``reach-xemb-vq``; ``overrides`` apply to that stack). Robot ids are ``<arm>-<index>``.

    Raises:
        ConfigError: an unknown arm, a missing manifest, or no robot at all.
    """
    from robot_stack.policy.manifest import PolicyManifest
    from robot_stack.stack.config import load_stack_config

    specs = []
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--robots: expected ARM[:MODEL],... (e.g. {DEFAULT_ROBOTS}), got {text!r}")
    for i, item in enumerate(items):
        arm, _, model = item.partition(":")
        config = load_stack_config("demo", overrides, robot=arm.strip())  # ConfigError naming the known arms
        if model.strip():
            config = config.with_overrides([f"policy.manifest={model.strip()}"])
        path = config.policy.manifest_path().resolve()
        if not path.is_file():
            raise ConfigError(
                f"--robots {item!r}: no policy manifest {path}; name a shipped model (reach-touch-v1, "
                "reach-xemb/reach-xemb-vq) or a manifest file"
            )
        specs.append(RobotSpec(arm.strip(), str(path), PolicyManifest.load(path).model_id, f"{arm.strip()}-{i}"))
    return tuple(specs)


@dataclass(frozen=True)
class KillRecord:
    """The replica killed mid-run (:class:`_ReplicaKiller`).

    Attributes:
        model_id, replica, pid: which one.
        frozen_s: how long it was frozen (SIGSTOP) before the SIGKILL.
        held_calls: the model's calls in flight at the kill; held_s: how long they had been in flight without a
            break (>= :attr:`_ReplicaKiller.STUCK_S`: held by the frozen replica, whose death they then survived).
        after_requests: answers the fleet had given when it was frozen; t_s: kill time since the run began.
        during_run: the robots were still running at the kill.
        retried: Ray calls the dispatcher sent again because the replica died while running them; failed_over:
            requests of those answered by another replica. (Requests the frozen replica had not accepted yet are
            routed to another replica by Ray Serve itself when it dies: they are not counted here.)
        replaced_after_s: kill -> Serve runs the model's full replica count again, without the killed one (None:
            not within :data:`REPLACE_TIMEOUT_S`).
    """

    model_id: str
    replica: str
    pid: int
    frozen_s: float
    held_calls: int
    held_s: float
    after_requests: int
    t_s: float
    during_run: bool
    retried: int
    failed_over: int
    replaced_after_s: float | None = None


@dataclass(frozen=True)
class FleetRun:
    """One run of all robots against one setup (``single`` or ``fleet``).

    Attributes:
        robots: one :class:`RobotRun` per robot, in the order given.
        endpoints: model id -> endpoint the robots of that model used.
        server: the ingress's counters (fleet only); dispatcher: the fleet dispatcher's (retries, failed_over...).
        kill: the replica killed mid-run (fleet run with a kill), else None.
        wall_s: wall-clock seconds of the run (the single servers' start-up included; the fleet's replicas start
            while the single run goes).
    """

    label: str
    robots: tuple[RobotRun, ...]
    endpoints: dict[str, str]
    server: dict[str, Any] = field(default_factory=dict)
    dispatcher: dict[str, Any] = field(default_factory=dict)
    kill: KillRecord | None = None
    wall_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "endpoints": dict(self.endpoints),
            "robots": [r.summary() for r in self.robots],
            "server": {k: v for k, v in self.server.items() if isinstance(v, (int, float, str))},
            "dispatcher": dict(self.dispatcher),
            "kill": None if self.kill is None else self.kill.__dict__,
            "wall_s": round(self.wall_s, 1),
        }


@dataclass(frozen=True)
class FleetCheckReport(Verdict):
    """Both runs, the per-robot comparison and the checks; :attr:`passed` when every check held."""

    single: FleetRun
    fleet: FleetRun
    comparison: tuple[dict[str, Any], ...]
    checks: tuple[Check, ...]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "settings": dict(self.settings),
            "comparison": list(self.comparison),
            "checks": self.checks_dict(),
            "single": self.single.to_dict(),
            "fleet": self.fleet.to_dict(),
        }


def compare_actions(a: RobotRun, b: RobotRun) -> dict[str, Any]:
    """Step-by-step comparison of the chunks two runs of one robot executed, over the episodes' common steps:
    ``compared_steps``, ``identical_steps`` (bit for bit), ``max_abs_diff`` (largest element difference)."""
    compared = identical = 0
    max_diff = 0.0
    for ep_a, ep_b in zip(a.actions, b.actions, strict=False):
        for x, y in zip(ep_a, ep_b, strict=False):
            compared += 1
            if x.shape == y.shape and x.dtype == y.dtype and np.array_equal(x, y):
                identical += 1
            elif x.shape == y.shape:
                max_diff = max(max_diff, float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)))))
            else:
                max_diff = float("inf")
    return {"compared_steps": compared, "identical_steps": identical, "max_abs_diff": max_diff}


def compare_runs(
    single: FleetRun, fleet: FleetRun, *, kill_replica: bool, success_tolerance: int = 0
) -> tuple[tuple[dict[str, Any], ...], tuple[Check, ...]]:
    """The per-robot comparison rows and the checks of a fleet check (see the module docstring)."""
    rows: list[dict[str, Any]] = []
    checks: list[Check] = []
    for a, b in zip(single.robots, fleet.robots, strict=True):
        rid = a.spec.robot_id
        ours, theirs = a.summary()["success_by_seed"], b.summary()["success_by_seed"]
        differing = sorted(s for s in ours.keys() | theirs.keys() if ours.get(s) != theirs.get(s))
        rows.append(
            {
                "robot_id": rid,
                "arm": a.spec.arm,
                "model_id": a.spec.model_id,
                "episodes": len(a.episodes),
                "successes_single": a.successes,
                "successes_fleet": b.successes,
                "seeds_differing": differing,
                **{f"{k}_single": v for k, v in a.safety_counters.items()},
                **{f"{k}_fleet": v for k, v in b.safety_counters.items()},
                "failed_single": sum(a.failed.values()),
                "failed_fleet": sum(b.failed.values()),
                "held_steps_single": a.held_steps,
                "held_steps_fleet": b.held_steps,
                "replicas_fleet": dict(b.replicas),
                "round_trip_p50_ms_single": a.round_trip_p50_ms,
                "round_trip_p50_ms_fleet": b.round_trip_p50_ms,
                **compare_actions(a, b),
            }
        )
        for run in (a, b):
            label = "single" if run is a else "fleet"
            nonzero = {k: v for k, v in run.safety_counters.items() if v}
            checks.append(Check(f"{rid} {label}: safety counters", not nonzero, 0, nonzero or 0))
            lost = {**run.failed, **({"held_steps": run.held_steps} if run.held_steps else {})}
            checks.append(Check(f"{rid} {label}: every request answered", not lost, "0 failed", lost or 0))
            checks.append(Check(f"{rid} {label}: episodes ran", len(run.episodes) > 0, "> 0", len(run.episodes)))
        checks.append(
            Check(
                f"{rid}: same episode outcomes",
                len(differing) <= success_tolerance,
                f"<= {success_tolerance} seeds differing",
                differing,
            )
        )
    if kill_replica:
        kill = fleet.kill
        killed = kill is not None and kill.during_run
        checks.append(Check("replica killed while the robots ran", killed, "a replica killed", kill and kill.replica))
        held = kill.held_s if kill is not None else 0.0
        checks.append(
            Check(
                "the killed replica held requests",
                held >= _ReplicaKiller.STUCK_S,
                f"a call in flight >= {_ReplicaKiller.STUCK_S} s at the kill",
                held,
            )
        )
        replaced = kill.replaced_after_s if kill is not None else None
        checks.append(Check("killed replica replaced", replaced is not None, f"<= {REPLACE_TIMEOUT_S:.0f} s", replaced))
    return tuple(rows), tuple(checks)


class _RobotPool:
    """One worker process per robot (spawned: the parent may run Ray's threads), kept for both runs."""

    def __init__(self, n: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.pools = [ProcessPoolExecutor(max_workers=1, mp_context=ctx) for _ in range(n)]

    def run(
        self,
        specs: Sequence[RobotSpec],
        endpoint_of: Callable[[RobotSpec], str],
        during: Callable[[Callable[[], bool]], None] | None,
        **kwargs: Any,
    ) -> tuple[RobotRun, ...]:
        """All robots at once; ``during(all_done)`` runs in this thread meanwhile (e.g. the replica kill)."""
        futures: list[Future[RobotRun]] = [
            pool.submit(run_robot, spec, endpoint_of(spec), **kwargs)
            for pool, spec in zip(self.pools, specs, strict=True)
        ]
        if during is not None:
            during(lambda: all(f.done() for f in futures))
        return tuple(f.result() for f in futures)

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _manifests(specs: Sequence[RobotSpec]) -> dict[str, str]:
    """Model id -> manifest path, in the order the robots name them (the first is the fleet's default)."""
    out: dict[str, str] = {}
    for spec in specs:
        if out.setdefault(spec.model_id, spec.manifest) != spec.manifest:
            raise ConfigError(
                f"model id {spec.model_id!r} names two manifests ({out[spec.model_id]}, {spec.manifest}); "
                "give each model its own model_id"
            )
    return out


def _single_run(pool: _RobotPool, specs: Sequence[RobotSpec], threads: int, **kwargs: Any) -> FleetRun:
    """(a): one real policy server per model, on loopback."""
    from robot_stack.training.evaluate import served

    t0 = time.perf_counter()
    with contextlib.ExitStack() as stack:
        endpoints = {m: stack.enter_context(served(p, threads=threads)) for m, p in _manifests(specs).items()}
        robots = pool.run(specs, lambda s: endpoints[s.model_id], None, **kwargs)
    return FleetRun("single", robots, endpoints, wall_s=time.perf_counter() - t0)


class _ReplicaKiller:
    """Kills one replica of ``model_id`` mid-run, at a moment it holds requests, and waits for Serve to replace it.

    Once the fleet has answered ``after`` requests the replica is frozen (SIGSTOP: a hung node), so that the robots'
    requests Serve routes to it stay there; as soon as one of the model's calls has been in flight for
    :attr:`STUCK_S` (or after :attr:`FREEZE_MAX_S`) it is killed (SIGKILL: a crash). The requests it held must
    still be answered within their deadlines: those it had accepted are sent again by the dispatcher (``retried``),
    those still waiting for it to accept them are routed to another replica by Ray Serve.
    """

    #: A call in flight this long on a model whose calls take tens of ms is one held by the frozen replica (s).
    STUCK_S = 1.0
    #: Longest freeze before the kill (s); a held request waits this long + its retry, well within its deadline.
    FREEZE_MAX_S = 3.0

    def __init__(self, fleet: Any, model_id: str, replicas: int, after: int) -> None:
        self.fleet, self.model_id, self.replicas, self.after = fleet, model_id, replicas, after
        self.t0 = time.monotonic()
        self.killed: dict[str, Any] | None = None
        self.t_kill = 0.0
        self.replaced_after_s: float | None = None

    def __call__(self, all_done: Callable[[], bool]) -> None:
        server, dispatcher = self.fleet.server, self.fleet.dispatcher
        while not all_done() and server.stats()["infer_ok"] < self.after:
            time.sleep(0.02)
        if all_done():
            log.error("the robots finished before the fleet answered %d requests: no replica was killed", self.after)
            return
        replica, info = next(iter(self.fleet.cluster.replicas(self.model_id, self.replicas).items()))
        if info["node"] != socket.gethostname():
            raise ConfigError(f"replica {replica} runs on node {info['node']}, not here: it cannot be killed")
        before = dict(dispatcher.stats)
        answered = int(server.stats()["infer_ok"])
        pid = int(info["pid"])
        os.kill(pid, signal.SIGSTOP)
        t_freeze = time.monotonic()
        busy_since: float | None = None
        while not all_done() and (now := time.monotonic()) < t_freeze + self.FREEZE_MAX_S:
            if dispatcher.calls_in_flight(self.model_id) == 0:
                busy_since = None
            elif busy_since is None:
                busy_since = now
            elif now - busy_since >= self.STUCK_S:
                break
            time.sleep(0.01)
        during_run = not all_done()
        held = dispatcher.calls_in_flight(self.model_id) if busy_since is not None else 0
        os.kill(pid, signal.SIGKILL)
        self.t_kill = time.monotonic()
        self.killed = {
            "replica": replica,
            "pid": pid,
            "frozen_s": round(self.t_kill - t_freeze, 2),
            "held_calls": held,
            "held_s": round(self.t_kill - busy_since, 2) if busy_since is not None else 0.0,
            "after_requests": answered,
            "during_run": during_run,
            "before": before,
        }
        log.info("killed replica %s of %s (pid %d) after %d answers", replica, self.model_id, pid, answered)
        self._wait_replaced()

    def _wait_replaced(self) -> None:
        """Poll Serve (while the robots run on) until the model runs its full replica count again without the
        killed one, at most until :data:`REPLACE_TIMEOUT_S` after the kill."""
        assert self.killed is not None
        while time.monotonic() < self.t_kill + REPLACE_TIMEOUT_S:
            states = self.fleet.cluster.replica_states().get(self.model_id, {})
            if states.get("RUNNING") == self.replicas:
                try:
                    running = self.fleet.cluster.replicas(self.model_id, self.replicas, timeout_s=30.0)
                except ConfigError:
                    running = {}
                if running and self.killed["replica"] not in running:
                    self.replaced_after_s = round(time.monotonic() - self.t_kill, 2)
                    return
            time.sleep(0.5)

    def record(self) -> KillRecord | None:
        """The kill, with the calls the dispatcher sent again and the time Serve took to replace the replica."""
        if self.killed is None:
            return None
        after, before = self.fleet.dispatcher.stats, self.killed["before"]
        return KillRecord(
            self.model_id,
            self.killed["replica"],
            self.killed["pid"],
            self.killed["frozen_s"],
            self.killed["held_calls"],
            self.killed["held_s"],
            self.killed["after_requests"],
            round(self.t_kill - self.t0, 2),
            self.killed["during_run"],
            after.get("retries", 0) - before.get("retries", 0),
            after.get("failed_over", 0) - before.get("failed_over", 0),
            self.replaced_after_s,
        )


def _fleet_run(
    pool: _RobotPool,
    specs: Sequence[RobotSpec],
    config: Any,
    cluster: Any,
    kill_after: int | None,
    ready: Callable[[], None],
    **kwargs: Any,
) -> FleetRun:
    """(b): one ingress, ``config.replicas`` replicas per model; the kill when ``kill_after`` is set. ``ready()``
    is called once the replicas run, before the robots start (it waits for the single run)."""
    from robot_stack.fleet.serve import open_fleet

    manifests = _manifests(specs)
    with open_fleet(list(manifests.values()), config, "tcp://127.0.0.1:*", cluster=cluster) as fleet:
        ready()
        t0 = time.perf_counter()
        killer = None
        if kill_after is not None:
            busiest = max(manifests, key=lambda m: sum(s.model_id == m for s in specs))
            killer = _ReplicaKiller(fleet, busiest, config.replicas, kill_after)
        robots = pool.run(specs, lambda s: fleet.endpoint, killer, **kwargs)
        kill = killer.record() if killer is not None else None
        server = fleet.server.stats()
        dispatcher = dict(fleet.dispatcher.stats)
    endpoints = dict.fromkeys(manifests, fleet.endpoint)
    return FleetRun("fleet", robots, endpoints, server, dispatcher, kill, time.perf_counter() - t0)


@contextlib.contextmanager
def _cluster(config: Any, cluster: Any) -> Iterator[Any]:
    """The given Ray cluster, or a private loopback instance for the duration of the check."""
    if cluster is not None:
        yield cluster
        return
    from robot_stack.fleet.cluster import connect

    own = connect(config)
    try:
        yield own
    finally:
        own.close()


def run_fleet_check(
    robots: Sequence[RobotSpec],
    episodes: int = 10,
    seed: int = 1000,
    *,
    replicas: int = 2,
    kill_replica: bool = False,
    kill_after: int | None = None,
    timeout_s: float = 10.0,
    max_duration_s: float = 8.0,
    success_tolerance: int = 0,
    overrides: Sequence[str] = (),
    fleet_config: Any = None,
    cluster: Any = None,
    log_level: int = logging.ERROR,
) -> FleetCheckReport:
    """Run the robots against single servers, then against the fleet, and compare (module docstring).

    Args:
        robots: the fleet (:func:`parse_robots`); each robot runs in its own process.
        episodes, seed: episodes per robot, on seeds ``seed ..`` (the same in both runs).
        replicas: replicas per model in the fleet run, each with 1 ONNX Runtime thread and an equal share of this
            machine's CPUs (``fleet_config`` overrides the whole fleet setup).
        kill_replica: kill one replica of the model most robots use once the fleet answered ``kill_after``
            requests (default: about a third of the run's requests).
        timeout_s: each request's deadline (s, wall clock).
        max_duration_s: simulated seconds before an episode counts as failed.
        success_tolerance: seeds per robot whose outcome may differ between the runs.
        overrides: ``section.field=value`` overrides of every robot's ``demo`` stack (both runs).
        cluster: a connected :class:`~robot_stack.fleet.cluster.RayCluster` to deploy on (tests share one);
            None = a private loopback instance for this check.
        log_level: the robot processes' log level on stderr.

    Raises:
        ConfigError: bad settings, or a server / the fleet that does not start.
    """
    from robot_stack.fleet.config import FleetConfig

    if episodes < 1 or not robots:
        raise ConfigError(f"fleet check: expected >= 1 robot and >= 1 episode, got {len(robots)} and {episodes}")
    if len({r.robot_id for r in robots}) != len(robots):
        raise ConfigError(f"fleet check: robot ids must be unique, got {[r.robot_id for r in robots]}")
    if fleet_config is None:  # every model's replicas must fit this machine's CPUs (Ray waits for room otherwise)
        slots = len(_manifests(robots)) * replicas
        fleet_config = FleetConfig(
            replicas=replicas, threads=1, cpus_per_replica=min(1.0, (os.cpu_count() or 1) / slots)
        )
    config = fleet_config
    if kill_replica and config.replicas < 2:
        raise ConfigError("--kill-replica needs --replicas >= 2 (the robots' requests must have a replica to go to)")
    if kill_replica and kill_after is None:
        kill_after = max(1, len(robots) * episodes * 12)  # ~a third of the requests: episodes take 25-80 steps
    run_kwargs = {
        "episodes": episodes,
        "seed": seed,
        "timeout_s": timeout_s,
        "max_duration_s": max_duration_s,
        "overrides": tuple(overrides),
        "log_level": log_level,
    }
    pool = _RobotPool(len(robots))
    # (a) runs in a thread while the fleet's replicas start in this one (the episodes do not depend on the load)
    done: dict[str, Any] = {}

    def single_run() -> None:
        try:
            done["run"] = _single_run(pool, robots, threads=config.threads or 1, **run_kwargs)
        except BaseException as exc:  # re-raised in this thread by ready()
            done["error"] = exc

    def ready() -> None:
        thread.join()
        if "error" in done:
            raise done["error"]

    thread = threading.Thread(target=single_run, name="fleet-check-single", daemon=True)
    try:
        # Ray first: its start-up times out on a machine the robots keep busy; the replicas then start meanwhile
        with _cluster(config, cluster) as ray_cluster:
            thread.start()
            kill = kill_after if kill_replica else None
            fleet = _fleet_run(pool, robots, config, ray_cluster, kill, ready, **run_kwargs)
    finally:
        if thread.is_alive():
            thread.join()
        pool.close()
    single: FleetRun = done["run"]
    rows, checks = compare_runs(single, fleet, kill_replica=kill_replica, success_tolerance=success_tolerance)
    settings = {
        "robots": [f"{r.robot_id}:{r.model_id}" for r in robots],
        "episodes": episodes,
        "seed": seed,
        "replicas": config.replicas,
        "kill_replica": kill_replica,
        "kill_after_requests": kill_after if kill_replica else None,
        "timeout_s": timeout_s,
        "max_duration_s": max_duration_s,
        "success_tolerance": success_tolerance,
        "overrides": list(overrides),
        "threads_per_server": config.threads,
        "manifests": {m: str(Path(p)) for m, p in _manifests(robots).items()},
    }
    return FleetCheckReport(single, fleet, rows, checks, settings)
