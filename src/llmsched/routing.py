"""Routers: which replica serves an arriving request. Engine-agnostic: the simulator's cluster uses them,
and a serving adapter (e.g. a Ray Serve request router) can too.

A router keeps, per replica, the load it has booked: outstanding requests, prompt and decode tokens,
and the replica's capacity in tokens/s. `route` picks a replica and books the request there; the caller
calls `settle` when the request completes (or is rejected). Routers read nothing else, so the same
object works wherever arrivals and completions can be reported. Random choices come from a seeded
generator: same seed and same call sequence, same choices.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from llmsched.errors import UserError


@dataclass
class ReplicaLoad:
    capacity: float  # tokens/s the replica can sustain (its b*/t(b*))
    requests: int = 0
    prompt_tokens: int = 0
    decode_tokens: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.decode_tokens


class Router:
    name = "router"

    def __init__(self, capacities: Sequence[float], seed: int = 0) -> None:
        if not capacities:
            raise ValueError("a router needs at least one replica")
        self.loads = [ReplicaLoad(float(c)) for c in capacities]
        self.rng = np.random.default_rng(seed)
        self._booked: dict[object, tuple[int, int, int]] = {}

    def choose(self, prompt_tokens: int, decode_tokens: int) -> int:
        raise NotImplementedError

    def route(self, key: object, prompt_tokens: int, decode_tokens: int) -> int:
        """Choose a replica for request `key` and book its load there."""
        i = self.choose(prompt_tokens, decode_tokens)
        self.book(key, i, prompt_tokens, decode_tokens)
        return i

    def book(self, key: object, i: int, prompt_tokens: int, decode_tokens: int) -> None:
        """Book request `key`'s load on replica `i`: `route` does it for its own choice; an adapter whose
        transport may deliver elsewhere (a replica died) settles and books where the request went."""
        load = self.loads[i]
        load.requests += 1
        load.prompt_tokens += prompt_tokens
        load.decode_tokens += decode_tokens
        self._booked[key] = (i, prompt_tokens, decode_tokens)

    def settle(self, key: object) -> None:
        """Request `key` left its replica (completed, rejected or cancelled)."""
        i, p, d = self._booked.pop(key)
        load = self.loads[i]
        load.requests -= 1
        load.prompt_tokens -= p
        load.decode_tokens -= d

    def _argmin(self, score: Callable[[ReplicaLoad], float]) -> int:
        return min(range(len(self.loads)), key=lambda i: (score(self.loads[i]), i))


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


ROUTERS: dict[str, type[Router]] = {
    r.name: r for r in (RoundRobin, Random, JoinShortestQueue, LeastWork, PowerOfTwo, ResourceAware)
}


def check_router(name: str) -> None:
    if name not in ROUTERS:
        raise UserError(f"--router is {name!r}, expected one of {', '.join(ROUTERS)}")


def make_router(name: str, capacities: Sequence[float], seed: int = 0) -> Router:
    check_router(name)
    return ROUTERS[name](capacities, seed)
