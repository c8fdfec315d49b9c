"""The v0.5-0.7 scripts: gpt ``hf_gpt_convert.py`` (FT format) + ``build.py``, and llama ``build.py`` (reads HF)."""

from __future__ import annotations

import argparse
import configparser
import io
import json
import time
from pathlib import Path
from typing import Any

from .common import elapsed, logger, start
from .converters import source_fingerprint
from .engine import engine_bytes
from .gpus import current_gpu
from .hfmodel import check_hf_weights, load_hf_config
from .tensors import pseudo_random, read_header

NP_SIZES = {"fp32": 4, "float32": 4, "fp16": 2, "float16": 2, "bfloat16": 2}
CANONICAL = {"fp32": "float32", "fp16": "float16"}


# ------------------------------------------------------------------ hf_gpt_convert.py
def convert_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out-dir", "-o", type=str, help="file name of output directory", required=True)
    p.add_argument("--in-file", "-i", type=str, help="file name of input checkpoint file", required=True)
    p.add_argument(
        "--tensor-parallelism", "-tp", type=int, help="Requested tensor parallelism for inference", default=1
    )
    p.add_argument(
        "--processes",
        "-p",
        type=int,
        help="How many processes to spawn for conversion (default: 4). Set it to a lower value to reduce RAM usage.",
        default=4,
    )
    p.add_argument(
        "--calibrate-kv-cache",
        "-kv",
        action="store_true",
        help="Generate scaling factors for KV cache. Used for storing KV cache in int8.",
    )
    p.add_argument(
        "--smoothquant",
        "-sq",
        type=float,
        default=None,
        help="Set the alpha parameter (see https://arxiv.org/pdf/2211.10438.pdf) to Smoothquant the model, "
        "and output int8 weights. A good first try is 0.5. Must be in [0, 1]",
    )
    p.add_argument(
        "--model",
        default="gpt2",
        type=str,
        help="Specify GPT variants to convert checkpoints correctly",
        choices=["gpt2", "santacoder", "starcoder"],
    )
    p.add_argument("--storage-type", "-t", type=str, default="float32", choices=["float32", "float16", "bfloat16"])
    p.add_argument("--dataset-cache-dir", type=str, default=None, help="cache dir to load the hugging face dataset")
    p.add_argument("--load-model-on-cpu", action="store_true")
    p.add_argument("--convert-model-on-cpu", action="store_true")
    return p


SPLIT = (
    "attention.query_key_value.weight",
    "attention.query_key_value.bias",
    "attention.dense.weight",
    "mlp.dense_h_to_4h.weight",
    "mlp.dense_h_to_4h.bias",
    "mlp.dense_4h_to_h.weight",
)
UNSPLIT = (
    "input_layernorm.weight",
    "input_layernorm.bias",
    "post_attention_layernorm.weight",
    "post_attention_layernorm.bias",
    "attention.dense.bias",
    "mlp.dense_4h_to_h.bias",
)


