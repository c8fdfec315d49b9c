"""``examples/quantization/quantize.py`` stand-in (ModelOpt quantize_and_export, faked)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import checkpoint as ck
from .common import start
from .converters import source_fingerprint
from .gpus import current_gpu
from .hfmodel import check_hf_weights, infer_dtype, load_hf_config, shape

QFORMATS = ["nvfp4", "fp8", "int8_sq", "int4_awq", "w4a8_awq", "int8_wo", "int4_wo", "full_prec"]
QUANT_ALGO = {
    "nvfp4": "NVFP4",
    "fp8": "FP8",
    "int8_sq": "W8A8_SQ_PER_CHANNEL",
    "int4_awq": "W4A16_AWQ",
    "w4a8_awq": "W4A8_AWQ",
    "int8_wo": "W8A16",
    "int4_wo": "W4A16",
    "full_prec": None,
}
ARCH_BY_TYPE = {
    "gpt2": "GPTForCausalLM",
    "llama": "LlamaForCausalLM",
    "mistral": "LlamaForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "phi3": "Phi3ForCausalLM",
    "gemma": "GemmaForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=None)
    p.add_argument("--model_dir", help="Specify where the HuggingFace model is", default=None)
    p.add_argument("--nemo_ckpt_path", help="Specify where the NeMo checkpoint is", default=None)
    p.add_argument("--decoder_type", type=str, default="gptnext", choices=["gptnext", "llama"])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="Device for calibration.")
    p.add_argument("--device_map", default="auto", choices=["auto", "sequential", "cpu", "gpu"])
    p.add_argument("--calib_dataset", type=str, default="cnn_dailymail")
    p.add_argument("--calib_tp_size", type=int, default=1)
    p.add_argument("--calib_pp_size", type=int, default=1)
    p.add_argument("--dtype", type=str, default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    p.add_argument("--qformat", help="Quantization format.", default="full_prec", choices=QFORMATS)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--tokenizer_max_seq_length", type=int, default=2048)
    p.add_argument("--batch_size", help="Batch size for calibration.", type=int, default=1)
    p.add_argument("--calib_size", help="Number of samples for calibration.", type=int, default=512)
    p.add_argument("--calib_max_seq_length", type=int, default=512)
    p.add_argument("--output_dir", default="exported_model")
    p.add_argument("--tp_size", type=int, default=1)
    p.add_argument("--pp_size", type=int, default=1)
    p.add_argument("--cp_size", type=int, default=1)
    p.add_argument("--awq_block_size", type=int, default=128)
    p.add_argument("--kv_cache_dtype", help="KV Cache dtype.", default=None, choices=["int8", "fp8", None])
    p.add_argument("--quantize_lm_head", action="store_true", default=False)
    p.add_argument("--num_medusa_heads", type=int, default=4)
    p.add_argument("--num_medusa_layers", type=int, default=1)
    p.add_argument("--max_draft_len", type=int, default=63)
    p.add_argument("--medusa_hidden_act", type=str, default="silu")
    p.add_argument("--medusa_model_dir", type=str, default=None)
    p.add_argument("--quant_medusa_head", default=False, action="store_true")
    p.add_argument("--autoq_format", default=None, type=str)
    p.add_argument("--auto_quantize_bits", type=float, default=None)
    p.add_argument("--export_format", type=str, default="tensorrt_llm", choices=["tensorrt_llm", "hf"])
    return p


def main(script: str) -> None:
    controls = start(script)
    args = parser().parse_args()
    if args.autoq_format:
        lower = 4 if "4" in args.autoq_format else 8
        if args.auto_quantize_bits is None or not lower <= args.auto_quantize_bits <= 16:
            print(f"invalid auto_quantize_bits value, will be set to {lower}")
            args.auto_quantize_bits = lower
    controls.begin_work()
    if args.model_dir is None:
        if args.nemo_ckpt_path is not None:
            raise NotImplementedError("standin: NeMo checkpoints are not simulated")
        raise ValueError("One of source checkpoint (model_dir, nemo_ckpt_path) must be specified")
    tik = time.time()
    if args.device == "cuda":
        current_gpu()
    print(f"Initializing model from {args.model_dir}", flush=True)
    hf = load_hf_config(args.model_dir)
    files = check_hf_weights(args.model_dir)
    shp = shape(hf)
    dtype = infer_dtype(args.dtype, shp["source_dtype"])
    arch = ARCH_BY_TYPE.get(hf["model_type"], (hf.get("architectures") or ["LlamaForCausalLM"])[0])
    kv = {"int8": "INT8", "fp8": "FP8", None: None}[args.kv_cache_dtype]
    quant = ck.quant_config(QUANT_ALGO[args.qformat], kv, group_size=args.awq_block_size)
    if args.qformat != "full_prec":
        print(f"Quantizing the model with {args.qformat} ({args.calib_size} samples of {args.calib_dataset})")
    world = args.tp_size * args.pp_size * args.cp_size
    cfg = ck.pretrained_config(arch, dtype, shp, ck.mapping(args.tp_size, args.pp_size, args.cp_size), quant)
    if arch == "GPTForCausalLM":
        cfg["position_embedding_type"] = "learned_absolute"
    out = controls.output_dir(args.output_dir, world)
    seed = source_fingerprint(Path(args.model_dir), files) + args.qformat
    ck.write_checkpoint(controls, out, cfg, seed=seed)
    print(f"Quantized model exported to {args.output_dir} \nTotal time used {time.time() - tik:.2f} s.")
