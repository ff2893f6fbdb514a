"""``SimCamera``: aligned RGB-D frames rendered from a :class:`SimWorld` with MuJoCo's OpenGL renderer.

Rendering
    One ``mjr_render`` pass per frame, then ``mjr_readPixels`` reads colour *and* depth from the same pass (so they
    are aligned by construction, and the frame costs one render rather than the two of ``mujoco.Renderer``).
    OpenGL's depth buffer holds reverse-Z values (``mjDEPTH_ZEROFAR``); they are converted to metric depth along
    the optical axis (what a RealSense reports), then to ``uint16`` millimetres (``depth_scale = 0.001``).
    Pixels beyond ``max_depth_m`` or with no surface (background) are 0 = invalid.

Intrinsics / extrinsics
    :attr:`SimCamera.model` comes from :func:`robot_stack.calibration.mujoco_truth.camera_model_from_mujoco` (pinhole,
    no distortion, principal point at the image centre); :meth:`SimCamera.ground_truth_pose` is
    ``T_world_cam`` in the optical convention from
    :func:`~robot_stack.calibration.mujoco_truth.camera_pose_from_mujoco`.

OpenGL backend (headless)
    ``mujoco`` decides its *default* backend from ``MUJOCO_GL`` when it is first imported, which in a larger program
    has usually happened long before a camera is made. So this module does not rely on the default: it creates its
    own context from ``mujoco.egl`` or ``mujoco.osmesa`` (:func:`select_gl_backend`):

    * if ``MUJOCO_GL`` is set (``egl`` | ``osmesa``), that backend is used and nothing else is tried;
    * otherwise EGL is tried, then OSMesa, each *probed in a short-lived subprocess* (PyOpenGL binds its platform
      once per process, so a failed in-process EGL attempt would make OSMesa unusable too). The winner is written
      to ``os.environ["MUJOCO_GL"]`` (children inherit it) and cached for the process;
    * if neither works, :class:`~robot_stack.errors.CameraError` says what to install or set.

Threads
    The world lock is held only for ``sync`` and ``mjv_updateScene`` (copying the geometry into the camera's own
    ``MjvScene``); the GL render and the pixel read-back run outside it, under the camera's own lock, with the GL
    context made current for the duration of the call and released afterwards, so any thread may call
    :meth:`SimCamera.read` (one at a time per camera).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import subprocess
import sys
import threading
from typing import Any

import mujoco
import numpy as np

from robot_stack.calibration.mujoco_truth import camera_model_from_mujoco, camera_pose_from_mujoco
from robot_stack.cameras.base import Camera
from robot_stack.errors import CameraError
from robot_stack.sim.world import SimWorld
from robot_stack.types import CameraModel, Frame, Pose

log = logging.getLogger("robot_stack.sim.camera")

__all__ = ["DEPTH_SCALE", "SimCamera", "probe_gl_backend", "select_gl_backend"]

#: Metres per depth unit of :class:`SimCamera` frames (millimetres, like a RealSense D4xx).
DEPTH_SCALE = 0.001

_SUPPORTED_BACKENDS = ("egl", "osmesa")
_backend_lock = threading.Lock()
_backend: str | None = None

_PROBE = (
    "import importlib, sys\n"
    "ctx = importlib.import_module('mujoco.' + sys.argv[1]).GLContext(16, 16)\n"
    "ctx.make_current()\n"
    "ctx.free()\n"
)


def _probe_backend(name: str, timeout_s: float = 30.0) -> str | None:
    """Try to create a ``name`` GL context in a subprocess; return None on success, else the reason."""
    env = dict(os.environ, MUJOCO_GL=name)
    env.pop("PYOPENGL_PLATFORM", None)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, name], env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"exit code {proc.returncode}"
    return None


def probe_gl_backend(name: str, timeout_s: float = 30.0) -> str | None:
    """Whether MuJoCo can create a headless ``name`` (``egl`` | ``osmesa``) OpenGL context here, tried in a
    subprocess (a failing driver can abort a process): None when it can, else the reason (``robot-stack doctor``)."""
    return _probe_backend(name, timeout_s)


def select_gl_backend() -> str:
    """The headless OpenGL backend this process renders with: ``"egl"`` or ``"osmesa"`` (see module docstring).

    Raises:
        CameraError: ``MUJOCO_GL`` names an unsupported backend, or no backend works.
    """
    global _backend
    with _backend_lock:
        if _backend is not None:
            return _backend
        requested = os.environ.get("MUJOCO_GL", "").strip().lower()
        if requested:
            if requested not in _SUPPORTED_BACKENDS:
                raise CameraError(
                    f"MUJOCO_GL={requested!r} cannot render headless; set MUJOCO_GL to one of {_SUPPORTED_BACKENDS} "
                    "(or unset it to auto-detect)"
                )
            _backend = requested
            return _backend
        reasons = {}
        for candidate in _SUPPORTED_BACKENDS:
            reason = _probe_backend(candidate)
            if reason is None:
                os.environ["MUJOCO_GL"] = candidate
                _backend = candidate
                log.info("OpenGL backend for simulated cameras: %s", candidate)
                return _backend
            reasons[candidate] = reason
        raise CameraError(
            "no headless OpenGL backend works for MuJoCo rendering ("
            + "; ".join(f"{k}: {v}" for k, v in reasons.items())
            + "). Install libegl1 (GPU/EGL) or libosmesa6 (software), or set MUJOCO_GL explicitly."
        )


def _gl_context_class(backend: str) -> Any:
    try:
        return importlib.import_module(f"mujoco.{backend}").GLContext
    except Exception as exc:  # ImportError, or RuntimeError from PyOpenGL platform clashes
        raise CameraError(
            f"cannot load MuJoCo's {backend} GL backend: {exc}. If PYOPENGL_PLATFORM is set, it must equal "
            f"MUJOCO_GL ({backend}); unset both to auto-detect."
        ) from exc


class SimCamera(Camera):
    """A fixed camera of the simulated cell, delivering aligned RGB-D :class:`Frame` s.

    Args:
        world: the simulated cell; its clock stamps frames.
        camera_id: name of a camera in the scene (``"front"`` by default).
        width, height: image size in pixels (at most the scene's offscreen framebuffer, 1280x960 by default).
        max_depth_m: depth beyond this is reported as 0 (invalid), like a sensor's range limit.
    """

    def __init__(
        self,
        world: SimWorld,
        camera_id: str = "front",
        width: int = 640,
        height: int = 480,
        max_depth_m: float = 6.0,
    ) -> None:
        self.world = world
        self.camera_id = camera_id
        self.width = width
        self.height = height
        self.max_depth_m = max_depth_m
        model = world.model
        self._cam_index = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera_id)
        if self._cam_index < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise CameraError(f"scene has no camera {camera_id!r}; available: {names}")
        if width > model.vis.global_.offwidth or height > model.vis.global_.offheight:
            raise CameraError(
                f"{width}x{height} exceeds the scene's offscreen buffer "
                f"{model.vis.global_.offwidth}x{model.vis.global_.offheight}; raise SceneConfig.max_render_*"
            )
        if not (max_depth_m > 0 and np.isfinite(max_depth_m)):
            raise CameraError(f"max_depth_m must be a positive number of metres, got {max_depth_m}")
        self._model = camera_model_from_mujoco(model, camera_id, width, height)
        extent = float(model.stat.extent)
        self._znear = float(model.vis.map.znear) * extent
        self._zfar = float(model.vis.map.zfar) * extent
        self._render_lock = threading.Lock()
        self._gl: Any = None
        self._con: mujoco.MjrContext | None = None
        self._scn: mujoco.MjvScene | None = None
        self._opt = mujoco.MjvOption()
        self._mjcam = mujoco.MjvCamera()
        self._mjcam.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._mjcam.fixedcamid = self._cam_index
        self._rect = mujoco.MjrRect(0, 0, width, height)
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)
        self._zbuf = np.empty((height, width), dtype=np.float32)
        self._seq = 0

    # ------------------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Create the GL context and MuJoCo render context. Idempotent.

        Raises:
            CameraError: no headless GL backend works (see :func:`select_gl_backend`).
        """
        with self._render_lock:
            if self._con is not None:
                return
            backend = select_gl_backend()
            try:
                gl = _gl_context_class(backend)(self.width, self.height)
            except CameraError:
                raise
            except Exception as exc:
                raise CameraError(
                    f"could not create a {backend} OpenGL context: {exc}. Try MUJOCO_GL=osmesa (software)."
                ) from exc
            with gl.as_current():
                con = mujoco.MjrContext(self.world.model, mujoco.mjtFontScale.mjFONTSCALE_100)
                mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, con)
                con.readDepthMap = mujoco.mjtDepthMap.mjDEPTH_ZEROFAR
            self._gl = gl
            self._con = con
            self._scn = mujoco.MjvScene(self.world.model, maxgeom=2000)
            log.debug("camera %s started (%dx%d, %s)", self.camera_id, self.width, self.height, backend)

    def stop(self) -> None:
        """Free the GL resources. Idempotent."""
        with self._render_lock:
            if self._con is not None and self._gl is not None:
                with self._gl.as_current():
                    self._con.free()
                self._gl.free()
            self._con = None
            self._gl = None
            self._scn = None

    # -------------------------------------------------------------------------------------------- interface
    @property
    def model(self) -> CameraModel:
        """Pinhole intrinsics at ``width`` x ``height`` (no distortion)."""
        return self._model

    def ground_truth_pose(self) -> Pose:
        """``T_world_cam`` (optical convention: x right, y down, z forward); world = robot base frame."""
        with self.world.lock:
            return camera_pose_from_mujoco(self.world.model, self.world.data, self.camera_id)

    def read(self) -> Frame:
        """Sync the world to ``clock.now_ns()`` and render it; ``t_capture_ns`` is that clock time.

        Raises:
            CameraError: the camera was not started, or rendering failed.
        """
        with self._render_lock:
            if self._con is None or self._scn is None:
                raise CameraError(f"camera {self.camera_id!r} is not started; call start() or use it as a context")
            world = self.world
            with world.lock:
                t_capture_ns = world.sync_now()
                mujoco.mjv_updateScene(
                    world.model, world.data, self._opt, None, self._mjcam, mujoco.mjtCatBit.mjCAT_ALL, self._scn
                )
            try:
                with self._gl.as_current():
                    mujoco.mjr_render(self._rect, self._scn, self._con)
                    mujoco.mjr_readPixels(self._rgb, self._zbuf, self._rect, self._con)
            except Exception as exc:
                raise CameraError(f"camera {self.camera_id!r}: MuJoCo render failed: {exc}") from exc
            color = np.ascontiguousarray(np.flipud(self._rgb))  # OpenGL rows run bottom-up
            depth = self._depth_to_units(np.flipud(self._zbuf))
            self._seq += 1
            seq = self._seq
        return Frame(color, depth, DEPTH_SCALE, t_capture_ns, self.camera_id, seq)

    def _depth_to_units(self, zbuf: np.ndarray) -> np.ndarray:
        """Reverse-Z buffer values in [0, 1] -> (H, W) uint16 depth units (mm); 0 where invalid."""
        n, f = self._znear, self._zfar
        z = zbuf.astype(np.float64)
        depth_m = (f * n) / (z * (f - n) + n)  # z = 1 at the near plane, 0 at the far plane
        valid = (z > 0.0) & (depth_m < min(self.max_depth_m, 0.999 * f)) & (depth_m > n)
        units = np.where(valid, np.rint(depth_m / DEPTH_SCALE), 0.0)
        return np.clip(units, 0, np.iinfo(np.uint16).max).astype(np.uint16)

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # interpreter shutdown: GL libraries may already be gone
            self.stop()
