"""`llmsched perf`: one batch's time on a model and GPU (what-if)."""

from __future__ import annotations

import json

import click

from llmsched.commands.options import GPU, MODEL, NON_NEGATIVE_INT
from llmsched.errors import UserError


@click.command(name="perf")
@click.option("--model", type=MODEL, default="mistral-7b", show_default=True)
@click.option("--gpu", type=GPU, default="rtx6000ada", show_default=True)
@click.option(
    "--prefill-tokens", type=NON_NEGATIVE_INT, default=0, show_default=True, help="Tokens of the prefill chunk."
)
@click.option("--decodes", type=NON_NEGATIVE_INT, default=0, show_default=True, help="Decode sequences in the batch.")
@click.option(
    "--context", type=NON_NEGATIVE_INT, default=None, help="Tokens already cached, for the chunk and each decode."
)
@click.option("--prefill-context", type=NON_NEGATIVE_INT, default=None, help="Tokens already cached for the chunk.")
@click.option("--decode-context", type=NON_NEGATIVE_INT, default=None, help="Tokens already cached for each decode.")
@click.option(
    "--perf-model",
    type=click.Path(dir_okay=False),
    default=None,
    help="A profile CSV or fitted-model JSON instead of the catalog's model.",
)
@click.option("--json", "as_json", is_flag=True)
def command(
    model: str,
    gpu: str,
    perf_model: str | None,
    prefill_tokens: int,
    decodes: int,
    context: int | None,
    prefill_context: int | None,
    decode_context: int | None,
    as_json: bool,
) -> None:
    """Batch time of one batch: a prefill chunk of N tokens plus D decodes."""
    from llmsched.perf import BatchShape, get_model

    pc = prefill_context if prefill_context is not None else (context or 0)
    dc = decode_context if decode_context is not None else (context or 0)
    if prefill_tokens + decodes == 0:
        raise UserError("--prefill-tokens and --decodes are both 0: the batch is empty")
    from llmsched.studies.spec import RunSpec
    from llmsched.studies.spec import perf_model as model_of

    spec = get_model(model)
    if prefill_tokens and pc + prefill_tokens > spec.max_len:
        raise UserError(
            f"--prefill-tokens {prefill_tokens} at context {pc} reach token {pc + prefill_tokens}, beyond "
            f"{spec.name}'s {spec.max_len}-token context"
        )
    if decodes and dc + 1 > spec.max_len:
        raise UserError(f"--decode-context {dc}: a decode there is beyond {spec.name}'s {spec.max_len}-token context")
    m = model_of(RunSpec(model=model, gpu=gpu, perf_model=perf_model))
    shape = BatchShape.of([(prefill_tokens, pc)] if prefill_tokens else [], [dc] * decodes)
    ms = m.batch_time(shape) * 1e3
    if as_json:
        click.echo(
            json.dumps(
                {
                    "batch_time_ms": ms,
                    "model": model,
                    "gpu": gpu,
                    "perf_model": m.name,
                    "prefill_tokens": prefill_tokens,
                    "prefill_context": pc,
                    "decodes": decodes,
                    "decode_context": dc,
                }
            )
        )
    else:
        click.echo(f"{ms:.3f} ms  ({m.name}; chunk {prefill_tokens} at context {pc}, {decodes} decodes at {dc})")
