"""Typed recipes: the architecture table, each quantization's expansion, cross-field rules, and the plan."""

from __future__ import annotations

import json
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hubserver
import pytest
import yaml
from conftest import DEFAULT_RELEASE
from hubserver import HubServer

from trtllm_builder.config.recipe import (
    ARCHITECTURES,
    FAMILIES,
    QUANTIZATIONS,
    Recipe,
    build_rules,
    int8_kv_cache_in,
)
from trtllm_builder.config.schema import load_config
from trtllm_builder.errors import ArgsError, ConfigError
from trtllm_builder.pipeline import prepare
from trtllm_builder.plan.expand import expand_recipe

hub_server = hubserver.hub_server  # the fixture

LLAMA_CFG: dict[str, Any] = {"architectures": ["LlamaForCausalLM"], "num_attention_heads": 32}


def _recipe(**fields: Any) -> Recipe:
    return Recipe.model_validate(fields)


def _expand(arch: str = "LlamaForCausalLM", heads: int = 32, **fields: Any) -> list[Any]:
    return expand_recipe(_recipe(**fields), hf_config={"architectures": [arch], "num_attention_heads": heads})


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load_config(text)
    return err.value.problems


# --- the architecture table ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arch", "example"),
    [("gpt2", "gpt"), ("llama", "llama"), ("mistral", "llama"), ("mixtral", "llama"), ("qwen2", "qwen"),
     ("phi3", "phi"), ("gemma", "gemma")],
)  # fmt: skip
def test_architecture_picks_the_example(tiny_model: Callable[..., Path], arch: str, example: str) -> None:
    hf_config = json.loads((tiny_model(arch) / "config.json").read_text())
    convert, build = expand_recipe(_recipe(), hf_config=hf_config)
    assert (convert.name, convert.example, convert.script) == ("convert", example, "convert_checkpoint.py")
    assert (build.name, build.command) == ("build", "trtllm-build")


def test_table_covers_the_issue_list_and_every_family_exists() -> None:
    for arch in ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM", "GPT2LMHeadModel",
                 "Phi3ForCausalLM", "GemmaForCausalLM", "Gemma2ForCausalLM", "MixtralForCausalLM"):  # fmt: skip
        assert ARCHITECTURES[arch] in FAMILIES


def test_unknown_architecture_names_the_known_ones_and_the_way_out() -> None:
    with pytest.raises(ConfigError) as err:
        _expand("BertForMaskedLM")
    msg = str(err.value)
    assert "architecture `BertForMaskedLM` (from the model's config.json `architectures`) has no recipe" in msg
    assert "LlamaForCausalLM" in msg and "Write `steps:` instead, or set `trtllm.example`" in msg


def test_trtllm_example_overrides_the_table() -> None:
    convert, _ = expand_recipe(_recipe(), hf_config={"architectures": ["InternLM2ForCausalLM"]}, example="llama")
    assert convert.example == "llama"


# --- each quantization ----------------------------------------------------------------------------------

BASE = {"dtype": "bfloat16", "tp_size": 1, "pp_size": 1}
EXPANSIONS: dict[str, tuple[str, str, str, dict[str, Any]]] = {
    "none": ("convert", "llama", "convert_checkpoint.py", BASE),
    "int8_weight_only": ("convert", "llama", "convert_checkpoint.py",
                         {**BASE, "use_weight_only": True, "weight_only_precision": "int8"}),
    "int4_weight_only": ("convert", "llama", "convert_checkpoint.py",
                         {**BASE, "use_weight_only": True, "weight_only_precision": "int4"}),
    "int4_awq": ("quantize", "quantization", "quantize.py", {**BASE, "qformat": "int4_awq"}),
    "smooth_quant": ("convert", "llama", "convert_checkpoint.py",
                     {**BASE, "smoothquant": 0.5, "per_token": True, "per_channel": True}),
    "fp8": ("quantize", "quantization", "quantize.py", {**BASE, "qformat": "fp8"}),
    "fp8_kv": ("quantize", "quantization", "quantize.py", {**BASE, "qformat": "fp8", "kv_cache_dtype": "fp8"}),
    "int8_kv": ("convert", "llama", "convert_checkpoint.py", {**BASE, "int8_kv_cache": True}),
}  # fmt: skip


