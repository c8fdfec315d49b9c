"""Stand-in for TensorRT-LLM v1.2.1 examples/utils.py (tests only): the shared run-time flags.

Only ``add_common_args`` is reproduced (same flag names, types, defaults and choices as the
real helper); the tokenizer/model helpers of the real module are not needed by the stand-in.
"""

from __future__ import annotations

import argparse


def _truthy(s: str) -> bool:
    return s.lower() in ("yes", "true", "t", "1")


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    # sampling
    parser.add_argument("--num_beams", type=int, default=1, help="Use beam search if num_beams > 1")
    parser.add_argument("--num_return_sequences", type=int, default=None)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int, default=1)
    parser.add_argument("--top_p", type=float, default=0.0)
    parser.add_argument("--length_penalty", type=float, default=1.0)
    parser.add_argument("--repetition_penalty", type=float, default=1.0)
    parser.add_argument("--presence_penalty", type=float, default=0.0)
    parser.add_argument("--frequency_penalty", type=float, default=0.0)
    parser.add_argument("--beam_search_diversity_rate", type=float, default=0.0)
    parser.add_argument("--random_seed", type=int, default=0)
    parser.add_argument("--early_stopping", type=int, default=1)
    parser.add_argument("--end_id", default=None, type=int, help="Override tokenizer end_id.")
    parser.add_argument("--stop_words", default=None, type=str, nargs="+", action="append")
    parser.add_argument("--bad_words", default=None, type=str, nargs="+", action="append")
    parser.add_argument("--no_repeat_ngram_size", type=int, default=None)
    # common runtime arguments
    parser.add_argument("--sink_token_length", type=int, default=None)
    parser.add_argument("--max_attention_window_size", type=int, default=None, nargs="+")
    parser.add_argument("--multi_block_mode", type=_truthy, default=True)
    parser.add_argument("--enable_context_fmha_fp32_acc", action="store_true")
    parser.add_argument("--cuda_graph_mode", action="store_true")
    parser.add_argument(
        "--log_level", type=str, choices=["verbose", "info", "warning", "error", "internal_error"], default="info"
    )
    parser.add_argument("--no_prompt_template", dest="use_prompt_template", default=True, action="store_false")
    parser.add_argument("--use_py_session", default=False, action="store_true")
    parser.add_argument("--debug_mode", default=False, action="store_true")
    parser.add_argument("--streaming", default=False, action="store_true")
    parser.add_argument("--streaming_interval", type=int, default=5)
    parser.add_argument("--prompt_table_path", type=str)
    parser.add_argument("--prompt_tasks")
    parser.add_argument("--lora_dir", type=str, default=None, nargs="+")
    parser.add_argument("--lora_ckpt_source", type=str, default="hf", choices=["hf", "nemo"])
    parser.add_argument("--lora_task_uids", type=str, default=None, nargs="+")
    parser.add_argument("--num_prepend_vtokens", nargs="+", type=int)
    parser.add_argument("--draft_target_model_config", type=str, default=None)
    parser.add_argument("--prompt_lookup_config", type=str, default=None)
    parser.add_argument("--medusa_choices", type=str, default=None)
    parser.add_argument("--eagle_choices", type=str, default=None)
    parser.add_argument("--lookahead_config", type=str, default=None)
    # model arguments
    parser.add_argument("--engine_dir", type=str, default="engine_outputs")
    parser.add_argument("--tokenizer_type")
    parser.add_argument("--vocab_file")
    parser.add_argument("--no_add_special_tokens", dest="add_special_tokens", default=True, action="store_false")
    parser.add_argument("--hf_model_dir", "--model_dir", type=str, default=None)
    parser.add_argument("--tokenizer_dir", default=None, help="defaults to hf_model_dir if left unspecified")
    # memory
    parser.add_argument("--gpu_weights_percent", default=1, type=float)
    parser.add_argument("--max_tokens_in_paged_kv_cache", default=None, type=int)
    parser.add_argument("--kv_cache_enable_block_reuse", action="store_true")
    parser.add_argument("--kv_cache_free_gpu_memory_fraction", default=0.9, type=float)
    parser.add_argument("--cross_kv_cache_fraction", default=0.5, type=float)
    parser.add_argument("--enable_chunked_context", action="store_true")
    # hf model
    parser.add_argument(
        "--hf_data_type",
        "--data_type",
        type=str,
        choices=["fp32", "fp16", "bf16", "float32", "float16", "bfloat16"],
        default="fp16",
    )
    parser.add_argument("--hf_device_map_auto", action="store_true")
    parser.add_argument("--return_all_generated_tokens", default=False, action="store_true")
    return parser
