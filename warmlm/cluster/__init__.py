"""Scaling out on Ray Serve: `warmlm serve --ray`.

One Ray Serve application, two deployments:

- `engine` — each replica runs a whole warmlm app (service, engine, routes) in its own process and
  answers forwarded HTTP requests through an in-process ASGI bridge (`bridge`, `core`). A replica
  is routable only once its engine is warm (its constructor waits), and Ray's health check reads
  the engine's state, so a replica whose engine failed is replaced.
- `ingress` — behind Ray Serve's HTTP proxy: computes each request's conversation-affinity key
  (`affinity`), forwards it through a deployment handle whose request router
  (`router.AffinityRouter`, Ray Serve's `RequestRouter` extension point) sends it to the replica
  that holds the conversation's KV, and answers `/health`, `/ready` and `/metrics` for the whole
  application.

Only `launch`, `router` and `deployments` import Ray; the rest is plain Python and is tested
without it.
"""
