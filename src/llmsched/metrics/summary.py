"""Metrics with `vllm bench serve` names: ttft, tpot, itl, e2el (ms), throughputs, goodput; overall and
per SLO tier; plus request outcome counts. Percentiles are numpy's (linear), over completed requests.

Goodput counts completed requests that met their SLO: TTFT within the tier's `ttft` (or the run's
`ttft_slo`, if either is given) and every gap between tokens within the tier's TBT.

With prefix caching, vLLM's counters (its PrefixCacheStats, Prometheus `vllm:prefix_cache_queries` and
`vllm:prefix_cache_hits`): `prefix_cache_queries`, the prompt tokens of every request at its first admission, and
`prefix_cache_hits`, those served from the cache; re-admissions after a preemption are left out, as vLLM counts them
apart. Their ratio is `prefix_cache_hit_rate`; the same in blocks (`prefix_cache_query_blocks`: the blocks each
prompt spans; `prefix_cache_hit_blocks`), with `prefix_cache_block_hit_rate`.

With a CPU tier (`--kv-offloading-size`) those count the GPU's hits, and vLLM's connector counters
(`vllm:external_prefix_cache_queries`, `vllm:external_prefix_cache_hits`) count the rest: the prompt tokens past each
request's GPU hit at its first admission, and those loaded from the CPU tier, with `external_prefix_cache_hit_rate`.
`prompt_tokens_cached_by_source` splits the hits by tier as vLLM's `vllm:prompt_tokens_cached_by_source` does
(`device`, `host`); `prefix_cache_hit_rate_by_source` is each over `prefix_cache_queries`, and
`combined_prefix_cache_hit_rate` their sum.
"""

from __future__ import annotations

from itertools import chain

import numpy as np

from llmsched.records import RunResult
from llmsched.workload.request import FINISHED, REJECTED, UNFINISHED, Request
from llmsched.workload.tiers import SLOTier

PERCENTILES = (50, 90, 99)


def _stats(name: str, values_s: np.ndarray) -> dict[str, float | None]:
    if values_s.size == 0:
        out: dict[str, float | None] = {f"mean_{name}_ms": None, f"median_{name}_ms": None}
        out.update({f"p{p}_{name}_ms": None for p in PERCENTILES if p != 50})
        return out
    ms = values_s * 1e3
    out = {f"mean_{name}_ms": float(ms.mean()), f"median_{name}_ms": float(np.median(ms))}
    out.update({f"p{p}_{name}_ms": float(np.percentile(ms, p)) for p in PERCENTILES if p != 50})
    return out


