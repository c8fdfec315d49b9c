"""Output verification and sub-folder discovery, on directories the tests lay out by hand."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from trtllm_builder.plan.layout import inspect_dir, locate


def safetensors(path: Path, n: int = 4) -> None:
    header = json.dumps({"w": {"dtype": "F16", "shape": [n], "data_offsets": [0, 2 * n]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * (2 * n))


def checkpoint(d: Path, world: int, ranks: range | None = None) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(
        json.dumps(
            {"architecture": "LlamaForCausalLM", "mapping": {"world_size": world, "tp_size": world, "pp_size": 1}}
        )
    )
    for r in ranks if ranks is not None else range(world):
        safetensors(d / f"rank{r}.safetensors")
    return d


def engine(d: Path, world: int) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(
        json.dumps({"version": "0.21.0", "pretrained_config": {"mapping": {"world_size": world}}, "build_config": {}})
    )
    for r in range(world):
        (d / f"rank{r}.engine").write_bytes(b"e" * 10)
    return d


def test_checkpoint_complete(tmp_path: Path) -> None:
    found = inspect_dir(checkpoint(tmp_path / "c", 2))
    assert found and found.layout == "checkpoint" and found.world_size == 2 and found.ok


def test_checkpoint_missing_rank(tmp_path: Path) -> None:
    found = inspect_dir(checkpoint(tmp_path / "c", 2, range(1)))
    assert found and found.problems == ["missing rank1.safetensors for mapping.world_size = 2"]


def test_truncated_safetensors(tmp_path: Path) -> None:
    d = checkpoint(tmp_path / "c", 1)
    data = (d / "rank0.safetensors").read_bytes()
    (d / "rank0.safetensors").write_bytes(data[:-3])
    found = inspect_dir(d)
    assert found and any("truncated" in p for p in found.problems)


def test_engine_and_extra_rank(tmp_path: Path) -> None:
    d = engine(tmp_path / "e", 1)
    (d / "rank1.engine").write_bytes(b"x")
    found = inspect_dir(d)
    assert found and found.layout == "engine" and "rank1.engine beyond mapping.world_size = 1" in found.problems[0]


def test_locate_prefers_root_then_n_gpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    checkpoint(out / "zzz", 1)
    checkpoint(out / "2-gpu", 2)
    found = locate(out, "checkpoint")
    assert found and found.path == out / "2-gpu"
    assert locate(out, "engine") is None


def test_legacy_layouts(tmp_path: Path) -> None:
    ft = tmp_path / "c-model" / "1-gpu"
    ft.mkdir(parents=True)
    (ft / "config.ini").write_text("[gpt]\n")
    (ft / "model.wte.bin").write_bytes(b"\0" * 8)
    found = locate(tmp_path / "c-model", "checkpoint")
    assert found and found.layout == "legacy_checkpoint" and found.path == ft
    eng = tmp_path / "engine"
    eng.mkdir()
    (eng / "config.json").write_text(json.dumps({"builder_config": {"tensor_parallel": 2}}))
    (eng / "gpt_float16_tp2_rank0.engine").write_bytes(b"e")
    found = locate(eng, "engine")
    assert (
        found
        and found.layout == "legacy_engine"
        and found.problems == ["expected engines for ranks [0, 1] (tensor_parallel=2), found ranks [0]"]
    )


def _engine_config(d: Path, world: int, **build_config: object) -> None:
    cfg = {"version": "1.2.1", "pretrained_config": {"mapping": {"world_size": world}}, "build_config": build_config}
    (d / "config.json").write_text(json.dumps(cfg))


def test_fast_build_engine_is_an_engine_with_its_managed_weights(tmp_path: Path) -> None:
    d = engine(tmp_path / "e", 2)
    _engine_config(d, 2, plugin_config={"manage_weights": True})
    for r in range(2):
        safetensors(d / f"rank{r}_managed_weights.safetensors")
    (d / "model.cache").write_bytes(b"timing cache")  # a timing cache written here is not part of the engine
    found = inspect_dir(d)
    assert found and found.layout == "engine" and found.ok, found and found.problems
    assert [n for n, _ in found.members()] == [
        "config.json",
        "rank0.engine",
        "rank0_managed_weights.safetensors",
        "rank1.engine",
        "rank1_managed_weights.safetensors",
    ]
    (d / "rank1_managed_weights.safetensors").unlink()
    found = inspect_dir(d)
    assert found and found.problems == [
        "missing rank1_managed_weights.safetensors: the engine was built with --fast_build (managed weights)"
    ]


def test_lora_copies_are_engine_members(tmp_path: Path) -> None:
    d = engine(tmp_path / "e", 1)
    _engine_config(d, 1, lora_config={"lora_dir": ["lora/0", "lora/1.nemo"], "lora_ckpt_source": "hf"})
    (d / "lora" / "0").mkdir(parents=True)
    (d / "lora" / "0" / "adapter_config.json").write_text("{}")
    (d / "lora" / "0" / "adapter_model.safetensors").write_bytes(b"x")
    (d / "lora" / "1.nemo").write_bytes(b"n")
    found = inspect_dir(d)
    assert found and found.ok, found and found.problems
    assert [n for n, _ in found.members()] == [
        "config.json",
        "rank0.engine",
        "lora/0/adapter_config.json",
        "lora/0/adapter_model.safetensors",
        "lora/1.nemo",
    ]
    (d / "lora" / "0" / "adapter_config.json").unlink()
    found = inspect_dir(d)
    assert found and found.problems == ["missing lora/0/adapter_config.json: the engine's lora_config names lora/0"]


def test_context_parallel_checkpoint_shares_rank_files(tmp_path: Path) -> None:
    d = tmp_path / "c"
    d.mkdir()
    mapping = {"world_size": 4, "tp_size": 2, "pp_size": 1, "cp_size": 2}
    (d / "config.json").write_text(json.dumps({"architecture": "LlamaForCausalLM", "mapping": mapping}))
    for r in range(2):
        safetensors(d / f"rank{r}.safetensors")
    found = inspect_dir(d)
    assert found and found.ok and found.world_size == 4, found and found.problems
    assert [n for n, _ in found.members()] == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    (d / "rank1.safetensors").unlink()
    found = inspect_dir(d)
    assert found and found.problems == [
        "missing rank1.safetensors for mapping.world_size = 4 (tp x pp files: context-parallel ranks share them)"
    ]


def test_mixed_precision_engine_needs_quant_cfg(tmp_path: Path) -> None:
    d = engine(tmp_path / "e", 1)
    cfg = {"version": "1.2.1", "build_config": {},
           "pretrained_config": {"mapping": {"world_size": 1}, "quantization": {"quant_algo": "MIXED_PRECISION"}}}  # fmt: skip
    (d / "config.json").write_text(json.dumps(cfg))
    found = inspect_dir(d)
    assert found and found.problems == ["missing quant_cfg.json: a mixed-precision engine needs it"]
    (d / "quant_cfg.json").write_text("{}")
    found = inspect_dir(d)
    assert found and found.ok and "quant_cfg.json" in [n for n, _ in found.members()]
