"""One LLM replica: a Serve deployment holding a vLLM `AsyncLLM` whose scheduler is the llmsched plugin
(or vLLM's own, `vllm-default`), with per-replica options picked by the replica's rank.

Its `record_routing_stats` reports what the router reads: outstanding requests with their prompt and decode
tokens (decode = max_tokens, as the router books them), the measured capacity `tokens_per_s`, counts, and (with
`prefix_caching`, vLLM's automatic prefix caching) vLLM's prefix cache counters since start-up, in vLLM's names
(`prefix_cache_queries` / `prefix_cache_hits`: tokens of first admissions; `prefix_cache_preempted_*`: re-admissions).
The capacity is measured at start-up: `max_num_seqs` requests of 16 prompt and 48 decode tokens at once,
(prompt + decode tokens) / seconds, i.e. the replica's b*/t(b*) at its full batch; `capacity` in the
replica's options overrides it (the benchmark sets it from the profiled batch-time model, so that the served
and the simulated routers see the same capacities).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, fields
from typing import Any

from llmsched.errors import UserError
from llmsched.integrations.vllm.engine import DEFAULT_POLICY
from llmsched.integrations.vllm.prefix import COUNTERS as PREFIX_FIELDS
from llmsched.integrations.vllm.prefix import KEYS as PREFIX_KEYS
from llmsched.policies import POLICIES

log = logging.getLogger("llmsched.serve")

# Every llmsched policy (the vLLM plugin runs them all, as `bench-engine` does), and vLLM's own scheduler.
SERVE_POLICIES = (*POLICIES, DEFAULT_POLICY)
BOOLEANS = {"on": True, "true": True, "1": True, "yes": True, "off": False, "false": False, "0": False, "no": False}
CALIBRATION = (16, 48)  # prompt, decode tokens of each start-up request: mostly decodes, as served


@dataclass(frozen=True)
class ReplicaOptions:
    """Engine settings of one replica. `cpus` binds its OpenMP threads (vLLM's VLLM_CPU_OMP_THREADS_BIND,
    e.g. "0" or "0-3"); None: the rank-th block of this machine's cores."""

    max_num_seqs: int = 16
    token_budget: int = 512
    kv_cache_gib: int = 1  # vLLM's CPU KV pool, whole GiB; num_blocks sets it finer
    num_blocks: int | None = None
    max_model_len: int | None = 2048
    capacity: float | None = None  # tokens/s; None: measured at start-up
    cpus: str | None = None
    prefix_caching: bool = False  # vLLM's automatic prefix caching (enable_prefix_caching)

    @staticmethod
    def parse(text: str, base: ReplicaOptions | None = None) -> ReplicaOptions:
        """'max_num_seqs=8,prefix_caching=on' on top of `base`."""
        base = base or ReplicaOptions()
        types = {f.name: f.type for f in fields(ReplicaOptions)}
        values = asdict(base)
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, value = part.partition("=")
            key = key.strip().replace("-", "_")
            if not eq or key not in types:
                raise UserError(f"--replica-options: {part!r} is not KEY=VALUE with KEY one of {', '.join(types)}")
            if key == "cpus":
                values[key] = value.strip()
                continue
            if key == "prefix_caching":
                flag = BOOLEANS.get(value.strip().lower())
                if flag is None:
                    raise UserError(f"--replica-options: prefix_caching={value!r}, expected on/off (true/false, 1/0)")
                values[key] = flag
                continue
            try:
                number = float(value) if "float" in str(types[key]) else int(value)
            except ValueError:
                raise UserError(f"--replica-options: {key}={value!r} is not a number") from None
            if number <= 0:
                raise UserError(f"--replica-options: {key}={value!r}, expected a positive number")
            values[key] = number
        return ReplicaOptions(**values)


def default_cpus(rank: int, per_replica: int) -> str:
    cores = sorted(os.sched_getaffinity(0))
    per = max(1, min(per_replica, len(cores)))
    start = (rank * per) % len(cores)
    return ",".join(str(cores[(start + k) % len(cores)]) for k in range(per))


