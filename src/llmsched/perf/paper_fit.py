"""Calibrate the roofline's efficiency factors on measurements. The paper's: a 2048-token prompt prefilled in
chunks of b tokens on Mistral-7B / RTX 6000 Ada; the mean batch time over the prompt's chunks is compared per b
(each chunk reads the KV of the prompt's earlier chunks). llmsched's H100 profile: every shipped row of both
models, batch by batch (`fit_h100`); these factors carry to the GPUs that have only a spec sheet."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

import numpy as np

from llmsched.perf.base import BatchShape
from llmsched.perf.catalog import GPUS, MODELS
from llmsched.perf.roofline import Roofline, analytic_model

PROMPT = 2048


@dataclass(frozen=True)
class ChunkPoint:
    chunk: int
    batch_ms: float


def paper_points() -> list[ChunkPoint]:
    text = (resources.files("llmsched.perf") / "data" / "paper_chunk_sweep.csv").read_text()
    return [ChunkPoint(int(r["chunk"]), float(r["batch_ms"])) for r in csv.DictReader(text.splitlines())]


def chunk_sweep_ms(model: Roofline, chunk: int, prompt: int = PROMPT) -> float:
    """Mean batch time (ms) of prefilling `prompt` tokens in chunks of `chunk` (the last may be short)."""
    times, ctx = [], 0
    while ctx < prompt:
        c = min(chunk, prompt - ctx)
        times.append(model.batch_time(BatchShape.of([(c, ctx)], [])))
        ctx += c
    return 1e3 * float(np.mean(times))


def mape(model: Roofline, points: list[ChunkPoint] | None = None) -> float:
    points = points or paper_points()
    return float(np.mean([abs(chunk_sweep_ms(model, p.chunk) - p.batch_ms) / p.batch_ms for p in points]))


def fit_paper_gpu() -> tuple[float, float, float]:
    """(flops_eff, bw_eff, overhead_s) minimising relative error, with KV reads at `KV_BW_EFF` of the bandwidth;
    bw_eff is capped at 1."""
    from scipy.optimize import least_squares

    points = paper_points()
    m, g = MODELS["mistral-7b"], GPUS["rtx6000ada"]

    def residuals(x: np.ndarray) -> list[float]:
        model = analytic_model(m, g, x[0], x[1], x[2] * 1e-3)
        return [(chunk_sweep_ms(model, p.chunk) - p.batch_ms) / p.batch_ms for p in points]

    fit = least_squares(residuals, [0.6, 0.8, 3.0], bounds=([0.05, 0.05, 0.0], [1.0, 1.0, 30.0]))
    return float(fit.x[0]), float(fit.x[1]), float(fit.x[2] * 1e-3)


def fit_h100() -> tuple[float, float, float, float]:
    """(flops_eff, bw_eff, overhead_s, kv_bw_eff) minimising the relative error over the shipped H100 profile's rows
    (Mistral-7B and Llama-3-8B), each factor capped at 1."""
    from scipy.optimize import least_squares

    from llmsched.perf.fitted import builtin_rows

    gpu = GPUS["h100-80gb"]
    rows = [(MODELS[m], r.shape, r.batch_ms / 1e3) for m in ("mistral-7b", "llama-3-8b") for r in builtin_rows(m)]

    def residuals(x: np.ndarray) -> list[float]:
        models = {m.name: analytic_model(m, gpu, x[0], x[1], x[2] * 1e-3, x[3]) for m, _, _ in rows[:1] + rows[-1:]}
        return [models[m.name].batch_time(s) / t - 1 for m, s, t in rows]

    fit = least_squares(residuals, [0.6, 0.8, 3.0, 0.8], bounds=([0.05, 0.05, 0.0, 0.05], [1.0, 1.0, 30.0, 1.0]))
    return float(fit.x[0]), float(fit.x[1]), float(fit.x[2] * 1e-3), float(fit.x[3])
