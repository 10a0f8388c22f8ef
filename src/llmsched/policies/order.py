"""Waiting-queue orders. Keys depend only on request attributes that do not change while the request waits, so an
engine can keep the queue sorted incrementally.

Each shortest-prompt-first key comes in two forms: by `prompt_len`, the prompt as submitted (vLLM's request keeps
it through a preemption), and by `num_prompt`, the tokens to prefill, which after a preemption by recompute include
the tokens generated before it (Sarathi-Serve's `reset_for_recompute` moves them into the prompt; `Policy.
sarathi_rules`). `spf_key` and `tier_spf_key` pick the form.
"""

from __future__ import annotations

from llmsched.policies.interface import OrderKey, Req


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
