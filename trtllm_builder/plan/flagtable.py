"""Old TensorRT-LLM scripts and flags, and what each one is on the pinned release: one table, two uses.

cog-trt-llm's configs were written for TensorRT-LLM 0.5-0.10: ``hf_gpt_convert.py`` + the per-model
``build.py`` (0.5-0.7), then ``convert_checkpoint.py`` + an early ``trtllm-build`` (0.8-0.10).
:mod:`trtllm_builder.plan.translate` rewrites such a config flag by flag from :data:`ROWS`; in the
project's own form nothing is rewritten silently, and the same rows turn an old flag into a
"did you mean" with the exact rewrite (:func:`hint`).

Every row names where the old flag comes from and where the new one is (``old_source`` /
``new_source``): mostly a file of NVIDIA/TensorRT-LLM with the commit it was read at (``@abc1234``:
the nearest version the public index stored, not necessarily the release tag's own), otherwise the
discussion or config the flag is known from.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeVar

from trtllm_builder.config.recipe import to_int

__all__ = [
    "ALIASES",
    "HF_CONVERT_RE",
    "OLD_DEFAULTS",
    "ROWS",
    "Row",
    "hint",
    "is_bare",
    "lookup",
    "new_value",
    "old_script_hint",
    "seq_len",
]

# What a row's old flag belongs to. "hf_convert" is hf_<model>_convert.py (0.5-0.7), "build.py" the
# per-model builder of 0.5-0.7; the others are the current scripts (their flags from older releases).
Program = Literal["hf_convert", "build.py", "trtllm-build", "convert_checkpoint.py", "quantize.py"]
# rename: the flag under another name (values mapped); move: to the converter (from build.py);
# drop: nothing to pass (now the default, read from the model, or a run-time option), with a note;
# refuse: no current equivalent (the reason and the nearest one); seq_len: --max_output_len;
# input / output: a directory the tool wires itself (the model, an earlier step's output, the step's own).
Action = Literal["rename", "move", "drop", "refuse", "seq_len", "input", "output"]

# --- sources: NVIDIA/TensorRT-LLM files @ the commit read (releases they stand for), or where else from ---
_OLD_GPT_BUILD = "examples/gpt/build.py @0272129 (0.6/0.7)"
_OLD_LLAMA_BUILD = "examples/llama/build.py @027cd51 (0.6/0.7)"
_OLD_HF_GPT = "examples/gpt/hf_gpt_convert.py @23bc5b7 (0.5-0.7)"
_OLD_PLUGIN = "tensorrt_llm/plugin/plugin.py @035b99e (0.8-era trtllm-build plugin flags)"
_OLD_TRTLLM_BUILD = "trtllm-build 0.8-0.10 (discussions #1316, #1599; not stored)"
_OLD_AUTO_PARALLEL = "tensorrt_llm/commands/build.py @008b2b8 (0.2x: --auto_parallel, --gpus_per_node)"
_OLD_CONVERT = "cog-trt-llm llama-2-70b example (convert_checkpoint.py --storage-type, 0.8-era)"
_OLD_QUANTIZE = "examples/quantization/quantize.py (0.7: --export_path)"
_BUILD = "tensorrt_llm/commands/build.py @65f1d15 (1.x)"
_BUILDER = "tensorrt_llm/builder.py BuildConfig / build() (@008b2b8 and 1.x)"
_PLUGIN = "tensorrt_llm/plugin/plugin.py PluginConfig (0.21-era fields)"
_LLAMA = "examples/models/core/llama/convert_checkpoint.py @368f8f2 (1.x)"
_GPT = "examples/models/core/gpt/convert_checkpoint.py (stored @cb4c622)"
_CONVERTERS = f"{_LLAMA}; {_GPT}"
_RUN = "examples/utils.py add_common_args (run.py) @05316d3"
_QUANTIZE = "examples/quantization/quantize.py (1.x: --output_dir)"

_DTYPES = {
    "fp32": "float32",
    "fp16": "float16",
    "bf16": "bfloat16",
    "float32": "float32",
    "float16": "float16",
    "bfloat16": "bfloat16",
}


@dataclass(frozen=True)
class Row:
    program: Program
    old: str  # as the old script spells it, without dashes
    action: Action
    new: str | None = None  # the flag it becomes (rename / move)
    values: Mapping[str, str] | None = None  # old value -> new value (rename / move); None: as given
    why: str = ""  # the note (drop, rename, move) or the reason (refuse)
    nearest: str = ""  # refuse: the current equivalent, as a user would write it
    old_source: str = ""
    new_source: str = ""
    deprecated: bool = False  # the pinned parser still accepts it: translated configs get the current spelling


def _r(program: Program, old: str, action: Action, new: str | None = None, **kw: object) -> Row:
    return Row(program, old, action, new, **kw)  # type: ignore[arg-type]


# fmt: off
_MOVED = "set at conversion now: it goes to the converter"
_SHAPE = "read from the model's config.json (the old script also took it from the model it read)"
ROWS: tuple[Row, ...] = (
    # --- hf_<model>_convert.py (0.5-0.7) -> examples/models/core/<model>/convert_checkpoint.py ---
    _r("hf_convert", "in-file", "input", "model_dir", why="the model to convert", old_source=_OLD_HF_GPT,
       new_source=_CONVERTERS),
    _r("hf_convert", "out-dir", "output", why="the converter writes into the step's own directory, without the "
       "<tp>-gpu sub-folder", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    _r("hf_convert", "tensor-parallelism", "rename", "tp_size", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    _r("hf_convert", "storage-type", "rename", "dtype", values=_DTYPES, old_source=_OLD_HF_GPT,
       new_source=_CONVERTERS),
    _r("hf_convert", "calibrate-kv-cache", "rename", "int8_kv_cache", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    _r("hf_convert", "smoothquant", "rename", "smoothquant", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    _r("hf_convert", "model", "rename", "gpt_variant", old_source=_OLD_HF_GPT, new_source=_GPT),
    _r("hf_convert", "dataset-cache-dir", "rename", "dataset_cache_dir", old_source=_OLD_HF_GPT, new_source=_GPT),
    _r("hf_convert", "load-model-on-cpu", "rename", "load_model_on_cpu", old_source=_OLD_HF_GPT, new_source=_GPT),
    _r("hf_convert", "processes", "drop", why="conversion processes; the converter's --workers converts ranks in "
       "parallel instead (default 1)", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    _r("hf_convert", "convert-model-on-cpu", "drop", why="no such option any more (--load_model_on_cpu loads the "
       "model on the CPU)", old_source=_OLD_HF_GPT, new_source=_CONVERTERS),
    # --- build.py (0.5-0.7) -> trtllm-build, and the converter for what conversion decides now ---
    _r("build.py", "model_dir", "input", "checkpoint_dir", why="what to build from", old_source=_OLD_GPT_BUILD,
       new_source=_BUILD),
    _r("build.py", "ft_model_dir", "input", "checkpoint_dir", why="what to build from", old_source=_OLD_LLAMA_BUILD,
       new_source=_BUILD),
    _r("build.py", "meta_ckpt_dir", "move", "meta_ckpt_dir", why="a Meta checkpoint is converted first",
       old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "output_dir", "output", why="trtllm-build writes into the step's own directory",
       old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "world_size", "drop", why="the world size is tp_size x pp_size of the conversion now",
       old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "tp_size", "move", "tp_size", why=_MOVED, old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "pp_size", "move", "pp_size", why=_MOVED, old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "dtype", "move", "dtype", why="the checkpoint's dtype decides the engine's now",
       old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "use_weight_only", "move", "use_weight_only", why=_MOVED, old_source=_OLD_GPT_BUILD,
       new_source=_CONVERTERS),
    _r("build.py", "weight_only_precision", "move", "weight_only_precision", why=_MOVED,
       old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "int8_kv_cache", "move", "int8_kv_cache", why=_MOVED, old_source=_OLD_GPT_BUILD,
       new_source=_CONVERTERS),
    _r("build.py", "use_smooth_quant", "drop", why="SmoothQuant is the converter's --smoothquant <alpha> now (the "
       "alpha the old flow gave hf_*_convert.py)", old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "per_channel", "move", "per_channel", why=_MOVED, old_source=_OLD_GPT_BUILD,
       new_source=_CONVERTERS),
    _r("build.py", "per_token", "move", "per_token", why=_MOVED, old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "per_group", "move", "per_group", why=_MOVED, old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "group_size", "move", "group_size", why=_MOVED, old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "quant_ckpt_path", "move", "quant_ckpt_path", why=_MOVED, old_source=_OLD_LLAMA_BUILD,
       new_source=_LLAMA),
    _r("build.py", "use_parallel_embedding", "move", "use_parallel_embedding", why=_MOVED,
       old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "embedding_sharding_dim", "move", "embedding_sharding_dim", why=_MOVED,
       old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS),
    _r("build.py", "max_output_len", "seq_len", "max_seq_len", old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "use_gpt_attention_plugin", "rename", "gpt_attention_plugin", why="bare, it was the model dtype: "
       "that is `auto`, the default", old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "use_gemm_plugin", "rename", "gemm_plugin", old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "use_layernorm_plugin", "drop", why="the layernorm plugin was removed in 0.8 (TensorRT fuses it)",
       old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "use_rmsnorm_plugin", "drop", why="the rmsnorm plugin was removed in 0.8 (TensorRT fuses it)",
       old_source=_OLD_LLAMA_BUILD, new_source=_PLUGIN),
    _r("build.py", "use_lookup_plugin", "drop", why="the lookup plugin was removed; the builder shares the embedding "
       "table itself", old_source=_OLD_GPT_BUILD, new_source=_BUILDER),
    _r("build.py", "use_embedding_sharing", "drop", why="the builder shares the embedding table by itself now",
       old_source=_OLD_GPT_BUILD, new_source=_BUILDER),
    _r("build.py", "enable_context_fmha", "drop", why="context FMHA is on by default (`context_fmha: enable`)",
       old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "enable_context_fmha_fp32_acc", "drop", why="a run-time option now (run.py "
       "--enable_context_fmha_fp32_acc)", old_source=_OLD_GPT_BUILD, new_source=_RUN),
    _r("build.py", "multi_block_mode", "drop", why="a run-time option now (run.py --multi_block_mode, on by default)",
       old_source=_OLD_GPT_BUILD, new_source=_RUN),
    _r("build.py", "remove_input_padding", "drop", why="on by default (`remove_input_padding: enable`)",
       old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "paged_kv_cache", "drop", why="the paged KV cache is the default (`kv_cache_type: paged`)",
       old_source=_OLD_GPT_BUILD, new_source=_BUILDER),
    _r("build.py", "use_inflight_batching", "drop", why="what it switched on (attention plugin, padding removal, paged "
       "KV cache) is the default", old_source=_OLD_GPT_BUILD, new_source=_BUILDER),
    _r("build.py", "parallel_build", "rename", "workers", why="trtllm-build builds ranks in parallel with --workers "
       "<GPUs>", old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "strongly_typed", "drop", why="engines are always strongly typed now", old_source=_OLD_GPT_BUILD,
       new_source=_BUILD),
    _r("build.py", "use_custom_all_reduce", "drop", why="the all-reduce strategy is chosen at run time now",
       old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "builder_opt", "drop", why="trtllm-build takes no TensorRT optimization level; the default is "
       "used", old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "gpus_per_node", "drop", why="not a build option any more", old_source=_OLD_GPT_BUILD,
       new_source=_BUILD),
    _r("build.py", "random_seed", "drop", why="only seeded the weights of a model built without weights",
       old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "timing_cache", "rename", "input_timing_cache", why="the timing cache to read",
       old_source=_OLD_GPT_BUILD, new_source=_BUILD),
    _r("build.py", "tokens_per_block", "rename", "tokens_per_block", old_source=_OLD_GPT_BUILD, new_source=_PLUGIN),
    _r("build.py", "rotary_scaling", "refuse", why="the converter takes rope scaling from the model's config.json "
       "and has no flag to override it", nearest="set `rope_scaling` in the model's config.json",
       old_source=_OLD_LLAMA_BUILD, new_source=_LLAMA),
    _r("build.py", "visualize", "refuse", why="trtllm-build exports the network to a directory you name",
       nearest="`visualize_network: ./onnx` on the trtllm-build step", old_source=_OLD_LLAMA_BUILD,
       new_source=_BUILD),
    _r("build.py", "enable_fp8", "refuse", why="FP8 needs ModelOpt calibration now (build.py read ammo scales)",
       nearest="a quantize step: `example: quantization, script: quantize.py, args: {qformat: fp8}`",
       old_source=_OLD_GPT_BUILD, new_source=_QUANTIZE),
    _r("build.py", "fp8_kv_cache", "refuse", why="an FP8 KV cache needs ModelOpt calibration now",
       nearest="a quantize step with `kv_cache_dtype: fp8`", old_source=_OLD_GPT_BUILD, new_source=_QUANTIZE),
    _r("build.py", "quantized_fp8_model_path", "refuse", why="ammo's FP8 scales file is not read any more",
       nearest="a quantize step: `script: quantize.py, args: {qformat: fp8}`", old_source=_OLD_LLAMA_BUILD,
       new_source=_QUANTIZE),
    *(
        _r("build.py", flag, "drop", why=_SHAPE, old_source=_OLD_GPT_BUILD, new_source=_CONVERTERS)
        for flag in ("vocab_size", "n_layer", "n_positions", "n_embd", "n_head", "n_kv_head", "inter_size",
                     "hidden_act", "rotary_pct", "rotary_base", "no_bias", "multi_query_mode", "multiple_of",
                     "ffn_dim_multiplier", "rms_norm_eps")
    ),
    # --- trtllm-build flags of 0.8-0.21 that the pinned trtllm-build lacks ---
    _r("trtllm-build", "max_output_len", "seq_len", "max_seq_len", old_source=_OLD_TRTLLM_BUILD, new_source=_BUILD),
    _r("trtllm-build", "paged_kv_cache", "rename", "kv_cache_type",
       values={"enable": "paged", "disable": "continuous", "true": "paged", "false": "continuous"},
       why="deprecated spelling", old_source=_OLD_PLUGIN, new_source=_BUILD, deprecated=True),
    _r("trtllm-build", "use_custom_all_reduce", "drop", why="the all-reduce strategy is chosen at run time now",
       old_source=_OLD_PLUGIN, new_source=_BUILD),
    _r("trtllm-build", "enable_xqa", "drop", why="XQA is chosen by the runtime now", old_source=_OLD_PLUGIN,
       new_source=_BUILD),
    _r("trtllm-build", "multi_block_mode", "drop", why="a run-time option now (run.py --multi_block_mode)",
       old_source=_OLD_PLUGIN, new_source=_RUN),
    _r("trtllm-build", "context_fmha_fp32_acc", "drop", why="a run-time option now (run.py "
       "--enable_context_fmha_fp32_acc)", old_source=_OLD_PLUGIN, new_source=_RUN),
    _r("trtllm-build", "use_context_fmha_for_generation", "drop", why="removed in 2024 (\"not used anymore\")",
       old_source=_OLD_PLUGIN, new_source=_BUILD),
    _r("trtllm-build", "attention_qk_half_accumulation", "drop", why="removed", old_source=_OLD_PLUGIN,
       new_source=_PLUGIN),
    _r("trtllm-build", "lookup_plugin", "drop", why="removed; the builder shares the embedding table itself",
       old_source=_OLD_PLUGIN, new_source=_BUILDER),
    _r("trtllm-build", "strongly_typed", "drop", why="engines are always strongly typed now",
       old_source=_OLD_TRTLLM_BUILD, new_source=_BUILD),
    _r("trtllm-build", "builder_opt", "drop", why="trtllm-build takes no TensorRT optimization level any more",
       old_source=_OLD_TRTLLM_BUILD, new_source=_BUILD),
    _r("trtllm-build", "gpus_per_node", "drop", why="an auto-parallel option; auto parallel was removed in 1.0",
       old_source=_OLD_AUTO_PARALLEL, new_source=_BUILD),
    _r("trtllm-build", "cluster_key", "drop", why="an auto-parallel option; auto parallel was removed in 1.0",
       old_source=_OLD_AUTO_PARALLEL, new_source=_BUILD),
    _r("trtllm-build", "auto_parallel", "refuse", why="auto parallel was removed in 1.0",
       nearest="tensor parallelism at conversion: `tp_size: <N>` on the convert step", old_source=_OLD_AUTO_PARALLEL,
       new_source=_BUILD),
    # --- convert_checkpoint.py / quantize.py flags of older releases ---
    _r("convert_checkpoint.py", "storage-type", "rename", "dtype", values=_DTYPES, old_source=_OLD_CONVERT,
       new_source=_CONVERTERS),
    _r("quantize.py", "export_path", "output", why="quantize.py writes into the step's own directory (--output_dir)",
       old_source=_OLD_QUANTIZE, new_source=_QUANTIZE),
)
# fmt: on

# Short spellings the old scripts accepted for the same flags.
ALIASES: dict[tuple[str, str], str] = {
    ("hf_convert", "i"): "in-file",
    ("hf_convert", "o"): "out-dir",
    ("hf_convert", "tp"): "tensor-parallelism",
    ("hf_convert", "t"): "storage-type",
    ("hf_convert", "p"): "processes",
    ("hf_convert", "kv"): "calibrate-kv-cache",
    ("hf_convert", "sq"): "smoothquant",
    ("build.py", "mq"): "multi_query_mode",
}
# The old scripts' defaults that decide a translated value (build.py per model; trtllm-build).
OLD_DEFAULTS: dict[tuple[str, str | None], dict[str, int]] = {
    ("build.py", "gpt"): {"max_input_len": 200, "max_output_len": 200},
    ("build.py", "llama"): {"max_input_len": 2048, "max_output_len": 512},
    ("trtllm-build", None): {"max_input_len": 1024},
}
_BY_KEY = {(r.program, r.old): r for r in ROWS}


def lookup(program: str, flag: str) -> Row | None:
    """The row for ``--flag`` of ``program`` (short spellings resolved), or None."""
    flag = ALIASES.get((program, flag), flag)
    return _BY_KEY.get((program, flag))  # type: ignore[arg-type]


def seq_len(args: Mapping[str, object], *, program: str, example: str | None = None) -> tuple[int, str] | None:
    """``max_seq_len`` for ``--max_output_len`` (with ``--max_input_len``, else the old script's default)."""
    defaults = OLD_DEFAULTS.get((program, example)) or OLD_DEFAULTS.get((program, None)) or {}
    out = to_int(args.get("max_output_len"))
    inp = to_int(args.get("max_input_len"))
    if out is None:
        return None
    how = "max_input_len"
    if inp is None:
        inp = defaults.get("max_input_len", 1024)
        how = f"the default max_input_len of {program}"
    return inp + out, f"{how} {inp} + max_output_len {out}: --max_seq_len counts the input and the output tokens"


_V = TypeVar("_V")


def is_bare(value: object) -> bool:
    """A switch as cog-trt-llm wrote it (`key:`, `key: ""`, `key: true`); identity, since 1 == True."""
    return value is None or value is True or value == ""


def new_value(row: Row, value: _V) -> _V | str | bool:
    """What ``value`` of ``row``'s old flag is under its new name (rename / move): ``row.values`` looked
    up case-insensitively (a bare switch as ``true``), else a bare switch ``True``, anything else as given."""
    if row.values is not None:
        key = "true" if is_bare(value) else str(value).lower()
        if key in row.values:
            return row.values[key]
    return True if is_bare(value) else value


def hint(program: str, flag: str, args: Mapping[str, object]) -> str | None:
    """The exact rewrite of an old ``--flag`` given to ``program`` in the project form, or None.

    ``program`` is ``trtllm-build``, ``convert_checkpoint.py`` or ``quantize.py``; ``args`` is the
    step's args (flag -> value) so a derived value can be shown exactly. Flags the per-model
    ``build.py`` had are looked up too: people copy them onto trtllm-build.
    """
    row = lookup(program, flag)
    if row is None and program == "trtllm-build":
        row = lookup("build.py", flag)
    if row is None:
        return None
    value = args.get(flag)
    bare = value is None or value is True or value == "" or value == "true"
    if row.action == "seq_len":
        got = seq_len(args, program=program)
        if got is None:
            return None
        total, how = got
        return f"write `max_seq_len: {total}` instead ({how})"
    if row.action in ("rename", "move") and row.new is not None:
        mapped = new_value(row, value)
        shown = "true" if mapped is True else str(mapped)
        if row.new == "gpt_attention_plugin" and bare:
            return f"it is `gpt_attention_plugin: auto` now, the default: remove `{flag}`"
        if row.new == "gemm_plugin" and bare:
            shown = "auto"
        where = "the convert step" if row.action == "move" and program == "trtllm-build" else program
        note = f" ({row.why})" if row.why else ""
        return f"write `{row.new}: {shown}` on {where} instead{note}"
    if row.action == "drop":
        return f"remove it: {row.why}"
    if row.action == "refuse":
        return f"there is no such flag any more: {row.why}; instead: {row.nearest}"
    if row.action == "output":
        return "remove it: the tool passes the step's output dir (--output_dir) itself"
    return None


HF_CONVERT_RE = re.compile(r"^hf_([A-Za-z0-9]+)_convert\.py$")


def old_script_hint(script: str, example: str) -> str | None:
    """What replaced a 0.5-0.7 script name in a project-form step, or None."""
    if HF_CONVERT_RE.match(script):
        return (
            f"`{script}` is a 0.5-0.7 script; this release converts with `script: convert_checkpoint.py` "
            f"(example `{example}`) and builds with `command: trtllm-build`. A cog-trt-llm-form config is "
            "translated automatically (`plan` prints the translation)"
        )
    if script == "build.py":
        return (
            "`build.py` is the 0.5-0.7 per-model builder; this release converts with `script: "
            "convert_checkpoint.py` and builds with `command: trtllm-build`. A cog-trt-llm-form config is "
            "translated automatically (`plan` prints the translation)"
        )
    return None
