"""Reading a Hugging Face model directory the way transformers would (errors included)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from .common import logger
from .tensors import read_header

HF_WEIGHT_NAMES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "consolidated.safetensors",
)


def load_hf_config(model_dir: str | Path) -> dict[str, Any]:
    """``AutoConfig.from_pretrained(model_dir)`` for a local directory."""
    p = Path(model_dir)
    if not p.is_dir():
        raise OSError(
            f"{model_dir} is not a local folder and is not a valid model identifier listed on "
            "'https://huggingface.co/models'\nIf this is a private repository, make sure to pass a "
            "token having permission to this repo either by logging in with `huggingface-cli login` "
            "or by passing `token=<your_token>`"
        )
    cfg = p / "config.json"
    if not cfg.is_file():
        raise OSError(
            f"{model_dir} does not appear to have a file named config.json. Checkout "
            f"'https://huggingface.co/{model_dir}/tree/None' for available files."
        )
    try:
        data = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OSError(f"It looks like the config file at '{cfg}' is not a valid JSON file.") from None
    if not isinstance(data, dict) or "model_type" not in data:
        raise ValueError(
            f"Unrecognized model in {model_dir}. Should have a `model_type` key in its config.json, "
            "or contain one of the following strings in its name: gpt2, llama, mistral, mixtral, "
            "qwen2, phi3, gemma, ..."
        )
    return data


def check_hf_weights(model_dir: str | Path) -> list[Path]:
    """The weight files ``from_pretrained`` would load; raise like transformers if unusable."""
    p = Path(model_dir)
    present = [p / n for n in HF_WEIGHT_NAMES if (p / n).is_file()]
    if not present:
        raise OSError(
            "Error no file named pytorch_model.bin, model.safetensors, tf_model.h5, "
            f"model.ckpt.index or flax_model.msgpack found in directory {model_dir}."
        )
    files: list[Path] = []
    first = present[0]
    if first.name.endswith(".index.json"):
        index = json.loads(first.read_text(encoding="utf-8"))
        for shard in sorted(set(index.get("weight_map", {}).values())):
            shard_path = p / shard
            if not shard_path.is_file():
                raise OSError(
                    f"{model_dir} does not appear to have a file named {shard}. Checkout "
                    f"'https://huggingface.co/{model_dir}/tree/None' for available files."
                )
            files.append(shard_path)
    else:
        files.append(first)
    for f in files:
        if f.suffix == ".safetensors":
            read_header(f)
        elif not (zipfile.is_zipfile(f) or f.read_bytes()[:1] == b"\x80"):
            raise OSError(
                f"Unable to load weights from pytorch checkpoint file for '{f}' at '{f}'. If you "
                "tried to load a PyTorch model from a TF 2.0 checkpoint, please set from_tf=True."
            )
    return files


def infer_dtype(dtype: str, source: str | None) -> str:
    """tensorrt_llm.models.convert_utils.infer_dtype."""
    if dtype != "auto":
        return dtype
    if source in (None, "float32"):
        chosen = "float16"
    elif source in ("float16", "bfloat16"):
        chosen = source
    else:
        raise ValueError(f"Unsupported source dtype {source!r}")
    logger.info(f"Specified dtype 'auto'; inferred dtype {chosen!r}.")
    return chosen


def shape(hf: dict[str, Any]) -> dict[str, Any]:
    """The fields a TensorRT-LLM checkpoint config takes from an HF config."""
    g = hf.get
    hidden = g("hidden_size", g("n_embd", 4096))
    heads = g("num_attention_heads", g("n_head", 32))
    layers = g("num_hidden_layers", g("n_layer", 32))
    inter = g("intermediate_size", g("n_inner")) or 4 * hidden
    return {
        "vocab_size": g("vocab_size", 32000),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": g("num_key_value_heads") or heads,
        "head_size": g("head_dim") or hidden // heads,
        "intermediate_size": inter,
        "max_position_embeddings": g("max_position_embeddings", g("n_positions", 2048)),
        "hidden_act": g("hidden_act", g("activation_function", "silu")),
        "norm_epsilon": g("rms_norm_eps", g("layer_norm_epsilon", 1e-5)),
        "rotary_base": g("rope_theta", 10000.0),
        "rotary_scaling": g("rope_scaling"),
        "source_dtype": g("torch_dtype", g("dtype")),
    }
