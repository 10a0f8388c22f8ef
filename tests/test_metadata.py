"""Every result file says what was run: model, GPU, KV blocks, trace (name and content hash), arrivals, tiers, SLO,
seed, llmsched's version and the command line (studies/metadata.py)."""

import csv
import hashlib
import json

from llmsched.cli import main
from llmsched.workload import builtin_trace_path

KEYS = {"model", "gpu", "kv_blocks", "trace", "arrival", "tiers", "slo", "seed", "llmsched_version", "command"}
TIERS = "paying:0.25:tbt=0.1,free:0.75:tbt=0.5"


def run_cli(capsys, *args):
    try:
        main(list(args))
    except SystemExit as e:
        assert e.code == 0, capsys.readouterr().err
    return capsys.readouterr().out


def sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()[:12]


def check(meta, trace, *args):
    assert KEYS <= meta.keys()
    assert meta["trace"] == {"name": trace, "sha256": sha(trace)}
    assert meta["model"] == "mistral-7b" and meta["seed"] == 7 and meta["arrival"] == {"process": "poisson-capped"}
    assert [t["name"] for t in meta["tiers"]] == ["paying", "free"] and meta["kv_blocks"] > 0
    assert meta["command"] == "llmsched " + " ".join(args)


def csv_meta(path):
    """The `# key: value` lines at the top of a CSV (JSON values decoded), and the table below them."""
    lines = path.read_text().splitlines()
    head = [x[2:] for x in lines if x.startswith("# ")]
    meta = {}
    for line in head:
        key, _, value = line.partition(": ")
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    rows = list(csv.DictReader(x for x in lines if not x.startswith("#")))
    return meta, rows


def test_simulate_files_and_json(capsys, write_trace, tmp_path):
    trace = write_trace([(100 + i, 5) for i in range(30)])
    out = tmp_path / "o"
    args = ("simulate", "--trace", trace, "--tiers", TIERS, "--seed", "7", "--out", str(out), "--token-times")
    run_cli(capsys, *args)
    check(json.loads((out / "summary.json").read_text())["metadata"], trace, *args)
    for name in ("requests.csv", "batches.csv", "tokens.csv"):
        meta, rows = csv_meta(out / name)
        check(meta, trace, *args)
        assert rows
    _, rows = csv_meta(out / "requests.csv")
    assert {r["replica"] for r in rows} == {"0"} and {r["gpu"] for r in rows} == {"rtx6000ada"}
    args = ("simulate", "--trace", trace, "--tiers", TIERS, "--seed", "7", "--json")
    check(json.loads(run_cli(capsys, *args))["metadata"], trace, *args)


def test_compare_csv_html_and_json(capsys, write_trace, tmp_path):
    trace = write_trace([(100 + 37 * (i % 20), 5) for i in range(60)])
    out = tmp_path / "c"
    args = ("compare", "--policies", "sarathi,slai", "--qps", "1,2", "--trace", trace, "--tiers", TIERS)
    args += ("--seed", "7", "--workers", "1", "--out", str(out), "--json")
    res = json.loads(run_cli(capsys, *args))
    check(res["metadata"], trace, *args)
    assert set(res["metadata"]["policies"]) == {"sarathi", "slai"}
    meta, rows = csv_meta(out / "compare.csv")
    check(meta, trace, *args)
    assert len(rows) == 4
    assert {(r["model"], r["gpu"], r["trace_sha256"], r["seed"]) for r in rows} == {
        ("mistral-7b", "rtx6000ada", sha(trace), "7")
    }
    html = (out / "report.html").read_text()
    assert html.index("What was run") < html.index("Runs") and sha(trace) in html


def test_capacity_and_theory_json(capsys):
    args = ("capacity", "--policies", "sarathi", "--num-requests", "60", "--tiers", TIERS, "--seed", "7")
    args += ("--workers", "1", "--max-rounds", "2", "--json")
    meta = json.loads(run_cli(capsys, *args))["metadata"]
    builtin = f"built-in paper ({builtin_trace_path().name})"
    assert meta["trace"] == {"name": builtin, "sha256": sha(builtin_trace_path())}
    assert meta["slo"] == "ttft_p50<=0.5,itl_p99<=tier,stable" and meta["num_requests"] == 60
    assert KEYS <= meta.keys() and meta["command"] == "llmsched " + " ".join(args)
    args = ("theory", "--num-requests", "200", "--seed", "7", "--json")
    meta = json.loads(run_cli(capsys, *args))["metadata"]
    assert KEYS <= meta.keys() and meta["seed"] == 7 and meta["trace"]["sha256"] == sha(builtin_trace_path())


def test_a_cluster_names_each_replicas_gpu_and_batch_time_model(capsys, write_trace):
    trace = write_trace([(100 + i, 5) for i in range(30)])
    args = ("simulate", "--trace", trace, "--replicas", "h100-80gb:1,a100-80gb:1", "--router", "jsq", "--json")
    meta = json.loads(run_cli(capsys, *args))["metadata"]
    assert [r["gpu"] for r in meta["replicas"]] == ["h100-80gb", "a100-80gb"]
    models = meta["perf_model"]["builtin"]
    assert len(models) == 2 and "h100-80gb" in models[0] and "a100-80gb" in models[1]