@pytest.mark.parametrize("quantization", QUANTIZATIONS)
def test_each_quantization_expands(quantization: str) -> None:
    first, build = _expand(dtype="bfloat16", quantization=quantization, max_batch_size=8, max_seq_len=4096)
    name, example, script, args = EXPANSIONS[quantization]
    assert (first.name, first.example, first.script) == (name, example, script)
    assert first.args == args
    expected_build = {"max_batch_size": 8, "max_seq_len": 4096}
    if quantization not in ("fp8", "fp8_kv"):
        expected_build["gemm_plugin"] = "auto"
    assert build.args == expected_build


@pytest.mark.parametrize(
    ("quantization", "first_args"),
    [
        ("none", {"ckpt-type": "hf", "dtype": "auto", "world-size": 2}),
        ("int4_weight_only", {"ckpt-type": "hf", "dtype": "auto", "world-size": 2, "use_weight_only": True,
                              "weight_only_precision": "int4"}),
        ("int8_kv", {"ckpt-type": "hf", "dtype": "auto", "world-size": 2, "int8_kv_cache": True,
                     "tokenizer_dir": "{model_dir}"}),
        ("smooth_quant", {"dtype": "auto", "qformat": "int8_sq", "tp_size": 2, "pp_size": 1}),
    ],
)  # fmt: skip
def test_gemma_converter_spells_its_flags_differently(quantization: str, first_args: dict[str, Any]) -> None:
    first, _ = _expand("GemmaForCausalLM", 8, quantization=quantization, tensor_parallel=2)
    assert first.args == first_args


@pytest.mark.parametrize(
    ("arch", "quantization", "supported"),
    [
        ("Phi3ForCausalLM", "smooth_quant", "none, int8_weight_only, int4_weight_only, int4_awq, fp8, fp8_kv"),
        ("Phi3ForCausalLM", "int8_kv", "none, int8_weight_only, int4_weight_only, int4_awq, fp8, fp8_kv"),
        ("MixtralForCausalLM", "smooth_quant", "none, int8_weight_only, int4_weight_only, int4_awq, fp8, fp8_kv, "
                                               "int8_kv"),
    ],
)  # fmt: skip
def test_unsupported_quantization_names_the_alternatives(arch: str, quantization: str, supported: str) -> None:
    with pytest.raises(ConfigError) as err:
        _expand(arch, quantization=quantization)
    (problem,) = err.value.problems
    assert problem.startswith(f"recipe.quantization: `{quantization}` is not supported for {arch}")
    assert problem.endswith(f"supported: {supported}")


def test_pipeline_parallel_where_the_converter_has_none() -> None:
    with pytest.raises(ConfigError) as err:
        _expand("Phi3ForCausalLM", pipeline_parallel=2, tensor_parallel=2)
    assert err.value.problems == [
        "recipe.pipeline_parallel: 2: the `phi` converter supports tensor parallelism only; use tensor_parallel: 4 "
        "instead"
    ]
    first, _ = _expand("Phi3ForCausalLM", pipeline_parallel=2, quantization="fp8")  # quantize.py takes pp_size
    assert first.args["pp_size"] == 2


def test_tensor_parallel_must_divide_the_heads() -> None:
    with pytest.raises(ConfigError) as err:
        _expand(heads=12, tensor_parallel=8)
    assert err.value.problems == [
        "recipe.tensor_parallel: 8 does not divide the model's 12 attention heads; use one of 1, 2, 3, 4, 6, 12"
    ]


# --- cross-field rules at load time -------------------------------------------------------------------

