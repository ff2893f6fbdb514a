"""Camera calibration as data: one YAML file per (scene, camera), loaded strictly, never guessed.

Layout: ``<root>/<scene>/<camera_id>.yaml`` where ``root`` is, in order of precedence, the ``root`` argument, the
environment variable ``ROBOT_STACK_CALIBRATION_DIR``, or the repository's ``calibration/`` folder. The file format
is described in ``calibration/README.md``; in short::

    schema_version: 1
    scene: sim_tabletop
    camera_id: front
    camera_serial: "sim:front"
    robot: panda
    intrinsics: {width: 640, height: 480, fx: ..., fy: ..., cx: ..., cy: ..., distortion: [k1, k2, p1, p2, k3]}
    extrinsics:              # T_base_cam: pose of the camera's optical frame (x right, y down, z forward)
      parent_frame: base     # ... in the robot base frame
      child_frame: front
      translation_xyz_m: [x, y, z]
      quaternion_wxyz: [w, x, y, z]
    method: sim_ground_truth
    residuals: {}
    created: "2025-01-01T00:00:00Z"   # ISO-8601, UTC
    valid_days: 3650

Loading never falls back to an identity transform: a missing, malformed or stale file is a
:class:`~robot_stack.errors.CalibrationError` that says which file and what to do.

Run ``python -m robot_stack.sim.calibration --scene sim_tabletop --camera front`` to (re)write the simulator's
ground-truth calibration.
"""

from __future__ import annotations

import logging
import math
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import yaml

from robot_stack.calibration.payload import calibration_version
from robot_stack.calibration.projection import DepthProjector
from robot_stack.errors import CalibrationError, RobotStackError
from robot_stack.types import CameraModel, Pose

if TYPE_CHECKING:
    pass

__all__ = [
    "ENV_CALIBRATION_DIR",
    "SCHEMA_VERSION",
    "CalibrationRef",
    "CameraCalibration",
    "calibration_path",
    "default_root",
    "list_calibrations",
    "load_calibration",
    "save_calibration",
]

log = logging.getLogger("robot_stack.calibration")

#: Version of the YAML layout written by :func:`save_calibration`; files with another version are refused.
SCHEMA_VERSION = 1
#: Environment variable overriding the calibration root folder.
ENV_CALIBRATION_DIR = "ROBOT_STACK_CALIBRATION_DIR"
#: Simulator ground truth never drifts; it expires only so that a stale scene definition eventually shows up.
SIM_VALID_DAYS = 3650.0

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Scenes that :func:`robot_stack.sim.calibration.generate_sim_calibration` can build: the simulated cells of
#: :mod:`robot_stack.sim.robot_cells` (each arm's own cell; scene sets A and B of the language-conditioned suite).
SIM_SCENES = (
    "sim_tabletop",
    "sim_ur5",
    "sim_so101",
    *(f"vla_a{i}" for i in range(8)),
    *(f"vla_b{i}" for i in range(3)),
)


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _iso_utc(value: datetime) -> str:
    return _as_utc(value).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------- value


