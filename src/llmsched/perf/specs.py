"""What a batch-time model and the KV pool need to know of a GPU and a model: spec-sheet numbers and shapes."""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class GPUSpec:
    name: str
    peak_flops: float  # dense fp16/bf16 tensor FLOP/s
    mem_bw: float  # bytes/s
    mem_bytes: float
    # The link tensor parallelism's all-reduces cross (docs/plan.md has the sources): bytes/s per direction per
    # GPU, and the fixed time of one small all-reduce. `link_peers` > 0: a full mesh of that many point-to-point
    # links per GPU (AMD Infinity Fabric), so TP over n GPUs uses n - 1 of them; 0: a switch (NVSwitch, PCIe),
    # whose bandwidth each GPU has whatever the TP degree.
    link: str = ""
    link_bw: float = 0.0
    link_latency_s: float = 0.0
    link_peers: int = 0
    # Host-to-device bytes/s per direction (the GPU's PCIe link to host memory): what loads a CPU KV tier's blocks.
    host_bw: float = 0.0

    def link_bw_at(self, tp: int) -> float:
        """Per-direction bandwidth a TP group of `tp` GPUs reaches per GPU."""
        if self.link_peers:
            return self.link_bw * min(tp - 1, self.link_peers) / self.link_peers
        return self.link_bw


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int  # per expert for a mixture of experts
    vocab: int
    max_len: int
    dtype_bytes: int = 2
    experts: int = 1  # experts per MoE layer (1: a dense model)
    experts_per_token: int = 1  # experts each token is routed to

    @property
    def attention_params(self) -> int:
        """One layer's attention and norm weights."""
        qkv = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
        out = self.heads * self.head_dim * self.hidden
        return qkv + out + 2 * self.hidden

    @property
    def expert_params(self) -> int:
        """One expert's gated FFN (gate, up and down projections)."""
        return 3 * self.hidden * self.ffn

    @property
    def router_params(self) -> int:
        return self.hidden * self.experts if self.experts > 1 else 0

    @property
    def layer_params(self) -> int:
        """Weights of all layers: every expert is held in memory."""
        return self.layers * (self.attention_params + self.experts * self.expert_params + self.router_params)

    @property
    def active_layer_params(self) -> int:
        """Weights of all layers one token multiplies: its experts only (what its FLOPs follow)."""
        k = self.experts_per_token if self.experts > 1 else 1
        return self.layers * (self.attention_params + k * self.expert_params + self.router_params)

    @property
    def params(self) -> int:
        return self.layer_params + 2 * self.hidden * self.vocab + self.hidden  # + embedding, LM head, norm

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def expert_bytes_read(self, tokens: float) -> float:
        """Expert weights a batch of `tokens` reads: an expert is read once if any token routes to it. Tokens are
        routed independently and evenly (the routers' balancing loss aims at that), so a layer reads
        E (1 - (1 - k/E)^tokens) of its E experts."""
        if self.experts <= 1:
            return float(self.layers * self.expert_params * self.dtype_bytes)
        touched = self.experts * (1 - (1 - self.experts_per_token / self.experts) ** tokens)
        return self.layers * touched * self.expert_params * self.dtype_bytes

    def check_tp(self, tp: int) -> str | None:
        """Why vLLM would refuse tensor parallelism of degree `tp` on this model (None: it would not)."""
        if self.heads % tp:
            return f"{self.name} has {self.heads} attention heads, not divisible by tensor parallelism {tp}"
        if self.kv_heads % tp and tp % self.kv_heads:
            return f"{self.name} has {self.kv_heads} KV heads: tensor parallelism {tp} is no divisor or multiple"
        return None
