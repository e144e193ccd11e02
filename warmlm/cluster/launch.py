"""`warmlm serve --ray`: build the Serve application, start or join Ray, serve until interrupted."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

from warmlm.cluster.options import APP_NAME, ENGINE, INGRESS, ClusterOptions, cluster_options
from warmlm.config import ConfigError, ServerConfig, default_threads

log = logging.getLogger("warmlm.cluster")
ROUTER_CLASS = "warmlm.cluster.router.AffinityRouter"
INGRESS_MAX_ONGOING = 4096  # the ingress only forwards: never the bottleneck
ROUTING_STATS_PERIOD_S = 2.0  # how fresh the engine state on the ingress's /health is
CONTROL_HEADROOM = 4  # requests a saturated replica still takes: the ingress's /metrics visits
EXIT_RAY_UNAVAILABLE = 3  # Ray itself could not start or be joined (tests skip on it)


class RayUnavailable(RuntimeError):
    pass


def replica_config(config: ServerConfig, options: ClusterOptions) -> ServerConfig:
    return dataclasses.replace(config, threads=options.replica_threads)


def engine_settings(config: ServerConfig, options: ClusterOptions) -> dict[str, Any]:
    """The engine deployment's Serve options."""
    spill_at = config.parallel * options.saturation
    settings: dict[str, Any] = {
        "name": ENGINE,
        # the router treats a replica with `spill_at` ongoing requests as saturated; Ray's hard
        # limit is a little higher, so that /metrics can still visit a saturated replica
        "max_ongoing_requests": spill_at + CONTROL_HEADROOM,
        "ray_actor_options": {"num_cpus": options.replica_threads},
        "health_check_period_s": options.health_period,
        "health_check_timeout_s": 30.0,
        "graceful_shutdown_timeout_s": 20.0,
        "max_constructor_retry_count": 3,  # a model that cannot load fails the start fast
        "request_router_config": {
            "request_router_class": ROUTER_CLASS,
            "request_router_kwargs": {"spill_at": spill_at},
            "request_routing_stats_period_s": ROUTING_STATS_PERIOD_S,
        },
        "logging_config": {"enable_access_log": False},
    }
    if options.autoscale is None:
        settings["num_replicas"] = options.replicas
    else:
        low, high = options.autoscale
        settings["autoscaling_config"] = {
            "min_replicas": low,
            "initial_replicas": options.initial_replicas,
            "max_replicas": high,
            # Ray counts a replica's ongoing requests: those generating and those queued in it
            "target_ongoing_requests": max(1.0, config.parallel * options.target_per_slot),
            "upscale_delay_s": 5.0,
            "downscale_delay_s": 60.0,
        }
    return settings


def build_app(config: ServerConfig, options: ClusterOptions) -> Any:
    """The Serve application: the ingress bound to the engine deployment."""
    from ray import serve

    from warmlm.cluster.deployments import EngineReplica, Ingress

    engine = serve.deployment(**engine_settings(config, options))(EngineReplica)
    ingress = serve.deployment(
        name=INGRESS,
        max_ongoing_requests=INGRESS_MAX_ONGOING,
        ray_actor_options={"num_cpus": 0},
        logging_config={"enable_access_log": False},
    )(Ingress)
    return ingress.bind(engine.bind(replica_config(config, options), options.ready_timeout))


def app_builder(args: Mapping[str, str]) -> Any:
    """For Ray Serve's own CLI and config files, e.g.
    `serve run warmlm.cluster.launch:app_builder model=smollm2-135m replicas=2`: every
    `ServerConfig` field (also from `WARMLM_*`) plus replicas, autoscale, replica_threads."""
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    config = ServerConfig.from_env(**{k: v for k, v in _typed(args).items() if k in names})
    options = cluster_options(
        _int(args.get("replicas")),
        args.get("autoscale"),
        None,
        _int(args.get("replica_threads")),
        _int(args.get("threads")),
    )
    return build_app(config, options)


def _int(value: str | None) -> int | None:
    return None if value is None else int(value)