HEAD = "model: {id: Qwen/Qwen2.5-7B-Instruct}\n"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ("recipe: {max_input_len: 8192, max_seq_len: 4096}",
         "recipe: max_seq_len (4096) is less than max_input_len (8192): max_seq_len counts the input and the output "
         "tokens, so set it to at least 8192 (e.g. 16384)"),
        ("recipe: {build_args: {kv_cache_type: continuous, use_paged_context_fmha: enable}}",
         "recipe: `use_paged_context_fmha: enable` needs the paged KV cache, but `kv_cache_type: continuous` turns "
         "it off: remove one of them"),
        ("recipe: {build_args: {kv_cache_type: continuous}}\noutput: {format: triton}",
         "recipe: Triton's in-flight batching needs the paged KV cache, but `kv_cache_type: continuous` turns it "
         "off: remove it or use `output.format: engine`"),
        ("recipe: {max_input_len: 4096, max_num_tokens: 2048, build_args: {use_paged_context_fmha: disable}}",
         "recipe: max_num_tokens (2048) is less than max_input_len (4096): a prompt that long then needs chunked "
         "context, which needs the paged KV cache and paged context FMHA, but `use_paged_context_fmha: disable` "
         "turns it off: raise max_num_tokens to 4096 or remove `use_paged_context_fmha: disable`"),
        ("recipe: {max_batch_size: 8, build_args: {max_batch_size: 16}}",
         "recipe.build_args.max_batch_size: also set as `recipe.max_batch_size`; set it once"),
        ("recipe: {build_args: {tp_size: 2}}",
         "recipe.build_args.tp_size: not a build arg the recipe lets you set (the tool wires the checkpoint; "
         "tensor/pipeline parallelism and dtype are recipe fields)"),
        ("recipe: {build_args: {--gemm_plugin: auto}}",
         "recipe.build_args: write `gemm_plugin`, not `--gemm_plugin` (the tool adds the dashes)"),
        ("recipe: {quantisation: fp8}", "recipe.quantisation: unknown key; did you mean `quantization`?"),
        ("recipe: {tensor_parallel: 0}", "recipe.tensor_parallel: Input should be greater than or equal to 1 (got 0)"),
        ("recipe: {}\nsteps: [{name: build, command: trtllm-build}]",
         "give either `steps:` or `recipe:`, not both (`plan` prints a recipe's steps)"),
        ("trtllm: {example: llama}", "steps: give at least one step (or a `recipe:`)"),
    ],
)  # fmt: skip
def test_rule_messages(body: str, problem: str) -> None:
    assert problem in _problems(HEAD + body)


def test_invalid_quantization_lists_the_choices() -> None:
    (problem,) = _problems(HEAD + "recipe: {quantization: int3}")
    assert problem.startswith("recipe.quantization: Input should be 'none', 'int8_weight_only', 'int4_weight_only'")


def test_issue_example_is_accepted() -> None:
    cfg = load_config(
        HEAD
        + """\
recipe:
  dtype: bfloat16
  quantization: int4_awq
  tensor_parallel: 2
  pipeline_parallel: 1
  max_batch_size: 64
  max_input_len: 4096
  max_seq_len: 8192
  max_num_tokens: 8192
  build_args: {}
"""
    )
    assert cfg.recipe is not None and cfg.recipe.quantization == "int4_awq" and cfg.steps == ()


# --- through prepare / plan ---------------------------------------------------------------------------


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _recipe_config(model: Path | str, **fields: Any) -> str:
    return yaml.safe_dump({"model": {"id": str(model)}, "recipe": fields}, sort_keys=False)


def test_printed_steps_plan_to_the_same_argv(standin_env: dict[str, str], tiny_model: Callable[..., Path],
                                             tmp_path: Path) -> None:  # fmt: skip
    model = tiny_model("qwen2")
    text = _recipe_config(model, quantization="int8_weight_only", tensor_parallel=2, max_input_len=64,
                          max_seq_len=128, build_args={"use_paged_context_fmha": "enable"})  # fmt: skip
    config, plan = prepare("c.yaml", text=text, work_dir=tmp_path / "work")
    assert config.recipe_source == f"{model}/config.json"
    assert [s.checked_by for s in plan.steps] == [
        f"models/core/qwen/convert_checkpoint.py ({DEFAULT_RELEASE})",
        f"trtllm-build ({DEFAULT_RELEASE})",
    ]
    described = plan.describe()
    assert f"recipe expands to (model config read from {model}/config.json)" in described
    copied = plan.recipe_steps()
    assert copied is not None and "example: qwen" in copied

    as_steps = yaml.safe_dump({"model": {"id": str(model)}}) + copied
    _, plan2 = prepare("s.yaml", text=as_steps, work_dir=tmp_path / "work")
    assert [plan2.argv(s) for s in plan2.steps] == [plan.argv(s) for s in plan.steps]


def test_build_args_are_checked_against_trtllm_build(standin_env: dict[str, str], tiny_model: Callable[..., Path],
                                                     tmp_path: Path) -> None:  # fmt: skip
    text = _recipe_config(tiny_model("llama"), build_args={"max_output_len": 256, "gemm_swiglu_plugin": "auto"})
    with pytest.raises(ArgsError) as err:
        prepare("c.yaml", text=text, work_dir=tmp_path / "work")
    assert err.value.problems == [
        f"step `build`: `--max_output_len` is not a flag of trtllm-build ({DEFAULT_RELEASE}); write "
        "`max_seq_len: 1280` instead (the default max_input_len of trtllm-build 1024 + max_output_len 256: "
        "--max_seq_len counts the input and the output tokens)",
        "step `build`: `--gemm_swiglu_plugin auto` is not one of fp8, disable",
    ]


