"""vLLM 0.32 schedulers built without an engine (no model is loaded or run), as vLLM's own scheduler tests build
theirs, for any scheduler class: vLLM's `Scheduler` / `AsyncScheduler` or the plugin's; and a stand-in for the
model runner's output. Used by the tests that run vLLM's scheduler scenarios against the plugin."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
from vllm.sampling_params import SamplingParams
from vllm.utils.hashing import sha256
from vllm.v1.core.kv_cache_utils import get_request_block_hasher, init_none_hash
from vllm.v1.core.sched.async_scheduler import AsyncScheduler
from vllm.v1.core.sched.scheduler import Scheduler
from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
from vllm.v1.outputs import ModelRunnerOutput
from vllm.v1.request import Request
from vllm.v1.structured_output import StructuredOutputManager

from llmsched.integrations.vllm.scheduler import AsyncPolicyScheduler, PolicyScheduler

# A Llama's config.json: ModelConfig reads it; no weights or tokenizer are needed to schedule.
_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024, "hidden_size": 256,
    "intermediate_size": 512, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 64, "max_position_embeddings": 16384, "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "float32",
}  # fmt: skip


def write_model_config(folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(_CONFIG))
    return str(folder)


@dataclass(frozen=True)
class Kind:
    """A scheduler class to run vLLM's scenarios against: vLLM's own (policy None) or the plugin's."""

    policy: str | None
    is_async: bool = False

    @property
    def name(self) -> str:
        return ("async-" if self.is_async else "") + (self.policy or "vllm")

    @property
    def cls(self) -> type:
        if self.policy is None:
            return AsyncScheduler if self.is_async else Scheduler
        return AsyncPolicyScheduler if self.is_async else PolicyScheduler


POLICIES = (None, "slai", "sarathi")
SYNC = [Kind(p) for p in POLICIES]
ASYNC = [Kind(p, True) for p in POLICIES]
ALL = SYNC + ASYNC


def make_scheduler(
    kind: Kind,
    model_dir: str,
    *,
    block_size: int = 16,
    num_blocks: int = 10000,
    max_num_seqs: int = 16,
    max_num_batched_tokens: int = 8192,
    prefix_caching: bool = False,
    priority: bool = False,
    chunked_prefill: bool = True,
    long_prefill_token_threshold: int = 0,
    plugin: dict[str, Any] | None = None,
    v2_model_runner: bool | None = None,
) -> Any:
    """A scheduler over a KV pool of `num_blocks` blocks (one full-attention group), stats logging on (vLLM's
    prefix cache counters exist only then). `plugin`: more `additional_config["llmsched"]` keys."""
    sched_cfg = SchedulerConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens,
        max_model_len=max_num_batched_tokens,
        enable_chunked_prefill=chunked_prefill,
        long_prefill_token_threshold=long_prefill_token_threshold,
        async_scheduling=kind.is_async,
        policy="priority" if priority else "fcfs",
        is_encoder_decoder=False,
    )
    cache_cfg = CacheConfig(block_size=block_size, enable_prefix_caching=prefix_caching)
    extra = {"llmsched": {"policy": kind.policy, **(plugin or {})}} if kind.policy else {}
    model_cfg = ModelConfig(model=model_dir, dtype="float32", seed=0, skip_tokenizer_init=True)
    config = VllmConfig(
        scheduler_config=sched_cfg, model_config=model_cfg, cache_config=cache_cfg, additional_config=extra
    )
    spec = FullAttentionSpec(block_size=block_size, num_kv_heads=1, head_size=1, dtype=torch.float32)
    kv = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["l"], spec)])
    cache_cfg.num_gpu_blocks = num_blocks
    sched = kind.cls(
        vllm_config=config,
        kv_cache_config=kv,
        log_stats=True,
        structured_output_manager=StructuredOutputManager(config),
        block_size=block_size,
        hash_block_size=block_size,
    )
    if v2_model_runner is not None:  # vLLM copies VllmConfig.use_v2_model_runner here at construction
        sched.use_v2_model_runner = v2_model_runner
    return sched


_hash_ready = False


def make_requests(
    n: int,
    num_tokens: int = 10,
    max_tokens: int = 16,
    *,
    same_prompt: bool = False,
    block_size: int = 16,
    ids: list[str] | None = None,
    stop_token_ids: list[int] | None = None,
    prompts: list[list[int]] | None = None,
) -> list[Request]:
    """`n` requests of `num_tokens` prompt tokens (request i's prompt is token i repeated, or 0 for all with
    `same_prompt`; or `prompts[i]`), hashed per block as an engine with prefix caching hashes them."""
    global _hash_ready
    if not _hash_ready:
        init_none_hash(sha256)
        _hash_ready = True
    hasher = get_request_block_hasher(block_size, sha256)
    params = SamplingParams(ignore_eos=True, max_tokens=max_tokens, stop_token_ids=stop_token_ids)
    ids = ids or [str(i) for i in range(n)]
    return [
        Request(
            request_id=ids[i],
            prompt_token_ids=prompts[i] if prompts is not None else [0 if same_prompt else i] * num_tokens,
            sampling_params=params,
            pooling_params=None,
            block_hasher=hasher,
        )
        for i in range(n)
    ]


def runner_output(out: Any, token: int = 0, sampled: dict[str, list[int]] | None = None) -> ModelRunnerOutput:
    """What the model runner returns for a SchedulerOutput: `token` for each scheduled request, or the tokens
    `sampled` names per request."""
    ids = list(out.num_scheduled_tokens)
    tokens = [sampled[r] if sampled is not None else [token] for r in ids]
    return ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={r: i for i, r in enumerate(ids)},
        sampled_token_ids=tokens,
        logprobs=None,
        prompt_logprobs_dict={},
        pooler_output=[],
    )


def plugin_clean(sched: Any) -> None:
    """The plugin's invariants once a scenario's requests are all done: no mismatched step, nothing kept for
    requests that are gone, its copy of the waiting queue vLLM's."""
    if not isinstance(sched, PolicyScheduler):
        return
    assert len(sched._queue) == len(sched.waiting)
    if not sched.requests:
        assert not sched._views and not sched._prefilling and not sched._queue
        policy = sched.llm_policy
        assert not getattr(policy, "paused", []) and not getattr(policy, "lst", {}), "the policy kept gone requests"
