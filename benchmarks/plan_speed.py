"""Planner speed, and the same plan on a two-node local Ray cluster.

Runs `llmsched plan` over the issue's space (Llama-3.1-8B and 70B; H100, A100, L40S, A10G; TP 1-8; up to 16 GPUs;
sarathi and slai; round-robin, jsq, least-work: 836 configurations) on the built-in workload, with the process
pool (`--workers`, default 2), and prints the wall seconds, the CPU seconds of the plan and its workers, the
configurations, the runs, and each model's answer. Target (issue "Plan a deployment"): <= 2 minutes on 2 cores.

With `--ray-nodes N` it then starts N Ray nodes on this machine (`ray start`, one CPU each: a head and N - 1 that
join it), runs the same plan with `--backend ray --ray-address`, stops them, and says whether the two plans are
identical (plan.json, apart from nothing: both carry the same settings).

    python benchmarks/plan_speed.py [--qps 10] [--workers 2] [--ray-nodes 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0
SPACE = ["--model", "llama-3.1-8b,llama-3.1-70b", "--gpus", "h100-80gb,a100-80gb,l40s,a10g", "--max-gpus", "16"]
RAY_PORT = "6399"


def plan(args: list[str], out: Path) -> dict:
    """One `llmsched plan --json` in a fresh process: its plan, wall and CPU seconds (its own and its workers')."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    cmd = [sys.executable, "-c", "from llmsched.cli import main; main()", "plan", *args, "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"plan failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"plan": json.loads(proc.stdout), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1)}


def ray(*args: str) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    subprocess.run(["ray", *args], check=True, capture_output=True, env=env)


def stop_ray(temp_dir: str) -> None:
    """Stop the nodes this script started, and only them (`ray stop` would stop every Ray process on the machine,
    another user's cluster too): their processes name the temp dir in their command lines."""
    subprocess.run(["pkill", "-TERM", "-f", temp_dir], check=False)
    time.sleep(2)
    subprocess.run(["pkill", "-KILL", "-f", temp_dir], check=False)


def summary(p: dict) -> dict:
    models = {}
    for name, m in p["models"].items():
        a = m["answer"]
        models[name] = {
            "answer": a["label"] if a else None,
            "capacity_qps": a["capacity_qps"] if a else None,
            "cost_per_hour": a["cost_per_hour"] if a else None,
            "configurations": m["configurations"],
            "simulated": m["simulated"],
            "frontier": len(m["frontier"]),
        }
    return {"runs": p["runs"], "models": models}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--qps", default="10")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--ray-nodes", type=int, default=0, help="also run the plan on this many local Ray nodes")
    ap.add_argument("--extra", default="", help="more `llmsched plan` flags, space-separated")
    ap.add_argument("--out", default=None, help="write the figures as JSON here")
    args = ap.parse_args()
    flags = ["--qps", args.qps, *SPACE, *args.extra.split()]
    res: dict = {"command": "llmsched plan " + " ".join(flags), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as tmp:
        proc = plan([*flags, "--workers", str(args.workers)], Path(tmp) / "process")
        res["process"] = {"workers": args.workers, "wall_s": proc["wall_s"], "cpu_s": proc["cpu_s"],
                          **summary(proc["plan"])}  # fmt: skip
        print(f"process pool, {args.workers} workers: {proc['wall_s']} s wall, {proc['cpu_s']} CPU s "
              f"(target {TARGET_S:.0f} s wall on 2 cores); {proc['plan']['runs']} runs")  # fmt: skip
        for name, m in res["process"]["models"].items():
            print(f"  {name}: {m['configurations']} configurations, {m['simulated']} simulated; answer {m['answer']}")
        if args.ray_nodes:
            temp_dir = tempfile.mkdtemp(prefix="llmsched-plan-ray-")
            try:
                ray("start", "--head", "--port", RAY_PORT, "--num-cpus", "1", "--include-dashboard", "false",
                    "--disable-usage-stats", "--temp-dir", temp_dir)  # fmt: skip
                for _ in range(args.ray_nodes - 1):
                    ray("start", "--address", f"127.0.0.1:{RAY_PORT}", "--num-cpus", "1", "--disable-usage-stats")
                on_ray = plan([*flags, "--backend", "ray", "--ray-address", f"127.0.0.1:{RAY_PORT}"],
                              Path(tmp) / "ray")  # fmt: skip
            finally:
                stop_ray(temp_dir)
            same = json.dumps(on_ray["plan"], sort_keys=True) == json.dumps(proc["plan"], sort_keys=True)
            res["ray"] = {"nodes": args.ray_nodes, "wall_s": on_ray["wall_s"], "identical_plan": same,
                          **summary(on_ray["plan"])}  # fmt: skip
            print(f"Ray, {args.ray_nodes} local nodes: {on_ray['wall_s']} s wall; plan identical to the process "
                  f"pool's: {same}")  # fmt: skip
    res["load_average_after"] = os.getloadavg()
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
