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
from standin_world import DEFAULT_RELEASE, OLD_RELEASE, RELEASES, STANDIN_TOOLS, bin_dir, standin_path, tree_dir

TREE = tree_dir(DEFAULT_RELEASE)
EX = TREE / "examples"
CORE = EX / "models" / "core"
OLD = tree_dir(OLD_RELEASE) / "examples"
BANNER = f"[TensorRT-LLM] TensorRT-LLM version: {DEFAULT_RELEASE}"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every stand-in from a scratch dir: trtllm-build writes its timing cache (model.cache) in the cwd."""
    monkeypatch.chdir(tmp_path)


def _env(release: str = DEFAULT_RELEASE, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STANDIN_", "OMPI_"))}
    env["PATH"] = standin_path(release)
    env.update(extra)
    return env


def run(
    argv: list[str | Path], *, cwd: Path | None = None, release: str = DEFAULT_RELEASE, **env: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=_env(release, **env), cwd=cwd, timeout=60
    )


def py(script: Path, *args: str | Path, release: str = DEFAULT_RELEASE, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, script, *args], release=release, **env)


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
        cwd=out.parent,  # its timing cache (model.cache) lands in the cwd
        STANDIN_ENGINE_BYTES="10000",
    )
    assert r.returncode == 0, r.stderr
    return out


def _scripts(release: str) -> list[str]:
    ex = tree_dir(release) / "examples"
    return sorted(p.relative_to(ex).as_posix() for p in ex.rglob("*.py"))


@pytest.mark.parametrize("release", RELEASES)
def test_layout_of_current_releases(release: str) -> None:
    """Exactly the scripts the release has, where it has them (converters only under models/core)."""
    core = [f"models/core/{fam}/convert_checkpoint.py" for fam in ("gemma", "gpt", "llama", "phi", "qwen")]
    assert _scripts(release) == sorted([*core, "quantization/quantize.py", "run.py", "utils.py"])
    ex = tree_dir(release) / "examples"
    for fam in ("gpt", "llama", "qwen", "phi", "gemma"):
        assert (ex / "models/core" / fam / "README.md").is_file()
    assert sorted(p.name for p in (ex / "models/core/mixtral").iterdir()) == ["README.md"]
    assert f'__version__ = "{release}"' in (tree_dir(release) / "tensorrt_llm/version.py").read_text()
    assert os.access(bin_dir(release) / "trtllm-build", os.X_OK)
    for exe in ("mpirun", "nvidia-smi"):
        assert os.access(STANDIN_TOOLS / exe, os.X_OK)


def test_layout_of_the_old_release() -> None:
    """0.7.1, cog-trt-llm's era: per-model build.py and hf_gpt_convert.py, and no trtllm-build yet."""
    assert _scripts(OLD_RELEASE) == ["gpt/build.py", "gpt/hf_gpt_convert.py", "llama/build.py"]
    assert not bin_dir(OLD_RELEASE).exists()


@pytest.mark.parametrize("release", [*RELEASES, OLD_RELEASE])
def test_every_script_claims_its_trees_version(release: str) -> None:
    ex = tree_dir(release) / "examples"
    scripts = [p for p in ex.rglob("*.py") if p.name != "utils.py"]
    for script in scripts:
        r = py(script, "--help", release=release)
        assert r.returncode == 0, (script, r.stderr)
        assert r.stdout.splitlines()[0] == f"[TensorRT-LLM] TensorRT-LLM version: {release}", script
    if bin_dir(release).exists():
        r = run(["trtllm-build", "--help"], release=release)
        assert r.stdout.splitlines()[0] == f"[TensorRT-LLM] TensorRT-LLM version: {release}"


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
    assert cfg["version"] == DEFAULT_RELEASE
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
        OLD / "gpt/hf_gpt_convert.py",
        "-i",
        models["gpt2"],
        "-o",
        tmp_path / "c-model",
        "--tensor-parallelism",
        "1",
        "--storage-type",
        "float16",
        release=OLD_RELEASE,
    )
    assert r.returncode == 0, r.stderr
    ft = tmp_path / "c-model" / "1-gpu"
    assert (ft / "config.ini").is_file() and (ft / "model.wte.bin").is_file()
    assert (ft / "model.layers.0.attention.query_key_value.weight.0.bin").is_file()
    r = py(
        OLD / "gpt/build.py",
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
        release=OLD_RELEASE,
    )
    assert r.returncode == 0, r.stderr
    # like the real one, build.py saves its timing cache into the output dir
    assert sorted(p.name for p in (tmp_path / "eng").iterdir()) == [
        "config.json",
        "gpt_float16_tp1_rank0.engine",
        "model.cache",
    ]
    cfg = json.loads((tmp_path / "eng" / "config.json").read_text())
    assert cfg["builder_config"]["name"] == "gpt" and cfg["builder_config"]["tensor_parallel"] == 1
    assert cfg["plugin_config"]["gpt_attention_plugin"] == "float16"
    r = py(OLD / "gpt/build.py", "--model_dir", tmp_path / "missing", release=OLD_RELEASE)
    assert r.returncode == 1 and "NoSectionError" in r.stderr


