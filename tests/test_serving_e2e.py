"""Serving-ready outputs through the real CLI: Triton repository, smoke test, upload, inspect."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import boto3
import pytest
from conftest import BACKENDS, CliRun
from google.protobuf import text_format
from test_pipeline_e2e import project_config, unpack
from test_triton import remove_block
from test_triton_load import ALL, no_tokenizer_class, triton_load
from test_upload import start_moto, stop
from tritonclient.grpc import model_config_pb2

from trtllm_builder.outputs import pbtxt
from trtllm_builder.outputs.triton import find_templates
from trtllm_builder.package.archive import write_archive

AWS = {
    "AWS_ACCESS_KEY_ID": "AKIAE2ETESTKEY",
    "AWS_SECRET_ACCESS_KEY": "e2e-secret-never-logged",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    proc, endpoint = start_moto()
    try:
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            **{k.lower(): v for k, v in AWS.items() if k != "AWS_DEFAULT_REGION"},
            region_name="us-east-1",
        ).create_bucket(Bucket="engines")
        yield endpoint
    finally:
        stop(proc)


TRITON = """\
output:
  format: triton
  triton: {decoupled: true, max_queue_delay_microseconds: 100, mount_path: /opt/ml/model, kv_cache_free_gpu_mem_fraction: 0.9}
"""


def test_triton_repository_with_smoke_test(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    smoke = 'smoke_test: {prompt: "The capital of France is", max_output_len: 8}\n'
    cfg = project_config(tmp_path, tiny_model("llama"), "llama", tp=2, extra_steps=TRITON + smoke)
    out = tmp_path / "repo.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out))
    assert res.returncode == 0, res.stderr
    x = tmp_path / "x"
    manifest = unpack(out, x)
    for model in ("preprocessing", "postprocessing", "tensorrt_llm", "ensemble", "tensorrt_llm_bls"):
        text = (x / model / "config.pbtxt").read_text()
        assert pbtxt.placeholders(text) == []  # none left outside comments
        text_format.Parse(text, model_config_pb2.ModelConfig())
    assert sorted(p.name for p in (x / "tensorrt_llm" / "1").iterdir() if p.suffix in {".engine", ".json"}) == [
        "config.json",
        "rank0.engine",
        "rank1.engine",
    ]
    assert (x / "tensorrt_llm" / "tokenizer" / "tokenizer.json").is_file()
    assert (x / "tensorrt_llm" / "tokenizer" / "config.json").is_file()  # AutoTokenizer may need it
    assert manifest["output"]["triton"]["cpp_reads"] == [
        "gpt_model_type",
        "guided_decoding_backend",
        "tokenizer_dir",
        "xgrammar_tokenizer_info_path",
    ]
    llm = (x / "tensorrt_llm" / "config.pbtxt").read_text()
    assert '"/opt/ml/model/tensorrt_llm/1"' in llm and "decoupled: true" in llm
    assert "max_batch_size: 4" in llm  # from the engine's own build_config
    # the smoke test ran both ranks under mpirun, its output is in the logs and the manifest
    assert "/mpirun -n 2 --allow-run-as-root " in res.stderr and "run.py --engine_dir" in res.stderr
    assert manifest["smoke_test"]["world_size"] == 2 and manifest["smoke_test"]["output"]
    assert f'Output [Text 0 Beam 0]: "{manifest["smoke_test"]["output"]}"' in res.stderr


@pytest.mark.parametrize(("version", "decoupled"), [("v0.18.2", False), ("v0.19.0", True)])
def test_triton_repository_from_the_backend_templates_loads_and_inspects(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], version: str, decoupled: bool
) -> None:
    model = no_tokenizer_class(tiny_model("llama"))
    triton = f"output:\n  format: triton\n  triton: {{decoupled: {str(decoupled).lower()}}}\n"
    cfg = project_config(tmp_path, model, "llama", tp=2, extra_steps=triton)
    out = tmp_path / "repo.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out), "--backend-dir", str(BACKENDS[version]))
    assert res.returncode == 0, res.stderr
    x = tmp_path / "x"
    unpack(out, x)
    (x / "manifest.json").unlink()  # Triton would ignore a file at the root; the stand-in loader wants folders
    templates = find_templates(BACKENDS[version])
    assert triton_load((x, templates)) == [{"loaded": ALL, "failed": {}}]
    inspected = run_cli("inspect", str(out))
    assert inspected.returncode == 0, inspected.stdout
    assert "Triton repository: ok" in inspected.stdout


def test_inspect_runs_the_triton_verifier(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("gpt2"), "gpt", extra_steps="output:\n  format: triton\n")
    out = tmp_path / "repo.tar.gz"
    assert run_cli("build", str(cfg), "-o", str(out)).returncode == 0
    x = tmp_path / "x"
    manifest = unpack(out, x)
    # a repository that is intact against its manifest but would not load: repack with a fresh manifest
    remove_block(x / "preprocessing" / "config.pbtxt", "multimodal_model_path")
    (x / "manifest.json").unlink()
    members = sorted((p.relative_to(x).as_posix(), p) for p in x.rglob("*") if p.is_file())
    bad = tmp_path / "bad.tar.gz"
    write_archive(members, bad, {**manifest, "files": []}, log=lambda line: None)
    res = run_cli("inspect", str(bad))
    assert res.returncode == 1
    assert "integrity: ok" in res.stdout and "Triton repository: NOT LOADABLE" in res.stdout
    assert "no parameter `multimodal_model_path`" in res.stdout and "KeyError" in res.stdout
    assert "verdict: NOT OK: Triton would not load this repository" in res.stdout


BATCH_PLAN = """\
model:
  id: {model}
