"""Preflight: GPUs, compute capability and disk against the plan, before any download."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import namedtuple
from collections.abc import Callable
from pathlib import Path

import hubserver
import pytest
from conftest import TRTLLM_DIR
from hubserver import HubServer

from trtllm_builder.config.schema import load_config
from trtllm_builder.errors import PreflightError
from trtllm_builder.fetch.preflight import Finding, check_machine, plan_needs, preflight, raise_for_errors
from trtllm_builder.plan.gpu import GpuInfo
from trtllm_builder.plan.planner import Plan, make_plan
from trtllm_builder.plan.tree import TrtllmTree

hub_server = hubserver.hub_server  # the fixture

ROOT = Path(__file__).resolve().parent.parent
TREE = TrtllmTree(TRTLLM_DIR.resolve())
GIB = 1 << 30
A100 = GpuInfo(0, "NVIDIA A100-SXM4-80GB", "8.0", 81920)
L40S = GpuInfo(0, "NVIDIA L40S", "8.9", 46068)
H100 = GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 81559)


def _plan(convert_args: str, build_args: str = "{max_batch_size: 8}", *, example: str = "llama",
          script: str = "convert_checkpoint.py", step_example: str | None = None) -> Plan:  # fmt: skip
    ex = f", example: {step_example}" if step_example else ""
    text = f"""\
model: {{id: org/model}}
trtllm: {{example: {example}}}
steps:
  - {{name: convert, script: {script}{ex}, args: {convert_args}}}
  - {{name: build, command: trtllm-build, args: {build_args}}}
