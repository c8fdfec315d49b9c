"""Triton model repository: template filling, loader-aware block removal, data types, verification.

The templates are the stand-ins of tests/standin/backend/ (tensorrtllm_backend v0.18.2, v0.19.0)
and tests/standin/trees/1.2.1/TensorRT-LLM/triton_backend (README there: "Triton templates").
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BACKENDS
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from trtllm_builder.errors import ConfigError, PackagingError, SetupError, VerifyError
from trtllm_builder.outputs import triton
from trtllm_builder.outputs.triton import (
    MODELS,
    TritonOptions,
    find_templates,
    make_model_repository,
    parse_triton_options,
    required_parameters,
    template_variables,
    tokenizer_folder_files,
    validate_options,
    verify_model_repository,
)

VERSIONS = tuple(BACKENDS)

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
    """Tokenizer files as transformers writes them (with a tokenizer_class: no config.json needed)."""
    d = tmp_path / "tok"
    d.mkdir()
    files = []
    for name, body in [
        ("tokenizer.json", '{"model": {}}'),
        ("tokenizer_config.json", '{"eos_token": "</s>", "tokenizer_class": "LlamaTokenizer"}'),
    ]:
        (d / name).write_text(body)
        files.append(d / name)
    return files


def copy_templates(tmp_path: Path, version: str = "1.2.1") -> Path:
    """A private copy of a release's stand-in templates that a test may edit."""
    dst = tmp_path / f"backend-{version}"
    shutil.copytree(BACKENDS[version], dst)
    return find_templates(dst)


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    return copy_templates(tmp_path)


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


def dtype_of(config: model_config_pb2.ModelConfig, name: str, kind: str = "input") -> str:
    tensors = {t.name: t for t in (config.input if kind == "input" else config.output)}
    return str(model_config_pb2.DataType.Name(tensors[name].data_type))


