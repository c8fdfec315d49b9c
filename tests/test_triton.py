"""Triton model repository: template filling, optional-block removal, verification."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from trtllm_builder import triton
from trtllm_builder.errors import ConfigError, PackagingError, SetupError, VerifyError
from trtllm_builder.triton import (
    MODELS,
    TritonOptions,
    find_templates,
    make_model_repository,
    parse_triton_options,
    template_variables,
    validate_options,
    verify_model_repository,
)

STANDIN = Path(__file__).parent / "standin" / "tensorrtllm_backend"

# The variables the backend's templates cannot do without (docs: /work/shared/notes/trtllm.md).
MANDATORY = {
    "ensemble": {"triton_max_batch_size", "logits_datatype"},
    "preprocessing": {"triton_max_batch_size", "tokenizer_dir", "preprocessing_instance_count"},
    "postprocessing": {"triton_max_batch_size", "tokenizer_dir", "postprocessing_instance_count"},
    "tensorrt_llm": {
        "triton_backend",
        "triton_max_batch_size",
        "decoupled_mode",
        "max_queue_delay_microseconds",
        "max_queue_size",
        "engine_dir",
        "batching_strategy",
        "encoder_input_features_data_type",
        "logits_datatype",
    },
    "tensorrt_llm_bls": {"triton_max_batch_size", "decoupled_mode", "bls_instance_count", "logits_datatype"},
}


def write_engine(
    path: Path,
    *,
    world_size: int = 2,
    max_batch_size: int = 8,
    dtype: str = "bfloat16",
    logits_dtype: str | None = "float32",
) -> Path:
    path.mkdir(parents=True)
    pretrained: dict[str, object] = {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype,
        "mapping": {"world_size": world_size, "tp_size": world_size, "pp_size": 1},
    }
    if logits_dtype is not None:
        pretrained["logits_dtype"] = logits_dtype
    config = {
        "version": "0.21.0",
        "pretrained_config": pretrained,
        "build_config": {"max_batch_size": max_batch_size, "max_beam_width": 1, "max_input_len": 1024},
    }
    (path / "config.json").write_text(json.dumps(config))
    for rank in range(world_size):
        (path / f"rank{rank}.engine").write_bytes(f"engine-{rank}".encode() * 100)
    return path


@pytest.fixture
def engine(tmp_path: Path) -> Path:
    return write_engine(tmp_path / "engine")


@pytest.fixture
def tokenizer(tmp_path: Path) -> list[Path]:
    d = tmp_path / "tok"
    d.mkdir()
    files = []
    for name, body in [("tokenizer.json", '{"model": {}}'), ("tokenizer_config.json", '{"eos_token": "</s>"}')]:
        (d / name).write_text(body)
        files.append(d / name)
    return files


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A private copy of the stand-in templates that a test may edit."""
    dst = tmp_path / "backend"
    shutil.copytree(STANDIN, dst)
    return find_templates(dst)


def build(engine: Path, tokenizer: list[Path], templates: Path, dest: Path, **options: object) -> Path:
    return make_model_repository(
        engine_dir=engine,
        tokenizer_files=tokenizer,
        templates=templates,
        dest=dest,
        options=parse_triton_options(options),
    )


def load(repo: Path, model: str) -> model_config_pb2.ModelConfig:
    config = model_config_pb2.ModelConfig()
    text_format.Parse((repo / model / "config.pbtxt").read_text(), config)
    return config


def params(config: model_config_pb2.ModelConfig) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def test_find_templates_in_backend_checkout_and_trtllm_tree(tmp_path: Path) -> None:
    assert find_templates(STANDIN) == STANDIN / "all_models" / "inflight_batcher_llm"
    tree = tmp_path / "TensorRT-LLM"
    shutil.copytree(STANDIN / "all_models", tree / "triton_backend" / "all_models")
    assert find_templates(tree) == tree / "triton_backend" / "all_models" / "inflight_batcher_llm"
    with pytest.raises(SetupError, match="triton_backend"):
        find_templates(tmp_path / "nothing-here")
    (tree / "triton_backend/all_models/inflight_batcher_llm/ensemble/config.pbtxt").unlink()
    with pytest.raises(SetupError, match="ensemble"):
        find_templates(tree)


