"""`llmsched profile`: the torch profiler on CPU with a tiny shape, its grid, and its errors."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmsched.cli import main
from llmsched.perf.catalog import MODELS
from llmsched.perf.fitted import FAMILIES, OPTIONAL_COLUMNS, PROFILE_COLUMNS, builtin_rows, load_profile
from llmsched.perf.profile_torch import grid
from llmsched.perf.specs import ModelSpec

TINY = ModelSpec("tiny", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256, max_len=512)


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> ModelSpec:
    monkeypatch.setitem(MODELS, "tiny", TINY)
    return TINY


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny CPU ops spend their time waiting on the intra-op pool when other processes load the cores."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_grid_order_covers_every_family_first() -> None:
    from llmsched.perf.fitted import ProfileRow

    for name in ("default", "quick"):
        shapes = grid(name)
        fams = [
            ProfileRow("m", s.prefill_tokens, s.prefill_context, s.decodes, s.decode_context, 1).family for s in shapes
        ]
        assert set(fams[:4]) == set(FAMILIES)
        assert len(set(shapes)) == len(shapes)


def test_default_grid_holds_the_shared_files_shapes() -> None:
    shapes = {(s.prefill_tokens, s.prefill_context, s.decodes, s.decode_context) for s in grid("default")}
    shared = {(r.prefill_tokens, r.prefill_context, r.decodes, r.decode_context) for r in builtin_rows("mistral-7b")}
    assert shared <= shapes
    assert any(s.prefill_tokens and s.decodes for s in grid("default"))


def test_unknown_grid(tiny: ModelSpec, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert (
        run(["profile", "--model", "tiny", "--device", "cpu", "--grid", "huge", "--out", str(tmp_path / "p.csv")]) == 2
    )
    assert "Invalid value for '--grid': 'huge'" in capsys.readouterr().err


def test_cpu_profile_writes_a_csv_that_perf_model_loads(
    tiny: ModelSpec, one_thread: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out, fit_out = tmp_path / "tiny.csv", tmp_path / "tiny.json"
    argv = ["profile", "--backend", "torch", "--model", "tiny", "--device", "cpu", "--grid", "quick"]
    argv += ["--reps", "2", "--warmup", "1", "--out", str(out), "--fit-out", str(fit_out)]
    assert run(argv) == 0
    printed = capsys.readouterr()
    assert f"wrote {out}" in printed.out and "fit, in sample:" in printed.out
    assert "profile tiny on cpu" in printed.err  # the progress bar, on stderr
    with open(out, newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == (*PROFILE_COLUMNS, *OPTIONAL_COLUMNS)
        recs = list(reader)
    assert len(recs) == len(grid("quick"))
    for r in recs:
        assert r["model"] == "tiny" and int(r["reps"]) == 2
        assert 0 < float(r["batch_ms_min"]) <= float(r["batch_ms_median"]) <= float(r["batch_ms_p90"])
    assert {r.family for r in load_profile(out)} == set(FAMILIES)
    for model_file in (out, fit_out):
        assert run(["perf", "--model", "tiny", "--perf-model", str(model_file), "--decodes", "3", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
        assert got["batch_time_ms"] > 0 and got["perf_model"].startswith("fitted:tiny")


def test_budget_too_small_writes_nothing(tiny: ModelSpec, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("torch")
    out = tmp_path / "p.csv"
    argv = ["profile", "--model", "tiny", "--device", "cpu", "--grid", "quick", "--budget-s", "1e-9", "--out", str(out)]
    assert run(argv) == 2
    assert "no shape was measured" in capsys.readouterr().err
    assert not out.exists()


def test_without_torch_says_how_to_install(
    tiny: ModelSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch raises ImportError
    assert run(["profile", "--model", "tiny", "--device", "cpu", "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install 'llmsched[profile]'" in err


def test_vllm_backend_missing_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "llmsched.integrations.vllm.profiler", None)
    cfg = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert run(["profile", "--backend", "vllm", "--model", str(tmp_path), "--out", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--backend vllm" in err


def test_refit_writes_the_fitted_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from importlib import resources

    src = tmp_path / "h100.csv"
    src.write_text((resources.files("llmsched.perf") / "data" / "h100_torch_profile.csv").read_text())
    fit_out = tmp_path / "fit.json"
    assert run(["profile", "--refit", str(src), "--model", "mistral-7b", "--fit-out", str(fit_out)]) == 0
    out = capsys.readouterr().out
    assert "fit, 5-fold:" in out and "decode" in out
    args = ["perf", "--gpu", "h100-80gb", "--prefill-tokens", "512", "--decodes", "16", "--json"]
    assert run([*args, "--perf-model", str(fit_out)]) == 0
    from_json = json.loads(capsys.readouterr().out)["batch_time_ms"]
    assert run(args) == 0
    builtin = json.loads(capsys.readouterr().out)["batch_time_ms"]
    assert from_json == pytest.approx(builtin, rel=1e-3)
    assert run(["profile", "--refit", str(src)]) == 2
    assert "name one with --model" in capsys.readouterr().err


def test_refit_a_vllm_profile_names_its_model_directory(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`llmsched profile --backend vllm` names its rows after the model directory; `--refit` finds them from
    that directory, and without it says what to pass. `--steps-out` is only for measuring on vLLM."""
    model = tmp_path / "Refit-LM"
    model.mkdir()
    cfg = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}  # fmt: skip
    (model / "config.json").write_text(json.dumps(cfg))
    profile = tmp_path / "p.csv"
    rows = [(p, cp, d, dc, 20 + p * 0.1 + d * (0.5 + dc / 2000)) for p in (0, 64, 256) for cp in (0, 512)
            for d in (0, 8, 32) for dc in (256, 1024) if p or d]  # fmt: skip
    profile.write_text("model,prefill_tokens,prefill_context,decodes,decode_context,batch_ms_median\n"
                       + "".join(f"refit-lm,{p},{cp},{d},{dc},{t:.3f}\n" for p, cp, d, dc, t in rows))  # fmt: skip
    assert run(["profile", "--refit", str(profile)]) == 2  # before --model DIR makes the name known here
    assert "give its directory with --model" in capsys.readouterr().err
    fit_out = tmp_path / "fit.json"
    assert run(["profile", "--refit", str(profile), "--model", str(model), "--fit-out", str(fit_out)]) == 0
    assert "fit, 5-fold:" in capsys.readouterr().out and json.loads(fit_out.read_text())["model"] == "refit-lm"
    assert run(["profile", "--refit", str(profile), "--model", str(model), "--steps-out", str(tmp_path / "s")]) == 2
    assert "--steps-out applies only when measuring, not with --refit" in capsys.readouterr().err
