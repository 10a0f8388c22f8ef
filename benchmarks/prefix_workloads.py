"""The prefix-sharing workloads' figures: requests, mean prompt, sessions and turns, and the share of prompt blocks an
unbounded prefix cache could serve (blocks whose id an earlier prompt holds; `workload.prefix.prefix_share`).

    python benchmarks/prefix_workloads.py [--mooncake ../shared/traces/mooncake_conversation.jsonl]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from llmsched.workload import WorkloadConfig
from llmsched.workload.compose import build_workload
from llmsched.workload.prefix import prefix_share

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces" / "mooncake_conversation.jsonl"


def figures(cfg: WorkloadConfig) -> dict:
    wl, _ = build_workload(cfg)
    requests = wl if isinstance(wl, list) else wl.expand()
    hits, blocks = prefix_share(requests, cfg.prefix_block)
    out = {
        "requests": len(requests),
        "mean_prompt": round(statistics.fmean(r.prompt_len for r in requests)),
        "mean_output": round(statistics.fmean(r.decode_len for r in requests)),
        "prefix_block": max(r.prefix_block for r in requests),
        "prompt_blocks": blocks,
        "blocks_seen_before": hits,
        "shared_block_share": round(hits / blocks, 4) if blocks else 0.0,
    }
    if not isinstance(wl, list):
        out.update(sessions=len(wl.sessions), turns_per_session=round(len(requests) / len(wl.sessions), 2))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mooncake", default=str(SHARED) if SHARED.exists() else None)
    args = ap.parse_args()
    runs = {
        "sessions": WorkloadConfig(trace="sessions"),
        "sessions + system prompts 4:500:0.5": WorkloadConfig(trace="sessions", system_prompts="4:500:0.5"),
        "paper trace + system prompts 4:500:0.5": WorkloadConfig(system_prompts="4:500:0.5"),
    }
    if args.mooncake:
        runs = {"mooncake": WorkloadConfig(trace=args.mooncake), **runs}
    print(json.dumps({name: figures(cfg) for name, cfg in runs.items()}, indent=2))


if __name__ == "__main__":
    main()
