"""trtllm-builder: one declarative config -> a verified TensorRT-LLM engine archive."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
