# The GPU image: real TensorRT-LLM, its examples tree at the same tag, and this tool.
# Build and run on a GPU host (NVIDIA driver >= 575 for CUDA 12.9, nvidia-container-toolkit):
#   docker build -t trtllm-builder .
#   docker run --rm --gpus all -p 5000:5000 trtllm-builder
# The TensorRT-LLM version is pinned in requirements-gpu.txt only.
#
# CUDA 12.9 / Ubuntu 24.04 / Python 3.12: what TensorRT-LLM 0.21.0 is built and tested with.
FROM nvidia/cuda:12.9.1-devel-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev python3-pip git ca-certificates \
      libopenmpi-dev openmpi-bin \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY requirements-gpu.txt /tmp/requirements-gpu.txt
RUN pip install --upgrade pip setuptools \
 && pip install -r /tmp/requirements-gpu.txt

COPY docker/fetch-trtllm-tree.sh /usr/local/bin/fetch-trtllm-tree.sh
RUN fetch-trtllm-tree.sh /opt/TensorRT-LLM

ENV TRTLLM_DIR=/opt/TensorRT-LLM \
    TRTLLM_BACKEND_DIR=/opt/TensorRT-LLM/triton_backend \
    TRTLLM_BUILDER_CACHE=/var/cache/trtllm-builder \
    COG_PREDICT_TYPE_STUB=predict.py:Predictor \
    OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

WORKDIR /src
COPY . /src
RUN pip install --no-deps /src \
 && python -c "import trtllm_builder, predict"
# Read every example script's and trtllm-build's argument parser once, now, so predictions pay
# nothing for arg validation. Best effort: a script whose import needs the GPU driver is read on
# first use instead (and the plan says so).
RUN trtllm-builder warm-parsers --trtllm-dir /opt/TensorRT-LLM --best-effort

EXPOSE 5000
ENV PORT=5000
CMD ["python", "-m", "cog.server.http", "--host", "0.0.0.0"]
