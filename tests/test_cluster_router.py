"""The affinity request router inside Ray Serve's routing machinery, on fake replicas (needs the
`ray` extra installed, not a running Ray)."""

from __future__ import annotations

import asyncio
import itertools
import warnings
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import pytest

with warnings.catch_warnings():  # Ray's own modules warn on import (pydantic deprecations)
    warnings.simplefilter("ignore")
    try:
        from ray.serve._private.common import (
            DeploymentHandleSource,
            DeploymentID,
            ReplicaID,
            RequestMetadata,
        )
        from ray.serve.request_router import PendingRequest

        from warmlm.cluster import registry, router

        RAY: ModuleType | None = router
    except ImportError:
        RAY = None

pytestmark = pytest.mark.skipif(
    RAY is None, reason="ray[serve] is not installed (pip install -e '.[ray]')"
)
DEPLOYMENT = ("warmlm", "engine")
_ids = itertools.count()


@dataclass
class FakeReplica:
    """What the router reads of a RunningReplica."""

    unique_id: str
    queue_len: int = 0
    max_ongoing_requests: int = 8
    node_id: str = "node"
    availability_zone: str | None = None
    multiplexed_model_ids: set[str] = field(default_factory=set)
    routing_stats: dict[str, Any] = field(default_factory=dict)
    is_cross_language: bool = False

    @property
    def replica_id(self) -> Any:
        return ReplicaID(self.unique_id, DeploymentID(name=DEPLOYMENT[1], app_name=DEPLOYMENT[0]))

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return self.queue_len


def new_router(*replicas: FakeReplica, **state: Any) -> Any:
    assert RAY is not None
    r = RAY.AffinityRouter(
        deployment_id=DeploymentID(name=DEPLOYMENT[1], app_name=DEPLOYMENT[0]),
        handle_source=DeploymentHandleSource.REPLICA,
        use_replica_queue_len_cache=True,
    )
    r.initialize_state(**state)
    r.update_replicas(list(replicas))
    return r


def pending(**route: Any) -> Any:
    meta = RequestMetadata(request_id="r", internal_request_id=f"i{next(_ids)}")
    return PendingRequest(args=[], kwargs={"route": route}, metadata=meta)


def ids(ranks: list[list[Any]]) -> list[list[str]]:
    return [[r.unique_id for r in rank] for rank in ranks]


async def route(r: Any, request: Any) -> str:
    """The whole routing path of Ray Serve (queue lengths, ranks, rejection), then the hook that
    Serve calls once the replica accepted."""
    chosen = await asyncio.wait_for(r._choose_replica_for_request(request), 5)
    r.on_request_routed(request, chosen.replica_id, None)
    return str(chosen.unique_id)


@pytest.mark.asyncio
async def test_a_conversation_stays_on_its_replica() -> None:
    a, b = FakeReplica("a"), FakeReplica("b")
    r = new_router(a, b)
    assert set(registry.live_replicas(*DEPLOYMENT)) == {"a", "b"}
    homes = {await route(r, pending(key=f"conv{i}")) for i in range(20)}
    assert homes == {"a", "b"}  # new conversations spread over the replicas
    first = await route(r, pending(key="k"))
    for _ in range(5):
        assert await route(r, pending(key="k")) == first
    ranks = ids(await r.choose_replicas(list(r._replicas.values()), pending(key="k")))
    assert ranks == [[first], ["b" if first == "a" else "a"]]


@pytest.mark.asyncio
async def test_a_saturated_home_spills_to_the_least_loaded_and_the_key_follows() -> None:
    reps = {n: FakeReplica(n) for n in "abc"}
    r = new_router(*reps.values())
    home = await route(r, pending(key="k"))
    reps[home].queue_len = reps[home].max_ongoing_requests  # saturated
    r.replica_queue_len_cache.invalidate_key(reps[home].replica_id)
    others = sorted(n for n in reps if n != home)
    reps[others[0]].queue_len, reps[others[1]].queue_len = 3, 1
    for n in others:
        r.replica_queue_len_cache.invalidate_key(reps[n].replica_id)
    assert await route(r, pending(key="k")) == others[1]  # the least loaded
    reps[home].queue_len = 0
    r.replica_queue_len_cache.invalidate_key(reps[home].replica_id)
    assert await route(r, pending(key="k")) == others[1]  # where its newest KV is


@pytest.mark.asyncio
async def test_a_gone_replica_hands_its_conversations_to_the_least_loaded() -> None:
    reps = {n: FakeReplica(n) for n in "abc"}
    r = new_router(*reps.values())
    home = await route(r, pending(key="k"))
    rest = sorted(n for n in reps if n != home)
    reps[rest[0]].queue_len, reps[rest[1]].queue_len = 2, 5
    r.update_replicas([reps[n] for n in rest])
    assert list(registry.live_replicas(*DEPLOYMENT)) == rest
    for n in rest:
        r.replica_queue_len_cache.invalidate_key(reps[n].replica_id)
    assert await route(r, pending(key="k")) == rest[0]
    reps[rest[0]].queue_len = 7
    r.update_replicas(list(reps.values()))  # a replacement takes new conversations, not this one
    assert await route(r, pending(key="k")) == rest[0]


@pytest.mark.asyncio
async def test_saturation_point_below_rays_limit() -> None:
    a, b = FakeReplica("a"), FakeReplica("b", routing_stats={"status": "ready", "running": 1})
    r = new_router(a, b, spill_at=2)
    assert registry.live_replicas(*DEPLOYMENT)["b"] == {"status": "ready", "running": 1}
    home = await route(r, pending(key="k"))
    other = "b" if home == "a" else "a"
    reps = {"a": a, "b": b}
    r.on_new_queue_len_info(reps[home].replica_id, 2)  # saturated, though Ray would take more
    assert ids(await r.choose_replicas([a, b], pending(key="k"))) == [[other]]
    r.on_new_queue_len_info(reps[other].replica_id, 2)
    assert await r.choose_replicas([a, b], pending(key="k")) == []  # wait for a free slot
    assert await r.choose_replicas([a, b], pending(policy="pow2")) == []
    assert ids(await r.choose_replicas([a, b], pending(target=home))) == [[home]]  # headroom
    r.on_new_queue_len_info(reps[home].replica_id, 1)
    assert await route(r, pending(key="k")) == home


@pytest.mark.asyncio
async def test_failover_target_and_default_routing() -> None:
    a, b = FakeReplica("a"), FakeReplica("b")
    r = new_router(a, b)
    home = await route(r, pending(key="k"))
    other = "b" if home == "a" else "a"
    assert ids(await r.choose_replicas([a, b], pending(key="k", failover=True))) == [
        [other],
        [home],
    ]
    assert await route(r, pending(key="k", failover=True)) == other
    assert ids(await r.choose_replicas([a, b], pending(target="b"))) == [["b"]]
    for hint in ({"policy": "pow2", "key": "k"}, {}):
        (rank,) = ids(await r.choose_replicas([a, b], pending(**hint)))
        assert sorted(rank) == ["a", "b"]  # power of two choices: both, in random order


def test_app_builder_for_rays_own_cli() -> None:
    """`serve run warmlm.cluster.launch:app_builder model=... replicas=3` builds the app."""
    from warmlm.cluster.launch import app_builder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = app_builder({"model": "smollm2-135m", "replicas": "3", "ctx": "2048"})
    assert type(app).__name__ == "Application"
