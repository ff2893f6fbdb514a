"""The one exception hierarchy of robot-stack.

Every error the library raises on purpose derives from :class:`RobotStackError`. Messages say what was wrong,
what was expected, and what to do about it.
"""

from __future__ import annotations


class RobotStackError(Exception):
    """Base class of every error robot-stack raises on purpose."""


class ConfigError(RobotStackError):
    """A configuration file, flag or parameter is missing or invalid."""


class ShapeError(RobotStackError, ValueError):
    """An array has the wrong shape, dtype or contains non-finite values where finite ones are required."""


class CalibrationError(RobotStackError):
    """Calibration data is missing, stale, or fails its health checks."""


class CameraError(RobotStackError):
    """A camera could not be opened, or delivered no/corrupt frames."""


class RobotError(RobotStackError):
    """The robot (real or simulated) rejected a command or could not be read."""


class SimError(RobotError):
    """The MuJoCo simulation failed (bad model, unstable physics)."""


class TransportError(RobotStackError):
    """Anything that goes wrong between robot client and policy server."""


class ProtocolError(TransportError):
    """A message does not follow the wire protocol (bad header, bad frames, wrong dtype/shape)."""


class VersionMismatchError(ProtocolError):
    """Client and server speak different protocol versions."""


class PayloadTooLargeError(ProtocolError):
    """A message, or an array it declares, exceeds the configured size cap."""


class RequestTimeoutError(TransportError):
    """No reply arrived before the request's deadline."""


class ServerError(TransportError):
    """The server answered with an error (the reply carries its reason)."""


class ServerBusyError(ServerError):
    """The server refused a request because a queue cap was reached (error code ``busy``); retry later."""


class StaleObservationError(RobotStackError):
    """An observation was older than its age limit when it would have been sent; it was not sent."""


class PolicyError(RobotStackError):
    """The model runtime failed: bad manifest, missing model, inference error, non-finite outputs."""


class BackendError(PolicyError):
    """A GPU backend (TensorRT, CUDA, torch on CUDA) failed at build or run time for reasons of the device, driver
    or engine rather than of the request; the caller may fall back to another backend."""


class DecodeError(RobotStackError):
    """An action chunk could not be turned into a joint trajectory."""


class IKError(DecodeError):
    """Inverse kinematics did not converge to the requested pose within tolerance."""


class SafetyError(RobotStackError):
    """A command was refused by the safety layer (non-finite, out of range, stale)."""


class DatasetError(RobotStackError):
    """A recorded dataset is missing, malformed or inconsistent, or a recording request is invalid."""


class MotionError(RobotStackError):
    """A motion could not be generated within the joint limits (ruckig or TOPP-RA failed on the given input)."""
