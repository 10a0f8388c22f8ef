"""Built-in GPU and model specs (spec-sheet numbers) and the KV pool that follows from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from llmsched.errors import UserError
from llmsched.perf.hf_config import spec_from_hf
from llmsched.perf.specs import GIB, GPUSpec, ModelSpec

# Spec sheets (dense bf16/fp16 tensor FLOP/s without sparsity, memory bandwidth, memory as the driver reports it
# where known) and the link tensor parallelism uses. docs/plan.md has the table with every source.
NVLINK_LATENCY_S = 6e-6  # one small all-reduce over NVLink/NVSwitch with CUDA graphs (NVIDIA/nccl#1259, 2x H100)
PCIE_LATENCY_S = 15e-6  # over PCIe through the host bridge: an estimate, about 2.5x NVLink's
PCIE4_X16 = 31.5e9  # PCIe Gen4 x16 per direction: 16 GT/s x 16 lanes x 128/130
# PCIe Gen5 x16 per direction: 32 GT/s x 16 lanes x 128/130 (PCI-SIG PCIe 5.0, 2019; H100 SXM datasheet, 2023:
# "PCIe Gen5 128 GB/s", both directions). `host_bw` below is this spec-sheet rate of each GPU's host link: an
# estimate of what loads a CPU KV tier's blocks (pinned host-to-device copies reach less of it in practice).
PCIE5_X16 = 63.0e9
GPUS: dict[str, GPUSpec] = {
    # RTX 6000 Ada: 364.2 TFLOP/s dense fp16 tensor (1457 FP8 sparse / 4), 960 GB/s GDDR6, 49,140 MiB; PCIe Gen4.
    "rtx6000ada": GPUSpec(
        "rtx6000ada", 364.2e12, 960e9, 49140 * 1024**2, "PCIe Gen4 x16", PCIE4_X16, PCIE_LATENCY_S, host_bw=PCIE4_X16
    ),
    # A100 SXM 80GB: 312 TFLOP/s bf16 dense, 2,039 GB/s HBM2e, 80 GiB; NVLink 3, 600 GB/s both directions.
    "a100-80gb": GPUSpec("a100-80gb", 312e12, 2039e9, 80 * GIB, "NVLink 3", 300e9, NVLINK_LATENCY_S, host_bw=PCIE4_X16),
    # H100 SXM 80GB: 989.4 TFLOP/s bf16 dense, 3.35 TB/s HBM3; 81,559 MiB usable; NVLink 4, 900 GB/s both directions.
    "h100-80gb": GPUSpec(
        "h100-80gb", 989.4e12, 3.35e12, 81559 * 1024**2, "NVLink 4", 450e9, NVLINK_LATENCY_S, host_bw=PCIE5_X16
    ),
    # H200 SXM 141GB: the H100's 989.4 TFLOP/s, 4.8 TB/s HBM3e, 143,771 MiB as nvidia-smi reports; NVLink 4.
    "h200": GPUSpec("h200", 989.4e12, 4.8e12, 143771 * 1024**2, "NVLink 4", 450e9, NVLINK_LATENCY_S, host_bw=PCIE5_X16),
    # L40S: 362.05 TFLOP/s bf16 dense (733 with sparsity), 864 GB/s GDDR6, 48 GB (46,068 MiB with ECC on); PCIe
    # Gen4, no NVLink.
    "l40s": GPUSpec(
        "l40s", 362.05e12, 864e9, 46068 * 1024**2, "PCIe Gen4 x16", PCIE4_X16, PCIE_LATENCY_S, host_bw=PCIE4_X16
    ),
    # A10G (AWS G5): 70 TFLOP/s fp16 tensor dense (AWS's variant of the A10, whose sheet says 125), 600 GB/s
    # GDDR6, 24 GB (23,028 MiB usable); PCIe Gen4.
    "a10g": GPUSpec(
        "a10g", 70e12, 600e9, 23028 * 1024**2, "PCIe Gen4 x16", PCIE4_X16, PCIE_LATENCY_S, host_bw=PCIE4_X16
    ),
    # MI300X: 1,307.4 TFLOP/s bf16 dense, 5.3 TB/s HBM3, 192 GB; Infinity Fabric, 7 links of 64 GB/s per direction
    # to the 7 peers of an 8-GPU node (896 GB/s aggregate, both directions).
    "mi300x": GPUSpec(
        "mi300x", 1307.4e12, 5.3e12, 192 * GIB, "Infinity Fabric", 448e9, 10e-6, link_peers=7, host_bw=PCIE5_X16
    ),
}


@dataclass(frozen=True)
class Price:
    """An on-demand list price per GPU-hour, where it was listed and when (prices move: give yours with --gpus)."""

    usd_per_hour: float
    offer: str
    date: str
    source: str

    def __str__(self) -> str:
        where = ", ".join(x for x in (self.offer, self.date, self.source) if x)
        return f"${self.usd_per_hour:g}/GPU-h ({where})"


PRICES: dict[str, Price] = {
    "h100-80gb": Price(2.69, "RunPod Secure Cloud H100", "2026-05-22", "spheron.network/blog/runpod-h100-pricing-2026"),
    "h200": Price(3.59, "RunPod H200 SXM 141GB", "2026-03-10", "deploybase.ai/articles/runpod-gpu-pricing"),
    "a100-80gb": Price(1.39, "RunPod A100 SXM 80GB", "2026-03-10", "deploybase.ai/articles/runpod-gpu-pricing"),
    "l40s": Price(0.79, "RunPod L40S", "2026-03-10", "deploybase.ai/articles/runpod-gpu-pricing"),
    # RunPod prices the RTX 6000 Ada in the L40S's tier (docs.runpod.io/serverless/pricing): the L40S's pod price.
    "rtx6000ada": Price(0.79, "RunPod L40S tier", "2026-03-10", "deploybase.ai/articles/runpod-gpu-pricing"),
    "a10g": Price(1.006, "AWS EC2 g5.xlarge, us-east-1", "2026-06-17", "factualminds.com (EC2 on-demand pricing)"),
    "mi300x": Price(1.85, "Vultr MI300X", "2026-05-18", "cliffcenter.com/research/amd-inference-economics"),
}

MODELS: dict[str, ModelSpec] = {
    "mistral-7b": ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32000, 8192),
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, 8192),
    # Shapes from each model's Hugging Face config.json (num_hidden_layers, hidden_size, num_attention_heads,
    # num_key_value_heads, head_dim, intermediate_size, vocab_size, max_position_embeddings[, num_local_experts,
    # num_experts_per_tok]); docs/plan.md lists them with their parameter counts.
    # meta-llama/Llama-3.1-8B: 8.0B parameters, 128k context.
    "llama-3.1-8b": ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, 131072),
    # meta-llama/Llama-3.1-70B: 70.6B parameters, 128k context.
    "llama-3.1-70b": ModelSpec("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, 131072),
    # Qwen/Qwen2.5-32B: 32.8B parameters by these shapes (the model card says 32.5B; its QKV biases left out);
    # config.json's 32k context (128k with YaRN).
    "qwen2.5-32b": ModelSpec("qwen2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, 32768),
    # mistralai/Mixtral-8x7B-v0.1: 8 experts, 2 per token; 46.7B parameters, 12.9B active; 32k context.
    "mixtral-8x7b": ModelSpec(
        "mixtral-8x7b", 32, 4096, 32, 8, 128, 14336, 32000, 32768, experts=8, experts_per_token=2
    ),
}

# The Hugging Face repositories the models' shapes come from (what a deployment serves).
HF_REPOS: dict[str, str] = {
    "mistral-7b": "mistralai/Mistral-7B-Instruct-v0.2",
    "llama-3-8b": "meta-llama/Meta-Llama-3-8B",
    "llama-3.1-8b": "meta-llama/Llama-3.1-8B",
    "llama-3.1-70b": "meta-llama/Llama-3.1-70B",
    "qwen2.5-32b": "Qwen/Qwen2.5-32B",
    "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1",
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
    model: ModelSpec,
    gpu: GPUSpec,
    utilization: float = GPU_MEMORY_UTILIZATION,
    block_size: int = BLOCK_SIZE,
    tp: int = 1,
) -> int:
    """Blocks of the KV pool: a real engine's measured pool where there is one (`MEASURED_KV_BLOCKS`, at the
    default utilisation and block size, on one GPU), else `estimated_kv_blocks`."""
    measured = MEASURED_KV_BLOCKS.get((model.name, gpu.name))
    if measured is not None and utilization == GPU_MEMORY_UTILIZATION and block_size == BLOCK_SIZE and tp == 1:
        return measured
    return estimated_kv_blocks(model, gpu, utilization, block_size, tp)


def estimated_kv_blocks(
    model: ModelSpec,
    gpu: GPUSpec,
    utilization: float = GPU_MEMORY_UTILIZATION,
    block_size: int = BLOCK_SIZE,
    tp: int = 1,
) -> int:
    """Blocks of the KV pool: per GPU, utilisation x memory less its share of the weights and the runtime
    reserve, over its share of a token's KV (a KV head is replicated where TP exceeds the KV heads)."""
    free = utilization * gpu.mem_bytes - model.weight_bytes / tp - RUNTIME_RESERVE_BYTES
    blocks = int(free // (block_size * model.kv_bytes_per_token / min(tp, model.kv_heads)))
    if blocks <= 0:
        on = f"{tp} x {gpu.name}" if tp > 1 else gpu.name
        raise UserError(f"model {model.name} does not fit on {on} at utilisation {utilization}")
    return blocks


def get_price(gpu: str) -> Price:
    try:
        return PRICES[gpu]
    except KeyError:
        raise UserError(f"GPU {gpu!r} has no catalog price: give one, e.g. {gpu}:2.0 (USD per GPU-hour)") from None


def register(spec: ModelSpec) -> ModelSpec:
    """Make `get_model(spec.name)` find this spec in this process (the fitted-model loader looks it up)."""
    existing = MODELS.get(spec.name)
    if existing is not None and existing != spec:
        raise UserError(f"model name {spec.name!r} is already in the catalog with another shape")
    MODELS[spec.name] = spec
    return spec
