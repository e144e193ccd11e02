"""The application's `/metrics`: every replica's warmlm metrics, labelled `replica="<id>"`, plus
the router's own figures, in one Prometheus exposition."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families

from warmlm.server.metrics import PREFIX

REPLICA_LABEL = "replica"

disable_created_metrics()  # as warmlm's own /metrics does: `_created` series only add noise

# The router's decisions, counted in the process that routes (the ingress replica).
ROUTER_REGISTRY = CollectorRegistry()
ROUTED = Counter(
    PREFIX + "router_requests",
    "Requests routed to engine replicas, by decision: home (the replica holding the "
    "conversation), new (a new conversation, placed by hashing), spill (home saturated: "
    "least-loaded other replica), failover (home gone or failed), unkeyed (no affinity key), "
    "pow2 (Ray Serve's default power-of-two choices, asked for under /pow2), target.",
    ["decision"],
    registry=ROUTER_REGISTRY,
)


def label_replica(text: str, replica: str) -> list[Metric]:
    """A replica's exposition, parsed, every sample labelled with the replica."""
    families = []
    for family in text_string_to_metric_families(text):
        family.samples = [
            s._replace(labels={**s.labels, REPLICA_LABEL: replica}) for s in family.samples
        ]
        families.append(family)
    return families


class _Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> Iterator[Metric]:
        yield from self._families


def merge(
    replicas: Mapping[str, str],
    replica_states: Mapping[str, int],
    extra: Iterable[Metric] = (),
) -> bytes:
    """One exposition: the replicas' families merged by name, the replica count by Serve state,
    the router's counters and `extra`."""
    merged: dict[str, Metric] = {}
    for replica, text in sorted(replicas.items()):
        for family in label_replica(text, replica):
            known = merged.get(family.name)
            if known is None:
                merged[family.name] = family
            elif known.type == family.type:
                known.samples.extend(family.samples)
    states = GaugeMetricFamily(
        PREFIX + "cluster_replicas", "Engine replicas by Ray Serve state.", labels=["state"]
    )
    for state, count in sorted(replica_states.items()):
        states.add_metric([state.lower()], count)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families([*merged.values(), states, *extra]))
    return generate_latest(registry) + generate_latest(ROUTER_REGISTRY)
