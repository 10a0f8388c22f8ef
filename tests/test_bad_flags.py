"""Every bad flag is one line on stderr and exit status 2, with no traceback and nothing on stdout, and is refused
before any work starts: click's typed choices and ranges, cross-flag checks (a flag that means nothing without
another), and the checks that need the model or the file system."""

import pytest

from llmsched.cli import main

BAD = [
    # simulate: choices and ranges
    (["simulate", "--policy", "nope"], "Invalid value for '--policy': 'nope' is not one of 'vllm'"),
    (["simulate", "--model", "gpt-9"], "Invalid value for '--model': 'gpt-9' is not one of mistral-7b"),
    (["simulate", "--gpu", "tpu"], "Invalid value for '--gpu': 'tpu' is not one of 'rtx6000ada'"),
    (["simulate", "--gpu", "a100"], "Invalid value for '--gpu': 'a100' is not one of"),
    (["simulate", "--replicas", "rtx6000ada:2,a100:2"], "--replicas: 'a100:2' names no GPU"),
    (["simulate", "--replicas", "2", "--router", "fastest"], "Invalid value for '--router': 'fastest'"),
    (["simulate", "--arrival", "weibull"], "Invalid value for '--arrival': 'weibull'"),
    (["simulate", "--order", "lifo"], "Invalid value for '--order': 'lifo'"),
    (["simulate", "--qps", "0"], "Invalid value for '--qps': 0.0 is not in the range x>0"),
    (["simulate", "--qps", "abc"], "Invalid value for '--qps'"),
    (["simulate", "--seed", "-1"], "Invalid value for '--seed': -1 is not in the range"),
    (["simulate", "--ttft-slo", "-1"], "Invalid value for '--ttft-slo'"),
    (["simulate", "--num-requests", "-3"], "Invalid value for '--num-requests': -3 is not in the range x>=1"),
    (["simulate", "--block-size", "0"], "Invalid value for '--block-size'"),
    (["simulate", "--time-limit", "0"], "Invalid value for '--time-limit'"),
    (["simulate", "--batch-overhead-ms", "-1"], "Invalid value for '--batch-overhead-ms'"),
    (["simulate", "--burstiness", "0", "--arrival", "gamma"], "Invalid value for '--burstiness'"),
    (["simulate", "--tiers", "paying:0.05"], "--tiers"),
    (["simulate", "--trace", "/nonexistent.csv"], "cannot read trace"),
    (["simulate", "--rate-scale", "0"], "Invalid value for '--rate-scale': 0.0 is not in the range x>0"),
    (["simulate", "--think-time", "-1"], "Invalid value for '--think-time'"),
    (["simulate", "--num-sessions", "0"], "Invalid value for '--num-sessions'"),
    (["simulate", "--system-prompts", "4:500"], "Invalid value for '--system-prompts': '4:500', expected K:L:FRACTION"),
    (["simulate", "--system-prompts", "0:500:0.5"], "'--system-prompts': '0:500:0.5', expected K >= 1"),
    (["simulate", "--order", "lpm", "--policy", "slai"], "--order applies only with --policy sarathi"),
    # simulate: flags that mean nothing without another
    (["simulate", "--router", "jsq"], "--router applies only with --replicas"),
    (["simulate", "--order", "spf", "--policy", "slai"], "--order applies only with --policy sarathi"),
    (["simulate", "--burstiness", "4"], "--burstiness applies only with --arrival gamma"),
    (["simulate", "--num-sessions", "3"], "--num-sessions applies to --trace sessions"),
    (["simulate", "--rate-scale", "2"], "--rate-scale scales replayed arrivals"),
    (["simulate", "--trace", "sessions", "--num-requests", "5"], "with --trace sessions use --num-sessions"),
    (["simulate", "--token-times"], "--token-times applies only with --out"),
    (["simulate", "--out", "/proc/x"], "Invalid value for '--out': cannot write in folder /proc/x"),
    # capacity, compare, reproduce
    (["capacity", "--start-qps", "-1"], "Invalid value for '--start-qps'"),
    (["capacity", "--granularity", "1.5"], "Invalid value for '--granularity'"),
    (["capacity", "--max-rounds", "0"], "Invalid value for '--max-rounds'"),
    (["capacity", "--slo", "ttft<1"], "--slo"),
    (["capacity", "--policies", "sarathi,zzz"], "Invalid value for '--policies': 'zzz' is not one of vllm"),
    (["capacity", "--policies", "sarathi,sarathi"], "names one twice"),
    (["capacity", "--policies", ","], "Invalid value for '--policies': is empty"),
    (["capacity", "--workers", "0"], "Invalid value for '--workers'"),
    (["capacity", "--backend", "dask"], "Invalid value for '--backend'"),
    (["capacity", "--ray-address", "auto"], "--ray-address applies only with --backend ray"),
    (["compare", "--qps", "2:1:0.5"], "--qps is '2:1:0.5'"),
    (["compare", "--cdf-qps", "-1"], "Invalid value for '--cdf-qps'"),
    (["compare", "--out", "/proc/x"], "Invalid value for '--out': cannot write in folder /proc/x"),
    (["reproduce", "--out", "/proc/x"], "Invalid value for '--out': cannot write in folder /proc/x"),
    (["reproduce", "--num-requests", "0"], "Invalid value for '--num-requests'"),
    (["reproduce", "--time-limit", "-5"], "Invalid value for '--time-limit'"),
    # perf and theory
    (["perf", "--prefill-tokens", "0", "--decodes", "0"], "the batch is empty"),
    (["perf", "--prefill-tokens", "100000"], "reach token 100000, beyond mistral-7b's 8192-token context"),
    (["perf", "--decodes", "4", "--decode-context", "9000"], "beyond mistral-7b's 8192-token context"),
    (["perf", "--prefill-tokens", "-5"], "Invalid value for '--prefill-tokens'"),
    (["perf", "--gpu", "a100"], "Invalid value for '--gpu'"),
    (["theory", "--tbt", "0"], "Invalid value for '--tbt'"),
    (["theory", "--num-requests", "0"], "Invalid value for '--num-requests'"),
    (["theory", "--model", "gpt-9"], "Invalid value for '--model'"),
    # profile, bench-engine, model
    (["profile", "--model", "mistral-7b", "--budget-s", "-1"], "Invalid value for '--budget-s'"),
    (["profile", "--model", "mistral-7b", "--grid", "huge"], "Invalid value for '--grid': 'huge'"),
    (["profile", "--model", "mistral-7b", "--reps", "0"], "Invalid value for '--reps'"),
    (
        ["profile", "--backend", "vllm", "--model", "mistral-7b", "--grid", "quick"],
        "--grid applies only with --backend torch",
    ),
    (["profile", "--model", "mistral-7b", "--steps-out", "s.csv"], "--steps-out applies only with --backend vllm"),
    (["profile", "--refit", "p.csv", "--out", "q.csv"], "--out applies only when measuring, not with --refit"),
    (["profile", "--model", "mistral-7b", "--out", "/proc/x/p.csv"], "folder /proc/x does not exist"),
    (["profile", "--refit", "p.csv", "--fit-out", "/proc/x/f.json"], "Invalid value for '--fit-out'"),
    (["bench-engine", "--model", "m", "--qps", "0"], "Invalid value for '--qps'"),
    (["bench-engine", "--model", "m", "--qps", "1", "--policies", "slai,zzz"], "'zzz' is not one of vllm-default"),
    (["bench-engine", "--model", "m", "--qps", "1", "--policy-option", "cap_s"], "is not [POLICY:]KEY=VALUE"),
    (
        ["bench-engine", "--model", "m", "--qps", "1", "--policies", "slai", "--policy-option", "slai:cap_s=1"],
        "--policy-option: policy 'slai': SLAIConfig.__init__() got an unexpected keyword argument 'cap_s'",
    ),
    (
        ["bench-engine", "--model", "m", "--qps", "1", "--policies", "slai", "--policy-option", "rad:x=1"],
        "--policy-option rad:x: rad is not among the policies run",
    ),
    (
        [
            "bench-engine",
            "--model",
            "m",
            "--qps",
            "1",
            "--policies",
            "deadline-sized",
            "--perf-model",
            __file__,
            "--policy-option",
            "cap_s=-1",
        ],
        "cap_s positive",
    ),
    (["model", "tiny", "/proc/x"], "Invalid value for 'OUT': cannot write in folder /proc/x"),
    # plan
    (["plan"], "Missing option '--qps'"),
    (["plan", "--qps", "0"], "Invalid value for '--qps': 0.0 is not in the range x>0"),
    (["plan", "--qps", "1", "--gpus", "h100:2"], "Invalid value for '--gpus': 'h100' is not a GPU"),
    (["plan", "--qps", "1", "--gpus", "l40s:abc"], "price of l40s is 'abc', expected a positive USD per GPU-hour"),
    (["plan", "--qps", "1", "--gpus", "l40s:-1"], "price of l40s is '-1', expected a positive USD per GPU-hour"),
    (["plan", "--qps", "1", "--gpus", "l40s:0"], "price of l40s is '0', expected a positive USD per GPU-hour"),
    (["plan", "--qps", "1", "--gpus", "l40s,l40s"], "names l40s twice"),
    (["plan", "--qps", "1", "--model", "gpt-9"], "Invalid value for '--model': 'gpt-9' is not one of mistral-7b"),
    (["plan", "--qps", "1", "--model", "llama-3.1-8b,llama-3.1-8b"], "names one twice"),
    (["plan", "--qps", "1", "--slo", "ttft<1"], "--slo: 'ttft<1' should look like"),
    (["plan", "--qps", "1", "--max-gpus", "0"], "Invalid value for '--max-gpus': 0 is not in the range x>=1"),
    (["plan", "--qps", "1", "--tp", "1,16"], "Invalid value for '--tp': 16 is out of range, expected 1 to 8"),
    (["plan", "--qps", "1", "--tp", "two"], "Invalid value for '--tp': 'two' is not comma-separated integers"),
    (["plan", "--qps", "1", "--routers", "jsq,zzz"], "Invalid value for '--routers': 'zzz' is not one of"),
    (["plan", "--qps", "1", "--policies", "slai,zzz"], "Invalid value for '--policies': 'zzz' is not one of"),
    (["plan", "--qps", "1", "--token-budgets", "0"], "Invalid value for '--token-budgets': 0 is out of range"),
    (["plan", "--qps", "1", "--frontier-cost", "0.5"], "Invalid value for '--frontier-cost'"),
    (["plan", "--qps", "1", "--short-requests", "2000"], "--short-requests 2000 is not below --num-requests 2000"),
    (["plan", "--qps", "1", "--ray-address", "auto"], "--ray-address applies only with --backend ray"),
    (["plan", "--qps", "1", "--out", "/proc/x"], "Invalid value for '--out': cannot write in folder /proc/x"),
    (
        ["plan", "--qps", "1", "--model", "llama-3.1-70b", "--gpus", "a10g", "--max-gpus", "2"],
        "no configuration of the space fits: llama-3.1-70b on 1 x a10g: model llama-3.1-70b does not fit",
    ),
]


@pytest.mark.parametrize("args,match", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_flag_is_one_line_exit_2(capsys, args, match):
    try:
        main(args)
        code = 0
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("llmsched: error: ") and match in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert out == ""
