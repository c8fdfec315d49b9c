"""Typed recipes: a few fields that expand into the right convert/quantize and build steps.

A recipe is the alternative to free-form ``steps:`` in the project form. This module is the recipe's
schema and its rules (and the trtllm-build arg rules the planner applies to every build step); the
expansion into steps is :mod:`trtllm_builder.plan.expand`, reading the model's ``config.json`` for
it :mod:`trtllm_builder.fetch.modelconfig`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "QUANTIZATIONS",
    "Family",
    "Recipe",
    "build_rules",
    "int8_kv_cache_in",
    "recipe_problems",
]

Quantization = Literal[
    "none", "int8_weight_only", "int4_weight_only", "int4_awq", "smooth_quant", "fp8", "fp8_kv", "int8_kv"
]
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
# What quantize.py (ModelOpt) calls each quantization it handles.
QFORMAT = {"int4_awq": "int4_awq", "smooth_quant": "int8_sq", "fp8": "fp8", "fp8_kv": "fp8"}
# Quantizations whose engines need compute capability >= 8.9 (checked by preflight).
FP8_QUANTIZATIONS = frozenset({"fp8", "fp8_kv"})

Size = Annotated[int, Field(ge=1, le=1 << 24)]


class Recipe(BaseModel):
    """``recipe:`` in the project form (instead of ``steps:``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    quantization: Quantization = "none"
    tensor_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    pipeline_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    max_batch_size: Size | None = None
    max_input_len: Size | None = None
    max_seq_len: Size | None = None
    max_num_tokens: Size | None = None
    # The model's `architectures[0]`, for sources whose config.json cannot be read before the download.
    architecture: Annotated[str, Field(min_length=1, max_length=128)] | None = None
    build_args: dict[str, Any] = Field(default_factory=dict)  # extra trtllm-build args, checked like any step's


@dataclass(frozen=True)
class Family:
    """How TensorRT-LLM converts one model family."""

    example: str  # the example directory holding its convert_checkpoint.py
    dialect: Literal["standard", "gemma"]  # gemma's converter spells its flags differently
    convert: frozenset[str]  # quantizations its convert_checkpoint.py does
    quantize: frozenset[str]  # quantizations done with quantization/quantize.py (ModelOpt)
    pipeline_parallel: bool = True  # does the converter take pp_size?


CONVERT_ALL = frozenset({"none", "int8_weight_only", "int4_weight_only", "smooth_quant", "int8_kv"})
MODELOPT = frozenset({"int4_awq", "fp8", "fp8_kv"})
FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "standard", CONVERT_ALL, MODELOPT),
    # Mixtral goes through the llama converter, which has no SmoothQuant for MoE layers.
    "mixtral": Family("llama", "standard", CONVERT_ALL - {"smooth_quant"}, MODELOPT),
    "gpt": Family("gpt", "standard", CONVERT_ALL, MODELOPT),
    "qwen": Family("qwen", "standard", CONVERT_ALL, MODELOPT),
    # The phi converter does weight-only only, and asserts pp_size == 1.
    "phi": Family(
        "phi",
        "standard",
        frozenset({"none", "int8_weight_only", "int4_weight_only"}),
        MODELOPT,
        pipeline_parallel=False,
    ),
    # Gemma's converter: --ckpt-type/--world-size (tensor parallel only); SmoothQuant via ModelOpt.
    "gemma": Family(
        "gemma",
        "gemma",
        frozenset({"none", "int8_weight_only", "int4_weight_only", "int8_kv"}),
        MODELOPT | {"smooth_quant"},
        pipeline_parallel=False,
    ),
}
# config.json `architectures[0]` -> family.
ARCHITECTURES: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "LLaMAForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "MixtralForCausalLM": "mixtral",
    "Qwen2ForCausalLM": "qwen",
    "Qwen2MoeForCausalLM": "qwen",
    "Qwen3ForCausalLM": "qwen",
    "GPT2LMHeadModel": "gpt",
    "GPTBigCodeForCausalLM": "gpt",
    "Starcoder2ForCausalLM": "gpt",
    "PhiForCausalLM": "phi",
    "Phi3ForCausalLM": "phi",
    "GemmaForCausalLM": "gemma",
    "Gemma2ForCausalLM": "gemma",
    "Gemma3ForCausalLM": "gemma",
}
# The recipe fields that set trtllm-build flags (build_args may not repeat them).
BUILD_FIELDS = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")


# --- rules ---------------------------------------------------------------------------------------------


def to_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


# Converter / quantize.py args that give the checkpoint an INT8 KV cache.
_INT8_KV_SWITCHES = ("int8_kv_cache", "calibrate_kv_cache", "calibrate-kv-cache")


