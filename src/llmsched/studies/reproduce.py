"""The paper's headline comparison, Sarathi-Serve (FCFS) vs SLAI, under the reference protocol
(shared/reference/paper.md section 5):

- Mistral-7B on one RTX 6000 Ada (calibrated roofline, KV reads at 80% of the bandwidth), token budget 512,
  max_num_seqs 128, the reference's KV pool (14,733 blocks); SLAI's final variant (SPF, paying tier first, dynamic
  offset 5/10 at 96% KV, beta 128); Sarathi-Serve's KV rules (docs/simulator.md).
- 16,384 requests of the paper's trace in the reference loader's order (seed 42); the reference's Poisson
  arrivals with gaps capped at 3/qps; 5% paying users with TBT 0.1 s, 95% free with 0.5 s, drawn as the
  reference does; each run stops at 2,100 simulated seconds and,
  as in the reference, metrics cover the requests completed by then.
- Capacity: the highest QPS with median TTFT <= 0.5 s and each tier's p99 TBT within its TBT (the paper's
  SLO) and a bounded queue (bisection, see studies/capacity.py). Without the queue check, metrics over completed
  requests let a shortest-prompt-first policy "meet" the median-TTFT SLO far into overload (reference
  section 5.5): the search records, for every run, whether the paper's terms alone were met, and the result
  names the highest such overloaded rate it saw. The median-TTFT reduction is measured at Sarathi's capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from llmsched.metrics import Detail
from llmsched.perf.paper_fit import mape, paper_points
from llmsched.studies.bounds import spec_bound, workload_stats
from llmsched.studies.capacity import Point, Search, search
from llmsched.studies.executor import Executor
from llmsched.studies.grid import run_grid
from llmsched.studies.slo import PAPER_SLO, SLO, parse_slo
from llmsched.studies.spec import RunSpec, perf_model
from llmsched.workload import WorkloadConfig
from llmsched.workload.tiers import PAPER_TIERS

PAPER = {"median_ttft_reduction": 0.53, "capacity_ratio": 1.26}
# The paper's trace (Openchat ShareGPT4 as Sarathi-Serve ships it, Llama-2 tokenizer): its mean prompt and decode
# lengths, computed from the file (shared/reference/paper.md section 5.1).
PAPER_TRACE_MEANS = {"prompt": 2340.0, "decode": 439.0}
SAME_TRACE_TOLERANCE = 0.02  # means within 2% of the paper trace's: taken for the same lengths
BASELINE, SLAI, GUARD = "sarathi", "slai", "slai-kv-guard"


@dataclass
class Reproduction:
    searches: list[Search]
    at_baseline: list[dict]  # summaries at the baseline's capacity QPS: sarathi, slai, slai-guard
    details: list[Detail]
    spec: RunSpec  # the baseline's spec (the policies differ only in name)

    def by_policy(self, policy: str) -> dict:
        return next(s for s in self.at_baseline if s["policy"] == policy)

    def result(self) -> dict:
        cap = {s.policy: s.capacity for s in self.searches}
        base, slai, guard = (self.by_policy(p) for p in (BASELINE, SLAI, GUARD))
        slai_best = next(s for s in self.searches if s.policy == SLAI).best
        tiers_at_cap = {
            name: {
                "p99_itl_ms": t["p99_itl_ms"],
                "tbt_slo_ms": t["tbt_slo_ms"],
                "within_slo": t["p99_itl_ms"] is not None and t["p99_itl_ms"] <= t["tbt_slo_ms"],
            }
            for name, t in (slai_best.summary if slai_best else {}).get("tiers", {}).items()
        }

        def reduction(key: str, other: dict) -> float | None:
            if not base.get(key) or other.get(key) is None:
                return None
            return 1 - other[key] / base[key]

        return {
            "capacity_qps": cap,
            "capacity_ratio": cap[SLAI] / cap[BASELINE] if cap[BASELINE] else None,
            "median_ttft_reduction": reduction("median_ttft_ms", slai),
            "slai_beyond_its_capacity_at_qps": base["qps"] > cap[SLAI],
            "at_qps": base["qps"],
            "median_ttft_ms": {p: s["median_ttft_ms"] for p, s in ((BASELINE, base), (SLAI, slai), (GUARD, guard))},
            "p99_ttft_ms": {p: s["p99_ttft_ms"] for p, s in ((BASELINE, base), (SLAI, slai), (GUARD, guard))},
            "kv_guard_median_ttft_reduction": reduction("median_ttft_ms", guard),
            "slai_tiers_at_capacity": tiers_at_cap,
            "queue_growth_at_capacity": {s.policy: s.best.growth if s.best else None for s in self.searches},
            "paper": PAPER,
            "slo": str(parse_slo(PAPER_SLO)),
            "paper_terms_met_while_queue_grows_qps": {
                s.policy: max((p.qps for p in s.points if not p.stable and _terms_met(p)), default=None)
                for s in self.searches
            },
        }


def _terms_met(p: Point) -> bool:
    """Whether the paper's SLO terms alone (no queue check) are met."""
    return SLO(parse_slo(PAPER_SLO).terms, stable=False).check(p.summary, True)[0]


