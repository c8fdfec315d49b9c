"""Stand-in for the TensorRT-LLM C++ Triton backend's model load, TensorRT-LLM 1.2.1 (tests only).

Mirrors how ``triton_backend/inflight_batcher_llm/src/model_state.cc`` and ``model_instance_state.cc``
(NVIDIA/TensorRT-LLM, nearest stored version c8c6df08; the same reads as tensorrtllm_backend v0.19.0) read the
model's ``parameters`` when Triton loads it: ``GetParameter`` (model_state.cc:249-266) throws
"Cannot find parameter with name: <k>" for an absent key and returns the string as is; most reads
sit in ``try``/``catch`` with a default, these do not: ``gpt_model_type`` (model_instance_state.cc:62),
``tokenizer_dir``, ``xgrammar_tokenizer_info_path``, ``guided_decoding_backend`` (:413-415).
Nothing here is imported by the product.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

GUIDED_DECODING = True  # getGuidedDecodingConfigFromParams exists from v0.19.0


def load(config: dict[str, Any], resolve: Callable[[str], str]) -> None:
    """Raise ``RuntimeError`` with the backend's message where the real load would fail."""
    if "parameters" not in config:
        raise RuntimeError("Model config doesn't have a parameters section")
    params = config["parameters"]

    def get(name: str) -> str:
        if name not in params:
            raise RuntimeError(f"Cannot find parameter with name: {name}")
        return str(params[name].get("string_value", ""))

    def optional(name: str, convert: Callable[[str], Any]) -> Any:
        try:
            return convert(get(name))
        except (RuntimeError, ValueError):
            return None  # "<name> is not specified, will use default value"

    def as_bool(value: str) -> bool:
        if value in ("True", "true", "TRUE", "1"):
            return True
        if value in ("False", "false", "FALSE", "0"):
            return False
        raise ValueError(f"Cannot convert {value} to a boolean.")

    gpt_model_type = get("gpt_model_type")
    if gpt_model_type not in ("V1", "v1", "inflight_batching", "inflight_fused_batching"):
        raise RuntimeError("Invalid gpt_model_type. Must be v1/inflight_batching/inflight_fused_batching.")
    optional("max_beam_width", int)
    optional("max_tokens_in_paged_kv_cache", int)
    optional("kv_cache_free_gpu_mem_fraction", float)
    optional("enable_kv_cache_reuse", as_bool)
    optional("enable_chunked_context", as_bool)
    optional("normalize_log_probs", as_bool)
    if GUIDED_DECODING:
        get("tokenizer_dir")
        info_path = get("xgrammar_tokenizer_info_path")
        backend = get("guided_decoding_backend")
        unset = backend in ("", "${guided_decoding_backend}") or info_path in ("", "${xgrammar_tokenizer_info_path}")
        if not unset and not os.path.exists(resolve(info_path)):
            raise RuntimeError(f"Xgrammar's tokenizer info path at {info_path} does not exist.")
    # Both paths are read inside a try whose TLLM_CHECK_WITH_INFO(exists(path)) throws into the
    # catch: a missing path is "left empty" (model_instance_state.cc:743-768).
    decoder = optional("gpt_model_path", str) or ""
    if decoder and not os.path.exists(resolve(decoder)):
        decoder = ""
    encoder = optional("encoder_model_path", str) or ""
    if encoder and not os.path.exists(resolve(encoder)):
        encoder = ""
    if not decoder and not encoder:
        raise RuntimeError("Both encoder and decoder model paths are empty")
