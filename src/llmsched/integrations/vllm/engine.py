"""An in-process vLLM engine driven on the real clock: replay a workload's requests at their arrival times and
record each token's time, giving the simulator's `RunResult` so `metrics.summarize` applies unchanged.

`vllm-default` is vLLM's own scheduler, untouched; any other name is an llmsched policy run through
`PolicyScheduler` (`AsyncPolicyScheduler` with async scheduling). Both get the same engine settings (token
budget, max_num_seqs, KV pool, prefix caching off unless asked for: random prompts share nothing, and caching
would only add noise to the comparison).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from llmsched.errors import UserError
from llmsched.integrations.vllm.prefix import count_prefix_cache
from llmsched.integrations.vllm.steps import step_shape, write_step_times
from llmsched.perf.base import BatchShape
from llmsched.records import BatchLog, EngineLog, RunResult, StepRecord
from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED, Request

DEFAULT_POLICY = "vllm-default"
PLUGIN = "llmsched.integrations.vllm.PolicyScheduler"
ASYNC_PLUGIN = "llmsched.integrations.vllm.AsyncPolicyScheduler"


def vllm_environment(kv_cache_gib: float = 2.0) -> None:
    """Settings vLLM reads at import or engine start: in-process engine core (so the scheduler is
    reachable and no subprocess is spawned), the CPU KV pool size, and no model-hub access."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{kv_cache_gib:g}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")  # stdout is for our --json


@dataclass(frozen=True)
class EngineSetup:
    model_dir: str
    token_budget: int = 512
    max_num_seqs: int = 128
    max_model_len: int | None = None
    kv_cache_gib: float = 2.0
    num_gpu_blocks: int | None = None  # override vLLM's KV pool (tests use a small one to force preemption)
    enforce_eager: bool = False  # skip torch.compile: quicker start (tests), slower steps
    tiers: str | None = None
    plugin: dict[str, Any] = field(default_factory=dict)  # more `additional_config["llmsched"]` keys
    enable_prefix_caching: bool = False  # vLLM's automatic prefix caching
    # vLLM's async scheduling (the step after a batch is scheduled while it runs; vLLM's default on GPUs, always off
    # on CPUs), and the plugin on vLLM's AsyncScheduler to match
    async_scheduling: bool = False
    dtype: str | None = None  # vLLM's --dtype; None: `cpu_dtype`


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs that compute bfloat16 natively


