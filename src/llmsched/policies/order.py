"""Waiting-queue orders. Keys depend only on request attributes that do not change while the request waits, so an
engine can keep the queue sorted incrementally.

Each shortest-prompt-first key comes in two forms: by `prompt_len`, the prompt as submitted (vLLM's request keeps
it through a preemption), and by `num_prompt`, the tokens to prefill, which after a preemption by recompute include
the tokens generated before it (Sarathi-Serve's `reset_for_recompute` moves them into the prompt; `Policy.
sarathi_rules`). `spf_key` and `tier_spf_key` pick the form.

The keys at the end also see how much of each prompt the prefix cache holds now: they are sorted per batch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from llmsched.policies.interface import CacheKey, EngineView, OrderKey, Req


def spf(r: Req) -> tuple:
    """Shortest prompt first (ties by arrival)."""
    return (r.prompt_len, r.arrival)


def spf_recomputed(r: Req) -> tuple:
    """Shortest prompt first, a recomputed request's generated tokens counted in its prompt."""
    return (r.num_prompt, r.arrival)


def tier_spf(r: Req) -> tuple:
    """Paying (lower priority number) tier first, shortest prompt first within a tier."""
    return (r.priority, r.prompt_len, r.arrival)


def tier_spf_recomputed(r: Req) -> tuple:
    """`tier_spf`, a recomputed request's generated tokens counted in its prompt."""
    return (r.priority, r.num_prompt, r.arrival)


def spf_key(sarathi_rules: bool) -> OrderKey:
    return spf_recomputed if sarathi_rules else spf


def tier_spf_key(sarathi_rules: bool) -> OrderKey:
    return tier_spf_recomputed if sarathi_rules else tier_spf


def aged(base_len_weight: float, tokens_per_s: float, by_tier: bool, sarathi_rules: bool = False) -> OrderKey:
    """SPF with aging: a request's effective length shrinks by `tokens_per_s` for every second it has
    waited. Effective length at time t is length - rate * (t - arrival), so the order at any t is the
    order of length + rate * arrival, a fixed key."""

    def key(r: Req) -> tuple:
        length = r.num_prompt if sarathi_rules else r.prompt_len
        score = base_len_weight * length + tokens_per_s * r.arrival
        return (r.priority, score, r.arrival) if by_tier else (score, r.arrival)

    return key


# --- orders that see the prefix cache (keys over a request and the tokens of its prompt cached now) -----------------
def uncached_spf(r: Req, cached: int) -> tuple:
    """Shortest uncached prompt first: the part of the prompt the prefix cache does not hold (ties by arrival)."""
    return (r.prompt_len - cached, r.arrival)


def uncached_spf_recomputed(r: Req, cached: int) -> tuple:
    """`uncached_spf`, a recomputed request's generated tokens counted in its prompt (never cached)."""
    return (r.num_prompt - cached, r.arrival)


def tier_uncached_spf(r: Req, cached: int) -> tuple:
    return (r.priority, r.prompt_len - cached, r.arrival)


def tier_uncached_spf_recomputed(r: Req, cached: int) -> tuple:
    return (r.priority, r.num_prompt - cached, r.arrival)


def uncached_key(sarathi_rules: bool, by_tier: bool) -> CacheKey:
    if by_tier:
        return tier_uncached_spf_recomputed if sarathi_rules else tier_uncached_spf
    return uncached_spf_recomputed if sarathi_rules else uncached_spf


def aged_uncached(tokens_per_s: float, by_tier: bool, sarathi_rules: bool = False) -> CacheKey:
    """`aged` on the uncached part of the prompt."""

    def key(r: Req, cached: int) -> tuple:
        score = (r.num_prompt if sarathi_rules else r.prompt_len) - cached + tokens_per_s * r.arrival
        return (r.priority, score, r.arrival) if by_tier else (score, r.arrival)

    return key


def longest_prefix(base: OrderKey | None, by_tier: bool) -> CacheKey:
    """SGLang's `lpm`: the longest cached prefix first; ties in the `base` order (None: arrival). With `by_tier`,
    the paying tier first. (SGLang falls back to FCFS above 128 waiting requests, to save the matching; here the
    order holds at any length.)"""

    def key(r: Req, cached: int) -> tuple:
        rest = base(r) if base is not None else (r.arrival,)
        return (r.priority, -cached, *rest) if by_tier else (-cached, *rest)

    return key


def by_cache(view: EngineView, key: CacheKey) -> Iterable[Req]:
    """`view.waiting` ordered by `key(r, cached prefix of r)`, sorted only if iterated (a full batch looks at no
    waiting request). Without prefix caching nothing is cached: the fixed order `key(r, 0)`, kept sorted by the view."""
    if not view.enable_prefix_caching:
        fixed = getattr(key, "fixed", None)  # one object per key: the view keeps a sorted copy per key object
        if fixed is None:
            fixed = key.fixed = lambda r: key(r, 0)  # type: ignore[attr-defined]
        return view.waiting_by(fixed)
    return _Lazy(view, key)


class _Lazy:
    def __init__(self, view: EngineView, key: CacheKey) -> None:
        self.view, self.key = view, key

    def __iter__(self) -> Iterator[Req]:
        return iter(self.view.waiting_by_cache(self.key))


def sorted_by_cache(view: EngineView, key: CacheKey) -> list[Req]:
    """`waiting_by_cache` for an engine that keeps no order of its own: one lookup per waiting request, and a sort."""
    return sorted(view.waiting, key=lambda r: (*key(r, view.cached_prefix(r)), r.id))
