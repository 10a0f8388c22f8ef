"""Waiting-queue orders. Keys depend only on fixed request attributes, so an engine can keep the queue
sorted incrementally."""

from __future__ import annotations

from llmsched.policies.interface import OrderKey, Req


def spf(r: Req) -> tuple:
    """Shortest prompt first (ties by arrival)."""
    return (r.prompt_len, r.arrival)


def tier_spf(r: Req) -> tuple:
    """Paying (lower priority number) tier first, shortest prompt first within a tier."""
    return (r.priority, r.prompt_len, r.arrival)


def aged(base_len_weight: float, tokens_per_s: float, by_tier: bool) -> OrderKey:
    """SPF with aging: a request's effective length shrinks by `tokens_per_s` for every second it has
    waited. Effective length at time t is prompt_len - rate * (t - arrival), so the order at any t is the
    order of prompt_len + rate * arrival, a fixed key."""

    def key(r: Req) -> tuple:
        score = base_len_weight * r.prompt_len + tokens_per_s * r.arrival
        return (r.priority, score, r.arrival) if by_tier else (score, r.arrival)

    return key
