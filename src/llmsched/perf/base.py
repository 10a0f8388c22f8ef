"""The one seam every batch-time model implements: batch composition in, seconds out."""

from __future__ import annotations

from typing import NamedTuple, Protocol


class BatchShape(NamedTuple):
    """What a forward pass costs depends on: tokens, attention pairs, KV read, and sequence count.

    prefill_tokens: tokens of all prefill chunks; prefill_pairs: sum over chunks of the (query, key)
    pairs of causal attention, chunk * (context + (chunk + 1) / 2); prefill_context: tokens already in
    the cache for the chunks (read by attention); decodes and decode_context (summed over decodes).
    """

    prefill_tokens: int = 0
    prefill_pairs: float = 0.0
    prefill_context: int = 0
    num_prefills: int = 0
    decodes: int = 0
    decode_context: int = 0

    @classmethod
    def of(cls, chunks: list[tuple[int, int]], decode_contexts: list[int]) -> BatchShape:
        """chunks: (tokens, context before the chunk); decode_contexts: tokens in the cache per decode."""
        return cls(
            prefill_tokens=sum(c for c, _ in chunks),
            prefill_pairs=sum(c * (ctx + (c + 1) / 2) for c, ctx in chunks),
            prefill_context=sum(ctx for _, ctx in chunks),
            num_prefills=len(chunks),
            decodes=len(decode_contexts),
            decode_context=sum(decode_contexts),
        )

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decodes


class PerfModel(Protocol):
    name: str

    def batch_time(self, shape: BatchShape) -> float:
        """Seconds one forward pass over this batch takes, per-batch overhead included."""
        ...