trtllm:
  example: gpt
steps:
  - name: convert
    script: convert_checkpoint.py
    args: {{dtype: float16}}
  - name: build
    command: trtllm-build
    args: {{gemm_plugin: auto, max_seq_len: 256{build}}}
output:
  format: triton
  triton: {{triton_max_batch_size: {triton}}}
"""


@pytest.mark.parametrize(
    ("build", "triton", "message"),
    [
        (", max_batch_size: 4", 8, "exceeds the engine's max_batch_size 4 (step `build` passes --max_batch_size 4)"),
        ("", 4096, "exceeds the engine's max_batch_size 2048 (the default --max_batch_size of trtllm-build"),
    ],
)
def test_triton_batch_size_is_checked_against_the_build_at_plan_time(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], build: str, triton: int, message: str
) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(BATCH_PLAN.format(model=tiny_model("gpt2"), build=build, triton=triton))
    for argv in (["plan", str(cfg)], ["build", str(cfg), "-o", str(tmp_path / "x.tar.gz")]):
        res = run_cli(*argv)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr
    ran = [json.loads(line) for line in (tmp_path / "standin.log").read_text().splitlines()]
    assert not any("--output_dir" in r["argv"] for r in ran)  # no step ran
    # the same triton_max_batch_size within the build's is accepted
    cfg.write_text(BATCH_PLAN.format(model=tiny_model("gpt2", name="m2"), build=", max_batch_size: 8", triton=8))
    assert run_cli("plan", str(cfg)).returncode == 0


def test_failing_smoke_test_fails_the_build(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    cfg = project_config(tmp_path, tiny_model("gpt2"), "gpt", extra_steps='smoke_test: {prompt: "hi"}\n')
    out = tmp_path / "e.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out), env={"STANDIN_FAIL": "run.py:4"})
    assert res.returncode == 1
    assert "step `smoke_test` exited with code 4" in res.stderr and "last " in res.stderr
    assert not out.exists()


def test_unknown_triton_option_is_caught_by_plan(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]
) -> None:
    cfg = project_config(
        tmp_path, tiny_model("gpt2"), "gpt", extra_steps="output:\n  format: triton\n  triton: {decoupld: true}\n"
    )
    res = run_cli("plan", str(cfg))
    assert res.returncode == 2 and "decoupld" in res.stderr and "decoupled" in res.stderr


def test_upload_to_s3(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], s3_endpoint: str) -> None:
    cfg = project_config(
        tmp_path, tiny_model("gpt2"), "gpt", extra_steps="output:\n  upload: s3://engines/builds/gpt2\n"
    )
    out = tmp_path / "engine.tar.gz"
    res = run_cli("build", str(cfg), "-o", str(out), env={**AWS, "AWS_ENDPOINT_URL_S3": s3_endpoint})
    assert res.returncode == 0, res.stderr
    archive_line, url_line = res.stdout.strip().splitlines()
    assert archive_line == str(out) and url_line == "s3://engines/builds/gpt2/engine.tar.gz"
    body = (
        boto3.client(
            "s3",
            endpoint_url=s3_endpoint,
            aws_access_key_id=AWS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
        )
        .get_object(Bucket="engines", Key="builds/gpt2/engine.tar.gz")["Body"]
        .read()
    )
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(out.read_bytes()).hexdigest()
    with tarfile.open(out) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest["upload"] == {"url": "s3://engines/builds/gpt2"}
    assert AWS["AWS_SECRET_ACCESS_KEY"] not in res.stdout + res.stderr


def test_failed_upload_keeps_the_archive(
    run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path], s3_endpoint: str
) -> None:
    cfg = project_config(tmp_path, tiny_model("gpt2"), "gpt")
    out = tmp_path / "engine.tar.gz"
    res = run_cli(
        "build",
        str(cfg),
        "-o",
        str(out),
        "--upload",
        "s3://no-such-bucket/x",
        env={**AWS, "AWS_ENDPOINT_URL_S3": s3_endpoint},
    )
    assert res.returncode == 1
    assert "the local archive is kept at" in res.stderr and str(out) in res.stderr
    assert out.is_file()
    unpack(out, tmp_path / "x")  # intact


def test_inspect_names_a_tampered_file(run_cli: CliRun, tmp_path: Path, tiny_model: Callable[..., Path]) -> None:
    out = tmp_path / "engine.tar.gz"
    assert run_cli("build", str(project_config(tmp_path, tiny_model("gpt2"), "gpt")), "-o", str(out)).returncode == 0
    ok = run_cli("inspect", str(out))
    assert ok.returncode == 0 and "integrity: ok" in ok.stdout
    x = tmp_path / "x"
    unpack(out, x)
    (x / "rank0.engine").write_bytes(b"tampered" + (x / "rank0.engine").read_bytes()[8:])
    bad = tmp_path / "bad.tar.gz"
    subprocess.run(
        [
            "tar",
            "-czf",
            str(bad),
            "-C",
            str(x),
            *sorted(p.name for p in x.iterdir() if p.name != "manifest.json"),
            "manifest.json",
        ],
        check=True,
    )
    res = run_cli("inspect", str(bad))
    assert res.returncode == 1 and "rank0.engine" in res.stdout
    mismatch = run_cli("inspect", str(out), env={"STANDIN_GPUS": "NVIDIA H100 80GB HBM3:9.0:81559"})
    assert "9.0" in mismatch.stdout and "8.0" in mismatch.stdout
