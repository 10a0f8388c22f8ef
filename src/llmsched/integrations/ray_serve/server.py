"""Start and stop the served app: local Ray (or a cluster's), Serve's HTTP proxy on host:port, the app."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from llmsched.integrations.ray_serve.app import APP_NAME, ServeConfig, build_app


@dataclass
class Served:
    url: str
    started_ray: bool
    startup_s: float


def start(
    cfg: ServeConfig,
    host: str = "127.0.0.1",
    port: int = 8000,
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> Served:
    """Blocks until every replica is up (engines started, capacities measured)."""
    import ray
    from ray import serve

    t0 = time.monotonic()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    started = False
    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        else:
            need = int(len(cfg.replicas) * cfg.cpus_per_replica + 0.999)
            cpus = num_cpus if num_cpus is not None else max(need, os.cpu_count() or 1)
            # Ray runs its workers at niceness 15, and a Serve replica's engine-core process inherits it: any
            # other process on the host (Ray's own, a log shipper, a load generator) would preempt the engines.
            # The engines are what this cluster is for, so its workers run at the host's normal priority.
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, namespace="llmsched",
                     _system_config={"worker_niceness": 0})  # fmt: skip
        started = True
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")
    return Served(f"http://{host}:{port}", started, time.monotonic() - t0)


def stop(served: Served | None = None) -> None:
    import ray
    from ray import serve

    try:
        if ray.is_initialized():
            serve.shutdown()
    finally:
        if served is None or served.started_ray:
            ray.shutdown()
