"""The ``convert_checkpoint.py`` stand-ins: real parsers (v0.21 shapes), fake conversion."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from enum import Enum
from pathlib import Path
from typing import Any

from . import checkpoint as ck
from .common import elapsed, legacy_warning, logger, start, trtllm_version
from .hfmodel import check_hf_weights, infer_dtype, load_hf_config, shape

DTYPE_CHOICES = ["auto", "float16", "bfloat16", "float32"]
DTYPE_HELP = (
    "The data type for the model weights and activations if not quantized. "
    "If 'auto', the data type is automatically inferred from the source model; "
    "however, if the source dtype is float32, it is converted to float16."
)


# --------------------------------------------------------------------------- parsers
def _common_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tp_size", type=int, default=1, help="N-way tensor parallelism size")
    p.add_argument("--pp_size", type=int, default=1, help="N-way pipeline parallelism size")


def _moe_parallel(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--moe_tp_size",
        type=int,
        default=-1,
        help="N-way tensor parallelism size for MOE, default is tp_size, which will do tp-only for MoE",
    )
    p.add_argument(
        "--moe_ep_size",
        type=int,
        default=-1,
        help="N-way expert parallelism size for MOE, default is 1, which will do tp-only for MoE",
    )


def _sq_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--smoothquant",
        "-sq",
        type=float,
        default=None,
        help="Set the alpha parameter (see https://arxiv.org/pdf/2211.10438.pdf) to Smoothquant "
        "the model, and output int8 weights. A good first try is 0.5. Must be in [0, 1]",
    )
    p.add_argument("--per_channel", action="store_true", default=False, help="Per-channel GEMM scales.")
    p.add_argument("--per_token", action="store_true", default=False, help="Per-token activation scales.")


def _embedding_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--load_model_on_cpu", action="store_true")
    p.add_argument(
        "--use_parallel_embedding",
        action="store_true",
        default=False,
        help="By default embedding parallelism is disabled.",
    )
    p.add_argument(
        "--embedding_sharding_dim",
        type=int,
        default=0,
        choices=[0, 1],
        help="Shard the embedding table along the vocab (0) or hidden (1) dimension.",
    )


def _out_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--output_dir", type=str, default="tllm_checkpoint", help="The path to save the TensorRT-LLM checkpoint"
    )
    p.add_argument("--workers", type=int, default=1, help="The number of workers for converting checkpoint in parallel")


def llama_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", type=str, default=None)
    p.add_argument("--meta_ckpt_dir", type=str, default=None)
    _common_parallel(p)
    p.add_argument(
        "--moe_tp_size",
        type=int,
        default=-1,
        help="N-way tensor parallelism size for MOE, default is tp_size, which will do tp-only for MoE",
    )
    p.add_argument("--cp_size", type=int, default=1, help="N-way context parallelism size")
    p.add_argument(
        "--moe_ep_size",
        type=int,
        default=-1,
        help="N-way expert parallelism size for MOE, default is 1, which will do tp-only for MoE",
    )
    p.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    p.add_argument("--vocab_size", type=int, default=32000)
    p.add_argument("--n_positions", type=int, default=2048)
    p.add_argument("--n_layer", type=int, default=32)
    p.add_argument("--n_head", type=int, default=32)
    p.add_argument("--n_kv_head", type=int, default=None)
    p.add_argument("--n_embd", type=int, default=4096)
    p.add_argument("--inter_size", type=int, default=11008)
    p.add_argument("--multiple_of", type=int, default=None)
    p.add_argument("--ffn_dim_multiplier", type=float, default=None)
    p.add_argument("--rms_norm_eps", type=float, default=1e-06)
    p.add_argument("--use_weight_only", default=False, action="store_true", help="Quantize weights.")
    p.add_argument("--disable_weight_only_quant_plugin", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision",
        const="int8",
        type=str,
        nargs="?",
        default="int8",
        choices=["int8", "int4", "int8_gptq", "int4_gptq", "int4_awq"],
        help="Define the precision for the weights when using weight-only quantization.",
    )
    p.add_argument("--calib_dataset", type=str, default="ccdv/cnn_dailymail")
    p.add_argument("--calib_size", type=int, default=512)
    p.add_argument("--calib_max_seq_length", type=int, default=512)
    _sq_flags_llama(p)
    p.add_argument("--int8_kv_cache", default=False, action="store_true")
    p.add_argument("--fp8_kv_cache", default=False, action="store_true")
    p.add_argument("--quant_ckpt_path", type=str, default=None)
    p.add_argument("--use_fp8", action="store_true", default=False, help="Enable FP8 per-tensor quantization")
    p.add_argument("--use_nvfp4", action="store_true", default=False, help="Enable NVFP4 quantization")
    p.add_argument("--use_fp8_rowwise", action="store_true", default=False)
    p.add_argument("--use_meta_fp8_rowwise_recipe", action="store_true", default=False)
    p.add_argument("--per_group", default=False, action="store_true")
    p.add_argument("--load_by_shard", action="store_true", help="Load a pretrained model shard-by-shard.")
    p.add_argument("--hidden_act", type=str, default="silu")
    p.add_argument("--rotary_base", type=float, default=10000.0)
    p.add_argument("--group_size", type=int, default=128, help="Group size used in GPTQ quantization.")
    _embedding_flags(p)
    _out_flags(p)
    p.add_argument("--moe_num_experts", default=0, type=int)
    p.add_argument("--moe_top_k", default=0, type=int)
    p.add_argument("--moe_renorm_mode", default=1, type=int)
    p.add_argument("--save_config_only", action="store_true", default=False)
    p.add_argument("--remove_duplicated_kv_heads", action="store_true", default=False)
    p.add_argument("--log_level", type=str, default="info")
    return p


def _sq_flags_llama(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--smoothquant",
        "-sq",
        type=float,
        default=None,
        help="Set the alpha parameter to Smoothquant the model, and output int8 weights.",
    )
    p.add_argument("--use_qserve", default=False, action="store_true", help="Use QServe W4A8 quantization.")
    p.add_argument("--per_channel", action="store_true", default=False)
    p.add_argument("--per_token", action="store_true", default=False)


def gpt_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", type=str, default=None)
    p.add_argument("--nemo_ckpt_path", type=str, default=None)
    p.add_argument(
        "--gpt_variant",
        default=None,
        choices=[None, "gpt2", "santacoder", "starcoder", "starcoder2", "persimmon", "kosmos-2", "nemotron"],
        help="By default the script will try to infer the gpt_variant from model_dir.",
    )
    _common_parallel(p)
    p.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    _embedding_flags(p)
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision", const="int8", type=str, nargs="?", default="int8", choices=["int8", "int4"]
    )
    p.add_argument("--calib_dataset", type=str, default="lambada")
    p.add_argument("--int8_kv_cache", default=False, action="store_true")
    p.add_argument("--per_channel", default=False, action="store_true")
    p.add_argument("--per_token", default=False, action="store_true")
    p.add_argument("--smoothquant", "-sq", type=float, default=None)
    p.add_argument("--dataset_cache_dir", type=str, default=None)
    _out_flags(p)
    p.add_argument("--log_level", type=str, default="info")
    p.add_argument("--nemo_rename_key", type=str, nargs="+", default=[])
    return p


def qwen_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", type=str, default=None, required=True)
    _common_parallel(p)
    p.add_argument("--cp_size", type=int, default=1, help="N-way context parallelism size")
    p.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument("--disable_weight_only_quant_plugin", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision",
        const="int8",
        type=str,
        nargs="?",
        default="int8",
        choices=["int8", "int4", "int4_gptq", "int8_gptq"],
    )
    p.add_argument("--calib_dataset", type=str, default="ccdv/cnn_dailymail")
    _sq_flags(p)
    p.add_argument("--int8_kv_cache", default=False, action="store_true")
    p.add_argument("--per_group", default=False, action="store_true")
    p.add_argument("--group_size", type=int, default=128)
    _embedding_flags(p)
    _out_flags(p)
    _moe_parallel(p)
    return p


def phi_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--model_dir", type=str, default=None)
    _common_parallel(p)
    p.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision", const="int8", type=str, nargs="?", default="int8", choices=["int8", "int4"]
    )
    _moe_parallel(p)
    _out_flags(p)
    return p


class CheckpointType(str, Enum):
    jax = "jax"
    keras = "keras"
    torch = "torch"
    hf = "hf"


def gemma_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt-type", type=CheckpointType, choices=list(CheckpointType))
    p.add_argument("--model-dir", "--model_dir", type=Path, required=True)
    p.add_argument("--output-model-dir", "--output_dir", type=Path, required=True)
    p.add_argument("--world-size", type=int, default=1, help="world size, only support tensor parallelism now")
    p.add_argument("--use_weight_only", default=False, action="store_true")
    p.add_argument(
        "--weight_only_precision",
        "--use-weight-only-with-precision",
        choices=["int8", "int4", "w4a8_awq", "w4a16_awq"],
    )
    p.add_argument("--use-int8-weight-only-embedding", action="store_true")
    p.add_argument("--dtype", type=str, default="auto", choices=DTYPE_CHOICES, help=DTYPE_HELP)
    p.add_argument("--enable_fp8", action="store_true")
    p.add_argument("--fp8_kv_cache", action="store_true")
    p.add_argument("--quant_ckpt_path", default=None)
    p.add_argument("--calib_dataset", type=str, default="ccdv/cnn_dailymail")
    p.add_argument("--use_smooth_quant", action="store_true")
    p.add_argument("--int8_kv_cache", "--calibrate_kv_cache", "-kv", action="store_true")
    p.add_argument("--per_channel", action="store_true")
    p.add_argument("--per_token", action="store_true")
    p.add_argument("--smoothquant", "--use_smooth_quant_plugin", "-sq", type=float, default=None)
    p.add_argument("--tokenizer_dir", default=None)
    p.add_argument("--load_model_on_cpu", action="store_true")
    return p


# --------------------------------------------------------------------------- helpers
def _sq_algo(per_channel: bool, per_token: bool) -> str:
    return "W8A8_SQ_PER_{}_PER_{}_PLUGIN".format(
        "CHANNEL" if per_channel else "TENSOR", "TOKEN" if per_token else "TENSOR"
    ).replace("PER_TENSOR_PER_TENSOR", "PER_TENSOR")


def _weight_only_algo(precision: str) -> str:
    return {
        "int8": "W8A16",
        "int4": "W4A16",
        "int8_gptq": "W8A16_GPTQ",
        "int4_gptq": "W4A16_GPTQ",
        "int4_awq": "W4A16_AWQ",
        "w4a8_awq": "W4A8_AWQ",
        "w4a16_awq": "W4A16_AWQ",
    }[precision]


def _quant_from_args(a: argparse.Namespace) -> dict:
    algo = None
    kv = None
    if getattr(a, "use_weight_only", False):
        algo = _weight_only_algo(a.weight_only_precision)
    elif getattr(a, "use_fp8", False):
        algo = "FP8"
    elif getattr(a, "use_nvfp4", False):
        algo = "NVFP4"
    elif getattr(a, "smoothquant", None):
        algo = _sq_algo(a.per_channel, a.per_token)
    elif getattr(a, "use_fp8_rowwise", False):
        algo = "FP8_PER_CHANNEL_PER_TOKEN"
    elif getattr(a, "use_qserve", False):
        algo = "W4A8_QSERVE_PER_GROUP" if a.per_group else "W4A8_QSERVE_PER_CHANNEL"
    if getattr(a, "int8_kv_cache", False):
        kv = "INT8"
    if getattr(a, "fp8_kv_cache", False):
        kv = "FP8"
    extra: dict[str, Any] = {}
    if getattr(a, "smoothquant", None):
        extra["smoothquant_val"] = a.smoothquant
    return ck.quant_config(algo, kv, **extra)


def _resolve_moe(a: argparse.Namespace) -> None:
    if a.moe_tp_size == -1 and a.moe_ep_size == -1:
        a.moe_tp_size, a.moe_ep_size = a.tp_size, 1
    elif a.moe_tp_size == -1:
        a.moe_tp_size = a.tp_size // a.moe_ep_size
    elif a.moe_ep_size == -1:
        a.moe_ep_size = a.tp_size // a.moe_tp_size
    assert a.moe_tp_size * a.moe_ep_size == a.tp_size, "moe_tp_size * moe_ep_size must equal to tp_size"


def source_fingerprint(model_dir: Path, files: list[Path]) -> str:
    h = hashlib.sha256((model_dir / "config.json").read_bytes())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
        with f.open("rb") as fh:
            h.update(fh.read(1 << 20))
    return h.hexdigest()


def _load(model_dir: str | Path, accepted: set[str], family: str) -> tuple[dict, str]:
    hf = load_hf_config(model_dir)
    files = check_hf_weights(model_dir)
    model_type = hf["model_type"]
    if model_type not in accepted:
        raise NotImplementedError(
            f"{family} converter: unsupported model_type {model_type!r} "
            f"(architectures {hf.get('architectures')}); expected one of {sorted(accepted)}"
        )
    return hf, source_fingerprint(Path(model_dir), files)


def _arch(hf: dict, default: str) -> str:
    archs = hf.get("architectures") or [default]
    return archs[0]


# --------------------------------------------------------------------------- families
LLAMA_TYPES = {"llama", "mistral", "mixtral", "llava", "llava_llama", "internlm", "exaone", "granite"}
GPT_TYPES = {"gpt2", "gpt_bigcode", "starcoder2", "persimmon", "kosmos-2", "nemotron"}
QWEN_TYPES = {"qwen", "qwen2", "qwen2_moe", "qwen2_vl", "qwen3", "qwen3_moe"}
PHI_ARCHS = {
    "PhiForCausalLM",
    "Phi3ForCausalLM",
    "Phi3VForCausalLM",
    "Phi3SmallForCausalLM",
    "PhiMoEForCausalLM",
    "Phi4MMForCausalLM",
}
GEMMA_TYPES = {"gemma", "gemma2", "gemma3", "gemma3_text"}


def _moe_block(hf: dict) -> dict:
    return {
        "num_experts": hf.get("num_local_experts", hf.get("num_experts", 0)) or 0,
        "top_k": hf.get("num_experts_per_tok", 0) or 0,
        "normalization_mode": 1,
    }


def run_llama(script: str) -> None:
    controls = start(script)
    legacy_warning("convert_checkpoint.py")
    print(trtllm_version(), flush=True)
    a = llama_parser().parse_args()
    if a.moe_num_experts and a.moe_top_k == 0:
        a.moe_top_k = 1
    logger.set_level(a.log_level)
    _resolve_moe(a)
    controls.begin_work()
    tik = time.time()
    world = a.tp_size * a.pp_size * a.cp_size
    out = controls.output_dir(a.output_dir, world)
    m = ck.mapping(a.tp_size, a.pp_size, a.cp_size, a.moe_tp_size, a.moe_ep_size)
    quant = _quant_from_args(a)
    if a.model_dir is None and a.meta_ckpt_dir is None:
        # Like the real script: only a config.json generated from the command line.
        shp = {
            "vocab_size": a.vocab_size,
            "hidden_size": a.n_embd,
            "num_hidden_layers": a.n_layer,
            "num_attention_heads": a.n_head,
            "num_key_value_heads": a.n_kv_head or a.n_head,
            "head_size": a.n_embd // a.n_head,
            "intermediate_size": a.inter_size,
            "max_position_embeddings": a.n_positions,
            "hidden_act": a.hidden_act,
            "norm_epsilon": a.rms_norm_eps,
            "rotary_base": a.rotary_base,
            "rotary_scaling": None,
        }
        cfg = ck.pretrained_config("LlamaForCausalLM", infer_dtype(a.dtype, None), shp, m, quant)
        controls.before_write()
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(cfg, indent=4) + "\n")
    elif a.meta_ckpt_dir is not None:
        assert a.model_dir is None, "Shall not specify both meta checkpoint dir and hugging face dir"
        params = Path(a.meta_ckpt_dir) / "params.json"
        meta = json.loads(params.read_text())
        shp = {
            "vocab_size": meta.get("vocab_size", 32000),
            "hidden_size": meta["dim"],
            "num_hidden_layers": meta["n_layers"],
            "num_attention_heads": meta["n_heads"],
            "num_key_value_heads": meta.get("n_kv_heads") or meta["n_heads"],
            "head_size": meta["dim"] // meta["n_heads"],
            "intermediate_size": 4 * meta["dim"],
            "max_position_embeddings": 2048,
            "hidden_act": "silu",
            "norm_epsilon": meta.get("norm_eps", 1e-5),
            "rotary_base": meta.get("rope_theta", 10000.0),
            "rotary_scaling": None,
        }
        cfg = ck.pretrained_config("LlamaForCausalLM", infer_dtype(a.dtype, None), shp, m, quant)
        ck.write_checkpoint(controls, out, cfg, seed=params.read_text())
    else:
        hf, fp = _load(a.model_dir, LLAMA_TYPES, "LLaMA")
        shp = shape(hf)
        dtype = infer_dtype(a.dtype, shp["source_dtype"])
        if a.smoothquant is not None or a.int8_kv_cache:
            assert not a.load_by_shard, (
                "When using quantization, TRT-LLM needs to load the whole HF model, thus load by shard not supported"
            )
        extra: dict[str, Any] = {"moe": _moe_block(hf)}
        extra["use_parallel_embedding"] = a.use_parallel_embedding
        extra["embedding_sharding_dim"] = a.embedding_sharding_dim
        cfg = ck.pretrained_config(_arch(hf, "LlamaForCausalLM"), dtype, shp, m, quant, **extra)
        for rank in range(a.tp_size * a.pp_size):  # convert_and_save_hf: tp x pp ranks; cp is only counted
            print(f"Total time of reading and converting: {0.01 * (rank + 1):.3f} s", flush=True)
        ck.write_checkpoint(controls, out, cfg, seed=fp, cp_shared=True)
        print("Total time of saving checkpoint: 0.010 s", flush=True)
    print(f"Total time of converting checkpoints: {elapsed(tik)}", flush=True)


def run_gpt(script: str) -> None:
    controls = start(script)
    legacy_warning("convert_checkpoint.py")
    print(trtllm_version(), flush=True)
    a = gpt_parser().parse_args()
    logger.set_level(a.log_level)
    controls.begin_work()
    tik = time.time()
    world = a.tp_size * a.pp_size
    out = controls.output_dir(a.output_dir, world)
    if a.model_dir is not None:
        hf, fp = _load(a.model_dir, GPT_TYPES, "GPT")
        shp = shape(hf)
        dtype = infer_dtype(a.dtype, shp["source_dtype"])
        variant = a.gpt_variant or {"gpt_bigcode": "starcoder"}.get(hf["model_type"], hf["model_type"])
        cfg = ck.pretrained_config(
            "GPTForCausalLM",
            dtype,
            shp,
            ck.mapping(a.tp_size, a.pp_size),
            _quant_from_args(a),
            position_embedding_type="learned_absolute",
            gpt_variant=variant,
            bias=True,
            use_parallel_embedding=a.use_parallel_embedding,
            embedding_sharding_dim=a.embedding_sharding_dim,
        )
        ck.write_checkpoint(controls, out, cfg, seed=fp)
    elif a.nemo_ckpt_path is not None:
        raise NotImplementedError("standin: NeMo checkpoints are not simulated")
    else:
        raise NotImplementedError("No source model path specified!")
    print(f"Total time of converting checkpoints: {elapsed(tik)}", flush=True)


def run_qwen(script: str) -> None:
    controls = start(script)
    legacy_warning("convert_checkpoint.py")
    print(trtllm_version(), flush=True)
    a = qwen_parser().parse_args()
    _resolve_moe(a)
    controls.begin_work()
    tik = time.time()
    world = a.tp_size * a.pp_size * a.cp_size
    out = controls.output_dir(a.output_dir, world)
    hf, fp = _load(a.model_dir, QWEN_TYPES, "QWen")
    shp = shape(hf)
    dtype = infer_dtype(a.dtype, shp["source_dtype"])
    quant = _quant_from_args(a)
    if a.weight_only_precision in ("int4_gptq", "int8_gptq"):
        quant["quant_algo"] = _weight_only_algo(a.weight_only_precision)
    cfg = ck.pretrained_config(
        _arch(hf, "Qwen2ForCausalLM"),
        dtype,
        shp,
        ck.mapping(a.tp_size, a.pp_size, a.cp_size, a.moe_tp_size, a.moe_ep_size),
        quant,
        qwen_type=hf["model_type"],
        moe=_moe_block(hf),
        use_parallel_embedding=a.use_parallel_embedding,
        embedding_sharding_dim=a.embedding_sharding_dim,
    )
    ck.write_checkpoint(controls, out, cfg, seed=fp, cp_shared=True)
    print(f"Total time of converting checkpoints: {elapsed(tik)}", flush=True)


def run_phi(script: str) -> None:
    controls = start(script)
    legacy_warning("convert_checkpoint.py")
    print(trtllm_version(), flush=True)
    a = phi_parser().parse_args()
    assert a.pp_size == 1, "Pipeline parallelism is not supported."
    _resolve_moe(a)
    controls.begin_work()
    tik = time.time()
    world = a.tp_size * a.pp_size
    out = controls.output_dir(a.output_dir, world)
    hf = load_hf_config(a.model_dir)
    model_type = (hf.get("architectures") or ["?"])[0]
    assert model_type in PHI_ARCHS, "Invalid model type"
    files = check_hf_weights(a.model_dir)
    shp = shape(hf)
    cfg = ck.pretrained_config(
        model_type if "Phi3" in model_type or "PhiMoE" in model_type or "Phi4" in model_type else "PhiForCausalLM",
        infer_dtype(a.dtype, shp["source_dtype"]),
        shp,
        ck.mapping(a.tp_size, a.pp_size, 1, a.moe_tp_size, a.moe_ep_size),
        _quant_from_args(a),
    )
    ck.write_checkpoint(controls, out, cfg, seed=source_fingerprint(Path(a.model_dir), files))
    print(f"Total time of converting checkpoints: {elapsed(tik)}", flush=True)


def run_gemma(script: str) -> None:
    controls = start(script)
    legacy_warning("convert_checkpoint.py")
    a = gemma_parser().parse_args()
    if a.use_weight_only:
        assert a.weight_only_precision is not None
    controls.begin_work()
    tik = time.time()
    quant = ck.quant_config()
    if a.weight_only_precision:
        quant["quant_algo"] = _weight_only_algo(a.weight_only_precision)
    elif a.enable_fp8:
        quant["quant_algo"] = "FP8"
    elif a.use_smooth_quant:
        quant["quant_algo"] = "W8A8_SQ_PER_CHANNEL"
    elif a.smoothquant is not None:
        quant["quant_algo"] = _sq_algo(a.per_channel, a.per_token)
    if a.fp8_kv_cache:
        quant["kv_cache_quant_algo"] = "FP8"
    if a.int8_kv_cache:
        quant["kv_cache_quant_algo"] = "INT8"
    # KeyError for a missing --ckpt-type, like the real script's CKPT_PARSER[args.ckpt_type].
    kind = {t: t.value for t in CheckpointType}[a.ckpt_type]
    m = ck.mapping(a.world_size, 1)
    out = controls.output_dir(a.output_model_dir, a.world_size)
    if kind == "hf":
        hf, fp = _load(a.model_dir, GEMMA_TYPES, "Gemma")
        shp = shape(hf)
        arch = _arch(hf, "GemmaForCausalLM")
        dtype = infer_dtype(a.dtype, shp["source_dtype"])
    else:
        if not a.model_dir.exists():
            raise FileNotFoundError(2, "No such file or directory", str(a.model_dir))
        print(f"Loading source parameters from {a.model_dir.absolute()}", flush=True)
        shp = {
            "vocab_size": 256128,
            "hidden_size": 2048,
            "num_hidden_layers": 18,
            "num_attention_heads": 8,
            "num_key_value_heads": 1,
            "head_size": 256,
            "intermediate_size": 16384,
            "max_position_embeddings": 8192,
            "hidden_act": "gelu",
            "norm_epsilon": 1e-6,
            "rotary_base": 10000.0,
            "rotary_scaling": None,
        }
        arch, dtype, fp = "GemmaForCausalLM", infer_dtype(a.dtype, "bfloat16"), str(a.model_dir)
    cfg = ck.pretrained_config(arch, dtype, shp, m, quant, use_parallel_embedding=m["tp_size"] > 1)
    print(f"Determined TensorRT-LLM configuration {cfg}", flush=True)
    ck.write_checkpoint(controls, out, cfg, seed=fp)
    print(f"Total time of converting checkpoints: {elapsed(tik)}", flush=True)


RUNNERS = {"llama": run_llama, "gpt": run_gpt, "qwen": run_qwen, "phi": run_phi, "gemma": run_gemma}


def main(family: str, script: str) -> None:
    RUNNERS[family](script)
