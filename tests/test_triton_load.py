"""Repositories load as Triton would load them, per release of the templates.

Triton itself cannot run here (no GPU, no container): tests/tritonload.py stands in for it. It
imports each Python model's own ``model.py`` and runs ``initialize()`` on the config as core
hands it over (real transformers, real tokenizer folder), and runs the C++ backend stand-in's
parameter reads for ``tensorrt_llm``; the ensemble wiring is checked by the product's verifier
(tests/test_triton.py pins it to Triton core's rules). Each run is a subprocess, like tritonserver.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import BACKENDS, ROOT
from test_triton import remove_block, write_engine

from trtllm_builder.outputs.triton import (
    find_templates,
    make_model_repository,
    parse_triton_options,
    tokenizer_folder_files,
)

LOADER = ROOT / "tests" / "tritonload.py"
ALL = ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm", "tensorrt_llm_bls"]


def triton_load(*repos: tuple[Path, Path]) -> list[dict[str, object]]:
    """Load each (repository, templates) pair in one stand-in Triton process; one result per pair."""
    res = subprocess.run(
        [sys.executable, str(LOADER), *(f"{r}={t}" for r, t in repos), "--mount", "/models"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.stdout.strip(), res.stderr
    results: dict[str, dict[str, object]] = json.loads(res.stdout)
    assert (res.returncode == 0) == (not any(r["failed"] for r in results.values())), res.stderr
    return [results[str(r)] for r, _ in repos]


def no_tokenizer_class(model: Path) -> Path:
    """Drop ``tokenizer_class`` from the model's tokenizer_config.json (transformers then needs config.json)."""
    path = model / "tokenizer_config.json"
    cfg = json.loads(path.read_text())
    cfg.pop("tokenizer_class")
    path.write_text(json.dumps(cfg))
    return model


def build(tmp_path: Path, model: Path, version: str, **options: object) -> tuple[Path, Path]:
    templates = find_templates(BACKENDS[version])
    repo = make_model_repository(
        engine_dir=write_engine(tmp_path / "engine", world_size=2),
        tokenizer_files=tokenizer_folder_files(model),
        templates=templates,
        dest=tmp_path / "repo",
        options=parse_triton_options(options),
    )
    return repo, templates


MATRIX = [("v0.18.2", False), ("v0.18.2", True), ("v0.19.0", False), ("v0.19.0", True), ("1.2.1", True)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, bool], dict[str, object]]:
    """Repositories for each release x decoupled (tp 2), all loaded in one stand-in Triton run."""
    from modelgen import make_tiny_model

    base = tmp_path_factory.mktemp("triton-load")
    model = no_tokenizer_class(make_tiny_model(base / "model", "llama"))
    repos = {(v, d): build(base / f"{v}-{'decoupled' if d else 'plain'}", model, v, decoupled=d) for v, d in MATRIX}
    return dict(zip(repos, triton_load(*repos.values()), strict=True))


@pytest.mark.parametrize(("version", "decoupled"), MATRIX)
def test_every_model_loads(loaded: dict[tuple[str, bool], dict[str, object]], version: str, decoupled: bool) -> None:
    assert loaded[version, decoupled] == {"loaded": ALL, "failed": {}}


def test_the_broken_repositories_of_issue_12_fail_to_load_as_the_verifier_says(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    repo, templates = build(tmp_path, tiny_model("gpt2"), "v0.19.0")
    for key in ("guided_decoding_backend", "xgrammar_tokenizer_info_path"):
        remove_block(repo / "tensorrt_llm" / "config.pbtxt", key)  # what the builder did before
    remove_block(repo / "preprocessing" / "config.pbtxt", "multimodal_model_path")
    (result,) = triton_load((repo, templates))
    failed = result["failed"]
    assert isinstance(failed, dict)
    # model_instance_state.cc reads xgrammar_tokenizer_info_path (line 414) before guided_decoding_backend
    assert failed["tensorrt_llm"] == "RuntimeError: Cannot find parameter with name: xgrammar_tokenizer_info_path"
    assert failed["preprocessing"] == "KeyError: 'multimodal_model_path'"
    assert failed["ensemble"].startswith("ensemble step model(s) not loaded")
    assert result["loaded"] == ["postprocessing", "tensorrt_llm_bls"]


def test_tokenizer_folder_loads_with_autotokenizer_without_a_tokenizer_class(
    tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    import transformers  # a test dependency: the tokenizer folder is checked with the real loader

    model = no_tokenizer_class(tiny_model("gpt2"))
    expected = type(transformers.AutoTokenizer.from_pretrained(str(model)))
    repo, _ = build(tmp_path, model, "1.2.1")
    folder = repo / "tensorrt_llm" / "tokenizer"
    assert (folder / "config.json").read_bytes() == (model / "config.json").read_bytes()
    assert type(transformers.AutoTokenizer.from_pretrained(str(folder))) is expected
    # control: the same folder without config.json does not give the model's tokenizer
    # (transformers 4.x raises "Unrecognized model", 5.x falls back to a generic class)
    bare = tmp_path / "plain" / "folder"
    shutil.copytree(folder, bare)
    (bare / "config.json").unlink()
    try:
        got: type | None = type(transformers.AutoTokenizer.from_pretrained(str(bare)))
    except (ValueError, OSError):
        got = None
    assert got is not expected
