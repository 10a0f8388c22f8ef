"""The router seam: which replica serves an arriving request. Engine-agnostic: the simulator's cluster uses them,
and a serving adapter (e.g. a Ray Serve request router) can too.

A router keeps, per replica, the load it has booked: outstanding requests, prompt and decode tokens,
and the replica's capacity in tokens/s. `route` picks a replica and books the request there; the caller
calls `settle` when the request completes (or is rejected). Routers read nothing else, so the same
object works wherever arrivals and completions can be reported. Random choices come from a seeded
generator: same seed and same call sequence, same choices.

`route` also takes the prompt's prefix ids (`Request.prefix_ids`, `prefix_block` tokens each): the load routers
ignore them, the prefix routers (`prefix.py`) keep from them a picture of what each replica has cached.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


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

    def route(
        self,
        key: object,
        prompt_tokens: int,
        decode_tokens: int,
        prefix_ids: Sequence[int] = (),
        prefix_block: int = 0,
    ) -> int:
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
