"""``robot-stack ping ENDPOINT``: health, model metadata, round-trip p50/p99 over N requests and the clock offset of
a running policy server — ZeroMQ (``tcp://``, CURVE with ``--curve-server-key``) or an openpi-protocol websocket
server (``ws://``).

Round trips are ``health`` requests on ZeroMQ (no model call: the transport and the server's I/O path) and, with
``--infer``, inference requests on a zero observation shaped like the model's declared inputs. An openpi server has
no health request: its round trips are always inference calls (the observation built from the metadata it sends on
connect, which robot-stack's openpi face fills with the model's inputs).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from robot_stack.errors import ConfigError
from robot_stack.metrics import latency_stats

if TYPE_CHECKING:
    from robot_stack.transport.answers import AnswerTracking

__all__ = ["PingReport", "ping", "zero_observation"]


@dataclass
class PingReport:
    """What a ping measured. Times in milliseconds (client clock); offset = server clock - client clock."""

    endpoint: str
    protocol: str
    health: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = "health"
    n: int = 0
    round_trip: dict[str, float] = field(default_factory=dict)
    clock_offset_ms: float | None = None
    clock_offset_uncertainty_ms: float | None = None

    def measured(self, round_trips_s: list[float], client: AnswerTracking) -> None:
        """Fill in the round trips (s) and the client's clock-offset estimate (None while it has none)."""
        self.round_trip = latency_stats(np.asarray(round_trips_s))
        if client.clock_offset_ns is not None:
            self.clock_offset_ms = client.clock_offset_ns / 1e6
            unc = client.clock_offset_uncertainty_ns
            self.clock_offset_uncertainty_ms = None if unc is None else unc / 1e6

    def rows(self) -> list[tuple[str, str]]:
        """(what, value) rows for the summary table."""
        md = self.metadata
        inputs = md.get("request_inputs") or md.get("inputs") or []
        shapes = ", ".join(
            f"{t.get('name')} {t.get('dtype')}{list(t.get('shape', []))}" for t in inputs if isinstance(t, Mapping)
        )
        rows = [
            ("endpoint", f"{self.endpoint} ({self.protocol})"),
            ("status", str(self.health.get("status", "answering"))),
            ("model", str(md.get("model_id", "?"))),
            ("provider", str(md.get("provider", "?"))),
            ("action head", f"{md.get('action_head', '?')} ({md.get('action_space', '?')})"),
            (
                "rates",
                f"chunk {md.get('horizon', '?')} x dt {md.get('dt_s', '?')} s, "
                f"control {md.get('control_rate_hz', '?')} Hz",
            ),
            ("inputs", shapes or "?"),
        ]
        rt = self.round_trip
        if rt:
            rows.append(
                (
                    f"round trip ({self.kind}, n={self.n})",
                    f"p50 {rt['p50_ms']:.2f} ms, p99 {rt['p99_ms']:.2f} ms, max {rt['max_ms']:.2f} ms",
                )
            )
        if self.clock_offset_ms is not None:
            unc = f" ± {self.clock_offset_uncertainty_ms:.3f}" if self.clock_offset_uncertainty_ms is not None else ""
            rows.append(("clock offset (server - client)", f"{self.clock_offset_ms:+.3f}{unc} ms"))
        else:
            rows.append(("clock offset (server - client)", "not measurable (the server reports no timestamps)"))
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "protocol": self.protocol,
            "health": self.health,
            "model": self.metadata.get("model_id"),
            "action_head": self.metadata.get("action_head"),
            "kind": self.kind,
            "n": self.n,
            **self.round_trip,
            "clock_offset_ms": self.clock_offset_ms,
            "clock_offset_uncertainty_ms": self.clock_offset_uncertainty_ms,
        }


def zero_observation(metadata: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A zero observation matching the model's request inputs (metadata ``request_inputs`` or ``inputs``: name,
    dtype, shape; a leading batch dimension of -1/None becomes 1)."""
    inputs = metadata.get("request_inputs") or metadata.get("inputs")
    if not inputs:
        raise ConfigError("the server's metadata names no inputs; cannot build an observation for --infer")
    out = {}
    for spec in inputs:
        shape = tuple(
            1 if (d is None or (isinstance(d, int) and d < 0) or isinstance(d, str)) else int(d) for d in spec["shape"]
        )
        out[str(spec["name"])] = np.zeros(shape, dtype=np.dtype(spec["dtype"]))
    return out


def ping(
    endpoint: str,
    *,
    n: int = 20,
    infer: bool = False,
    timeout_s: float = 2.0,
    curve_server_key: str | None = None,
    curve_secret: str | None = None,
    robot_id: str = "ping",
) -> PingReport:
    """Ping ``endpoint`` ``n`` times; see the module docstring.

    Raises:
        RequestTimeoutError / TransportError: the server does not answer within ``timeout_s``.
        ConfigError: bad arguments (n < 1, CURVE key files missing or unreadable).
    """
    if n < 1:
        raise ConfigError(f"-n must be >= 1, got {n}")
    if endpoint.startswith(("ws://", "wss://")):
        return _ping_openpi(endpoint, n, timeout_s)
    from robot_stack.transport.client import PolicyClient

    kwargs: dict[str, Any] = {}
    if curve_server_key or curve_secret:
        if not (curve_server_key and curve_secret):
            raise ConfigError("CURVE needs both --curve-server-key (server .key) and --curve-secret (your .key_secret)")
        from robot_stack.transport.keys import client_curve_kwargs

        kwargs = client_curve_kwargs(curve_server_key, curve_secret)
    report = PingReport(endpoint, "zeromq", kind="infer" if infer else "health", n=n)
    with PolicyClient(endpoint, robot_id, timeout_s=timeout_s, **kwargs) as client:
        report.health = client.health()
        report.metadata = client.metadata()
        obs = zero_observation(report.metadata) if infer else None
        samples = []
        for _ in range(n):
            if obs is None:
                samples.append(client.health()["round_trip_ms"] / 1e3)
            else:
                samples.append(client.infer(obs).timing.round_trip_ms / 1e3)
        report.measured(samples, client)
    return report


def _ping_openpi(endpoint: str, n: int, timeout_s: float) -> PingReport:
    from robot_stack.transport.openpi import OpenPIClient

    report = PingReport(endpoint, "openpi websocket + msgpack-numpy", kind="infer", n=n)
    with OpenPIClient(endpoint, timeout_s=timeout_s) as client:
        report.metadata = dict(client.metadata())
        obs = zero_observation(report.metadata)
        samples = []
        t0 = time.monotonic()
        for _ in range(n):
            samples.append(client.infer(obs).timing.round_trip_ms / 1e3)
        report.health = {"status": "answering", "seconds": round(time.monotonic() - t0, 3)}
        report.measured(samples, client)
    return report
