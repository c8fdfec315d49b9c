# syntax=docker/dockerfile:1
# The GPU image: real TensorRT-LLM from one lock, its source trees at the same tag, and this tool,
# serving the Cog HTTP API. Build and run on a GPU host (see README, "The GPU image"):
#
#   docker build -t trtllm-builder .                                   # TensorRT-LLM 1.2.1 (default)
#   docker build -t trtllm-builder:0.21.0 --build-arg TRTLLM_VERSION=0.21.0 .
#   docker run --rm --gpus all --ipc=host --ulimit memlock=-1 -p 5000:5000 trtllm-builder
#
# One switch, TRTLLM_VERSION, picks everything that differs between releases: the CUDA base image (below,
# one stage per release), the lock requirements/trtllm-${TRTLLM_VERSION}.txt (every package ==), and the
# TensorRT-LLM tree scripts/fetch-trees.sh checks out at tag v${TRTLLM_VERSION}.
ARG TRTLLM_VERSION=1.2.1

# Each release's platform, from NVIDIA's release notes (trtllm_builder/plan/versions.py cites them):
# 1.2.1: CUDA 13.1, PyTorch 2.9.1 (cu130), Ubuntu 24.04 / Python 3.12.
FROM nvidia/cuda:13.1.1-devel-ubuntu24.04 AS platform-1.2.1
# 0.21.0: CUDA 12.9, PyTorch 2.7.1, TensorRT 10.11, Ubuntu 24.04 / Python 3.12.
FROM nvidia/cuda:12.9.1-devel-ubuntu24.04 AS platform-0.21.0

FROM platform-${TRTLLM_VERSION}
ARG TRTLLM_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_DISABLE_PROGRESS_BARS=1

# libopenmpi-dev: TensorRT-LLM's mpi4py and multi-rank runs; tini: PID 1 that forwards signals and
# reaps the process groups steps leave behind.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev git ca-certificates tini \
      libopenmpi-dev openmpi-bin \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Every Python package from the lock (its --extra-index-url lines name NVIDIA's and PyTorch's indexes).
# `pip check` fails the build if anything installed does not fit together.
COPY requirements/trtllm-${TRTLLM_VERSION}.txt /tmp/lock.txt
RUN pip install --upgrade pip \
 && pip install -r /tmp/lock.txt \
 && pip check \
 && python -c "import importlib.metadata as m, sys; v = m.version('tensorrt_llm'); \
sys.exit(0 if v == '${TRTLLM_VERSION}' else f'tensorrt_llm {v} installed, ${TRTLLM_VERSION} expected')"

ENV TRTLLM_BUILDER_CACHE=/var/cache/trtllm-builder \
    COG_PREDICT_TYPE_STUB=predict.py:Predictor \
    OMPI_ALLOW_RUN_AS_ROOT=1 \
    OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

WORKDIR /src
COPY . /src
# The trees (TensorRT-LLM/, tensorrtllm_backend/) at the top of the project: kept when the checkout
# already has them at this release (scripts/fetch-trees.sh on the host, as `cog build` needs), fetched
# here otherwise. A tree of another release fails the build, naming both.
RUN bash scripts/fetch-trees.sh --version "${TRTLLM_VERSION}" /src \
 && pip install --no-deps /src \
 && python -c "import trtllm_builder, predict"
# No parser warm-up here: the example scripts import tensorrt_llm, which needs libcuda.so.1, and a docker
# build has no GPU driver. Parsers are read on first use on the GPU host and cached in TRTLLM_BUILDER_CACHE.

EXPOSE 5000
ENV PORT=5000
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["python", "-m", "cog.server.http", "--host", "0.0.0.0"]
