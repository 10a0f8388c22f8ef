import json

from llmsched.cli import main
from llmsched.studies.grid import parse_grid


def table(path):
    """A result CSV's rows, without its leading `# key: value` metadata lines."""
    return [x for x in path.read_text().splitlines() if not x.startswith("#")]


def run_cli(*args):
    try:
        main(list(args))
    except SystemExit as e:
        return e.code
    return 0


def test_grid_parsing():
    assert parse_grid("0.2:1.0:0.2") == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert parse_grid("1,2.5") == [1.0, 2.5]


def test_compare_writes_csv_plots_and_one_html(write_trace, tmp_path, capsys):
    trace = write_trace([(100 + 97 * (i % 40), 5 + i % 9) for i in range(120)])
    out = tmp_path / "cmp"
    code = run_cli(
        "compare",
        "--policies",
        "sarathi,slai",
        "--qps",
        "1,3",
        "--trace",
        trace,
        "--workers",
        "1",
        "--tiers",
        "paying:0.1:tbt=0.1,free:0.9:tbt=0.5",
        "--out",
        str(out),
    )
    assert code == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "cdf.png",
        "compare.csv",
        "report.html",
        "slo_attainment.png",
        "tbt_vs_qps.png",
        "ttft_by_prompt_length.png",
        "ttft_vs_qps.png",
    ]
    rows = table(out / "compare.csv")
    assert len(rows) == 1 + 2 * 2 and "paying.p99_itl_ms" in rows[0]
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 5 and "src='http" not in html


def without_machine(res):
    """A result less what may differ between machines and worker counts: wall time, the command line."""
    return {**res, "wall_s": None, "metadata": {**res["metadata"], "command": None}}


def test_reproduce_is_the_same_for_any_worker_count(tmp_path, capsys):
    results = {}
    for workers in ("1", "2", "8"):
        out = tmp_path / f"rep{workers}"
        args = ["--num-requests", "200", "--time-limit", "300", "--workers", workers, "--out", str(out), "--json"]
        assert run_cli("reproduce", *args) == 0
        res = json.loads(capsys.readouterr().out)
        assert json.loads((out / "result.json").read_text()) == res
        assert res["metadata"]["command"].endswith(f"--workers {workers} --out {out} --json")
        results[workers] = without_machine(res)
    assert results["1"] == results["2"] == results["8"]
    res = results["1"]
    assert set(res["capacity_qps"]) == {"sarathi", "slai"}
    assert res["capacity_qps"]["sarathi"] > 0
    assert res["capacity_ratio"] == res["capacity_qps"]["slai"] / res["capacity_qps"]["sarathi"]
    assert -1 < res["median_ttft_reduction"] < 1
    assert res["slo"] == "ttft_p50<=0.5,itl_p99<=tier,stable"
    reasons = [d["reason"] for d in res["differences"]]
    assert "bounded queue" in reasons[0] and len(reasons) >= 4
    html = (tmp_path / "rep1" / "report.html").read_text()
    assert html.index("What was run") < html.index("Paper vs llmsched") < html.index("Why they differ")
    assert res["metadata"]["trace"]["sha256"] in html
    meta = res["metadata"]
    assert {"model", "gpu", "kv_blocks", "trace", "arrival", "tiers", "slo", "seed", "llmsched_version"} <= meta.keys()
    assert meta["seed"] == 42 and meta["arrival"] == {"process": "poisson-capped"} and len(meta["tiers"]) == 2


def test_compare_and_capacity_with_replicas(write_trace, tmp_path, capsys):
    trace = write_trace([(100 + 31 * (i % 40), 5 + i % 9) for i in range(200)])
    out = tmp_path / "c"
    assert (
        run_cli(
            "compare",
            "--policies",
            "rad",
            "--replicas",
            "rtx6000ada:1,a100-80gb:1",
            "--router",
            "jsq",
            "--qps",
            "2,4",
            "--trace",
            trace,
            "--workers",
            "1",
            "--out",
            str(out),
        )
        == 0
    )
    rows = table(out / "compare.csv")
    assert "router" in rows[0] and len(rows) == 3
    assert "replica1.gpu" in rows[0] and rows[1].endswith(",a100-80gb")
    capsys.readouterr()
    assert (
        run_cli(
            "capacity",
            "--policies",
            "rad",
            "--replicas",
            "2",
            "--router",
            "least-work",
            "--trace",
            trace,
            "--slo",
            "ttft_p50<=1",
            "--granularity",
            "0.2",
            "--workers",
            "1",
            "--json",
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["capacity_qps"]["rad"] > 0
