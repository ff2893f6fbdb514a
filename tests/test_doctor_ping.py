"""``robot-stack doctor`` (a table of checks, each with its fix; exit 1 on a required failure) and ``robot-stack
ping`` (health, model, round trip p50/p99, clock offset) against the real server."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from robot_stack.calibration.store import load_calibration, save_calibration
from robot_stack.cli import main
from robot_stack.doctor.checks import (
    DoctorOptions,
    check_calibrations,
    check_clock,
    check_gpu_backends,
    check_keys,
    check_ports,
    check_video,
    failed,
    run_checks,
)
from robot_stack.doctor.ping import ping
from robot_stack.errors import RequestTimeoutError
from robot_stack.policy.manifest import DEMO_MANIFEST
from robot_stack.transport.keys import generate_keys
from tests.served import served


def test_key_permissions_are_a_required_check_with_the_fix(tmp_path: Path) -> None:
    generate_keys(tmp_path, "server")
    opts = DoctorOptions(key_dirs=(tmp_path,))
    assert [r.status for r in check_keys(opts)] == ["ok"]
    secret = tmp_path / "server.key_secret"
    secret.chmod(0o644)
    rows = check_keys(opts)
    assert rows[0].status == "fail" and rows[0].fix == f"chmod 600 {secret}"
    # the command: a table naming the file and the fix, exit 1
    proc = subprocess.run(
        [sys.executable, "-m", "robot_stack.cli", "doctor", "--keys", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "FAIL" in proc.stdout and "chmod 600" in proc.stdout
    for area in ("rendering", "video", "onnxruntime", "gpu", "ros2", "realsense", "calibration", "clock", "ports"):
        assert area in proc.stdout, area
    assert "1 failed" in proc.stderr
    secret.chmod(0o600)
    assert not failed(check_keys(opts))


def test_stale_or_broken_calibrations_fail_with_the_calibrate_command(tmp_path: Path) -> None:
    cal = load_calibration("sim_tabletop", "front")
    save_calibration(type(cal)(**{**cal.__dict__, "created": cal.created - dt.timedelta(days=4000)}), tmp_path)
    (tmp_path / "sim_tabletop" / "side.yaml").write_text("scene: [unclosed\n")
    rows = {r.name: r for r in check_calibrations(DoctorOptions(calibration_root=tmp_path))}
    assert rows["sim_tabletop/front"].status == "fail" and "STALE" in rows["sim_tabletop/front"].detail
    assert "robot-stack calibrate hand-eye --scene sim_tabletop --camera front" in rows["sim_tabletop/front"].fix
    assert rows["sim_tabletop/side"].status == "fail" and "malformed" in rows["sim_tabletop/side"].detail
    fresh = check_calibrations(DoctorOptions())  # the repository's
    assert {r.status for r in fresh} == {"ok"}


def test_a_taken_port_names_its_process() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rows = check_ports(DoctorOptions(ports=((port, "test"),)))
    assert rows[0].status == "warn" and f"pid {os.getpid()}" in rows[0].detail and "--bind" in rows[0].fix
    assert check_ports(DoctorOptions(ports=((port, "test"),)))[0].status == "ok"  # released


def test_roles_decide_what_is_required() -> None:
    gpu_rows = check_gpu_backends(DoctorOptions(gpu=True))
    ort = [r for r in gpu_rows if r.name == "onnxruntime"][0]
    assert ort.status == "ok"
    # this machine has no NVIDIA GPU: with --gpu, CUDA and TensorRT fail (with their pip fixes); without, they warn
    cuda_gpu = [r for r in gpu_rows if r.name in ("cuda", "tensorrt")]
    cuda_plain = [r for r in check_gpu_backends(DoctorOptions()) if r.name in ("cuda", "tensorrt")]
    if all(r.status == "ok" for r in cuda_gpu):
        pytest.skip("a GPU with CUDA and TensorRT is present")
    assert {r.status for r in cuda_gpu} == {"fail"} and all("pip install" in r.fix for r in cuda_gpu)
    assert {r.status for r in cuda_plain} <= {"warn", "ok"}
    assert check_video(DoctorOptions())[0].status == "ok"  # PyAV with an H.264 encoder (a dependency)
    assert {r.name for r in check_clock(DoctorOptions())} == {"sync", "monotonic"}


def test_a_crashing_check_is_a_failed_row_not_a_crash() -> None:
    def broken(opts: DoctorOptions) -> list:
        raise RuntimeError("probe exploded")

    rows = run_checks(DoctorOptions(), [broken])
    assert rows[0].status == "fail" and "probe exploded" in rows[0].detail


def test_ping_health_metadata_round_trips_and_clock_offset(capsys: pytest.CaptureFixture[str]) -> None:
    with served(DEMO_MANIFEST) as endpoint:
        report = ping(endpoint, n=15)
        assert report.health["status"] == "ok"
        assert report.metadata["model_id"] == "reach-touch-v1"
        assert report.round_trip["n"] == 15 and 0 < report.round_trip["p50_ms"] <= report.round_trip["p99_ms"]
        assert report.clock_offset_ms is not None and abs(report.clock_offset_ms) < 50  # same host
        infer = ping(endpoint, n=3, infer=True)
        assert infer.kind == "infer" and infer.round_trip["p50_ms"] > report.round_trip["p50_ms"] * 0.5
        capsys.readouterr()
        assert main(["ping", endpoint, "-n", "5"]) == 0
        table = capsys.readouterr().out
        for what in ("reach-touch-v1", "continuous", "round trip (health, n=5)", "p50", "p99", "clock offset"):
            assert what in table, what
        assert main(["ping", endpoint, "-n", "3", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["n"] == 3
    with pytest.raises(RequestTimeoutError):
        ping(endpoint, n=1, timeout_s=0.3)  # nobody answers any more
    assert main(["ping", endpoint, "--timeout", "0.3"]) == 1


def test_ping_with_curve_keys(tmp_path: Path) -> None:
    import threading

    from robot_stack.policy.service import serve

    generate_keys(tmp_path, "server")
    generate_keys(tmp_path, "robot1", allow_dir=tmp_path / "allowed")
    eps: list[str] = []
    ready, stop = threading.Event(), threading.Event()
    thread = threading.Thread(
        target=serve,
        args=(DEMO_MANIFEST, "tcp://127.0.0.1:*", "cpu"),
        kwargs={
            "threads": 1,
            "stop_event": stop,
            "on_ready": lambda e: (eps.append(e), ready.set()),
            "curve_secret": tmp_path / "server.key_secret",
            "allow_dir": tmp_path / "allowed",
        },
        daemon=True,
    )
    thread.start()
    try:
        assert ready.wait(60)
        report = ping(
            eps[0],
            n=5,
            curve_server_key=str(tmp_path / "server.key"),
            curve_secret=str(tmp_path / "robot1.key_secret"),
        )
        assert report.round_trip["n"] == 5
        with pytest.raises(RequestTimeoutError):  # without keys the handshake never completes
            ping(eps[0], n=1, timeout_s=0.5)
    finally:
        stop.set()
        thread.join(10)
