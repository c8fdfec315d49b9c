"""cog-trt-llm's configs run unchanged on the pinned release (1.2.1): translated flag by flag.

Every test goes through the real CLI against the stand-in 1.2.1 tree (real subprocesses), with the
example configs of examples/cog-trt-llm/ as written.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import DEFAULT_RELEASE, RELEASES, ROOT, CliRun, tree_dir

EXAMPLES = ROOT / "examples" / "cog-trt-llm"
SEED = EXAMPLES / "tiny-gpt2.yaml"
H100 = "NVIDIA H100 80GB HBM3:9.0:81559"
FOUR_H100 = ",".join([H100] * 4)
# example -> the tiny model that stands in for its model_id (the architecture the config converts)
SHAPES = {
    "tiny-gpt2.yaml": "gpt2",
    "gpt2-medium-tarball.yaml": "gpt2",
    "llama-2-7b-int8-weight-only.yaml": "llama",
    "llama-2-70b-tp4.yaml": "llama",
    "llama-2-7b-build-py.yaml": "llama",
    "llama-2-13b-smoothquant.yaml": "llama",
}


def steps_run(log: Path) -> list[dict]:
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return [c for c in calls if c["argv"] != ["--help"] and c["script"] != "nvidia-smi"]


def plan_json(run_cli: CliRun, cfg: Path, work: Path, **env: str) -> dict:
    res = run_cli("plan", str(cfg), "--json", "--work-dir", str(work), env=env)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def test_every_example_is_one_of_the_shapes() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.yaml")) == sorted(SHAPES)


@pytest.mark.parametrize("standin_release", RELEASES)
def test_seed_config_builds_on_every_supported_release(
    standin_release: str, run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path,
    tiny_model: Callable[..., Path],
) -> None:  # fmt: skip
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(SEED), "--model-dir", str(tiny_model("gpt2")), "--output", str(out))
    assert res.returncode == 0, res.stderr
    assert f"cog-trt-llm config translated onto TensorRT-LLM {standin_release}:" in res.stderr
    assert "  translation: step `convert_to_ft`: `tensor-parallelism: 1` -> `tp_size: 1`" in res.stderr
    calls = steps_run(Path(standin_env["STANDIN_LOG"]))
    assert [c["script"] for c in calls] == ["convert_checkpoint.py", "trtllm-build"]
    with tarfile.open(out) as tar:
        names = {m.name for m in tar.getmembers()}
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert {"config.json", "rank0.engine", "tokenizer.json", "manifest.json"} <= names
    assert manifest["trtllm"]["version"] == standin_release and manifest["engine"]["layout"] == "engine"
    translation = manifest["translation"]
    assert translation["release"] == standin_release
    assert [s["script"] if "script" in s else s["command"] for s in translation["project"]["steps"]] == [
        "convert_checkpoint.py",
        "trtllm-build",
    ]
    assert any("`tensor-parallelism: 1` -> `tp_size: 1`" in n for n in translation["notes"])
    assert manifest["config"]["convert_to_ft"]["script"] == "hf_gpt_convert.py"  # the config as given


@pytest.mark.parametrize("example", sorted(SHAPES))
def test_printed_project_form_plans_to_the_same_commands(example: str, run_cli: CliRun, tmp_path: Path) -> None:
    """What `plan` prints is a config to copy: planned again, it runs exactly the same commands."""
    translated = plan_json(run_cli, EXAMPLES / example, tmp_path / "w", STANDIN_GPUS=FOUR_H100)
    project = tmp_path / "project.yaml"
    project.write_text(yaml.safe_dump(translated["translation"]["config"], sort_keys=False))
    again = plan_json(run_cli, project, tmp_path / "w", STANDIN_GPUS=FOUR_H100)
    assert again["form"] == "project" and again["translation"] is None
    assert [s["argv"] for s in again["steps"]] == [s["argv"] for s in translated["steps"]]
    assert all(s["checked_by"] for s in translated["steps"])  # every step checked against 1.2.1's parsers
    for step in translated["steps"]:
        assert step["argv"][1].startswith(str(tree_dir())) or step["argv"][0].endswith("trtllm-build")


@pytest.mark.parametrize("example", sorted(SHAPES))
def test_each_shape_builds_with_its_tiny_model(
    example: str, run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    out = tmp_path / "e.tar.gz"
    model = tiny_model(SHAPES[example])
    res = run_cli("build", str(EXAMPLES / example), "--model-dir", str(model), "-o", str(out),
                  env={"STANDIN_GPUS": FOUR_H100})  # fmt: skip
    assert res.returncode == 0, res.stderr
    with tarfile.open(out) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    engine = manifest["engine"]
    assert engine["layout"] == "engine" and engine["version"] == DEFAULT_RELEASE
    world = {"llama-2-70b-tp4.yaml": 4, "llama-2-7b-build-py.yaml": 2}.get(example, 1)
    assert engine["world_size"] == world
    calls = steps_run(Path(standin_env["STANDIN_LOG"]))
    assert [c["script"] for c in calls] == ["convert_checkpoint.py", "trtllm-build"]


def test_the_old_flags_are_translated_into_the_new_ones(run_cli: CliRun, tmp_path: Path) -> None:
    plan = plan_json(run_cli, EXAMPLES / "llama-2-7b-build-py.yaml", tmp_path / "w")
    convert, build = plan["steps"]
    assert convert["name"] == "convert" and convert["argv"][1].endswith("models/core/llama/convert_checkpoint.py")
    args = convert["argv"][2:]
    for flag in ("--dtype", "--use_weight_only", "--weight_only_precision", "--tp_size"):
        assert flag in args  # what build.py quantized and split is the converter's job now
    assert build["argv"][1:] == [
        "--output_dir", str(tmp_path / "w" / "steps" / "build"),
        "--checkpoint_dir", str(tmp_path / "w" / "steps" / "convert"),
        "--gpt_attention_plugin", "float16",
        "--gemm_plugin", "float16",
        "--workers", "2",
        "--max_batch_size", "8",
        "--max_input_len", "2048",
        "--max_seq_len", "2560",  # 2048 + max_output_len 512
    ]  # fmt: skip
    notes = plan["translation"]["notes"]
    assert "step `build`: `use_rmsnorm_plugin: float16` dropped: the rmsnorm plugin was removed in 0.8 " \
           "(TensorRT fuses it)" in notes  # fmt: skip
    wo = plan_json(run_cli, EXAMPLES / "llama-2-7b-int8-weight-only.yaml", tmp_path / "w2")
    build_args = wo["steps"][1]["argv"]
    assert "--kv_cache_type" in build_args and build_args[build_args.index("--kv_cache_type") + 1] == "paged"
    assert "--paged_kv_cache" not in build_args and "--use_custom_all_reduce" not in build_args
    assert "--max_output_len" not in build_args and "--max_seq_len" in build_args


@pytest.mark.parametrize("switch", ["paged_kv_cache:", "paged_kv_cache: true", "paged_kv_cache: True"])
def test_a_bare_or_boolean_old_switch_maps_through_its_values(run_cli: CliRun, tmp_path: Path, switch: str) -> None:
    """0.8's `--paged_kv_cache` was a plain switch: on, written bare or as a boolean, it is `kv_cache_type paged`."""
    text = (EXAMPLES / "llama-2-7b-int8-weight-only.yaml").read_text().replace("paged_kv_cache: enable", switch)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    build_args = plan_json(run_cli, cfg, tmp_path / "w")["steps"][1]["argv"]
    assert build_args[build_args.index("--kv_cache_type") + 1] == "paged"


BUILD_PY = """\
model_id: org/tiny
example_name: llama
build:
  script: build.py
  output_dir: ./engine_outputs/
  args:
    model_dir: /src/models/org/tiny
    use_gpt_attention_plugin:
{extra}"""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("    enable_fp8:\n", "step `build`: `--enable_fp8`: FP8 needs ModelOpt calibration now (build.py read ammo "
         "scales); nearest current equivalent: a quantize step: `example: quantization, script: quantize.py, "
         "args: {qformat: fp8}`"),
        ("    rotary_scaling: [linear, 2.0]\n", "step `build`: `--rotary_scaling`: the converter takes rope scaling "
         "from the model's config.json and has no flag to override it; nearest current equivalent: set "
         "`rope_scaling` in the model's config.json"),
        ("    world_size: 4\n    tp_size: 2\n", "step `build`: `world_size: 4` is not tp_size 2 x pp_size 1: the "
         "old build.py refused this too"),
    ],
)  # fmt: skip
def test_what_cannot_be_mapped_is_refused_at_plan_time(
    extra: str, message: str, run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BUILD_PY.format(extra=extra))
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2
    assert f"the cog-trt-llm config cannot be translated onto TensorRT-LLM {DEFAULT_RELEASE}:" in res.stderr
    assert message in res.stderr
    assert steps_run(Path(standin_env["STANDIN_LOG"])) == []


def test_keys_cog_trt_llm_reads_and_keys_it_ignored(run_cli: CliRun, tmp_path: Path) -> None:
    base = SEED.read_text()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(base + "weight_formt: safetensors\n")
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2 and "weight_formt: unknown key; did you mean `weight_format`?" in res.stderr
    cfg.write_text(base.replace("  script: build.py", "  scrpt: build.py"))
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2 and "build.scrpt: unknown key; did you mean `script`?" in res.stderr
    cfg.write_text(base + "description: my tiny engine\nweight_format: pt\nmodel_name: tiny\n"
                   + "hf_token: hf_secretsecretsecret\n")  # fmt: skip
    cfg.write_text(cfg.read_text().replace("  output_dir: ./engine_outputs/\n", "  output_dir: ./engine_outputs/\n"
                                           "  input_dir: ./c-model\n", 1))  # fmt: skip
    res = run_cli("plan", str(cfg))
    assert res.returncode == 0, res.stderr
    assert "  - `description` is ignored: cog-trt-llm does not read it (neither does this tool)" in res.stdout
    assert "  - `model_name` is ignored: older cog-trt-llm versions read it" in res.stdout
    assert "  - build.`input_dir` is ignored: older cog-trt-llm versions took it and never used it" in res.stdout
    assert "`weight_format: pt`: this tool downloads a repo's *.safetensors weights when it has them" in res.stdout
    assert "hf_secretsecretsecret" not in res.stdout + res.stderr
    assert "`hf_token` is not shown" in res.stdout
    res = run_cli("plan", str(cfg), "--json")
    assert "hf_secretsecretsecret" not in res.stdout


def test_src_paths_are_the_work_dir_and_the_tree(run_cli: CliRun, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        (EXAMPLES / "llama-2-13b-smoothquant.yaml")
        .read_text()
        .replace(
            "    per_token:\n",
            "    per_token:\n    calib_dataset: /src/datasets/cnn_dailymail\n"
            "    quant_ckpt_path: /src/TensorRT-LLM/examples/quantization/scales.safetensors\n",
        )
    )
    plan = plan_json(run_cli, cfg, tmp_path / "w")
    argv = plan["steps"][0]["argv"]
    assert argv[argv.index("--calib_dataset") + 1] == str(tmp_path / "w" / "datasets" / "cnn_dailymail")
    assert argv[argv.index("--quant_ckpt_path") + 1] == str(tree_dir() / "examples/quantization/scales.safetensors")


def test_reading_a_checkpoint_no_step_makes_is_refused(run_cli: CliRun, standin_env: dict[str, str],
                                                      tmp_path: Path, tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        (EXAMPLES / "llama-2-7b-int8-weight-only.yaml")
        .read_text()
        .replace(
            "    checkpoint_dir: /src/c-model/meta-llama/Llama-2-7b-chat-hf/int8/1-gpu",
            "    checkpoint_dir: /src/c-model/meta-llama/Llama-2-7b-chat-hf/int4/1-gpu",
        )
    )
    res = run_cli("plan", str(cfg), "--work-dir", str(tmp_path / "w"))
    assert res.returncode == 2
    assert f"step `build`: `--checkpoint_dir {tmp_path / 'w'}/c-model/meta-llama/Llama-2-7b-chat-hf/int4/1-gpu` " \
           "reads" in res.stderr and "which no earlier step writes and which does not exist" in res.stderr  # fmt: skip
    # the project form too: a typed path no step writes
    project = tmp_path / "p.yaml"
    project.write_text(
        f"model: {{id: {tiny_model('llama')}}}\ntrtllm: {{example: llama}}\nsteps:\n"
        "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
        "  - {name: build, command: trtllm-build, args: {checkpoint_dir: ./ckpt}}\n"
    )
    res = run_cli("plan", str(project))
    assert res.returncode == 2 and "`--checkpoint_dir ./ckpt` reads" in res.stderr
    assert "point it at an earlier step's output (`{steps.convert.output_dir}`)" in res.stderr
    assert steps_run(Path(standin_env["STANDIN_LOG"])) == []


def test_project_form_gets_the_exact_rewrite_not_a_silent_one(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        f"model: {{id: {model}}}\ntrtllm: {{example: llama}}\nsteps:\n"
        "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16, storage-type: fp16}}\n"
        "  - {name: build, command: trtllm-build, args: {max_input_len: 1024, max_output_len: 512, "
        "use_gpt_attention_plugin: true, use_custom_all_reduce: disable}}\n"
    )
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2
    err = res.stderr
    assert (f"step `convert`: `--storage-type` is not a flag of models/core/llama/convert_checkpoint.py "
            f"({DEFAULT_RELEASE}); write `dtype: float16` on convert_checkpoint.py instead") in err  # fmt: skip
    assert "step `build`: `--max_output_len` is not a flag of trtllm-build" in err
    assert "write `max_seq_len: 1536` instead (max_input_len 1024 + max_output_len 512" in err
    assert "it is `gpt_attention_plugin: auto` now, the default: remove `use_gpt_attention_plugin`" in err
    assert "remove it: the all-reduce strategy is chosen at run time now" in err
    old = tmp_path / "old.yaml"
    old.write_text(
        f"model: {{id: {model}}}\ntrtllm: {{example: gpt}}\nsteps:\n"
        "  - {name: convert, script: hf_gpt_convert.py, args: {}}\n  - {name: build, command: trtllm-build}\n"
    )
    res = run_cli("plan", str(old))
    assert res.returncode == 2
    assert "script `hf_gpt_convert.py` is not in example `gpt`" in res.stderr
    assert "`hf_gpt_convert.py` is a 0.5-0.7 script; this release converts with `script: convert_checkpoint.py`" \
        in res.stderr  # fmt: skip


def test_every_row_cites_its_sources_and_names_a_real_flag(tmp_path: Path, standin_env: dict[str, str]) -> None:
    """The table's new flags exist in 1.2.1's own parsers (the stand-ins mirror them; see the ledger)."""
    import sys

    from trtllm_builder.plan.flagtable import ROWS
    from trtllm_builder.plan.parsers import ParserCache

    cache = ParserCache(tmp_path / "cache")
    tree = tree_dir()

    def flags(*program: str) -> frozenset[str]:
        spec = cache.lookup(program).spec
        assert spec is not None, program
        return spec.flag_names()

    build = flags(str(Path(standin_env["PATH"].split(":")[0]) / "trtllm-build"))
    converters = flags(sys.executable, str(tree / "examples/models/core/llama/convert_checkpoint.py")) | flags(
        sys.executable, str(tree / "examples/models/core/gpt/convert_checkpoint.py")
    )
    for row in ROWS:
        assert row.old_source and row.new_source, row
        if row.action == "refuse":
            assert row.why and row.nearest, row
        elif row.action == "drop":
            assert row.why, row
        if row.new is None or row.action == "output":
            continue
        on_converter = row.program == "hf_convert" or row.action == "move" or row.program == "convert_checkpoint.py"
        target = converters if on_converter else build
        if row.program == "build.py" and row.action == "input":
            target = build
        assert row.new in target, (row.program, row.old, row.new)
