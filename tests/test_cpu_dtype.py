"""The dtype the vLLM engine runs a model in on a CPU: bfloat16 only where the CPU computes it natively."""

import json

import pytest

from llmsched.integrations.vllm.engine import EngineSetup, cpu_dtype, engine_args


@pytest.fixture
def model(tmp_path):
    def make(dtype: str) -> str:
        d = tmp_path / dtype
        d.mkdir(exist_ok=True)
        (d / "config.json").write_text(json.dumps({"torch_dtype": dtype}))
        return str(d)

    return make


def cpuinfo(tmp_path, flags: str) -> str:
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: test\nflags\t\t: fpu sse2 {flags}\n\n")
    return str(path)


def test_bfloat16_runs_in_float32_without_native_bfloat16(model, tmp_path):
    assert cpu_dtype(model("bfloat16"), cpuinfo(tmp_path, "avx2 fma")) == "float32"
    assert cpu_dtype(model("bfloat16"), cpuinfo(tmp_path, "avx2 avx512f avx512_bf16")) == "auto"
    assert cpu_dtype(model("bfloat16"), cpuinfo(tmp_path, "avx2 amx_bf16 amx_tile")) == "auto"
    assert cpu_dtype(model("float32"), cpuinfo(tmp_path, "avx2")) == "auto"
    assert cpu_dtype(model("float16"), str(tmp_path / "no-cpuinfo")) == "auto"


def test_engine_args_take_a_given_dtype_over_the_cpu_default(model):
    assert engine_args(EngineSetup(model("bfloat16"), dtype="bfloat16"), "slai")["dtype"] == "bfloat16"
    assert engine_args(EngineSetup(model("float32")), "slai")["dtype"] == "auto"
