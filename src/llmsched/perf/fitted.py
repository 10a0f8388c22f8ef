"""A batch-time model fitted to measured rows (batch composition -> milliseconds).

Profile CSV columns (the shared H100 file's): model, prefill_tokens, prefill_context, decodes,
decode_context, batch_ms_median[, batch_ms_min, batch_ms_p90, reps]. Each row is one batch: a chunk of
`prefill_tokens` whose sequence holds `prefill_context` cached tokens, plus `decodes` sequences of
`decode_context` cached tokens each. The fit keeps the roofline's form (FLOPs and bytes from the model's
shape) and fits its rates and overhead, so it extrapolates to batches the profile did not measure.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from llmsched.errors import UserError
from llmsched.perf.base import BatchShape
from llmsched.perf.catalog import ModelSpec, get_model
from llmsched.perf.roofline import Roofline

PROFILE_COLUMNS = ("model", "prefill_tokens", "prefill_context", "decodes", "decode_context", "batch_ms_median")


@dataclass(frozen=True)
class ProfileRow:
    model: str
    prefill_tokens: int
    prefill_context: int
    decodes: int
    decode_context: int
    batch_ms: float

    @property
    def shape(self) -> BatchShape:
        chunks = [(self.prefill_tokens, self.prefill_context)] if self.prefill_tokens else []
        return BatchShape.of(chunks, [self.decode_context] * self.decodes)


def load_profile(path: str | Path, model: str | None = None) -> list[ProfileRow]:
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [c for c in PROFILE_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise UserError(f"{path}: missing column {missing[0]!r}")
            rows = [_profile_row(path, i + 2, rec) for i, rec in enumerate(reader)]
    except OSError as e:
        raise UserError(f"{path}: cannot read profile ({e.strerror or e})") from None
    if model is not None:
        rows = [r for r in rows if r.model == model]
    if not rows:
        raise UserError(f"{path}: no rows" + (f" for model {model!r}" if model else ""))
    if not any(r.decodes for r in rows):
        raise UserError(f"{path}: no decode rows (decodes > 0); a fit needs them")
    return rows


def _profile_row(path: Path, line: int, rec: dict) -> ProfileRow:
    def num(col: str, integer: bool) -> float:
        text = (rec.get(col) or "").strip()
        try:
            v = float(text)
        except ValueError:
            raise UserError(f"{path}: line {line}: {col} is {text!r}, expected a number") from None
        if not math.isfinite(v) or v < 0 or (integer and not v.is_integer()):
            raise UserError(
                f"{path}: line {line}: {col} is {text!r}, expected a non-negative "
                + ("integer" if integer else "number")
            )
        return v

    row = ProfileRow(
        (rec.get("model") or "").strip(),
        int(num("prefill_tokens", True)),
        int(num("prefill_context", True)),
        int(num("decodes", True)),
        int(num("decode_context", True)),
        num("batch_ms_median", False),
    )
    if row.batch_ms <= 0 or row.prefill_tokens + row.decodes == 0:
        raise UserError(f"{path}: line {line}: an empty batch or a non-positive batch_ms_median")
    return row


@dataclass(frozen=True)
class FitParams:
    model: str
    flops_rate: float
    bytes_rate: float
    overhead_s: float
    source: str = ""


def fit(rows: list[ProfileRow], spec: ModelSpec, source: str = "") -> FitParams:
    """Least squares on relative error over (log flops_rate, log bytes_rate, overhead)."""
    from scipy.optimize import least_squares

    shapes = [r.shape for r in rows]
    measured = np.array([r.batch_ms / 1e3 for r in rows])

    def model_of(x: np.ndarray) -> Roofline:
        return Roofline("fit", spec, math.exp(x[0]), math.exp(x[1]), x[2])

    def residuals(x: np.ndarray) -> np.ndarray:
        m = model_of(x)
        return np.array([m.batch_time(s) for s in shapes]) / measured - 1

    x0 = np.array([math.log(3e14), math.log(1e12), 1e-3])
    sol = least_squares(residuals, x0, bounds=([20, 20, 0.0], [40, 35, 1.0]), x_scale=[1, 1, 1e-3])
    return FitParams(spec.name, math.exp(sol.x[0]), math.exp(sol.x[1]), float(sol.x[2]), source)


def fitted_model(params: FitParams) -> Roofline:
    return Roofline(
        f"fitted:{params.model}:{params.source}",
        get_model(params.model),
        params.flops_rate,
        params.bytes_rate,
        params.overhead_s,
    )


def load_perf_model(path: str | Path, model: str) -> Roofline:
    """A profile CSV (fitted now) or a fitted-model JSON written by `save_fit`."""
    path = Path(path)
    if path.suffix == ".json":
        try:
            params = FitParams(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError) as e:
            raise UserError(f"{path}: not a fitted-model JSON ({e})") from None
        if params.model != model:
            raise UserError(f"{path}: fitted for model {params.model!r}, not {model!r}")
        return fitted_model(params)
    rows = load_profile(path, model)
    return fitted_model(fit(rows, get_model(model), source=path.name))


def save_fit(params: FitParams, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(params), indent=2, sort_keys=True) + "\n")
