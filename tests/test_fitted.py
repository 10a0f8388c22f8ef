"""The fitted batch-time model: loading profiles, the fit, the built-in H100 entries and their selection."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmsched.cli import main
from llmsched.errors import UserError
from llmsched.perf import BatchShape, get_model
from llmsched.perf.fitted import (
    BUILTIN,
    builtin_model,
    builtin_rows,
    errors,
    fit,
    fit_shapes,
    fitted_model,
    kfold_errors,
    load_perf_model,
    load_profile,
    read_fit,
    refit_to_steps,
    save_fit,
)
from llmsched.perf.roofline import Roofline
from llmsched.studies.spec import RunSpec, perf_model

HEADER = "model,prefill_tokens,prefill_context,decodes,decode_context,batch_ms_median,batch_ms_min,batch_ms_p90,reps\n"
MISTRAL = builtin_rows("mistral-7b")


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "profile.csv"
    p.write_text(text)
    return p


def shipped_csv() -> str:
    return (resources.files("llmsched.perf") / "data" / "h100_torch_profile.csv").read_text()


# --- loading ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, needle",
    [
        ("m,16,0,0,0,abc,1,1,10\nm,0,0,1,128,7,7,7,10\n", "line 2: batch_ms_median is 'abc'"),
        ("m,16,0,0,0,8,8,8,10\nm,0,0,1,-5,7,7,7,10\n", "line 3: decode_context is '-5'"),
        ("m,16,0,0,0,-8,8,8,10\nm,0,0,1,5,7,7,7,10\n", "line 2: batch_ms_median is '-8'"),
        ("m,16,0,0,0,8,8,8,10\nm,0,0,1,5,0,7,7,10\n", "line 3: batch_ms_median is 0"),
        ("m,16,0,0,0,8,8,8,10\nm,0,0,1.5,5,7,7,7,10\n", "line 3: decodes is '1.5'"),
        ("m,16,0,0,0,8,8,8,10\nm,0,0,1,5,7,7,x,10\n", "line 3: batch_ms_p90 is 'x'"),
        ("m,16,0,0,0,8,8,8,10\nm,0,0,0,0,7,7,7,10\n", "line 3: prefill_tokens and decodes are both 0"),
        ("m,16,0,0,0,8,8,8,10\nm,32,0,0,0,9,9,9,10\n", "no decode rows"),
        ("m,0,0,4,16,8,8,8,10\nm,0,0,8,16,9,9,9,10\n", "no prefill rows"),
    ],
)
def test_bad_profile_is_one_line_error_naming_row_and_field(tmp_path: Path, body: str, needle: str) -> None:
    p = write(tmp_path, HEADER + body)
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace(".", r"\.")) as e:
        load_profile(p)
    assert "\n" not in str(e.value)


def test_missing_column(tmp_path: Path) -> None:
    p = write(tmp_path, "model,prefill_tokens,decodes,decode_context,batch_ms_median\nm,1,0,0,1\n")
    with pytest.raises(UserError, match="missing column 'prefill_context'"):
        load_profile(p)


def test_cli_bad_profile_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    p = write(tmp_path, HEADER + "mistral-7b,16,0,0,0,8,8,8,10\nmistral-7b,0,0,1,128,oops,7,7,10\n")
    with pytest.raises(SystemExit) as e:
        main(["perf", "--decodes", "4", "--perf-model", str(p)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "line 3: batch_ms_median is 'oops'" in err


def test_rows_of_another_model_only(tmp_path: Path) -> None:
    p = write(tmp_path, shipped_csv())
    with pytest.raises(UserError, match="no rows for model 'gpt'"):
        load_profile(p, "gpt")
    assert len(load_profile(p, "llama-3-8b")) == len(builtin_rows("llama-3-8b")) == 67


# --- the fit ---------------------------------------------------------------------------------------------


def test_same_profile_same_fit() -> None:
    spec = get_model("mistral-7b")
    assert fit(MISTRAL, spec) == fit(list(MISTRAL), spec)


def test_fit_is_within_3pct_held_out_on_the_h100_rows() -> None:
    for name in ("mistral-7b", "llama-3-8b"):
        rows = builtin_rows(name)
        e = kfold_errors(rows, get_model(name), 5)
        assert np.abs(e).mean() < 0.03, name
        assert np.abs(e).max() < 0.08, name


def test_fit_beats_the_roofline_form() -> None:
    """The roofline's form fitted to the same rows (3 parameters: one bandwidth for weights and KV) is worse than
    the kernel-wise form."""
    from scipy.optimize import least_squares

    spec = get_model("mistral-7b")
    measured = np.array([r.batch_ms / 1e3 for r in MISTRAL])

    def res(x: np.ndarray) -> np.ndarray:
        m = Roofline("r", spec, np.exp(x[0]), np.exp(x[1]), x[2], np.exp(x[1]))
        return np.array([m.batch_time(r.shape) for r in MISTRAL]) / measured - 1

    roofline_mape = np.abs(res(least_squares(res, [np.log(3e14), np.log(1e12), 1e-3]).x)).mean()
    ours = np.abs(errors(fitted_model(fit(MISTRAL, spec)), MISTRAL)).mean()
    assert ours < roofline_mape / 2


def _engine_steps(truth, n: int, sigma: float, seed: int) -> list[tuple[float, BatchShape]]:
    """Steps an engine could log (several chunks, decodes at mixed contexts), timed as `truth` x noise of mean 1."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(n):
        chunks = [(int(rng.integers(16, 256)), int(rng.integers(0, 1024))) for _ in range(int(rng.integers(0, 3)))]
        decodes = [int(c) for c in rng.integers(64, 2048, size=int(rng.integers(0 if chunks else 1, 48)))]
        shape = BatchShape.of(chunks, decodes)
        steps.append((truth.batch_time(shape) * float(rng.lognormal(-(sigma**2) / 2, sigma)), shape))
    return steps