def test_old_llama_build_reads_the_hf_model(models: dict[str, Path], tmp_path: Path) -> None:
    """v0.7 llama/build.py reads the Hugging Face model itself: no conversion step, engines + timing cache out."""
    argv = ["--model_dir", models["llama"], "--output_dir", tmp_path / "eng", "--use_gpt_attention_plugin"]
    r = py(OLD / "llama/build.py", *argv, "--world_size", "2", "--tp_size", "2", release=OLD_RELEASE)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "eng").iterdir()) == [
        "config.json",
        "llama_float16_tp2_rank0.engine",
        "llama_float16_tp2_rank1.engine",
        "model.cache",
    ]
    cfg = json.loads((tmp_path / "eng" / "config.json").read_text())
    assert cfg["builder_config"]["name"] == "llama" and cfg["builder_config"]["tensor_parallel"] == 2
    assert cfg["plugin_config"]["gpt_attention_plugin"] == "float16"
    r = py(OLD / "llama/build.py", "--model_dir", models["llama"], "--output_dir", tmp_path / "e2", release=OLD_RELEASE)
    assert r.returncode == 1 and "LLaMa must use gpt attention plugin" in r.stderr
    r = py(OLD / "llama/build.py", *argv, "--tp_size", "2", release=OLD_RELEASE)
    assert r.returncode == 1 and "AssertionError" in r.stderr  # pp_size * tp_size must equal world_size


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


def test_trtllm_build_flags_differ_per_release() -> None:
    """0.21.0 still has the auto-parallel flags; 1.x removed them and marks the engine workflow legacy."""
    old = run(["trtllm-build", "--help"], release="0.21.0")
    new = run(["trtllm-build", "--help"], release="1.2.1")
    for flag in ("--auto_parallel", "--gpus_per_node", "--cluster_key"):
        assert flag in old.stdout and flag not in new.stdout
    assert "LEGACY WARNING: trtllm-build" in new.stderr and "LEGACY" not in old.stderr
    r = py(CORE / "llama/convert_checkpoint.py", "--help")
    assert "LEGACY WARNING: convert_checkpoint.py" in r.stderr and "FutureWarning" in r.stderr


def _convert(model: Path, out: Path, *args: str) -> Path:
    r = py(CORE / "llama/convert_checkpoint.py", "--model_dir", model, "--output_dir", out, *args)
    assert r.returncode == 0, r.stderr
    return out


def _build(ckpt: Path, out: Path, *args: str | Path, cwd: Path | None = None, **env: str):
    return run(["trtllm-build", "--checkpoint_dir", ckpt, "--output_dir", out, *args], cwd=cwd, **env)


def test_fast_build_writes_managed_weights_the_runtime_needs(llama_tp2: Path, models: dict[str, Path],
                                                             tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "fast"
    assert _build(llama_tp2, out, "--fast_build", cwd=tmp_path).returncode == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "rank0.engine",
        "rank0_managed_weights.safetensors",
        "rank1.engine",
        "rank1_managed_weights.safetensors",
    ]
    assert st_header(out / "rank1_managed_weights.safetensors")  # a real safetensors file
    assert json.loads((out / "config.json").read_text())["build_config"]["plugin_config"]["manage_weights"] is True
    argv = [sys.executable, EX / "run.py", "--engine_dir", out, "--tokenizer_dir", models["llama"],
            "--max_output_len", "4"]  # fmt: skip
    assert run(["mpirun", "-n", "2", "--allow-run-as-root", *argv]).returncode == 0
    (out / "rank1_managed_weights.safetensors").unlink()
    r = run(["mpirun", "-n", "2", "--allow-run-as-root", *argv])
    assert r.returncode == 1 and "rank1_managed_weights.safetensors: No such file or directory" in r.stderr


def test_lora_dirs_are_copied_into_the_engine(llama_tp2: Path, tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8, "target_modules": ["q_proj"]}')
    (adapter / "adapter_model.safetensors").write_bytes(b"\x08" + b"\0" * 7 + b"{}")
    out = tmp_path / "e"
    r = _build(llama_tp2, out, "--lora_plugin", "auto", "--lora_dir", adapter, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.relative_to(out).as_posix() for p in (out / "lora").rglob("*")) == [
        "lora/0",
        "lora/0/adapter_config.json",
        "lora/0/adapter_model.safetensors",
    ]
    lora = json.loads((out / "config.json").read_text())["build_config"]["lora_config"]
    assert lora["lora_dir"] == ["lora/0"]  # rewritten to the engine's own copy
    # without the LoRA plugin the dirs are ignored, like the real build_model
    plain = tmp_path / "plain"
    assert _build(llama_tp2, plain, "--lora_dir", adapter, cwd=tmp_path).returncode == 0
    assert not (plain / "lora").exists()
    r = _build(llama_tp2, tmp_path / "bad", "--lora_plugin", "auto", "--lora_dir", tmp_path / "none", cwd=tmp_path)
    assert r.returncode == 1 and "adapter_config.json" in r.stderr


