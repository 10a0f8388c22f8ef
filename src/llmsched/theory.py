"""Throughput bounds from the batch-time model (docs/theory.md states the assumptions).

A tile is a batch of b tokens with the steady-state composition of the workload: a share
f = E[D-1] / E[P+D-1] of decode tokens, each at the mean decode context, and the rest prefill tokens at
the mean prompt position. Its throughput is b / t(b), with t the simulator's own perf model. The optimal
tile b* maximises it subject to the KV pool (the tile's decodes must fit in memory at once), the sequence
limit and, if given, a TBT bound on t(b*). A work-conserving policy that always fills the tile serves
b* / t(b*) tokens/s, so requests are served at most at lambda* = sum over replicas of b*/t(b*) / E[P+D-1].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from llmsched.perf.base import BatchShape, PerfModel

MAX_TILE = 16384  # search range of b; the KV pool binds far below it on every catalog GPU


@dataclass(frozen=True)
class WorkloadStats:
    """Means over a workload's requests. A request passes P + D - 1 tokens through the engine: its prompt,
    then D - 1 decode steps (its first output token comes from the batch of its last prefill chunk)."""

    requests: int
    mean_prompt: float
    mean_decode: float
    decode_context: float  # KV tokens cached per decode step, averaged over all decode steps
    prompt_position: float  # position of a prompt token in its prompt (1-based), averaged over prompt tokens
    prompt_in_progress: float  # E[P^2] / E[P]: the size-biased prompt, as seen by one in progress

    @staticmethod
    def of(prompts: Sequence[int], decodes: Sequence[int]) -> WorkloadStats:
        p, d = np.asarray(prompts, dtype=float), np.asarray(decodes, dtype=float)
        steps = d - 1  # decode step j (j = 0 .. D-2) reads a context of P + j tokens
        ctx = steps * p + steps * (steps - 1) / 2
        return WorkloadStats(
            requests=len(p),
            mean_prompt=float(p.mean()),
            mean_decode=float(d.mean()),
            decode_context=float(ctx.sum() / steps.sum()) if steps.sum() > 0 else 0.0,
            prompt_position=float((p * (p + 1) / 2).sum() / p.sum()),
            prompt_in_progress=float((p * p).sum() / p.sum()),
        )

    @property
    def work(self) -> float:
        """Tokens per request, E[P + D - 1]."""
        return self.mean_prompt + self.mean_decode - 1

    @property
    def decode_share(self) -> float:
        return (self.mean_decode - 1) / self.work


@dataclass(frozen=True)
class Limits:
    """What caps a tile on one replica. kv_tokens: the KV pool in tokens, less the admission watermark."""

    kv_tokens: float
    block_size: int = 16
    max_num_seqs: int | None = None
    tbt: float | None = None  # seconds; t(b*) must not exceed it


def tile_shape(b: float, w: WorkloadStats) -> BatchShape:
    """The steady-state batch of b tokens: f*b decodes at the mean decode context, and the prefill tokens
    as one chunk whose tokens sit at the mean prompt position (fluid: counts may be fractional)."""
    decodes = w.decode_share * b
    prefill = b - decodes
    chunk_context = max(0.0, w.prompt_position - (prefill + 1) / 2)
    return BatchShape(
        prefill_tokens=prefill,  # type: ignore[arg-type]
        prefill_pairs=prefill * w.prompt_position,
        prefill_context=chunk_context if prefill > 0 else 0,  # type: ignore[arg-type]
        num_prefills=1 if prefill > 0 else 0,
        decodes=decodes,  # type: ignore[arg-type]
        decode_context=decodes * w.decode_context,  # type: ignore[arg-type]
    )


def batch_time(perf: PerfModel, b: float, w: WorkloadStats) -> float:
    return perf.batch_time(tile_shape(b, w))


def throughput(perf: PerfModel, b: float, w: WorkloadStats) -> float:
    """Tokens/s of back-to-back tiles of b tokens."""
    return b / batch_time(perf, b, w)


def memory_cap(w: WorkloadStats, lim: Limits) -> float:
    """Largest b whose KV fits: the tile's f*b decodes, each its context plus half a block of rounding, and
    the whole prompts held from admission by requests in prefill, by Little's law about
    E[P^2]/E[P] + (1-f)*b tokens. The sequence limit counts one prompt in progress besides the decodes."""
    f = w.decode_share
    per_token = f * (w.decode_context + lim.block_size / 2) + (1 - f)
    cap = max(0.0, lim.kv_tokens - w.prompt_in_progress) / per_token
    if lim.max_num_seqs is not None:
        cap = min(cap, (lim.max_num_seqs - 1) / w.decode_share)
    return min(cap, MAX_TILE)


@dataclass(frozen=True)
class Tile:
    tokens: int
    batch_time_s: float
    tokens_per_s: float
    memory_cap: float  # the b at which memory (or the sequence limit) binds

    def qps(self, w: WorkloadStats) -> float:
        return self.tokens_per_s / w.work


def optimal_tile(perf: PerfModel, w: WorkloadStats, lim: Limits, budget: int | None = None) -> Tile:
    """The integer b <= min(budget, memory cap) with t(b) within the TBT bound that maximises b/t(b)."""
    cap = memory_cap(w, lim)
    top = int(min(cap, budget if budget is not None else MAX_TILE))
    if top < 1:
        raise ValueError(f"no tile fits: the KV pool holds {lim.kv_tokens:.0f} tokens, a request needs more")
    best: Tile | None = None
    for b in range(1, top + 1):
        t = batch_time(perf, b, w)
        if lim.tbt is not None and t > lim.tbt:
            break  # t is non-decreasing in b
        if best is None or b / t > best.tokens_per_s:
            best = Tile(b, t, b / t, cap)
    if best is None:
        raise ValueError(f"no tile meets the TBT bound of {lim.tbt * 1e3:.1f} ms")  # type: ignore[operator]
    return best


@lru_cache(maxsize=64)
def cached_tile(perf: PerfModel, w: WorkloadStats, lim: Limits, budget: int | None = None) -> Tile:
    return optimal_tile(perf, w, lim, budget)


@dataclass(frozen=True)
class Bound:
    """Stability bounds of a set of replicas for one workload (requests/s)."""

    workload: WorkloadStats
    tiles: tuple[Tile, ...]  # the optimal tile per replica
    fixed: dict[int, tuple[Tile, ...]]  # per fixed budget, the tile it allows per replica

    @property
    def qps(self) -> float:
        return sum(t.tokens_per_s for t in self.tiles) / self.workload.work

    def fixed_qps(self, budget: int) -> float:
        return sum(t.tokens_per_s for t in self.fixed[budget]) / self.workload.work
