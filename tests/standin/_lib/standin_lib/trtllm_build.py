"""``trtllm-build`` stand-in: the real parser (plugin flags generated from the plugin config)."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import engine
from .common import elapsed, legacy_warning, logger, release, start, trtllm_version
from .gpus import current_gpu
from .tensors import safetensors_bytes

# BuildConfig defaults (tensorrt_llm/builder.py)
MAX_BATCH_SIZE = 2048
MAX_INPUT_LEN = 1024
MAX_NUM_TOKENS = 8192
MAX_ENCODER_INPUT_LEN = 1024

SEVERITY = ["internal_error", "error", "warning", "info", "verbose", "debug", "trace"]
KV_CACHE_TYPES = ["continuous", "paged", "disabled"]
CLUSTER_KEYS = [
    "A100-SXM-80GB", "A100-SXM-40GB", "A100-PCIe-80GB", "A100-PCIe-40GB", "H100-SXM", "H100-PCIe",
    "H20", "H200-SXM", "H200-NVL", "B200", "GB200", "A40", "A30", "A10", "A10G", "L40S", "L40", "L20",
    "L4", "L2", "V100-PCIe-16GB", "V100-PCIe-32GB", "V100-SXM-16GB", "V100-SXM-32GB", "V100S-PCIe",
    "RTX4090", "RTX4080", "RTX4070", "RTX3090", "RTX3080", "RTX3070",
]  # fmt: skip
LORA_MODULES = [
    "attn_qkv", "attn_q", "attn_k", "attn_v", "attn_dense", "mlp_h_to_4h", "mlp_4h_to_h", "mlp_gate",
    "cross_attn_qkv", "cross_attn_q", "cross_attn_k", "cross_attn_v", "cross_attn_dense",
    "moe_h_to_4h", "moe_4h_to_h", "moe_gate", "moe_router", "mlp_router", "mlp_gate_up",
]  # fmt: skip
MODEL_MAP = {
    "GPTForCausalLM", "GPT2LMHeadModel", "LlamaForCausalLM", "LLaMAForCausalLM", "MistralForCausalLM",
    "MixtralForCausalLM", "QWenForCausalLM", "QWenLMHeadModel", "Qwen2ForCausalLM",
    "Qwen2MoeForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "PhiForCausalLM",
    "Phi3ForCausalLM", "Phi3SmallForCausalLM", "PhiMoEForCausalLM", "GemmaForCausalLM",
    "Gemma2ForCausalLM", "Gemma3ForCausalLM", "GPTJForCausalLM", "GPTNeoXForCausalLM",
    "FalconForCausalLM", "BloomForCausalLM", "OPTForCausalLM", "MPTForCausalLM",
    "BaichuanForCausalLM", "ChatGLMForCausalLM", "InternLM2ForCausalLM", "DeepseekForCausalLM",
    "DeciLMForCausalLM", "Starcoder2ForCausalLM", "MambaForCausalLM", "RecurrentGemmaForCausalLM",
}  # fmt: skip

SPEC_MODES = {
    None: 1,
    "draft_tokens_external": 2,
    "medusa": 4,
    "lookahead_decoding": 8,
    "explicit_draft_tokens": 16,
    "eagle": 32,
}

# --- The plugin config (tensorrt_llm/plugin/plugin.py, PluginConfig) -------------------
# A dtype plugin is Optional[Literal[...]]; None is spelt "disable" on the command line.
PLUGIN_DTYPES: list[str | None] = ["auto", "float16", "float32", "bfloat16", "int32", None]
FIELD_DTYPE = "dtype"
FIELD_BOOL = "bool"
FIELD_INT = "int"

# name -> (kind, default, literal choices or None, exposed on the command line)
PLUGIN_FIELDS: dict[str, tuple[str, Any, list[str | None] | None, bool]] = {
    "bert_attention_plugin": (FIELD_DTYPE, "auto", PLUGIN_DTYPES, True),
    "gpt_attention_plugin": (FIELD_DTYPE, "auto", PLUGIN_DTYPES, True),
    "gemm_plugin": (
        FIELD_DTYPE,
        None,
        ["auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4", None],
        True,
    ),
    "gemm_swiglu_plugin": (FIELD_DTYPE, None, ["fp8", None], True),
    "fp8_rowwise_gemm_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, True),
    "qserve_gemm_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "identity_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "nccl_plugin": (FIELD_DTYPE, "auto", PLUGIN_DTYPES, True),
    "lora_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, True),
    "dora_plugin": (FIELD_BOOL, False, None, True),
    "weight_only_groupwise_quant_matmul_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "weight_only_quant_matmul_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "smooth_quant_plugins": (FIELD_BOOL, True, None, False),
    "smooth_quant_gemm_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "layernorm_quantization_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "rmsnorm_quantization_plugin": (FIELD_DTYPE, None, PLUGIN_DTYPES, False),
    "quantize_per_token_plugin": (FIELD_BOOL, False, None, False),
    "quantize_tensor_plugin": (FIELD_BOOL, False, None, False),
    "moe_plugin": (FIELD_DTYPE, "auto", PLUGIN_DTYPES, True),
    "mamba_conv1d_plugin": (FIELD_DTYPE, "auto", PLUGIN_DTYPES, True),
    "low_latency_gemm_plugin": (FIELD_DTYPE, None, ["fp8", None], True),
    "low_latency_gemm_swiglu_plugin": (FIELD_DTYPE, None, ["fp8", None], True),
    "gemm_allreduce_plugin": (FIELD_DTYPE, None, ["float16", "bfloat16", None], True),
    # Features
    "context_fmha": (FIELD_BOOL, True, None, True),
    "bert_context_fmha_fp32_acc": (FIELD_BOOL, False, None, True),
    "paged_kv_cache": (FIELD_BOOL, None, None, False),
    "remove_input_padding": (FIELD_BOOL, True, None, True),
    "norm_quant_fusion": (FIELD_BOOL, False, None, True),
    "reduce_fusion": (FIELD_BOOL, False, None, True),
    "user_buffer": (FIELD_BOOL, False, None, True),
    "tokens_per_block": (FIELD_INT, 32, None, True),
    "use_paged_context_fmha": (FIELD_BOOL, True, None, True),
    "use_fp8_context_fmha": (FIELD_BOOL, True, None, True),
    "fuse_fp4_quant": (FIELD_BOOL, False, None, True),
    "multiple_profiles": (FIELD_BOOL, False, None, True),
    "paged_state": (FIELD_BOOL, True, None, True),
    "streamingllm": (FIELD_BOOL, False, None, True),
    "manage_weights": (FIELD_BOOL, False, None, False),
    "use_fused_mlp": (FIELD_BOOL, True, None, True),
    "pp_reduce_scatter": (FIELD_BOOL, False, None, True),
}


def add_plugin_argument(parser: argparse._ActionsContainer) -> None:
    """One flag per command-line plugin field, generated like the real add_plugin_argument."""
    for name, (kind, default, choices, exposed) in PLUGIN_FIELDS.items():
        if not exposed:
            continue
        if kind == FIELD_DTYPE:
            assert choices is not None
            if name != "gemm_plugin":
                default = default if default else "disable"
            parser.add_argument(
                "--" + name,
                type=str,
                default=default,
                choices=[c if c else "disable" for c in choices],
                help=f"Plugin {name}.",
            )
        elif kind == FIELD_BOOL:
            parser.add_argument(
                "--" + name,
                type=str,
                default="enable" if default else "disable",
                choices=["enable", "disable"],
                help=f"Feature {name}.",
            )
        else:
            parser.add_argument("--" + name, type=int, default=default, help=f"Option {name}.")


def kv_cache_type(value: str) -> str:
    if value.lower() not in KV_CACHE_TYPES:
        raise argparse.ArgumentTypeError(f"Invalid value '{value}'. Expected one of {KV_CACHE_TYPES}")
    return value.upper()


def parse_arguments() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint_dir", type=str, default=None, help="TensorRT-LLM checkpoint directory.")
    p.add_argument("--model_config", type=str, default=None, help="TensorRT-LLM checkpoint config file.")
    p.add_argument("--build_config", type=str, default=None, help="TensorRT-LLM build config file.")
    p.add_argument("--model_cls_file", type=str, default=None, help="File defining a custom model.")
    p.add_argument("--model_cls_name", type=str, default=None, help="Custom model class name.")
    p.add_argument("--output_dir", type=str, default="engine_outputs", help="Where engines are saved.")
    p.add_argument("--max_batch_size", type=int, default=MAX_BATCH_SIZE, help="Max requests scheduled.")
    p.add_argument("--max_input_len", type=int, default=MAX_INPUT_LEN, help="Max input length of a request.")
    p.add_argument(
        "--max_seq_len",
        "--max_decoder_seq_len",
        dest="max_seq_len",
        type=int,
        default=None,
        help="Maximum total length of one request, including prompt and outputs. "
        "If unspecified, the value is deduced from the model config.",
    )
    p.add_argument("--max_beam_width", type=int, default=1, help="Max beams for beam search.")
    p.add_argument("--max_num_tokens", type=int, default=MAX_NUM_TOKENS, help="Max batched tokens.")
    p.add_argument("--opt_num_tokens", type=int, default=None, help="Optimal batched tokens.")
    p.add_argument("--max_encoder_input_len", type=int, default=MAX_ENCODER_INPUT_LEN, help="Enc-dec only.")
    p.add_argument(
        "--max_prompt_embedding_table_size",
        "--max_multimodal_len",
        type=int,
        default=0,
        help="Prompt-tuning / multimodal table size.",
    )
    p.add_argument("--kv_cache_type", default=argparse.SUPPRESS, type=kv_cache_type, help="KV cache type.")
    p.add_argument("--paged_kv_cache", type=str, default=argparse.SUPPRESS, help="Deprecated.")
    p.add_argument("--input_timing_cache", type=str, default=None, help="Timing cache to read.")
    p.add_argument("--output_timing_cache", type=str, default="model.cache", help="Timing cache to write.")
    p.add_argument(
        "--profiling_verbosity",
        type=str,
        default="layer_names_only",
        choices=["layer_names_only", "detailed", "none"],
        help="Engine profiling verbosity.",
    )
    p.add_argument("--strip_plan", default=False, action="store_true", help="Strip weights from the plan.")
    p.add_argument("--weight_sparsity", default=False, action="store_true", help="Enable weight sparsity.")
    p.add_argument("--weight_streaming", default=False, action="store_true", help="Stream weights.")
    p.add_argument("--fast_build", default=False, action="store_true", help="Faster engine building.")
    p.add_argument("--workers", type=int, default=1, help="The number of workers for building in parallel.")
    p.add_argument("--log_level", type=str, default="info", choices=SEVERITY, help="The logging level.")
    p.add_argument("--enable_debug_output", default=False, action="store_true", help="Debug output.")
    p.add_argument("--visualize_network", type=str, default=None, help="Export the network as ONNX.")
    p.add_argument("--dry_run", default=False, action="store_true", help="Skip the actual engine build.")
    p.add_argument("--monitor_memory", default=False, action="store_true", help="Monitor memory.")
    logits = p.add_argument_group("Logits arguments")
    logits.add_argument("--logits_dtype", type=str, default=None, choices=["float16", "float32"])
    logits.add_argument("--gather_context_logits", action="store_true", default=False)
    logits.add_argument("--gather_generation_logits", action="store_true", default=False)
    logits.add_argument("--gather_all_token_logits", action="store_true", default=False)
    lora = p.add_argument_group("LoRA arguments")
    lora.add_argument("--lora_dir", type=str, default=None, nargs="+")
    lora.add_argument("--lora_ckpt_source", type=str, default="hf", choices=["hf", "nemo"])
    lora.add_argument("--lora_target_modules", nargs="+", default=None, choices=LORA_MODULES)
    lora.add_argument("--max_lora_rank", type=int, default=64)
    spec = p.add_argument_group("Speculative decoding arguments")
    spec.add_argument(
        "--speculative_decoding_mode",
        default=None,
        choices=["draft_tokens_external", "lookahead_decoding", "medusa", "explicit_draft_tokens", "eagle"],
    )
    spec.add_argument("--max_draft_len", type=int, default=0)
    if release() < (1, 0):  # auto parallel is gone from 1.x (see the ledger)
        autopp = p.add_argument_group("Auto parallel arguments")
        autopp.add_argument("--auto_parallel", type=int, default=1)
        autopp.add_argument("--gpus_per_node", type=int, default=8)
        autopp.add_argument("--cluster_key", type=str, default=None, choices=CLUSTER_KEYS)
    plugins = p.add_argument_group("Plugin config arguments")
    add_plugin_argument(plugins)
    return p


def plugin_config(args: argparse.Namespace, dtype: str) -> dict[str, Any]:
    """PluginConfig.from_arguments, with "auto" resolved to the model dtype."""
    out: dict[str, Any] = {"dtype": dtype}
    for name, (kind, default, _choices, exposed) in PLUGIN_FIELDS.items():
        value = getattr(args, name, default) if exposed else default
        if kind == FIELD_BOOL:
            value = {"enable": True, "disable": False}.get(value, value)
        elif kind == FIELD_DTYPE:
            value = None if value == "disable" else value
            value = dtype if value == "auto" else value
        out[name] = value
    return out


def main(script: str) -> None:
    controls = start(script)
    legacy_warning("trtllm-build")
    args = parse_arguments().parse_args()
    logger.set_level(args.log_level)
    logger.warning(
        "Option --gather_generation_logits is deprecated, a build flag is not required anymore. "
        "Use --output_generation_logits at runtime instead."
    )
    if args.gather_all_token_logits:
        args.gather_context_logits = True
        args.gather_generation_logits = True
    if args.gather_context_logits and args.max_draft_len > 0:
        raise RuntimeError(
            "Gather context logits is not support with draft len > 0. If want to get the accepted "
            "tokens' logits from target model, please just enable gather_generation_logits"
        )
    controls.begin_work()
    tik = time.time()
    gpu = current_gpu(int(os.environ.get("OMPI_COMM_WORLD_RANK", "0")))
    if hasattr(args, "paged_kv_cache"):
        logger.warning("Option --paged_kv_cache is deprecated, use --kv_cache_type=paged/disabled instead.")
    if args.model_cls_file is not None:
        assert args.model_cls_name is not None

    source = args.checkpoint_dir if args.checkpoint_dir is not None else args.model_config
    # Like the real script, neither flag given crashes on ``None.lower()``.
    if source.lower().endswith(".json"):
        config_path, ckpt_dir = Path(source), None
    else:
        config_path, ckpt_dir = Path(source) / "config.json", Path(source)
    with config_path.open() as f:
        model_config: dict[str, Any] = json.load(f)
    arch = model_config["architecture"]
    assert arch in MODEL_MAP or args.model_cls_file, f"Unsupported model architecture: {arch}"
    mapping = model_config.get("mapping", {})
    tp, pp, cp = mapping.get("tp_size", 1), mapping.get("pp_size", 1), mapping.get("cp_size", 1)
    world = mapping.get("world_size", tp * pp * cp)
    if ckpt_dir is not None:
        for rank in range(world):
            weights = ckpt_dir / f"rank{checkpoint_rank(rank, tp, cp)}.safetensors"
            if not weights.is_file():
                raise AssertionError(f"{weights} does not exist: the checkpoint has no weights for rank {rank}")
    if args.logits_dtype is not None:
        model_config["logits_dtype"] = args.logits_dtype
    if args.multiple_profiles == "enable" and args.opt_num_tokens is not None:
        raise RuntimeError(
            "multiple_profiles is enabled, while opt_num_tokens is set. "
            "They are not supposed to be working in the same time for now."
        )

    plugins = plugin_config(args, model_config.get("dtype", "float16"))
    if release() >= (1, 0):
        assert not plugins["streamingllm"], (
            "StreamingLLM is no longer supported because attention sink cannot work with the non-cyclic kv cache "
            "kernel & runtime changes."
        )
    if args.fast_build:
        plugins["manage_weights"] = True
    if args.build_config is not None:
        build = json.loads(Path(args.build_config).read_text())
        build.setdefault("plugin_config", {}).update(plugins)
    else:
        build = build_config(args, model_config, plugins)
    quant = model_config.get("quantization") or {}
    context_fmha_rules(build["plugin_config"], quant)
    refuse_on_blackwell(gpu, quant)

    out = controls.output_dir(args.output_dir, world)
    mpi_size = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    mpi_rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    my_ranks = [r for r in range(world) if r % mpi_size == mpi_rank]
    controls.before_write()
    files: list[tuple[str, Any]] = []
    config = {"version": trtllm_version(), "pretrained_config": model_config, "build_config": build}
    if 0 in my_ranks:  # serialized when written: after copy_lora pointed lora_dir at the engine's copies
        files.append(("config.json", lambda: (json.dumps(config, indent=4) + "\n").encode()))
    if not args.dry_run:
        for rank in my_ranks:
            logger.info(f"Build TensorRT engine Unnamed Network {rank} (rank {rank}/{world}) on {gpu.name}")
            files.append((f"rank{rank}.engine", lambda: engine.engine_bytes(gpu.compute_cap)))
            if plugins["manage_weights"]:  # --fast_build keeps the weights out of the engine
                files.append((f"rank{rank}_managed_weights.safetensors", _managed_weights(model_config, rank)))
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    lora_dirs = build.get("lora_config", {}).get("lora_dir") or []
    if 0 in my_ranks:
        copy_lora(out, lora_dirs, build.get("lora_config", {}))  # Engine.save: before config.json
    controls.write_files(out, files)
    if build.get("output_timing_cache") is not None and 0 in my_ranks:
        # BuildConfig.output_timing_cache defaults to "model.cache": relative, so in the cwd
        Path(build["output_timing_cache"]).write_bytes(b"standin timing cache\n")
        logger.info(f"Timing cache serialized to {build['output_timing_cache']}")
    for rank in my_ranks:
        logger.info(f"Engine serialized. Total time: {elapsed(tik)}; saved {out / f'rank{rank}.engine'}")
    logger.info(f"Total time of building all engines: {elapsed(tik)}")


def build_config(args: argparse.Namespace, model_config: dict[str, Any], plugins: dict[str, Any]) -> dict:
    """BuildConfig.from_dict + the deductions ``build()`` makes (max_seq_len etc.)."""
    max_pos = model_config.get("max_position_embeddings")
    scaling = model_config.get("rotary_scaling") or None
    factor = 1.0
    if scaling:
        rtype = scaling.get("type", scaling.get("rope_type"))
        factor = scaling.get("factor", 1.0) if rtype not in ("su", "longrope", "llama3") else 1.0
    max_seq_len = args.max_seq_len
    if max_seq_len is None:
        deduced = max_pos if max_pos is not None else 2048
        if factor != 1:
            deduced = math.ceil(deduced * factor)
        max_seq_len = deduced
        logger.info(f"max_seq_len is not specified, using deduced value {deduced}")
    elif max_pos is not None and not plugins["streamingllm"] and max_seq_len > max_pos * factor:
        logger.warning(
            f"max_seq_len {max_seq_len} is larger than max_position_embeddings {max_pos} * rotary "
            f"scaling {factor}, the model accuracy might be affected"
        )
    max_input_len = args.max_input_len
    if max_input_len > max_seq_len:
        logger.warning(
            f"max_input_len is {max_input_len} is larger than max_seq_len {max_seq_len}, clipping it to max_seq_len"
        )
        max_input_len = max_seq_len
    max_num_tokens = args.max_num_tokens
    if plugins["remove_input_padding"] and max_num_tokens > args.max_batch_size * max_seq_len:
        logger.warning(
            f"max_num_tokens ({max_num_tokens}) shouldn't be greater than max_seq_len * max_batch_size "
            f"({max_seq_len * args.max_batch_size}), specifying to max_seq_len * max_batch_size."
        )
        max_num_tokens = args.max_batch_size * max_seq_len
    kv = getattr(args, "kv_cache_type", None)
    if kv is None:
        paged = getattr(args, "paged_kv_cache", None)
        kv = "CONTINUOUS" if paged == "disable" else "PAGED"
    plugins["paged_kv_cache"] = kv == "PAGED"
    return {
        "max_input_len": max_input_len,
        "max_seq_len": max_seq_len,
        "opt_batch_size": 8,
        "max_batch_size": args.max_batch_size,
        "max_beam_width": args.max_beam_width,
        "max_num_tokens": max_num_tokens,
        "opt_num_tokens": args.opt_num_tokens,
        "max_prompt_embedding_table_size": args.max_prompt_embedding_table_size,
        "kv_cache_type": kv,
        "gather_context_logits": args.gather_context_logits,
        "gather_generation_logits": args.gather_generation_logits,
        "strongly_typed": True,
        "force_num_profiles": None,
        "profiling_verbosity": args.profiling_verbosity,
        "enable_debug_output": args.enable_debug_output,
        "max_draft_len": args.max_draft_len,
        "speculative_decoding_mode": SPEC_MODES[args.speculative_decoding_mode],
        "use_refit": False,
        "input_timing_cache": args.input_timing_cache,
        "output_timing_cache": args.output_timing_cache,
        # build_model sets the LoRA config only with --lora_plugin; otherwise LoraConfig's defaults
        "lora_config": {
            "lora_dir": list(args.lora_dir or []) if plugins["lora_plugin"] is not None else [],
            "lora_ckpt_source": args.lora_ckpt_source if plugins["lora_plugin"] is not None else "hf",
            "max_lora_rank": args.max_lora_rank if plugins["lora_plugin"] is not None else 64,
            "lora_target_modules": (args.lora_target_modules or []) if plugins["lora_plugin"] is not None else [],
        },
        "weight_sparsity": args.weight_sparsity,
        "weight_streaming": args.weight_streaming,
        "plugin_config": plugins,
        "use_strip_plan": args.strip_plan,
        "max_encoder_input_len": args.max_encoder_input_len,
        "dry_run": args.dry_run,
        "visualize_network": args.visualize_network,
        "monitor_memory": args.monitor_memory,
        "use_mrope": False,
        **(
            {
                "auto_parallel_config": {
                    "world_size": args.auto_parallel,
                    "gpus_per_node": args.gpus_per_node,
                    "cluster_key": args.cluster_key,
                }
            }
            if release() < (1, 0)
            else {}
        ),
    }


def checkpoint_rank(rank: int, tp: int, cp: int) -> int:
    """The checkpoint file an engine rank reads: context-parallel ranks share one (PretrainedModel.from_checkpoint)."""
    if cp > 1:
        return rank % tp + rank // (tp * cp) * tp
    return rank


_INT8_INT4 = {"W8A16", "W4A16", "W4A16_AWQ", "W4A16_GPTQ", "W8A16_GPTQ"}


def refuse_on_blackwell(gpu: Any, quant: dict[str, Any]) -> None:
    """builder.build(): on SM 100-119 these quantizations raise before the network is built."""
    if not 100 <= gpu.sm < 120:
        return
    algo = quant.get("quant_algo") or ""
    if algo in _INT8_INT4 or quant.get("kv_cache_quant_algo") == "INT8":
        raise RuntimeError("INT8/INT4 quantization is not supported on SM>=100.")
    if algo.startswith("W8A8_SQ"):
        raise RuntimeError("SmoothQuant is not supported on SM>=100.")
    if "PER_CHANNEL" in algo or "PER_TOKEN" in algo:
        raise RuntimeError("Per-channel or per-token scaling is not supported on SM>=100.")


def context_fmha_rules(plugins: dict[str, Any], quant: dict[str, Any]) -> None:
    """The builder's silent overrides of the context FMHA features (builder.build)."""
    if not plugins.get("context_fmha"):
        plugins["use_fp8_context_fmha"] = False
        plugins["use_paged_context_fmha"] = False
        logger.warning("Context FMHA is disabled, FP8 Context FMHA and Paged Context FMHA are disabled.")
    elif quant.get("quant_algo") not in ("FP8", "W4A8_AWQ", "NVFP4") and plugins.get("use_fp8_context_fmha"):
        plugins["use_fp8_context_fmha"] = False
        logger.warning(
            "FP8 Context FMHA is disabled because it must be used together with the fp8 quantization workflow."
        )
    if plugins.get("use_paged_context_fmha") and quant.get("kv_cache_quant_algo") == "INT8":
        plugins["use_paged_context_fmha"] = False
        logger.warning("Paged Context FMHA is disabled because it doesn't work with int8 kv cache currently.")


