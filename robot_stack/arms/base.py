"""What every vendor adapter shares: the arm's description, command validation and the state it reports.

Commands are validated, never clamped (the safety filter upstream is the one place limits are enforced with
braking): a wrong shape raises :class:`~robot_stack.errors.ShapeError`; NaN/Inf, a target outside the description's
joint limits or a gripper opening outside [0, 1] raise :class:`~robot_stack.errors.SafetyError` and are counted in
:attr:`VendorArm.rejected`. Library errors become :class:`~robot_stack.errors.RobotError` naming the arm, what
failed and what to check.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

import numpy as np

from robot_stack.clock import Clock, MonotonicClock
from robot_stack.errors import RobotError, SafetyError, ShapeError
from robot_stack.kinematics.ik import PinocchioIK, ik_for
from robot_stack.robots.base import JointLimits, Robot, check_command
from robot_stack.robots.embodiment import Embodiment

log = logging.getLogger("robot_stack.arms")

__all__ = ["VendorArm", "import_vendor"]


def import_vendor(module: str, package: str, install: str) -> ModuleType:
    """Import a vendor library lazily; RobotError saying how to install it when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise RobotError(
            f"the {package} library is not installed ({exc}); install it on the robot computer: {install}"
        ) from exc


class VendorArm(Robot):
    """Base of the real-arm adapters: joint names and limits from the description, validation, FK for the TCP.

    Args:
        embodiment: the arm's description.
        clock: time source for state timestamps (monotonic ns).
        ik: the arm's kinematics for TCP poses the vendor does not report (default: from the description).
    """

    def __init__(self, embodiment: Embodiment, clock: Clock | None = None, ik: PinocchioIK | None = None) -> None:
        self.embodiment = embodiment
        self.clock: Clock = clock or MonotonicClock()
        self._ik = ik
        self.rejected = 0
        self.commands = 0

    @property
    def joint_names(self) -> tuple[str, ...]:
        return self.embodiment.arm_joints

    @property
    def limits(self) -> JointLimits:
        return self.embodiment.limits

    @property
    def ik(self) -> PinocchioIK:
        """The arm's kinematics (built on first use)."""
        if self._ik is None:
            self._ik = ik_for(self.embodiment)
        return self._ik

    def validate(self, q: np.ndarray, gripper: float | None) -> np.ndarray:
        """``q`` as a finite (n,) float64 array inside the joint limits, or raise (and count the rejection)."""
        try:
            return self._validate(q, gripper)
        except (ShapeError, SafetyError):
            self.rejected += 1
            raise

    def _validate(self, q: np.ndarray, gripper: float | None) -> np.ndarray:
        return check_command(type(self).__name__, self.joint_names, self.limits, q, gripper)
