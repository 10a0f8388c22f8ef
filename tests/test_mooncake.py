import json

import pytest

from llmsched.cli import main
from llmsched.errors import UserError
from llmsched.studies.run import run
from llmsched.studies.spec import RunSpec
from llmsched.workload import WorkloadConfig, build_requests
from llmsched.workload.formats import load_rows
from llmsched.workload.mooncake import load_mooncake
from llmsched.workload.prefix import prefix_share
from llmsched.workload.request import REJECTED

ROWS = [
    {"timestamp": 0, "input_length": 1000, "output_length": 10, "hash_ids": [0, 1]},
    {"timestamp": 500, "input_length": 1500, "output_length": 20, "hash_ids": [0, 1, 2]},
    {"timestamp": 500, "input_length": 512, "output_length": 5, "hash_ids": [0]},
    {"timestamp": 2000, "input_length": 700, "output_length": 7, "hash_ids": [3, 4]},
]


@pytest.fixture
def write_jsonl(tmp_path):
    def write(rows, name="trace.jsonl"):
        path = tmp_path / name
        path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
        return str(path)

    return write


def test_rows_carry_lengths_times_and_prefix_ids(write_jsonl):
    rows = load_mooncake(write_jsonl(ROWS))
    assert [(r.prompt_len, r.decode_len, r.arrived_at) for r in rows] == [
        (1000, 10, 0.0),
        (1500, 20, 0.5),
        (512, 5, 0.5),
        (700, 7, 2.0),
    ]
    assert rows[1].prefix_ids == (0, 1, 2) and rows[1].prefix_block == 512


def test_known_by_content_without_the_suffix(write_jsonl):
    rows = load_rows(write_jsonl(ROWS, name="trace.txt"))
    assert rows[3].prefix_ids == (3, 4)


def test_replays_timestamps_in_order_by_default_and_scales_them(write_jsonl):
    path = write_jsonl(ROWS)
    reqs, _ = build_requests(WorkloadConfig(trace=path))
    assert [r.arrival for r in reqs] == [0.0, 0.5, 0.5, 2.0]
    assert [r.prefix_ids for r in reqs] == [(0, 1), (0, 1, 2), (0,), (3, 4)]
    fast, _ = build_requests(WorkloadConfig(trace=path, rate_scale=2.0))
    assert [r.arrival for r in fast] == [0.0, 0.25, 0.25, 1.0]
    poisson, _ = build_requests(WorkloadConfig(trace=path, arrival="poisson", qps=4.0))
    assert [r.prefix_ids for r in poisson] == [r.prefix_ids for r in reqs]  # the trace's order, new times
    with pytest.raises(UserError, match="--rate-scale"):
        build_requests(WorkloadConfig(trace=path, arrival="poisson", rate_scale=2.0))


def test_prefix_share_counts_blocks_seen_before(write_jsonl):
    reqs, _ = build_requests(WorkloadConfig(trace=write_jsonl(ROWS)))
    assert prefix_share(reqs) == (2 + 1, 8)


@pytest.mark.parametrize(
    "line,match",
    [
        ("{not json", "line 2: not JSON"),
        ("[1, 2]", "line 2: a JSON list"),
        ({"timestamp": 1, "input_length": 5, "output_length": 1}, "line 2: missing field 'hash_ids'"),
        ({"timestamp": 1, "input_length": 5.5, "output_length": 1, "hash_ids": [9]}, "line 2: input_length is 5.5"),
        ({"timestamp": 1, "input_length": "5", "output_length": 1, "hash_ids": [9]}, 'input_length is "5"'),
        ({"timestamp": 1, "input_length": 5, "output_length": 0, "hash_ids": [9]}, "line 2: output_length is 0"),
        ({"timestamp": 1, "input_length": 5, "output_length": True, "hash_ids": [9]}, "output_length is true"),
        ({"timestamp": -1, "input_length": 5, "output_length": 1, "hash_ids": [9]}, "line 2: timestamp is -1"),
        ({"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": []}, "line 2: hash_ids is \\[\\]"),
        ({"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": "9"}, 'hash_ids is "9"'),
        ({"timestamp": 1, "input_length": 5, "output_length": 1, "hash_ids": [1.5]}, "line 2: hash_ids holds"),
        ({"timestamp": 1, "input_length": 513, "output_length": 1, "hash_ids": [9]}, "1 hash_ids for input_length 513"),
        ({"timestamp": 1, "input_length": 512, "output_length": 1, "hash_ids": [9, 10]}, "expected 1 \\(one per 512"),
    ],
)
def test_bad_lines_name_the_file_and_line(write_jsonl, line, match):
    path = write_jsonl([ROWS[0], line])
    with pytest.raises(UserError, match=match) as e:
        load_rows(path)
    assert str(e.value).startswith(path) and "\n" not in str(e.value)


def test_timestamps_must_not_decrease(write_jsonl):
    with pytest.raises(UserError, match="line 3: timestamp 400 is before the previous line's 500"):
        load_rows(write_jsonl([ROWS[0], ROWS[1], {**ROWS[2], "timestamp": 400}]))


def test_blank_lines_are_skipped_and_an_empty_file_is_an_error(write_jsonl):
    assert len(load_rows(write_jsonl([ROWS[0], "", ROWS[1]]))) == 2
    with pytest.raises(UserError, match="no requests"):
        load_rows(write_jsonl(["", "  "]))


def test_requests_longer_than_the_model_are_rejected_one_by_one(write_jsonl):
    reqs, _ = build_requests(WorkloadConfig(trace=write_jsonl(ROWS)), max_model_len=600)
    assert [r.state == REJECTED for r in reqs] == [True, True, False, True]
    assert reqs[0].reason == "prompt + output of 1010 tokens exceeds max_model_len 600"


def test_simulate_replays_a_mooncake_trace_and_rejects_long_prompts(capsys, write_jsonl):
    long = {"timestamp": 2500, "input_length": 9000, "output_length": 3, "hash_ids": list(range(10, 28))}
    path = write_jsonl([*ROWS, long])
    try:
        main(["simulate", "--trace", path, "--rate-scale", "4", "--json"])
    except SystemExit as e:
        assert e.code in (0, None)
    summary = json.loads(capsys.readouterr().out)
    assert (summary["completed"], summary["rejected"]) == (4, 1)  # mistral-7b: 8,192 tokens at most


def test_rate_scale_with_generated_arrivals_is_refused(capsys, write_jsonl):
    with pytest.raises(SystemExit) as e:
        main(["simulate", "--trace", write_jsonl(ROWS), "--arrival", "poisson", "--rate-scale", "2"])
    assert e.value.code == 2
    assert "--rate-scale" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["compare", "capacity"])
def test_commands_that_vary_qps_refuse_a_replayed_trace(capsys, write_jsonl, tmp_path, command):
    with pytest.raises(SystemExit) as e:
        main(
            [
                command,
                "--trace",
                write_jsonl(ROWS),
                "--workers",
                "1",
                *(["--out", str(tmp_path / "o")] * (command == "compare")),
            ]
        )
    assert e.value.code == 2 and "--arrival poisson" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_a_replay_reports_its_own_rate(write_jsonl):
    _, summary = run(RunSpec(workload=WorkloadConfig(trace=write_jsonl(ROWS), qps=7.0, rate_scale=2.0)))
    assert summary["qps"] == pytest.approx(3 / 1.0)  # 4 arrivals over 1 s once twice as fast