def run_convert(script: str) -> None:
    controls = start(script)
    args = convert_parser().parse_args()
    print("\n=============== Arguments ===============")
    for key, value in vars(args).items():
        print(f"{key}: {value}")
    print("========================================", flush=True)
    controls.begin_work()
    hf = load_hf_config(args.in_file)
    files = check_hf_weights(args.in_file)
    tp = args.tensor_parallelism
    saved_dir = Path(args.out_dir) / f"{tp}-gpu"
    multi_query = args.model in ("santacoder", "starcoder")

    config = configparser.ConfigParser()
    config["gpt"] = {}
    for key, value in vars(args).items():
        config["gpt"][key] = f"{value}"
    for key, value in hf.items():
        config["gpt"][key] = f"{value}"
    config["gpt"]["storage_dtype"] = args.storage_type
    config["gpt"]["multi_query_mode"] = str(multi_query)

    names = set()
    for f in files:
        if f.suffix == ".safetensors":
            names.update(read_header(f))
    seed = source_fingerprint(Path(args.in_file), files) + args.storage_type
    size = NP_SIZES[args.storage_type]
    n_layer = int(hf.get("n_layer", hf.get("num_hidden_layers", 1)))

    def blob(name: str, n: int = 256) -> tuple[str, Any]:
        return name, lambda: pseudo_random(f"{seed}|{name}", n * size)

    out: list[tuple[str, Any]] = []

    def write_ini() -> bytes:
        buf = io.StringIO()
        config.write(buf)
        return buf.getvalue().encode()

    out.append(("config.ini", write_ini))
    for g in ("model.wpe", "model.wte", "model.final_layernorm.bias", "model.final_layernorm.weight"):
        out.append(blob(f"{g}.bin"))
    if "lm_head.weight" in names:
        out.append(blob("model.lm_head.weight.bin"))
    for layer in range(n_layer):
        for name in UNSPLIT:
            out.append(blob(f"model.layers.{layer}.{name}.bin"))
        for name in SPLIT:
            for rank in range(tp):
                out.append(blob(f"model.layers.{layer}.{name}.{rank}.bin"))
        if args.calibrate_kv_cache or args.smoothquant is not None:
            out.append(blob(f"model.layers.{layer}.attention.query_key_value.scale_y_quant_orig.bin", 1))
    controls.before_write()
    controls.write_files(saved_dir, out)
    print(f"saving weights: 100%|##########| {len(out)}/{len(out)}", flush=True)


# ----------------------------------------------------------------------------- build.py
PLUGIN_DTYPES = ["float16", "float32", "bfloat16"]


def _plugin_flag(p: argparse.ArgumentParser, flag: str, const: str | None) -> None:
    """``--use_*_plugin [dtype]``: bare means ``const`` (gpt: the model dtype; llama: float16)."""
    p.add_argument(flag, nargs="?", const=const, type=str, default=False, choices=PLUGIN_DTYPES)


def build_parser() -> argparse.ArgumentParser:
    """examples/gpt/build.py's parser (v0.7-era; see the ledger)."""
    p = argparse.ArgumentParser()
    p.add_argument("--world_size", type=int, default=1, help="world size, only support tensor parallelism now")
    p.add_argument("--model_dir", type=str, default=None)
    p.add_argument("--dtype", type=str, default="float16", choices=["float16", "float32", "bfloat16"])
    p.add_argument("--logits_dtype", type=str, default="float32", choices=["float16", "float32"])
    p.add_argument("--timing_cache", type=str, default="model.cache")
    p.add_argument("--log_level", type=str, default="info")
    p.add_argument("--vocab_size", type=int, default=51200)
    p.add_argument("--n_layer", type=int, default=24)
    p.add_argument("--n_positions", type=int, default=1024)
    p.add_argument("--n_embd", type=int, default=1024)
    p.add_argument("--n_head", type=int, default=16)
    p.add_argument("--hidden_act", type=str, default="gelu")
    p.add_argument("--rotary_pct", type=float, default=0.0)
    p.add_argument("--inter_size", type=int, default=None)
    p.add_argument("--no_bias", action="store_false")
    p.add_argument("--max_batch_size", type=int, default=256)
    p.add_argument("--max_input_len", type=int, default=200)
    p.add_argument("--max_output_len", type=int, default=200)
    p.add_argument("--max_beam_width", type=int, default=1)
    for flag in ("--use_gpt_attention_plugin", "--use_gemm_plugin", "--use_layernorm_plugin"):
        _plugin_flag(p, flag, None)
    p.add_argument("--parallel_build", default=False, action="store_true")
    p.add_argument("--enable_context_fmha", default=False, action="store_true")
    p.add_argument("--enable_context_fmha_fp32_acc", default=False, action="store_true")
    p.add_argument("--gpus_per_node", type=int, default=8)
    p.add_argument("--builder_opt", type=int, default=None)
    p.add_argument("--output_dir", type=Path, default="gpt_outputs")
    p.add_argument("--multi_query_mode", "-mq", default=False, action="store_true")
    p.add_argument("--remove_input_padding", default=False, action="store_true")
    p.add_argument("--use_smooth_quant", default=False, action="store_true")
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision", const="int8", type=str, nargs="?", default="int8", choices=["int8", "int4"]
    )
    p.add_argument("--per_channel", default=False, action="store_true")
    p.add_argument("--per_token", default=False, action="store_true")
    p.add_argument("--int8_kv_cache", default=False, action="store_true")
    p.add_argument("--random_seed", type=int, default=None)
    p.add_argument("--paged_kv_cache", action="store_true", default=False)
    p.add_argument("--tokens_per_block", type=int, default=64)
    p.add_argument("--max_prompt_embedding_table_size", type=int, default=0)
    p.add_argument("--use_inflight_batching", action="store_true", default=False)
    p.add_argument("--use_parallel_embedding", action="store_true", default=False)
    p.add_argument("--embedding_sharding_dim", type=int, default=0, choices=[0, 1])
    p.add_argument("--use_embedding_sharing", action="store_true", default=False)
    p.add_argument("--use_lookup_plugin", nargs="?", const=None, default=False, choices=PLUGIN_DTYPES)
    p.add_argument("--gather_all_token_logits", action="store_true", default=False)
    p.add_argument("--enable_fp8", default=False, action="store_true")
    p.add_argument("--fp8_kv_cache", default=False, action="store_true")
    p.add_argument("--max_num_tokens", type=int, default=None)
    p.add_argument("--strongly_typed", default=False, action="store_true")
    p.add_argument("--use_custom_all_reduce", action="store_true")
    return p


