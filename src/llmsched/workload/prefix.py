"""Prefix ids as caches key them: each id chained on the ids before it, as vLLM chains its block hashes, so two
prompts share a key exactly as far as their leading ids agree (whether the ids are prefix hashes already, as the
Mooncake trace's, or per-block content hashes). The simulated engine's KV cache and the prefix-aware routers both
key by these."""

from __future__ import annotations

from collections.abc import Sequence


def chain_ids(ids: Sequence[int]) -> list[int]:
    """One key per id: the hash of (the previous key, this id); Python's hash of a tuple of ints is deterministic."""
    out, parent = [], 0
    for i in ids:
        parent = hash((parent, i))
        out.append(parent)
    return out