def cpu_dtype(model_dir: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The dtype to run a model in on this CPU: its own ("auto"), except a bfloat16 model on a CPU without native
    bfloat16 (AVX512-BF16 or AMX), where PyTorch emulates bfloat16 matrix products some 50x slower than float32
    (measured on an AVX2 EPYC: 775 vs 15 ms for 512 x 576 x 1536): there float32."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), None)
    except (OSError, ValueError):
        return "auto"
    dtype = config.get("torch_dtype") or config.get("dtype")
    if dtype == "bfloat16" and flags is not None and not set(NATIVE_BF16_FLAGS) & set(flags):
        return "float32"
    return "auto"


def check_model_dir(model_dir: str) -> None:
    if not os.path.isfile(os.path.join(model_dir, "config.json")):
        raise UserError(f"--model {model_dir}: not a model directory (no config.json); see `llmsched model`")


def engine_args(setup: EngineSetup, policy: str) -> dict[str, Any]:
    """vLLM engine arguments for `policy`: vLLM's own scheduler (`vllm-default`) or `PolicyScheduler` running it.
    Shared by the in-process LLMEngine here and the AsyncLLM of each Ray Serve replica."""
    plugin = policy != DEFAULT_POLICY
    return dict(
        model=setup.model_dir,
        dtype=setup.dtype or cpu_dtype(setup.model_dir),
        max_num_batched_tokens=setup.token_budget,
        max_num_seqs=setup.max_num_seqs,
        max_model_len=setup.max_model_len,
        enable_prefix_caching=setup.enable_prefix_caching,
        async_scheduling=setup.async_scheduling,
        enforce_eager=setup.enforce_eager,
        num_gpu_blocks_override=setup.num_gpu_blocks,
        scheduler_cls=(ASYNC_PLUGIN if setup.async_scheduling else PLUGIN) if plugin else None,
        additional_config={"llmsched": {"policy": policy, "tiers": setup.tiers, **setup.plugin}} if plugin else {},
        disable_log_stats=True,
        seed=0,
    )


def make_engine(setup: EngineSetup, policy: str) -> Any:
    """An in-process LLMEngine whose scheduler is vLLM's own or `PolicyScheduler` running `policy`."""
    check_model_dir(setup.model_dir)
    vllm_environment(setup.kv_cache_gib)
    from vllm import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    return LLMEngine.from_engine_args(EngineArgs(**engine_args(setup, policy)))


def scheduler_of(engine: Any) -> Any:
    return engine.engine_core.engine_core.scheduler


def _external_id(request_id: str) -> int:
    """The replay's id of a request inside the engine: vLLM appends "-" and 8 random characters to the id the
    request was added with (`VLLM_DISABLE_REQUEST_ID_RANDOMIZATION` is going away)."""
    return int(request_id.rsplit("-", 1)[0])


@dataclass
class StepRecorder:
    """Wraps the scheduler instance's `schedule` (its decisions untouched) to log each step: its composition
    (the simulator's `BatchLog` columns, and the exact `BatchShape` a batch-time model takes), when it started
    (entering `schedule()`) and the time `schedule()` took. The replay loop fills in each step's duration (to
    `LLMEngine.step()` returning: forward pass, sampling and output processing included, as the profiler
    measures it). A scheduled token count of 1 on a request with output tokens counts as a decode."""

    sched: Any
    log: BatchLog = field(default_factory=BatchLog)
    shapes: list[BatchShape] = field(default_factory=list)
    schedule_s: list[float] = field(default_factory=list)
    scheduled: list[dict[int, int]] = field(default_factory=list)  # tokens per request id, each step
    received: dict[int, float] = field(default_factory=dict)  # request id -> when it was added to the engine
    clocks: list[tuple[float, float] | None] = field(default_factory=list)  # the plugin's times, each step
    prefix_cache: dict[str, int] = field(default_factory=dict)  # vLLM's prefix cache counters (`prefix.KEYS`)

    def __post_init__(self) -> None:
        inner: Callable[..., Any] = self.sched.schedule
        pool = self.sched.kv_cache_manager.block_pool
        self.total_blocks = pool.num_gpu_blocks - 1

        def schedule(*args: Any, **kwargs: Any) -> Any:
            started, t0 = time.monotonic(), time.perf_counter()
            out = inner(*args, **kwargs)
            self.schedule_s.append(time.perf_counter() - t0)
            if out.num_scheduled_tokens:
                shape = step_shape(self.sched.requests, out.num_scheduled_tokens)
                self.shapes.append(shape)
                self.scheduled.append({_external_id(rid): n for rid, n in out.num_scheduled_tokens.items()})
                self.log.start.append(started)
                self.log.duration.append(0.0)
                self.log.prefill_tokens.append(shape.prefill_tokens)
                self.log.prefills.append(shape.num_prefills)
                self.log.decodes.append(shape.decodes)
                self.log.kv_blocks_used.append(self.total_blocks - pool.get_num_free_blocks())
                self.log.waiting.append(len(self.sched.waiting))
                self.log.running.append(len(self.sched.running))
                self.log.preempted.append(len(out.preempted_req_ids))
            return out

        self.sched.schedule = schedule

    def engine_log(self, policy: str, result: RunResult, setup: EngineSetup, max_model_len: int) -> EngineLog:
        """The run as `sim.replay` replays it (times on the run's clock, as the requests' token times)."""
        steps = [StepRecord(s, s + d, sched, clock) for s, d, sched, clock
                 in zip(self.log.start, self.log.duration, self.scheduled, self.clocks, strict=True)]  # fmt: skip
        return EngineLog(policy, result.requests, dict(self.received), steps, self.total_blocks, self.sched.block_size,
                         setup.token_budget, setup.max_num_seqs, max_model_len)  # fmt: skip

    def write_steps(self, path: str) -> None:
        """One row per step: its BatchShape fields and step_ms (the model-facing time of the step)."""
        write_step_times(path, ((shape, d * 1e3) for shape, d in zip(self.shapes, self.log.duration, strict=True)))


def warm_up(engine: Any, token_budget: int) -> None:
    """A few mixed batches before the clock starts: the first batches of a fresh engine compile kernels for
    new shapes (seconds each on CPU), which would otherwise land in the first policy's measurements."""
    from vllm import SamplingParams

    rng = np.random.default_rng(0)
    vocab = engine.model_config.get_vocab_size()
    for k, n in enumerate((token_budget, token_budget // 2, 300, 40, 17, 5)):
        prompt = {"prompt_token_ids": rng.integers(3, vocab, size=max(1, n)).tolist()}
        engine.add_request(f"warmup{k}", prompt, SamplingParams(max_tokens=16, ignore_eos=True, detokenize=False))
    while engine.has_unfinished_requests():
        engine.step()
    sched = scheduler_of(engine)
    if hasattr(sched, "fresh_policy"):  # the llmsched plugin: its policy must not carry the warm-up's batches
        sched.fresh_policy()


def random_prompts(
    requests: list[Request], vocab: int, seed: int, num_prefixes: int = 0, prefix_len: int = 0
) -> list[list[int]]:
    """Random token ids of each request's prompt length. With `num_prefixes` and `prefix_len` (the shape of
    `vllm bench serve --dataset-name prefix_repetition`), each prompt starts with one of `num_prefixes` shared
    prefixes of `prefix_len` tokens, drawn with the seed (a prompt no longer than it is that prefix's start)."""
    rng = np.random.default_rng(seed)
    if num_prefixes <= 0 or prefix_len <= 0:
        return [rng.integers(3, vocab, size=r.prompt_len).tolist() for r in requests]
    prefixes = [rng.integers(3, vocab, size=prefix_len).tolist() for _ in range(num_prefixes)]
    picks = rng.integers(0, num_prefixes, size=len(requests))
    return [
        prefixes[k][: r.prompt_len] + rng.integers(3, vocab, size=max(0, r.prompt_len - prefix_len)).tolist()
        for r, k in zip(requests, picks, strict=True)
    ]


def replay(
    engine: Any,
    requests: list[Request],
    seed: int = 0,
    time_limit: float | None = None,
    on_step: Callable[[], None] | None = None,
    num_prefixes: int = 0,
    prefix_len: int = 0,
) -> tuple[RunResult, StepRecorder]:
    """Add each request at its arrival (seconds from the first), step the engine until all are done, and
    stamp each token with the time the step that produced it returned. Requests are mutated in place.
    Prompts are random (`random_prompts`: shared prefixes with `num_prefixes` and `prefix_len`); the
    recorder's `prefix_cache` holds vLLM's prefix cache counters over the replay (`prefix.KEYS`)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    sched = scheduler_of(engine)
    recorder = StepRecorder(sched)
    count_prefix_cache(sched.kv_cache_manager, recorder.prefix_cache)
    vocab = engine.model_config.get_vocab_size()
    prompts = random_prompts(requests, vocab, seed, num_prefixes, prefix_len)
    sent = [k for k in range(len(requests)) if requests[k].state != REJECTED]  # over-long: refused, never sent
    order = sorted(sent, key=lambda k: (requests[k].arrival, requests[k].id))
    by_id = {str(r.id): r for r in requests}
    a0 = requests[order[0]].arrival if order else 0.0
    t0 = time.monotonic()
    i, n = 0, len(order)
    while i < n or engine.has_unfinished_requests():
        now = time.monotonic() - t0
        if time_limit is not None and now >= time_limit:
            break
        while i < n and requests[order[i]].arrival - a0 <= now:
            r = requests[order[i]]
            params = SamplingParams(
                max_tokens=r.decode_len,
                ignore_eos=True,
                detokenize=False,
                output_kind=RequestOutputKind.DELTA,
                extra_args={"tier": r.tier, "tbt": r.tbt, "priority": r.priority},
            )
            engine.add_request(str(r.id), {"prompt_token_ids": prompts[order[i]]}, params)
            recorder.received[r.id] = time.monotonic()
            i += 1
        if not engine.has_unfinished_requests():
            time.sleep(max(0.0, requests[order[i]].arrival - a0 - (time.monotonic() - t0)))
            continue
        steps = len(recorder.log)
        outputs = engine.step()
        done = time.monotonic()
        t = done - t0 + a0  # the step's tokens are stamped when it returns; so is its end
        if len(recorder.log) > steps:
            recorder.log.duration[-1] = done - recorder.log.start[-1]
            clock = getattr(sched, "step_clock", None)  # the llmsched plugin's, for this step
            recorder.clocks.append(clock if clock is not None and clock[0] >= recorder.log.start[-1] else None)
        for o in outputs:
            r = by_id[o.request_id]
            k = len(o.outputs[0].token_ids) if o.outputs else 0
            r.token_times.extend([t] * k)
            r.generated += k
            if o.finished:
                if r.generated >= r.decode_len:
                    r.state = FINISHED
                else:
                    r.state, r.reason = REJECTED, f"finished by the engine after {r.generated} tokens"
        if on_step is not None:
            on_step()
    end = time.monotonic() - t0 + a0
    recorder.log.start = [s - t0 + a0 for s in recorder.log.start]
    recorder.received = {k: t - t0 + a0 for k, t in recorder.received.items()}
    recorder.clocks = [None if c is None else (c[0] - t0 + a0, c[1] - t0 + a0) for c in recorder.clocks]
    for r in requests:
        if r.state not in (FINISHED, REJECTED):
            r.state, r.reason = UNFINISHED, "time limit reached" if time_limit is not None else "not finished"
    return RunResult(requests, recorder.log, recorder.total_blocks, end), recorder
