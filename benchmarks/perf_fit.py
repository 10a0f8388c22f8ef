"""Fidelity of the batch-time models on the H100 rows: the fitted model (in sample and k-fold) and the
analytic roofline carried from the spec sheet, without factors, with the paper GPU's and with the H100 profile's
(the factors every GPU without a measurement of its own is estimated with).

    python benchmarks/perf_fit.py [--profile ../shared/calibration/h100_torch_profile.csv] [--k 5] [--write]

--write refits the rows shipped in the package and rewrites the built-in JSON entries (perf/data/).
Targets: fitted model <= 3% MAPE in k-fold; the textbook roofline is about 50% low on these rows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llmsched.perf import analytic_model, get_gpu, get_model
from llmsched.perf.fitted import (
    BUILTIN,
    builtin_model,
    builtin_rows,
    errors,
    family_report,
    fit,
    fitted_model,
    format_report,
    kfold_errors,
    load_profile,
    save_fit,
)
from llmsched.perf.roofline import H100, Roofline

SHARED = Path(__file__).resolve().parents[2] / "shared" / "calibration" / "h100_torch_profile.csv"
DATA = Path(__file__).resolve().parents[1] / "src" / "llmsched" / "perf" / "data"


def roofline_errors(model: Roofline, rows: list) -> np.ndarray:
    return np.array([model.batch_time(r.shape) / (r.batch_ms / 1e3) - 1 for r in rows])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default=str(SHARED))
    ap.add_argument("--gpu", default="h100-80gb")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--write", action="store_true", help="rewrite the built-in fitted entries")
    args = ap.parse_args()

    if args.write:
        for (model, _gpu), name in sorted(BUILTIN.items()):
            save_fit(fit(builtin_rows(model), get_model(model), source="h100_torch_profile.csv"), DATA / name)
            print(f"wrote {DATA / name}")

    models = sorted({r.model for r in load_profile(args.profile)})
    for name in models:
        rows = load_profile(args.profile, name)
        spec = get_model(name)
        t0 = time.perf_counter()
        params = fit(rows, spec)
        fit_s = time.perf_counter() - t0
        print(f"== {name}: {len(rows)} rows of {args.profile}  (one fit {fit_s:.2f} s)")
        print("fitted, in sample: " + format_report(family_report(rows, errors(fitted_model(params), rows))))
        print(f"fitted, {args.k}-fold:    " + format_report(family_report(rows, kfold_errors(rows, spec, args.k))))
        shipped = builtin_model(name, args.gpu)
        if shipped is not None:
            print("built-in entry:     " + format_report(family_report(rows, errors(shipped, rows))))
        gpu = get_gpu(args.gpu)
        for label, model in (
            ("textbook roofline (no factors)", analytic_model(spec, gpu, 1.0, 1.0, 0.0, 1.0)),
            ("roofline, paper-GPU factors   ", analytic_model(spec, gpu)),
            (
                "roofline, H100-profile factors",
                analytic_model(spec, gpu, H100.flops, H100.bw, H100.overhead_s, H100.kv_bw),
            ),
        ):
            e = roofline_errors(model, rows)
            print(f"{label}: signed mean {100 * e.mean():+.1f}%; |error| " + format_report(family_report(rows, e)))


if __name__ == "__main__":
    main()
