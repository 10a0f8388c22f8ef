"""Served multi-turn chat sessions: prefix-aware routers against round-robin on replicas with vLLM's prefix caching.

Two vLLM replicas (CPU, one core each, llmsched scheduler plugin, vLLM's automatic prefix caching on, a small KV pool)
behind Ray Serve. The app starts once; the same closed-loop sessions (`integrations.ray_serve.client.run_sessions`:
real ShareGPT V3 conversations from `workload/sessions.py`, scaled down; turn k's prompt is the conversation so far as
token ids, turn k+1 sent when turn k's answer is complete plus a think time) are run --repeats times per router,
routers alternating, switched on the live app with POST /llmsched/router. Each run draws new token ids for the same
sessions (same lengths, starts and think times), so no run hits what an earlier one left in the caches.

`--answers generated` (the default): turn k+1's prompt holds the token ids the replica generated for turn k (at most
--max-answer of them, ignore_eos), as a chat client sends the answer back, so vLLM's cached decode blocks can be hit;
the sessions' answers are capped at --max-answer before they are cut to --max-len. `--answers recorded`: the prompt
holds the recorded answer (random ids of its full recorded length), which no replica generated: only earlier prompts
can be hit. A turn not completed (refused, failed) ends its session and is counted lost, its later turns not sent.

Per router: hit rate in tokens (vLLM's prefix_cache_hits / prefix_cache_queries, read from each replica's counters
before and after the run) per replica and overall, which are counts and do not depend on the machine's speed; then
median/p99 TTFT and median ITL (median over runs, with each run against the median of the others), requests per
replica and lost requests; and the median TTFT of each prefix router over round-robin's in the same repeat.

    flock /tmp/llmsched-heavy.lock python benchmarks/served_sessions.py --model /work/models/smollm2-135m \
        --repeats 3 --out benchmarks/results/served_sessions_smollm2.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from llmsched.integrations.ray_serve.client import replica_reports, run_sessions, settled_reports, use_router
from llmsched.integrations.vllm.prefix import KEYS as PREFIX_KEYS
from llmsched.integrations.vllm.prefix import hit_rate
from llmsched.metrics import leave_one_out, summarize
from llmsched.perf.hf_config import read_hf_config
from llmsched.records import BatchLog, RunResult
from llmsched.workload.sessions import Sessions, scaled_sessions
from llmsched.workload.tiers import parse_tiers

KEYS = ("median_ttft_ms", "p99_ttft_ms", "median_itl_ms")
BASELINE = "round-robin"


def workload(a: argparse.Namespace) -> Sessions:
    """The sessions every run replays: starts (Poisson, --session-rate per s) and think times fixed by the seed."""
    cap = a.max_answer if a.answers == "generated" else None
    picked = scaled_sessions(a.sessions, a.seed, a.scale, a.min_turns, a.max_len, max_answer=cap)
    rng = np.random.default_rng((a.seed, 1))
    starts = np.cumsum(rng.exponential(1.0 / a.session_rate, len(picked))) - 1.0 / a.session_rate
    thinks = rng.exponential(a.think_time, sum(len(t) for t in picked))
    tiers = parse_tiers(None) * len(picked)
    return Sessions(picked, np.maximum(starts, 0.0), thinks, tiers, prefix_block=a.block)


def delta(after: list[dict], before: list[dict]) -> list[dict[str, int]]:
    keys = (*PREFIX_KEYS, "served")
    return [{k: int(x.get(k, 0)) - int(y.get(k, 0)) for k in keys} for x, y in zip(after, before, strict=True)]


def one_run(a: argparse.Namespace, url: str, vocab: int, router: str, token_seed: int) -> dict:
    use_router(url, router)
    work = workload(a)
    before = settled_reports(url)
    got = asyncio.run(run_sessions(url, work, vocab, token_seed, a.max_answer, a.answers))
    served_before = sum(r.get("served", 0) for r in before)
    counts = delta(settled_reports(url, served_before + len(got.requests)), before)
    summary = summarize(RunResult(got.requests, BatchLog(), 0, got.replayed.end), parse_tiers(None))
    total = {k: sum(c[k] for c in counts) for k in PREFIX_KEYS}
    run = {
        "router": router,
        "summary": {k: summary[k] for k in (*KEYS, "completed", "duration_s") if k in summary},
        "turns": work.num_turns,
        "sent": len(got.requests),
        "lost": len(got.requests) - summary["completed"],
        "not_sent": work.num_turns - len(got.requests),
        "per_replica": [got.replayed.per_rank.get(i, 0) for i in range(len(counts))],
        "prefix_cache": counts,
        "hit_rate": hit_rate(total),
        "hit_rate_per_replica": [hit_rate(c) for c in counts],
        "prompt_tokens": sum(r.prompt_len for r in got.requests),
    }
    rates = ", ".join(f"{x:.1%}" if x is not None else "-" for x in run["hit_rate_per_replica"])
    print(
        f"{router}: hit rate {run['hit_rate']:.1%} (replicas {rates}), requests per replica {run['per_replica']}, "
        f"lost {run['lost']}, median TTFT {summary['median_ttft_ms']:.0f} ms, p99 TTFT {summary['p99_ttft_ms']:.0f} "
        f"ms, median ITL {summary['median_itl_ms']:.1f} ms",
        file=sys.stderr,
    )
    return run


def spread(values: list[float]) -> list[float | None]:
    """Each run against the median of the others (value / median - 1)."""
    if len(values) < 2:
        return [None] * len(values)
    return [v / float(np.median(values[:i] + values[i + 1 :])) - 1 for i, v in enumerate(values)]


def report(runs: dict[str, list[dict]]) -> dict:
    out: dict = {}
    for name, rs in runs.items():
        queries = sum(sum(c["prefix_cache_queries"] for c in r["prefix_cache"]) for r in rs)
        hits = sum(sum(c["prefix_cache_hits"] for c in r["prefix_cache"]) for r in rs)
        per_replica = [
            hit_rate({k: sum(r["prefix_cache"][i][k] for r in rs) for k in PREFIX_KEYS})
            for i in range(len(rs[0]["prefix_cache"]))
        ]
        summaries = [r["summary"] for r in rs]
        out[name] = {
            "hit_rate": hits / queries if queries else None,
            "hit_rate_per_run": [r["hit_rate"] for r in rs],
            "hit_rate_per_replica": per_replica,
            "median": {k: float(np.median([s[k] for s in summaries])) for k in KEYS},
            "spread_per_run": {k: spread([s[k] for s in summaries]) for k in KEYS},
            "leave_one_out": leave_one_out(summaries, KEYS),
            "per_replica": [r["per_replica"] for r in rs],
            "lost": sum(r["lost"] + r["not_sent"] for r in rs),
        }
    base = runs.get(BASELINE)
    for name, rs in runs.items():
        if name != BASELINE and base:
            pairs = zip(rs, base, strict=True)
            ratios = [r["summary"]["median_ttft_ms"] / b["summary"]["median_ttft_ms"] for r, b in pairs]
            out[name]["median_ttft_ratio_per_run"] = ratios
            out[name]["median_ttft_ratio"] = float(np.median(ratios))
    return out


def print_report(out: dict) -> None:
    print(f"\n{'router':<16}{'hit rate':>9}{'per replica':>16}{'lost':>6}{'med TTFT':>10}{'p99 TTFT':>10}"
          f"{'med ITL':>9}  TTFT runs vs others   ratio to RR per run")  # fmt: skip
    for name, x in out.items():
        rep = "/".join(f"{v:.1%}" if v is not None else "-" for v in x["hit_rate_per_replica"])
        sp = ",".join(f"{v:+.0%}" for v in x["spread_per_run"]["median_ttft_ms"] if v is not None) or "-"
        ratio = ",".join(f"{v:.2f}" for v in x.get("median_ttft_ratio_per_run", [])) or "-"
        m = x["median"]
        print(f"{name:<16}{x['hit_rate']:>9.1%}{rep:>16}{x['lost']:>6}{m['median_ttft_ms']:>10.0f}"
              f"{m['p99_ttft_ms']:>10.0f}{m['median_itl_ms']:>9.1f}  {sp:<20} {ratio}")  # fmt: skip
    print("target: a prefix router's median TTFT <= 0.7x round-robin's, its hit rate higher, no request lost")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="model folder (default: the tiny random Llama, built here)")
    ap.add_argument("--routers", default="round-robin,prefix-affinity,cache-aware,prefix-score")
    ap.add_argument("--policy", default="slai", help="the plugin's policy in each replica")
    ap.add_argument("--repeats", type=int, default=3, help="runs per router (routers alternating)")
    ap.add_argument("--sessions", type=int, default=12, help="sessions per run")
    ap.add_argument("--session-rate", type=float, default=0.3, help="sessions started per second (Poisson)")
    ap.add_argument("--think-time", type=float, default=3.0, help="mean think time between turns (s, exponential)")
    ap.add_argument("--scale", type=float, default=0.5, help="ShareGPT user and answer lengths x this")
    ap.add_argument("--min-turns", type=int, default=4, help="sessions with fewer turns (after the cut) are skipped")
    ap.add_argument("--max-len", type=int, default=1024, help="a session ends before a turn longer than this")
    ap.add_argument("--max-answer", type=int, default=16, help="served answer tokens at most")
    ap.add_argument("--answers", choices=("generated", "recorded"), default="generated",
                    help="what the next turn's prompt holds: the generated answer or the recorded one (all of it)")
    ap.add_argument("--num-blocks", type=int, default=20, help="KV pool per replica, vLLM blocks (128 tokens on CPU)")
    ap.add_argument("--max-num-seqs", type=int, default=4)
    ap.add_argument("--token-budget", type=int, default=512)
    ap.add_argument("--block", type=int, default=128, help="prefix id block of the workload (vLLM CPU's block size)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--port", type=int, default=8766)
    ap.add_argument("--out", default=None, help="write the JSON report here")
    return ap.parse_args()


def main() -> None:
    a = parse_args()
    from llmsched.integrations.ray_serve import server
    from llmsched.integrations.ray_serve.app import ServeConfig
    from llmsched.integrations.ray_serve.replica import ReplicaOptions
    from llmsched.integrations.vllm.models import build_tiny_llama

    model = a.model or str(build_tiny_llama(Path(tempfile.mkdtemp(prefix="served_sessions.")) / "tiny"))
    vocab = int(read_hf_config(model)["vocab_size"])
    routers = a.routers.split(",")
    work = workload(a)
    lengths = [p for s in work.sessions for p, _ in s.turns]
    print(f"{len(work.sessions)} sessions, {work.num_turns} turns, prompts {min(lengths)}-{max(lengths)} tokens "
          f"(median {np.median(lengths):.0f})", file=sys.stderr)  # fmt: skip
    opt = ReplicaOptions(max_num_seqs=a.max_num_seqs, token_budget=a.token_budget, num_blocks=a.num_blocks,
                         max_model_len=a.max_len, prefix_caching=True)  # fmt: skip
    cfg = ServeConfig(model, (opt, opt), router=routers[0], policy=a.policy, seed=a.seed)
    served = server.start(cfg, port=a.port, num_cpus=2)
    print(f"start-up of the 2-replica app: {served.startup_s:.1f} s", file=sys.stderr)
    runs: dict[str, list[dict]] = {name: [] for name in routers}
    try:
        import httpx

        warm = {"prompt": [5] * 8, "max_tokens": 2}
        httpx.post(served.url + "/v1/completions", json=warm, timeout=60).raise_for_status()  # makes the router
        replicas = replica_reports(served.url)
        for rep in range(a.repeats):
            for j, name in enumerate(routers):
                print(f"repeat {rep + 1}: ", end="", file=sys.stderr)
                runs[name].append(one_run(a, served.url, vocab, name, 1000 * (rep + 1) + j))
                if a.out:  # after every run: a run cut short keeps what was measured
                    done = {k: v for k, v in runs.items() if len(v) == len(runs[routers[0]])}
                    record = {"args": vars(a), "model": model, "startup_s": served.startup_s, "replicas": replicas,
                              "routers": report(done), "runs": runs}  # fmt: skip
                    Path(a.out).write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
    finally:
        server.stop(served)
    print_report(report(runs))


if __name__ == "__main__":
    main()