def llama_build_parser() -> argparse.ArgumentParser:
    """examples/llama/build.py's parser (v0.6/0.7-era; see the ledger)."""
    p = argparse.ArgumentParser()
    p.add_argument("--world_size", type=int, default=1)
    p.add_argument("--tp_size", type=int, default=1)
    p.add_argument("--pp_size", type=int, default=1)
    p.add_argument("--model_dir", type=str, default=None)
    p.add_argument("--ft_model_dir", type=str, default=None)
    p.add_argument("--meta_ckpt_dir", type=str, default=None)
    p.add_argument("--quant_ckpt_path", type=str, default=None)
    p.add_argument("--dtype", type=str, default="float16", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--timing_cache", type=str, default="model.cache")
    p.add_argument("--log_level", type=str, default="info")
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--n_layer", type=int, default=32)
    p.add_argument("--n_positions", type=int, default=2048)
    p.add_argument("--n_embd", type=int, default=4096)
    p.add_argument("--n_head", type=int, default=32)
    p.add_argument("--n_kv_head", type=int, default=None)
    p.add_argument("--multiple_of", type=int, default=256)
    p.add_argument("--ffn_dim_multiplier", type=float, default=1.0)
    p.add_argument("--inter_size", type=int, default=None)
    p.add_argument("--hidden_act", type=str, default="silu")
    p.add_argument("--rms_norm_eps", type=float, default=1e-06)
    p.add_argument("--max_batch_size", type=int, default=8)
    p.add_argument("--max_input_len", type=int, default=2048)
    p.add_argument("--max_output_len", type=int, default=512)
    p.add_argument("--max_beam_width", type=int, default=1)
    p.add_argument("--rotary_base", type=float, default=10000.0)
    p.add_argument("--rotary_scaling", nargs=2, type=str, default=None)
    for flag in ("--use_gpt_attention_plugin", "--use_gemm_plugin", "--use_rmsnorm_plugin"):
        _plugin_flag(p, flag, "float16")
    p.add_argument("--parallel_build", default=False, action="store_true")
    p.add_argument("--enable_context_fmha", default=False, action="store_true")
    p.add_argument("--enable_context_fmha_fp32_acc", default=False, action="store_true")
    p.add_argument("--visualize", default=False, action="store_true")
    p.add_argument("--enable_debug_output", default=False, action="store_true")
    p.add_argument("--gpus_per_node", type=int, default=8)
    p.add_argument("--builder_opt", type=int, default=None)
    p.add_argument("--output_dir", type=str, default="llama_outputs")
    p.add_argument("--remove_input_padding", default=False, action="store_true")
    p.add_argument("--use_smooth_quant", default=False, action="store_true")
    p.add_argument("--per_channel", default=False, action="store_true")
    p.add_argument("--per_token", default=False, action="store_true")
    p.add_argument("--per_group", default=False, action="store_true")
    p.add_argument("--group_size", type=int, default=128)
    p.add_argument("--int8_kv_cache", default=False, action="store_true")
    p.add_argument("--use_parallel_embedding", action="store_true", default=False)
    p.add_argument("--embedding_sharding_dim", type=int, default=1, choices=[0, 1])
    p.add_argument("--enable_fp8", default=False, action="store_true")
    p.add_argument("--fp8_kv_cache", default=False, action="store_true")
    p.add_argument("--quantized_fp8_model_path", type=str, default=None)
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision",
        const="int8",
        type=str,
        nargs="?",
        default="int8",
        choices=["int8", "int4", "int4_awq", "int4_gptq"],
    )
    p.add_argument("--use_inflight_batching", action="store_true", default=False)
    p.add_argument("--paged_kv_cache", action="store_true", default=False)
    p.add_argument("--tokens_per_block", type=int, default=64)
    p.add_argument("--max_num_tokens", type=int, default=None)
    p.add_argument("--strongly_typed", default=False, action="store_true")
    p.add_argument("--use_custom_all_reduce", action="store_true")
    return p


