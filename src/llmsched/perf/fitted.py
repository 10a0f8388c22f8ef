"""A batch-time model fitted to measured rows (batch composition -> seconds).

Profile CSV columns (the shared H100 file's): model, prefill_tokens, prefill_context, decodes,
decode_context, batch_ms_median[, batch_ms_min, batch_ms_p90, reps]. Each row is one batch: a chunk of
`prefill_tokens` whose sequence holds `prefill_context` cached tokens, plus `decodes` sequences of
`decode_context` cached tokens each. The torch profiler (`perf/profile_torch.py`) and the vLLM profiler
write this format; `fit` turns it into a `FittedModel`.

The form follows the kernels of one forward pass, which run one after another, so their times add:

    t = overhead + smax_p(weight bytes / bw, linear FLOPs / linear rate)       # the GEMMs' roofline
        + prefill attention FLOPs / attention rate                              # flash-style, compute-bound
        + smax_q(layers x mean decode context x tau, decode KV bytes / kv rate) # decode attention
        + per_token x tokens + per_seq x sequences                              # norms, RoPE, SiLU, LM head
        + mixed x [a chunk and decodes in one batch]                            # a second attention path

smax_p(a, b) = (a^p + b^p)^(1/p). Decode attention is latency-bound while few sequences keep the SMs busy
(one block walks the whole context) and bandwidth-bound once many do. Every term is non-decreasing in
tokens, decodes and context, so the model is too; it extrapolates by the same FLOP and byte counts.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, fields
from functools import cached_property
from importlib import resources
from pathlib import Path

import numpy as np

from llmsched.errors import UserError
from llmsched.perf.base import BatchShape
from llmsched.perf.catalog import get_model
from llmsched.perf.specs import ModelSpec

PROFILE_COLUMNS = ("model", "prefill_tokens", "prefill_context", "decodes", "decode_context", "batch_ms_median")
OPTIONAL_COLUMNS = ("batch_ms_min", "batch_ms_p90", "reps")
FAMILIES = ("prefill", "prefill+context", "decode", "mixed")


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

    @property
    def family(self) -> str:
        if self.prefill_tokens and self.decodes:
            return "mixed"
        if self.prefill_tokens:
            return "prefill+context" if self.prefill_context else "prefill"
        return "decode"


def load_profile(path: str | Path, model: str | None = None) -> list[ProfileRow]:
    """Rows of a profile CSV (for `model` only, if given); any malformed row is a one-line UserError."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            fieldnames = reader.fieldnames or []
            missing = [c for c in PROFILE_COLUMNS if c not in fieldnames]
            if missing:
                raise UserError(f"{path}: missing column {missing[0]!r} (expected {', '.join(PROFILE_COLUMNS)})")
            optional = [c for c in OPTIONAL_COLUMNS if c in fieldnames]
            rows = [_profile_row(path, i + 2, rec, optional) for i, rec in enumerate(reader)]
    except OSError as e:
        raise UserError(f"{path}: cannot read profile ({e.strerror or e})") from None
    except (csv.Error, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a CSV profile ({e})") from None
    if model is not None:
        rows = [r for r in rows if r.model == model]
    if not rows:
        raise UserError(f"{path}: no rows" + (f" for model {model!r}" if model else ""))
    if not any(r.decodes for r in rows):
        raise UserError(f"{path}: no decode rows (decodes > 0)" + (f" for model {model!r}" if model else ""))
    if not any(r.prefill_tokens for r in rows):
        raise UserError(f"{path}: no prefill rows (prefill_tokens > 0)" + (f" for model {model!r}" if model else ""))
    return rows


def write_profile(out: Path, model: str, rows: Iterable[tuple[int, int, int, int, Sequence[float]]]) -> None:
    """The profile CSV every profiler writes: one row per (prefill tokens, prefill context, decodes, decode
    context, times in ms); written to a temporary file and renamed, so a profile is never half-written."""
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow((*PROFILE_COLUMNS, *OPTIONAL_COLUMNS))
        for prefill, prefill_ctx, decodes, decode_ctx, times_ms in rows:
            t = np.asarray(times_ms, dtype=float)
            w.writerow((model, prefill, prefill_ctx, decodes, decode_ctx, f"{np.median(t):.4f}", f"{t.min():.4f}",
                        f"{np.percentile(t, 90):.4f}", len(t)))  # fmt: skip
    tmp.replace(out)


def _profile_row(path: Path, line: int, rec: dict, optional: list[str]) -> ProfileRow:
    def num(col: str, integer: bool) -> float:
        text = (rec.get(col) or "").strip()
        try:
            v = float(text)
        except ValueError:
            raise UserError(f"{path}: line {line}: {col} is {text!r}, expected a number") from None
        if not math.isfinite(v) or v < 0 or (integer and not v.is_integer()):
            kind = "integer" if integer else "number"
            raise UserError(f"{path}: line {line}: {col} is {text!r}, expected a non-negative {kind}")
        return v

    name = (rec.get("model") or "").strip()
    if not name:
        raise UserError(f"{path}: line {line}: model is empty, expected a model name")
    row = ProfileRow(
        name,
        int(num("prefill_tokens", True)),
        int(num("prefill_context", True)),
        int(num("decodes", True)),
        int(num("decode_context", True)),
        num("batch_ms_median", False),
    )
    for col in optional:
        num(col, col == "reps")
    if row.prefill_tokens + row.decodes == 0:
        raise UserError(f"{path}: line {line}: prefill_tokens and decodes are both 0, expected a non-empty batch")
    if row.batch_ms <= 0:
        raise UserError(f"{path}: line {line}: batch_ms_median is {row.batch_ms}, expected a positive time")
    return row


@dataclass(frozen=True)
class FitParams:
    """Rates in FLOP/s and bytes/s, times in seconds; see the module docstring for the form."""

    model: str
    overhead_s: float
    weight_bw: float
    linear_flops: float
    linear_p: float
    attn_flops: float
    decode_tau_s: float
    kv_bw: float
    decode_q: float
    per_token_s: float
    per_seq_s: float
    mixed_s: float = 0.0  # only a profile with mixed rows can tell it from the overhead; else it stays 0
    source: str = ""


# Free parameters, in the order of the optimiser's vector: (name, lower, upper, log-scaled).
_FREE = (
    ("overhead_s", 0.0, 1.0, False),
    ("weight_bw", 1e6, 1e14, True),
    ("linear_flops", 1e6, 1e17, True),
    ("linear_p", 1.0, 16.0, False),
    ("attn_flops", 1e6, 1e17, True),
    ("decode_tau_s", 1e-13, 1e-2, True),
    ("kv_bw", 1e6, 1e14, True),
    ("decode_q", 1.0, 16.0, False),
    ("per_token_s", 0.0, 1e-2, False),
    ("per_seq_s", 0.0, 1e-1, False),
    ("mixed_s", 0.0, 1.0, False),
)


def free_parameters() -> int:
    """How many parameters a fit sets: a profile of fewer rows cannot determine them."""
    return len(_FREE)


class Features:
    """The FLOP and byte counts of a batch that the form needs, as arrays over many shapes."""

    def __init__(self, spec: ModelSpec, shapes: list[BatchShape]) -> None:
        m = spec
        a = {name: np.array([getattr(s, name) for s in shapes], dtype=float) for name in BatchShape._fields}
        tokens = a["prefill_tokens"] + a["decodes"]
        seqs = a["num_prefills"] + a["decodes"]
        self.weight_bytes = np.full(len(shapes), float(m.weight_bytes))
        self.linear_flops = 2.0 * m.active_layer_params * tokens + 2.0 * m.hidden * m.vocab * seqs
        self.attn_flops = 4.0 * m.layers * m.heads * m.head_dim * a["prefill_pairs"]
        mean_ctx = np.divide(a["decode_context"], a["decodes"], out=np.zeros(len(shapes)), where=a["decodes"] > 0)
        self.decode_len = m.layers * (mean_ctx + (a["decodes"] > 0))
        self.decode_kv_bytes = m.kv_bytes_per_token * (a["decode_context"] + a["decodes"])
        self.tokens = tokens
        self.seqs = seqs
        self.mixed = ((a["num_prefills"] > 0) & (a["decodes"] > 0)).astype(float)


def _smax(a: np.ndarray, b: np.ndarray, p: float) -> np.ndarray:
    hi = np.maximum(a, b)
    safe = np.where(hi > 0, hi, 1.0)
    return np.where(hi > 0, hi * ((a / safe) ** p + (b / safe) ** p) ** (1.0 / p), 0.0)


def _smax1(a: float, b: float, p: float) -> float:
    hi = max(a, b)
    return hi * ((a / hi) ** p + (b / hi) ** p) ** (1.0 / p) if hi > 0 else 0.0


def _predict(x: FitParams | dict, f: Features) -> np.ndarray:
    g = x if isinstance(x, dict) else asdict(x)
    linear = _smax(f.weight_bytes / g["weight_bw"], f.linear_flops / g["linear_flops"], g["linear_p"])
    decode = _smax(f.decode_len * g["decode_tau_s"], f.decode_kv_bytes / g["kv_bw"], g["decode_q"])
    return (
        g["overhead_s"]
        + linear
        + f.attn_flops / g["attn_flops"]
        + decode
        + g["per_token_s"] * f.tokens
        + g["per_seq_s"] * f.seqs
        + g["mixed_s"] * f.mixed
    )


@dataclass(frozen=True)
class FittedModel:
    name: str
    spec: ModelSpec
    params: FitParams

    @cached_property
    def _consts(self) -> tuple[float, ...]:
        m = self.spec
        return (
            float(m.weight_bytes),
            2.0 * m.active_layer_params,
            2.0 * m.hidden * m.vocab,
            4.0 * m.layers * m.heads * m.head_dim,
            float(m.layers),
            float(m.kv_bytes_per_token),
        )

    def batch_time(self, shape: BatchShape) -> float:
        """The same sum as `_predict`, in scalar arithmetic: the simulator calls this once per batch."""
        s, g = shape, self.params
        tokens = s.prefill_tokens + s.decodes
        if tokens == 0:
            return 0.0
        weight_bytes, flops_per_token, flops_per_seq, attn_per_pair, layers, kv_per_token = self._consts
        seqs = s.num_prefills + s.decodes
        linear = _smax1(
            weight_bytes / g.weight_bw, (flops_per_token * tokens + flops_per_seq * seqs) / g.linear_flops, g.linear_p
        )
        decode = 0.0
        if s.decodes > 0:
            latency = layers * (s.decode_context / s.decodes + 1) * g.decode_tau_s
            decode = _smax1(latency, kv_per_token * (s.decode_context + s.decodes) / g.kv_bw, g.decode_q)
        return (
            g.overhead_s
            + linear
            + attn_per_pair * s.prefill_pairs / g.attn_flops
            + decode
            + g.per_token_s * tokens
            + g.per_seq_s * seqs
            + (g.mixed_s if s.num_prefills > 0 and s.decodes > 0 else 0.0)
        )

    def batch_times(self, shapes: list[BatchShape]) -> np.ndarray:
        return _predict(self.params, Features(self.spec, shapes))


def _start(fastest: float, spec: ModelSpec) -> list[float]:
    """A starting point from the data itself, so that any GPU's profile starts near its own scale."""
    guess = {
        "overhead_s": 0.2 * fastest,
        "weight_bw": spec.weight_bytes / (0.7 * fastest),
        "linear_flops": 1e3 * spec.weight_bytes / (0.7 * fastest),
        "linear_p": 3.0,
        "attn_flops": 5e2 * spec.weight_bytes / (0.7 * fastest),
        "decode_tau_s": 1e-3 * fastest / spec.layers,
        "kv_bw": spec.weight_bytes / (0.7 * fastest),
        "decode_q": 3.0,
        "per_token_s": 1e-5 * fastest,
        "per_seq_s": 1e-4 * fastest,
        "mixed_s": 0.0,
    }
    return [math.log(guess[n]) if log else guess[n] for n, _, _, log in _FREE]


def _vector(params: FitParams) -> list[float]:
    g = asdict(params)
    return [math.log(g[n]) if log else g[n] for n, _, _, log in _FREE]


def _params(x: np.ndarray, model: str, source: str) -> FitParams:
    values = {n: float(math.exp(v) if log else v) for (n, _, _, log), v in zip(_FREE, x, strict=True)}
    return FitParams(model=model, source=source, **values)


def fit(rows: list[ProfileRow], spec: ModelSpec, source: str = "") -> FitParams:
    """Least squares on relative error; deterministic (fixed start, no randomness)."""
    return fit_shapes([r.shape for r in rows], [r.batch_ms / 1e3 for r in rows], spec, source)


def fit_shapes(
    shapes: list[BatchShape],
    seconds: Sequence[float],
    spec: ModelSpec,
    source: str = "",
    start: FitParams | None = None,
    scale_s: np.ndarray | None = None,
) -> FitParams:
    """The form fitted to any measured batches (a profile's rows, or an engine's logged steps with many chunks and
    mixed contexts), from `start` if given (else from the data's own scale). Residuals are (predicted - measured)
    / `scale_s`, the measured times unless given: relative error, which fits a profile's medians evenly over
    shapes of any size, but fits noisy times low (a slow outlier is a small relative miss, a fast one a large one).
    A scale fixed beforehand (a prior model's prediction) weighs the same but fits each shape's mean."""
    from scipy.optimize import least_squares

    feats = Features(spec, shapes)
    measured = np.asarray(seconds, dtype=float)
    lo = [math.log(a) if log else a for _, a, _, log in _FREE]
    hi = [math.log(b) if log else b for _, _, b, log in _FREE]

    def residuals(x: np.ndarray) -> np.ndarray:
        g = {n: (math.exp(v) if log else v) for (n, _, _, log), v in zip(_FREE, x, strict=True)}
        return (_predict(g, feats) - measured) / scale

    scale = measured if scale_s is None else np.asarray(scale_s, dtype=float)
    fastest = float(measured.min())
    x0 = np.clip(_start(fastest, spec) if start is None else _vector(start), lo, hi)
    unit = {"linear_p": 1.0, "decode_q": 1.0, "per_token_s": 1e-3 * fastest, "per_seq_s": 1e-3 * fastest}
    x_scale = [1.0 if log else unit.get(n, 0.1 * fastest) for n, _, _, log in _FREE]
    sol = least_squares(residuals, x0, bounds=(lo, hi), x_scale=x_scale, method="trf", max_nfev=4000)
    return _params(sol.x, spec.name, source)


def refit_to_steps(model: FittedModel, steps: list[tuple[float, BatchShape]], label: str) -> FittedModel:
    """`model`'s form refitted to an engine's logged steps (seconds, shape), starting from its parameters: the
    batches a replaying engine really runs (few decodes, mixed contexts, several chunks), which a profile's grid
    samples sparsely, at the cost they have there (each running request's output handled every step)."""
    if not steps:
        raise ValueError("refit_to_steps needs at least one measured step")
    shapes = [s for _, s in steps]
    params = fit_shapes(shapes, [t for t, _ in steps], model.spec, label, model.params, model.batch_times(shapes))
    return FittedModel(f"{model.name} refitted to {label}", model.spec, params)


def fitted_model(params: FitParams, label: str | None = None) -> FittedModel:
    spec = get_model(params.model)
    return FittedModel(label or f"fitted:{params.model}:{params.source}", spec, params)


def errors(model: FittedModel, rows: list[ProfileRow]) -> np.ndarray:
    """Signed relative error of the model per row."""
    predicted = model.batch_times([r.shape for r in rows])
    return predicted / np.array([r.batch_ms / 1e3 for r in rows]) - 1


def family_report(rows: list[ProfileRow], rel_errors: np.ndarray) -> dict[str, dict[str, float]]:
    """Mean and max absolute percentage error per row family (and over all rows)."""
    out: dict[str, dict[str, float]] = {}
    fams = [r.family for r in rows]
    for fam in (*FAMILIES, "all"):
        e = np.array([abs(x) for x, f in zip(rel_errors, fams, strict=True) if fam in ("all", f)])
        if len(e):
            out[fam] = {"rows": len(e), "mape_pct": 100 * float(e.mean()), "max_pct": 100 * float(e.max())}
    return out


def kfold_errors(rows: list[ProfileRow], spec: ModelSpec, k: int = 5) -> np.ndarray:
    """Held-out relative error of every row: fold i holds rows i, i+k, ... (deterministic)."""
    out = np.zeros(len(rows))
    for i in range(k):
        held = list(range(i, len(rows), k))
        kept = [r for j, r in enumerate(rows) if j % k != i]
        model = fitted_model(fit(kept, spec))
        out[held] = errors(model, [rows[j] for j in held])
    return out


def format_report(report: dict[str, dict[str, float]]) -> str:
    return "; ".join(
        f"{fam} {v['mape_pct']:.2f}% (max {v['max_pct']:.1f}%, {v['rows']} rows)" for fam, v in report.items()
    )


def load_perf_model(path: str | Path, model: str) -> FittedModel:
    """A profile CSV (fitted now) or a fitted-model JSON written by `save_fit`."""
    path = Path(path)
    if path.suffix == ".json":
        params = read_fit(path)
        if params.model != model:
            raise UserError(f"{path}: fitted for model {params.model!r}, not {model!r}")
        return fitted_model(params)
    rows = load_profile(path, model)
    return fitted_model(fit(rows, get_model(model), source=path.name))


def read_fit(path: str | Path) -> FitParams:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        params = FitParams(**data)
    except OSError as e:
        raise UserError(f"{path}: cannot read fitted model ({e.strerror or e})") from None
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: not a fitted-model JSON ({e})") from None
    for f in fields(FitParams):
        v = getattr(params, f.name)
        if f.name in ("model", "source"):
            if not isinstance(v, str):
                raise UserError(f"{path}: {f.name} is {v!r}, expected a string")
            continue
        positive = f.name not in ("overhead_s", "per_token_s", "per_seq_s", "mixed_s")
        if not (isinstance(v, int | float) and math.isfinite(v) and (v > 0 if positive else v >= 0)):
            raise UserError(
                f"{path}: {f.name} is {v!r}, expected a {'positive' if positive else 'non-negative'} number"
            )
    return params


# Built-in fitted entries: (model, gpu) -> the shipped fit and the shipped rows it was fitted to
# (see perf/data/README.md for their source); `benchmarks/perf_fit.py --write` regenerates the JSON.
BUILTIN_ROWS = "h100_torch_profile.csv"
BUILTIN: dict[tuple[str, str], str] = {
    ("mistral-7b", "h100-80gb"): "fit_h100-80gb_mistral-7b.json",
    ("llama-3-8b", "h100-80gb"): "fit_h100-80gb_llama-3-8b.json",
}


def _data_path(name: str) -> AbstractContextManager[Path]:
    return resources.as_file(resources.files("llmsched.perf") / "data" / name)


def builtin_rows(model: str) -> list[ProfileRow]:
    with _data_path(BUILTIN_ROWS) as path:
        return load_profile(path, model)


def builtin_model(model: str, gpu: str) -> FittedModel | None:
    """The shipped fit for this model on this GPU, or None where there is none."""
    name = BUILTIN.get((model, gpu))
    if name is None:
        return None
    with _data_path(name) as path:
        params = read_fit(path)
    return fitted_model(params, f"fitted:{model}@{gpu} (built-in, {params.source})")


def save_fit(params: FitParams, path: str | Path) -> None:
    Path(path).write_text(json.dumps(asdict(params), indent=2, sort_keys=True) + "\n")
