"""CURVE key files: ``robot-stack keys generate``, loading, allow-list folder, and a server that keeps serving."""

from __future__ import annotations

import argparse
import contextlib
import os
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
import zmq.auth

from robot_stack.errors import ConfigError, RequestTimeoutError, ServerError
from robot_stack.policy.service import serve
from robot_stack.policy.toy_models import ToyModel, build_toy_model, toy_manifest_dict
from robot_stack.transport import PolicyClient, PolicyServer
from robot_stack.transport.cli import add_keys_parser
from robot_stack.transport.keys import (
    client_curve_kwargs,
    generate_keys,
    load_allow_dir,
    load_allow_list,
    load_key_pair,
    load_public_key,
)

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="robot-stack")
    add_keys_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_writes_pyzmq_compatible_files_with_private_secret(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keys = tmp_path / "keys"
    assert run_cli(["keys", "generate", str(keys), "--name", "server", "--server"]) == 0
    assert run_cli(["keys", "generate", str(keys), "--name", "robot1"]) == 0
    assert "allow-listed" in capsys.readouterr().out
    for name in ("server", "robot1"):
        assert stat.S_IMODE(os.stat(keys / f"{name}.key_secret").st_mode) == 0o600
        public, secret = zmq.auth.load_certificate(str(keys / f"{name}.key_secret"))
        assert public == load_public_key(keys / f"{name}.key") and len(secret) == 40
        assert zmq.curve_public(secret) == public  # the pair belongs together
    assert sorted(p.name for p in (keys / "allowed").iterdir()) == ["robot1.key"]  # the server key is not allowed
    assert load_allow_dir(keys / "allowed") == {load_public_key(keys / "robot1.key"): "robot1"}
    with pytest.raises(ConfigError, match="already exist"):
        generate_keys(keys, "robot1")
    assert run_cli(["keys", "generate", str(keys), "--name", "robot1", "--force"]) == 0


def test_bad_key_files_are_refused_with_advice(tmp_path: Path) -> None:
    pair = generate_keys(tmp_path, "robot")
    os.chmod(pair.secret_file, 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_key_pair(pair.secret_file)
    with pytest.raises(ConfigError, match="not the public"):
        load_key_pair(pair.public_file)
    with pytest.raises(ConfigError, match="not found"):
        load_public_key(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a certificate")
    with pytest.raises(ConfigError, match="is not a ZeroMQ CURVE key file"):
        load_public_key(tmp_path / "junk.key")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no client could connect"):
        load_allow_dir(tmp_path / "empty")
    with pytest.raises(ConfigError, match="invalid"):
        generate_keys(tmp_path, "../escape")


def test_allow_listed_key_is_served_unknown_key_is_rejected_and_counted(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    server_pair = generate_keys(keys, "server")
    generate_keys(keys, "robot1", allow_dir=keys / "allowed")
    generate_keys(tmp_path / "other", "intruder")  # a valid key pair that nobody allow-listed

    def echo(arrays: dict, meta: dict) -> tuple[dict, dict]:
        return {"x": np.asarray(arrays["x"]) * 2}, {}

    with PolicyServer(
        echo,
        bind="tcp://127.0.0.1:*",
        curve_secret_key=server_pair.secret_key,
        authorized_client_keys=load_allow_dir(keys / "allowed"),
    ) as srv:
        x = {"x": np.ones(3, np.float32)}
        good_kwargs = client_curve_kwargs(keys / "server.key", keys / "robot1.key_secret")
        with PolicyClient(srv.endpoint, "robot1", timeout_s=5, **good_kwargs) as good:
            assert good.infer(x).arrays["x"][0] == 2
        bad_kwargs = client_curve_kwargs(keys / "server.key", tmp_path / "other" / "intruder.key_secret")
        with (
            PolicyClient(srv.endpoint, "intruder", timeout_s=0.3, **bad_kwargs) as bad,
            pytest.raises(RequestTimeoutError),
        ):
            bad.infer(x)
        stats = srv.stats()
        assert stats["auth_rejected"] >= 1 and stats["received"] == 1
        with PolicyClient(srv.endpoint, "robot1", timeout_s=5, **good_kwargs) as again:  # still serving
            assert again.infer(x).arrays["x"][1] == 2


@contextlib.contextmanager
def serving_with_keys(tmp_path: Path, keys: Path) -> Iterator[tuple[str, ToyModel]]:
    """``serve()`` a toy model (state float32[3] -> actions[2, 3]) with CURVE from ``keys`` in a thread; yield
    (endpoint, model); stop it on exit."""
    model = build_toy_model(tmp_path / "m.onnx", [("state", "float32", (3,))], ("actions", (2, 3)))
    (tmp_path / "m.yaml").write_text(yaml.safe_dump(toy_manifest_dict(model, "m")))
    ready: list[str] = []
    stop = threading.Event()
    kwargs = {"on_ready": ready.append, "stop_event": stop, "threads": 1}
    kwargs |= {"curve_secret": keys / "server.key_secret", "allow_dir": keys / "allowed"}
    t = threading.Thread(target=serve, args=(tmp_path / "m.yaml", "tcp://127.0.0.1:*", "cpu"), kwargs=kwargs)
    t.start()
    try:
        for _ in range(500):
            if ready or not t.is_alive():
                break
            stop.wait(0.01)
        assert ready, "server did not start"
        yield ready[0], model
    finally:
        stop.set()
        t.join(10)


def test_serve_loads_key_files(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, "server")
    generate_keys(keys, "robot1", allow_dir=keys / "allowed")
    with serving_with_keys(tmp_path, keys) as (endpoint, model):
        kwargs = client_curve_kwargs(keys / "server.key", keys / "robot1.key_secret")
        with PolicyClient(endpoint, "robot1", timeout_s=5, **kwargs) as client:
            state = np.ones((1, 3), np.float32)
            np.testing.assert_allclose(
                client.infer({"state": state}).arrays["actions"], model.reference({"state": state}), rtol=1e-5
            )
        with PolicyClient(endpoint, "plain", timeout_s=0.3) as plain, pytest.raises(RequestTimeoutError):
            plain.health()
    with pytest.raises(ConfigError, match="needs --curve-secret"):
        serve(tmp_path / "m.yaml", "tcp://127.0.0.1:*", allow_dir=keys / "allowed")


def test_robot_id_sidecars_are_written_loaded_and_validated(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    keys = tmp_path / "keys"
    assert run_cli(["keys", "generate", str(keys), "--name", "robot1", "--robots", "arm-left, arm-right"]) == 0
    assert "robot ids ['arm-left', 'arm-right']" in capsys.readouterr().out
    assert run_cli(["keys", "generate", str(keys), "--name", "robot2"]) == 0  # no sidecar: any id
    allowed = keys / "allowed"
    assert (allowed / "robot1.robots").read_text().splitlines()[1:] == ["arm-left", "arm-right"]
    grants = load_allow_list(allowed)
    by_name = {g.name: g for g in grants.values()}
    assert by_name["robot1"].robot_ids == {"arm-left", "arm-right"} and by_name["robot2"].robot_ids is None
    assert by_name["robot1"].allows("arm-left") and not by_name["robot1"].allows("arm-x")
    assert grants[load_public_key(keys / "robot1.key")] is by_name["robot1"]
    # comments, blank lines and '*' (= any id)
    (allowed / "robot2.robots").write_text("# the spare arm\n\n*\n")
    assert {g.name: g.robot_ids for g in load_allow_list(allowed).values()}["robot2"] is None
    # regenerating without --robots removes the binding instead of leaving a stale one
    assert run_cli(["keys", "generate", str(keys), "--name", "robot1", "--force"]) == 0
    assert not (allowed / "robot1.robots").exists()
    for text, match in (("# nothing\n", "lists no robot id"), ("arm left\n", "not a robot id")):
        (allowed / "robot2.robots").write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_allow_list(allowed)
    (allowed / "robot2.robots").unlink()
    (allowed / "ghost.robots").write_text("arm\n")
    with pytest.raises(ConfigError, match="without a matching .key"):
        load_allow_list(allowed)
    with pytest.raises(ConfigError, match="a --server key has none"):
        run_cli(["keys", "generate", str(keys), "--name", "server", "--server", "--robots", "a"])
    with pytest.raises(ConfigError, match="empty robot-id list"):
        generate_keys(keys, "robot3", allow_dir=allowed, robot_ids=[])


def test_serve_binds_robot_ids_to_client_keys(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    generate_keys(keys, "server")
    generate_keys(keys, "robot1", allow_dir=keys / "allowed", robot_ids=["arm-left"])
    with serving_with_keys(tmp_path, keys) as (endpoint, _):
        curve = client_curve_kwargs(keys / "server.key", keys / "robot1.key_secret")
        state = {"state": np.ones((1, 3), np.float32)}
        with PolicyClient(endpoint, "arm-left", timeout_s=5, **curve) as client:
            assert client.infer(state).arrays["actions"].shape == (1, 2, 3)
        with PolicyClient(endpoint, "arm-right", timeout_s=5, **curve) as other, pytest.raises(ServerError) as info:
            other.infer(state)
        assert info.value.code == "robot_forbidden" and "robot1.robots" in info.value.reason
