"""vLLM's automatic prefix cache seen from the scheduler plugin (pinned to vllm 0.32.x): what a waiting request
would reuse if admitted now, and vLLM's prefix cache counters kept cumulatively.

The lookup is the one vLLM makes at admission (`KVCacheManager.get_computed_blocks`), without its side effects:
`coordinator.find_longest_cache_hit` only reads the pool's hash table (no LRU touch, no reference count, no
counter, no KV event). Like vLLM it stops one token short of the request's tokens, so the hit is whole blocks and
never the whole prompt.
"""

from __future__ import annotations

from typing import Any

# vLLM's PrefixCacheStats fields (vllm/v1/metrics/stats.py), prefixed as its Prometheus counters are
# (`vllm:prefix_cache_queries`, `vllm:prefix_cache_hits`): queries and hits are tokens.
COUNTERS = ("requests", "queries", "hits", "preempted_requests", "preempted_queries", "preempted_hits")
KEYS = tuple(f"prefix_cache_{c}" for c in COUNTERS)


class PrefixLookup:
    """Each request's prefix-cache hit at this step, looked up when a policy first asks (the admission candidates
    only) and kept until `new_step()`."""

    def __init__(self, kv_cache_manager: Any) -> None:
        self._km = kv_cache_manager
        self._memo: dict[str, tuple[int, int]] = {}
        # With one KV cache group a hit's cost in free blocks is exact; with several (hybrid models) each group
        # holds its own blocks, and the view charges every hit block (conservative).
        self._one_group = len(kv_cache_manager.coordinator.single_type_managers) == 1

    def new_step(self) -> None:
        if self._memo:
            self._memo = {}

    def lookup(self, req: Any) -> tuple[int, int]:
        """(hit tokens, hit blocks that running requests hold: they cost the admission no free block)."""
        hit = self._memo.get(req.request_id)
        if hit is None:
            hit = self._memo[req.request_id] = self._find(req)
        return hit

    def exclusive_blocks(self, req: Any) -> int:
        """Blocks `req` holds that no other request holds (reference count 1): what preempting it returns to vLLM's
        free pool (a cached block no request holds counts as free there)."""
        managers = self._km.coordinator.single_type_managers
        return sum(b.ref_cnt == 1 and not b.is_null for m in managers for b in m.req_to_blocks.get(req.request_id, ()))

    def _find(self, req: Any) -> tuple[int, int]:
        km = self._km
        if not req.block_hashes or not km.prefix_cache_lookup_enabled(req):
            return 0, 0
        blocks, tokens, _ = km.coordinator.find_longest_cache_hit(req.block_hashes, req.num_tokens - 1)
        held = sum(b.ref_cnt > 0 for b in blocks[0]) if self._one_group and tokens else 0
        return tokens, held


def count_prefix_cache(kv_cache_manager: Any, into: dict[str, int]) -> dict[str, int]:
    """Keep vLLM's prefix cache counters in `into` (the `KEYS`), from now on and never reset. vLLM records each
    admission's lookup in `KVCacheManager.record_prefix_cache_stats`, but only with stats logging on, and hands
    the counts to its loggers step by step (`make_prefix_cache_stats` resets them); this wraps that method on the
    instance and counts every call vLLM would count, stats logging on or off."""
    for key in KEYS:
        into.setdefault(key, 0)
    inner = kv_cache_manager.record_prefix_cache_stats

    def record_prefix_cache_stats(request: Any, num_hits: int) -> None:
        if kv_cache_manager.prefix_cache_lookup_enabled(request):
            pre = "prefix_cache_preempted_" if request.num_preemptions > 0 else "prefix_cache_"
            into[pre + "requests"] += 1
            into[pre + "queries"] += request.num_tokens
            into[pre + "hits"] += num_hits
        inner(request, num_hits)

    kv_cache_manager.record_prefix_cache_stats = record_prefix_cache_stats
    return into


def hit_rate(counts: dict[str, int]) -> float | None:
    """vLLM's prefix cache hit rate: hit tokens over queried tokens of first admissions (vLLM counts the lookups
    of preempted requests apart, in the `preempted_` counters); None before any lookup."""
    queries = counts.get("prefix_cache_queries", 0)
    return counts.get("prefix_cache_hits", 0) / queries if queries else None
