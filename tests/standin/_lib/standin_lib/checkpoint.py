"""TensorRT-LLM checkpoints: ``config.json`` + ``rank{N}.safetensors`` (tiny tensors)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .common import Controls, logger
from .tensors import TORCH_TO_ST, safetensors_bytes

WEIGHT_ONLY = {"W8A16", "W4A16", "W4A16_AWQ", "W4A16_GPTQ", "W8A16_GPTQ", "W4A8_AWQ"}


def quant_config(quant_algo: str | None = None, kv_cache_quant_algo: str | None = None, **extra: Any) -> dict:
    q: dict[str, Any] = {
        "quant_algo": quant_algo,
        "kv_cache_quant_algo": kv_cache_quant_algo,
        "group_size": 128,
        "smoothquant_val": 0.5,
        "clamp_val": None,
        "use_meta_recipe": False,
        "has_zero_point": False,
        "pre_quant_scale": False,
        "exclude_modules": None,
    }
    q.update(extra)
    return q


def mapping(tp: int, pp: int, cp: int = 1, moe_tp: int | None = None, moe_ep: int | None = None) -> dict:
    return {
        "world_size": tp * pp * cp,
        "gpus_per_node": 8,
        "cp_size": cp,
        "tp_size": tp,
        "pp_size": pp,
        "moe_tp_size": moe_tp if moe_tp is not None else tp,
        "moe_ep_size": moe_ep if moe_ep is not None else 1,
        "auto_parallel": False,
    }


def pretrained_config(
    architecture: str,
    dtype: str,
    shp: dict[str, Any],
    mapping_: dict,
    quantization: dict,
    **extra: Any,
) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "architecture": architecture,
        "dtype": dtype,
        "vocab_size": shp["vocab_size"],
        "hidden_size": shp["hidden_size"],
        "num_hidden_layers": shp["num_hidden_layers"],
        "num_attention_heads": shp["num_attention_heads"],
        "num_key_value_heads": shp["num_key_value_heads"],
        "head_size": shp["head_size"],
        "intermediate_size": shp["intermediate_size"],
        "norm_epsilon": shp["norm_epsilon"],
        "position_embedding_type": "rope_gpt_neox",
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "share_embedding_table": False,
        "max_position_embeddings": shp["max_position_embeddings"],
        "hidden_act": shp["hidden_act"],
        "rotary_base": shp["rotary_base"],
        "rotary_scaling": shp["rotary_scaling"],
        "logits_dtype": "float32",
        "mapping": mapping_,
        "quantization": quantization,
    }
    cfg.update(extra)
    return cfg


def check_parallelism(cfg: dict[str, Any]) -> None:
    m = cfg["mapping"]
    heads = cfg["num_attention_heads"]
    if heads % m["tp_size"] != 0:
        raise AssertionError(f"num_attention_heads ({heads}) must be divisible by tp_size ({m['tp_size']})")
    if m["pp_size"] > cfg["num_hidden_layers"]:
        raise AssertionError(f"pp_size ({m['pp_size']}) must not exceed num_hidden_layers ({cfg['num_hidden_layers']})")


def rank_tensors(cfg: dict[str, Any], rank: int) -> list[tuple[str, str, list[int]]]:
    """A tiny but plausible tensor list for one rank (dimensions capped at 32)."""
    m = cfg["mapping"]
    tp, pp = m["tp_size"], m["pp_size"]
    tp_rank, pp_rank = rank % tp, (rank // tp) % pp

    def c(x: int) -> int:
        return max(1, min(int(x), 32))

    dt = TORCH_TO_ST.get(cfg["dtype"], "F16")
    algo = (cfg.get("quantization") or {}).get("quant_algo")
    wdt = "I8" if algo in WEIGHT_ONLY or (algo or "").startswith("W8A8") else dt
    if algo in ("FP8", "FP8_PER_CHANNEL_PER_TOKEN"):
        wdt = "F8_E4M3"
    h = cfg["hidden_size"]
    heads, kv, hs = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_size"]
    qkv_out = (heads + 2 * kv) * hs // tp
    inter = cfg["intermediate_size"] // tp
    layers = cfg["num_hidden_layers"]
    per = -(-layers // pp)
    mine = range(pp_rank * per, min(layers, (pp_rank + 1) * per))
    gated = cfg["hidden_act"] in ("silu", "swiglu", "gelu_pytorch_tanh", "geglu") and not cfg[
        "architecture"
    ].startswith("GPT")
    bias = cfg["architecture"].startswith("GPT")
    out: list[tuple[str, str, list[int]]] = []
    if pp_rank == 0:
        out.append(("transformer.vocab_embedding.weight", dt, [c(cfg["vocab_size"]), c(h)]))
        if cfg["position_embedding_type"] == "learned_absolute":
            out.append(("transformer.position_embedding.weight", dt, [c(cfg["max_position_embeddings"]), c(h)]))
    for layer in mine:
        p = f"transformer.layers.{layer}"
        lin = [
            (f"{p}.attention.qkv", [c(qkv_out), c(h)]),
            (f"{p}.attention.dense", [c(h), c(h // tp)]),
            (f"{p}.mlp.fc", [c(inter), c(h)]),
            (f"{p}.mlp.proj", [c(h), c(inter)]),
        ]
        if gated:
            lin.append((f"{p}.mlp.gate", [c(inter), c(h)]))
        out.append((f"{p}.input_layernorm.weight", dt, [c(h)]))
        for name, shp in lin:
            out.append((f"{name}.weight", wdt, shp))
            if wdt == "I8":
                out.append((f"{name}.per_channel_scale", dt, [shp[0]]))
            elif wdt == "F8_E4M3":
                out.append((f"{name}.weights_scaling_factor", "F32", []))
            if bias:
                out.append((f"{name}.bias", dt, [shp[0]]))
        out.append((f"{p}.post_layernorm.weight", dt, [c(h)]))
        if bias:
            out.append((f"{p}.input_layernorm.bias", dt, [c(h)]))
            out.append((f"{p}.post_layernorm.bias", dt, [c(h)]))
    if pp_rank == pp - 1:
        out.append(("transformer.ln_f.weight", dt, [c(h)]))
        out.append(("lm_head.weight", dt, [c(cfg["vocab_size"] // tp), c(h)]))
    del tp_rank
    return out


def write_checkpoint(
    controls: Controls, out_dir: Path, cfg: dict[str, Any], seed: str, *, cp_shared: bool = False
) -> None:
    """``config.json`` first, then ``rank{N}.safetensors`` for every rank (like save_checkpoint).

    ``cp_shared``: the converter counts context parallelism in ``mapping.world_size`` but converts only
    the tp x pp ranks (the llama and qwen converters); engine ranks of one cp group share a file.
    """
    check_parallelism(cfg)
    m = cfg["mapping"]
    world = m["world_size"]
    ranks = m["tp_size"] * m["pp_size"] if cp_shared else world
    controls.before_write()
    text = json.dumps(cfg, indent=4) + "\n"
    files: list[tuple[str, Any]] = [("config.json", lambda: text.encode())]
    for rank in range(ranks):

        def produce(rank: int = rank) -> bytes:
            tensors = rank_tensors(cfg, rank)
            # STANDIN_CHECKPOINT_BYTES: pad each rank so the checkpoint is as large as a real one would be
            # (the disk-budget benchmark needs checkpoint ~ model size); split evenly over the ranks.
            padding = int(os.environ.get("STANDIN_CHECKPOINT_BYTES", "0")) // ranks
            if padding > 0:
                tensors.append(("standin.padding", "U8", [padding]))
            return safetensors_bytes(tensors, seed=f"{seed}|{text}|{rank}")

        files.append((f"rank{rank}.safetensors", produce))
    controls.write_files(out_dir, files)
    logger.info(f"Saved TensorRT-LLM checkpoint ({ranks} rank file(s), world size {world}) to {out_dir}")
