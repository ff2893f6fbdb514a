"""``robot-stack doctor``: is this machine ready to run the stack? One check per component, each with its fix.

Every check returns :class:`DoctorCheck` rows (``ok``, ``warn`` or ``fail``) and never raises: a check that crashes
is itself reported as failed with the exception. A row is ``fail`` only when the component is *required* for the
roles asked for (``--gpu``: a serving machine with CUDA/TensorRT; ``--hardware``: a robot machine with RealSense
cameras, ROS 2 and fresh calibrations); otherwise a missing component is a ``warn``.

Checks: headless rendering (EGL / OSMesa for MuJoCo), FFmpeg through PyAV (H.264 encoder, the shared libraries
torchcodec needs), ONNX Runtime and its providers, CUDA and TensorRT (:func:`robot_stack.policy.gpu_env
.check_backends`), the ROS 2 wheels and the RMW implementation (in a subprocess: the core never imports rclpy),
RealSense devices (serial, firmware, USB speed), calibration files (validity, age, health figures), the clock
(kernel synchronisation state, clock source, monotonic resolution), the default ports (free or taken), and CURVE
key-file permissions.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
import json
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_PORTS", "DoctorCheck", "DoctorOptions", "failed", "run_checks"]

#: The ports robot-stack listens on by default: policy server (ZeroMQ), openpi websocket, rerun viewer (gRPC, web).
DEFAULT_PORTS: dict[int, str] = {
    5555: "robot-stack serve (--bind)",
    8000: "robot-stack serve --openpi-port",
    9876: "rerun viewer (--display)",
    9090: "rerun web viewer (--display, headless)",
}

_STATUS_ORDER = {"fail": 0, "warn": 1, "ok": 2}


@dataclass(frozen=True)
class DoctorCheck:
    """One row of the doctor's table.

    Attributes:
        area: what kind of component (``rendering``, ``video``, ``onnxruntime``, ``gpu``, ``ros2``, ``realsense``,
            ``calibration``, ``clock``, ``ports``, ``keys``).
        name: the component (``egl``, ``cuda``, ``calibration/sim_tabletop/front``...).
        status: ``ok`` | ``warn`` (missing or degraded, not needed for the roles asked for) | ``fail`` (needed).
        detail: what was found.
        fix: what to do when not ok ("" otherwise).
    """

    area: str
    name: str
    status: str
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class DoctorOptions:
    """What to check and how strictly.

    Attributes:
        gpu: this machine serves on an NVIDIA GPU: CUDA and TensorRT are required.
        hardware: this machine drives hardware: a RealSense device, the ROS 2 wheels and valid calibrations are
            required; headless rendering is not.
        calibration_root: the calibration folder (None: ``$ROBOT_STACK_CALIBRATION_DIR`` or the repository's).
        key_dirs: folders whose CURVE key files are checked (default ``keys`` when it exists).
        ports: port -> what uses it.
        timeout_s: per subprocess probe.
    """

    gpu: bool = False
    hardware: bool = False
    calibration_root: Path | None = None
    key_dirs: tuple[Path, ...] = ()
    ports: tuple[tuple[int, str], ...] = tuple(DEFAULT_PORTS.items())
    timeout_s: float = 30.0


def _row(area: str, name: str, ok: bool, required: bool, detail: str, fix: str) -> DoctorCheck:
    return DoctorCheck(area, name, "ok" if ok else ("fail" if required else "warn"), detail, "" if ok else fix)


# --------------------------------------------------------------------------------------------------- checks


def check_rendering(opts: DoctorOptions) -> list[DoctorCheck]:
    """MuJoCo's headless OpenGL backends (the simulated cameras need one of them)."""
    from robot_stack.sim.camera import probe_gl_backend

    reasons = {name: probe_gl_backend(name, opts.timeout_s) for name in ("egl", "osmesa")}
    working = [n for n, r in reasons.items() if r is None]
    rows = []
    for name, reason in reasons.items():
        detail = "renders headless" if reason is None else f"cannot render: {reason}"
        fix = "apt install libegl1 (GPU driver's EGL)" if name == "egl" else "apt install libosmesa6 (software GL)"
        rows.append(
            DoctorCheck("rendering", name, "ok" if reason is None else "warn", detail, "" if not reason else fix)
        )
    selected = os.environ.get("MUJOCO_GL", "")
    if not working:
        rows.append(
            _row(
                "rendering",
                "mujoco-gl",
                False,
                not opts.hardware,
                "no headless OpenGL backend: simulated cameras cannot render",
                "apt install libosmesa6 (or libegl1), then MUJOCO_GL=osmesa",
            )
        )
    elif selected and selected not in working:
        rows.append(
            _row(
                "rendering",
                "mujoco-gl",
                False,
                not opts.hardware,
                f"MUJOCO_GL={selected} does not work here (working: {', '.join(working)})",
                f"export MUJOCO_GL={working[0]} (or unset it to auto-detect)",
            )
        )
    return rows


def check_video(opts: DoctorOptions) -> list[DoctorCheck]:
    """PyAV (recording encodes H.264 through it) and the FFmpeg shared libraries torchcodec (LeRobot) loads."""
    rows = []
    try:
        import av

        try:
            av.codec.Codec("libx264", "w")
            enc = "libx264"
        except Exception:
            av.codec.Codec("h264", "w")
            enc = "h264"
        versions = getattr(av, "library_versions", {})
        libavcodec = versions.get("libavcodec")
        detail = f"PyAV {av.__version__}, encoder {enc}" + (
            f", libavcodec {'.'.join(map(str, libavcodec))}" if libavcodec else ""
        )
        rows.append(DoctorCheck("video", "pyav", "ok", detail))
    except Exception as exc:
        rows.append(
            _row(
                "video",
                "pyav",
                False,
                True,
                f"PyAV or its H.264 encoder missing ({type(exc).__name__}: {exc})",
                "pip install 'av>=12' (wheels bundle FFmpeg with libx264)",
            )
        )
    libs = {name: ctypes.util.find_library(name) for name in ("avcodec", "avformat", "avutil")}
    missing = [n for n, found in libs.items() if not found]
    rows.append(
        DoctorCheck(
            "video",
            "ffmpeg-libs",
            "ok" if not missing else "warn",
            "system FFmpeg libraries "
            + (
                "found: " + ", ".join(str(v) for v in libs.values())
                if not missing
                else f"missing: lib{', lib'.join(missing)} (LeRobot's torchcodec needs them)"
            ),
            "" if not missing else "apt install ffmpeg (or decode with video_backend='pyav' in LeRobot)",
        )
    )
    return rows


def check_gpu_backends(opts: DoctorOptions) -> list[DoctorCheck]:
    """ONNX Runtime and its providers; CUDA and TensorRT (required with ``--gpu``)."""
    from robot_stack.policy.gpu_env import check_backends

    report = check_backends("tensorrt" if opts.gpu else "ort", "tensorrt" if opts.gpu else "cpu")
    rows = []
    for c in report.checks:
        area = "onnxruntime" if c.name == "onnxruntime" else "gpu"
        required = c.required or c.name == "onnxruntime" or (opts.gpu and c.name in ("cuda", "tensorrt"))
        detail, fix = c.detail, c.fix
        if not c.ok and not fix and "; pip install" in detail:  # the probe put its fix into the detail
            detail, fix = detail.split("; pip install", 1)
            fix = "pip install" + fix
        rows.append(_row(area, c.name, c.ok, required, detail, fix))
    names = {c.name for c in report.checks}
    if "tensorrt" not in names:  # the plain ORT plan does not look at TensorRT: say whether it is there
        from robot_stack.policy.gpu_env import TensorRTInfo, probe_tensorrt

        trt = probe_tensorrt()
        if isinstance(trt, TensorRTInfo):
            rows.append(DoctorCheck("gpu", "tensorrt", "ok", f"tensorrt {trt.version}"))
        else:
            detail, _, fix = trt.partition("; pip install")
            rows.append(_row("gpu", "tensorrt", False, opts.gpu, detail, f"pip install{fix}" if fix else "README: GPU"))
    rows.append(DoctorCheck("gpu", "serving-path", "ok", f"{report.plan.path}: {report.plan.reason}"))
    return rows


_ROS_PROBE = """
import json, os
import rclpy
from rclpy.utilities import get_rmw_implementation_identifier
rclpy.init()
try:
    out = {"rmw": get_rmw_implementation_identifier(), "domain": os.environ.get("ROS_DOMAIN_ID", "0"),
           "distro": os.environ.get("ROS_DISTRO", "")}
    try:
        import importlib.metadata as md
        out["rclpy"] = md.version("ros-kilted-rclpy")
    except Exception:
        out["rclpy"] = "?"
    print(json.dumps(out))
finally:
    rclpy.shutdown()
"""


def check_ros(opts: DoctorOptions) -> list[DoctorCheck]:
    """The ROS 2 wheels (rclpy) and the RMW implementation, probed in a subprocess (the core never imports rclpy)."""
    if importlib.util.find_spec("rclpy") is None:
        return [
            _row(
                "ros2",
                "rclpy",
                False,
                opts.hardware,
                "rclpy is not installed (the ROS 2 nodes and `robot-stack up` need it; the core does not)",
                "pip install 'robot-stack[ros]' (ROS 2 kilted wheels)",
            )
        ]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _ROS_PROBE], capture_output=True, text=True, timeout=opts.timeout_s
        )
    except subprocess.TimeoutExpired:
        return [_row("ros2", "rclpy", False, opts.hardware, "rclpy.init() hung", "check RMW_IMPLEMENTATION")]
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return [
            _row(
                "ros2",
                "rclpy",
                False,
                opts.hardware,
                f"rclpy does not start: {last}",
                "pip install 'robot-stack[ros]'; RMW_IMPLEMENTATION=rmw_fastrtps_cpp",
            )
        ]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    rmw = info["rmw"]
    wanted = os.environ.get("RMW_IMPLEMENTATION", "")
    rows = [DoctorCheck("ros2", "rclpy", "ok", f"rclpy {info['rclpy']} starts, ROS_DOMAIN_ID {info['domain']}")]
    rows.append(
        _row(
            "ros2",
            "rmw",
            not wanted or wanted == rmw,
            opts.hardware,
            f"RMW {rmw}" + (f" (RMW_IMPLEMENTATION={wanted})" if wanted else ""),
            f"pip install the wheel of {wanted} or unset RMW_IMPLEMENTATION",
        )
    )
    return rows


