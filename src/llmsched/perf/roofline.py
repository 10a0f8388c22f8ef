"""Analytic roofline: FLOPs and bytes of one forward pass, from the model's shape and the GPU's spec.

    t = overhead + sqrt(compute^2 + weights^2) + KV read / (bandwidth x kv_bw_eff) + all-reduces

compute = FLOPs / (peak x flops_eff), the token-linear GEMMs (over the parameters a token multiplies: a mixture
of experts' active ones), the LM head and attention's FLOPs; weights = weight bytes read / (bandwidth x bw_eff),
every weight once, a mixture of experts' experts only where some token routes. The smooth maximum (a 2-norm
instead of max) stands for the partial overlap of the GEMMs' compute and weight traffic near the knee. The KV
cache that attention reads (the context of every decode and of every prefill chunk) adds its own time: attention
is a kernel of its own that runs after the GEMMs, so its memory traffic does not hide under their compute
(reference section 1.4; the form the models fitted to measured rows take too, `perf/fitted.py`). `kv_bw_eff` is
the share of the GPU's bandwidth that attention's KV reads reach.

Tensor parallelism over n GPUs (Megatron-style, as vLLM shards a model) splits the weights, the FLOPs and the
KV heads n ways, and adds two all-reduces of the batch's hidden states per layer (after attention and after the
FFN) and one gather of the logits, over the GPUs' link: each costs the link's latency plus a ring's traffic,
2 (n-1)/n of the message per GPU for an all-reduce and (n-1)/n for a gather, at the link's bandwidth; they do not
overlap with compute (vLLM runs them in line). docs/plan.md states the assumptions and the sources.

The per-batch overhead (kernel launches and their fixed latency, which a forward pass pays per layer) is
calibrated on 32-layer models and scaled by the number of layers. Efficiency factors come from a measurement
(`Efficiency`): the paper's, on its RTX 6000 Ada, and llmsched's H100 profile, carried to every other GPU as an
estimate.
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

# The layers of the models the overheads were measured on (Mistral-7B, Llama-3-8B).
CALIBRATION_LAYERS = 32


@dataclass(frozen=True)
class Efficiency:
    """The roofline's factors as one measurement gave them, and where they come from (`gpu`: the GPU measured)."""

    flops: float
    bw: float
    overhead_s: float  # per batch, for a model of CALIBRATION_LAYERS layers
    kv_bw: float
    gpu: str
    models: tuple[str, ...]  # the models measured
    source: str


PAPER = Efficiency(
    PAPER_FLOPS_EFF, PAPER_BW_EFF, PAPER_OVERHEAD_S, KV_BW_EFF, "rtx6000ada", ("mistral-7b",),
    "the paper's chunk sweep (Mistral-7B, Sarathi-Serve on an RTX 6000 Ada)",
)  # fmt: skip
# Fitted by `llmsched.perf.paper_fit.fit_h100()` on the 134 rows of the shipped H100 profile (Mistral-7B and
# Llama-3-8B, PyTorch with CUDA graphs); `tests/test_perf.py` checks that a re-fit gives these values.
H100 = Efficiency(
    0.5832, 0.8342, 2.665e-3, 0.9493, "h100-80gb", ("mistral-7b", "llama-3-8b"),
    "llmsched's H100 profile (Mistral-7B and Llama-3-8B, PyTorch with CUDA graphs)",
)  # fmt: skip
MEASURED_EFFICIENCY = {e.gpu: e for e in (PAPER, H100)}


def efficiency_for(gpu: str) -> Efficiency:
    """The factors measured on this GPU, else the H100's: a spec sheet carried by another GPU's efficiency."""
    return MEASURED_EFFICIENCY.get(gpu, H100)