@dataclass(frozen=True)
class CameraCalibration:
    """Everything needed to turn one camera's depth into base-frame XYZ, plus where it came from.

    Attributes:
        scene: name of the cell/setup (folder under the calibration root), e.g. ``"sim_tabletop"``.
        camera_id: logical camera name, e.g. ``"front"`` (file name without ``.yaml``).
        camera_serial: serial number of the physical device (``"sim:<camera>"`` in simulation); a mismatch with
            the connected device means the calibration belongs to another camera.
        robot: robot model the base frame belongs to, e.g. ``"panda"``.
        camera: intrinsics (pixels) and OpenCV distortion of the stream depth is aligned to.
        T_base_cam: pose of the camera's optical frame (x right, y down, z forward) in the robot base frame,
            metres; ``parent`` / ``child`` carry the frame names.
        method: how it was obtained, e.g. ``"sim_ground_truth"``, ``"hand_eye_tsai"``.
        residuals: named health figures of the calibration (e.g. ``reprojection_rms_px``), read-only mapping.
        created: when it was computed, timezone-aware UTC.
        valid_days: days after ``created`` the calibration is trusted without recalibration.
        schema_version: file layout version.
    """

    scene: str
    camera_id: str
    camera_serial: str
    robot: str
    camera: CameraModel
    T_base_cam: Pose
    method: str
    created: datetime
    valid_days: float
    residuals: Mapping[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def intrinsics_at(self, width: int, height: int) -> CameraModel:
        """The calibrated intrinsics rescaled to a ``width`` x ``height`` image (pixels); the calibration may have
        been made at another resolution of the same aspect ratio. Raises CalibrationError for another aspect ratio."""
        cam = self.camera
        if (cam.width, cam.height) == (width, height):
            return cam
        sx, sy = width / cam.width, height / cam.height
        if abs(sx - sy) > 1e-6:
            raise CalibrationError(
                f"camera {self.camera_id!r}: frame {width}x{height} has another aspect ratio than its calibration "
                f"{cam.width}x{cam.height}; calibrate intrinsics at this resolution"
            )
        return CameraModel(
            width,
            height,
            cam.fx * sx,
            cam.fy * sy,
            (cam.cx + 0.5) * sx - 0.5,
            (cam.cy + 0.5) * sy - 0.5,
            cam.distortion,
        )

    def __post_init__(self) -> None:
        for name in ("scene", "camera_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME_RE.match(value):
                raise CalibrationError(
                    f"CameraCalibration.{name}: {value!r} is not a valid name; use letters, digits, '_', '-', '.' "
                    "(it becomes a file/folder name)"
                )
        if not (isinstance(self.valid_days, int | float) and math.isfinite(self.valid_days) and self.valid_days > 0):
            raise CalibrationError(f"CameraCalibration.valid_days: must be a positive number, got {self.valid_days!r}")
        if not isinstance(self.created, datetime):
            raise CalibrationError(f"CameraCalibration.created: expected a datetime, got {self.created!r}")
        object.__setattr__(self, "created", _as_utc(self.created))
        object.__setattr__(self, "residuals", MappingProxyType({str(k): v for k, v in self.residuals.items()}))

    # ------------------------------------------------------------------------------------------- queries
    @property
    def expires(self) -> datetime:
        """UTC time after which the calibration is stale."""
        return self.created + timedelta(days=float(self.valid_days))

    def age_days(self, now: datetime | None = None) -> float:
        """Days since ``created`` at ``now`` (default: the current UTC time)."""
        now = _as_utc(now) if now is not None else _utc_now()
        return (now - self.created).total_seconds() / 86400.0

    def is_stale(self, now: datetime | None = None) -> bool:
        """Whether ``now`` is past :attr:`expires`."""
        return self.age_days(now) > float(self.valid_days)

    def projector(self, max_range_m: float = 3.0) -> DepthProjector:
        """A :class:`DepthProjector` for this camera (depth -> XYZ in the robot base frame), carrying this
        calibration's :attr:`version`."""
        return DepthProjector(self.camera, self.T_base_cam, max_range_m=max_range_m, version=self.version)

    @property
    def version(self) -> str:
        """Digest of this calibration's content (:func:`robot_stack.calibration.payload.calibration_version`)."""
        return calibration_version(self.to_dict())

    # ------------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """The YAML document of this calibration (plain Python types)."""
        cam = self.camera
        return {
            "schema_version": int(self.schema_version),
            "scene": self.scene,
            "camera_id": self.camera_id,
            "camera_serial": self.camera_serial,
            "robot": self.robot,
            "intrinsics": {
                "width": int(cam.width),
                "height": int(cam.height),
                "fx": float(cam.fx),
                "fy": float(cam.fy),
                "cx": float(cam.cx),
                "cy": float(cam.cy),
                "distortion_model": "opencv_k1_k2_p1_p2_k3",
                "distortion": [float(c) for c in cam.distortion],
            },
            "extrinsics": {
                "parent_frame": self.T_base_cam.parent,
                "child_frame": self.T_base_cam.child,
                "translation_xyz_m": [float(c) for c in self.T_base_cam.translation],
                "quaternion_wxyz": [float(c) for c in self.T_base_cam.quat_wxyz()],
            },
            "method": self.method,
            "residuals": {k: _plain(v) for k, v in self.residuals.items()},
            "created": _iso_utc(self.created),
            "valid_days": float(self.valid_days),
        }

    @classmethod
    def from_dict(cls, doc: Any, source: str = "<dict>") -> CameraCalibration:
        """Parse and validate a YAML document; ``source`` names the file in error messages.

        Raises:
            CalibrationError: a field is missing or has the wrong type/value (the message names the field).
        """
        return _parse(doc, source)


def _plain(value: Any) -> Any:
    """Residual values as YAML-safe plain types (numbers, strings, lists, dicts)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- parsing


class _Fields:
    """Typed access to a YAML mapping that raises CalibrationError naming the file and field."""

    def __init__(self, doc: Any, source: str, prefix: str = "") -> None:
        if not isinstance(doc, Mapping):
            where = f"field {prefix.rstrip('.')!r}" if prefix else "the document"
            raise CalibrationError(
                f"malformed calibration {source}: {where} must be a mapping, got {type(doc).__name__}"
            )
        self.doc, self.source, self.prefix = doc, source, prefix

    def fail(self, key: str, problem: str) -> CalibrationError:
        return CalibrationError(
            f"malformed calibration {self.source}: field {self.prefix + key!r} {problem}. Fix the file or "
            "recalibrate (see calibration/README.md for the format)."
        )

    def get(self, key: str) -> Any:
        if key not in self.doc:
            raise self.fail(key, "is missing")
        return self.doc[key]

    def str_(self, key: str) -> str:
        value = self.get(key)
        if not isinstance(value, str) or not value:
            raise self.fail(key, f"must be a non-empty string, got {value!r}")
        return value

    def num(self, key: str, positive: bool = False) -> float:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise self.fail(key, f"must be a finite number, got {value!r}")
        if positive and value <= 0:
            raise self.fail(key, f"must be positive, got {value!r}")
        return float(value)

    def int_(self, key: str) -> int:
        value = self.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self.fail(key, f"must be a positive integer, got {value!r}")
        return value

    def vec(self, key: str, n: int) -> np.ndarray:
        value = self.get(key)
        ok = isinstance(value, list | tuple) and len(value) == n
        ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
        if not ok:
            raise self.fail(key, f"must be a list of {n} finite numbers, got {value!r}")
        return np.asarray(value, dtype=np.float64)

    def sub(self, key: str) -> _Fields:
        return _Fields(self.get(key), self.source, f"{self.prefix}{key}.")


def _parse(doc: Any, source: str) -> CameraCalibration:
    f = _Fields(doc, source)
    version = f.get("schema_version")
    if version != SCHEMA_VERSION:
        raise f.fail(
            "schema_version",
            f"is {version!r}, this robot-stack reads version {SCHEMA_VERSION}; regenerate the file or upgrade",
        )
    intr = f.sub("intrinsics")
    distortion = intr.vec("distortion", 5) if "distortion" in intr.doc else np.zeros(5)
    try:
        camera = CameraModel(
            width=intr.int_("width"),
            height=intr.int_("height"),
            fx=intr.num("fx", positive=True),
            fy=intr.num("fy", positive=True),
            cx=intr.num("cx"),
            cy=intr.num("cy"),
            distortion=distortion,
        )
    except RobotStackError as exc:
        if isinstance(exc, CalibrationError):
            raise
        raise f.fail("intrinsics", f"is invalid: {exc}") from exc

    ext = f.sub("extrinsics")
    quat = ext.vec("quaternion_wxyz", 4)
    norm = float(np.linalg.norm(quat))
    if abs(norm - 1.0) > 1e-3:
        raise ext.fail("quaternion_wxyz", f"must be a unit quaternion (w, x, y, z), its norm is {norm:.6f}")
    translation = ext.vec("translation_xyz_m", 3)
    T_base_cam = Pose.from_quat_xyz(quat, translation, ext.str_("parent_frame"), ext.str_("child_frame"))

    created_raw = f.get("created")
    if isinstance(created_raw, datetime):  # YAML may have parsed an unquoted timestamp already
        created = _as_utc(created_raw)
    elif isinstance(created_raw, str):
        try:
            created = _as_utc(datetime.fromisoformat(created_raw.strip().replace("Z", "+00:00")))
        except ValueError:
            raise f.fail("created", f"must be an ISO-8601 UTC timestamp, got {created_raw!r}") from None
    else:
        raise f.fail("created", f"must be an ISO-8601 UTC timestamp, got {created_raw!r}")

    residuals = f.get("residuals") if "residuals" in f.doc else {}
    if residuals is None:
        residuals = {}
    if not isinstance(residuals, Mapping):
        raise f.fail("residuals", f"must be a mapping of name -> value, got {residuals!r}")

    try:
        return CameraCalibration(
            scene=f.str_("scene"),
            camera_id=f.str_("camera_id"),
            camera_serial=str(f.get("camera_serial")),
            robot=f.str_("robot"),
            camera=camera,
            T_base_cam=T_base_cam,
            method=f.str_("method"),
            created=created,
            valid_days=f.num("valid_days", positive=True),
            residuals=residuals,
            schema_version=version,
        )
    except CalibrationError as exc:
        raise CalibrationError(f"malformed calibration {source}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- files


def default_root() -> Path:
    """The calibration root: ``$ROBOT_STACK_CALIBRATION_DIR`` if set, else the repository's ``calibration/``."""
    env = os.environ.get(ENV_CALIBRATION_DIR, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "calibration"


def _check_name(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise CalibrationError(
            f"{kind} {value!r} is not a valid name; use letters, digits, '_', '-', '.' (no path separators)"
        )
    return value


def calibration_path(scene: str, camera_id: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Path of the calibration file of ``camera_id`` in ``scene`` (the file need not exist)."""
    base = Path(root) if root is not None else default_root()
    return base / _check_name("scene", scene) / f"{_check_name('camera_id', camera_id)}.yaml"


def _create_hint(scene: str, camera_id: str, root: Path | None) -> str:
    root_flag = f" --root {root}" if root is not None else ""
    if scene in SIM_SCENES:
        return (
            f"Create it with `python -m robot_stack.sim.calibration --scene {scene} --camera {camera_id}{root_flag}` "
            "(writes the simulator's ground-truth calibration)."
        )
    return (
        f"Calibrate this camera and write the file with `robot-stack calibrate hand-eye --scene {scene} --camera "
        f"{camera_id} --serial SERIAL --robot PKG.MODULE:FACTORY --write{root_flag}`; for a simulated scene use "
        f"`python -m robot_stack.sim.calibration --scene <sim scene> --camera {camera_id}{root_flag}` "
        f"(simulated scenes: {', '.join(SIM_SCENES)})."
    )


def save_calibration(cal: CameraCalibration, root: str | os.PathLike[str] | None = None) -> Path:
    """Write ``cal`` to ``<root>/<scene>/<camera_id>.yaml`` atomically (temp file + rename); return the path."""
    path = calibration_path(cal.scene, cal.camera_id, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# robot-stack camera calibration: T_base_cam of camera {cal.camera_id!r} in scene {cal.scene!r}.\n"
        "# Format: calibration/README.md. Written by robot_stack.calibration.store.save_calibration.\n"
    )
    text = header + yaml.safe_dump(cal.to_dict(), sort_keys=False, default_flow_style=None, width=120)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    log.info("wrote calibration %s (method=%s)", path, cal.method)
    return path


def load_calibration(
    scene: str,
    camera_id: str,
    root: str | os.PathLike[str] | None = None,
    now: datetime | None = None,
    allow_stale: bool = False,
) -> CameraCalibration:
    """Load and validate the calibration of ``camera_id`` in ``scene``.

    Args:
        scene, camera_id: which file (``<root>/<scene>/<camera_id>.yaml``).
        root: calibration folder; default :func:`default_root`.
        now: the time staleness is judged at (default: current UTC time).
        allow_stale: accept a calibration older than its ``valid_days`` with a logged warning.

    Raises:
        CalibrationError: the file is missing (the message gives the exact path and how to create it), malformed
            (names the field), belongs to another scene/camera, or is stale and ``allow_stale`` is False.
    """
    path = calibration_path(scene, camera_id, root)
    if not path.is_file():
        raise CalibrationError(
            f"no calibration for camera {camera_id!r} in scene {scene!r}: expected the file {path}. "
            + _create_hint(scene, camera_id, Path(root) if root is not None else None)
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CalibrationError(f"malformed calibration {path}: not readable YAML ({exc})") from exc
    cal = _parse(doc, str(path))
    if (cal.scene, cal.camera_id) != (scene, camera_id):
        raise CalibrationError(
            f"calibration {path} is for camera {cal.camera_id!r} in scene {cal.scene!r}, not {camera_id!r} in "
            f"{scene!r}; it was copied or renamed by hand. Recalibrate or fix the file."
        )
    if cal.is_stale(now):
        msg = (
            f"calibration {path} is stale: created {_iso_utc(cal.created)}, valid for {cal.valid_days:g} days "
            f"(expired {_iso_utc(cal.expires)}, age {cal.age_days(now):.1f} days)"
        )
        if not allow_stale:
            raise CalibrationError(
                f"{msg}. Recalibrate the camera (`robot-stack calibrate hand-eye --scene {scene} --camera "
                f"{camera_id} --write`), or run with --allow-stale (--set calibration.allow_stale=true) to use it "
                "anyway at your own risk."
            )
        log.warning("%s; using it because --allow-stale (calibration.allow_stale) was given", msg)
    return cal


class CalibrationRef(NamedTuple):
    """One calibration file found under a root."""

    scene: str
    camera_id: str
    path: Path


def list_calibrations(root: str | os.PathLike[str] | None = None) -> list[CalibrationRef]:
    """Every ``<scene>/<camera_id>.yaml`` under ``root`` (default :func:`default_root`), sorted; not validated."""
    base = Path(root) if root is not None else default_root()
    if not base.is_dir():
        return []
    refs = [
        CalibrationRef(p.parent.name, p.stem, p)
        for p in base.glob("*/*.yaml")
        if p.is_file() and _NAME_RE.match(p.parent.name) and _NAME_RE.match(p.stem)
    ]
    return sorted(refs)