"""
    return make_plan(load_config(text), TREE, Path("/tmp/pf-work"), which=lambda c: f"/usr/bin/{c}")


def _errors(findings: list[Finding]) -> list[str]:
    return [f.message for f in findings if f.level == "error"]


# --- what a plan needs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "example", "world", "source"),
    [
        ("{dtype: float16}", "llama", 1, "no tp_size/pp_size given: one GPU"),
        ("{tp_size: 2, pp_size: 2}", "llama", 4, "tp_size 2 x pp_size 2 in step `convert`"),
        ("{tp_size: 2, cp_size: 2}", "llama", 4, "tp_size 2 x pp_size 1 x cp_size 2 in step `convert`"),
        ("{ckpt-type: hf, world-size: 4}", "gemma", 4, "tp_size 4 x pp_size 1 in step `convert`"),
    ],
)
def test_world_size_from_the_args(args: str, example: str, world: int, source: str) -> None:
    needs = plan_needs(_plan(args, example=example))
    assert (needs.world_size, needs.world_from) == (world, source)
    assert needs.outputs == 2


def test_fp8_and_fp4_uses_are_found() -> None:
    assert plan_needs(_plan("{qformat: fp8}", script="quantize.py", step_example="quantization")).fp8 == (
        "step `convert`: `--qformat fp8`"
    )
    assert plan_needs(_plan("{use_fp8: true}")).fp8 == "step `convert`: `--use_fp8`"
    assert plan_needs(_plan("{}", "{gemm_swiglu_plugin: fp8}")).fp8 == "step `build`: `--gemm_swiglu_plugin fp8`"
    assert plan_needs(_plan("{use_nvfp4: true}")).fp4 == "step `convert`: `--use_nvfp4`"
    assert plan_needs(_plan("{use_weight_only: true}")).fp8 is None


B200 = GpuInfo(0, "NVIDIA B200", "10.0", 183359)
RTX5090 = GpuInfo(0, "NVIDIA GeForce RTX 5090", "12.0", 32607)


@pytest.mark.parametrize(
    ("convert", "kwargs", "refused"),
    [
        ("{use_weight_only: true}", {}, ["step `convert`: `--use_weight_only` (INT8/INT4 weight-only)"]),
        ("{int8_kv_cache: true}", {}, ["step `convert`: `--int8_kv_cache` (an INT8 KV cache)"]),
        (
            "{smoothquant: 0.5, per_channel: true}",
            {},
            ["step `convert`: `--smoothquant 0.5` (SmoothQuant)", "step `convert`: `--per_channel` (per-channel scaling)"],
        ),
        ("{use_fp8_rowwise: true}", {}, ["step `convert`: `--use_fp8_rowwise` (per-channel/per-token (FP8 rowwise) scaling)"]),
        ("{qformat: int4_awq}", {"script": "quantize.py", "step_example": "quantization"},
         ["step `convert`: `--qformat int4_awq` (INT8/INT4 weight-only)"]),
        ("{qformat: int8_sq}", {"script": "quantize.py", "step_example": "quantization"},
         ["step `convert`: `--qformat int8_sq` (SmoothQuant)"]),
        ("{qformat: fp8, kv_cache_dtype: int8}", {"script": "quantize.py", "step_example": "quantization"},
         ["step `convert`: `--kv_cache_dtype int8` (an INT8 KV cache)"]),
        ("{ckpt-type: hf, weight_only_precision: int8}", {"example": "gemma"},
         ["step `convert`: `--weight_only_precision int8` (INT8/INT4 weight-only)"]),
        ("{weight_only_precision: int8}", {}, []),  # without --use_weight_only the llama converter ignores it
        ("{qformat: w4a8_awq}", {"script": "quantize.py", "step_example": "quantization"}, []),
        ("{use_fp8: true, fp8_kv_cache: true}", {}, []),
        ("{qformat: nvfp4}", {"script": "quantize.py", "step_example": "quantization"}, []),
    ],
)  # fmt: skip
def test_what_blackwell_refuses_is_found(convert: str, kwargs: dict[str, str], refused: list[str]) -> None:
    assert list(plan_needs(_plan(convert, **kwargs)).sm100_refused) == refused


def test_blackwell_refusal_names_the_gpu_and_what_works() -> None:
    plan = _plan("{use_weight_only: true, weight_only_precision: int4}")
    (error,) = _errors(preflight(plan, gpus=[H100, GpuInfo(1, "NVIDIA B200", "10.0", 183359)], model_bytes=None,
                                 free_disk=None))  # fmt: skip
    assert error.startswith("GPU 1 (NVIDIA B200) has compute capability 10.0, and on 10.x-11.x (Blackwell)")
    assert "the plan uses step `convert`: `--use_weight_only` (INT8/INT4 weight-only)" in error
    assert "use fp8 instead (`qformat: fp8`" in error and "nvfp4 (`qformat: nvfp4`)" in error
    assert _errors(preflight(plan, gpus=[H100], model_bytes=None, free_disk=None)) == []
    assert _errors(preflight(plan, gpus=[RTX5090], model_bytes=None, free_disk=None)) == []  # 12.x builds it
    assert _errors(preflight(_plan("{dtype: float16}"), gpus=[B200], model_bytes=None, free_disk=None)) == []


# --- findings -----------------------------------------------------------------------------------------


def test_no_gpu() -> None:
    found = preflight(_plan("{tp_size: 2}"), gpus=[], model_bytes=GIB, free_disk=100 * GIB)
    assert _errors(found) == [
        "no GPU found (nvidia-smi lists none): a build needs 2 (tp_size 2 x pp_size 1 in step `convert`); run it on "
        "a machine with NVIDIA GPUs and drivers"
    ]


def test_world_size_beyond_the_gpus() -> None:
    found = preflight(_plan("{tp_size: 4, pp_size: 2}"), gpus=[A100, A100], model_bytes=GIB, free_disk=100 * GIB)
    assert _errors(found) == [
        "the plan needs 8 GPUs (tp_size 4 x pp_size 2 in step `convert`) but this machine has 2 (2 x NVIDIA "
        "A100-SXM4-80GB (compute capability 8.0)): lower tensor_parallel/pipeline_parallel (tp_size/pp_size) to "
        "fit, or use a machine with 8 GPUs"
    ]
    assert preflight(_plan("{tp_size: 2}"), gpus=[A100, A100], model_bytes=GIB, free_disk=100 * GIB) == []


@pytest.mark.parametrize(("gpus", "ok"), [([A100], False), ([L40S], True), ([H100], True), ([H100, A100], False)])
def test_fp8_needs_compute_capability_8_9(gpus: list[GpuInfo], ok: bool) -> None:
    plan = _plan("{qformat: fp8, kv_cache_dtype: fp8}", script="quantize.py", step_example="quantization")
    errors = _errors(preflight(plan, gpus=gpus, model_bytes=GIB, free_disk=100 * GIB))
    if ok:
        assert errors == []
    else:
        assert errors == [
            "FP8 (step `convert`: `--qformat fp8`) needs compute capability >= 8.9, but GPU 0 (NVIDIA A100-SXM4-80GB) "
            "has 8.0: use int8_weight_only, int4_awq or smooth_quant; or an L4, L40S or H100"
        ]


def test_fp4_needs_blackwell() -> None:
    errors = _errors(preflight(_plan("{use_nvfp4: true}"), gpus=[H100], model_bytes=GIB, free_disk=100 * GIB))
    assert errors == [
        "FP4 (step `convert`: `--use_nvfp4`) needs compute capability >= 10.0, but GPU 0 (NVIDIA H100 80GB HBM3) has "
        "9.0: use fp8 or int4_awq; or a Blackwell GPU"
    ]


def test_disk_shortfall_shows_the_numbers() -> None:
    plan = _plan("{}")
    found = preflight(plan, gpus=[H100], model_bytes=10 * GIB, free_disk=25 * GIB, disk_path=Path("/data"))
    assert _errors(found) == [
        "not enough disk: the build needs about 30.0 GiB at its peak (10.0 GiB of model files x the download + "
        "2 outputs on disk at once: step outputs and the archive, each counted at the model's size), but only "
        "25.0 GiB are free in /data: free some space, or point the work dir (--work-dir) and the cache "
        "(--cache-dir) at a larger disk"
    ]
    assert preflight(plan, gpus=[H100], model_bytes=10 * GIB, free_disk=25 * GIB, needs_download=False) == []


def test_unknown_size_and_extra_workers_are_warnings() -> None:
    found = preflight(_plan("{}", "{workers: 4}"), gpus=[H100], model_bytes=None, free_disk=None)
    assert [f.level for f in found] == ["warning", "warning"]
    assert "`--workers 4` builds on 4 GPUs but this machine has 1" in found[0].message
    raise_for_errors(found)  # warnings never stop a build


def test_raise_for_errors_lists_them_all() -> None:
    with pytest.raises(PreflightError) as err:
        raise_for_errors([Finding("error", "one"), Finding("warning", "w"), Finding("error", "two")])
    assert err.value.exit_code == 2
    assert str(err.value).endswith("nothing was downloaded or built):\n  - one\n  - two")


# --- the machine's numbers ------------------------------------------------------------------------------


def test_check_machine_reads_gpus_from_nvidia_smi(standin_env: dict[str, str], tiny_model: Callable[..., Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.setenv("STANDIN_GPUS", "NVIDIA L4:8.9:23034")
    model = tiny_model("llama")
    text = f"model: {{id: {model}}}\ntrtllm: {{example: llama}}\nsteps:\n" \
           "  - {name: convert, script: convert_checkpoint.py, args: {tp_size: 2}}\n" \
           "  - {name: build, command: trtllm-build}\n"  # fmt: skip
    plan = make_plan(load_config(text), TREE, Path(standin_env["TMPDIR"]) / "work")
    found = check_machine(plan, cache_dir=Path(standin_env["TRTLLM_BUILDER_CACHE"]))
    assert [f.message.split(":")[0] for f in found] == [
        "the plan needs 2 GPUs (tp_size 2 x pp_size 1 in step `convert`) but this machine has 1 "
        "(NVIDIA L4 (compute capability 8.9))"
    ]


def test_check_machine_sizes_an_hf_model_from_metadata_only(standin_env: dict[str, str], hub_server: HubServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    weights = b"\0" * 300_000
    hub_server.add_repo("org/model", {"config.json": b"{}", "model.safetensors": weights})
    plan = _plan("{}")
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 0, 500_000))
    found = check_machine(plan, cache_dir=Path(standin_env["TRTLLM_BUILDER_CACHE"]), gpus=[H100])
    (error,) = _errors(found)
    assert error.startswith("not enough disk: the build needs about 0.0 GiB")
    assert "x the download + 2 outputs on disk at once" in error
    assert hub_server.file_gets() == []  # sized from the API, nothing downloaded


def test_check_machine_without_network_warns(standin_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    found = check_machine(_plan("{}"), cache_dir=Path(standin_env["TRTLLM_BUILDER_CACHE"]), gpus=[H100])
    (warning,) = found
    assert warning.level == "warning" and warning.message.startswith("cannot tell the model's size ahead (cannot reach")


# --- plan reports, build refuses ----------------------------------------------------------------------

TP2 = """\
model: {{id: {model}}}
trtllm: {{example: llama}}
steps:
  - {{name: convert, script: convert_checkpoint.py, args: {{dtype: float16, tp_size: 2}}}}
  - {{name: build, command: trtllm-build, args: {{max_batch_size: 4, max_seq_len: 128}}}}
