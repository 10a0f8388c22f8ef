"""Which roofline form fits measured batches: KV reads under a smooth max with compute or added to
it (the roofline's form, `perf/roofline.py`). Each form's efficiencies and overhead are fitted to measured rows
(relative least squares); the error is reported per row family (prefill, prefill+context, decode, mixed).

    python benchmarks/roofline_form.py [--profile benchmarks/results/h100_llmsched_profile.csv] [--gpu h100-80gb]

smooth-max:     t = c + hypot(FLOPs / F, (weights + KV read + KV write) / B)            (3 parameters)
additive:       t = c + hypot(FLOPs / F, weights / B) + KV read / K                      (4 parameters)
additive, K=B:  as additive with one bandwidth for weights and KV                        (3 parameters)
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from llmsched.perf import analytic_model, get_gpu, get_model
from llmsched.perf.fitted import family_report, format_report, load_profile

PROFILE = Path(__file__).resolve().parent / "results" / "h100_llmsched_profile.csv"


def features(rows: list, model: str, gpu: str) -> dict[str, np.ndarray]:
    spec = get_model(model)
    roof = analytic_model(spec, get_gpu(gpu))
    shapes = [r.shape for r in rows]
    kv = spec.kv_bytes_per_token
    return {
        "flops": np.array([roof.flops(s) for s in shapes]),
        "weights": np.full(len(shapes), float(spec.weight_bytes)),
        "kv_read": np.array([roof.kv_read_bytes(s) for s in shapes]),
        "kv_write": np.array([kv * s.tokens for s in shapes], dtype=float),
        "measured": np.array([r.batch_ms / 1e3 for r in rows]),
    }


def predict(form: str, x: np.ndarray, f: dict[str, np.ndarray]) -> np.ndarray:
    flops_rate, bw, overhead = math.exp(x[0]), math.exp(x[1]), x[2]
    if form == "smooth-max":
        return overhead + np.hypot(f["flops"] / flops_rate, (f["weights"] + f["kv_read"] + f["kv_write"]) / bw)
    kv_rate = bw if form == "additive, K=B" else math.exp(x[3])
    return overhead + np.hypot(f["flops"] / flops_rate, f["weights"] / bw) + f["kv_read"] / kv_rate


def fit(form: str, f: dict[str, np.ndarray], peak_flops: float, mem_bw: float) -> np.ndarray:
    x0 = [math.log(0.6 * peak_flops), math.log(0.8 * mem_bw), 0.5 * float(f["measured"].min())]
    lo, hi = [math.log(1e-3 * peak_flops), math.log(1e-3 * mem_bw), 0.0], [math.log(peak_flops), math.log(mem_bw), 1.0]
    if form == "additive":
        x0, lo, hi = x0 + [math.log(0.8 * mem_bw)], lo + [math.log(1e-3 * mem_bw)], hi + [math.log(mem_bw)]
    sol = least_squares(lambda x: predict(form, x, f) / f["measured"] - 1, x0, bounds=(lo, hi))
    return sol.x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(PROFILE))
    ap.add_argument("--gpu", default="h100-80gb")
    args = ap.parse_args()
    gpu = get_gpu(args.gpu)
    for name in sorted({r.model for r in load_profile(args.profile)}):
        rows = load_profile(args.profile, name)
        f = features(rows, name, args.gpu)
        print(f"== {name}: {len(rows)} rows of {args.profile} on {args.gpu}")
        for form in ("smooth-max", "additive", "additive, K=B"):
            x = fit(form, f, gpu.peak_flops, gpu.mem_bw)
            e = predict(form, x, f) / f["measured"] - 1
            effs = f"flops_eff {math.exp(x[0]) / gpu.peak_flops:.3f}, bw_eff {math.exp(x[1]) / gpu.mem_bw:.3f}"
            if form == "additive":
                effs += f", kv_bw_eff {math.exp(x[3]) / gpu.mem_bw:.3f}"
            print(f"{form:<14} ({effs}, overhead {1e3 * x[2]:.2f} ms)")
            print("    " + format_report(family_report(rows, e)))


if __name__ == "__main__":
    main()
