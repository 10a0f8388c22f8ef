"""Run independent simulations in parallel: a process pool over all cores (default), a Ray cluster, or
inline with one worker. Results come back in job order, so output does not depend on scheduling."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from llmsched.errors import UserError


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Executor:
    def __init__(self, backend: str = "process", workers: int | None = None, ray_address: str | None = None):
        if backend not in ("process", "ray"):
            raise UserError(f"--backend is {backend!r}, expected process or ray")
        if workers is not None and workers < 1:
            raise UserError(f"--workers is {workers}, expected a positive integer")
        self.backend, self.workers = backend, workers or default_workers()
        self._pool = None
        self._remote: dict[Callable, Any] = {}
        if backend == "ray":
            try:
                import ray
            except ImportError:
                raise UserError("--backend ray needs Ray: pip install 'llmsched[ray]'") from None
            if not ray.is_initialized():
                kwargs = {"address": ray_address} if ray_address else {"num_cpus": self.workers}
                try:
                    ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
                except ConnectionError as e:
                    raise UserError(f"--ray-address {ray_address}: cannot connect ({e})") from None
            self.workers = max(1, int(ray.cluster_resources().get("CPU", self.workers)))
        elif self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"))

    def map(self, fn: Callable, jobs: list[tuple], progress: tqdm | None = None) -> list:
        """fn(*job) for each job; fn must be a module-level function (picklable)."""
        if self.backend == "ray":
            import ray

            remote = self._remote.setdefault(fn, ray.remote(fn))
            refs = [remote.remote(*job) for job in jobs]
            pending = list(refs)
            while pending:
                _, pending = ray.wait(pending, num_returns=1)
                if progress:
                    progress.update(1)
            return ray.get(refs)
        if self._pool is None:
            out = []
            for job in jobs:
                out.append(fn(*job))
                if progress:
                    progress.update(1)
            return out
        futures = [self._pool.submit(fn, *job) for job in jobs]
        if progress:
            for f in futures:
                f.add_done_callback(lambda _: progress.update(1))
        return [f.result() for f in futures]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
