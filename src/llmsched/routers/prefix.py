"""Routers that see the prompt's prefix ids. Each keeps, per replica, an approximate picture of that replica's prefix
cache: the chained ids (`workload.prefix`) of the prompts it sent there, LRU-bounded to the replica's KV size, as
SGLang's router and llm-d's approximate prefix scorer keep theirs. They use no engine internals, so the same object
routes the simulated cluster and a serving adapter. A prompt is recorded where it is routed, at routing time.

- `prefix-affinity`: Ray Serve's PrefixCacheAffinityRouter (ray 2.60, its defaults). If the longest match covers at
  least match_rate_threshold (0.1) of the prompt, the replicas holding it; else those whose cache picture is smallest.
  Among them, the fewest outstanding requests (Serve's pick within a rank). Ray matches characters; here, prefix ids.
  Without the threshold, a prefix every prompt shares (a system prompt) would draw all traffic to the first replica
  that saw it.
- `cache-aware`: SGLang router's `cache_aware` policy. If the replicas are imbalanced (max - min outstanding requests >
  balance_abs_threshold and max > balance_rel_threshold x min), the least loaded. Else, if the best match covers
  more than cache_threshold of the prompt, that replica. Else the replica whose cache picture is smallest. Defaults
  are sgl-router's command-line ones (py_src/sglang_router/router_args.py: cache_threshold 0.3,
  balance_abs_threshold 64, balance_rel_threshold 1.5). SGLang matches characters in a radix tree; here, prefix
  ids.
- `prefix-score`: the llm-d inference scheduler's default profile. Score = 3 x prefix + 2 x queue + 2 x kv; the
  highest wins, ties drawn at random (its max-score-picker). Prefix is the matched share of the prompt, counted over
  its first 256 blocks of 16 tokens (gateway-api-inference-extension's prefix plugin: maxPrefixBlocksToMatch 256).
  Queue is (maxQ - q) / (maxQ - minQ), 1 when all are equal. llm-d reads q, the waiting requests, from vLLM's
  metrics; here q is the router's own count of outstanding requests. Kv is 1 - KV use; llm-d scrapes the use, here it
  is booked tokens / the replica's KV tokens.

Without a known KV size a replica's picture holds llm-d's default, lruCapacityPerServer 31,250 blocks of 16 tokens.
With a CPU KV tier under each replica's prefix cache (vLLM's --kv-offloading-size), a prompt the replica evicted from
its GPU is still served from host memory, so the picture is sized by GPU + CPU capacity (`cache_tokens`), still from
what the router sent and nothing from the engine; prefix-score's KV use stays over the GPU's tokens (`kv_tokens`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from llmsched.routers.base import Router
from llmsched.workload.prefix import chain_ids

DEFAULT_CACHE_TOKENS = 31_250 * 16  # llm-d's lruCapacityPerServer x its block size


class PrefixIndex:
    """The chained prefix ids a router sent to one replica, least recently sent first, bounded to `tokens`."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._ids: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def match(self, chain: Sequence[int]) -> int:
        """How many leading ids of `chain` are here."""
        n = 0
        for c in chain:
            if c not in self._ids:
                break
            n += 1
        return n

    def insert(self, chain: Sequence[int], block: int) -> None:
        ids = self._ids
        for c in reversed(chain):  # the first ids most recent: evicted last, as the engine's LRU evicts tails first
            ids[c] = None
            ids.move_to_end(c)
        cap = max(1, self.tokens // block)
        while len(ids) > cap:
            ids.popitem(last=False)


class PrefixRouter(Router):
    """Base of the routers here: `pick` sees, per replica, the prompt tokens its picture says are cached there."""

    def __init__(
        self,
        capacities: Sequence[float],
        seed: int = 0,
        cache_tokens: Sequence[int] | None = None,
        kv_tokens: Sequence[int] | None = None,
    ) -> None:
        super().__init__(capacities, seed)
        tokens = cache_tokens if cache_tokens is not None else [DEFAULT_CACHE_TOKENS] * len(self.loads)
        if len(tokens) != len(self.loads) or (kv_tokens is not None and len(kv_tokens) != len(self.loads)):
            raise ValueError("one cache size per replica")
        self.indexes = [PrefixIndex(int(t)) for t in tokens]
        # the replicas' GPU KV in tokens (their cache pictures' sizes less any CPU tier)
        self.kv_tokens = [int(t) for t in kv_tokens] if kv_tokens is not None else [idx.tokens for idx in self.indexes]

    def pick(self, prompt_tokens: int, decode_tokens: int, matched: list[int]) -> int:
        raise NotImplementedError

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        return self.pick(prompt_tokens, decode_tokens, [0] * len(self.loads))

    def route(
        self,
        key: object,
        prompt_tokens: int,
        decode_tokens: int,
        prefix_ids: Sequence[int] = (),
        prefix_block: int = 0,
    ) -> int:
        chain = chain_ids(prefix_ids) if prefix_block > 0 else []
        matched = [min(idx.match(chain) * prefix_block, prompt_tokens) for idx in self.indexes]
        i = self.pick(prompt_tokens, decode_tokens, matched)
        self.book(key, i, prompt_tokens, decode_tokens)
        if chain:
            self.indexes[i].insert(chain, prefix_block)
        return i

    def _least_loaded(self, among: Sequence[int]) -> int:
        return min(among, key=lambda i: (self.loads[i].requests, self.loads[i].tokens, i))

    def _smallest(self) -> int:
        """The least loaded of the replicas whose cache picture is smallest."""
        smallest = min(len(idx) for idx in self.indexes)
        return self._least_loaded([i for i, idx in enumerate(self.indexes) if len(idx) == smallest])


class PrefixAffinity(PrefixRouter):
    name = "prefix-affinity"

    def __init__(
        self,
        capacities: Sequence[float],
        seed: int = 0,
        cache_tokens: Sequence[int] | None = None,
        kv_tokens: Sequence[int] | None = None,
        match_rate_threshold: float = 0.1,
    ) -> None:
        super().__init__(capacities, seed, cache_tokens, kv_tokens)
        self.match_rate_threshold = match_rate_threshold

    def pick(self, prompt_tokens: int, decode_tokens: int, matched: list[int]) -> int:
        best = max(matched)
        if prompt_tokens > 0 and best / prompt_tokens >= self.match_rate_threshold:
            return self._least_loaded([i for i, m in enumerate(matched) if m == best])
        return self._smallest()


class CacheAware(PrefixRouter):
    name = "cache-aware"

    def __init__(
        self,
        capacities: Sequence[float],
        seed: int = 0,
        cache_tokens: Sequence[int] | None = None,
        kv_tokens: Sequence[int] | None = None,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
    ) -> None:
        super().__init__(capacities, seed, cache_tokens, kv_tokens)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def pick(self, prompt_tokens: int, decode_tokens: int, matched: list[int]) -> int:
        everyone = range(len(self.loads))
        loads = [load.requests for load in self.loads]
        hi, lo = max(loads), min(loads)
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            return self._least_loaded(everyone)
        best = max(matched)
        if prompt_tokens > 0 and best / prompt_tokens > self.cache_threshold:
            return self._least_loaded([i for i, m in enumerate(matched) if m == best])
        return self._smallest()


class PrefixScore(PrefixRouter):
    name = "prefix-score"

    def __init__(
        self,
        capacities: Sequence[float],
        seed: int = 0,
        cache_tokens: Sequence[int] | None = None,
        kv_tokens: Sequence[int] | None = None,
        weights: tuple[float, float, float] = (3.0, 2.0, 2.0),  # prefix, queue, kv
        max_prefix_tokens: int = 256 * 16,
    ) -> None:
        super().__init__(capacities, seed, cache_tokens, kv_tokens)
        self.weights = weights
        self.max_prefix_tokens = max_prefix_tokens

    def pick(self, prompt_tokens: int, decode_tokens: int, matched: list[int]) -> int:
        wp, wq, wk = self.weights
        span = min(prompt_tokens, self.max_prefix_tokens)
        queues = [load.requests for load in self.loads]
        qmax, qmin = max(queues), min(queues)
        scores = []
        for i, load in enumerate(self.loads):
            prefix = min(matched[i], span) / span if span > 0 else 0.0
            queue = (qmax - queues[i]) / (qmax - qmin) if qmax > qmin else 1.0
            kv = 1.0 - min(1.0, load.tokens / self.kv_tokens[i]) if self.kv_tokens[i] > 0 else 0.0
            scores.append(wp * prefix + wq * queue + wk * kv)
        best = max(scores)
        top = [i for i, s in enumerate(scores) if s == best]
        return top[0] if len(top) == 1 else int(self.rng.choice(top))