def test_refit_to_steps_learns_the_engines_shape_and_mean_from_noisy_steps() -> None:
    """A profile off by shape (the engine pays more per sequence and per decode context than the profiler saw):
    refitted to the engine's noisy steps, it predicts held-out batches near the truth, and each step's mean."""
    spec = get_model("mistral-7b")
    profiled = fit(MISTRAL, spec)
    truth = fitted_model(replace(profiled, per_seq_s=profiled.per_seq_s + 2e-4, decode_tau_s=2 * profiled.decode_tau_s))
    steps = _engine_steps(truth, 600, sigma=0.3, seed=1)
    before, after = fitted_model(profiled), refit_to_steps(fitted_model(profiled), steps, "engine")
    held = [s for _, s in _engine_steps(truth, 200, sigma=0.0, seed=2)]
    miss = {m.name: np.abs(m.batch_times(held) / truth.batch_times(held) - 1).mean() for m in (before, after)}
    assert miss[after.name] < 0.03 < miss[before.name]
    ratios = [t / after.batch_time(s) for t, s in steps]
    assert abs(np.mean(ratios) - 1) < 0.02
    with pytest.raises(ValueError, match="at least one"):
        refit_to_steps(before, [], "engine")


def test_relative_residuals_fit_noisy_steps_low() -> None:
    """Why the refit weighs residuals by a fixed scale: relative to the measured times, a fit of noisy steps comes
    out below their mean (the noise's variance, ~9% at sigma 0.3), so a simulated engine would run too fast."""
    spec = get_model("mistral-7b")
    truth = fitted_model(fit(MISTRAL, spec))
    steps = _engine_steps(truth, 600, sigma=0.3, seed=1)
    low = fitted_model(fit_shapes([s for _, s in steps], [t for t, _ in steps], spec, start=truth.params))
    assert np.mean([t / low.batch_time(s) for t, s in steps]) > 1.05


def test_mixed_term_stays_zero_without_mixed_rows() -> None:
    assert fit(MISTRAL, get_model("mistral-7b")).mixed_s < 1e-9


def test_mixed_term_is_learned_from_mixed_rows() -> None:
    """Rows made from a known model with a mixed-batch cost: the fit recovers it."""
    spec = get_model("mistral-7b")
    truth = replace(fit(MISTRAL, spec), mixed_s=1e-3)
    model = fitted_model(truth)
    shapes = [(p, 0, d, c) for p in (128, 512) for d in (16, 64) for c in (512, 2048)]
    from llmsched.perf.fitted import ProfileRow

    mixed = [ProfileRow("mistral-7b", p, pc, d, c, 0.0) for p, pc, d, c in shapes]
    mixed = [replace(r, batch_ms=1e3 * model.batch_time(r.shape)) for r in mixed]
    pure = [replace(r, batch_ms=1e3 * model.batch_time(r.shape)) for r in MISTRAL]
    got = fit(pure + mixed, spec)
    assert got.mixed_s == pytest.approx(1e-3, rel=0.05)


settings_ = settings(max_examples=60, deadline=None)
MODEL = builtin_model("mistral-7b", "h100-80gb")