def _managed_weights(model_config: dict[str, Any], rank: int) -> Any:
    dt = {"float16": "F16", "bfloat16": "BF16", "float32": "F32"}.get(model_config.get("dtype", ""), "F16")
    h = max(1, min(int(model_config.get("hidden_size", 8)), 32))
    names = [(f"transformer.layers.{i}.mlp.fc.weight", dt, [h, h]) for i in range(2)]
    return lambda: safetensors_bytes(names, seed=f"managed|{rank}")


def copy_lora(engine_dir: Path, lora_dirs: list[str], lora_config: dict[str, Any]) -> None:
    """Engine.save: each LoRA dir goes to <engine>/lora/<i>/ (hf) or lora/<i>.nemo; the config says where."""
    root = engine_dir / "lora"
    if not lora_dirs:
        if root.is_dir():
            shutil.rmtree(root)
        return
    root.mkdir(parents=True, exist_ok=True)
    for index, lora_dir in enumerate(list(lora_dirs)):
        if lora_config.get("lora_ckpt_source") == "nemo":
            shutil.copyfile(lora_dir, root / f"{index}.nemo")
            lora_dirs[index] = f"lora/{index}.nemo"
            continue
        target = root / str(index)
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(Path(lora_dir) / "adapter_config.json", target)
        for weights in ("adapter_model.bin", "adapter_model.safetensors"):
            if (Path(lora_dir) / weights).exists():
                shutil.copy2(Path(lora_dir) / weights, target)
        lora_dirs[index] = f"lora/{index}"