def int8_kv_cache_in(args: Mapping[str, object]) -> str | None:
    """The arg (as written) that asks a converter or quantize.py for an INT8 KV cache, or None."""
    for flag in _INT8_KV_SWITCHES:
        if flag in args and str(args[flag]).lower() not in ("false", "0"):
            return f"--{flag}"
    if str(args.get("kv_cache_dtype", "")).lower() == "int8":
        return "--kv_cache_dtype int8"
    return None


def build_rules(args: Mapping[str, object], *, output_format: str = "engine", int8_kv: str | None = None) -> list[str]:
    """Cross-flag rules for trtllm-build ``args`` (flag name -> value) that no parser can check.

    ``int8_kv``: the earlier arg that gave the checkpoint an INT8 KV cache, as messages show it. With
    one, the builder turns paged context FMHA off whatever the flag says ("Paged Context FMHA is
    disabled because it doesn't work with int8 kv cache currently", tensorrt_llm/builder.py), so the
    rules that need paged context FMHA apply.
    """
    problems: list[str] = []
    kv = str(args.get("kv_cache_type", "paged")).lower()
    paged_flag = str(args.get("paged_kv_cache", "enable")).lower()
    paged = kv == "paged" and paged_flag not in ("disable", "false")
    why_not = f"`kv_cache_type: {kv}`" if kv != "paged" else "`paged_kv_cache: disable`"
    fmha = str(args.get("use_paged_context_fmha", "enable")).lower()
    if int8_kv is not None:
        if "use_paged_context_fmha" in args and fmha == "enable":
            problems.append(
                f"`use_paged_context_fmha: enable` has no effect with the INT8 KV cache of {int8_kv}: the "
                "builder turns paged context FMHA off for an INT8 KV cache; remove it, or use an FP8 KV cache "
                "(`kv_cache_dtype: fp8` with quantize.py) to keep it"
            )
        fmha = "disable"
    inp, seq, tokens = (
        to_int(args.get("max_input_len")),
        to_int(args.get("max_seq_len")),
        to_int(args.get("max_num_tokens")),
    )
    if inp is not None and seq is not None and seq < inp:
        problems.append(
            f"max_seq_len ({seq}) is less than max_input_len ({inp}): max_seq_len counts the input and the "
            f"output tokens, so set it to at least {inp} (e.g. {inp * 2})"
        )
    if not paged:
        if "use_paged_context_fmha" in args and fmha == "enable":
            problems.append(
                f"`use_paged_context_fmha: enable` needs the paged KV cache, but {why_not} turns it off: "
                "remove one of them"
            )
        if output_format == "triton":
            problems.append(
                f"Triton's in-flight batching needs the paged KV cache, but {why_not} turns it off: remove it "
                "or use `output.format: engine`"
            )
    if tokens is not None and inp is not None and tokens < inp and (not paged or fmha == "disable"):
        off = why_not if not paged else "`use_paged_context_fmha: disable`"
        fix = f"remove {off}"
        if paged and int8_kv is not None:
            off = f"the INT8 KV cache of {int8_kv}"
            fix = "use an FP8 KV cache instead"
        problems.append(
            f"max_num_tokens ({tokens}) is less than max_input_len ({inp}): a prompt that long then needs "
            f"chunked context, which needs the paged KV cache and paged context FMHA, but {off} turns it "
            f"off: raise max_num_tokens to {inp} or {fix}"
        )
    return problems


def recipe_problems(recipe: Recipe, *, output_format: str = "engine") -> list[str]:
    """The recipe's own cross-field rules (no model config needed); messages start with the field."""
    problems: list[str] = []
    for key in BUILD_FIELDS:
        if key in recipe.build_args and getattr(recipe, key) is not None:
            problems.append(f"recipe.build_args.{key}: also set as `recipe.{key}`; set it once")
    for key in ("checkpoint_dir", "model_dir", "tp_size", "pp_size", "dtype"):
        if key in recipe.build_args:
            problems.append(
                f"recipe.build_args.{key}: not a build arg the recipe lets you set "
                "(the tool wires the checkpoint; tensor/pipeline parallelism and dtype are recipe fields)"
            )
    merged: dict[str, object] = dict(recipe.build_args)
    merged.update({k: getattr(recipe, k) for k in BUILD_FIELDS if getattr(recipe, k) is not None})
    int8_kv = "`quantization: int8_kv`" if recipe.quantization == "int8_kv" else None
    problems.extend(f"recipe: {p}" for p in build_rules(merged, output_format=output_format, int8_kv=int8_kv))
    return problems
