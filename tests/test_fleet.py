"""The Ray Serve fleet (``serve --ray``) on one local Ray instance: loopback only, started once for this module
(Ray's start-up is the expensive part), stopped at the end.

Skipped where Ray is not installed; CI installs it (``robot-stack[fleet]``, part of ``dev``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zmq

ray = pytest.importorskip("ray", reason="robot-stack[fleet] (ray[serve]) is not installed")

from robot_stack.errors import ConfigError, RequestTimeoutError, ServerError  # noqa: E402
from robot_stack.fleet.cluster import RayCluster, connect  # noqa: E402
from robot_stack.fleet.config import FleetConfig  # noqa: E402
from robot_stack.fleet.dispatcher import FleetDispatcher  # noqa: E402
from robot_stack.fleet.serve import open_fleet  # noqa: E402
from robot_stack.policy import OnnxPolicy, PolicyManifest  # noqa: E402
from robot_stack.policy.service import PolicyService  # noqa: E402
from robot_stack.policy.toy_models import build_toy_model, toy_manifest_dict  # noqa: E402
from robot_stack.transport import PolicyClient, PolicyServer  # noqa: E402
from robot_stack.transport.keys import client_curve_kwargs, generate_keys, load_allow_list, load_key_pair  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

pytestmark = pytest.mark.fleet

#: Replicas reserve a quarter CPU each so that 2 + 1 replicas fit an instance advertising 2 CPUs.
CONFIG = FleetConfig(replicas=2, cpus_per_replica=0.25, num_cpus=2, batch_wait_ms=5.0, max_batch=4)


def _model(folder: Path, model_id: str, horizon: int, hidden: int) -> Path:
    model = build_toy_model(
        folder / f"{model_id}.onnx",
        [("rgb", "uint8", (24, 32, 3)), ("state", "float32", (8,))],
        ("actions", (horizon, 7)),
        hidden=hidden,
        scale=0.01,
    )
    path = folder / f"{model_id}.yaml"
    path.write_text(yaml.safe_dump(toy_manifest_dict(model, model_id, max_batch=4)))
    return path


def _obs(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "rgb": rng.integers(0, 256, (1, 24, 32, 3), dtype=np.uint8),
        "state": rng.normal(size=(1, 8)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fleet-models")
    # arm-a takes ~10 ms per request, so that its replicas are busy while 8 robots drive them (a replica that
    # dies then certainly has requests in flight)
    return {"arm-a": _model(folder, "arm-a", 8, 4096), "arm-b": _model(folder, "arm-b", 4, 32)}


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """The one Ray instance of this module (loopback, no dashboard, Serve without HTTP)."""
    c = connect(CONFIG)
    try:
        yield c
    finally:
        c.close()
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def fleet(cluster: RayCluster, models: dict[str, Path]) -> Iterator[tuple[PolicyServer, FleetDispatcher]]:
    """arm-a (the default model) and arm-b, 2 replicas each, behind one ingress."""
    with open_fleet([models["arm-a"], models["arm-b"]], CONFIG, "tcp://127.0.0.1:*", cluster=cluster) as f:
        yield f.server, f.dispatcher
    assert cluster.models == {}
    assert f.dispatcher.closed  # its loop stopped and closed: no pending task left to the garbage collector


def _run_clients(
    endpoint: str, n: int, per_client: int, model_id: str = "", timeout_s: float = 10.0, **kw: Any
) -> tuple[list[Any], list[str]]:
    replies: list[Any] = []
    errors: list[str] = []
    lock = threading.Lock()

    def robot(i: int) -> None:
        with PolicyClient(endpoint, f"robot{i}", timeout_s=timeout_s, model_id=model_id, **kw) as client:
            for k in range(per_client):
                try:
                    reply = client.infer(_obs(i), {"step": k})
                except Exception as exc:
                    with lock:
                        errors.append(f"robot{i} step {k}: {type(exc).__name__}: {exc}")
                    continue
                with lock:
                    replies.append((i, reply))

    threads = [threading.Thread(target=robot, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return replies, errors


def test_autoscaling_and_gpu_settings_reach_the_deployment() -> None:
    """What ``--autoscale 1,3 --gpus-per-replica 0.5`` deploys (Serve validates the options; nothing starts). First
    in the module: it needs no cluster, and runs before one exists."""
    from robot_stack.fleet.app import replica_deployment
    from robot_stack.fleet.cluster import deployment_options

    options = deployment_options(FleetConfig(autoscale=(1, 3), gpus_per_replica=0.5), max_batch=4)
    deployment = replica_deployment(4, **options)
    auto = deployment._deployment_config.autoscaling_config
    assert (auto.min_replicas, auto.max_replicas, auto.target_ongoing_requests) == (1, 3, 4)
    assert deployment._deployment_config.max_ongoing_requests == 8
    assert deployment.ray_actor_options["num_gpus"] == 0.5
    fixed = replica_deployment(4, **deployment_options(FleetConfig(replicas=3), 4))
    assert fixed.num_replicas == 3 and fixed._deployment_config.autoscaling_config is None


def test_replicas_the_private_instance_cannot_place_are_refused(cluster: RayCluster, tmp_path: Path) -> None:
    """Serve waits forever for replicas no node can take (``serve --ray`` with two models of 2 replicas x 1 CPU on
    a 2-core machine hung in ``serve.run``); on the private instance, where no node will join, it is refused."""
    path = _model(tmp_path, "arm-d", 2, 32)
    with pytest.raises(ConfigError, match=r"cannot place arm-d: 2 replica\(s\) need 3 CPU .*--cpus-per-replica"):
        cluster.deploy(path, FleetConfig(replicas=2, cpus_per_replica=1.5))
    assert "arm-d" not in cluster.models


def test_two_replicas_serve_eight_clients(fleet: Any, models: dict[str, Path]) -> None:
    server, dispatcher = fleet
    replies, errors = _run_clients(server.endpoint, 8, 12)
    assert errors == []
    assert len(replies) == 8 * 12
    local = PolicyService(OnnxPolicy(PolicyManifest.load(models["arm-a"]), "cpu", intra_op_threads=1))
    for i, reply in replies[:16]:
        expected, _ = local(_obs(i), {})
        np.testing.assert_allclose(reply.arrays["actions"], expected["actions"], rtol=1e-5, atol=1e-6)
        assert reply.meta["model_id"] == "arm-a"
    used = {r.meta["fleet"]["replica"] for _, r in replies}
    assert len(used) == 2, f"both replicas should serve, got {used}"
    assert max(r.meta["fleet"]["batch"] for _, r in replies) > 1, "replicas should micro-batch concurrent robots"
    stats = dispatcher.stats
    assert stats["requests"] > stats["calls"], f"busy replicas: requests should share Ray calls ({stats})"
    health = PolicyClient(server.endpoint, "monitor", timeout_s=5).health()
    assert health["models"] == ["arm-a", "arm-b"]
    assert health["fleet"]["capacity"] == dispatcher.capacity
    assert len(health["clients"]) >= 8


def test_two_models_side_by_side(fleet: Any) -> None:
    server, _ = fleet
    with (
        PolicyClient(server.endpoint, "ra", timeout_s=10, model_id="arm-a") as a,
        PolicyClient(server.endpoint, "rb", timeout_s=10, model_id="arm-b") as b,
    ):
        ra, rb = a.infer(_obs(1)), b.infer(_obs(1))
        assert ra.meta["model_id"] == "arm-a" and ra.arrays["actions"].shape == (1, 8, 7)
        assert rb.meta["model_id"] == "arm-b" and rb.arrays["actions"].shape == (1, 4, 7)
        assert a.metadata()["horizon"] == 8 and b.metadata()["horizon"] == 4
        bad = {"rgb": np.zeros((1, 24, 32, 3), np.uint8), "state": np.zeros((1, 9), np.float32)}
        with pytest.raises(ServerError) as info:
            b.infer(bad)  # refused at the ingress, before anything reaches the fleet
        assert info.value.code == "policy_error"  # type: ignore[attr-defined]
    with PolicyClient(server.endpoint, "rc", timeout_s=5, model_id="arm-c") as c, pytest.raises(ServerError) as info:
        c.infer(_obs(1))
    assert info.value.code == "model_mismatch"  # type: ignore[attr-defined]
    assert "arm-a" in str(info.value) and "arm-b" in str(info.value)


def _replica_pids(cluster: RayCluster, model_id: str, n: int) -> dict[str, int]:
    return {replica: info["pid"] for replica, info in cluster.replicas(model_id, n).items()}


def test_killed_replica_loses_no_request_and_is_replaced(fleet: Any, cluster: RayCluster) -> None:
    server, dispatcher = fleet
    pids = _replica_pids(cluster, "arm-a", 2)
    victim_id, victim_pid = next(iter(pids.items()))
    out: dict[str, Any] = {}

    def load() -> None:
        out["replies"], out["errors"] = _run_clients(server.endpoint, 8, 40, timeout_s=15.0)

    served_before = server.stats()["infer_ok"]
    t = threading.Thread(target=load)
    t.start()
    assert wait_until(lambda: server.stats()["infer_ok"] >= served_before + 40, timeout_s=30, poll_s=0.005)
    os.kill(victim_pid, signal.SIGKILL)  # mid-run: requests executing on it fail with ActorDiedError, and are retried
    t.join(120)
    assert out["errors"] == [], "a request with time left was lost"
    assert len(out["replies"]) == 8 * 40
    late = [r for _, r in out["replies"][-40:]]
    assert all(r.meta["fleet"]["replica"] != victim_id for r in late)

    def replaced() -> bool:
        return cluster.replica_states()["arm-a"].get("RUNNING") == 2

    assert wait_until(replaced, timeout_s=180, poll_s=0.5), cluster.replica_states()
    now = _replica_pids(cluster, "arm-a", 2)
    assert victim_id not in now and victim_pid not in now.values()
    # Whether a request was executing on the victim at that instant is up to timing (Ray re-routes those still
    # being placed by itself); the dispatcher's retries answer the ones that were (`failed_over` counts them).
    assert dispatcher.stats.get("deadline_in_fleet", 0) == 0, dispatcher.stats


def test_without_a_live_replica_the_robot_gets_a_deadline_error(fleet: Any, cluster: RayCluster) -> None:
    server, dispatcher = fleet
    before = server.stats()["deadline_exceeded"], dispatcher.stats.get("deadline_in_fleet", 0)
    for pid in _replica_pids(cluster, "arm-b", 2).values():
        os.kill(pid, signal.SIGKILL)
    with (
        PolicyClient(server.endpoint, "rb", timeout_s=0.5, model_id="arm-b") as b,
        pytest.raises((RequestTimeoutError, ServerError)) as caught,
    ):
        b.infer(_obs(2))
    # the robot's own timeout and the deadline it sent expire together: on a loaded host the fleet's
    # deadline_exceeded answer can arrive before the client gives up; either way it is a deadline, never a chunk
    err = caught.value
    assert isinstance(err, RequestTimeoutError) or getattr(err, "code", "") == "deadline_exceeded", err
    assert wait_until(lambda: server.stats()["deadline_exceeded"] == before[0] + 1, timeout_s=10)
    assert dispatcher.stats["deadline_in_fleet"] == before[1] + 1


@pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")
def test_curve_is_enforced_at_the_ingress(fleet: Any, tmp_path: Path) -> None:
    _, dispatcher = fleet
    keys, allowed_dir = tmp_path / "keys", tmp_path / "allowed"
    generate_keys(keys, "server")
    generate_keys(keys, "arm1", allow_dir=allowed_dir, robot_ids=["arm1"])
    generate_keys(tmp_path / "other", "stranger")
    secret = load_key_pair(keys / "server.key_secret").secret_key
    with PolicyServer(
        dispatcher, "tcp://127.0.0.1:*", curve_secret_key=secret, authorized_client_keys=load_allow_list(allowed_dir)
    ) as srv:
        good = client_curve_kwargs(keys / "server.key", keys / "arm1.key_secret")
        with PolicyClient(srv.endpoint, "arm1", timeout_s=10, **good) as client:
            assert client.infer(_obs(3)).arrays["actions"].shape == (1, 8, 7)
        with PolicyClient(srv.endpoint, "arm2", timeout_s=5, **good) as other, pytest.raises(ServerError) as info:
            other.infer(_obs(3))  # the key may send as arm1 only
        assert info.value.code == "robot_forbidden"  # type: ignore[attr-defined]
        stranger = client_curve_kwargs(keys / "server.key", tmp_path / "other" / "stranger.key_secret")
        with PolicyClient(srv.endpoint, "arm1", timeout_s=0.5, **stranger) as bad, pytest.raises(RequestTimeoutError):
            bad.infer(_obs(3))
        with PolicyClient(srv.endpoint, "arm1", timeout_s=0.5) as plain, pytest.raises(RequestTimeoutError):
            plain.infer(_obs(3))
        assert wait_until(lambda: srv.stats()["auth_rejected"] >= 1, timeout_s=5)
        assert srv.stats()["infer_ok"] == 1


def test_the_ingress_attaches_to_applications_the_cluster_runs(fleet: Any, cluster: RayCluster, tmp_path: Path) -> None:
    """A RayService-style deployment (``robot_stack.fleet.app:build``) served by a second ingress with attach."""
    from ray import serve

    from robot_stack.fleet.app import build

    path = _model(tmp_path, "arm-c", 2, 32)
    with cluster.lock:  # what a RayService would deploy; serialised with the fleet's own calls into Serve
        serve.run(build({"manifest": str(path), "max_batch": 2}), name="arm-c", route_prefix=None)
    try:
        config = FleetConfig(replicas=1, max_batch=2)
        with (
            open_fleet([path], config, "tcp://127.0.0.1:*", cluster=cluster, attach=True) as attached,
            PolicyClient(attached.endpoint, "rc", timeout_s=10) as client,
        ):
            assert client.infer(_obs(4)).arrays["actions"].shape == (1, 2, 7)
        with cluster.lock:
            assert "arm-c" in serve.status().applications, "an attached application is left running"
        assert set(cluster.models) == {"arm-a", "arm-b"}, "the module's fleet is untouched"
    finally:
        with cluster.lock:
            serve.delete("arm-c")


def test_ray_listens_on_loopback_only(fleet: Any) -> None:
    """Every TCP port the private instance's processes (replicas included) listen on is bound to 127.0.0.1, and
    Ray's token authentication is on."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=False).stdout
    if "pid=" not in out:
        pytest.skip("ss is not available or shows no socket owners here")
    ray_pids = _ray_processes()
    exposed = []
    for line in out.splitlines():
        fields = line.split()
        local = fields[3]
        owner = " ".join(fields[5:])
        loopback = local.startswith(("127.0.0.1:", "[::1]:", "[::ffff:127.0.0.1]:"))
        if any(f"pid={pid}," in owner for pid in ray_pids) and not loopback:
            exposed.append(line)
    owned = [line for line in out.splitlines() if any(f"pid={pid}," in line for pid in ray_pids)]
    assert len(owned) >= 5, "the instance's GCS, raylet, agents and replicas should be listening"
    assert exposed == []
    from ray._private.authentication.authentication_utils import is_token_auth_enabled

    assert is_token_auth_enabled()