def prefix_cache_stats(reqs: list[Request], block_size: int) -> dict:
    admitted = [r for r in reqs if r.cached_tokens is not None]
    queries = sum(r.prompt_len for r in admitted)
    hits = sum(r.cached_tokens for r in admitted)  # type: ignore[misc]
    query_blocks = sum(-(-r.prompt_len // block_size) for r in admitted)
    return {
        "prefix_cache_queries": queries,
        "prefix_cache_hits": hits,
        "prefix_cache_hit_rate": hits / queries if queries else None,
        "prefix_cache_query_blocks": query_blocks,
        "prefix_cache_hit_blocks": hits // block_size,
        "prefix_cache_block_hit_rate": hits // block_size / query_blocks if query_blocks else None,
        **(
            _offload_stats(admitted, queries, hits)
            if any(r.external_cached_tokens is not None for r in admitted)
            else {}
        ),
    }


def _offload_stats(admitted: list[Request], queries: int, hits: int) -> dict:
    loaded = [r for r in admitted if r.external_cached_tokens is not None]
    ext_queries = sum(r.prompt_len - r.cached_tokens for r in loaded)  # type: ignore[operator]
    host = sum(r.external_cached_tokens for r in loaded)  # type: ignore[misc]
    return {
        "external_prefix_cache_queries": ext_queries,
        "external_prefix_cache_hits": host,
        "external_prefix_cache_hit_rate": host / ext_queries if ext_queries else None,
        "prompt_tokens_cached_by_source": {"device": hits, "host": host},
        "prefix_cache_hit_rate_by_source": {
            "device": hits / queries if queries else None,
            "host": host / queries if queries else None,
        },
        "combined_prefix_cache_hit_rate": (hits + host) / queries if queries else None,
    }


def _group(reqs: list[Request], duration: float, ttft_slo: float | None, tiers: dict[str, SLOTier]) -> dict:
    done = [r for r in reqs if r.state == FINISHED]
    ttft = np.array([r.token_times[0] - r.arrival for r in done])
    e2el = np.array([r.token_times[-1] - r.arrival for r in done])
    multi = [r for r in done if len(r.token_times) > 1]
    tpot = np.array([(r.token_times[-1] - r.token_times[0]) / (len(r.token_times) - 1) for r in multi])
    # Every request's gaps in one pass: the differences of all token times laid end to end, less those across two
    # requests; the same subtractions, in the same order, as one np.diff per request.
    lengths = np.fromiter(map(len, (r.token_times for r in multi)), np.int64, len(multi))
    flat = np.fromiter(chain.from_iterable(r.token_times for r in multi), np.float64, int(lengths.sum()))
    first = np.cumsum(lengths) - lengths  # each request's first token in `flat`
    itl = np.delete(np.diff(flat), first[1:] - 1)
    gap_first = first - np.arange(len(multi))  # each request's first gap in `itl`
    largest = np.maximum.reduceat(itl, gap_first).tolist() if multi else []
    max_gap = dict(zip((r.id for r in multi), largest, strict=True))
    good = 0
    for r in done:
        tier = tiers.get(r.tier)
        ttft_limit = tier.ttft if tier and tier.ttft is not None else ttft_slo
        ok_ttft = ttft_limit is None or r.token_times[0] - r.arrival <= ttft_limit + 1e-12
        if ok_ttft and max_gap.get(r.id, 0.0) <= r.tbt + 1e-12:
            good += 1
    out_tokens = sum(r.decode_len for r in done)
    in_tokens = sum(r.prompt_len for r in done)
    dur = duration if duration > 0 else float("nan")
    summary: dict = {
        "num_requests": len(reqs),
        "completed": len(done),
        "unfinished": sum(r.state == UNFINISHED for r in reqs),
        "rejected": sum(r.state == REJECTED for r in reqs),
        "preemptions": sum(r.preemptions for r in reqs),
        "total_input_tokens": in_tokens,
        "total_output_tokens": out_tokens,
        "request_throughput": len(done) / dur,
        "output_throughput": out_tokens / dur,
        "total_token_throughput": (in_tokens + out_tokens) / dur,
        "request_goodput": good / dur,
        "slo_attainment": good / len(done) if done else None,
    }
    for name, values in (("ttft", ttft), ("tpot", tpot), ("itl", itl), ("e2el", e2el)):
        summary.update(_stats(name, values))
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in summary.items()}


def leave_one_out(runs: list[dict], keys: tuple[str, ...]) -> dict[str, float | None]:
    """How well repeated runs of one setting predict each other: per key, the median over runs of |the run's value /
    the median of the other runs' values - 1| (None for fewer than 2 runs or a missing value). A model compared with
    the runs' median cannot be checked to much better than this: on a machine whose speed drifts, it is the floor."""
    out: dict[str, float | None] = {}
    for k in keys:
        values = [r.get(k) for r in runs]
        if len(values) < 2 or any(v is None for v in values):
            out[k] = None
            continue
        out[k] = float(np.median([abs(v / np.median(values[:i] + values[i + 1 :]) - 1) for i, v in enumerate(values)]))
    return out


def summarize(result: RunResult, tiers: list[SLOTier], ttft_slo: float | None = None) -> dict:
    reqs = result.requests
    first = min((r.arrival for r in reqs), default=0.0)
    last = max((r.token_times[-1] for r in reqs if r.state == FINISHED), default=first)
    duration = last - first
    by_tier = {t.name: t for t in tiers}
    summary = {"duration_s": duration, **_group(reqs, duration, ttft_slo, by_tier)}
    caching = result.prefix_caching
    if caching:
        summary.update(prefix_cache_stats(reqs, result.block_size))
    b = result.batches
    summary["num_batches"] = len(b)
    summary["mean_batch_ms"] = float(np.mean(b.duration) * 1e3) if len(b) else None
    summary["mean_batch_tokens"] = float(np.mean(np.add(b.prefill_tokens, b.decodes))) if len(b) else None
    summary["peak_kv_blocks_used"] = max(b.kv_blocks_used, default=0)
    summary["kv_blocks"] = result.num_blocks
    reasons: dict[str, int] = {}
    for r in reqs:
        if r.reason:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
    summary["tbt_slo_ms"] = tiers[0].tbt * 1e3 if len(tiers) == 1 else None
    summary["not_completed_reasons"] = dict(sorted(reasons.items()))
    if len(tiers) > 1:
        summary["tiers"] = {
            t.name: {
                "tbt_slo_ms": t.tbt * 1e3,
                **_group([r for r in reqs if r.tier == t.name], duration, ttft_slo, by_tier),
                **(prefix_cache_stats([r for r in reqs if r.tier == t.name], result.block_size) if caching else {}),
            }
            for t in tiers
        }
    return summary