def check_realsense(opts: DoctorOptions) -> list[DoctorCheck]:
    """Connected RealSense devices: serial, firmware (against the recommended one), USB speed (3.x needed)."""
    try:
        import pyrealsense2 as rs
    except Exception as exc:
        return [
            _row(
                "realsense", "pyrealsense2", False, opts.hardware, f"cannot import ({exc})", "pip install pyrealsense2"
            )
        ]
    devices = list(rs.context().query_devices())
    if not devices:
        return [
            _row(
                "realsense",
                "devices",
                False,
                opts.hardware,
                f"pyrealsense2 {getattr(rs, '__version__', '?')}: no RealSense device connected",
                "plug the camera into a USB 3 port; check `lsusb` and the udev rules (setup_udev_rules.sh)",
            )
        ]
    rows = []
    for dev in devices:

        def info(key: Any, dev: Any = dev) -> str:
            return str(dev.get_info(key)) if dev.supports(key) else "?"

        serial = info(rs.camera_info.serial_number)
        fw, rec = info(rs.camera_info.firmware_version), info(rs.camera_info.recommended_firmware_version)
        usb = info(rs.camera_info.usb_type_descriptor)
        problems = []
        if usb != "?" and not usb.startswith("3"):
            problems.append(f"USB {usb} (needs 3.x for 640x480 RGB-D at 30 Hz): use a USB 3 port and cable")
        if rec != "?" and fw != "?" and _version(fw) < _version(rec):
            problems.append(f"firmware {fw} older than the recommended {rec}: update it (rs-fw-update)")
        rows.append(
            DoctorCheck(
                "realsense",
                f"{info(rs.camera_info.name)} {serial}",
                "warn" if problems else "ok",
                f"firmware {fw}, USB {usb}",
                "; ".join(problems),
            )
        )
    return rows


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def check_calibrations(opts: DoctorOptions) -> list[DoctorCheck]:
    """Every calibration file under the root: valid, its age against ``valid_days``, its health figures."""
    from robot_stack.calibration.store import default_root, list_calibrations, load_calibration
    from robot_stack.errors import CalibrationError

    root = opts.calibration_root or default_root()
    refs = list_calibrations(root)
    if not refs:
        return [
            _row(
                "calibration",
                str(root),
                False,
                opts.hardware,
                "no calibration files",
                "robot-stack calibrate hand-eye --scene SCENE --camera CAM --write (--sim in the simulator)",
            )
        ]
    rows = []
    now = datetime.now(timezone.utc)
    for ref in refs:
        name = f"{ref.scene}/{ref.camera_id}"
        recal = f"robot-stack calibrate hand-eye --scene {ref.scene} --camera {ref.camera_id} --write"
        try:
            cal = load_calibration(ref.scene, ref.camera_id, root, now=now, allow_stale=True)
        except CalibrationError as exc:
            rows.append(DoctorCheck("calibration", name, "fail", str(exc).split(". ")[0], recal))
            continue
        age = cal.age_days(now)
        detail = f"{cal.method}, {age:.1f} of {cal.valid_days:g} days"
        rms = cal.residuals.get("reprojection_rms_px")
        if rms is not None:
            detail += f", reprojection {rms:.2f} px"
        if cal.is_stale(now):
            rows.append(
                DoctorCheck("calibration", name, "fail", detail + ": STALE", f"{recal} (or run with --allow-stale)")
            )
        elif rms is not None and rms > 1.0:
            rows.append(DoctorCheck("calibration", name, "warn", detail + ": above 1 px", recal))
        elif age > 0.8 * cal.valid_days:
            rows.append(DoctorCheck("calibration", name, "warn", detail + ": expires soon", recal))
        else:
            rows.append(DoctorCheck("calibration", name, "ok", detail))
    return rows


