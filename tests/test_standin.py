"""The stand-in TensorRT-LLM tree behaves like the real interfaces (run as real subprocesses)."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from modelgen import make_tiny_model

STANDIN = Path(__file__).parent / "standin"
TREE = STANDIN / "TensorRT-LLM"
BIN = STANDIN / "bin"
EX = TREE / "examples"
CORE = EX / "models" / "core"
BANNER = "[TensorRT-LLM] TensorRT-LLM version: 0.21.0"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STANDIN_", "OMPI_"))}
    env["PATH"] = os.pathsep.join([str(BIN), str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def run(argv: list[str | Path], *, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, env=_env(**env), cwd=cwd, timeout=60)


def py(script: Path, *args: str | Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, script, *args], **env)


def st_header(path: Path) -> dict:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {a: make_tiny_model(root / a, a) for a in ("gpt2", "llama")}


@pytest.fixture(scope="module")
def llama_tp2(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt") / "tp2"
    r = py(
        CORE / "llama/convert_checkpoint.py",
        "--model_dir",
        models["llama"],
        "--output_dir",
        out,
        "--tp_size",
        "2",
        "--dtype",
        "float16",
    )
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="module")
def engine_tp2(llama_tp2: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("engine") / "tp2"
    r = run(
        ["trtllm-build", "--checkpoint_dir", llama_tp2, "--output_dir", out, "--gemm_plugin", "auto"],
        STANDIN_ENGINE_BYTES="10000",
    )
    assert r.returncode == 0, r.stderr
    return out


def test_layout_exists() -> None:
    for fam in ("gpt", "llama", "qwen", "phi", "gemma"):
        for name in ("convert_checkpoint.py", "README.md", "requirements.txt"):
            assert (CORE / fam / name).is_file()
    assert sorted(p.name for p in (CORE / "mixtral").iterdir()) == ["README.md"]
    for rel in (
        "quantization/quantize.py",
        "run.py",
        "utils.py",
        "gpt/convert_checkpoint.py",
        "llama/convert_checkpoint.py",
        "gpt/hf_gpt_convert.py",
        "gpt/build.py",
    ):
        assert (EX / rel).is_file(), rel
    assert '__version__ = "0.21.0"' in (TREE / "tensorrt_llm/version.py").read_text()
    for exe in ("trtllm-build", "mpirun", "nvidia-smi"):
        assert os.access(BIN / exe, os.X_OK)


def test_banner_precedes_help() -> None:
    r = py(CORE / "llama/convert_checkpoint.py", "--help")
    assert r.returncode == 0
    assert r.stdout.splitlines()[0] == BANNER
    assert "--weight_only_precision [{int8,int4,int8_gptq,int4_gptq,int4_awq}]" in r.stdout
    r = py(CORE / "gemma/convert_checkpoint.py", "--help")
    assert r.stdout.splitlines()[0] == BANNER and "--ckpt-type" in r.stdout and "--world-size" in r.stdout


def test_converter_tp2_layout(llama_tp2: Path) -> None:
    cfg = json.loads((llama_tp2 / "config.json").read_text())
    assert cfg["architecture"] == "LlamaForCausalLM" and cfg["dtype"] == "float16"
    assert cfg["mapping"]["world_size"] == 2 and cfg["mapping"]["tp_size"] == 2
    assert cfg["quantization"]["quant_algo"] is None
    assert cfg["max_position_embeddings"] == 256
    assert sorted(p.name for p in llama_tp2.iterdir()) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    from safetensors.numpy import load_file

    tensors = load_file(llama_tp2 / "rank1.safetensors")
    assert "lm_head.weight" in tensors and str(tensors["lm_head.weight"].dtype) == "float16"


def test_converter_errors(models: dict[str, Path], tmp_path: Path) -> None:
    r = py(CORE / "gpt/convert_checkpoint.py", "--model_dir", tmp_path / "nope", "--output_dir", tmp_path / "o")
    assert r.returncode == 1 and "is not a local folder" in r.stderr
    r = py(CORE / "gpt/convert_checkpoint.py", "--model_dir", models["gpt2"], "--weight_only_precision", "int4_awq")
    assert r.returncode == 2 and "invalid choice: 'int4_awq'" in r.stderr
    r = py(CORE / "qwen/convert_checkpoint.py", "--output_dir", tmp_path / "o")
    assert r.returncode == 2 and "--model_dir" in r.stderr


def test_subdir_control(models: dict[str, Path], tmp_path: Path) -> None:
    r = py(
        CORE / "gpt/convert_checkpoint.py",
        "--model_dir",
        models["gpt2"],
        "--output_dir",
        tmp_path,
        "--tp_size",
        "2",
        STANDIN_SUBDIR="convert_checkpoint.py",
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "2-gpu").iterdir()) == [
        "config.json",
        "rank0.safetensors",
        "rank1.safetensors",
    ]


def test_trtllm_build_rejects_bad_flags(llama_tp2: Path) -> None:
    r = run(["trtllm-build", "--checkpoint_dir", llama_tp2, "--max_output_len", "10"])
    assert r.returncode == 2
    assert r.stdout.splitlines()[0] == BANNER
    assert "trtllm-build: error: unrecognized arguments: --max_output_len 10" in r.stderr
    r = run(["trtllm-build", "--checkpoint_dir", llama_tp2, "--gemm_plugin", "fp9"])
    assert r.returncode == 2 and "argument --gemm_plugin: invalid choice: 'fp9'" in r.stderr
    r = run(["trtllm-build", "--max_batch_size", "two"])
    assert r.returncode == 2 and "argument --max_batch_size: invalid int value: 'two'" in r.stderr
    r = run(["trtllm-build", "--gemm_swiglu_plugin", "float16"])
    assert r.returncode == 2 and "(choose from 'fp8', 'disable')" in r.stderr


def test_trtllm_build_plugin_flags() -> None:
    out = run(["trtllm-build", "--help"]).stdout
    for flag in (
        "--gpt_attention_plugin",
        "--gemm_plugin",
        "--nccl_plugin",
        "--moe_plugin",
        "--lora_plugin",
        "--context_fmha",
        "--remove_input_padding",
        "--use_paged_context_fmha",
        "--multiple_profiles",
        "--paged_state",
        "--use_fused_mlp",
        "--reduce_fusion",
        "--tokens_per_block",
        "--max_seq_len",
        "--kv_cache_type",
        "--dry_run",
        "--logits_dtype",
        "--gather_context_logits",
    ):
        assert flag in out, flag
    assert "--gpt_attention_plugin {auto,float16,float32,bfloat16,int32,disable}" in out
    assert "--context_fmha {enable,disable}" in out
    assert "--max_output_len" not in out


def test_trtllm_build_outputs(engine_tp2: Path) -> None:
    names = sorted(p.name for p in engine_tp2.iterdir())
    assert names == ["config.json", "rank0.engine", "rank1.engine"]
    assert (engine_tp2 / "rank1.engine").stat().st_size == 10000
    cfg = json.loads((engine_tp2 / "config.json").read_text())
    assert cfg["version"] == "0.21.0"
    assert cfg["pretrained_config"]["mapping"]["world_size"] == 2
    bc = cfg["build_config"]
    assert bc["max_seq_len"] == 256 and bc["max_input_len"] == 256  # clipped from the 1024 default
    assert bc["plugin_config"]["gemm_plugin"] == "float16" and bc["plugin_config"]["context_fmha"] is True


def test_trtllm_build_needs_every_rank(llama_tp2: Path, tmp_path: Path) -> None:
    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("config.json", "rank0.safetensors"):
        (ck / name).write_bytes((llama_tp2 / name).read_bytes())
    r = run(["trtllm-build", "--checkpoint_dir", ck, "--output_dir", tmp_path / "e"])
    assert r.returncode == 1 and "rank1.safetensors" in r.stderr


def test_mpirun_runs_two_ranks(engine_tp2: Path, models: dict[str, Path]) -> None:
    argv = [
        sys.executable,
        EX / "run.py",
        "--engine_dir",
        engine_tp2,
        "--tokenizer_dir",
        models["llama"],
        "--max_output_len",
        "8",
        "--input_text",
        "hello there",
    ]
    r = run(["mpirun", "-n", "2", "--allow-run-as-root", *argv])
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(BANNER) == 2
    assert r.stdout.count('Input [Text 0]: "hello there"') == 1
    assert r.stdout.count("Output [Text 0 Beam 0]: ") == 1
    r = run(argv)  # one process for a two-rank engine
    assert r.returncode == 1 and "Engine world size (2) != Runtime world size (1)" in r.stderr
    r = run(["mpirun", "-n", "2", *argv])
    if os.geteuid() == 0:
        assert r.returncode == 1 and "--allow-run-as-root" in r.stderr
    r = run(["mpirun", "-n", "2", "--allow-run-as-root", *argv], STANDIN_FAIL="run.py:5")
    assert r.returncode == 5 and "Exit code:    5" in r.stderr


def test_nvidia_smi_formats() -> None:
    q = "--query-gpu=index,name,compute_cap,memory.total"
    r = run(["nvidia-smi", q, "--format=csv,noheader"])
    assert r.returncode == 0
    assert r.stdout.splitlines() == ["0, NVIDIA A100-SXM4-80GB, 8.0, 81920 MiB"] * 1 + [
        "1, NVIDIA A100-SXM4-80GB, 8.0, 81920 MiB"
    ]
    r = run(
        ["nvidia-smi", "--query-gpu=memory.total,name", "--format=csv,nounits"],
        STANDIN_GPUS="NVIDIA H100 80GB HBM3:9.0:81559",
    )
    assert r.stdout.splitlines() == ["memory.total [MiB], name", "81559, NVIDIA H100 80GB HBM3"]
    r = run(["nvidia-smi", q, "--format=csv,noheader,nounits"], STANDIN_GPUS="none")
    assert r.returncode == 9 and "couldn't communicate with the NVIDIA driver" in r.stdout
    r = run(["nvidia-smi", "--query-gpu=bogus", "--format=csv"])
    assert r.returncode == 2 and 'Field "bogus" is not a valid field to query.' in r.stdout


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def test_hang_control_writes_pids(llama_tp2: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pids"
    proc = subprocess.Popen(
        ["trtllm-build", "--checkpoint_dir", str(llama_tp2), "--output_dir", str(tmp_path / "e")],
        env=_env(STANDIN_HANG="trtllm-build", STANDIN_PIDFILE=str(pidfile)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(pidfile.read_text().split() if pidfile.exists() else []) < 2:
            time.sleep(0.02)
        pids = [int(p) for p in pidfile.read_text().split()]
        assert len(pids) == 2 and pids[0] == proc.pid
        assert all(_alive(p) for p in pids)
        assert os.getpgid(pids[1]) == proc.pid  # the grandchild shares the process group
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.02)
    assert not any(_alive(p) for p in pids)


def test_failure_controls(models: dict[str, Path], tmp_path: Path) -> None:
    conv = CORE / "gpt/convert_checkpoint.py"
    base = ["--model_dir", models["gpt2"], "--output_dir"]
    r = py(conv, *base, tmp_path / "f", STANDIN_FAIL="trtllm-build,convert_checkpoint.py:7")
    assert r.returncode == 7 and "Traceback (most recent call last)" in r.stderr
    assert not (tmp_path / "f").exists()
    r = py(conv, *base, tmp_path / "k", STANDIN_KILL="*")
    assert r.returncode == -signal.SIGKILL
    r = py(conv, *base, tmp_path / "e", STANDIN_EMPTY="convert_checkpoint")
    assert r.returncode == 0 and not (tmp_path / "e").exists()
    r = py(conv, *base, tmp_path / "p", "--tp_size", "2", STANDIN_PARTIAL="convert_checkpoint.py")
    assert r.returncode == 1 and "No space left on device" in r.stderr
    log = tmp_path / "log.jsonl"
    py(conv, "--help", STANDIN_LOG=str(log), HF_TOKEN="secret")
    record = json.loads(log.read_text())
    assert record == {"script": "convert_checkpoint.py", "argv": ["--help"], "cwd": os.getcwd(), "env_hf_token": True}


def test_garbage_control(models: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(CORE / "gpt/convert_checkpoint.py"),
            "--model_dir",
            str(models["gpt2"]),
            "--output_dir",
            str(tmp_path / "g"),
        ],
        capture_output=True,
        env=_env(STANDIN_GARBAGE="convert_checkpoint.py", STANDIN_GARBAGE_BYTES=str(1 << 20)),
        timeout=60,
    )
    assert proc.returncode == 0
    assert b"\x00" in proc.stdout and b"\x1b[" in proc.stdout
    assert max(len(line) for line in proc.stdout.split(b"\n")) >= 1 << 20
    try:
        proc.stdout.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # pragma: no cover
        pytest.fail("stdout should not be valid UTF-8")
    assert (tmp_path / "g" / "rank0.safetensors").is_file()


def test_old_style_pair(models: dict[str, Path], tmp_path: Path) -> None:
    r = py(
        EX / "gpt/hf_gpt_convert.py",
        "-i",
        models["gpt2"],
        "-o",
        tmp_path / "c-model",
        "--tensor-parallelism",
        "1",
        "--storage-type",
        "float16",
    )
    assert r.returncode == 0, r.stderr
    ft = tmp_path / "c-model" / "1-gpu"
    assert (ft / "config.ini").is_file() and (ft / "model.wte.bin").is_file()
    assert (ft / "model.layers.0.attention.query_key_value.weight.0.bin").is_file()
    r = py(
        EX / "gpt/build.py",
        "--model_dir",
        ft,
        "--output_dir",
        tmp_path / "eng",
        "--dtype",
        "float16",
        "--use_gpt_attention_plugin",
        "--remove_input_padding",
        "--max_output_len",
        "32",
    )
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "eng").iterdir()) == ["config.json", "gpt_float16_tp1_rank0.engine"]
    cfg = json.loads((tmp_path / "eng" / "config.json").read_text())
    assert cfg["builder_config"]["name"] == "gpt" and cfg["builder_config"]["tensor_parallel"] == 1
    assert cfg["plugin_config"]["gpt_attention_plugin"] == "float16"
    r = py(EX / "gpt/build.py", "--model_dir", tmp_path / "missing")
    assert r.returncode == 1 and "NoSectionError" in r.stderr


def test_quantize_sets_quant_algo(models: dict[str, Path], tmp_path: Path) -> None:
    r = py(
        EX / "quantization/quantize.py",
        "--model_dir",
        models["llama"],
        "--qformat",
        "fp8",
        "--kv_cache_dtype",
        "fp8",
        "--output_dir",
        tmp_path / "q",
    )
    assert r.returncode == 0, r.stderr
    q = json.loads((tmp_path / "q" / "config.json").read_text())["quantization"]
    assert (q["quant_algo"], q["kv_cache_quant_algo"]) == ("FP8", "FP8")
    assert (tmp_path / "q" / "rank0.safetensors").is_file()


def test_modelgen_variants(tmp_path: Path) -> None:
    d = make_tiny_model(tmp_path / "sharded", "mixtral", shards=2)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert json.loads((d / "config.json").read_text())["architectures"] == ["MixtralForCausalLM"]
    assert (d / "tokenizer.model").is_file() and not (d / "vocab.json").exists()
    d = make_tiny_model(tmp_path / "bin", "gpt2", safetensors=False, tokenizer=False)
    assert zipfile.is_zipfile(d / "pytorch_model.bin") and not (d / "tokenizer.json").exists()
    assert "transformer.wte.weight" in st_header(make_tiny_model(tmp_path / "st", "gpt2") / "model.safetensors")
