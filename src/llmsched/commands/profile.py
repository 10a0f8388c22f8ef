"""`llmsched profile`: measure this machine's batch times for a model's shape, or fit a measured profile."""

from __future__ import annotations

from pathlib import Path

import click

from llmsched.commands.options import MODEL, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, only_with, writable_file
from llmsched.errors import UserError


def _report(csv_path: Path, model: str, fit_out: str | None) -> None:
    """Fit the profile and print the fit's error per row family, in sample and held out (5-fold)."""
    from llmsched.perf import get_model
    from llmsched.perf.fitted import (
        errors,
        family_report,
        fit,
        fitted_model,
        format_report,
        kfold_errors,
        load_profile,
        save_fit,
    )

    spec = get_model(model)  # a catalog name, or a model directory whose profile rows carry its name
    rows = load_profile(csv_path, spec.name)
    params = fit(rows, spec, source=csv_path.name)
    in_sample = family_report(rows, errors(fitted_model(params), rows))
    click.echo("fit, in sample: " + format_report(in_sample))
    held_out = family_report(rows, kfold_errors(rows, spec, 5)) if len(rows) >= 10 else None
    if held_out:
        click.echo("fit, 5-fold:    " + format_report(held_out))
    _warn_if_poor(len(rows), (held_out or in_sample)["all"], "5-fold" if held_out else "in sample")
    if fit_out:
        save_fit(params, fit_out)
        click.echo(f"wrote fitted model {fit_out} (use it with --perf-model)")


# A fitted model whose mean error is above this describes the measured batch times too loosely to forecast with.
POOR_FIT_PCT = 10.0


def _warn_if_poor(rows: int, overall: dict[str, float], kind: str) -> None:
    """On stderr: a fit from fewer rows than its free parameters, or with a mean error above POOR_FIT_PCT."""
    from llmsched.perf.fitted import free_parameters

    if rows < free_parameters():
        click.echo(
            f"warning: {rows} measured shapes for a model of {free_parameters()} parameters: the fit is "
            "underdetermined; measure more (--grid default, a longer --budget-s)",
            err=True,
        )
    if overall["mape_pct"] > POOR_FIT_PCT:
        click.echo(
            f"warning: the fit's mean error ({kind}) is {overall['mape_pct']:.1f}% (max {overall['max_pct']:.1f}%), "
            f"above {POOR_FIT_PCT:g}%: its batch times are unreliable; measure more shapes on an idle machine",
            err=True,
        )


@click.command("profile")
@click.option("--backend", type=click.Choice(["torch", "vllm"]), default="torch", show_default=True)
@click.option(
    "--model",
    type=MODEL,
    default=None,
    help="torch: a catalog model or model directory (its shape, random weights); vllm: a model directory.",
)
@click.option("--device", type=click.Choice(["cuda", "cpu"]), default=None, help="torch: default cuda if present.")
@click.option(
    "--out", type=click.Path(dir_okay=False), default=None, callback=writable_file, help="Profile CSV to write."
)
@click.option(
    "--budget-s", type=POSITIVE, default=None, help="Stop after this many seconds, keeping what was measured."
)
@click.option(
    "--grid", "grid_name", type=click.Choice(["default", "quick"]), default="default", show_default=True, help="torch."
)
@click.option("--warmup", type=NON_NEGATIVE_INT, default=3, show_default=True, help="torch: untimed replays per shape.")
@click.option("--reps", type=POSITIVE_INT, default=10, show_default=True, help="torch: timed replays per shape.")
@click.option(
    "--steps-out",
    type=click.Path(dir_okay=False),
    default=None,
    callback=writable_file,
    help="vllm: also write every timed step (BatchShape fields, step_ms) in measured order to this CSV.",
)
@click.option(
    "--fit-out",
    type=click.Path(dir_okay=False),
    default=None,
    callback=writable_file,
    help="Also write the fitted model (JSON).",
)
@click.option(
    "--refit",
    type=click.Path(dir_okay=False),
    default=None,
    help="Measure nothing: fit this profile CSV, print the fit's error, write --fit-out.",
)
def command(
    backend: str,
    model: str | None,
    device: str | None,
    out: str | None,
    budget_s: float | None,
    grid_name: str,
    warmup: int,
    reps: int,
    steps_out: str | None,
    fit_out: str | None,
    refit: str | None,
) -> None:
    """Measure batch times on this machine (prefill, decode and mixed batches) and fit a batch-time model.

    The CSV goes to --perf-model of simulate, perf and capacity.
    """
    for flag in ("--out", "--budget-s", "--device", "--grid", "--warmup", "--reps", "--steps-out"):
        only_with(flag, not refit, "when measuring, not with --refit")
    for flag in ("--device", "--grid", "--warmup", "--reps"):
        only_with(flag, backend == "torch", "with --backend torch")
    only_with("--steps-out", backend == "vllm", "with --backend vllm (the torch profiler times replays, not steps)")
    if refit:
        from llmsched.perf.fitted import load_profile

        names = sorted({r.model for r in load_profile(refit)})
        if model is None and len(names) > 1:
            raise UserError(f"{refit}: rows of {', '.join(names)}; name one with --model")
        from llmsched.perf.catalog import MODELS

        if model is None and names[0] not in MODELS:
            raise UserError(f"{refit}: a profile of {names[0]!r}, not a catalog model; give its directory with --model")
        _report(Path(refit), model or names[0], fit_out)
        return
    if model is None:
        raise UserError("--model is missing: a catalog model (torch) or a model directory (vllm)")
    if backend == "vllm":
        _vllm(model, out, budget_s, steps_out)
        return

    from llmsched.perf import get_model
    from llmsched.perf.profile_torch import run_profile

    spec = get_model(model)
    path = Path(out or writable_file(click.get_current_context(), None, f"profile_{model}.csv"))
    result = run_profile(spec, path, device, grid_name, budget_s, warmup, reps)
    click.echo(
        f"wrote {path}: {len(result.timings)} shapes in {result.total_s:.1f} s "
        f"(model set-up {result.setup_s:.1f} s; attention: {result.attention})"
    )
    if result.stopped_at_budget:
        click.echo(f"budget of {budget_s} s reached: {result.stopped_at_budget} shapes not measured")
    for shape, why in result.skipped:
        click.echo(f"skipped {shape}: {why}")
    _report(path, model, fit_out)


def _vllm(model_dir: str, out: str | None, budget_s: float | None, steps_out: str | None) -> None:
    try:
        from llmsched.integrations.vllm.profiler import run_profile
    except ImportError as e:
        raise UserError(f"--backend vllm: cannot import llmsched.integrations.vllm.profiler ({e})") from None
    path = out or writable_file(click.get_current_context(), None, "profile_vllm.csv")
    run_profile(model_dir, path, budget_s, steps_out)
    click.echo(f"wrote {path}" + (f" and {steps_out}" if steps_out else ""))
