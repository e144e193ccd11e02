"""Conversation-affinity routing, as a Ray Serve request router.

Ray Serve runs one router per deployment handle, in the process that holds the handle (here the
ingress replica); `choose_replicas` ranks the candidate replicas for a request and Serve sends it
to the least-loaded replica of the first rank that accepts it (a replica refuses once it has
`max_ongoing_requests`). The ingress passes each request's routing hint as the `route` keyword:

- `key`: the conversation's affinity key (`affinity.affinity_key`). Rank 1 is its home replica
  (where it last ran, or its rendezvous-hash choice for a new conversation), rank 2 every other
  replica: a saturated home spills to the least-loaded other one. When the home is gone, every
  live replica is one rank: the least-loaded one takes the conversation (and keeps it).
- `failover`: a retry after the home failed the request: every other replica ranks first.
- `policy` "pow2": Ray Serve's default routing (power of two choices), for comparison.
- `target`: one replica by id (the ingress's `/health` and `/metrics` visit each replica).

No key (a request of no conversation): Ray Serve's default routing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from ray.serve._private.request_router.pow_2_router import PowerOfTwoChoicesRequestRouter
from ray.serve.request_router import (
    LocalityMixin,
    MultiplexMixin,
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

# Ray Serve pickles this module by value into every process that routes: shared state (the
# decision counter, the live replicas) is reached through the modules that own it.
from warmlm.cluster import metrics, registry
from warmlm.cluster.affinity import AffinityTable

ROUTE_KWARG = "route"
PENDING_DECISIONS = 4096

# Ray Serve's default policy, run on this router's state (it needs only the mixins' helpers)
_POW2: Any = PowerOfTwoChoicesRequestRouter.choose_replicas


def route_hint(pending: PendingRequest | None) -> dict[str, Any]:
    if pending is None:
        return {}
    hint = pending.kwargs.get(ROUTE_KWARG) if isinstance(pending.kwargs, dict) else None
    return hint if isinstance(hint, dict) else {}


class AffinityRouter(LocalityMixin, MultiplexMixin, RequestRouter):  # type: ignore[misc]
    """Same conversation, same replica; least-loaded fallback; Ray's default for the rest."""

    def initialize_state(self, **kwargs: Any) -> None:
        self.table = AffinityTable(int(kwargs.get("memory", 65536)))
        # ongoing requests at which a replica is saturated for traffic (Ray's own limit,
        # max_ongoing_requests, is set a little higher: the headroom is for /metrics visits)
        self.spill_at = int(kwargs.get("spill_at", 0)) or None
        self._decisions: OrderedDict[str, tuple[str, str, str]] = OrderedDict()

    def _open(self, replica: RunningReplica) -> bool:
        """Below the saturation point, as far as this router knows."""
        if self.spill_at is None:
            return True
        queued = self._replica_queue_len_cache.get(replica.replica_id)
        return queued is None or queued < self.spill_at

    def _deployment_key(self) -> str:
        return f"{self._deployment_id.app_name}/{self._deployment_id.name}"

    def _publish(self) -> None:
        stats = {r.unique_id: dict(w.routing_stats or {}) for r, w in self._replicas.items()}
        registry.publish(self._deployment_key(), stats)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._publish()

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._publish()

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: PendingRequest | None = None,
    ) -> list[list[RunningReplica]]:
        hint = route_hint(pending_request)
        if pending_request is not None:  # Serve sleeps between rounds that found no replica
            pending_request.routing_context.should_backoff = True
        by_id = {r.replica_id.unique_id: r for r in candidate_replicas}
        target = hint.get("target")
        if target is not None:
            self._decide(pending_request, "target", str(target))
            return [[by_id[target]]] if target in by_id else [candidate_replicas]
        key = hint.get("key")
        if hint.get("policy") == "pow2" or not key:
            self._decide(pending_request, "pow2" if hint.get("policy") == "pow2" else "unkeyed")
            ranks: list[list[RunningReplica]] = await _POW2(
                self, candidate_replicas, pending_request
            )
            return [opened for rank in ranks if (opened := [r for r in rank if self._open(r)])]
        return self._affinity_ranks(str(key), bool(hint.get("failover")), by_id, pending_request)

    def _affinity_ranks(
        self,
        key: str,
        failover: bool,
        by_id: dict[str, RunningReplica],
        pending: PendingRequest | None,
    ) -> list[list[RunningReplica]]:
        """Home first, then the least-loaded other replica; saturated replicas wait (an empty
        ranking makes Serve back off and ask again)."""
        if not by_id:
            return []
        last = self.table.last(key)
        if last is not None and last not in by_id:  # its replica is gone: the least-loaded one
            self._decide(pending, "failover", "", key)
            live = [r for r in by_id.values() if self._open(r)]
            return [live] if live else []
        home_id = self.table.home(key, by_id)
        assert home_id is not None
        self._decide(pending, "failover" if failover else ("home" if last else "new"), home_id, key)
        home = by_id[home_id]
        others = [r for rid, r in by_id.items() if rid != home_id and self._open(r)]
        first, then = (others, [home]) if failover else ([home], others)
        return [rank for rank in (first, then) if rank and all(map(self._open, rank))]

    def _decide(
        self, pending: PendingRequest | None, kind: str, home: str = "", key: str = ""
    ) -> None:
        if pending is None:
            return
        request_id = pending.metadata.internal_request_id
        self._decisions[request_id] = (kind, home, key)
        self._decisions.move_to_end(request_id)
        while len(self._decisions) > PENDING_DECISIONS:
            self._decisions.popitem(last=False)

    def on_request_routed(
        self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult
    ) -> None:
        decision = self._decisions.pop(pending_request.metadata.internal_request_id, None)
        if decision is None:
            return
        kind, home, key = decision
        chosen = replica_id.unique_id
        if key:
            self.table.served(key, chosen)
            if chosen != home and kind != "failover":
                kind = "spill"
        metrics.ROUTED.labels(kind).inc()
