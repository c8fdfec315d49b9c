"""Which TensorRT-LLM this machine has, without importing it.

Importing ``tensorrt_llm`` loads CUDA libraries and prints a banner to stdout, and it
fails on a machine without a GPU; the version is all we need, so read metadata.
"""

from __future__ import annotations

import ast
import importlib.metadata
import logging
from pathlib import Path

__all__ = ["trtllm_version", "version_from_source"]

logger = logging.getLogger(__name__)

_DIST_NAME = "tensorrt_llm"


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