class _Timex(ctypes.Structure):
    # struct timex is larger than this on every Linux ABI; only `modes` (0 = read) and the return value are used,
    # the rest is room for the kernel to write into.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 512)]


def kernel_clock_state() -> int | None:
    """``adjtimex`` read-only: the kernel's clock state (0 TIME_OK ... 5 TIME_ERROR = not synchronised); None when
    it cannot be asked (not Linux)."""
    libc_name = ctypes.util.find_library("c")
    if not libc_name or not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(libc_name, use_errno=True)
    tx = _Timex()
    state = libc.adjtimex(ctypes.byref(tx))
    return None if state < 0 else int(state)


def check_clock(opts: DoctorOptions) -> list[DoctorCheck]:
    """Wall clock synchronised (NTP/PTP: only logs and dataset timestamps use it; the control path uses the
    monotonic clock and measures the server's offset), clock source, monotonic resolution."""
    rows = []
    state = kernel_clock_state()
    if state is None:
        rows.append(DoctorCheck("clock", "sync", "warn", "cannot read the kernel clock state", "run on Linux"))
    else:
        synced = state != 5
        rows.append(
            DoctorCheck(
                "clock",
                "sync",
                "ok" if synced else "warn",
                "system clock synchronised" if synced else "system clock not synchronised (adjtimex TIME_ERROR)",
                "" if synced else "enable NTP (systemd-timesyncd or chrony) so dataset timestamps agree across hosts",
            )
        )
    src_file = Path("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    source = src_file.read_text().strip() if src_file.is_file() else "?"
    res_ns = time.clock_getres(time.CLOCK_MONOTONIC) * 1e9
    good = source in ("tsc", "arch_sys_counter", "?") and res_ns <= 1000
    rows.append(
        DoctorCheck(
            "clock",
            "monotonic",
            "ok" if good else "warn",
            f"clock source {source}, monotonic resolution {res_ns:.0f} ns",
            "" if good else "a slow clock source (hpet/acpi_pm) costs microseconds per read: use tsc if stable",
        )
    )
    return rows


def check_ports(opts: DoctorOptions) -> list[DoctorCheck]:
    """The default ports on 127.0.0.1: free, or taken (by whom, when /proc says)."""
    rows = []
    for port, use in opts.ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                rows.append(DoctorCheck("ports", str(port), "ok", f"free ({use})"))
            except OSError as exc:
                owner = _port_owner(port)
                rows.append(
                    DoctorCheck(
                        "ports",
                        str(port),
                        "warn",
                        f"in use{f' by {owner}' if owner else ''} ({exc.strerror}); needed by {use}",
                        "stop that process or pick another port (e.g. --bind tcp://127.0.0.1:5556)",
                    )
                )
    return rows


def _port_owner(port: int) -> str:
    """``pid NNN (name)`` of the process listening on ``port`` (from /proc; "" if unknown)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and int(parts[1].rsplit(":", 1)[1], 16) == port and parts[3] == "0A":
                inodes.add(parts[9])
    if not inodes:
        return ""
    for pid_dir in Path("/proc").glob("[0-9]*"):
        try:
            for fd in (pid_dir / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    name = (pid_dir / "comm").read_text().strip()
                    return f"pid {pid_dir.name} ({name})"
        except OSError:
            continue
    return ""


def check_keys(opts: DoctorOptions) -> list[DoctorCheck]:
    """CURVE key files: secret keys readable by their owner only (the server refuses others), public keys present."""
    dirs = opts.key_dirs or tuple(p for p in (Path("keys"),) if p.is_dir())
    if not dirs:
        return [DoctorCheck("keys", "curve", "ok", "no key folder (CURVE off; `robot-stack keys generate keys/ ...`)")]
    rows = []
    for d in dirs:
        if not d.is_dir():
            rows.append(
                DoctorCheck(
                    "keys", str(d), "fail", "not a folder", f"robot-stack keys generate {d} --name server --server"
                )
            )
            continue
        secrets = sorted(d.rglob("*.key_secret"))
        for path in secrets:
            st = path.stat()
            mode = stat.S_IMODE(st.st_mode)
            if mode & 0o077:
                rows.append(
                    DoctorCheck(
                        "keys", str(path), "fail", f"mode {mode:o}: readable by group/others", f"chmod 600 {path}"
                    )
                )
            elif st.st_uid != os.getuid():
                rows.append(
                    DoctorCheck(
                        "keys",
                        str(path),
                        "warn",
                        f"owned by uid {st.st_uid}, not you ({os.getuid()})",
                        f"chown {os.getuid()} {path}",
                    )
                )
            else:
                rows.append(DoctorCheck("keys", str(path), "ok", f"mode {mode:o}"))
        if not secrets:
            rows.append(DoctorCheck("keys", str(d), "ok", f"{len(list(d.rglob('*.key')))} public key(s), no secrets"))
    return rows


CHECKS: tuple[Callable[[DoctorOptions], list[DoctorCheck]], ...] = (
    check_rendering,
    check_video,
    check_gpu_backends,
    check_ros,
    check_realsense,
    check_calibrations,
    check_clock,
    check_ports,
    check_keys,
)


def run_checks(
    opts: DoctorOptions | None = None, checks: Iterable[Callable[[DoctorOptions], list[DoctorCheck]]] = CHECKS
) -> list[DoctorCheck]:
    """Run every check; a check that raises becomes one ``fail`` row naming the exception."""
    opts = opts or DoctorOptions()
    rows: list[DoctorCheck] = []
    for check in checks:
        try:
            rows.extend(check(opts))
        except Exception as exc:  # a broken probe is a finding, not a crash
            area = check.__name__.removeprefix("check_")
            rows.append(
                DoctorCheck(area, area, "fail", f"the check itself failed: {type(exc).__name__}: {exc}", "report a bug")
            )
    return rows


def failed(rows: Sequence[DoctorCheck]) -> list[DoctorCheck]:
    """The rows that make ``doctor`` exit 1."""
    return [r for r in rows if r.status == "fail"]


def rows_to_json(rows: Sequence[DoctorCheck]) -> str:
    return json.dumps([asdict(r) for r in rows])
