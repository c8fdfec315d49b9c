#!/usr/bin/env bash
# Check out the TensorRT-LLM examples tree (and triton_backend/ templates) matching the
# installed tensorrt_llm wheel, so scripts and the library can never drift apart.
# Usage: fetch-trtllm-tree.sh DEST
set -euo pipefail
dest=${1:?usage: fetch-trtllm-tree.sh DEST}
version=$(python -c 'import importlib.metadata as m; print(m.version("tensorrt_llm"))')
echo "TensorRT-LLM ${version}: checking out examples/ and triton_backend/ at v${version} into ${dest}"
export GIT_LFS_SKIP_SMUDGE=1   # the examples are plain Python; nothing there needs LFS blobs
git clone --quiet --depth 1 --filter=blob:none --sparse --branch "v${version}" \
    https://github.com/NVIDIA/TensorRT-LLM.git "${dest}"
git -C "${dest}" sparse-checkout set examples triton_backend tensorrt_llm/version.py
# The examples' own requirements (datasets, evaluate, ...) for convert/quantize/run.py.
pip install --no-cache-dir -r "${dest}/examples/quantization/requirements.txt" || true
test -f "${dest}/examples/run.py"
test -d "${dest}/examples/models/core/llama"
test -d "${dest}/triton_backend/all_models/inflight_batcher_llm"
