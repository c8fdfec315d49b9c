"""The body of the ``examples/run.py`` stand-in (its parser lives in run.py / utils.py)."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from .common import TRT_BY_TRTLLM, Controls, logger, trt_version, trtllm_version
from .engine import read_engine_header
from .gpus import cuda_gpus

DEFAULT_HF_MODEL_DIRS = {
    "GPT2LMHeadModel": "gpt2",
    "GPTForCausalLM": "gpt2",
    "LlamaForCausalLM": "meta-llama/Llama-2-7b-hf",
    "PhiForCausalLM": "microsoft/phi-2",
    "QWenForCausalLM": "Qwen/Qwen-7B",
    "Qwen2ForCausalLM": "Qwen/Qwen1.5-7B",
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
WORDS = [
    "the", "chef", "at", "hotel", "de", "ville", "in", "paris", "where", "he", "was", "a", "great",
    "success", "with", "his", "cooking", "and", "soon", "became", "known", "as", "one", "of", "finest",
]  # fmt: skip


def cpp_log(msg: str) -> None:
    print(f"[TensorRT-LLM][INFO] {msg}", flush=True)


def _tokenizer(args: argparse.Namespace, model_name: str) -> None:
    tok = args.tokenizer_dir
    if tok is None and model_name in DEFAULT_HF_MODEL_DIRS:
        logger.warning("tokenizer_dir is not specified. Try to infer from model_name, but this may be incorrect.")
        tok = DEFAULT_HF_MODEL_DIRS[model_name]
    if tok is None:
        raise OSError("Can't load tokenizer: no --tokenizer_dir given (standin: no network, no default)")
    path = Path(tok)
    if not path.is_dir():
        raise OSError(
            f"We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them "
            f"in the cached files.\nCheck your internet connection or see how to run the library in "
            f"offline mode at 'https://huggingface.co/docs/transformers/installation#offline-mode'. ({tok})"
        )
    if not any((path / n).is_file() for n in TOKENIZER_FILES):
        raise OSError(
            f"Can't load tokenizer for '{tok}'. If you were trying to load it from "
            "'https://huggingface.co/models', make sure you don't have a local directory with the same "
            f"name. Otherwise, make sure '{tok}' is the correct path to a directory containing all "
            "relevant files for a PreTrainedTokenizerFast tokenizer."
        )


def _inputs(args: argparse.Namespace) -> list[str]:
    if args.input_file is None:
        return list(args.input_text)
    f = Path(args.input_file)
    if f.suffix == ".txt":
        return f.read_text(encoding="utf-8", errors="replace").splitlines()
    if f.suffix == ".csv":
        return [line.replace(",", " ") for line in f.read_text().splitlines()]
    print("Input file format not supported.")
    raise SystemExit


def _generate(text: str, beam: int, n: int) -> str:
    digest = hashlib.sha256(f"{text}|{beam}".encode()).digest()
    words = [WORDS[digest[i % len(digest)] % len(WORDS)] for i in range(n)]
    return " " + " ".join(words)


def run(args: argparse.Namespace, controls: Controls) -> None:
    logger.set_level(args.log_level)
    controls.begin_work()
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))
    runtime_world = int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1"))
    engine_dir = Path(args.engine_dir)
    os.listdir(engine_dir)  # FileNotFoundError for a missing engine dir, like the real script
    with (engine_dir / "config.json").open() as f:
        config: dict[str, Any] = json.load(f)
    version = config.get("version")
    if version is None:
        bc = config["builder_config"]
        model_name = bc["name"]
        world = bc.get("tensor_parallel", 1) * bc.get("pipeline_parallel", 1)
        engine_name = f"{bc['name']}_{bc['precision']}_tp{bc.get('tensor_parallel', 1)}_rank{rank}.engine"
        limits = {
            "max_batch_size": bc.get("max_batch_size"),
            "max_input_len": bc.get("max_input_len"),
            "max_seq_len": (bc.get("max_input_len") or 0) + (bc.get("max_output_len") or 0),
            "max_beam_width": bc.get("max_beam_width", 1),
        }
        cpp_log("Engine version not found in the config file, assuming engine(s) built by old builder API.")
    else:
        pc = config["pretrained_config"]
        model_name = pc["architecture"]
        world = pc["mapping"]["world_size"]
        engine_name = f"rank{rank}.engine"
        limits = config["build_config"]
        cpp_log(f"Engine version {version} found in the config file, assuming engine(s) built by new builder API.")
    _tokenizer(args, model_name)
    inputs = _inputs(args)
    assert world == runtime_world, f"Engine world size ({world}) != Runtime world size ({runtime_world})"
    gpus = cuda_gpus()
    if rank >= len(gpus):
        raise RuntimeError("[TensorRT-LLM][ERROR] CUDA runtime error in cudaSetDevice(device): invalid device ordinal")
    gpu = gpus[rank]
    cpp_log(f"MPI size: {runtime_world}, MPI local size: {runtime_world}, rank: {rank}")
    engine_path = engine_dir / engine_name
    if not engine_path.is_file():
        raise RuntimeError(
            f"[TensorRT-LLM][ERROR] Assertion failed: Failed to open engine file {engine_path} "
            "(/src/tensorrt_llm/cpp/tensorrt_llm/runtime/utils/sessionUtils.cpp:123)"
        )
    header = read_engine_header(engine_path)
    built_with = header.get("trtllm")
    if built_with and built_with != trtllm_version():
        raise RuntimeError(
            "[TensorRT-LLM][ERROR] The engine plan file is not compatible with this version of TensorRT, "
            f"expecting library version {trt_version()} got "
            f"{TRT_BY_TRTLLM.get(built_with, '10.0.1.6')}, please rebuild. (engine built by TensorRT-LLM "
            f"{built_with}, runtime is {trtllm_version()})"
        )
    if header.get("sm") and header["sm"] != gpu.compute_cap:
        raise RuntimeError(
            "[TensorRT-LLM][ERROR] The engine plan file is generated on an incompatible device, expecting "
            f"compute {gpu.compute_cap} got compute {header['sm']}, please rebuild."
        )
    cpp_log(f"Loaded engine size: {engine_path.stat().st_size // (1 << 20)} MiB")
    plugins = (limits.get("plugin_config") or {}) if version is not None else {}
    if plugins.get("manage_weights"):  # --fast_build engines: the runtime loads the weights beside them
        weights = engine_dir / f"rank{rank}_managed_weights.safetensors"
        if not weights.is_file():
            raise RuntimeError(
                f"[TensorRT-LLM][ERROR] Failed to open safetensors file {weights}: No such file or directory"
            )
        cpp_log(f"Loading managed weights from {weights}")
    lengths = [min(len(t.split()) + 1, args.max_input_length) for t in inputs]
    if limits.get("max_batch_size") and len(inputs) > limits["max_batch_size"]:
        raise RuntimeError(
            f"Batch size ({len(inputs)}) exceeds the engine or specified limit ({limits['max_batch_size']})"
        )
    if limits.get("max_input_len") and max(lengths, default=0) > limits["max_input_len"]:
        raise RuntimeError(
            f"Maximum input length ({max(lengths)}) exceeds the engine or specified limit ({limits['max_input_len']})"
        )
    if limits.get("max_seq_len") and max(lengths, default=0) + args.max_output_len > limits["max_seq_len"]:
        raise RuntimeError(
            f"Input length ({max(lengths)}) + max new tokens ({args.max_output_len}) exceeds the engine "
            f"max_seq_len ({limits['max_seq_len']})"
        )
    if args.num_beams > (limits.get("max_beam_width") or 1):
        raise RuntimeError(
            f"Beam width ({args.num_beams}) exceeds the engine max_beam_width ({limits.get('max_beam_width')})"
        )
    controls.before_write()
    if rank != 0:
        return
    n = max(1, min(args.max_output_len, 16))
    # STANDIN_OUTPUT_TEXT: what the "model" answers (`\n` is a newline), printed as run.py prints any
    # decoded text: unescaped, so an answer with newlines spans several lines
    fixed = os.environ.get("STANDIN_OUTPUT_TEXT")
    for i, text in enumerate(inputs):
        print(f'Input [Text {i}]: "{text}"')
        for beam in range(args.num_beams):
            out = fixed.replace("\\n", "\n") if fixed is not None else _generate(text, beam, n)
            print(f'Output [Text {i} Beam {beam}]: "{out}"')
