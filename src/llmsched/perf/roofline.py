"""Analytic roofline: FLOPs and bytes of one forward pass, from the model's shape and the GPU's spec.

t = overhead + sqrt(compute^2 + memory^2), where compute = FLOPs / (peak x flops_eff) and memory =
bytes / (bandwidth x bw_eff). The smooth maximum (a 2-norm instead of max) stands for the partial
overlap of compute and memory traffic near the knee. Efficiency factors and the per-batch overhead are
calibrated on the paper's own measurement (see `calibration.py`) and carried to other GPUs as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmsched.perf.base import BatchShape
from llmsched.perf.specs import GPUSpec, ModelSpec

# Fitted by `llmsched.perf.paper_fit.fit_paper_gpu()` on the 7 points of the paper's chunk sweep
# (Mistral-7B, RTX 6000 Ada); `tests/test_perf.py` checks that a re-fit gives these values.
PAPER_FLOPS_EFF = 0.5812
PAPER_BW_EFF = 1.0
PAPER_OVERHEAD_S = 6.854e-3


@dataclass(frozen=True)
class Roofline:
    name: str
    model: ModelSpec
    flops_rate: float  # effective FLOP/s
    bytes_rate: float  # effective bytes/s
    overhead_s: float

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

    def bytes(self, s: BatchShape) -> float:
        return self._weight_bytes + self._kv_bytes * (s.prefill_context + s.decode_context + s.tokens)  # KV r+w

    def batch_time(self, shape: BatchShape) -> float:
        if shape.tokens == 0:
            return 0.0
        return self.overhead_s + math.hypot(self.flops(shape) / self.flops_rate, self.bytes(shape) / self.bytes_rate)


def analytic_model(
    model: ModelSpec,
    gpu: GPUSpec,
    flops_eff: float = PAPER_FLOPS_EFF,
    bw_eff: float = PAPER_BW_EFF,
    overhead_s: float = PAPER_OVERHEAD_S,
) -> Roofline:
    return Roofline(
        f"roofline:{model.name}@{gpu.name}", model, gpu.peak_flops * flops_eff, gpu.mem_bw * bw_eff, overhead_s
    )