def _ft_config(model_dir: str) -> dict[str, Any]:
    """weight.parse_ft_config: missing file or section -> configparser.NoSectionError."""
    cfg = configparser.ConfigParser()
    cfg.read(Path(model_dir) / "config.ini")
    n_embd = cfg.getint("gpt", "n_embd")
    return {
        "n_embd": n_embd,
        "n_head": cfg.getint("gpt", "n_head"),
        "n_layer": cfg.getint("gpt", "n_layer"),
        "n_positions": cfg.getint("gpt", "n_positions"),
        "vocab_size": cfg.getint("gpt", "vocab_size"),
        "hidden_act": cfg.get("gpt", "activation_function"),
        "inter_size": cfg.getint("gpt", "intermediate_size", fallback=None) or 4 * n_embd,
        "dtype": cfg.get("gpt", "storage_dtype", fallback="float32"),
        "multi_query_mode": cfg.getboolean("gpt", "multi_query_mode", fallback=False),
        "tensor_parallelism": cfg.getint("gpt", "tensor_parallelism", fallback=1),
    }


def _inflight(args: argparse.Namespace, default_plugin: str) -> None:
    """--use_inflight_batching turns on the attention plugin, padding removal and the paged KV cache."""
    if args.use_inflight_batching:
        if not args.use_gpt_attention_plugin:
            args.use_gpt_attention_plugin = default_plugin
            logger.info(
                "Using GPT attention plugin for inflight batching mode. Setting to default "
                f"'{args.use_gpt_attention_plugin}'"
            )
        if not args.remove_input_padding:
            args.remove_input_padding = True
            logger.info("Using remove input padding for inflight batching mode.")
        if not args.paged_kv_cache:
            args.paged_kv_cache = True
            logger.info("Using paged KV cache for inflight batching mode.")


def _write_engines(
    controls: Any,
    args: argparse.Namespace,
    builder_config: dict[str, Any],
    plugin_config: dict[str, Any],
    names: list[str],
    tik: float,
) -> None:
    """config.json, one engine per rank, and the timing cache at <output_dir>/model.cache (always, like the real)."""
    gpu = current_gpu()
    out = Path(args.output_dir)
    controls.before_write()
    text = json.dumps({"builder_config": builder_config, "plugin_config": plugin_config}, indent=4) + "\n"
    files: list[tuple[str, Any]] = [("config.json", lambda: text.encode())]
    for name in names:
        logger.info(f"Serializing engine to {out / name}...")
        files.append((name, lambda: engine_bytes(gpu.compute_cap)))
    controls.write_files(out, files)
    (out / "model.cache").write_bytes(b"standin timing cache\n")
    logger.info(f"Engine serialized. Total time: {elapsed(tik)}")
    logger.info(f"Timing cache serialized to {out / 'model.cache'}")
    logger.info(f"Total time of building all {len(names)} engines: {elapsed(tik)}")


