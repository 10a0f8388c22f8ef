"""How far one run's figures are from another's (a replay or a forecast against a real run): the percentiles, and
request by request (TTFT and every gap between tokens)."""

from __future__ import annotations

import numpy as np

from llmsched.records import RunResult
from llmsched.workload.request import FINISHED

KEYS = ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms", "p99_itl_ms")


def figure_errors(real: dict, other: dict, keys: tuple[str, ...] = KEYS) -> dict[str, float | None]:
    """(other - real) / real per summary key (None where either is missing or real is 0)."""
    return {k: (other[k] - real[k]) / real[k] if real.get(k) and other.get(k) is not None else None for k in keys}


def request_errors(real: RunResult, other: RunResult) -> dict[str, float | int | None]:
    """Request by request, over the requests completed in both runs: the relative TTFT error (|other - real| /
    real), median and p90; the absolute error of every gap between tokens (ms), median and p99, for requests with as
    many tokens in both; and how many requests were compared."""
    done = {r.id: r for r in other.requests if r.state == FINISHED}
    ttft, gaps = [], []
    for r in real.requests:
        o = done.get(r.id)
        if r.state != FINISHED or o is None:
            continue
        t_real, t_other = r.token_times[0] - r.arrival, o.token_times[0] - o.arrival
        ttft.append(abs(t_other - t_real) / t_real)
        if len(r.token_times) == len(o.token_times) > 1:
            gaps.append(np.abs(np.diff(o.token_times) - np.diff(r.token_times)))
    itl = np.concatenate(gaps) * 1e3 if gaps else np.array([])
    return {
        "requests_compared": len(ttft),
        "median_abs_ttft_error": float(np.median(ttft)) if ttft else None,
        "p90_abs_ttft_error": float(np.percentile(ttft, 90)) if ttft else None,
        "median_abs_itl_error_ms": float(np.median(itl)) if itl.size else None,
        "p99_abs_itl_error_ms": float(np.percentile(itl, 99)) if itl.size else None,
    }
