"""What a Triton repository needs to know about a built engine, from its ``config.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtllm_builder.errors import PackagingError

__all__ = ["EngineInfo", "engine_info", "read_engine_info"]


@dataclass(frozen=True)
class EngineInfo:
    max_batch_size: int
    max_beam_width: int
    dtype: str
    logits_dtype: str
    world_size: int


def read_engine_info(engine_dir: Path) -> EngineInfo:
    """Read ``engine_dir/config.json`` as written by ``trtllm-build`` (or the legacy ``build.py``)."""
    path = Path(engine_dir) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(
            f"cannot read the engine config {path}: {exc}; is {engine_dir} a trtllm-build output?"
        ) from exc
    if not isinstance(data, dict):
        raise PackagingError(f"{path} is not a JSON object")
    try:
        return engine_info(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackagingError(
            f"{path} lacks what a Triton repository needs ({exc!s}); expected trtllm-build's "
            "config.json with build_config.max_batch_size and pretrained_config.dtype"
        ) from exc


def engine_info(data: dict[str, Any]) -> EngineInfo:
    """:class:`EngineInfo` of a parsed engine ``config.json``; KeyError, TypeError or ValueError if not one."""
    if "build_config" in data:
        build = data["build_config"]
        pretrained = data.get("pretrained_config") or {}
        mapping = pretrained.get("mapping") or {}
        world = mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1))
        return EngineInfo(
            max_batch_size=int(build["max_batch_size"]),
            max_beam_width=int(build.get("max_beam_width", 1)),
            dtype=str(pretrained["dtype"]),
            logits_dtype=str(pretrained.get("logits_dtype") or "float32"),
            world_size=int(world),
        )
    builder = data["builder_config"]  # engines of the old examples/<model>/build.py
    world = int(builder.get("tensor_parallel", 1)) * int(builder.get("pipeline_parallel", 1))
    return EngineInfo(
        max_batch_size=int(builder["max_batch_size"]),
        max_beam_width=int(builder.get("max_beam_width", 1)),
        dtype=str(builder["precision"]),
        logits_dtype=str(builder.get("logits_dtype") or "float32"),
        world_size=world,
    )