@dataclass(frozen=True)
class Roofline:
    name: str
    model: ModelSpec
    flops_rate: float  # effective FLOP/s of one GPU
    bytes_rate: float  # effective bytes/s of the weight reads
    overhead_s: float
    kv_rate: float  # effective bytes/s of attention's KV reads
    tp: int = 1  # tensor-parallel GPUs of the replica
    link_bw: float = 0.0  # bytes/s per direction per GPU
    link_latency_s: float = 0.0

    def __post_init__(self) -> None:
        m, n = self.model, self.tp  # per-unit costs, computed once: batch_time runs once per simulated batch
        object.__setattr__(self, "_per_token", 2 * m.active_layer_params / n)
        object.__setattr__(self, "_per_sequence", 2 * m.hidden * m.vocab / n)  # the LM head: one token per sequence
        object.__setattr__(self, "_per_pair", 4 * m.layers * m.heads * m.head_dim / n)
        object.__setattr__(self, "_kv_bytes", m.kv_bytes_per_token / min(n, m.kv_heads))
        object.__setattr__(self, "_weight_bytes", m.weight_bytes / n)
        object.__setattr__(self, "_dense_bytes", (m.params - m.layer_params) * m.dtype_bytes / n)
        object.__setattr__(self, "_moe", m.experts > 1)
        object.__setattr__(self, "_plain", n == 1 and m.experts <= 1)
        object.__setattr__(self, "_weight_time", self._weight_bytes / self.bytes_rate)
        if n > 1 and not self.link_bw > 0:
            raise ValueError(f"{self.name}: tensor parallelism {n} needs the GPUs' link bandwidth")
        ring = (n - 1) / n / self.link_bw if n > 1 else 0.0
        object.__setattr__(self, "_allreduce_per_token", 2 * m.layers * 2 * ring * m.hidden * m.dtype_bytes)
        object.__setattr__(self, "_gather_per_sequence", ring * m.vocab * m.dtype_bytes)
        object.__setattr__(self, "_comm_fixed", (2 * m.layers + 1) * self.link_latency_s if n > 1 else 0.0)

    def flops(self, s: BatchShape) -> float:
        """FLOPs of one GPU."""
        attn_pairs = s.prefill_pairs + s.decode_context + s.decodes
        return (
            self._per_token * s.tokens + self._per_sequence * (s.num_prefills + s.decodes) + self._per_pair * attn_pairs
        )

    def weight_read_bytes(self, s: BatchShape) -> float:
        """Weight bytes one GPU reads: all of them, but a mixture of experts' unrouted experts."""
        if not self._moe:
            return self._weight_bytes
        m = self.model
        experts = m.expert_bytes_read(s.tokens) / self.tp
        return self._dense_bytes + m.layers * (m.attention_params + m.router_params) * m.dtype_bytes / self.tp + experts

    def kv_read_bytes(self, s: BatchShape) -> float:
        """The cached context one GPU's attention reads: each chunk's earlier tokens and each decode's context."""
        return self._kv_bytes * (s.prefill_context + s.decode_context)

    def comm_time(self, s: BatchShape) -> float:
        """Two all-reduces per layer and the logits' gather across the TP group (0 on one GPU)."""
        if self.tp == 1:
            return 0.0
        seqs = s.num_prefills + s.decodes
        return self._comm_fixed + self._allreduce_per_token * s.tokens + self._gather_per_sequence * seqs

    def min_batch_time(self) -> float:
        """A lower bound on the time of any batch that holds a token: the fixed overhead and the weights every batch
        reads (a mixture of experts: its dense part); `batch_time`'s terms are those or more."""
        return self.overhead_s + (self._dense_bytes if self._moe else self._weight_bytes) / self.bytes_rate

    def batch_time(self, shape: BatchShape) -> float:
        if self._plain:
            # One dense GPU (the simulator's hot path: once per batch): `flops`, `weight_read_bytes` and
            # `kv_read_bytes` inlined, each term in their order of operations, so the result is the same float.
            pt, pp, pc, npf, d, dc = shape
            tokens = pt + d
            if tokens == 0:
                return 0.0
            flops = self._per_token * tokens + self._per_sequence * (npf + d) + self._per_pair * (pp + dc + d)
            gemms = math.hypot(flops / self.flops_rate, self._weight_time)
            return self.overhead_s + gemms + self._kv_bytes * (pc + dc) / self.kv_rate
        if shape.tokens == 0:
            return 0.0
        gemms = math.hypot(self.flops(shape) / self.flops_rate, self.weight_read_bytes(shape) / self.bytes_rate)
        t = self.overhead_s + gemms + self.kv_read_bytes(shape) / self.kv_rate
        return t + self.comm_time(shape) if self.tp > 1 else t


def analytic_model(
    model: ModelSpec,
    gpu: GPUSpec,
    flops_eff: float = PAPER_FLOPS_EFF,
    bw_eff: float = PAPER_BW_EFF,
    overhead_s: float = PAPER_OVERHEAD_S,
    kv_bw_eff: float = KV_BW_EFF,
    tp: int = 1,
) -> Roofline:
    """The roofline of `model` on `tp` GPUs of kind `gpu` with these factors; `overhead_s` is the overhead of a
    CALIBRATION_LAYERS-layer model, scaled to this one's layers."""
    return Roofline(
        f"roofline:{model.name}@{gpu.name}" + (f"x{tp}" if tp > 1 else ""),
        model,
        gpu.peak_flops * flops_eff,
        gpu.mem_bw * bw_eff,
        overhead_s * model.layers / CALIBRATION_LAYERS,
        gpu.mem_bw * kv_bw_eff,
        tp,
        gpu.link_bw_at(tp) if tp > 1 else 0.0,
        gpu.link_latency_s,
    )


def estimated_model(model: ModelSpec, gpu: GPUSpec, tp: int = 1) -> Roofline:
    """The roofline with the factors measured on this GPU, or carried from the H100's (`efficiency_for`)."""
    e = efficiency_for(gpu.name)
    return analytic_model(model, gpu, e.flops, e.bw, e.overhead_s, e.kv_bw, tp)
