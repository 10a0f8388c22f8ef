import json
import subprocess
import sys

from llmsched.cli import main

KEYS = {
    "median_ttft_ms",
    "p99_ttft_ms",
    "p99_itl_ms",
    "median_tpot_ms",
    "completed",
    "unfinished",
    "rejected",
    "request_throughput",
    "mean_e2el_ms",
    "p90_itl_ms",
    "output_throughput",
    "request_goodput",
}


def cli(capsys, *args):
    try:
        main(list(args))
        code = 0
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_simulate_json_is_one_object(capsys, write_trace):
    trace = write_trace([(100 + i, 5 + i % 7) for i in range(50)])
    code, out, _ = cli(
        capsys,
        "simulate",
        "--policy",
        "sarathi",
        "--trace",
        trace,
        "--qps",
        "2",
        "--json",
        "--tiers",
        "paying:0.05:tbt=0.1,free:0.95:tbt=0.5",
    )
    assert code == 0
    summary = json.loads(out)
    assert KEYS <= summary.keys()
    assert summary["completed"] == 50
    assert set(summary["tiers"]) == {"paying", "free"}


def test_simulate_out_writes_files(capsys, write_trace, tmp_path):
    trace = write_trace([(100 + i, 5) for i in range(20)])
    cli(capsys, "simulate", "--trace", trace, "--out", str(tmp_path / "o"), "--token-times")
    files = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert files == ["batches.csv", "requests.csv", "summary.json", "tokens.csv"]

    def table(name):
        return [x for x in (tmp_path / "o" / name).read_text().splitlines() if not x.startswith("#")]

    tokens = table("tokens.csv")
    assert len(tokens) == 1 + 20 * 5 and tokens[1].startswith("0,0,")
    lines = table("requests.csv")
    assert len(lines) == 21 and lines[0].startswith("id,replica,gpu,arrival_s,tier")
    assert lines[1].startswith("0,0,rtx6000ada,")


def test_bad_trace_from_a_real_process(write_trace):
    trace = write_trace([(5, "x")])
    p = subprocess.run(
        [sys.executable, "-c", "from llmsched.cli import main; main()", "simulate", "--trace", trace],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 2
    assert p.stderr.strip().endswith("line 2: num_decode_tokens is 'x', expected a positive integer")
    assert "Traceback" not in p.stderr and p.stdout == ""


def test_perf_json(capsys):
    code, out, _ = cli(
        capsys,
        "perf",
        "--prefill-tokens",
        "512",
        "--decodes",
        "8",
        "--prefill-context",
        "100",
        "--decode-context",
        "2000",
        "--json",
    )
    res = json.loads(out)
    assert res["prefill_context"] == 100 and res["decode_context"] == 2000
    assert 30 < res["batch_time_ms"] < 80


def test_simulate_a_hugging_face_model_directory_with_its_fitted_profile(capsys, write_trace, tmp_path):
    """`llmsched profile --backend vllm` names a fit after the model directory; `simulate --model DIR
    --perf-model FIT` takes both (the model's shape from its config.json)."""
    from pathlib import Path

    model = tmp_path / "Small-LM"
    model.mkdir()
    cfg = {"num_hidden_layers": 4, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
           "head_dim": 64, "intermediate_size": 512, "vocab_size": 1000, "max_position_embeddings": 4096}  # fmt: skip
    (model / "config.json").write_text(json.dumps(cfg))
    fit = json.loads((Path(__file__).parents[1] / "benchmarks/results/smollm2_vllm_cpu_profile.fit.json").read_text())
    fit["model"] = "small-lm"  # the directory's name, lower-case
    (tmp_path / "fit.json").write_text(json.dumps(fit))
    trace = write_trace([(100 + i, 5 + i % 7) for i in range(40)])
    args = ["simulate", "--model", str(model), "--perf-model", str(tmp_path / "fit.json"), "--trace", trace,
            "--qps", "2", "--block-size", "128", "--num-blocks", "60", "--json"]  # fmt: skip
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["completed"] == 40 and summary["kv_blocks"] == 60
    fit["model"] = "another-model"
    (tmp_path / "other.json").write_text(json.dumps(fit))
    code, _, err = cli(capsys, *[str(tmp_path / "other.json") if a.endswith("fit.json") else a for a in args])
    assert code == 2 and "fitted for model 'another-model', not 'small-lm'" in err


def test_over_long_requests_are_rejected_and_reported(capsys, write_trace):
    trace = write_trace([(100, 5), (700, 400), (120, 5), (300, 10)])
    code, out, _ = cli(capsys, "simulate", "--trace", trace, "--max-model-len", "1000", "--json")
    summary = json.loads(out)
    assert code == 0 and summary["completed"] == 3 and summary["rejected"] == 1
    assert summary["not_completed_reasons"] == {"prompt + output of 1100 tokens exceeds max_model_len 1000": 1}
    code, out, _ = cli(capsys, "simulate", "--trace", trace, "--json")  # the model's 8,192 tokens fit them all
    assert json.loads(out)["completed"] == 4


def test_a_timed_trace_replays_its_arrivals_and_cannot_vary_the_rate(capsys, write_trace):
    trace = write_trace([(100, 5, 0.0), (120, 5, 50.0)], "num_prefill_tokens,num_decode_tokens,arrived_at")
    code, out, _ = cli(capsys, "simulate", "--trace", trace, "--qps", "100", "--json")
    assert code == 0 and json.loads(out)["duration_s"] > 50  # the second request arrived at 50 s, not at 100 QPS
    code, _, err = cli(capsys, "capacity", "--trace", trace)
    assert code == 2 and "--arrival poisson-capped" in err


def test_policy_option_gives_each_policy_its_knobs():
    from llmsched.commands.options import PolicyOption, policy_knobs

    t = PolicyOption()
    opts = tuple(t.convert(v, None, None) for v in ("deadline-sized:cap_s=2.5", "deadline-sized:srpt=false"))
    assert opts == (("deadline-sized", "cap_s", 2.5), ("deadline-sized", "srpt", False))
    knobs = policy_knobs(opts, ["slai", "deadline-sized"])
    assert knobs == {"slai": {}, "deadline-sized": {"cap_s": 2.5, "srpt": False}}
    assert policy_knobs((t.convert("aging=10", None, None),), ["deadline-sized"]) == {"deadline-sized": {"aging": 10}}
