"""One stack, assembled once: StackConfig presets and overrides, the builder, and the layer contract."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

import robot_stack
from robot_stack.errors import ConfigError
from robot_stack.stack import StackConfig, available_presets, load_stack_config

ROOT = Path(__file__).resolve().parents[1]


def test_every_preset_loads_and_round_trips() -> None:
    assert {"demo", "hardware"} <= set(available_presets())
    for name in available_presets():
        config = load_stack_config(name)
        assert config.name == name
        assert StackConfig.from_dict(config.to_dict()) == config


def test_overrides_reach_every_section_and_serials_stay_strings() -> None:
    config = load_stack_config(
        "hardware",
        ["control.rate_hz=1000", "cameras.front.serial=123456789012", "policy.request_timeout_s=0.25"],
    )
    assert config.control.rate_hz == 1000.0
    assert config.cameras[0].serial == "123456789012"  # a YAML integer, kept as the string a serial is
    assert config.policy.request_timeout_s == 0.25
    assert load_stack_config("demo").control_rate_hz == 500.0  # presets are values: the override made a copy


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["control.rate=1000"], "unknown field control.rate"),
        (["cameras.back.width=10"], "no camera 'back'"),
        (["control.rate_hz=fast"], "expected a number"),
        (["control.blend=average"], "splice | ensemble | none"),
        (["policy.action_head=tokens"], "action head 'tokens' unknown"),
        (["control.rate_hz"], "expected section.field=value"),
        (["robot.kind=factory"], "package.module:function"),
    ],
)
def test_bad_overrides_are_config_errors_that_say_what_was_expected(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_stack_config("demo", overrides)


def test_unknown_keys_and_presets_are_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("control: {rate_hz: 500, watchdog: 0.3}\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['watchdog'\]"):
        load_stack_config(bad)
    with pytest.raises(ConfigError, match="preset 'nope' unknown; available: demo"):
        load_stack_config("nope")


def test_the_demo_and_every_hil_scenario_run_the_same_stack() -> None:
    # the scenario changes only what it names (rate, watchdog, deadlines, episode length, box, robot id); every
    # other piece (decoder reach policy, blending, pipelining, recovery, guard) is the demo's
    import robot_stack.demo.loop as demo
    import robot_stack.hil.harness as harness
    from robot_stack.demo.loop import demo_config
    from robot_stack.hil import load_scenario
    from robot_stack.stack import build_stack

    assert demo.build_stack is harness.build_stack is build_stack
    shipped = demo_config()
    for path in sorted((ROOT / "scenarios").glob("*.yaml")):
        scenario = load_scenario(path)
        assert scenario.stack == "demo"
        hil = harness.scenario_stack_config(scenario)
        assert hil.decoder == shipped.decoder and hil.cycle == shipped.cycle and hil.cameras == shipped.cameras
        assert hil.policy.manifest_path() == shipped.policy.manifest_path()
        assert hil.control.blend == shipped.control.blend
        assert hil.control.executor == shipped.control.executor  # HIL rehearses the demo's control loop
        assert hil.control.extension_s == scenario.watchdog_s  # late chunks come to rest within the watchdog


def test_the_control_loop_is_a_thread_or_a_real_time_process() -> None:
    config = load_stack_config("demo", ["control.executor=thread"])
    assert config.control.executor == "thread"
    for bad, message in (
        (["control.executor=fiber"], "control.executor"),
        (["control.realtime_priority=120"], "realtime_priority"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_stack_config("demo", bad)


@pytest.mark.realtime
def test_the_process_executor_drives_the_sim_cell_and_lives_across_episodes() -> None:
    # control.executor: process — the loop runs in its own process, the MuJoCo world stays here and applies every
    # set-point at its own time when it syncs; one process for the whole run, one fresh executor per episode
    import os

    import numpy as np

    from robot_stack.clock import MonotonicClock
    from robot_stack.robots import panda
    from robot_stack.stack.build import build_cell, build_process_executor, build_scheduler
    from robot_stack.types import JointTrajectory

    config = load_stack_config("demo", ["control.executor=process"])
    clock = MonotonicClock()
    with build_cell(config, clock) as cell:
        executor, close = build_process_executor(config, cell.robot, clock, cell.world)
        try:
            # spawned when built (seconds on a loaded host), not in the first episode's start(): an episode's clock
            # and fault schedule start before start() is called
            pid = executor.pid
            assert pid is not None and os.kill(pid, 0) is None
            executor.start()
            assert executor.pid == pid
            scheduler = build_scheduler(config, executor)
            t0 = clock.now_ns()
            steps = np.arange(8) * 0.1
            q = panda.HOME_Q + np.outer(steps, 0.2 * np.ones(7))
            chunk = JointTrajectory(panda.ARM_JOINTS, t0 + np.round(steps * 1e9).astype(np.int64), q)
            assert scheduler.submit(chunk).accepted

            def settled(e) -> bool:
                cell.world.sync_now()  # a render or a state read: the relay applies what the loop sent, at its times
                return e.stats()["ticks"] > 600 and e.at_rest

            assert executor.wait(settled, timeout_s=20.0, poll_s=0.05)
            cell.world.sync_now()
            np.testing.assert_allclose(cell.robot.read_state().q, executor.commanded[0], atol=0.02)  # servo tracked
            executor.stop()
            first = executor.stats()
            assert first["safety"]["total"] == 0 and max(first["prefilter_peak_ratio"].values()) <= 1.0
            cell.world.reset(seed=1)  # the next episode: the arm is back at its start posture
            executor.start()
            assert executor.pid == pid  # the same process, a fresh executor seeded where the arm is
            np.testing.assert_allclose(executor.commanded[0], cell.robot.read_state().q, atol=1e-9)
            executor.stop()
        finally:
            close()
        assert cell.world.pre_sync is None
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_failed_build_stops_the_server_it_started(monkeypatch: pytest.MonkeyPatch) -> None:
    import robot_stack.stack.build as build

    started = []
    real_start = build.start_server

    def spy(*args, **kwargs):
        proc, endpoint = real_start(*args, **kwargs)
        started.append(proc)
        return proc, endpoint

    def broken_client(*args, **kwargs):
        raise ConfigError("client refused (test)")

    monkeypatch.setattr(build, "start_server", spy)
    with pytest.raises(ConfigError, match="client refused"):
        build.build_stack(load_stack_config("demo"), client_factory=broken_client)
    assert len(started) == 1 and started[0].poll() is not None  # the server did not outlive the failure


def test_a_stale_calibration_stops_the_build_before_any_process_starts(tmp_path: Path, monkeypatch) -> None:
    import robot_stack.stack.build as build

    monkeypatch.setattr(build, "start_server", lambda *a, **k: pytest.fail("server started despite bad calibration"))
    config = load_stack_config("demo", [f"calibration.root={tmp_path}"])
    with pytest.raises(robot_stack.errors.CalibrationError, match="no calibration for camera 'front'"):
        build.build_stack(config)


def test_the_layer_contract_covers_every_package() -> None:
    # a new package must be given its place in the layer order (docs/architecture.md), not escape it
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layered = {m.strip() for layer in contracts[0]["layers"] for m in layer.split("|")}
    top_level = {
        f"robot_stack.{m.name}" for m in pkgutil.iter_modules(robot_stack.__path__) if m.name not in ("__main__",)
    }
    assert top_level == layered


@pytest.mark.parametrize("probe", ["import robot_stack.control.safety", "import robot_stack.sim.world"])
def test_lint_imports_refuses_an_import_that_points_up(tmp_path: Path, probe: str) -> None:
    # the contract can fail: a copy of the package with one upward import (calibration -> control / sim)
    import shutil

    copy = tmp_path / "robot_stack"
    shutil.copytree(ROOT / "robot_stack", copy, ignore=shutil.ignore_patterns("__pycache__", "models", "*.onnx"))
    with (copy / "calibration" / "projection.py").open("a") as f:
        f.write(f"\n{probe}  # noqa\n")
    (tmp_path / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode != 0
    assert "robot_stack.calibration is not allowed to import" in proc.stdout
