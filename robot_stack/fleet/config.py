"""What a fleet runs: how many replicas of each model, on which resources, batched how (no Ray import here)."""

from __future__ import annotations

from dataclasses import dataclass

from robot_stack.errors import ConfigError

__all__ = ["FleetConfig", "parse_autoscale"]


@dataclass(frozen=True)
class FleetConfig:
    """How every model of a fleet is deployed on Ray Serve.

    Attributes:
        address: Ray cluster to join (``ray://host:10001`` or ``host:6379``, or ``auto`` for the one this node
            belongs to); None = start a private single-node instance bound to loopback only, stopped on exit.
        replicas: fixed replica count per model (ignored when ``autoscale`` is set).
        autoscale: (min, max) replicas per model; Ray Serve scales on ongoing requests per replica
            (``target_ongoing_requests``, default: the model's micro-batch size).
        gpus_per_replica: GPUs each replica reserves (fractions pack several replicas on one GPU; 0 = CPU only).
        cpus_per_replica: CPUs each replica reserves in Ray's scheduler (a reservation, not a limit).
        threads: ONNX Runtime intra-op threads per replica (None = ORT's default: all cores of its node).
        max_batch: micro-batch size per replica (None = the manifest's ``max_batch``).
        batch_wait_ms: how long a replica waits for a micro-batch to fill once it has one request.
        num_cpus: CPUs the private local instance advertises (None = all of this machine); ignored with ``address``.
        retry_backoff_ms: first pause before a request of a failed replica is sent again (doubles, capped 100 ms).
        no_deadline_s: time limit of a request that carries no deadline (for its retries).
    """

    address: str | None = None
    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    threads: int | None = 1
    max_batch: int | None = None
    batch_wait_ms: float = 2.0
    num_cpus: int | None = None
    retry_backoff_ms: float = 10.0
    no_deadline_s: float = 30.0

    def __post_init__(self) -> None:
        if self.autoscale is None and (not isinstance(self.replicas, int) or self.replicas < 1):
            raise ConfigError(f"replicas must be a positive int, got {self.replicas!r}")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi and hi >= 1):
                raise ConfigError(f"autoscale must be MIN,MAX with 0 <= MIN <= MAX and MAX >= 1, got {self.autoscale}")
        if self.gpus_per_replica < 0 or self.cpus_per_replica < 0:
            raise ConfigError("gpus_per_replica and cpus_per_replica must be >= 0")
        if self.gpus_per_replica > 1 and self.gpus_per_replica != int(self.gpus_per_replica):
            raise ConfigError(f"gpus_per_replica above 1 must be whole GPUs, got {self.gpus_per_replica}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {self.max_batch}")
        if self.batch_wait_ms < 0 or self.retry_backoff_ms < 0 or self.no_deadline_s <= 0:
            raise ConfigError("batch_wait_ms and retry_backoff_ms must be >= 0, no_deadline_s > 0")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")

    @property
    def max_replicas(self) -> int:
        """The most replicas one model may have (the fixed count, or the autoscaling maximum)."""
        return self.autoscale[1] if self.autoscale is not None else self.replicas


def parse_autoscale(text: str) -> tuple[int, int]:
    """``"MIN,MAX"`` -> (min, max).

    Raises:
        ConfigError: not two integers separated by a comma.
    """
    parts = text.split(",")
    try:
        lo, hi = (int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"--autoscale takes MIN,MAX replicas (e.g. 1,4), got {text!r}") from None
    return lo, hi