def rewrite(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


# --------------------------------------------------------------------------- templates


def test_find_templates_in_backend_checkout_and_trtllm_tree(tmp_path: Path) -> None:
    checkout = BACKENDS["v0.19.0"]
    assert find_templates(checkout) == checkout / "all_models" / "inflight_batcher_llm"
    tree = BACKENDS["1.2.1"].parent  # a TensorRT-LLM tree (>= 0.20): triton_backend/all_models/...
    assert find_templates(tree) == tree / "triton_backend" / "all_models" / "inflight_batcher_llm"
    with pytest.raises(SetupError, match="triton_backend"):
        find_templates(tmp_path / "nothing-here")
    copy = tmp_path / "TensorRT-LLM" / "triton_backend"
    shutil.copytree(BACKENDS["1.2.1"], copy)
    (copy / "all_models/inflight_batcher_llm/ensemble/config.pbtxt").unlink()
    with pytest.raises(SetupError, match="ensemble"):
        find_templates(copy.parent)


@pytest.mark.parametrize("version", VERSIONS)
def test_standin_templates_hold_the_mandatory_variables(version: str) -> None:
    found = template_variables(find_templates(BACKENDS[version]))
    for model, names in MANDATORY.items():
        assert names <= found[model], model


@pytest.mark.parametrize("version", VERSIONS)
def test_a_placeholder_inside_a_comment_is_no_variable(
    tmp_path: Path, engine: Path, tokenizer: list[Path], version: str
) -> None:
    # Every release keeps a commented-out `${enable_trt_overlap}` block in tensorrt_llm/config.pbtxt;
    # fill_template.py (safe_substitute) and Triton both ignore it, so it may not be required.
    templates = find_templates(BACKENDS[version])
    assert "${enable_trt_overlap}" in (templates / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "enable_trt_overlap" not in template_variables(templates)["tensorrt_llm"]
    validate_options(TritonOptions(), templates)
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    text = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert '#     string_value: "${enable_trt_overlap}"' in text  # left alone
    assert "enable_trt_overlap" not in params(load(repo, "tensorrt_llm"))


def test_loader_requirements_come_from_the_templates_own_model_py_and_the_cpp_table() -> None:
    reqs = {v: required_parameters(find_templates(BACKENDS[v])) for v in VERSIONS}
    v18, v19, v121 = reqs["v0.18.2"], reqs["v0.19.0"], reqs["1.2.1"]
    # preprocessing indexes these directly; the visual/multimodal path reads "" or its placeholder as unset
    assert set(v18["preprocessing"]) == {"tokenizer_dir", "visual_model_path"}
    assert set(v19["preprocessing"]) == set(v121["preprocessing"]) == {"tokenizer_dir", "multimodal_model_path"}
    assert v19["preprocessing"]["multimodal_model_path"].unset == {"", "${multimodal_model_path}"}
    assert v18["preprocessing"]["visual_model_path"].unset == {"", "${visual_model_path}"}
    assert v19["preprocessing"]["tokenizer_dir"].unset == frozenset()  # needs a real value
    assert v19["preprocessing"]["multimodal_model_path"].source.startswith("preprocessing/1/model.py:")
    assert set(v19["postprocessing"]) == {"tokenizer_dir"}
    assert v19["tensorrt_llm_bls"] == {}  # every read is params.get(...)
    # tensorrt_llm: its python model.py reads through a guarded helper; the C++ backend's direct reads
    assert set(v18["tensorrt_llm"]) == {"gpt_model_type"}
    direct = {"gpt_model_type", "tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}
    assert set(v19["tensorrt_llm"]) == set(v121["tensorrt_llm"]) == direct
    assert "C++ backend" in v19["tensorrt_llm"]["xgrammar_tokenizer_info_path"].source


@pytest.mark.parametrize(
    ("dtype", "logits", "want_logits"),
    [("bfloat16", "float32", "TYPE_FP32"), ("float16", "float16", "TYPE_FP16")],
)
def test_mandatory_variables_filled_from_the_engine_config(
    tmp_path: Path, tokenizer: list[Path], templates: Path, dtype: str, logits: str, want_logits: str
) -> None:
    engine = write_engine(tmp_path / "eng", world_size=2, max_batch_size=16, dtype=dtype, logits_dtype=logits)
    repo = build(engine, tokenizer, templates, tmp_path / "repo")

    for model in MODELS:
        config = load(repo, model)
        assert config.name == model
        assert config.max_batch_size == 16, model

    llm = load(repo, "tensorrt_llm")
    assert llm.backend == "tensorrtllm"
    assert llm.model_transaction_policy.decoupled is False
    assert llm.dynamic_batching.max_queue_delay_microseconds == 0
    assert llm.dynamic_batching.default_queue_policy.max_queue_size == 0
    # the documented invocations pass TYPE_FP16 whatever the engine's dtype; the ensemble says so too
    assert dtype_of(llm, "encoder_input_features") == "TYPE_FP16"
    assert dtype_of(llm, "prompt_embedding_table") == "TYPE_FP16"
    assert dtype_of(load(repo, "tensorrt_llm_bls"), "prompt_embedding_table") == "TYPE_FP16"
    assert dtype_of(llm, "generation_logits", "output") == want_logits
    p = params(llm)
    assert p["gpt_model_path"] == "/models/tensorrt_llm/1"
    assert p["tokenizer_dir"] == "/models/tensorrt_llm/tokenizer"
    assert p["gpt_model_type"] == "inflight_fused_batching"
    assert p["max_beam_width"] == "1"

    for model in ("ensemble", "tensorrt_llm_bls"):
        assert dtype_of(load(repo, model), "context_logits", "output") == want_logits
    assert load(repo, "tensorrt_llm_bls").model_transaction_policy.decoupled is False
    assert load(repo, "tensorrt_llm_bls").instance_group[0].count == 1
    for model in ("preprocessing", "postprocessing"):
        assert params(load(repo, model))["tokenizer_dir"] == "/models/tensorrt_llm/tokenizer"
        assert load(repo, model).instance_group[0].count == 1

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
    assert sorted(p.name for p in engine.iterdir()) == ["config.json", "rank0.engine", "rank1.engine"]
    verify_model_repository(repo)


def test_prompt_table_type_follows_what_the_ensemble_declares(
    tmp_path: Path, tokenizer: list[Path], templates: Path
) -> None:
    # If a release's ensemble declared the prompt table BF16, only BF16 would load: the type is
    # taken from the tensor the ensemble wires the input to, not from a fixed table.
    ens = templates / "ensemble" / "config.pbtxt"
    text = ens.read_text()
    start = text.index('name: "prompt_embedding_table"')
    ens.write_text(text[:start] + text[start:].replace("TYPE_FP16", "TYPE_BF16", 1))
    engine = write_engine(tmp_path / "eng", dtype="float16")
    repo = build(engine, tokenizer, templates, tmp_path / "repo")
    assert dtype_of(load(repo, "tensorrt_llm"), "prompt_embedding_table") == "TYPE_BF16"
    assert dtype_of(load(repo, "tensorrt_llm_bls"), "prompt_embedding_table") == "TYPE_BF16"


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
    # the queue options are the LLM's: preprocessing keeps fill_template.py's 0/0, as documented
    pre = load(repo, "preprocessing")
    assert pre.dynamic_batching.max_queue_delay_microseconds == 0
    assert pre.dynamic_batching.default_queue_policy.max_queue_size == 0
    assert list(pre.dynamic_batching.preferred_batch_size) == [4]
    p = params(llm)
    assert p["gpt_model_path"] == "/srv/triton/tensorrt_llm/1"
    assert p["tokenizer_dir"] == "/srv/triton/tensorrt_llm/tokenizer"
    assert p["kv_cache_free_gpu_mem_fraction"] == "0.85"
    assert p["exclude_input_in_output"] == "true"
    assert p["enable_chunked_context"] == "true"
    assert p["batch_scheduler_policy"] == "guaranteed_no_evict"
    assert p["sink_token_length"] == "4"
    assert p["lora_prefetch_dir"] == '/data/lora "a"'  # quoted safely inside the pbtxt string
    assert pre.instance_group[0].count == 2
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


@pytest.mark.parametrize("version", VERSIONS)
def test_unset_blocks_are_removed_unless_a_loader_reads_them_directly(
    tmp_path: Path, engine: Path, tokenizer: list[Path], version: str
) -> None:
    repo = build(engine, tokenizer, find_templates(BACKENDS[version]), tmp_path / "repo")
    llm = params(load(repo, "tensorrt_llm"))
    always = {"max_beam_width", "FORCE_CPU_ONLY_INPUT_TENSORS", "gpt_model_type", "gpt_model_path",
              "executor_worker_path"}  # fmt: skip
    if version == "v0.18.2":
        assert set(llm) == always
    else:  # the C++ backend reads these three without a fallback: kept, with "" (read as unset)
        assert set(llm) == always | {"tokenizer_dir", "guided_decoding_backend", "xgrammar_tokenizer_info_path"}
        assert llm["guided_decoding_backend"] == llm["xgrammar_tokenizer_info_path"] == ""
    visual = "visual_model_path" if version == "v0.18.2" else "multimodal_model_path"
    assert params(load(repo, "preprocessing")) == {
        "tokenizer_dir": "/models/tensorrt_llm/tokenizer",
        "gpt_model_path": "/models/tensorrt_llm/1",
        visual: "",  # preprocessing/1/model.py indexes it directly and reads "" as unset
    }
    assert set(params(load(repo, "postprocessing"))) == {"tokenizer_dir"}
    assert set(params(load(repo, "tensorrt_llm_bls"))) == {"tensorrt_llm_model_name"}
    text = (repo / "tensorrt_llm" / "config.pbtxt").read_text()
    assert "kv_cache_onboard_blocks" not in text  # its comment line went with it
    assert "\n\n\n" not in (repo / "preprocessing" / "config.pbtxt").read_text()
    assert text.startswith("# Stand-in for ")  # everything around the removed blocks is intact
    verify_model_repository(repo, backend_version=version.lstrip("v"))
    if version == "v0.18.2":  # without a version the verifier assumes the newest backend's direct reads
        with pytest.raises(VerifyError, match="no parameter `xgrammar_tokenizer_info_path`"):
            verify_model_repository(repo)


def test_a_directly_read_parameter_without_an_unset_value_must_be_set(tmp_path: Path, templates: Path) -> None:
    # postprocessing reads tokenizer_dir directly and needs a real value; make the block depend on a
    # variable nothing fills: it cannot be removed, and "" would not do either.
    path = templates / "postprocessing" / "config.pbtxt"
    rewrite(path, 'string_value: "${tokenizer_dir}"', 'string_value: "${tokenizer_path}"')
    with pytest.raises(ConfigError) as err:
        validate_options(TritonOptions(), templates)
    assert "nothing sets ${tokenizer_path}" in str(err.value)
    assert "postprocessing/1/model.py:" in str(err.value) and "output.triton.extra.tokenizer_path" in str(err.value)


def test_each_template_is_filled_with_its_own_keys_only(
    tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, set[str]] = {}
    real_render = triton.pbtxt.render

    def spy(tmpl: triton.pbtxt.Template, values: dict[str, str], unset: dict[str, str]) -> str:
        seen[tmpl.model] = set(values)
        return real_render(tmpl, values, unset)

    monkeypatch.setattr(triton.pbtxt, "render", spy)
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
    rewrite(templates / "tensorrt_llm" / "config.pbtxt", "data_type: TYPE_BOOL", "data_type: ${mystery_dtype}")
    with pytest.raises(ConfigError) as err:
        validate_options(TritonOptions(), templates)
    assert "tensorrt_llm/config.pbtxt: ${mystery_dtype}" in str(err.value)
    assert "output.triton.extra.mystery_dtype" in str(err.value)
    with pytest.raises(ConfigError, match="mystery_dtype"):
        build(engine, tokenizer, templates, tmp_path / "repo")
    assert not (tmp_path / "repo").exists()
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


def test_extra_with_an_unknown_key_is_rejected(templates: Path) -> None:
    options = parse_triton_options({"extra": {"sink_token_lenght": "4"}})
    with pytest.raises(ConfigError) as err:
        validate_options(options, templates)
    message = str(err.value)
    assert "output.triton.extra.sink_token_lenght" in message
    assert "did you mean `sink_token_length`" in message
    assert "lora_cache_max_adapter_size, lora_cache_optimal_adapter_size" in message  # lists the real ones
    assert "enable_trt_overlap" not in message  # commented out: not a variable


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


def test_tokenizer_folder_gets_the_model_config(tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    names = [p.name for p in tokenizer_folder_files(model)]
    assert "config.json" in names and "tokenizer_config.json" in names and "tokenizer.model" in names
    assert not any(n.endswith((".safetensors", ".bin")) for n in names)


# --------------------------------------------------------------------------- verification


@pytest.fixture
def repo(tmp_path: Path, engine: Path, tokenizer: list[Path], templates: Path) -> Path:
    return build(engine, tokenizer, templates, tmp_path / "repo")


def test_verify_catches_a_leftover_placeholder_but_not_one_in_a_comment(repo: Path) -> None:
    path = repo / "postprocessing" / "config.pbtxt"
    rewrite(path, "dynamic_batching {}", "dynamic_batching {}\n# commented: ${fine}")
    verify_model_repository(repo)
    rewrite(path, "dynamic_batching {}", 'dynamic_batching {}\nparameters { key: "x" value { string_value: "${x}" } }')
    with pytest.raises(VerifyError, match=r"postprocessing/config.pbtxt: unfilled template variables \$\{x\}"):
        verify_model_repository(repo)


def test_verify_ignores_placeholder_checks_inside_model_py(repo: Path) -> None:
    assert "${" in (repo / "preprocessing" / "1" / "model.py").read_text()
    verify_model_repository(repo)


def test_verify_catches_a_broken_pbtxt(repo: Path) -> None:
    rewrite(repo / "ensemble" / "config.pbtxt", "max_batch_size: 8", "max_batch_size: eight")
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
    assert "step uses model 'postprocessing', which is not in the repository" in message
    assert "missing rank1.engine for world size 2" in message


def test_verify_catches_a_folder_that_is_not_a_model(repo: Path) -> None:
    (repo / "tokenizer").mkdir()
    with pytest.raises(VerifyError, match="tokenizer/: Triton loads every root folder as a model"):
        verify_model_repository(repo)


def remove_block(path: Path, key: str) -> None:
    text = path.read_text()
    start = text.index(f'  key: "{key}"')
    start = text.rindex("parameters", 0, start)
    end = text.index("}\n}\n", start) + 4
    path.write_text(text[:start] + text[end:])


def test_verify_catches_a_removed_block_the_cpp_backend_reads(repo: Path) -> None:
    # Issue 12, case 2: the v0.19+ C++ backend reads both without a fallback (model_instance_state.cc:414-415).
    for key in ("guided_decoding_backend", "xgrammar_tokenizer_info_path"):
        remove_block(repo / "tensorrt_llm" / "config.pbtxt", key)
    with pytest.raises(VerifyError) as err:
        verify_model_repository(repo, backend_version="1.2.1")
    message = str(err.value)
    assert "tensorrt_llm/config.pbtxt: no parameter `xgrammar_tokenizer_info_path`" in message
    assert '"Cannot find parameter with name: xgrammar_tokenizer_info_path"' in message
    assert "no parameter `guided_decoding_backend`" in message and 'keep its block with ""' in message
    # the same repository is right for a v0.18 backend, which has no guided decoding
    verify_model_repository(repo, backend_version="0.18.2")


def test_verify_catches_a_removed_block_preprocessing_indexes(repo: Path) -> None:
    # Issue 12, case 3: preprocessing/1/model.py indexes model_config['parameters']['multimodal_model_path'].
    remove_block(repo / "preprocessing" / "config.pbtxt", "multimodal_model_path")
    with pytest.raises(VerifyError) as err:
        verify_model_repository(repo)
    message = str(err.value)
    assert (
        "preprocessing/config.pbtxt: no parameter `multimodal_model_path`, which preprocessing/1/model.py:" in message
    )
    assert "KeyError: 'multimodal_model_path'" in message


def test_verify_catches_a_value_the_loader_cannot_read(repo: Path) -> None:
    rewrite(
        repo / "postprocessing" / "config.pbtxt", 'string_value: "/models/tensorrt_llm/tokenizer"', 'string_value: ""'
    )
    with pytest.raises(
        VerifyError, match=r"parameter `tokenizer_dir` is '', which postprocessing/1/model.py:\d+ reads as neither"
    ):
        verify_model_repository(repo)


def test_a_prompt_table_type_the_ensemble_contradicts_is_refused_before_writing(
    tmp_path: Path, tokenizer: list[Path], templates: Path
) -> None:
    # Issue 12, case 4: a bf16 engine with the prompt table typed from the engine dtype.
    engine = write_engine(tmp_path / "eng", dtype="bfloat16")
    with pytest.raises(VerifyError) as err:
        build(engine, tokenizer, templates, tmp_path / "repo", extra={"prompt_embedding_table_data_type": "TYPE_BF16"})
    assert (
        "in ensemble ensemble, ensemble tensor prompt_embedding_table: inconsistent data type: TYPE_FP16 is "
        "inferred from model ensemble while TYPE_BF16 is inferred from model tensorrt_llm"
    ) in str(err.value)
    assert not (tmp_path / "repo").exists()
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def test_verify_catches_a_tokenizer_folder_autotokenizer_cannot_read(repo: Path) -> None:
    # Issue 12, case 5: no tokenizer_class and no config.json -> transformers 4.x "Unrecognized model".
    (repo / "tensorrt_llm" / "tokenizer" / "tokenizer_config.json").write_text('{"eos_token": "</s>"}')
    with pytest.raises(VerifyError, match=r"ship the model's config\.json in that folder"):
        verify_model_repository(repo)
    (repo / "tensorrt_llm" / "tokenizer" / "config.json").write_text('{"model_type": "llama"}')
    verify_model_repository(repo)


# --- the ensemble checks of Triton core (ensemble_utils.cc, model_config_utils.cc), case by case


def ensemble_case(repo: Path, old: str, new: str) -> str:
    rewrite(repo / "ensemble" / "config.pbtxt", old, new)
    with pytest.raises(VerifyError) as err:
        verify_model_repository(repo)
    return str(err.value)


def test_ensemble_shape_mismatch(repo: Path) -> None:
    old = '    name: "max_tokens"\n    data_type: TYPE_INT32\n    dims: [ 1 ]'
    message = ensemble_case(repo, old, old.replace("[ 1 ]", "[ 2 ]"))
    assert (
        "in ensemble ensemble, ensemble tensor max_tokens: inconsistent shape: [-1,2] is inferred from model "
        "ensemble while [-1,1] is inferred from model preprocessing"
    ) in message


def test_ensemble_required_input_not_mapped(repo: Path) -> None:
    old = '      input_map {\n        key: "QUERY"\n        value: "text_input"\n      }\n'
    message = ensemble_case(repo, old, "")
    assert "in ensemble ensemble, input QUERY in model preprocessing is not mapped to any ensemble tensors" in message
    assert "ensemble input 'text_input' for ensemble ensemble' is not used" in message


def test_ensemble_maps_a_non_existing_input_and_output(repo: Path) -> None:
    message = ensemble_case(repo, 'key: "TOKENS_BATCH"', 'key: "TOKEN_BATCH"')
    assert (
        "ensemble tensor _TOKENS_BATCH is mapping to non-existing input TOKEN_BATCH in model postprocessing" in message
    )
    rewrite(repo / "ensemble" / "config.pbtxt", 'key: "TOKEN_BATCH"', 'key: "TOKENS_BATCH"')
    message = ensemble_case(repo, 'key: "OUTPUT"', 'key: "OUTPUTS"')
    assert "ensemble tensor text_output is mapped from non-existing output OUTPUTS in model postprocessing" in message


def test_ensemble_unused_tensor(repo: Path) -> None:
    old = '      input_map {\n        key: "bad_words_list"\n        value: "_BAD_WORDS_IDS"\n      }\n'
    assert "ensemble tensor '_BAD_WORDS_IDS' is unused in ensemble 'ensemble'" in ensemble_case(repo, old, "")


def test_ensemble_output_mapped_twice(repo: Path) -> None:
    message = ensemble_case(repo, 'value: "_SEQUENCE_LENGTH"', 'value: "_TOKENS_BATCH"')
    assert "ensemble tensor '_TOKENS_BATCH' can appear in an output map only once for ensemble 'ensemble'" in message


def test_step_model_with_a_smaller_batch_size(repo: Path) -> None:
    rewrite(repo / "postprocessing" / "config.pbtxt", "max_batch_size: 8", "max_batch_size: 2")
    with pytest.raises(VerifyError, match="ensemble ensemble allows maximum batch size 8, but it contains model "
                       "postprocessing which only allows maximum batch size to be 2"):  # fmt: skip
        verify_model_repository(repo)


def test_decoupled_llm_in_the_ensemble_loads(tmp_path: Path, engine: Path, tokenizer: list[Path]) -> None:
    for version in VERSIONS:  # streaming: one decoupled step feeding postprocessing is fine
        build(engine, tokenizer, find_templates(BACKENDS[version]), tmp_path / version, decoupled=True)


def test_inputs_from_different_decoupled_models(tmp_path: Path) -> None:
    """Two decoupled steps feeding one step: core refuses it (ensemble_utils.cc, the decouple labels)."""
    repo = tmp_path / "r"

    def model(name: str, inputs: list[str], outputs: list[str], decoupled: bool) -> None:
        (repo / name / "1").mkdir(parents=True)
        (repo / name / "1" / "model.py").write_text("")
        io = lambda kind, names: "".join(  # noqa: E731
            f'{kind} {{ name: "{n}" data_type: TYPE_INT32 dims: [ 1 ] }}\n' for n in names
        )
        (repo / name / "config.pbtxt").write_text(
            f'name: "{name}"\nbackend: "python"\nmax_batch_size: 4\n'
            f"model_transaction_policy {{ decoupled: {str(decoupled).lower()} }}\n"
            + io("input", inputs)
            + io("output", outputs)
        )

    model("a", ["X"], ["Y"], True)
    model("b", ["X"], ["Y"], True)
    model("c", ["P", "Q"], ["Z"], False)
    (repo / "ens" / "1").mkdir(parents=True)
    (repo / "ens" / "config.pbtxt").write_text(
        'name: "ens"\nplatform: "ensemble"\nmax_batch_size: 4\n'
        'input { name: "in" data_type: TYPE_INT32 dims: [ 1 ] }\n'
        'output { name: "out" data_type: TYPE_INT32 dims: [ 1 ] }\n'
        "ensemble_scheduling { step [\n"
        '{ model_name: "a" model_version: -1 input_map { key: "X" value: "in" } output_map { key: "Y" value: "ya" } },\n'
        '{ model_name: "b" model_version: -1 input_map { key: "X" value: "in" } output_map { key: "Y" value: "yb" } },\n'
        '{ model_name: "c" model_version: -1 input_map { key: "P" value: "ya" } input_map { key: "Q" value: "yb" }'
        ' output_map { key: "Z" value: "out" } } ] }\n'
    )
    from trtllm_builder.outputs.tritonverify import repository_problems

    problems = repository_problems(repo)
    # core names the model of the tensor node it is at: `out` is the ensemble's own output, so 'ens'
    assert "in ensemble ens, step of model 'ens' receives inputs originated from different decoupled models" in problems
    # one decoupled and one plain source are "different" too; two plain ones are fine
    rewrite(repo / "b" / "config.pbtxt", "decoupled: true", "decoupled: false")
    assert any("different decoupled models" in p for p in repository_problems(repo))
    rewrite(repo / "a" / "config.pbtxt", "decoupled: true", "decoupled: false")
    assert [p for p in repository_problems(repo) if "decoupled" in p] == []


def test_inspect_checks_archive_members_against_the_recorded_or_the_versions_reads(
    tmp_path: Path, engine: Path, tokenizer: list[Path]
) -> None:
    from trtllm_builder.outputs.inspect import triton_problems

    repo = build(engine, tokenizer, find_templates(BACKENDS["v0.18.2"]), tmp_path / "repo")
    files = [p for p in repo.rglob("*") if p.is_file()]
    names = [p.relative_to(repo).as_posix() for p in files]
    texts = {n: p.read_bytes() for n, p in zip(names, files, strict=True) if not n.endswith(".engine")}
    # engines travel by name only: the check needs to know they are there, not their bytes
    assert triton_problems(texts, names, "0.21.0", cpp_reads=["gpt_model_type"]) == []
    # an archive without the recorded reads is checked against its release's: a 0.18 repository
    # served by a 0.21 backend lacks what that backend reads without a fallback
    assert any("no parameter `xgrammar_tokenizer_info_path`" in p for p in triton_problems(texts, names, "0.21.0"))
    assert triton_problems(texts, names, "0.18.2") == []
    missing_rank = [n for n in names if n != "tensorrt_llm/1/rank1.engine"]
    assert any("missing rank1.engine" in p for p in triton_problems(texts, missing_rank, "0.18.2"))
