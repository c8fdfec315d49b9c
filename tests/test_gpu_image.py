"""GPU smoke test of the real image: build it with the Docker SDK, run one small-model prediction.

Runs only with ``--run-gpu`` on a host with an NVIDIA GPU, Docker, the nvidia-container-toolkit and
internet access (pip, the TensorRT-LLM checkout, the model)::

    pytest --run-gpu -m gpu tests/test_gpu_image.py -s

``GPU_TEST_IMAGE=<tag>`` reuses an image instead of building one; ``GPU_TEST_TRTLLM_VERSION=0.21.0``
builds the other release (the Dockerfile's one switch); ``GPU_TEST_MODEL=<hf id>`` picks
another model (default ``openai-community/gpt2``: small, public, and head sizes TensorRT-LLM's
kernels support, unlike the random test models of ``modelgen``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from _gpu_option import GPU_NOT_RUN

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TAG = "trtllm-builder:gpu-smoke"

pytestmark = [pytest.mark.gpu, pytest.mark.timeout(3 * 3600)]


def _docker() -> Any:
    """The ``docker`` SDK, imported only when a GPU test really runs (it ships no type information)."""
    import docker

    return docker


def smoke_config(model: str) -> str:
    return f"""\
model:
  id: {model}
trtllm:
  example: gpt
steps:
  - name: convert
    script: convert_checkpoint.py
    args:
      dtype: float16
  - name: build
    command: trtllm-build
    args:
      gemm_plugin: auto
      gpt_attention_plugin: auto
      max_batch_size: 1
      max_input_len: 64
      max_seq_len: 128
"""


@pytest.fixture(scope="module")
def docker_client(request: pytest.FixtureRequest) -> Any:
    # Also guarded here, so the file is safe before conftest registers the option.
    if not request.config.getoption("--run-gpu", default=False):
        pytest.skip(GPU_NOT_RUN)
    client = _docker().from_env()
    client.ping()
    return client


@pytest.fixture(scope="module")
def image(docker_client: Any) -> str:
    tag = os.environ.get("GPU_TEST_IMAGE")
    if tag:
        docker_client.images.get(tag)
        return tag
    version = os.environ.get("GPU_TEST_TRTLLM_VERSION")
    buildargs = {"TRTLLM_VERSION": version} if version else None
    for chunk in docker_client.api.build(path=str(ROOT), tag=DEFAULT_TAG, rm=True, decode=True, buildargs=buildargs):
        if "stream" in chunk:
            print(chunk["stream"], end="", flush=True)
        if "error" in chunk:
            pytest.fail(f"docker build failed: {chunk['error']}")
    return DEFAULT_TAG


@pytest.fixture
def server_url(docker_client: Any, image: str) -> Iterator[str]:
    docker = _docker()
    container = docker_client.containers.run(
        image,
        detach=True,
        device_requests=[docker.types.DeviceRequest(count=-1, capabilities=[["gpu"]])],
        ports={"5000/tcp": ("127.0.0.1", None)},
        ipc_mode="host",
        ulimits=[docker.types.Ulimit(name="memlock", soft=-1, hard=-1)],
    )
    try:
        deadline = time.monotonic() + 600
        port = None
        while port is None and time.monotonic() < deadline:
            container.reload()
            bindings = container.ports.get("5000/tcp") or []
            port = bindings[0]["HostPort"] if bindings else None
            time.sleep(0.5)
        url = f"http://127.0.0.1:{port}"
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            container.reload()
            if container.status == "exited":
                break
            try:
                health = requests.get(f"{url}/health-check", timeout=5).json()
            except requests.RequestException:
                health = {}
            if health.get("status") in {"READY", "SETUP_FAILED"}:
                break
            time.sleep(1)
        if health.get("status") != "READY":
            pytest.fail(f"server not ready: {health}\n{container.logs(tail=200).decode(errors='replace')}")
        yield url
    finally:
        container.remove(force=True)


def test_small_model_builds_on_the_gpu(server_url: str) -> None:
    model = os.environ.get("GPU_TEST_MODEL", "openai-community/gpt2")
    config = "data:text/yaml;base64," + base64.b64encode(smoke_config(model).encode()).decode()
    dry = requests.post(f"{server_url}/predictions", json={"input": {"config": config, "dry_run": True}}, timeout=600)
    assert dry.json()["status"] == "succeeded", dry.json().get("error")

    reply = requests.post(f"{server_url}/predictions", json={"input": {"config": config}}, timeout=7200).json()
    assert reply["status"] == "succeeded", reply.get("error")
    prefix = "data:application/gzip;base64,"
    assert reply["output"].startswith(prefix)
    data = base64.b64decode(reply["output"][len(prefix) :])
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = set(tar.getnames())
        member = tar.extractfile("manifest.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert {"config.json", "rank0.engine", "tokenizer.json", "manifest.json"} <= names
    assert manifest["gpus"], "the manifest records no GPU"
    assert manifest["trtllm"]["version"]
    assert "<== build finished in" in reply["logs"]
    assert reply["metrics"]["archive_bytes"] == len(data)
