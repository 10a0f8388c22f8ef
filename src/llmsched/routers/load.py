"""Routers that balance load: by turn, at random, or by the outstanding requests or tokens each replica holds
(RAD's resource-aware router weighs them by the replica's capacity)."""

from __future__ import annotations

from collections.abc import Sequence

from llmsched.routers.base import Router


class RoundRobin(Router):
    name = "round-robin"

    def __init__(self, capacities: Sequence[float], seed: int = 0) -> None:
        super().__init__(capacities, seed)
        self.next = 0

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        i, self.next = self.next, (self.next + 1) % len(self.loads)
        return i


class Random(Router):
    name = "random"

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        return int(self.rng.integers(len(self.loads)))


class JoinShortestQueue(Router):
    """Fewest outstanding requests."""

    name = "jsq"

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        return self._argmin(lambda r: r.requests)


class LeastWork(Router):
    """Fewest outstanding tokens (prompt + decode)."""

    name = "least-work"

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        return self._argmin(lambda r: r.tokens)


class PowerOfTwo(Router):
    """Two distinct replicas drawn at random; the one with fewer outstanding requests (then tokens)."""

    name = "power-of-two"

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        if len(self.loads) == 1:
            return 0
        a, b = (int(x) for x in self.rng.choice(len(self.loads), size=2, replace=False))
        la, lb = self.loads[a], self.loads[b]
        return a if (la.requests, la.tokens, a) <= (lb.requests, lb.tokens, b) else b


class ResourceAware(Router):
    """RAD's router: the replica that would finish its outstanding work plus this request soonest at its
    capacity, i.e. least (outstanding tokens + the request's tokens) / (b*/t(b*))."""

    name = "resource-aware"

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        new = prompt_tokens + decode_tokens
        return self._argmin(lambda r: (r.tokens + new) / r.capacity)