def _ray_processes() -> set[int]:
    """Pids of this process and all its descendants (the private instance's Ray processes), from /proc."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found = {os.getpid()}
    while True:
        more = {pid for pid, ppid in parent.items() if ppid in found} - found
        if not more:
            return found
        found |= more


def test_simulated_robots_get_the_same_safety_results_from_the_fleet(cluster: RayCluster) -> None:
    """The fleet check of ``robot-stack fleet check``, short: 3 simulated robots (each in its own process; two
    models side by side) x 2 episodes against one real server per model, then against 2 replicas per model on this
    module's Ray instance, one replica frozen and then killed while it held requests. Same safety results (all 0),
    every request answered, the same chunks bit for bit (batch size 1, one ONNX Runtime thread in both) and so the
    same outcomes; the requests the killed replica held were answered, and it was replaced."""
    from robot_stack.hil.fleet_check import parse_robots, run_fleet_check

    robots = parse_robots("panda:reach-touch-v1,ur5,so101")
    config = FleetConfig(replicas=2, cpus_per_replica=0.25, threads=1)
    report = run_fleet_check(
        robots, 2, kill_replica=True, kill_after=15, max_duration_s=1.5, fleet_config=config, cluster=cluster
    )
    assert report.passed, report.failures
    assert [r["robot_id"] for r in report.comparison] == ["panda-0", "ur5-1", "so101-2"]
    for row in report.comparison:
        for key in ("interventions", "unsafe_commands", "outside_box_commands", "stale_replies", "failed"):
            assert row[f"{key}_single"] == row[f"{key}_fleet"] == 0, (key, row)
        assert row["identical_steps"] == row["compared_steps"] > 0, row
        assert row["seeds_differing"] == []
        assert len(row["replicas_fleet"]) >= 1
    for run in report.fleet.robots:
        assert run.answered == run.requests > 0 and run.commands > 0
    kill = report.fleet.kill
    assert kill is not None and kill.model_id == "reach-xemb-vq" and kill.during_run
    assert kill.held_calls >= 1 and kill.held_s >= 1.0, "the replica should have died holding requests"
    assert kill.replaced_after_s is not None
    assert report.fleet.dispatcher.get("deadline_in_fleet", 0) == 0, report.fleet.dispatcher
    assert set(report.fleet.endpoints) == {"reach-touch-v1", "reach-xemb-vq"}
    assert len(set(report.single.endpoints.values())) == 2 and len(set(report.fleet.endpoints.values())) == 1
    assert not {"reach-touch-v1", "reach-xemb-vq"} & cluster.models.keys(), "the check deletes its models again"
