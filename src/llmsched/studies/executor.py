"""Run independent simulations in parallel: a process pool over all cores (default), a Ray cluster, or
inline with one worker. Results come back in job order, so output does not depend on scheduling.

Ctrl-C (SIGINT) stops a map within a second or two: workers ignore SIGINT (a terminal sends it to the whole
process group, and a worker interrupted mid-run would print a traceback and leave the pool waiting on it); the
parent cancels what has not started, terminates the workers and re-raises KeyboardInterrupt."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from llmsched.errors import UserError

BACKENDS = ("process", "ray")


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _ignore_sigint() -> None:
    """Pool worker initializer: SIGINT is the parent's to handle; then let the other signals through."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


@contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Workers start while SIGINT is blocked (the mask is inherited across fork and exec), so that a Ctrl-C
    during their start-up reaches none of them before `_ignore_sigint` runs; the parent gets it on unblocking."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextmanager
def _sigint_deferred() -> Iterator[list[bool]]:
    """Ray cannot be interrupted while it starts: its driver may crash and leave the cluster's processes
    running. A Ctrl-C then is recorded (the yielded list becomes non-empty) and acted on once it has started."""
    hits: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield hits
        return
    previous = signal.signal(signal.SIGINT, lambda *_: hits.append(True))
    try:
        yield hits
    finally:
        signal.signal(signal.SIGINT, previous)


class Executor:
    def __init__(self, backend: str = "process", workers: int | None = None, ray_address: str | None = None):
        if backend not in BACKENDS:
            raise UserError(f"--backend is {backend!r}, expected process or ray")
        if workers is not None and workers < 1:
            raise UserError(f"--workers is {workers}, expected a positive integer")
        self.backend, self.workers = backend, workers or default_workers()
        self._pool = None
        self._started_ray = False
        self._remote: dict[Callable, Any] = {}
        if backend == "ray":
            try:
                import ray
            except ImportError:
                raise UserError("--backend ray needs Ray: pip install 'llmsched[ray]'") from None
            if not ray.is_initialized():
                kwargs = {"address": ray_address} if ray_address else {"num_cpus": self.workers}
                try:
                    with _sigint_deferred() as interrupted:
                        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
                except ConnectionError as e:
                    raise UserError(f"--ray-address {ray_address}: cannot connect ({e})") from None
                self._started_ray = True
                if interrupted:
                    self.close()
                    raise KeyboardInterrupt
            self.workers = max(1, int(ray.cluster_resources().get("CPU", self.workers)))
        elif self.workers > 1:
            from concurrent.futures import ProcessPoolExecutor
            from multiprocessing import get_context

            self._pool = ProcessPoolExecutor(self.workers, mp_context=get_context("spawn"), initializer=_ignore_sigint)

    def map(self, fn: Callable, jobs: list[tuple], progress: tqdm | None = None) -> list:
        """fn(*job) for each job; fn must be a module-level function (picklable)."""
        if self.backend == "ray":
            return self._map_ray(fn, jobs, progress)
        if self._pool is None:
            out = []
            for job in jobs:
                out.append(fn(*job))
                if progress:
                    progress.update(1)
            return out
        futures = []
        try:
            with _sigint_blocked():  # the pool starts its workers on demand, at submit
                futures = [self._pool.submit(fn, *job) for job in jobs]
            if progress:
                for f in futures:
                    f.add_done_callback(lambda _: progress.update(1))
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            self._terminate_pool()
            raise

    def _map_ray(self, fn: Callable, jobs: list[tuple], progress: tqdm | None) -> list:
        import ray

        remote = self._remote.setdefault(fn, ray.remote(fn))
        refs = [remote.remote(*job) for job in jobs]
        pending = list(refs)
        try:
            while pending:
                _, pending = ray.wait(pending, num_returns=1)
                if progress:
                    progress.update(1)
            return ray.get(refs)
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            self.close()
            raise

    def _terminate_pool(self) -> None:
        """Stop the workers now: shutdown() alone would wait for the runs in progress (minutes, for a long run)."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = list((getattr(pool, "_processes", None) or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in processes:
            p.terminate()
        for p in processes:
            p.join(5)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._started_ray:
            import ray

            ray.shutdown()
            self._started_ray = False

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
