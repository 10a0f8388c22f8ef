"""Prefix ids as caches key them, and what they promise a cache.

`chain_ids` chains each id on the ids before it, as vLLM chains its block hashes, so two prompts share a key exactly
as far as their leading ids agree (whether the ids are prefix hashes already, as the Mooncake trace's, or per-block
content hashes, as `token_block_ids` gives). The simulated engine's KV cache and the prefix-aware routers both key
by these. `prefix_share` is the share of prompt blocks an unbounded cache could serve."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from llmsched.workload.request import Request


def chain_ids(ids: Sequence[int]) -> list[int]:
    """One key per id: the hash of (the previous key, this id); Python's hash of a tuple of ints is deterministic."""
    out, parent = [], 0
    for i in ids:
        parent = hash((parent, i))
        out.append(parent)
    return out


def token_block_ids(tokens: Sequence[int], block: int) -> tuple[int, ...]:
    """Per-block content ids of a prompt's token ids, one per `block` tokens (the last block may be partial): what a
    router that sees the prompt's tokens keys by. `chain_ids` makes them prefix keys."""
    return tuple(hash(tuple(tokens[j : j + block])) for j in range(0, len(tokens), block))


def prefix_share(requests: Iterable[Request], block: int | None = None) -> tuple[int, int]:
    """(blocks seen before, blocks) over the prompts in arrival order: a block whose id an earlier prompt holds could
    come from a cache that never evicts (the ceiling of any hit rate in blocks). A prompt without ids shares nothing;
    its blocks count in the total when `block` (tokens) is given."""
    seen: set[int] = set()
    hits = total = 0
    for r in sorted(requests, key=lambda r: (r.arrival, r.id)):
        if not r.prefix_ids:
            total += -(-r.prompt_len // block) if block else 0
            continue
        ids = r.prefix_ids[: -(-r.prompt_len // r.prefix_block)] if r.answer_ids else r.prefix_ids
        hits += sum(h in seen for h in ids)
        total += len(ids)
        # With answer ids, the full blocks of the computed answer too (all but its last token): a next turn may hit.
        seen.update(r.prefix_ids[: (r.id_tokens - 1) // r.prefix_block] if r.answer_ids else r.prefix_ids)
    return hits, total