def _typed(args: Mapping[str, str]) -> dict[str, Any]:
    from warmlm.config import _coerce

    types = {f.name: f.type for f in dataclasses.fields(ServerConfig)}
    return {k: _coerce(k, types[k], str(v)) for k, v in args.items() if k in types}


def _local_cpus(options: ClusterOptions) -> int:
    """Logical CPUs of a local Ray: enough for every replica's threads (Ray would otherwise
    leave replicas pending), at least the machine's cores."""
    return max(default_threads(), options.max_replicas * options.replica_threads)


def start_ray(options: ClusterOptions) -> bool:
    """Join `options.address` or start a local Ray; True when this process started it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    import ray

    common: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": True}
    try:
        if options.address:
            ray.init(address=options.address, **common)
            return False
        ray.init(num_cpus=_local_cpus(options), include_dashboard=False, **common)
        return True
    except Exception as exc:
        ray.shutdown()
        raise RayUnavailable(f"Ray could not start: {type(exc).__name__}: {exc}") from exc


def _display_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::") else (f"[{host}]" if ":" in host else host)


def _prepare_model(config: ServerConfig) -> None:
    """Assemble the model's file once here, not in every replica at the same time."""
    from warmlm.models.resolve import resolve_model

    resolve_model(config.model, config.cache_dir, progress=sys.stderr.isatty())


def require_ray() -> None:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"--ray needs Ray Serve ({exc}): pip install 'warmlm[ray]'") from None


def run_cluster(config: ServerConfig, options: ClusterOptions) -> int:
    """Serve on Ray until interrupted (SIGINT/SIGTERM); 1 when the application fails to start."""
    require_ray()
    _prepare_model(config)
    stop = threading.Event()
    serving = False

    def on_signal(signum: int, frame: object) -> None:
        stop.set()
        if not serving:  # still starting: abandon the start
            raise KeyboardInterrupt

    status = 0
    try:
        started_here = start_ray(options)
    except RayUnavailable as exc:
        print(f"warmlm: {exc}", file=sys.stderr)
        return EXIT_RAY_UNAVAILABLE
    for sig in (signal.SIGINT, signal.SIGTERM):  # after ray.init, which installs its own
        signal.signal(sig, on_signal)
    from ray import serve

    try:
        serve.start(
            http_options={"host": config.host, "port": config.port},
            proxy_location="HeadOnly" if started_here else "EveryNode",
        )
        t0 = time.perf_counter()
        serve.run(build_app(config, options), name=APP_NAME, route_prefix="/", blocking=False)
        serving = True
        url = f"http://{_display_host(config.host)}:{config.port}/"
        scale = (
            f"autoscaling {options.autoscale[0]}..{options.autoscale[1]} replicas"
            if options.autoscale
            else f"{options.replicas} replicas"
        )
        print(
            f"warmlm is ready on Ray Serve: {url}  ({scale} x {options.replica_threads} "
            f"threads, up in {time.perf_counter() - t0:.1f}s; OpenAI API at {url}v1)",
            flush=True,
        )
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        status = 130
    except Exception as exc:
        log.debug("the application failed", exc_info=True)
        print(f"warmlm: the Ray Serve application failed: {exc}", file=sys.stderr)
        status = 1
    finally:
        serving = True  # a second signal no longer interrupts the shutdown
        _shutdown(started_here)
    return status


def _shutdown(started_here: bool) -> None:
    import ray
    from ray import serve

    from warmlm.cluster.procs import descendants, end

    ours = descendants() if started_here else []  # the local Ray's processes, before they go
    try:
        if started_here:
            serve.shutdown()
        else:
            serve.delete(APP_NAME)  # leave the cluster's other applications alone
    except Exception:
        log.exception("stopping the Serve application failed")
    finally:
        ray.shutdown()
        killed = end(ours)
        if killed:
            log.warning("ended %d Ray processes left behind: %s", len(killed), killed)


def options_from_args(args: Any) -> ClusterOptions:
    """The `warmlm serve --ray` flags."""
    return cluster_options(
        getattr(args, "replicas", None),
        getattr(args, "autoscale", None),
        getattr(args, "ray_address", None),
        getattr(args, "replica_threads", None),
        getattr(args, "threads", None),
    )