def paper_specs(trace: str | None, num_requests: int = 16384, time_limit: float | None = 2100.0) -> list[RunSpec]:
    wl = WorkloadConfig(
        trace=trace, num_requests=num_requests, qps=1.0, arrival="poisson-capped", tiers=PAPER_TIERS, seed=42
    )
    base = RunSpec(
        policy=BASELINE,
        workload=wl,
        model="mistral-7b",
        gpu="rtx6000ada",
        token_budget=512,
        max_num_seqs=128,
        time_limit=time_limit,
    )
    return [base, replace(base, policy=SLAI), replace(base, policy=GUARD)]


def reproduce(
    executor: Executor,
    trace: str | None = None,
    num_requests: int = 16384,
    time_limit: float | None = 2100.0,
    progress: bool = True,
) -> Reproduction:
    base, slai, guard = paper_specs(trace, num_requests, time_limit)
    searches = search([base, slai], parse_slo(PAPER_SLO), executor, progress=progress)
    q = searches[0].capacity or 0.1
    summaries, details = run_grid([base, slai, guard], [q], executor, q, progress=progress)
    return Reproduction(searches, summaries, details, base)


def differences(rep: Reproduction) -> list[dict]:
    """Why llmsched's figures differ from the paper's: one entry per reason, each with the figures of this run
    that support it ({"reason", "measured"})."""
    res = rep.result()
    cap, at = res["capacity_qps"], res["at_qps"]
    out = []
    grows = res["paper_terms_met_while_queue_grows_qps"]
    paper_def = {s.policy: max((p.qps for p in s.points if _terms_met(p)), default=0.0) for s in rep.searches}
    text = (
        "with the queue check: "
        + ", ".join(f"{p} {cap[p]:.3f}" for p in (BASELINE, SLAI))
        + " QPS; the paper's terms alone passed up to "
        + ", ".join(f"{p} {paper_def[p]:.3f}" for p in (BASELINE, SLAI))
        + " QPS (the highest rates run, so the paper's definition gives at least these)"
        + "".join(f"; {p}'s queue grows at {q:.3f} QPS" for p, q in grows.items() if q is not None)
    )
    binds = any(paper_def[p] > cap[p] for p in (BASELINE, SLAI))
    reason = (
        "capacity requires a bounded queue here; the paper's definition does not"
        if binds
        else "the bounded-queue term of the capacity (not in the paper's definition) did not bind in this run"
    )
    out.append({"reason": reason, "measured": text})
    w = workload_stats(rep.spec)
    same = all(
        abs(v / PAPER_TRACE_MEANS[k] - 1) <= SAME_TRACE_TOLERANCE
        for k, v in (("prompt", w.mean_prompt), ("decode", w.mean_decode))
    )
    out.append(
        {
            "reason": "same request lengths as the paper's trace" if same else "not the paper's trace",
            "measured": f"mean prompt {w.mean_prompt:.0f} and decode {w.mean_decode:.0f} tokens over the "
            f"{w.requests:,} requests run; the paper's trace: {PAPER_TRACE_MEANS['prompt']:.0f} and "
            f"{PAPER_TRACE_MEANS['decode']:.0f}",
        }
    )
    base = rep.by_policy(BASELINE)
    tokens = (base.get("total_input_tokens") or 0) + (base.get("total_output_tokens") or 0)
    decode_share = (base.get("total_output_tokens") or 0) / tokens if tokens else 0.0
    budget = rep.spec.token_budget or 512
    bound = spec_bound(rep.spec, (budget,))
    model = perf_model(rep.spec)
    out.append(
        {
            "reason": "batch times come from a model, calibrated on the paper's prefill-only measurement",
            "measured": f"{getattr(model, 'name', type(model).__name__)}: mean error {100 * mape(model):.1f}% "
            f"on the paper's {len(paper_points())} chunk-sweep points; decode tokens, outside that measurement, are "
            f"{100 * decode_share:.0f}% of the tokens completed at {at:.3f} QPS"
            + (f", their KV reads modelled at {model.kv_rate / 1e9:.0f} GB/s" if hasattr(model, "kv_rate") else "")
            + "; mean batch "
            f"{base.get('mean_batch_ms') or 0:.1f} ms for {base.get('mean_batch_tokens') or 0:.0f} tokens; "
            f"the model's stability bound at budget {budget}: {bound.fixed_qps(budget):.3f} QPS",
        }
    )
    slai = rep.by_policy(SLAI)
    out.append(
        {
            "reason": "the median-TTFT reduction is measured at Sarathi's capacity (the paper does not say where)",
            "measured": f"at {at:.3f} QPS; SLAI's own capacity {cap[SLAI]:.3f} QPS"
            + ("; its queue grows there" if res["slai_beyond_its_capacity_at_qps"] else "")
            + f"; p99 TTFT there: Sarathi {(base.get('p99_ttft_ms') or 0) / 1e3:.1f} s, "
            f"SLAI {(slai.get('p99_ttft_ms') or 0) / 1e3:.1f} s",
        }
    )
    undecided = {s.policy: [p.qps for p in s.undecided] for s in rep.searches if s.undecided}
    if undecided:
        out.append(
            {
                "reason": "runs too short for the stability test to decide",
                "measured": "; ".join(f"{p} at {', '.join(f'{q:g}' for q in qs)} QPS" for p, qs in undecided.items()),
            }
        )
    return out
