"""Compare a profile measured with `llmsched profile` against the shared H100 file (same shapes), and check
that mixed batches are predicted by a fit to the prefill-only and decode-only rows alone.

    python benchmarks/profile_compare.py [--ours benchmarks/results/h100_llmsched_profile.csv]
                                         [--shared ../shared/calibration/h100_torch_profile.csv]

Targets: our medians within 5% of the shared file's (median over the common shapes); mixed batches predicted
within 5% from prefill-only and decode-only rows.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from llmsched.perf import get_model
from llmsched.perf.fitted import errors, family_report, fit, fitted_model, format_report, load_profile

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "calibration" / "h100_torch_profile.csv"
OURS = ROOT / "benchmarks" / "results" / "h100_llmsched_profile.csv"


def key(r) -> tuple[int, int, int, int]:  # noqa: ANN001 - a ProfileRow
    return (r.prefill_tokens, r.prefill_context, r.decodes, r.decode_context)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", default=str(OURS))
    ap.add_argument("--shared", default=str(SHARED))
    args = ap.parse_args()
    for model in sorted({r.model for r in load_profile(args.ours)}):
        ours = load_profile(args.ours, model)
        theirs = {key(r): r for r in load_profile(args.shared, model)}
        common = [r for r in ours if key(r) in theirs]
        ratio = np.array([r.batch_ms / theirs[key(r)].batch_ms - 1 for r in common])
        print(f"== {model}: {len(ours)} rows ours, {len(common)} shapes in common with the shared file")
        print(
            f"ours / shared - 1 over common shapes: median {100 * np.median(ratio):+.1f}%, "
            f"mean {100 * ratio.mean():+.1f}%, range {100 * ratio.min():+.1f}% .. {100 * ratio.max():+.1f}%"
        )
        fams = sorted({r.family for r in common})
        for fam in fams:
            e = np.array([x for x, r in zip(ratio, common, strict=True) if r.family == fam])
            print(f"  {fam:<16} median {100 * np.median(e):+.1f}%  ({len(e)} shapes)")
        mixed = [r for r in ours if r.family == "mixed"]
        pure = [r for r in ours if r.family != "mixed"]
        if mixed:
            m = fitted_model(fit(pure, get_model(model)))
            e = errors(m, mixed)
            print(
                f"mixed predicted from prefill-only and decode-only rows: MAPE {100 * np.abs(e).mean():.2f}%, "
                f"max {100 * np.abs(e).max():.1f}%, signed mean {100 * e.mean():+.2f}% ({len(mixed)} rows)"
            )
            print("  same fit on the rows it saw: " + format_report(family_report(pure, errors(m, pure))))
            shared_fit = fitted_model(fit(list(theirs.values()), get_model(model)))
            e2 = errors(shared_fit, ours)
            print("shared-file fit on our rows: " + format_report(family_report(ours, e2)))


if __name__ == "__main__":
    main()
