"""Routers, beside the policies: `make_router(name, capacities, seed)` builds one from its registered name.
Engine-agnostic: the simulated cluster and the Ray Serve request router use the same objects."""

from __future__ import annotations

from collections.abc import Sequence

from llmsched.errors import UserError
from llmsched.routers.base import ReplicaLoad, Router
from llmsched.routers.load import JoinShortestQueue, LeastWork, PowerOfTwo, Random, ResourceAware, RoundRobin
from llmsched.routers.prefix import CacheAware, PrefixAffinity, PrefixRouter, PrefixScore

ROUTERS: dict[str, type[Router]] = {
    r.name: r
    for r in (
        RoundRobin,
        Random,
        JoinShortestQueue,
        LeastWork,
        PowerOfTwo,
        ResourceAware,
        PrefixAffinity,
        CacheAware,
        PrefixScore,
    )
}


def check_router(name: str) -> None:
    if name not in ROUTERS:
        raise UserError(f"--router is {name!r}, expected one of {', '.join(ROUTERS)}")


def make_router(
    name: str,
    capacities: Sequence[float],
    seed: int = 0,
    cache_tokens: Sequence[int] | None = None,
    kv_tokens: Sequence[int] | None = None,
) -> Router:
    """`cache_tokens`: each replica's prefix-cache size in tokens (GPU KV, plus a CPU tier's), which bounds a prefix
    router's picture of its cache; `kv_tokens`: its GPU KV in tokens (default: `cache_tokens`)."""
    check_router(name)
    cls = ROUTERS[name]
    if issubclass(cls, PrefixRouter):
        return cls(capacities, seed, cache_tokens, kv_tokens)
    return cls(capacities, seed)


__all__ = ["ROUTERS", "PrefixRouter", "ReplicaLoad", "Router", "check_router", "make_router"]
