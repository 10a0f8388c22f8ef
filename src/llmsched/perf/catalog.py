"""Built-in GPU and model specs (spec-sheet numbers) and the KV pool that follows from them."""

from __future__ import annotations

import os
from functools import lru_cache

from llmsched.errors import UserError
from llmsched.perf.hf_config import spec_from_hf
from llmsched.perf.specs import GIB, GPUSpec, ModelSpec

GPUS: dict[str, GPUSpec] = {
    # RTX 6000 Ada: 364.2 TFLOP/s dense fp16 tensor (1457 FP8 sparse / 4), 960 GB/s GDDR6, 49,140 MiB.
    "rtx6000ada": GPUSpec("rtx6000ada", 364.2e12, 960e9, 49140 * 1024**2),
    # A100 SXM 80GB: 312 TFLOP/s bf16 dense, 2,039 GB/s HBM2e.
    "a100-80gb": GPUSpec("a100-80gb", 312e12, 2039e9, 80 * GIB),
    # H100 SXM 80GB: 989.4 TFLOP/s bf16 dense, 3.35 TB/s HBM3; 81,559 MiB usable.
    "h100-80gb": GPUSpec("h100-80gb", 989.4e12, 3.35e12, 81559 * 1024**2),
}

MODELS: dict[str, ModelSpec] = {
    "mistral-7b": ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 8192),
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192),
    # Llama-3.1-8B, 128k context: meta-llama/Llama-3.1-8B config.json (num_hidden_layers 32, hidden_size 4096,
    # num_attention_heads 32, num_key_value_heads 8, head_dim 128, intermediate_size 14336, vocab_size 128256,
    # max_position_embeddings 131072).
    "llama-3.1-8b": ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072),
}

GPU_MEMORY_UTILIZATION = 0.9
BLOCK_SIZE = 16
# Memory that is neither weights nor KV at profiling time (activations of one 512-token chunk, cuBLAS
# and attention workspaces): a round 1 GiB, an estimate. On Mistral-7B / RTX 6000 Ada it gives 14,694
# blocks against the reference's 14,733 (-0.3%).
RUNTIME_RESERVE_BYTES = 1 * GIB
# KV pools measured by a real engine at utilisation 0.9 and 16-token blocks, used instead of the estimate:
# Mistral-7B on the RTX 6000 Ada, 14,733 blocks, as the paper's code profiled it (the authors' plotting script
# scripts/plotting_gpu_mem_utl_vs_active_requests.py divides by 14733; reference section 1.5).
MEASURED_KV_BLOCKS: dict[tuple[str, str], int] = {("mistral-7b", "rtx6000ada"): 14_733}


def get_gpu(name: str) -> GPUSpec:
    try:
        return GPUS[name]
    except KeyError:
        raise UserError(f"--gpu is {name!r}, expected one of {', '.join(GPUS)}") from None


def get_model(name: str) -> ModelSpec:
    """A catalog model by name, or the model of a Hugging Face model directory (its config.json), registered
    under the directory's name (as `llmsched profile --backend vllm` names its profiles)."""
    if name in MODELS:
        return MODELS[name]
    if os.path.isfile(os.path.join(name, "config.json")):
        return _hf_model(os.path.abspath(name))
    raise UserError(
        f"--model is {name!r}, expected one of {', '.join(MODELS)} or a Hugging Face model directory (config.json)"
    )


@lru_cache(maxsize=16)
def _hf_model(model_dir: str) -> ModelSpec:
    return register(spec_from_hf(model_dir))


def kv_blocks(
    model: ModelSpec, gpu: GPUSpec, utilization: float = GPU_MEMORY_UTILIZATION, block_size: int = BLOCK_SIZE
) -> int:
    """Blocks of the KV pool: a real engine's measured pool where there is one (`MEASURED_KV_BLOCKS`, at the
    default utilisation and block size), else `estimated_kv_blocks`."""
    measured = MEASURED_KV_BLOCKS.get((model.name, gpu.name))
    if measured is not None and utilization == GPU_MEMORY_UTILIZATION and block_size == BLOCK_SIZE:
        return measured
    return estimated_kv_blocks(model, gpu, utilization, block_size)


def estimated_kv_blocks(
    model: ModelSpec, gpu: GPUSpec, utilization: float = GPU_MEMORY_UTILIZATION, block_size: int = BLOCK_SIZE
) -> int:
    """Blocks of the KV pool: utilisation x memory, less weights and the runtime reserve."""
    free = utilization * gpu.mem_bytes - model.weight_bytes - RUNTIME_RESERVE_BYTES
    blocks = int(free // (block_size * model.kv_bytes_per_token))
    if blocks <= 0:
        raise UserError(f"model {model.name} does not fit on {gpu.name} at utilisation {utilization}")
    return blocks


def register(spec: ModelSpec) -> ModelSpec:
    """Make `get_model(spec.name)` find this spec in this process (the fitted-model loader looks it up)."""
    existing = MODELS.get(spec.name)
    if existing is not None and existing != spec:
        raise UserError(f"model name {spec.name!r} is already in the catalog with another shape")
    MODELS[spec.name] = spec
    return spec