class LLMReplica:
    """The deployment class (wrapped by `serve.deployment` in `app.py`)."""

    async def __init__(
        self,
        model_dir: str,
        policy: str,
        replicas: list[dict[str, Any]],
        tiers: str | None = None,
        cpus_per_replica: int = 1,
        enforce_eager: bool = True,
        steps_dir: str | None = None,
        perf_model: str | None = None,
    ) -> None:
        """`perf_model`: the batch-time model (profile CSV or fitted JSON) of a policy that sizes batches by time."""
        from ray import serve

        ctx = serve.get_replica_context()
        self.replica_id = ctx.replica_id.unique_id
        self.rank = int(getattr(ctx.rank, "rank", ctx.rank)) if ctx.rank is not None else 0
        self.options = ReplicaOptions(**replicas[self.rank % len(replicas)])
        self.policy = policy
        self.outstanding: dict[str, tuple[int, int]] = {}
        self.served = self.completed = self.failed = 0
        self.prefix_cache = dict.fromkeys(PREFIX_KEYS, 0)
        t0 = time.monotonic()
        steps = os.path.join(steps_dir, f"rank{self.rank}.csv") if steps_dir and policy != "vllm-default" else None
        self.engine = _start_engine(
            model_dir, policy, self.options, tiers, cpus_per_replica, self.rank, enforce_eager, steps,
            self.prefix_cache, perf_model,
        )  # fmt: skip
        t1 = time.monotonic()
        cache = getattr(getattr(self.engine, "vllm_config", None), "cache_config", None)
        self.kv_blocks = getattr(cache, "num_gpu_blocks", None)
        self.block_size = getattr(cache, "block_size", None)
        self.capacity = self.options.capacity or await self._calibrate()
        self.prefix_cache.update(dict.fromkeys(PREFIX_KEYS, 0))  # count served requests only, not the calibration
        log.warning(
            "llmsched replica %s (rank %d): %s, policy %s, capacity %.0f tokens/s; engine up in %.1f s, "
            "capacity in %.1f s",
            self.replica_id, self.rank, self.options, policy, self.capacity, t1 - t0, time.monotonic() - t1,
        )  # fmt: skip

    async def _calibrate(self) -> float:
        from vllm import SamplingParams

        prompt, decode = CALIBRATION
        n = self.options.max_num_seqs
        params = SamplingParams(max_tokens=decode, ignore_eos=True, detokenize=False)

        async def one(k: int) -> None:
            ids = [3 + (k * 31 + j * 7) % 200 for j in range(prompt)]
            async for _ in self.engine.generate({"prompt_token_ids": ids}, params, f"calibrate-{k}"):
                pass

        await one(-1)  # warm-up: first-step costs are not capacity
        t0 = time.perf_counter()
        await asyncio.gather(*(one(k) for k in range(n)))
        return n * (prompt + decode) / (time.perf_counter() - t0)

    async def generate(
        self,
        prompt_token_ids: list[int],
        max_tokens: int,
        ignore_eos: bool = False,
        extra: dict[str, Any] | None = None,
        detokenize: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream {"text", "tokens", "token_ids", "finish_reason", "rank"} deltas (the tokens generated since the last
        one: their count and ids); the last one has a finish_reason. The first
        delta with tokens also has "times" (host `time.monotonic()`, one clock for every process on this host):
        "arrived" and "first_token" here, and from vLLM's request stats (when the engine logs stats, its default)
        "queued" (in the engine core's scheduler), "scheduled" (first step) and "engine_first_token" (the end of
        the step that made it). A client on this host can thus split its TTFT into the path to and from the
        replica, the hops between the replica and its engine core, the engine's queueing and the prefill."""
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        rid = uuid.uuid4().hex
        params = SamplingParams(
            max_tokens=max_tokens,
            ignore_eos=ignore_eos,
            detokenize=detokenize,
            output_kind=RequestOutputKind.DELTA,
            extra_args=dict(extra or {}),
        )
        self.outstanding[rid] = (len(prompt_token_ids), max_tokens)
        self.served += 1
        finished, arrived = False, time.monotonic()
        try:
            async for out in self.engine.generate({"prompt_token_ids": list(prompt_token_ids)}, params, rid):
                o = out.outputs[0] if out.outputs else None
                finished = out.finished
                delta = {
                    "text": o.text if o is not None else "",
                    "tokens": len(o.token_ids) if o is not None else 0,
                    "token_ids": list(o.token_ids) if o is not None else [],
                    "finish_reason": (o.finish_reason if o is not None else "stop") if out.finished else None,
                    "rank": self.rank,
                }
                if arrived and delta["tokens"]:
                    delta["times"], arrived = _times(arrived, time.monotonic(), out.metrics), 0.0
                yield delta
            self.completed += 1
        except BaseException:
            self.failed += 1
            raise
        finally:
            self.outstanding.pop(rid, None)
            if not finished:  # the client went away or the engine failed: free the engine's slot
                await self.engine.abort(rid)

    def record_routing_stats(self) -> dict[str, Any]:
        return {
            "rank": self.rank,
            "replica_id": self.replica_id,
            "policy": self.policy,
            "max_num_seqs": self.options.max_num_seqs,
            "token_budget": self.options.token_budget,
            "kv_blocks": self.kv_blocks,
            "block_size": self.block_size,
            "tokens_per_s": self.capacity,
            "requests": len(self.outstanding),
            "prompt_tokens": sum(p for p, _ in self.outstanding.values()),
            "decode_tokens": sum(d for _, d in self.outstanding.values()),
            "served": self.served,
            "completed": self.completed,
            "failed": self.failed,
            "prefix_caching": self.options.prefix_caching,
            **self.prefix_cache,
        }

    def check_health(self) -> None:
        if self.engine.errored:
            raise RuntimeError("the vLLM engine has failed")

    def __del__(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            engine.shutdown()


def _times(arrived: float, first_token: float, stats: Any) -> dict[str, float]:
    times = {"arrived": arrived, "first_token": first_token}
    stamps = ("queued", "queued_ts"), ("scheduled", "scheduled_ts"), ("engine_first_token", "first_token_ts")
    for key, attr in stamps:
        value = getattr(stats, attr, 0.0)
        if isinstance(value, float) and value > 0:
            times[key] = value
    return times


def _start_engine(
    model_dir: str,
    policy: str,
    o: ReplicaOptions,
    tiers: str | None,
    cpus_per_replica: int,
    rank: int,
    enforce_eager: bool,
    steps_out: str | None = None,
    prefix_cache: dict[str, int] | None = None,
    perf_model: str | None = None,
) -> Any:
    # Read by the engine-core process this replica spawns, so set here, per replica.
    os.environ["VLLM_CPU_KVCACHE_SPACE"] = str(o.kv_cache_gib)
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = o.cpus or default_cpus(rank, cpus_per_replica)
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("VLLM_LOGGING_LEVEL", "WARNING")):
        os.environ.setdefault(key, value)
    from vllm import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    from llmsched.integrations.vllm.engine import EngineSetup, engine_args

    plugin = {"steps_out": steps_out} if steps_out else {}
    if perf_model:
        plugin["perf_model"] = perf_model
    setup = EngineSetup(model_dir, o.token_budget, o.max_num_seqs, o.max_model_len, o.kv_cache_gib, o.num_blocks,
                        enforce_eager, tiers, plugin, enable_prefix_caching=o.prefix_caching)  # fmt: skip
    config = AsyncEngineArgs(**engine_args(setup, policy)).create_engine_config()
    # vLLM's CPU platform runs the model in a third process (its "mp" executor) because OpenMP threads cannot be
    # bound in a process that may have used them already. The engine-core process AsyncLLM spawns is fresh and
    # runs nothing before its worker, so the worker can live in it: one vLLM import (11-17 s of CPU here) fewer
    # per replica, which is what start-up is made of on a small machine (2 replicas: 31-35 s instead of 49-59 s).
    config.parallel_config.distributed_executor_backend = "uni"
    loggers = [prefix_cache_logger(prefix_cache)] if prefix_cache is not None else None
    return AsyncLLM.from_vllm_config(config, stat_loggers=loggers)


def prefix_cache_logger(into: dict[str, int]) -> Any:
    """A vLLM stat logger factory adding each step's prefix cache counts (`SchedulerStats.prefix_cache_stats`, what
    vLLM's Prometheus counters `vllm:prefix_cache_queries` / `_hits` add up) into `into`, under `PREFIX_KEYS`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class PrefixCacheCounter(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0):
            stats = getattr(scheduler_stats, "prefix_cache_stats", None)
            if stats is not None:
                for key, field in zip(PREFIX_KEYS, PREFIX_FIELDS, strict=True):
                    into[key] += getattr(stats, field)

        def log_engine_initialized(self) -> None:
            pass

    return PrefixCacheCounter