def test_standin_templates_hold_the_mandatory_variables() -> None:
    found = template_variables(find_templates(STANDIN))
    for model, names in MANDATORY.items():
        assert names <= found[model], model


@pytest.mark.parametrize(
    ("dtype", "logits", "want_features", "want_logits"),
    [("bfloat16", "float32", "TYPE_BF16", "TYPE_FP32"), ("float16", "float16", "TYPE_FP16", "TYPE_FP16")],
)
def test_mandatory_variables_filled_from_the_engine_config(
    tmp_path: Path,
    tokenizer: list[Path],
    templates: Path,
    dtype: str,
    logits: str,
    want_features: str,
    want_logits: str,
) -> None:
    engine = write_engine(tmp_path / "eng", world_size=2, max_batch_size=16, dtype=dtype, logits_dtype=logits)
    repo = build(engine, tokenizer, templates, tmp_path / "repo")

    for model in MODELS:
        text = (repo / model / "config.pbtxt").read_text()
        assert "${" not in text, model
        config = load(repo, model)
        assert config.name == model
        assert config.max_batch_size == 16, model

    llm = load(repo, "tensorrt_llm")
    assert llm.backend == "tensorrtllm"
    assert llm.model_transaction_policy.decoupled is False
    assert llm.dynamic_batching.max_queue_delay_microseconds == 0
    assert llm.dynamic_batching.default_queue_policy.max_queue_size == 0
    inputs = {i.name: i for i in llm.input}
    assert model_config_pb2.DataType.Name(inputs["encoder_input_features"].data_type) == want_features
    outputs = {o.name: o for o in llm.output}
    assert model_config_pb2.DataType.Name(outputs["generation_logits"].data_type) == want_logits
    p = params(llm)
    assert p["gpt_model_path"] == "/models/tensorrt_llm/1"
    assert p["tokenizer_dir"] == "/models/tensorrt_llm/tokenizer"
    assert p["gpt_model_type"] == "inflight_fused_batching"
    assert p["max_beam_width"] == "1"

    for model in ("ensemble", "tensorrt_llm_bls"):
        outs = {o.name: o for o in load(repo, model).output}
        assert model_config_pb2.DataType.Name(outs["context_logits"].data_type) == want_logits
    assert load(repo, "tensorrt_llm_bls").model_transaction_policy.decoupled is False
    assert load(repo, "tensorrt_llm_bls").instance_group[0].count == 1
    for model in ("preprocessing", "postprocessing"):
        assert params(load(repo, model))["tokenizer_dir"] == "/models/tensorrt_llm/tokenizer"
        assert load(repo, model).instance_group[0].count == 1

    # engine + tokenizer + the backend's python files are in place
    version = repo / "tensorrt_llm" / "1"
    assert sorted(p.name for p in version.iterdir() if p.name.startswith(("rank", "config"))) == [
        "config.json",
        "rank0.engine",
        "rank1.engine",
    ]
    assert (version / "rank1.engine").read_bytes() == (engine / "rank1.engine").read_bytes()
    assert (version / "rank0.engine").stat().st_ino == (engine / "rank0.engine").stat().st_ino  # hard link
    assert sorted(p.name for p in (repo / "tensorrt_llm" / "tokenizer").iterdir()) == [
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    for model in ("preprocessing", "postprocessing", "tensorrt_llm_bls"):
        assert (repo / model / "1" / "model.py").is_file()
    assert (repo / "tensorrt_llm_bls" / "1" / "lib" / "decode.py").is_file()
    assert any((repo / "ensemble" / "1").iterdir())  # survives a files-only tar
    # the source engine is untouched
    assert sorted(p.name for p in engine.iterdir()) == ["config.json", "rank0.engine", "rank1.engine"]
    verify_model_repository(repo)


def test_options_override_defaults(tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path) -> None:
    repo = build(
        engine,
        tokenizer,
        templates,
        tmp_path / "repo",
        decoupled=True,
        max_queue_delay_microseconds=100,
        max_queue_size=32,
        mount_path="/srv/triton/",
        triton_max_batch_size=4,
        preprocessing_instance_count=2,
        postprocessing_instance_count=3,
        bls_instance_count=4,
        kv_cache_free_gpu_mem_fraction=0.85,
        exclude_input_in_output=True,
        enable_chunked_context=True,
        batch_scheduler_policy="guaranteed_no_evict",
        skip_special_tokens=False,
        extra={"sink_token_length": 4, "lora_prefetch_dir": '/data/lora "a"'},
    )
    llm = load(repo, "tensorrt_llm")
    assert llm.max_batch_size == 4
    assert llm.model_transaction_policy.decoupled is True
    assert llm.dynamic_batching.max_queue_delay_microseconds == 100
    assert llm.dynamic_batching.default_queue_policy.max_queue_size == 32
    p = params(llm)
    assert p["gpt_model_path"] == "/srv/triton/tensorrt_llm/1"
    assert p["tokenizer_dir"] == "/srv/triton/tensorrt_llm/tokenizer"
    assert p["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert p["exclude_input_in_output"] == "true"
    assert p["enable_chunked_context"] == "true"
    assert p["batch_scheduler_policy"] == "guaranteed_no_evict"
    assert p["sink_token_length"] == "4"
    assert p["lora_prefetch_dir"] == '/data/lora "a"'  # quoted safely inside the pbtxt string
    assert load(repo, "preprocessing").instance_group[0].count == 2
    assert load(repo, "postprocessing").instance_group[0].count == 3
    assert params(load(repo, "postprocessing"))["skip_special_tokens"] == "false"
    bls = load(repo, "tensorrt_llm_bls")
    assert bls.instance_group[0].count == 4
    assert bls.model_transaction_policy.decoupled is True
    assert load(repo, "ensemble").max_batch_size == 4


def test_batch_size_above_the_engine_is_refused(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    with pytest.raises(ConfigError, match="exceeds the engine's max_batch_size 8"):
        build(engine, tokenizer, templates, tmp_path / "repo", triton_max_batch_size=64)


def test_unset_optional_parameter_blocks_are_removed(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    assert set(params(load(repo, "tensorrt_llm"))) == {
        "max_beam_width",
        "FORCE_CPU_ONLY_INPUT_TENSORS",
        "gpt_model_type",
        "gpt_model_path",
        "executor_worker_path",
        "tokenizer_dir",
    }
    assert set(params(load(repo, "preprocessing"))) == {"tokenizer_dir", "gpt_model_path"}
    assert set(params(load(repo, "postprocessing"))) == {"tokenizer_dir"}
    assert set(params(load(repo, "tensorrt_llm_bls"))) == {"tensorrt_llm_model_name"}
    text = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "kv_cache_onboard_blocks" not in text  # its comment line went with it
    assert "\n\n\n" not in (repo / "preprocessing" / "config.pbtxt").read_text()
    # everything around the removed blocks is intact
    assert len(load(repo, "tensorrt_llm").input) == 12
    assert text.startswith("# Stand-in for the tensorrtllm_backend tensorrt_llm template")


def test_each_template_is_filled_with_its_own_keys_only(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, set[str]] = {}
    real_render = triton._render

    def spy(tmpl: triton._Template, values: dict[str, str]) -> str:
        seen[tmpl.model] = set(values)
        return real_render(tmpl, values)

    monkeypatch.setattr(triton, "_render", spy)
    build(engine, tokenizer, templates, tmp_path / "repo", kv_cache_free_gpu_mem_fraction=0.5)
    variables = template_variables(templates)
    assert set(seen) == set(MODELS)
    for model, keys in seen.items():
        assert keys <= variables[model], (model, keys - variables[model])
        assert MANDATORY[model] <= keys
    assert "kv_cache_free_gpu_mem_fraction" in seen["tensorrt_llm"]
    assert "kv_cache_free_gpu_mem_fraction" not in seen["preprocessing"]


def test_unknown_template_variable_is_reported_by_name(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    path = templates / "tensorrt_llm" / "config.pbtxt"
    path.write_text(path.read_text().replace("data_type: TYPE_BOOL", "data_type: ${mystery_dtype}", 1))
    with pytest.raises(ConfigError) as err:
        validate_options(TritonOptions(), templates)
    assert "tensorrt_llm/config.pbtxt: ${mystery_dtype}" in str(err.value)
    assert "output.triton.extra.mystery_dtype" in str(err.value)
    with pytest.raises(ConfigError, match="mystery_dtype"):
        build(engine, tokenizer, templates, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
    # ...and setting it through `extra` fills it
    repo = build(engine, tokenizer, templates, tmp_path / "repo", extra={"mystery_dtype": "TYPE_BOOL"})
    verify_model_repository(repo)


def test_a_placeholder_mixed_into_a_parameter_value_is_not_optional(tmp_path: Path, templates: Path) -> None:
    path = templates / "postprocessing" / "config.pbtxt"
    path.write_text(
        path.read_text()
        + 'parameters { key: "cache" value: { string_value: "${cache_root}/${cache_name}" } }\n'
        + 'parameters < key: "opt" value < string_value: "${one_line_opt}" > >\n'
    )
    with pytest.raises(ConfigError) as err:
        validate_options(TritonOptions(), templates)
    assert "${cache_root}" in str(err.value) and "${cache_name}" in str(err.value)
    assert "one_line_opt" not in str(err.value)  # a whole-value block on one line is still optional


def test_one_line_optional_block_is_removed(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    path = templates / "postprocessing" / "config.pbtxt"
    path.write_text(path.read_text() + 'parameters < key: "opt" value < string_value: "${one_line_opt}" > >\n')
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    assert "one_line_opt" not in (repo / "postprocessing" / "config.pbtxt").read_text()
    repo2 = build(engine, tokenizer, templates, tmp_path / "repo2", extra={"one_line_opt": "x"})
    assert params(load(repo2, "postprocessing"))["opt"] == "x"


def test_newer_template_variable_is_derived_from_the_engine(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    # Later backends type the prompt table input through ${prompt_embedding_table_data_type}.
    path = templates / "tensorrt_llm" / "config.pbtxt"
    extra_input = '  {\n    name: "prompt_embedding_table"\n    data_type: ${prompt_embedding_table_data_type}\n'
    extra_input += "    dims: [ -1, -1 ]\n    optional: true\n  },\n"
    path.write_text(path.read_text().replace("input [\n", "input [\n" + extra_input, 1))
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    inputs = {i.name: i for i in load(repo, "tensorrt_llm").input}
    assert model_config_pb2.DataType.Name(inputs["prompt_embedding_table"].data_type) == "TYPE_BF16"


def test_extra_with_an_unknown_key_is_rejected(templates: Path) -> None:
    options = parse_triton_options({"extra": {"sink_token_lenght": "4"}})
    with pytest.raises(ConfigError) as err:
        validate_options(options, templates)
    message = str(err.value)
    assert "output.triton.extra.sink_token_lenght" in message
    assert "did you mean `sink_token_length`" in message
    assert "lora_cache_max_adapter_size, lora_cache_optimal_adapter_size" in message  # lists the real ones


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"engine_dir": "/x"}, "mount_path"),
        ({"logits_datatype": "TYPE_FP16"}, "filled by the builder"),
        ({"decoupled_mode": "true"}, "output.triton.decoupled"),
        ({"kv_cache_free_gpu_mem_fraction": "0.5"}, "output.triton.kv_cache_free_gpu_mem_fraction"),
        ({"bad-name": "1"}, "not a template variable name"),
    ],
)
def test_extra_cannot_shadow_options_or_builder_values(extra: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_triton_options({"extra": extra})


def test_unknown_option_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError, match="did you mean `decoupled`"):
        parse_triton_options({"decoupld": True})
    with pytest.raises(ConfigError, match="mount_path"):
        parse_triton_options({"mount_path": "relative/dir"})


def test_option_the_templates_do_not_support_is_rejected(templates: Path) -> None:
    path = templates / "tensorrt_llm_bls" / "config.pbtxt"
    text = path.read_text()
    start = text.index('parameters: {\n  key: "accumulate_tokens"')
    path.write_text(text[:start] + text[text.index("parameters: {", start + 1) :])
    with pytest.raises(ConfigError, match=r"output.triton.accumulate_tokens: .*no \$\{accumulate_tokens\}"):
        validate_options(parse_triton_options({"accumulate_tokens": True}), templates)
    validate_options(parse_triton_options({}), templates)


def test_bare_values_must_be_one_token(tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path) -> None:
    with pytest.raises(ConfigError, match="outside quotes"):
        build(engine, tokenizer, templates, tmp_path / "repo", extra={"encoder_input_features_data_type": "TYPE FP16"})


def test_model_name_renames_the_llm_model_everywhere(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path
) -> None:
    repo = make_model_repository(
        engine_dir=engine,
        tokenizer_files=tokenizer,
        templates=templates,
        dest=tmp_path / "repo",
        options=TritonOptions(),
        model_name="llama_llm",
    )
    assert not (repo / "tensorrt_llm").exists()
    assert load(repo, "llama_llm").name == "llama_llm"
    steps = [s.model_name for s in load(repo, "ensemble").ensemble_scheduling.step]
    assert steps == ["preprocessing", "llama_llm", "postprocessing"]
    assert params(load(repo, "tensorrt_llm_bls"))["tensorrt_llm_model_name"] == "llama_llm"
    assert params(load(repo, "llama_llm"))["gpt_model_path"] == "/models/llama_llm/1"
    verify_model_repository(repo)


def test_incomplete_engine_dir_is_refused(tmp_path: Path, tokenizer: list[Path], templates: Path) -> None:
    engine = write_engine(tmp_path / "eng", world_size=2)
    (engine / "rank1.engine").unlink()
    with pytest.raises(PackagingError, match=r"rank1\.engine \(world size 2"):
        build(engine, tokenizer, templates, tmp_path / "repo")
    stale = write_engine(tmp_path / "eng2", world_size=1)
    (stale / "rank1.engine").write_bytes(b"old")
    with pytest.raises(PackagingError, match="stale"):
        build(stale, tokenizer, templates, tmp_path / "repo")


def test_non_empty_destination_is_refused(tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path) -> None:
    dest = tmp_path / "repo"
    dest.mkdir()
    (dest / "keep.txt").write_text("user data")
    with pytest.raises(PackagingError, match="not an empty folder"):
        build(engine, tokenizer, templates, dest)
    assert (dest / "keep.txt").read_text() == "user data"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_engine_is_copied_when_hard_links_fail(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_link(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    copied = repo / "tensorrt_llm" / "1" / "rank0.engine"
    assert copied.read_bytes() == (engine / "rank0.engine").read_bytes()
    assert copied.stat().st_ino != (engine / "rank0.engine").stat().st_ino
    assert (engine / "rank0.engine").exists()


@pytest.fixture
def repo(tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path) -> Path:
    return build(engine, tokenizer, templates, tmp_path / "repo")


def test_verify_catches_a_leftover_placeholder(repo: Path) -> None:
    path = repo / "postprocessing" / "config.pbtxt"
    path.write_text(path.read_text().replace("dynamic_batching {}", "dynamic_batching {}\n# left: ${x}"))
    with pytest.raises(VerifyError, match=r"postprocessing/config.pbtxt: unfilled template variables \$\{x\}"):
        verify_model_repository(repo)


def test_verify_ignores_placeholder_checks_inside_model_py(repo: Path) -> None:
    assert "${" in (repo / "preprocessing" / "1" / "model.py").read_text()
    verify_model_repository(repo)


def test_verify_catches_a_broken_pbtxt(repo: Path) -> None:
    path = repo / "ensemble" / "config.pbtxt"
    path.write_text(path.read_text().replace("max_batch_size: 8", "max_batch_size: eight"))
    with pytest.raises(VerifyError) as err:
        verify_model_repository(repo)
    assert "ensemble/config.pbtxt: not a valid Triton model config" in str(err.value)
    assert "eight" in str(err.value)  # the parser's own message


def test_verify_catches_dangling_ensemble_step_and_missing_rank(repo: Path) -> None:
    shutil.rmtree(repo / "postprocessing")
    (repo / "tensorrt_llm" / "1" / "rank1.engine").unlink()
    with pytest.raises(VerifyError) as err:
        verify_model_repository(repo)
    message = str(err.value)
    assert "ensemble step uses model 'postprocessing'" in message
    assert "missing rank1.engine for world size 2" in message


def test_verify_catches_a_folder_that_is_not_a_model(repo: Path) -> None:
    (repo / "tokenizer").mkdir()
    with pytest.raises(VerifyError, match="tokenizer/: Triton loads every root folder as a model"):
        verify_model_repository(repo)