def test_context_parallel_ranks_share_checkpoint_files(models: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _convert(models["llama"], tmp_path / "cp", "--tp_size", "2", "--cp_size", "2")
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "rank0.safetensors", "rank1.safetensors"]
    mapping = json.loads((ckpt / "config.json").read_text())["mapping"]
    assert (mapping["world_size"], mapping["tp_size"], mapping["cp_size"]) == (4, 2, 2)
    out = tmp_path / "e"
    r = _build(ckpt, out, cwd=tmp_path, STANDIN_GPUS=",".join(["NVIDIA H100 80GB HBM3:9.0:81559"] * 4))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("rank*")) == [f"rank{n}.engine" for n in range(4)]


BLACKWELL = "NVIDIA B200:10.0:183359"


@pytest.mark.parametrize(
    ("convert_args", "message"),
    [
        (
            ["--use_weight_only", "--weight_only_precision", "int8"],
            "INT8/INT4 quantization is not supported on SM>=100.",
        ),
        (
            ["--use_weight_only", "--weight_only_precision", "int4"],
            "INT8/INT4 quantization is not supported on SM>=100.",
        ),
        (["--int8_kv_cache"], "INT8/INT4 quantization is not supported on SM>=100."),
        (["--smoothquant", "0.5", "--per_token", "--per_channel"], "SmoothQuant is not supported on SM>=100."),
        (["--use_fp8_rowwise"], "Per-channel or per-token scaling is not supported on SM>=100."),
    ],
)
def test_blackwell_refuses_int8_int4_smoothquant_and_per_channel(
    convert_args: list[str], message: str, models: dict[str, Path], tmp_path: Path
) -> None:
    ckpt = _convert(models["llama"], tmp_path / "c", *convert_args)
    r = _build(ckpt, tmp_path / "e", cwd=tmp_path, STANDIN_GPUS=BLACKWELL)
    assert r.returncode == 1 and f"RuntimeError: {message}" in r.stderr
    # SM 12.x (RTX 50 series) is not refused, and neither is a Hopper
    for gpus in ("NVIDIA GeForce RTX 5090:12.0:32607", "NVIDIA H100 80GB HBM3:9.0:81559"):
        assert _build(ckpt, tmp_path / "ok", cwd=tmp_path, STANDIN_GPUS=gpus).returncode == 0


def test_blackwell_builds_fp8(models: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _convert(models["llama"], tmp_path / "c", "--use_fp8", "--fp8_kv_cache")
    assert _build(ckpt, tmp_path / "e", cwd=tmp_path, STANDIN_GPUS=BLACKWELL).returncode == 0


def test_int8_kv_cache_turns_paged_context_fmha_off(models: dict[str, Path], tmp_path: Path) -> None:
    ckpt = _convert(models["llama"], tmp_path / "c", "--int8_kv_cache")
    r = _build(ckpt, tmp_path / "e", "--use_paged_context_fmha", "enable", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Paged Context FMHA is disabled because it doesn't work with int8 kv cache currently." in r.stdout
    plugins = json.loads((tmp_path / "e" / "config.json").read_text())["build_config"]["plugin_config"]
    assert plugins["use_paged_context_fmha"] is False
    plain = _convert(models["llama"], tmp_path / "p")
    assert _build(plain, tmp_path / "pe", cwd=tmp_path).returncode == 0
    plugins = json.loads((tmp_path / "pe" / "config.json").read_text())["build_config"]["plugin_config"]
    assert plugins["use_paged_context_fmha"] is True


def test_timing_cache_lands_in_the_working_directory(llama_tp2: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    assert _build(llama_tp2, tmp_path / "e", cwd=cwd).returncode == 0
    assert (cwd / "model.cache").is_file() and not (tmp_path / "e" / "model.cache").exists()
    assert _build(llama_tp2, tmp_path / "e2", "--output_timing_cache", tmp_path / "t.cache", cwd=cwd).returncode == 0
    assert (tmp_path / "t.cache").is_file()


def test_run_py_prints_multi_line_outputs_unescaped(engine_tp2: Path, models: dict[str, Path]) -> None:
    argv = [sys.executable, EX / "run.py", "--engine_dir", engine_tp2, "--tokenizer_dir", models["llama"],
            "--max_output_len", "8", "--input_text", "hi"]  # fmt: skip
    r = run(["mpirun", "-n", "2", "--allow-run-as-root", *argv], STANDIN_OUTPUT_TEXT='one\\n"two"\\nthree')
    assert r.returncode == 0, r.stderr
    assert 'Output [Text 0 Beam 0]: "one\n"two"\nthree"\n' in r.stdout
