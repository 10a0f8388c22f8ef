"""Start and stop the served app: local Ray (or a cluster's), Serve's HTTP proxy on host:port, the app."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from llmsched.integrations.ray_serve.app import APP_NAME, ServeConfig, build_app


@dataclass
class Served:
    url: str
    started_ray: bool
    startup_s: float


@contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    """Around ray.init. It replaces the driver's SIGTERM handler with one that dumps the stack and exits at once,
    leaving Serve up and Ray's agents (DashboardAgent, RuntimeEnvAgent) running: the caller's handlers are put back,
    so that SIGTERM (what systemd, Docker and Kubernetes send) stops the app as Ctrl-C does. A signal while Ray starts
    is held until it has started (interrupting ray.init can crash the driver and leave Ray's processes behind)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    kept = {s: signal.signal(s, lambda signum, _: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in kept.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(held):
            signal.raise_signal(s)


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
            with _signal_handlers_kept():
                ray.init(address=ray_address, include_dashboard=False, log_to_driver=False)
        else:
            need = int(len(cfg.replicas) * cfg.cpus_per_replica + 0.999)
            cpus = num_cpus if num_cpus is not None else max(need, os.cpu_count() or 1)
            # Ray runs its workers at niceness 15, and a Serve replica's engine-core process inherits it: any
            # other process on the host (Ray's own, a log shipper, a load generator) would preempt the engines.
            # The engines are what this cluster is for, so its workers run at the host's normal priority.
            with _signal_handlers_kept():
                # address="local": a new cluster even when another job's Ray runs on this host (ray.init would
                # join that one, and refuse num_cpus)
                ray.init(address="local", num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                         namespace="llmsched", _system_config={"worker_niceness": 0})  # fmt: skip
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
