"""Analytic roofline: FLOPs and bytes of one forward pass, from the model's shape and the GPU's spec.

    t = overhead + sqrt(compute^2 + weights^2) + KV read / (bandwidth x kv_bw_eff)

compute = FLOPs / (peak x flops_eff), the token-linear GEMMs, the LM head and attention's FLOPs; weights =
weight bytes / (bandwidth x bw_eff). The smooth maximum (a 2-norm instead of max) stands for the partial
overlap of the GEMMs' compute and weight traffic near the knee. The KV cache that attention reads (the context
of every decode and of every prefill chunk) adds its own time: attention is a kernel of its own that runs
after the GEMMs, so its memory traffic does not hide under their compute (reference section 1.4; the form the
models fitted to measured rows take too, `perf/fitted.py`). `kv_bw_eff` is the share of the GPU's bandwidth
that attention's KV reads reach. Efficiency factors and the per-batch overhead are calibrated on the paper's
own measurement (`paper_fit.py`) and carried to other GPUs as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsched.perf.base import BatchShape
from llmsched.perf.specs import GPUSpec, ModelSpec

# KV reads at 80% of the GPU's bandwidth: paged attention's reads run near the memory roofline (the independent
# simulation of the paper's setting, reference section 1.4, uses 80% of 960 GB/s). Not fitted: the paper's
# chunk sweep reads too little KV to tell it (at most 2k tokens of context per batch).
KV_BW_EFF = 0.8

# Fitted by `llmsched.perf.paper_fit.fit_paper_gpu()` on the 7 points of the paper's chunk sweep
# (Mistral-7B, RTX 6000 Ada) with KV_BW_EFF fixed; `tests/test_perf.py` checks that a re-fit gives these values.
PAPER_FLOPS_EFF = 0.5816
PAPER_BW_EFF = 1.0
PAPER_OVERHEAD_S = 6.817e-3


@dataclass(frozen=True)
class Roofline:
    name: str
    model: ModelSpec
    flops_rate: float  # effective FLOP/s
    bytes_rate: float  # effective bytes/s of the weight reads
    overhead_s: float
    kv_rate: float  # effective bytes/s of attention's KV reads

    def __post_init__(self) -> None:
        m = self.model  # per-unit costs, computed once: batch_time runs once per simulated batch
        object.__setattr__(self, "_per_token", 2 * m.layer_params)
        object.__setattr__(self, "_per_sequence", 2 * m.hidden * m.vocab)  # the LM head: one token per sequence
        object.__setattr__(self, "_per_pair", 4 * m.layers * m.heads * m.head_dim)
        object.__setattr__(self, "_kv_bytes", m.kv_bytes_per_token)
        object.__setattr__(self, "_weight_bytes", m.weight_bytes)

    def flops(self, s: BatchShape) -> float:
        attn_pairs = s.prefill_pairs + s.decode_context + s.decodes
        return (
            self._per_token * s.tokens + self._per_sequence * (s.num_prefills + s.decodes) + self._per_pair * attn_pairs
        )

    def kv_read_bytes(self, s: BatchShape) -> float:
        """The cached context attention reads: each chunk's earlier tokens and each decode's context."""
        return self._kv_bytes * (s.prefill_context + s.decode_context)

    def batch_time(self, shape: BatchShape) -> float:
        if shape.tokens == 0:
            return 0.0
        gemms = math.hypot(self.flops(shape) / self.flops_rate, self._weight_bytes / self.bytes_rate)
        return self.overhead_s + gemms + self.kv_read_bytes(shape) / self.kv_rate


def analytic_model(
    model: ModelSpec,
    gpu: GPUSpec,
    flops_eff: float = PAPER_FLOPS_EFF,
    bw_eff: float = PAPER_BW_EFF,
    overhead_s: float = PAPER_OVERHEAD_S,
    kv_bw_eff: float = KV_BW_EFF,
) -> Roofline:
    return Roofline(
        f"roofline:{model.name}@{gpu.name}",
        model,
        gpu.peak_flops * flops_eff,
        gpu.mem_bw * bw_eff,
        overhead_s,
        gpu.mem_bw * kv_bw_eff,
    )
