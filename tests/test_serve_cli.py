"""`llmsched serve` rejects bad flags with one line and exit status 2, before starting Ray or vLLM."""

import sys

import pytest

from llmsched.cli import main


@pytest.fixture
def model_dir(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    return str(tmp_path)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--replicas", "0"], "Invalid value for '--replicas': 0 is not in the range x>=1"),
        (["--replicas", "two"], "Invalid value for '--replicas': 'two' is not a valid integer"),
        (["--router", "fastest"], "Invalid value for '--router': 'fastest' is not one of 'round-robin'"),
        (["--policy", "fifo"], "Invalid value for '--policy': 'fifo' is not one of 'vllm', 'vllm-v1'"),
        (["--policy", "deadline-sized"], "--policy deadline-sized sizes batches by time: give --perf-model"),
        (["--perf-model", "/nonexistent.csv"], "Invalid value for '--perf-model'"),
        (["--port", "70000"], "Invalid value for '--port'"),
        (["--cpus-per-replica", "0"], "Invalid value for '--cpus-per-replica'"),
        (["--replicas", "2", "--replica-options", "max_num_seqs=4"], "given 1 times, expected once per replica (2)"),
        (["--replica-options", "max_num_seqs=-1"], "max_num_seqs='-1', expected a positive number"),
        (["--replica-options", "speed=3"], "'speed=3' is not KEY=VALUE"),
        (["--tiers", "paying:2"], "tier"),
    ],
)
def test_bad_flags_are_one_line_errors(capsys, model_dir, args, expected):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--model", model_dir, *args])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith("llmsched: error: ") and expected in err, err
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()  # nothing was started


def test_missing_model_dir(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--model", str(tmp_path / "none")])
    assert e.value.code == 2 and "not a model directory" in capsys.readouterr().err
