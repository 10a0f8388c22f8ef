"""The paper setting's first 200 requests against the reference's own code paths (tests/data/
paper_setting_first200.csv, written by scripts/make_paper_golden.py with pandas and Python's random as the
reference uses them): order, lengths, arrival times at 1.6 QPS and tiers."""

import csv
from pathlib import Path

from llmsched.studies.reproduce import paper_specs
from llmsched.workload import build_requests
from llmsched.workload.build import reference_order

GOLDEN = Path(__file__).parent / "data" / "paper_setting_first200.csv"


def golden() -> list[dict[str, str]]:
    with open(GOLDEN, newline="") as f:
        return list(csv.DictReader(f))


def test_the_paper_settings_first_200_requests_are_the_references():
    rows = golden()
    assert len(rows) == 200
    spec = paper_specs(None)[0].at_qps(1.6)
    requests, _ = build_requests(spec.workload, 8192)
    first = requests[:200]
    assert [int(r["trace_row"]) for r in rows] == list(reference_order(30_731, 42)[:200])
    assert [(r.prompt_len, r.decode_len) for r in first] == [
        (int(g["num_prefill_tokens"]), int(g["num_decode_tokens"])) for g in rows
    ]
    assert [r.arrival for r in first] == [float(g["arrived_at"]) for g in rows]  # bit for bit
    assert [r.tier == "paying" for r in first] == [g["strict"] == "1" for g in rows]
    assert [(r.tbt, r.priority) for r in first] == [(0.1, 0) if g["strict"] == "1" else (0.5, 1) for g in rows]