def run_build(script: str) -> None:
    controls = start(script)
    args = build_parser().parse_args()
    logger.set_level(args.log_level)
    if not args.remove_input_padding and args.use_gpt_attention_plugin is not False:
        logger.warning("It is recommended to specify --remove_input_padding when using GPT attention plugin")
    converted_tp = None
    if args.model_dir is not None:
        logger.info(f"Setting model configuration from {args.model_dir}.")
        ft = _ft_config(args.model_dir)
        args.n_embd, args.n_head, args.n_layer = ft["n_embd"], ft["n_head"], ft["n_layer"]
        args.n_positions, args.vocab_size, args.hidden_act = ft["n_positions"], ft["vocab_size"], ft["hidden_act"]
        args.inter_size, args.multi_query_mode = ft["inter_size"], ft["multi_query_mode"]
        args.dtype = CANONICAL.get(ft["dtype"], ft["dtype"])
        converted_tp = ft["tensor_parallelism"]
    for plugin in ("use_gpt_attention_plugin", "use_gemm_plugin", "use_layernorm_plugin", "use_lookup_plugin"):
        if getattr(args, plugin) is None:  # given without a value: the model dtype
            logger.info(f"{plugin} set, without specifying a value. Using {args.dtype} automatically.")
            setattr(args, plugin, args.dtype)
    assert not (args.use_smooth_quant and args.use_weight_only), (
        "You cannot enable both SmoothQuant and INT8 weight-only together."
    )
    _inflight(args, "float16")
    if args.max_num_tokens is not None:
        assert args.enable_context_fmha
    controls.begin_work()
    tik = time.time()
    current_gpu()
    if args.model_dir is not None:
        for rank in range(args.world_size):
            qkv = Path(args.model_dir) / f"model.layers.0.attention.query_key_value.weight.{rank}.bin"
            if not qkv.is_file():
                raise FileNotFoundError(2, "No such file or directory", str(qkv))
        if converted_tp != args.world_size:
            n = args.n_embd * 3 * args.n_embd // (converted_tp or 1)
            raise ValueError(
                f"cannot reshape array of size {n} into shape ({args.n_embd},3,{args.n_embd // args.world_size})"
            )
    dtype = args.dtype
    builder_config = _builder_config(args, "gpt", dtype, args.world_size, 1)
    builder_config["num_kv_heads"] = 1 if args.multi_query_mode else args.n_head
    plugin_config = _plugin_config(args, dtype, args.use_layernorm_plugin, "layernorm_plugin")
    plugin_config["lookup_plugin"] = args.use_lookup_plugin
    names = [f"gpt_{dtype}_tp{args.world_size}_rank{rank}.engine" for rank in range(args.world_size)]
    _write_engines(controls, args, builder_config, plugin_config, names, tik)


