"""`llmsched theory`: the optimal tile and the stability bounds of a workload on a set of replicas."""

from __future__ import annotations

import json

import click

from llmsched.commands.options import GPU, MODEL, POSITIVE, POSITIVE_INT, SEED, command_line
from llmsched.errors import UserError
from llmsched.perf import MODELS
from llmsched.studies.metadata import describe
from llmsched.studies.spec import RunSpec, replica_specs, validate
from llmsched.workload import WorkloadConfig

CURVE_POINTS = (16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 4096, 8192)


def _budgets(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--budgets is {text!r}, expected comma-separated token counts") from None
    if not values or min(values) < 1:
        raise UserError(f"--budgets is {text!r}, expected positive token counts")
    return values


def report(spec: RunSpec, budgets: tuple[int, ...], tbt: float | None) -> dict:
    from llmsched.studies.bounds import limits, spec_bound
    from llmsched.studies.spec import perf_model
    from llmsched.theory import memory_cap, throughput

    b = spec_bound(spec, budgets, tbt)
    w = b.workload
    specs = replica_specs(spec)
    tiles = [t.tokens for t in b.tiles]
    first = specs[0]
    perf, cap = perf_model(first), memory_cap(w, limits(first, tbt))
    curve = [
        {"tokens": n, "tokens_per_s": throughput(perf, n, w), "within_memory": n <= cap}
        for n in sorted({*CURVE_POINTS, tiles[0]})
    ]
    return {
        "stability_bound_qps": b.qps,
        "optimal_tile_tokens": tiles[0] if len(set(tiles)) == 1 else tiles,
        "fixed_budget_bound_qps": {str(k): b.fixed_qps(k) for k in budgets},
        "tbt_bound_ms": None if tbt is None else tbt * 1e3,
        "workload": {
            "requests": w.requests,
            "mean_prompt_tokens": w.mean_prompt,
            "mean_decode_tokens": w.mean_decode,
            "work_tokens": w.work,
            "decode_share": w.decode_share,
            "mean_decode_context": w.decode_context,
        },
        "replicas": [
            {
                "gpu": s.gpu,
                "optimal_tile_tokens": t.tokens,
                "batch_time_ms": t.batch_time_s * 1e3,
                "tokens_per_s": t.tokens_per_s,
                "memory_cap_tokens": t.memory_cap,
                "stability_bound_qps": t.qps(w),
            }
            for s, t in zip(specs, b.tiles, strict=True)
        ],
        "throughput_curve": curve,
    }


def format_report(r: dict) -> str:
    w = r["workload"]
    lines = [
        f"workload: {w['requests']} requests, E[P] {w['mean_prompt_tokens']:.1f}, E[D] {w['mean_decode_tokens']:.1f}, "
        f"work E[P+D-1] {w['work_tokens']:.1f} tokens, decode share {w['decode_share']:.3f}",
        f"{'replica':<8}{'gpu':<14}{'tile b*':>9}{'t(b*) ms':>10}{'tok/s':>10}{'mem cap':>9}{'qps':>8}",
    ]
    for i, x in enumerate(r["replicas"]):
        lines.append(
            f"{i:<8}{x['gpu']:<14}{x['optimal_tile_tokens']:>9}{x['batch_time_ms']:>10.1f}{x['tokens_per_s']:>10.0f}"
            f"{x['memory_cap_tokens']:>9.0f}{x['stability_bound_qps']:>8.3f}"
        )
    lines.append(f"stability bound: {r['stability_bound_qps']:.3f} requests/s")
    for k, v in r["fixed_budget_bound_qps"].items():
        lines.append(f"fixed budget {k}: {v:.3f} requests/s ({v / r['stability_bound_qps']:.3f} of the bound)")
    return "\n".join(lines)


@click.command("theory")
@click.option(
    "--model", type=MODEL, default="mistral-7b", show_default=True, help=f"Model: {', '.join(MODELS)}, or a directory."
)
@click.option("--gpu", type=GPU, default="rtx6000ada", show_default=True)
@click.option(
    "--trace", type=click.Path(dir_okay=False), default=None, help="Trace: paper (default), sharegpt-v3 or a CSV file."
)
@click.option("--num-requests", type=POSITIVE_INT, default=None, help="Requests to sample (default: the whole trace).")
@click.option("--seed", type=SEED, default=42, show_default=True)
@click.option("--perf-model", type=click.Path(dir_okay=False), default=None, help="Profile CSV or fitted JSON.")
@click.option(
    "--num-blocks", type=POSITIVE_INT, default=None, help="KV blocks of 16 tokens (default: from GPU memory)."
)
@click.option("--max-num-seqs", type=POSITIVE_INT, default=None, help="Cap on concurrent sequences (default: none).")
@click.option("--replicas", type=str, default=None, help='A count of --gpu ("4") or "rtx6000ada:2,a100-80gb:2".')
@click.option("--tbt", type=POSITIVE, default=None, help="TBT bound (s): t(b*) may not exceed it.")
@click.option("--budgets", type=str, default="512", show_default=True, help="Fixed budgets to bound, e.g. 256,512.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (nothing else on stdout).")
def command(tbt: float | None, budgets: str, as_json: bool, **o: object) -> None:
    """Throughput b/t(b), the optimal tile b* and the stability bound lambda* (see docs/theory.md)."""
    wl = WorkloadConfig(trace=o["trace"], num_requests=o["num_requests"], seed=o["seed"])  # type: ignore[arg-type]
    spec = RunSpec(
        policy="rad",
        workload=wl,
        model=o["model"],  # type: ignore[arg-type]
        gpu=o["gpu"],  # type: ignore[arg-type]
        perf_model=o["perf_model"],  # type: ignore[arg-type]
        num_blocks=o["num_blocks"],  # type: ignore[arg-type]
        max_num_seqs=o["max_num_seqs"],  # type: ignore[arg-type]
        replicas=o["replicas"],  # type: ignore[arg-type]
    )
    validate(spec)
    r = report(spec, _budgets(budgets), tbt)
    if as_json:
        click.echo(json.dumps({**r, "metadata": describe(spec, command_line())}, sort_keys=True))
    else:
        click.echo(format_report(r))
