"""A recipe expanded into concrete steps: the example from the model's ``config.json``
``architectures``, the converter or ``quantization/quantize.py`` from the quantization, the build
args from the recipe's fields. The expanded args are then checked against the pinned scripts' own
parsers like any step's; ``plan`` prints the expansion as a ``steps:`` block a user can copy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import yaml

from trtllm_builder.config.recipe import (
    ARCHITECTURES,
    BUILD_FIELDS,
    CONVERT_ALL,
    FAMILIES,
    FP8_QUANTIZATIONS,
    MODELOPT,
    QFORMAT,
    QUANTIZATIONS,
    Family,
    Recipe,
    recipe_problems,
    to_int,
)
from trtllm_builder.config.schema import BuildConfig, StepSpec
from trtllm_builder.errors import ConfigError

__all__ = ["expand_config", "expand_recipe", "steps_yaml"]


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
        return arch or "?", Family(example, "standard", CONVERT_ALL, MODELOPT)
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
    heads = to_int(hf_config.get("num_attention_heads", hf_config.get("n_head")))
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
    build: dict[str, Any] = {k: getattr(recipe, k) for k in BUILD_FIELDS if getattr(recipe, k) is not None}
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