def run_llama_build(script: str) -> None:
    """examples/llama/build.py: reads the HF (or Meta, or FT) weights itself and writes the engines."""
    controls = start(script)
    args = llama_build_parser().parse_args()
    logger.set_level(args.log_level)
    assert not (args.use_smooth_quant and args.use_weight_only), (
        "You cannot enable both SmoothQuant and INT8 weight-only together."
    )
    if not args.remove_input_padding and args.use_gpt_attention_plugin:
        logger.warning("It is recommended to specify --remove_input_padding when using GPT attention plugin")
    _inflight(args, "float16")
    if args.model_dir is not None:
        hf = load_hf_config(args.model_dir)
        args.inter_size, args.n_embd = hf.get("intermediate_size"), hf.get("hidden_size")
        args.n_head, args.n_layer = hf.get("num_attention_heads"), hf.get("num_hidden_layers")
        args.n_kv_head = hf.get("num_key_value_heads", args.n_head)
        args.n_positions, args.vocab_size = hf.get("max_position_embeddings"), hf.get("vocab_size")
        args.hidden_act, args.rms_norm_eps = hf.get("hidden_act"), hf.get("rms_norm_eps")
    elif args.ft_model_dir is not None:
        ft = _ft_config(args.ft_model_dir)
        args.n_embd, args.n_head, args.n_layer = ft["n_embd"], ft["n_head"], ft["n_layer"]
    assert args.use_gpt_attention_plugin, "LLaMa must use gpt attention plugin"
    if args.n_kv_head is None:
        args.n_kv_head = args.n_head
    if args.dtype == "bfloat16":
        assert args.use_gemm_plugin, "Please use gemm plugin when dtype is bfloat16"
    assert args.pp_size * args.tp_size == args.world_size
    if args.max_num_tokens is not None:
        assert args.use_inflight_batching and args.enable_context_fmha
    controls.begin_work()
    tik = time.time()
    current_gpu()
    if args.model_dir is not None:
        logger.info(f"Loading HF LLaMA ... from {args.model_dir}")
        check_hf_weights(args.model_dir)
        logger.info("HF LLaMA loaded. Total time: 00:00:00")
    builder_config = _builder_config(args, "llama", args.dtype, args.tp_size, args.pp_size)
    builder_config["num_kv_heads"] = args.n_kv_head
    plugin_config = _plugin_config(args, args.dtype, args.use_rmsnorm_plugin, "rmsnorm_plugin")
    pp = "" if args.pp_size == 1 else f"_pp{args.pp_size}"
    names = [f"llama_{args.dtype}_tp{args.tp_size}{pp}_rank{r}.engine" for r in range(args.world_size)]
    _write_engines(controls, args, builder_config, plugin_config, names, tik)


def _builder_config(args: argparse.Namespace, name: str, dtype: str, tp: int, pp: int) -> dict[str, Any]:
    return {
        "name": name,
        "precision": dtype,
        "tensor_parallel": tp,
        "pipeline_parallel": pp,
        "parallel_build": args.parallel_build,
        "num_layers": args.n_layer,
        "num_heads": args.n_head,
        "hidden_size": args.n_embd,
        "vocab_size": args.vocab_size,
        "hidden_act": args.hidden_act,
        "max_position_embeddings": args.n_positions,
        "max_batch_size": args.max_batch_size,
        "max_beam_width": args.max_beam_width,
        "max_input_len": args.max_input_len,
        "max_output_len": args.max_output_len,
        "max_num_tokens": args.max_num_tokens,
        "int8": bool(args.use_smooth_quant or args.use_weight_only or args.int8_kv_cache),
        "quant_mode": 0,
        "opt_level": args.builder_opt,
        "strongly_typed": args.strongly_typed,
        "tensorrt": "9.2.0.5",
    }


def _plugin_config(args: argparse.Namespace, dtype: str, norm: Any, norm_key: str) -> dict[str, Any]:
    return {
        "gpt_attention_plugin": args.use_gpt_attention_plugin,
        "gemm_plugin": args.use_gemm_plugin,
        norm_key: norm,
        "smooth_quant_gemm_plugin": dtype if args.use_smooth_quant else False,
        "weight_only_quant_matmul_plugin": dtype if args.use_weight_only else False,
        "nccl_plugin": dtype if args.world_size > 1 else False,
        "context_fmha_type": 2 if args.enable_context_fmha_fp32_acc else int(args.enable_context_fmha),
        "remove_input_padding": args.remove_input_padding,
        "paged_kv_cache": args.paged_kv_cache,
        "tokens_per_block": args.tokens_per_block,
        "use_custom_all_reduce": bool(args.use_custom_all_reduce),
        "use_paged_context_fmha": False,
    }
