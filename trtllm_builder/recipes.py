"""Typed recipes: a few fields that expand into the right convert/quantize and build steps.

A recipe is the alternative to free-form ``steps:`` in the project form. The example is chosen
from the model's ``config.json`` ``architectures``, the converter or ``quantization/quantize.py``
from the quantization, and the expanded args are then checked against the pinned scripts' own
parsers like any step (:mod:`trtllm_builder.parsers`). ``plan`` prints the expansion as a
``steps:`` block a user can copy.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, FetchError

if TYPE_CHECKING:
    from .config import BuildConfig, ModelSpec, StepSpec

__all__ = [
    "ARCHITECTURES",
    "FAMILIES",
    "QUANTIZATIONS",
    "Family",
    "Recipe",
    "build_rules",
    "expand_config",
    "expand_recipe",
    "int8_kv_cache_in",
    "read_model_config",
    "recipe_problems",
    "resolve_recipe",
    "steps_yaml",
]

Quantization = Literal[
    "none", "int8_weight_only", "int4_weight_only", "int4_awq", "smooth_quant", "fp8", "fp8_kv", "int8_kv"
]
QUANTIZATIONS: tuple[str, ...] = (
    "none",
    "int8_weight_only",
    "int4_weight_only",
    "int4_awq",
    "smooth_quant",
    "fp8",
    "fp8_kv",
    "int8_kv",
)
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


_CONVERT_ALL = frozenset({"none", "int8_weight_only", "int4_weight_only", "smooth_quant", "int8_kv"})
_MODELOPT = frozenset({"int4_awq", "fp8", "fp8_kv"})
FAMILIES: dict[str, Family] = {
    "llama": Family("llama", "standard", _CONVERT_ALL, _MODELOPT),
    # Mixtral goes through the llama converter, which has no SmoothQuant for MoE layers.
    "mixtral": Family("llama", "standard", _CONVERT_ALL - {"smooth_quant"}, _MODELOPT),
    "gpt": Family("gpt", "standard", _CONVERT_ALL, _MODELOPT),
    "qwen": Family("qwen", "standard", _CONVERT_ALL, _MODELOPT),
    # The phi converter does weight-only only, and asserts pp_size == 1.
    "phi": Family(
        "phi",
        "standard",
        frozenset({"none", "int8_weight_only", "int4_weight_only"}),
        _MODELOPT,
        pipeline_parallel=False,
    ),
    # Gemma's converter: --ckpt-type/--world-size (tensor parallel only); SmoothQuant via ModelOpt.
    "gemma": Family(
        "gemma",
        "gemma",
        frozenset({"none", "int8_weight_only", "int4_weight_only", "int8_kv"}),
        _MODELOPT | {"smooth_quant"},
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
_BUILD_FIELDS = ("max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens")


# --- rules ---------------------------------------------------------------------------------------------


def _int(value: object) -> int | None:
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
    inp, seq, tokens = _int(args.get("max_input_len")), _int(args.get("max_seq_len")), _int(args.get("max_num_tokens"))
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
    for key in _BUILD_FIELDS:
        if key in recipe.build_args and getattr(recipe, key) is not None:
            problems.append(f"recipe.build_args.{key}: also set as `recipe.{key}`; set it once")
    for key in ("checkpoint_dir", "model_dir", "tp_size", "pp_size", "dtype"):
        if key in recipe.build_args:
            problems.append(
                f"recipe.build_args.{key}: not a build arg the recipe lets you set "
                "(the tool wires the checkpoint; tensor/pipeline parallelism and dtype are recipe fields)"
            )
    merged: dict[str, object] = dict(recipe.build_args)
    merged.update({k: getattr(recipe, k) for k in _BUILD_FIELDS if getattr(recipe, k) is not None})
    int8_kv = "`quantization: int8_kv`" if recipe.quantization == "int8_kv" else None
    problems.extend(f"recipe: {p}" for p in build_rules(merged, output_format=output_format, int8_kv=int8_kv))
    return problems


# --- the model's config.json ---------------------------------------------------------------------------


def read_model_config(
    model: ModelSpec,
    *,
    token: str | None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
) -> tuple[dict[str, Any], str]:
    """The model's ``config.json`` and where it was read, without downloading the weights.

    A local directory is read in place; a Hugging Face repo costs one small download of
    ``config.json`` only. A tarball cannot be read before its download: raises ``ConfigError``
    (set ``recipe.architecture``).
    """
    from . import hub
    from .sources import ModelRef, classify, hf_token

    if local_dir is not None:
        return _read_json(Path(local_dir) / "config.json"), f"{local_dir}/config.json"
    ref = ModelRef(model.id, model.revision, model.tar_url)
    kind = classify(ref)
    if kind == "local":
        path = Path(model.id.removeprefix("file://")).expanduser() / "config.json"
        return _read_json(path), str(path)
    if kind == "tar":
        raise ConfigError(
            "a recipe reads the model's config.json before the download, and a `model_tar_url` cannot be "
            "read that early: set `recipe.architecture` (e.g. `LlamaForCausalLM`)"
        )
    tok = hf_token(token)
    try:
        path = hub.fetch_file(
            model.id,
            "config.json",
            model.revision,
            token=tok,
            cache_dir=cache_dir / "hf-configs" if cache_dir is not None else None,
        )
    except FetchError as err:
        raise FetchError(f"the recipe needs `{model.id}`'s config.json: {err}") from err.__cause__
    rev = f"@{model.revision}" if model.revision else ""
    return _read_json(path), f"{hub.endpoint()}/{model.id}{rev} (config.json only)"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: a recipe needs the model's config.json") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is not a JSON object")
    return data


# --- expansion -----------------------------------------------------------------------------------------


def _family(recipe: Recipe, hf_config: Mapping[str, Any], example: str | None) -> tuple[str, Family]:
    archs = hf_config.get("architectures")
    arch = recipe.architecture or (archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else "")
    if arch in ARCHITECTURES:
        name = ARCHITECTURES[arch]
        fam = FAMILIES[name]
        if example is not None and example != fam.example:
            fam = Family(example, fam.dialect, fam.convert, fam.quantize, fam.pipeline_parallel)
        return arch, fam
    if example is not None:  # the user picked the example: assume the common flag spelling
        return arch or "?", Family(example, "standard", _CONVERT_ALL, _MODELOPT)
    known = ", ".join(sorted(ARCHITECTURES))
    where = "`recipe.architecture`" if recipe.architecture else "the model's config.json `architectures`"
    raise ConfigError(
        f"architecture `{arch or 'none'}` (from {where}) has no recipe; recipes know: {known}. Write `steps:` "
        "instead, or set `trtllm.example` to the example whose converter handles this model"
    )


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, min(n, 64) + 1) if n % d == 0]


def expand_recipe(
    recipe: Recipe,
    *,
    hf_config: Mapping[str, Any],
    example: str | None = None,
    output_format: str = "engine",
) -> list[StepSpec]:
    """The steps ``recipe`` stands for. Raises ``ConfigError`` naming the alternatives."""
    from .config import StepSpec  # config imports this module for the Recipe model

    arch, fam = _family(recipe, hf_config, example)
    q = recipe.quantization
    tp, pp = recipe.tensor_parallel, recipe.pipeline_parallel
    problems = recipe_problems(recipe, output_format=output_format)
    if q not in fam.convert and q not in fam.quantize:
        supported = [x for x in QUANTIZATIONS if x in fam.convert or x in fam.quantize]
        problems.append(
            f"recipe.quantization: `{q}` is not supported for {arch} by TensorRT-LLM's `{fam.example}` converter "
            f"or quantize.py; supported: {', '.join(supported)}"
        )
    via_quantize = q in fam.quantize and q not in fam.convert
    if pp > 1 and not via_quantize and not fam.pipeline_parallel:
        problems.append(
            f"recipe.pipeline_parallel: {pp}: the `{fam.example}` converter supports tensor parallelism only; "
            f"use tensor_parallel: {tp * pp} instead"
        )
    heads = _int(hf_config.get("num_attention_heads", hf_config.get("n_head")))
    if heads and heads % tp:
        problems.append(
            f"recipe.tensor_parallel: {tp} does not divide the model's {heads} attention heads; use one of "
            + ", ".join(str(d) for d in _divisors(heads))
        )
    if problems:
        raise ConfigError("the recipe cannot be expanded:", problems=problems)

    first: StepSpec
    if via_quantize:
        qargs: dict[str, Any] = {"dtype": recipe.dtype, "qformat": QFORMAT[q], "tp_size": tp, "pp_size": pp}
        if q == "fp8_kv":
            qargs["kv_cache_dtype"] = "fp8"
        first = StepSpec("quantize", "quantize.py", None, "quantization", qargs)
    else:
        first = StepSpec("convert", "convert_checkpoint.py", None, fam.example, _convert_args(recipe, fam))
    build: dict[str, Any] = {k: getattr(recipe, k) for k in _BUILD_FIELDS if getattr(recipe, k) is not None}
    if q not in FP8_QUANTIZATIONS:
        build["gemm_plugin"] = "auto"  # FP8 GEMMs come from TensorRT itself
    build.update(recipe.build_args)
    return [first, StepSpec("build", None, "trtllm-build", None, build)]


def _convert_args(recipe: Recipe, fam: Family) -> dict[str, Any]:
    q = recipe.quantization
    if fam.dialect == "gemma":
        args: dict[str, Any] = {"ckpt-type": "hf", "dtype": recipe.dtype, "world-size": recipe.tensor_parallel}
    else:
        args = {"dtype": recipe.dtype, "tp_size": recipe.tensor_parallel, "pp_size": recipe.pipeline_parallel}
    if q in ("int8_weight_only", "int4_weight_only"):
        args["use_weight_only"] = True
        args["weight_only_precision"] = "int8" if q == "int8_weight_only" else "int4"
    elif q == "smooth_quant":
        args.update({"smoothquant": 0.5, "per_token": True, "per_channel": True})
    elif q == "int8_kv":
        args["int8_kv_cache"] = True
        if fam.dialect == "gemma":
            args["tokenizer_dir"] = "{model_dir}"  # its KV-cache calibration tokenizes a dataset
    return args


def expand_config(config: BuildConfig, *, hf_config: Mapping[str, Any], source: str | None = None) -> BuildConfig:
    """``config`` with its recipe expanded into ``steps`` (unchanged when it has none)."""
    from dataclasses import replace

    if config.recipe is None:
        return config
    steps = expand_recipe(
        config.recipe, hf_config=hf_config, example=config.example, output_format=config.output.format
    )
    return replace(config, steps=tuple(steps), recipe_source=source)


def steps_yaml(steps: tuple[StepSpec, ...] | list[StepSpec]) -> str:
    """A ``steps:`` block equivalent to ``steps``, to paste into a config."""
    out: list[dict[str, Any]] = []
    for s in steps:
        item: dict[str, Any] = {"name": s.name}
        if s.example is not None:
            item["example"] = s.example
        if s.script is not None:
            item["script"] = s.script
        if s.command is not None:
            item["command"] = s.command
        item["args"] = dict(s.args)
        out.append(item)
    return yaml.safe_dump({"steps": out}, sort_keys=False, default_flow_style=False)


def resolve_recipe(
    config: BuildConfig,
    *,
    token: str | None,
    cache_dir: Path | None = None,
    local_dir: Path | None = None,
) -> BuildConfig:
    """Read the model's config.json (one small read; no weights) and expand the recipe."""
    if config.recipe is None:
        return config
    if config.recipe.architecture is not None and config.model.tar_url is not None:
        return expand_config(config, hf_config={}, source="recipe.architecture")
    hf_config, source = read_model_config(
        config.model, token=token or config.hf_token, cache_dir=cache_dir, local_dir=local_dir
    )
    return expand_config(config, hf_config=hf_config, source=source)
