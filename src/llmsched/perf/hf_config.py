"""A `ModelSpec` from a Hugging Face model directory's config.json, so a model served by vLLM (not in the
catalog) can be profiled, fitted and simulated."""

from __future__ import annotations

import json
from pathlib import Path

from llmsched.errors import UserError
from llmsched.perf.specs import ModelSpec

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def read_hf_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e}); expected a Hugging Face model directory") from None
    except ValueError as e:
        raise UserError(f"{path}: not JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a JSON object")
    return cfg


def model_name(model_dir: str | Path) -> str:
    """The name profiles and fits use for this model: the directory's name, lower-case."""
    return Path(model_dir).resolve().name.lower()


def spec_from_hf(model_dir: str | Path, name: str | None = None) -> ModelSpec:
    cfg = read_hf_config(model_dir)
    path = Path(model_dir) / "config.json"

    def get(key: str, default: int | None = None) -> int:
        v = cfg.get(key, default)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise UserError(f"{path}: {key} is {v!r}, expected a positive integer")
        return v

    heads = get("num_attention_heads")
    hidden = get("hidden_size")
    experts = get("num_local_experts", 1)  # Mixtral's names for a mixture of experts
    return ModelSpec(
        name=name or model_name(model_dir),
        layers=get("num_hidden_layers"),
        hidden=hidden,
        heads=heads,
        kv_heads=get("num_key_value_heads", heads),
        head_dim=get("head_dim", hidden // heads),
        ffn=get("intermediate_size"),
        vocab=get("vocab_size"),
        max_len=get("max_position_embeddings", 2048),
        dtype_bytes=_DTYPE_BYTES.get(str(cfg.get("dtype") or cfg.get("torch_dtype") or "bfloat16"), 2),
        experts=experts,
        experts_per_token=get("num_experts_per_tok", 2) if experts > 1 else 1,
    )
