"""Median TTFT in the paper setting against an independent simulation of the same spec (reference, issue 18):
Mistral-7B / RTX 6000 Ada (roofline with KV reads at 80% of 960 GB/s), the paper's trace in the reference's order,
16,384 requests, the reference's capped Poisson arrivals, tiers paying:0.05:tbt=0.1,free:0.95:tbt=0.5, token
budget 512, max_num_seqs 128, the reference's KV pool, 2,100 s runs, seed 42. Target: each within 5%.

    python benchmarks/independent_check.py

Each run is also `llmsched simulate --policy P --qps Q --time-limit 2100 --num-requests 16384 --tiers paper --json`.
"""

from __future__ import annotations

from dataclasses import replace

from llmsched.studies.reproduce import paper_specs
from llmsched.studies.run import run

# (policy, qps) -> the independent simulator's median TTFT (ms)
INDEPENDENT = {
    ("sarathi", 1.4): 403.0,
    ("sarathi", 1.6): 530.0,
    ("sarathi", 1.8): 828.0,
    ("slai", 1.6): 305.0,
    ("slai", 1.8): 463.0,
}


def main() -> None:
    base = paper_specs(None)[0]
    print(f"{'policy':<9}{'qps':>5}{'llmsched ms':>13}{'independent':>13}{'diff':>8}")
    for (policy, qps), ref in INDEPENDENT.items():
        _, summary = run(replace(base, policy=policy).at_qps(qps))
        ms = summary["median_ttft_ms"]
        print(f"{policy:<9}{qps:>5.1f}{ms:>13.1f}{ref:>13.0f}{ms / ref - 1:>+8.1%}")


if __name__ == "__main__":
    main()
