"""`llmsched profile` does not start what cannot finish: a model whose weights do not fit in free memory is refused
before anything is allocated, shapes that would not fit are skipped and said so; and a fit that describes its rows
poorly is written with a warning, not silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmsched.cli import main
from llmsched.perf import profile_memory
from llmsched.perf.catalog import MODELS
from llmsched.perf.profile_memory import needed_bytes, shape_bytes, weight_bytes
from llmsched.perf.profile_torch import grid
from llmsched.perf.specs import ModelSpec

TINY = ModelSpec("tiny", layers=2, hidden=64, heads=4, kv_heads=2, head_dim=16, ffn=128, vocab=256, max_len=512)


def run(argv: list[str]) -> int:
    try:
        main(argv)
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_weight_estimate_is_the_random_models_tensors() -> None:
    torch = pytest.importorskip("torch")
    from llmsched.perf.profile_torch import RandomModel

    m = RandomModel(TINY, "cpu", torch.float32)
    tensors = [m.embed, m.norm, m.lm_head, *(t for layer in m.layers for t in layer.values())]
    assert sum(t.numel() * t.element_size() for t in tensors) == weight_bytes(TINY, 4)


def test_a_model_larger_than_free_memory_is_refused_before_allocating(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(profile_memory, "available_bytes", lambda device, torch: (16 * 10**9, "MemAvailable"))
    argv = ["profile", "--model", "mistral-7b", "--device", "cpu", "--grid", "quick", "--out", str(tmp_path / "p.csv")]
    assert run(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "mistral-7b needs about 32.4 GB on cpu (29.0 GB of float32 weights), 16.0 GB available" in err
    assert not (tmp_path / "p.csv").exists()


def test_shapes_beyond_free_memory_are_skipped_and_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setitem(MODELS, "tiny", TINY)
    shapes = grid("quick")
    sizes = sorted(
        shape_bytes(TINY, s.prefill_tokens, s.prefill_context, s.decodes, s.decode_context, 4) for s in shapes
    )
    free = needed_bytes(weight_bytes(TINY, 4), sizes[-3])  # the two largest shapes do not fit
    monkeypatch.setattr(profile_memory, "available_bytes", lambda device, torch: (free, "MemAvailable"))
    argv = ["profile", "--model", "tiny", "--device", "cpu", "--grid", "quick", "--reps", "1", "--warmup", "0"]
    assert run([*argv, "--out", str(tmp_path / "p.csv")]) == 0
    out = capsys.readouterr().out
    skipped = [line for line in out.splitlines() if line.startswith("skipped")]
    assert len(skipped) == 2 and all("available (MemAvailable)" in line for line in skipped)
    assert f"{len(shapes) - 2} shapes" in out


def write_profile(path: Path, rows: list[tuple[int, int, int, int, float]]) -> None:
    path.write_text(
        "model,prefill_tokens,prefill_context,decodes,decode_context,batch_ms_median\n"
        + "".join(f"mistral-7b,{p},{pc},{d},{dc},{ms}\n" for p, pc, d, dc, ms in rows)
    )


def test_a_poor_fit_is_written_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Four rows whose times bear no relation to their sizes (noise, or a machine busy with something else)."""
    profile, fit_out = tmp_path / "p.csv", tmp_path / "f.json"
    write_profile(profile, [(512, 0, 0, 0, 9.0), (64, 0, 0, 0, 40.0), (0, 0, 64, 1024, 5.0), (0, 0, 8, 128, 30.0)])
    assert run(["profile", "--refit", str(profile), "--fit-out", str(fit_out)]) == 0
    err = capsys.readouterr().err
    assert "warning: 4 measured shapes for a model of 11 parameters" in err
    assert "warning: the fit's mean error (in sample) is" in err and "above 10%" in err
    assert fit_out.exists()


def test_a_good_fit_has_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from importlib import resources

    profile = tmp_path / "h100.csv"
    profile.write_text((resources.files("llmsched.perf") / "data" / "h100_torch_profile.csv").read_text())
    assert run(["profile", "--refit", str(profile), "--model", "mistral-7b"]) == 0
    assert "warning" not in capsys.readouterr().err