def test_hf_model_reads_only_config_json(standin_env: dict[str, str], hub_server: HubServer,
                                         tmp_path: Path) -> None:  # fmt: skip
    cfg = {"architectures": ["MistralForCausalLM"], "model_type": "mistral", "num_attention_heads": 8}
    hub_server.add_repo("mistralai/tiny", {"config.json": json.dumps(cfg).encode(),
                                           "model.safetensors": b"\0" * 4096})  # fmt: skip
    config, plan = prepare("c.yaml", text=_recipe_config("mistralai/tiny", quantization="int4_awq"),
                           work_dir=tmp_path / "work")  # fmt: skip
    assert [s.name for s in plan.steps] == ["quantize", "build"]
    assert config.recipe_source == f"{hub_server.endpoint}/mistralai/tiny (config.json only)"
    assert {r.path.rsplit("/", 1)[-1] for r in hub_server.file_gets()} == {"config.json"}


def test_hf_model_not_found_names_the_fix(standin_env: dict[str, str], hub_server: HubServer,
                                          tmp_path: Path) -> None:  # fmt: skip
    from trtllm_builder.errors import FetchError

    with pytest.raises(FetchError) as err:
        prepare("c.yaml", text=_recipe_config("nobody/nothing"), work_dir=tmp_path / "work")
    assert "the recipe needs `nobody/nothing`'s config.json: repository `nobody/nothing` not found" in str(err.value)


def test_tarball_needs_the_architecture(standin_env: dict[str, str], tmp_path: Path) -> None:
    text = "model: {id: my-model, tar_url: 'https://example.invalid/m.tar'}\nrecipe: {quantization: fp8}\n"
    with pytest.raises(ConfigError) as err:
        prepare("c.yaml", text=text, work_dir=tmp_path / "work")
    assert "set `recipe.architecture`" in str(err.value)
    text = text.replace("{quantization: fp8}", "{quantization: fp8, architecture: Qwen2ForCausalLM}")
    config, plan = prepare("c.yaml", text=text, work_dir=tmp_path / "work")
    assert config.recipe_source == "recipe.architecture" and plan.steps[0].name == "quantize"


def test_recipe_builds_end_to_end(run_cli: Callable[..., subprocess.CompletedProcess[str]],
                                  tiny_model: Callable[..., Path], tmp_path: Path) -> None:  # fmt: skip
    cfg = _write(tmp_path, _recipe_config(tiny_model("llama"), dtype="float16", quantization="int8_kv",
                                          tensor_parallel=2, max_batch_size=4, max_input_len=64,
                                          max_seq_len=128))  # fmt: skip
    plan = run_cli("plan", str(cfg))
    assert plan.returncode == 0, plan.stderr
    assert "  - name: convert\n    example: llama\n    script: convert_checkpoint.py" in plan.stdout
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert {"rank0.engine", "rank1.engine", "config.json"} <= names
    assert manifest["engine"]["world_size"] == 2


def test_int8_kv_cache_turns_paged_context_fmha_off_in_the_rules() -> None:
    """With an INT8 KV cache the builder disables paged context FMHA: rules that need it must know."""
    kv = "`--int8_kv_cache` (step `convert`)"
    assert build_rules({"max_input_len": "512", "max_num_tokens": "256"}) == []  # paged context FMHA: on
    (problem,) = build_rules({"max_input_len": "512", "max_num_tokens": "256"}, int8_kv=kv)
    assert problem.startswith("max_num_tokens (256) is less than max_input_len (512)")
    assert f"but the INT8 KV cache of {kv} turns it off: raise max_num_tokens to 512 or use an FP8 KV cache" in problem
    (problem,) = build_rules({"use_paged_context_fmha": "enable"}, int8_kv=kv)
    assert problem.startswith(f"`use_paged_context_fmha: enable` has no effect with the INT8 KV cache of {kv}")
    assert build_rules({"use_paged_context_fmha": "disable"}, int8_kv=kv) == []
    assert int8_kv_cache_in({"int8_kv_cache": "true"}) == "--int8_kv_cache"
    assert int8_kv_cache_in({"kv_cache_dtype": "int8"}) == "--kv_cache_dtype int8"
    assert int8_kv_cache_in({"calibrate-kv-cache": "true"}) == "--calibrate-kv-cache"
    assert int8_kv_cache_in({"kv_cache_dtype": "fp8"}) is None
