"""What the torch profiler would allocate for a model and a batch shape, and what this machine has free: checked
before anything is allocated, so that a model too large for the machine is refused with one line, not killed by the
kernel minutes later. Estimates, counted from the tensors `profile_torch` creates (weights exactly; activations and
attention scores as an upper bound of what is live at once within one layer)."""

from __future__ import annotations

from typing import Any

from llmsched.perf.specs import GIB, ModelSpec

# Beyond the tensors: the framework's own allocations and allocator slack (an estimate).
RUNTIME_BYTES = GIB // 2
SLACK = 1.1


def weight_bytes(spec: ModelSpec, elem: int) -> int:
    """The random model's tensors: embedding, per-layer norms and matrices, final norm, LM head (exact)."""
    return spec.params * elem


def shape_bytes(
    spec: ModelSpec, prefill: int, prefill_context: int, decodes: int, decode_context: int, elem: int
) -> int:
    """One batch shape: its K/V caches (all layers, held for the batch's life) plus one layer's activations, attention
    scores (SDPA's math path materialises them, in float32) and the logits."""
    m = spec
    tokens = prefill + decodes
    cached = (prefill_context + prefill) + decodes * (decode_context + 1)
    caches = m.layers * 2 * m.kv_heads * m.head_dim * cached * elem
    qkv = (m.heads + 2 * m.kv_heads) * m.head_dim
    activations = tokens * (4 * m.hidden + 3 * qkv + 4 * m.ffn) * elem
    repeated_kv = 2 * m.heads * (prefill_context + prefill) * m.head_dim * elem  # K/V repeated per query head
    scores = 2 * 4 * m.heads * (prefill * (prefill_context + prefill) + decodes * (decode_context + 1))
    logits = (int(prefill > 0) + decodes) * m.vocab * 4
    return caches + activations + repeated_kv + scores + logits


def available_bytes(device: str, torch: Any) -> tuple[int, str]:
    """Free memory of the device the profile would run on, and where that figure comes from."""
    if device == "cuda":
        free, _ = torch.cuda.mem_get_info()
        return int(free), "free on the GPU"
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable"
    raise OSError("/proc/meminfo has no MemAvailable")


def needed_bytes(weights: int, largest_shape: int) -> int:
    return int(SLACK * (weights + largest_shape)) + RUNTIME_BYTES


def gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"
