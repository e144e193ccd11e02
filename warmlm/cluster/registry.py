"""What the affinity router knows that the ingress (same process) needs: the live replicas and
the engine state each reports (Ray Serve's routing stats, collected off the request path).

Kept out of `router`: Ray Serve pickles the router's module by value, so state the router shares
must live in a module it imports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# "app/deployment" → {replica id: its latest routing stats} of the replicas its router routes to
# (written on Serve's router thread and replaced whole, so readers on other threads see one
# consistent set)
LIVE: dict[str, Mapping[str, Mapping[str, Any]]] = {}


def publish(deployment: str, replicas: Mapping[str, Mapping[str, Any]]) -> None:
    LIVE[deployment] = dict(sorted(replicas.items()))


def live_replicas(app: str, deployment: str) -> Mapping[str, Mapping[str, Any]]:
    """The replicas the router of `app`'s `deployment` in this process routes to, with the
    engine state each last reported ({} until its first report)."""
    return LIVE.get(f"{app}/{deployment}", {})