"""


def _steps_run(log: Path) -> list[str]:
    """Stand-in invocations other than the parser reads (``--help``)."""
    if not log.exists():
        return []
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return [r["script"] for r in records if r["argv"] != ["--help"] and r["script"] != "nvidia-smi"]


def test_without_gpus_plan_reports_and_build_refuses_in_seconds(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    standin_env: dict[str, str],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "tp2.yaml"
    cfg.write_text(TP2.format(model=tiny_model("llama")))
    plan = run_cli("plan", str(cfg), env={"STANDIN_GPUS": "none"})
    assert plan.returncode == 0, plan.stderr
    assert "preflight error: no GPU found (nvidia-smi lists none): a build needs 2 (tp_size 2 x pp_size 1 in step " \
           "`convert`)" in plan.stdout  # fmt: skip

    t0 = time.monotonic()
    build = run_cli("build", str(cfg), "-o", str(tmp_path / "e.tar.gz"), env={"STANDIN_GPUS": "none"})
    assert time.monotonic() - t0 < 10
    assert build.returncode == 2
    assert (
        "error: this machine cannot run the plan (nothing was downloaded or built):\n  - no GPU found" in build.stderr
    )
    assert _steps_run(Path(standin_env["STANDIN_LOG"])) == []
    assert not (tmp_path / "e.tar.gz").exists()


def test_build_refuses_fp8_on_ampere_and_runs_on_hopper(
    run_cli: Callable[..., subprocess.CompletedProcess[str]],
    standin_env: dict[str, str],
    tiny_model: Callable[..., Path],
    tmp_path: Path,
) -> None:
    cfg = tmp_path / "fp8.yaml"
    cfg.write_text(f"model: {{id: {tiny_model('llama')}}}\nrecipe: {{quantization: fp8_kv, max_seq_len: 128}}\n")
    refused = run_cli("build", str(cfg), "-o", str(tmp_path / "a.tar.gz"))  # default stand-in GPUs: 2 x A100
    assert refused.returncode == 2
    assert "FP8 (step `quantize`: `--qformat fp8`) needs compute capability >= 8.9, but GPU 0 (NVIDIA " \
           "A100-SXM4-80GB) has 8.0" in refused.stderr  # fmt: skip
    assert _steps_run(Path(standin_env["STANDIN_LOG"])) == []

    built = run_cli("build", str(cfg), "-o", str(tmp_path / "h.tar.gz"),
                    env={"STANDIN_GPUS": "NVIDIA H100 80GB HBM3:9.0:81559"})  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert _steps_run(Path(standin_env["STANDIN_LOG"])) == ["quantize.py", "trtllm-build"]
