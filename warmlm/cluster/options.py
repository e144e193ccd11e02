"""What `warmlm serve --ray` adds to a server's configuration: replicas, autoscaling, Ray."""

from __future__ import annotations

import os
from dataclasses import dataclass

from warmlm.config import ConfigError

APP_NAME = "warmlm"
ENGINE = "engine"
INGRESS = "ingress"
MAX_REPLICAS = 256


@dataclass(frozen=True)
class ClusterOptions:
    """How many engine replicas, how they scale, where Ray runs."""

    replicas: int = 2
    autoscale: tuple[int, int] | None = None  # (min, max) replicas
    address: str | None = None  # join this Ray cluster; None: start a local one
    replica_threads: int = 1
    # Ray's `max_ongoing_requests` per replica, as a multiple of the engine's --parallel: past it a
    # replica is saturated and a conversation spills to the least-loaded other replica.
    saturation: int = 2
    # autoscaling aims at this many ongoing requests per replica, as a multiple of --parallel
    target_per_slot: float = 1.0
    ready_timeout: float = 600.0  # seconds a replica may take to load and warm up
    health_period: float = 2.0  # seconds between Ray's calls of a replica's check_health

    def __post_init__(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ConfigError(f"replicas must be in [1, {MAX_REPLICAS}], got {self.replicas}")
        if self.autoscale is not None:
            low, high = self.autoscale
            if not 0 <= low <= high or not 1 <= high <= MAX_REPLICAS:
                raise ConfigError(
                    f"autoscale MIN:MAX needs 0 <= MIN <= MAX, 1 <= MAX <= {MAX_REPLICAS}; "
                    f"got {low}:{high}"
                )
        if not 1 <= self.replica_threads <= 512:
            raise ConfigError(f"replica threads must be in [1, 512], got {self.replica_threads}")
        if self.saturation < 1:
            raise ConfigError(f"saturation must be >= 1, got {self.saturation}")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas

    @property
    def initial_replicas(self) -> int:
        return max(1, self.autoscale[0]) if self.autoscale else self.replicas


def parse_autoscale(text: str) -> tuple[int, int]:
    """`MIN:MAX` → (min, max)."""
    low, sep, high = text.partition(":")
    try:
        if not sep:
            raise ValueError(text)
        return int(low), int(high)
    except ValueError:
        raise ConfigError(f"--autoscale takes MIN:MAX (e.g. 1:4), got {text!r}") from None


def default_replica_threads(replicas: int) -> int:
    """The machine's cores shared among the replicas of a local cluster (at least 1 each)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, (cores or 1) // max(1, replicas))


def cluster_options(
    replicas: int | None,
    autoscale: str | None,
    address: str | None,
    replica_threads: int | None,
    threads: int | None = None,
) -> ClusterOptions:
    """From the flags of `warmlm serve --ray` (None: not given)."""
    if replicas is not None and autoscale is not None:
        raise ConfigError("--replicas and --autoscale are exclusive")
    bounds = parse_autoscale(autoscale) if autoscale is not None else None
    count = replicas if replicas is not None else 2
    top = bounds[1] if bounds else count
    per_replica = replica_threads or threads or default_replica_threads(top)
    return ClusterOptions(
        replicas=count, autoscale=bounds, address=address or None, replica_threads=per_replica
    )


CLUSTER_FLAGS = {
    "replicas": "--replicas",
    "autoscale": "--autoscale",
    "ray_address": "--ray-address",
    "replica_threads": "--replica-threads",
}


def ray_requested(args: object) -> bool:
    """Whether `warmlm serve` was given --ray; a cluster flag without it is an error."""
    if getattr(args, "ray", False):
        return True
    given = [flag for name, flag in CLUSTER_FLAGS.items() if getattr(args, name, None) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)} only apply with --ray")
    return False
