"""Which TensorRT-LLM this machine has, without importing it.

Importing ``tensorrt_llm`` loads CUDA libraries and prints a banner to stdout, and it
fails on a machine without a GPU; the version is all we need, so read metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import logging
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_TRTLLM_VERSION",
    "RELEASES",
    "Release",
    "serving_runtime",
    "trtllm_version",
    "version_from_source",
    "version_mismatch",
]

logger = logging.getLogger(__name__)

_DIST_NAME = "tensorrt_llm"

# The release the image installs by default (Dockerfile ARG, cog.yaml, scripts/fetch-trees.sh; a test
# keeps them in step). 1.2.1 is the last release with the convert_checkpoint.py + trtllm-build engine
# path (NVIDIA removed it from main in mid-2026) and the one today's tritonserver containers serve.
DEFAULT_TRTLLM_VERSION = "1.2.1"


@dataclass(frozen=True)
class Release:
    """What a TensorRT-LLM release is built with, and which serving containers run its engines.

    An engine runs only under the TensorRT-LLM (and TensorRT) version that built it, so the archive
    names the runtimes that ship the same version.
    """

    version: str
    cuda: str
    torch: str
    tensorrt: str
    base_image: str  # NVIDIA's own base container for the release
    min_driver: str  # what the host's NVIDIA driver must be
    tritonserver: tuple[str, ...]  # tritonserver containers that ship this TensorRT-LLM
    sources: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "tensorrt_llm": self.version,
            "tensorrt": self.tensorrt,
            "cuda": self.cuda,
            "tritonserver": list(self.tritonserver),
            "min_driver": self.min_driver,
        }


RELEASES: dict[str, Release] = {
    "1.2.1": Release(
        version="1.2.1",
        cuda="13.1",
        torch="2.9.1",
        tensorrt="10.14.1",
        base_image="nvcr.io/nvidia/pytorch:25.12-py3",
        min_driver="R580 or newer (CUDA 13.x)",
        tritonserver=(
            "nvcr.io/nvidia/tritonserver:26.04-trtllm-python-py3",
            "nvcr.io/nvidia/tritonserver:26.05-trtllm-python-py3",
            "nvcr.io/nvidia/tritonserver:26.06-trtllm-python-py3",
            "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3",
        ),
        sources=(
            "TensorRT-LLM docs/source/release-notes.md, 'Release 1.2' (base image pytorch:25.12-py3, PyTorch 2.9.1)",
            "https://nvidia.github.io/TensorRT-LLM/installation/linux.html (CUDA 13.1, torch 2.9.1 cu130)",
            "triton-inference-server/server PR #8759 (26.04) and #8801 (26.05): "
            "TensorRT-LLM 1.2.1, TensorRT 10.14.1.48; docs/introduction/compatibility.md at e1db8a60 (26.04-26.07)",
            "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html (CUDA 13.x: >= 580)",
        ),
    ),
    "0.21.0": Release(
        version="0.21.0",
        cuda="12.9",
        torch="2.7.1",
        tensorrt="10.11.0",
        base_image="nvcr.io/nvidia/pytorch:25.05-py3",
        min_driver="R575 or newer (CUDA 12.9; R525+ through CUDA 12.x minor-version compatibility)",
        tritonserver=("nvcr.io/nvidia/tritonserver:25.08-trtllm-python-py3",),
        sources=(
            "TensorRT-LLM docs/source/release-notes.md, 'Release 0.21.0' "
            "(pytorch:25.05-py3, PyTorch 2.7.1, TensorRT 10.11)",
            "https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/"
            "compatibility.html (25.08-trtllm-python-py3: TensorRT-LLM 0.21.0, TensorRT 10.11.0.33)",
            "https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html (CUDA 12.x: >= 525)",
        ),
    ),
}


def version_mismatch(required: str | None, installed: str | None) -> str | None:
    """Why a config that requires TensorRT-LLM ``required`` cannot build here, or None when it can.

    Exact match: an engine runs only under the version that built it, so "1.2" does not stand for 1.2.1.
    """
    if required is None or required == installed:
        return None
    have = f"TensorRT-LLM {installed}" if installed else "no readable TensorRT-LLM version"
    where = f"build arg TRTLLM_VERSION={required}" if required in RELEASES else "an image of that release"
    return (
        f"the config requires TensorRT-LLM {required} (`trtllm.version`), but this machine has {have}: "
        f"build with the {required} image ({where}; supported: {', '.join(sorted(RELEASES))}), "
        "or change `trtllm.version`"
    )


def serving_runtime(version: str | None) -> dict[str, object] | None:
    """The serving runtimes known to ship TensorRT-LLM ``version`` (None when the table has no row)."""
    release = RELEASES.get(version or "")
    return release.as_dict() if release is not None else None


def trtllm_version(trtllm_dir: Path | None) -> str | None:
    """The installed TensorRT-LLM version, else the one of the source tree at ``trtllm_dir``.

    Order: the installed distribution's metadata (``pip show tensorrt-llm``), then
    ``<trtllm_dir>/tensorrt_llm/version.py`` read as text. ``None`` when neither exists.
    """
    try:
        return importlib.metadata.version(_DIST_NAME)
    except importlib.metadata.PackageNotFoundError:
        pass
    if trtllm_dir is None:
        return None
    return version_from_source(Path(trtllm_dir) / "tensorrt_llm" / "version.py")


def version_from_source(version_py: Path) -> str | None:
    """The string assigned to ``__version__`` in ``version_py``, found without executing it."""
    try:
        source = version_py.read_text(encoding="utf-8")
    except OSError as exc:
        logger.debug("cannot read %s: %s", version_py, exc)
        return None
    try:
        tree = ast.parse(source, filename=str(version_py))
    except SyntaxError as exc:
        logger.debug("cannot parse %s: %s", version_py, exc)
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        value = node.value
        if (
            any(isinstance(t, ast.Name) and t.id == "__version__" for t in targets)
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            return value.value
    return None
