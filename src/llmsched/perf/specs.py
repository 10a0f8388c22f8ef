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


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    max_len: int
    dtype_bytes: int = 2

    @property
    def layer_params(self) -> int:
        qkv = self.hidden * (self.heads + 2 * self.kv_heads) * self.head_dim
        out = self.heads * self.head_dim * self.hidden
        return self.layers * (qkv + out + 3 * self.hidden * self.ffn + 2 * self.hidden)

    @property
    def params(self) -> int:
        return self.layer_params + 2 * self.hidden * self.vocab + self.hidden  # + embedding, LM head, norm

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes
