"""What real engine builds leave behind, end to end through the CLI (issue #11's behaviours).

``--fast_build`` managed weights, a ``--lora_dir`` build's ``lora/`` copies, context-parallel rank
sharing, the timing cache in the working directory, Blackwell's quantization refusals, the INT8 KV
cache turning paged context FMHA off, and run.py's multi-line outputs: each against the stand-in
of the default release (1.2.1), whose trtllm-build and run.py behave like the real ones here.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from conftest import CliRun

H100 = "NVIDIA H100 80GB HBM3:9.0:81559"
B200 = "NVIDIA B200:10.0:183359"
GB300 = "NVIDIA GB300:10.3:284208"


def config(tmp_path: Path, model: Path, *, example: str = "llama", convert: str = "", build: str = "",
           tail: str = "") -> Path:  # fmt: skip
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"""\
model: {{id: {model}}}
trtllm: {{example: {example}}}
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16{convert}}}
  - name: build
    command: trtllm-build
    args: {{max_batch_size: 4, max_seq_len: 256{build}}}
{tail}"""
    )
    return cfg


def build(run_cli: CliRun, cfg: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None):
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(cfg), "--output", str(out), "--work-dir", str(tmp_path / "w"), *extra, env=env)
    return res, out


def members(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return [m.name for m in tar.getmembers() if m.isfile()]


def read_member(archive: Path, name: str) -> bytes:
    with tarfile.open(archive) as tar:
        f = tar.extractfile(name)
        assert f is not None
        return f.read()


SMOKE = "smoke_test: {prompt: Hello, max_output_len: 8}\n"


def test_fast_build_packs_managed_weights_and_the_engine_serves(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = config(tmp_path, tiny_model("llama"), convert=", tp_size: 2", build=", fast_build: true", tail=SMOKE)
    res, out = build(run_cli, cfg, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "[build] verified engine (world size 2)" in res.stderr  # not "a checkpoint missing rank0.safetensors"
    names = members(out)
    for rank in (0, 1):
        assert f"rank{rank}.engine" in names and f"rank{rank}_managed_weights.safetensors" in names
    manifest = json.loads(read_member(out, "manifest.json"))
    assert {f["path"] for f in manifest["files"]} >= {"rank0_managed_weights.safetensors"}
    assert manifest["smoke_test"]["output"]  # run.py loaded the managed weights beside the engines


def test_lora_build_packs_the_lora_copies(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    adapter = model / "adapters" / "chat"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text('{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\x02" + b"\0" * 7 + b"{}")
    cfg = config(tmp_path, model, build=", lora_plugin: auto, lora_dir: '{model_dir}/adapters/chat'")
    res, out = build(run_cli, cfg, tmp_path)
    assert res.returncode == 0, res.stderr
    names = members(out)
    assert "lora/0/adapter_config.json" in names and "lora/0/adapter_model.safetensors" in names
    engine_cfg = json.loads(read_member(out, "config.json"))
    assert engine_cfg["build_config"]["lora_config"]["lora_dir"] == ["lora/0"]  # points at the packed copy
    assert read_member(out, "lora/0/adapter_config.json") == (adapter / "adapter_config.json").read_bytes()


def test_context_parallel_checkpoint_builds_and_packs_every_engine_rank(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = config(tmp_path, tiny_model("llama"), convert=", cp_size: 2", tail=SMOKE)
    plan = run_cli("plan", str(cfg))
    assert "needs 2" not in plan.stdout and "this machine can run the plan" in plan.stdout  # 2 x A100 here
    res, out = build(run_cli, cfg, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "[convert] verified checkpoint (world size 2)" in res.stderr  # one rank file, world size 2
    names = members(out)
    assert "rank0.engine" in names and "rank1.engine" in names
    assert json.loads(read_member(out, "manifest.json"))["engine"]["world_size"] == 2


def test_timing_cache_stays_out_of_the_archive(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    res, out = build(run_cli, config(tmp_path, model), tmp_path, "--keep-work-dir")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "w" / "model.cache").is_file()  # trtllm-build's default: model.cache in its cwd
    assert not [n for n in members(out) if n.endswith(".cache")]
    # written into the engine dir on purpose: still not part of the engine, and the log says so
    cfg = config(tmp_path, model, build=", output_timing_cache: '{output_dir}/model.cache'")
    res, out = build(run_cli, cfg, tmp_path / "again")
    assert res.returncode == 0, res.stderr
    assert "not packed (not part of the engine): model.cache" in res.stderr
    assert "model.cache" not in members(out)


BLACKWELL_REFUSED = [
    (", use_weight_only: true, weight_only_precision: int8", "`--use_weight_only` (INT8/INT4 weight-only)"),
    (", use_weight_only: true, weight_only_precision: int4", "`--use_weight_only` (INT8/INT4 weight-only)"),
    (", int8_kv_cache: true", "`--int8_kv_cache` (an INT8 KV cache)"),
    (", smoothquant: 0.5, per_token: true", "`--smoothquant 0.5` (SmoothQuant)"),
]


def test_blackwell_refusals_are_plan_time_errors(
    run_cli: CliRun, standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    for convert, what in BLACKWELL_REFUSED:
        plan = run_cli("plan", str(config(tmp_path, model, convert=convert)), env={"STANDIN_GPUS": B200})
        assert plan.returncode == 0, plan.stderr  # plan reports; build refuses
        line = next(ln for ln in plan.stdout.splitlines() if ln.startswith("preflight error: GPU 0"))
        assert "GPU 0 (NVIDIA B200) has compute capability 10.0" in line and what in line
        assert "use fp8 instead" in line and "nvfp4" in line
    cfg = config(tmp_path, model, convert=BLACKWELL_REFUSED[0][0])
    res, out = build(run_cli, cfg, tmp_path, env={"STANDIN_GPUS": GB300})
    assert res.returncode == 2 and "GPU 0 (NVIDIA GB300) has compute capability 10.3" in res.stderr
    assert "nothing was downloaded or built" in res.stderr and not out.exists()
    calls = [json.loads(ln) for ln in Path(standin_env["STANDIN_LOG"]).read_text().splitlines()]
    assert [c["script"] for c in calls if c["argv"] != ["--help"] and c["script"] != "nvidia-smi"] == []
    # on a Hopper the same config builds (and the stand-in trtllm-build itself refuses it on SM 10.x)
    res, _ = build(run_cli, cfg, tmp_path / "hopper", env={"STANDIN_GPUS": H100})
    assert res.returncode == 0, res.stderr


def test_blackwell_builds_fp8_and_recipes_are_checked(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    model = tiny_model("llama")
    fp8 = tmp_path / "fp8.yaml"
    fp8.write_text(f"model: {{id: {model}}}\nrecipe: {{quantization: fp8_kv, max_seq_len: 128}}\n")
    res, _ = build(run_cli, fp8, tmp_path, env={"STANDIN_GPUS": B200})
    assert res.returncode == 0, res.stderr
    wo = tmp_path / "wo.yaml"
    wo.write_text(f"model: {{id: {model}}}\nrecipe: {{quantization: int8_weight_only, max_seq_len: 128}}\n")
    plan = run_cli("plan", str(wo), env={"STANDIN_GPUS": B200})
    assert "preflight error: GPU 0 (NVIDIA B200) has compute capability 10.0" in plan.stdout
    # compute capability 12.x (RTX 50 series) is not refused
    plan = run_cli("plan", str(wo), env={"STANDIN_GPUS": "NVIDIA GeForce RTX 5090:12.0:32607"})
    assert "preflight error" not in plan.stdout, plan.stdout


def test_int8_kv_cache_and_paged_context_fmha(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    model = tiny_model("llama")
    cfg = config(tmp_path, model, convert=", int8_kv_cache: true", build=", use_paged_context_fmha: enable")
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2
    assert (
        "step `build`: `use_paged_context_fmha: enable` has no effect with the INT8 KV cache of `--int8_kv_cache` "
        "(step `convert`): the builder turns paged context FMHA off for an INT8 KV cache" in res.stderr
    )
    cfg = config(tmp_path, model, convert=", int8_kv_cache: true", build=", max_input_len: 256, max_num_tokens: 128")
    res = run_cli("plan", str(cfg))
    assert (
        res.returncode == 2 and "but the INT8 KV cache of `--int8_kv_cache` (step `convert`) turns it off" in res.stderr
    )
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model: {{id: {model}}}\nrecipe: {{quantization: int8_kv, max_input_len: 256, max_seq_len: 512, "
        "max_num_tokens: 128}\n"
    )
    res = run_cli("plan", str(recipe))
    assert res.returncode == 2 and "the INT8 KV cache of `quantization: int8_kv` turns it off" in res.stderr
    # without max_num_tokens < max_input_len an INT8 KV cache builds
    ok = config(tmp_path, model, convert=", int8_kv_cache: true")
    res, _ = build(run_cli, ok, tmp_path)
    assert res.returncode == 0, res.stderr


def test_multi_line_smoke_test_output_is_recorded_whole(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = config(tmp_path, tiny_model("llama"), convert=", tp_size: 2", tail=SMOKE)
    text = 'Sure. Here is a list:\\n1. "one"\\n2. two'
    res, out = build(run_cli, cfg, tmp_path, env={"STANDIN_OUTPUT_TEXT": text})
    assert res.returncode == 0, res.stderr
    smoke = json.loads(read_member(out, "manifest.json"))["smoke_test"]
    assert smoke["output"] == 'Sure. Here is a list:\n1. "one"\n2. two'
    assert smoke["outputs"] == [{"text": 0, "beam": 0, "output": smoke["output"]}]


def test_run_output_parsing() -> None:
    from trtllm_builder.outputs.serving import parse_run_outputs

    lines = [
        "[TensorRT-LLM][INFO] Engine version 1.2.1 found in the config file",
        'Input [Text 0]: "hi"',
        'Output [Text 0 Beam 0]: "one line"',
        'Output [Text 0 Beam 1]: "two',
        'lines "quoted""',
        "/opt/x.py:3: UserWarning: a warning after the text",  # not part of the text
        'Input [Text 1]: "next"',
        'Output [Text 1 Beam 0]: "never closed',
    ]
    assert parse_run_outputs(lines) == [
        {"text": 0, "beam": 0, "output": "one line"},
        {"text": 0, "beam": 1, "output": 'two\nlines "quoted"'},
    ]


def test_triton_repository_carries_the_managed_weights(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    # the runtime loads rank<N>_managed_weights.safetensors from beside rank<N>.engine: in a Triton
    # repository that is tensorrt_llm/1/, so they must be packed there too
    cfg = config(tmp_path, tiny_model("llama"), build=", fast_build: true", tail="output: {format: triton}\n")
    res, out = build(run_cli, cfg, tmp_path)
    assert res.returncode == 0, res.stderr
    names = members(out)
    assert {"tensorrt_llm/1/rank0.engine", "tensorrt_llm/1/rank0_managed_weights.safetensors"} <= set(names)
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 0, inspected.stdout + inspected.stderr