@settings_
@given(
    p=st.integers(0, 4096),
    pc=st.integers(0, 8192),
    d=st.integers(0, 256),
    dc=st.integers(0, 4096),
    which=st.sampled_from(["p", "pc", "d", "dc"]),
    step=st.integers(1, 512),
)
def test_monotone_in_tokens_decodes_and_context(p: int, pc: int, d: int, dc: int, which: str, step: int) -> None:
    def t(p: int, pc: int, d: int, dc: int) -> float:
        return MODEL.batch_time(BatchShape.of([(p, pc)] if p else [], [dc] * d))

    base = t(p, pc, d, dc)
    bigger = {"p": (p + step, pc, d, dc), "pc": (p, pc + step, d, dc), "d": (p, pc, d + step, dc)}
    bigger["dc"] = (p, pc, d, dc + step)
    assert t(*bigger[which]) >= base * (1 - 1e-12)


# --- built-in entries and their selection ----------------------------------------------------------------


def test_builtin_entries_are_the_fit_of_the_shipped_rows() -> None:
    for (name, gpu), _ in BUILTIN.items():
        rows = builtin_rows(name)
        shipped = builtin_model(name, gpu)
        refit = fitted_model(fit(rows, get_model(name)))
        a, b = shipped.batch_times([r.shape for r in rows]), refit.batch_times([r.shape for r in rows])
        assert np.allclose(a, b, rtol=1e-3), name
        assert np.abs(errors(shipped, rows)).mean() < 0.015, name


def test_perf_model_selection() -> None:
    assert "built-in" in perf_model(RunSpec(model="mistral-7b", gpu="h100-80gb")).name
    assert "built-in" in perf_model(RunSpec(model="llama-3-8b", gpu="h100-80gb")).name
    assert perf_model(RunSpec(model="mistral-7b", gpu="a100-80gb")).name.startswith("roofline")
    # the paper's GPU keeps its calibrated roofline
    assert perf_model(RunSpec(model="mistral-7b", gpu="rtx6000ada")).name.startswith("roofline")


def test_perf_command_names_the_model(capsys: pytest.CaptureFixture) -> None:
    main(["perf", "--gpu", "h100-80gb", "--decodes", "32", "--context", "1024", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert "built-in" in out["perf_model"]
    assert out["batch_time_ms"] == pytest.approx(9.4166, rel=0.03)  # the measured row


def test_perf_model_file_overrides_builtin(tmp_path: Path) -> None:
    rows = [replace(r, batch_ms=2 * r.batch_ms) for r in MISTRAL]
    p = tmp_path / "slow.csv"
    p.write_text(
        HEADER
        + "".join(
            f"{r.model},{r.prefill_tokens},{r.prefill_context},{r.decodes},{r.decode_context},"
            f"{r.batch_ms},{r.batch_ms},{r.batch_ms},10\n"
            for r in rows
        )
    )
    spec = RunSpec(model="mistral-7b", gpu="h100-80gb", perf_model=str(p))
    shape = BatchShape.of([(512, 0)], [1024] * 16)
    slow, builtin = perf_model(spec).batch_time(shape), perf_model(replace(spec, perf_model=None)).batch_time(shape)
    assert slow == pytest.approx(2 * builtin, rel=0.03)


def test_fit_json_round_trip(tmp_path: Path) -> None:
    params = fit(MISTRAL, get_model("mistral-7b"), source="x.csv")
    path = tmp_path / "fit.json"
    save_fit(params, path)
    assert read_fit(path) == params
    assert load_perf_model(path, "mistral-7b").params == params
    with pytest.raises(UserError, match="fitted for model 'mistral-7b', not 'llama-3-8b'"):
        load_perf_model(path, "llama-3-8b")
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "kv_bw": -1}))
    with pytest.raises(UserError, match="kv_bw is -1, expected a positive number"):
        read_fit(path)
    path.write_text("{")
    with pytest.raises(UserError, match="not a fitted-model JSON"):
        read_fit(path)


@settings_
@given(
    chunks=st.lists(st.tuples(st.integers(1, 2048), st.integers(0, 8192)), max_size=3),
    decodes=st.lists(st.integers(0, 4096), max_size=40),
    mixed=st.floats(0, 1e-3),
)
def test_scalar_and_array_paths_agree(chunks: list, decodes: list, mixed: float) -> None:
    model = fitted_model(replace(MODEL.params, mixed_s=mixed))
    shape = BatchShape.of(chunks, decodes)
    if shape.tokens:
        assert model.batch_time(shape) == pytest.approx(float(model.batch_times([shape])[0]), rel=1e-12)
