"""scripts/fetch-trees.sh against real git repositories on disk (file:// URLs), laid out like
NVIDIA/TensorRT-LLM (tags v1.2.1, v0.21.0: examples/models/core, triton_backend/, cpp/) and
triton-inference-server/tensorrtllm_backend (before 0.20 the Triton templates live there)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "fetch-trees.sh"

# What a TensorRT-LLM release tag holds that the tool needs, plus what it must NOT fetch (cpp/, docs/).
TRTLLM_FILES = {
    "examples/run.py": "# run.py\n",
    "examples/utils.py": "# utils\n",
    "examples/quantization/quantize.py": "# quantize\n",
    "examples/models/core/llama/convert_checkpoint.py": "# llama\n",
    "examples/models/core/gpt/convert_checkpoint.py": "# gpt\n",
    "triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt": 'backend: "tensorrtllm"\n',
    "triton_backend/tools/fill_template.py": "# fill\n",
    "requirements.txt": "torch\n",
    "cpp/tensorrt_llm/kernels/big.cu": "// C++ sources the tool never needs\n",
    "docs/source/index.md": "docs\n",
}


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    _git(path, "init", "-q", "-b", "main")
    _git(path, "config", "user.email", "test@example.com")
    _git(path, "config", "user.name", "test")
    _git(path, "config", "uploadpack.allowFilter", "true")
    return path


def _commit_tag(repo: Path, files: dict[str, str], tag: str) -> None:
    for rel in [p.relative_to(repo) for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts]:
        (repo / rel).unlink()
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "--allow-empty", "-m", tag)
    _git(repo, "tag", tag)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("upstream")
    trt = _repo(base / "TensorRT-LLM")
    _commit_tag(trt, {**TRTLLM_FILES, "tensorrt_llm/version.py": '__version__ = "0.21.0"\n'}, "v0.21.0")
    _commit_tag(trt, {**TRTLLM_FILES, "tensorrt_llm/version.py": '__version__ = "1.2.1"\n'}, "v1.2.1")
    # A tag whose version.py disagrees with its name, and one without the converters.
    _commit_tag(trt, {**TRTLLM_FILES, "tensorrt_llm/version.py": '__version__ = "1.3.0rc1"\n'}, "v1.3.0")
    no_core = {k: v for k, v in TRTLLM_FILES.items() if "models/core" not in k}
    _commit_tag(trt, {**no_core, "tensorrt_llm/version.py": '__version__ = "1.4.0"\n'}, "v1.4.0")
    # 0.19: no triton_backend/ in the tree; the templates are in tensorrtllm_backend at the same tag.
    old = {k: v for k, v in TRTLLM_FILES.items() if not k.startswith("triton_backend/")}
    _commit_tag(trt, {**old, "tensorrt_llm/version.py": '__version__ = "0.19.0"\n'}, "v0.19.0")
    backend = _repo(base / "tensorrtllm_backend")
    _commit_tag(
        backend,
        {
            "all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt": 'backend: "tensorrtllm"\n',
            "tools/fill_template.py": "# fill\n",
            "inflight_batcher_llm/src/model_state.cc": "// C++\n",
        },
        "v0.19.0",
    )
    return {"trt": trt, "backend": backend}


def fetch(upstream: dict[str, Path], dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = ["bash", str(SCRIPT), "--repo", upstream["trt"].as_uri(), "--backend-repo", upstream["backend"].as_uri()]
    return subprocess.run([*argv, *args, str(dest)], capture_output=True, text=True, timeout=120)


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".git" not in p.parts}


def test_fetches_exactly_the_tag_sparse_and_is_idempotent(upstream: dict[str, Path], tmp_path: Path) -> None:
    res = fetch(upstream, tmp_path, "--version", "1.2.1")
    assert res.returncode == 0, res.stderr
    trt = tmp_path / "TensorRT-LLM"
    assert files_under(trt) == {
        "examples/run.py",
        "examples/utils.py",
        "examples/quantization/quantize.py",
        "examples/models/core/llama/convert_checkpoint.py",
        "examples/models/core/gpt/convert_checkpoint.py",
        "triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt",
        "triton_backend/tools/fill_template.py",
        "requirements.txt",
        "tensorrt_llm/version.py",
    }  # no cpp/, no docs/
    assert (trt / "tensorrt_llm/version.py").read_text() == '__version__ = "1.2.1"\n'
    assert _git(trt, "describe", "--tags").strip() == "v1.2.1"
    backend = tmp_path / "tensorrtllm_backend"
    assert backend.is_symlink() and (backend / "all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt").is_file()

    again = fetch(upstream, tmp_path, "--version", "1.2.1")
    assert again.returncode == 0, again.stderr
    assert "already TensorRT-LLM 1.2.1" in again.stdout


def test_a_missing_tag_fails_loudly_naming_the_release(upstream: dict[str, Path], tmp_path: Path) -> None:
    res = fetch(upstream, tmp_path, "--version", "1.2.2")
    assert res.returncode == 1
    assert "cannot clone tag v1.2.2" in res.stderr
    assert not (tmp_path / "TensorRT-LLM").exists()  # nothing half-made left behind
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fetch-trees")]


def test_a_tag_without_the_engine_path_or_with_another_version_fails(upstream: dict[str, Path], tmp_path: Path) -> None:
    res = fetch(upstream, tmp_path / "a", "--version", "1.4.0")
    assert res.returncode == 1
    assert "at v1.4.0 has no examples/models/core" in res.stderr
    res = fetch(upstream, tmp_path / "b", "--version", "1.3.0")
    assert res.returncode == 1
    assert re.search(r"says it is version '1\.3\.0rc1'.*not 1\.3\.0", res.stderr)


def test_trees_of_another_release_are_kept_unless_forced(upstream: dict[str, Path], tmp_path: Path) -> None:
    assert fetch(upstream, tmp_path, "--version", "0.21.0").returncode == 0
    res = fetch(upstream, tmp_path, "--version", "1.2.1")
    assert res.returncode == 1
    assert "holds TensorRT-LLM 0.21.0, not 1.2.1" in res.stderr and "--force" in res.stderr
    assert (tmp_path / "TensorRT-LLM/tensorrt_llm/version.py").read_text() == '__version__ = "0.21.0"\n'
    res = fetch(upstream, tmp_path, "--version", "1.2.1", "--force")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "TensorRT-LLM/tensorrt_llm/version.py").read_text() == '__version__ = "1.2.1"\n'


def test_a_directory_that_is_not_a_tree_is_never_replaced(upstream: dict[str, Path], tmp_path: Path) -> None:
    mine = tmp_path / "TensorRT-LLM"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's own files")
    res = fetch(upstream, tmp_path, "--version", "1.2.1", "--force")
    assert res.returncode == 1
    assert "is not a TensorRT-LLM checkout made by this script" in res.stderr
    assert (mine / "notes.txt").read_text() == "the user's own files"


def test_before_0_20_the_templates_come_from_tensorrtllm_backend(upstream: dict[str, Path], tmp_path: Path) -> None:
    res = fetch(upstream, tmp_path, "--version", "0.19.0")
    assert res.returncode == 0, res.stderr
    backend = tmp_path / "tensorrtllm_backend"
    assert not backend.is_symlink()
    assert files_under(backend) == {
        "all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt",
        "tools/fill_template.py",
        ".trtllm-builder-tag",
    }  # no inflight_batcher_llm/src C++


def test_the_default_release_is_the_image_pin() -> None:
    from trtllm_builder.plan.versions import DEFAULT_TRTLLM_VERSION

    text = SCRIPT.read_text()
    assert re.search(rf"^DEFAULT_VERSION={re.escape(DEFAULT_TRTLLM_VERSION)}\b", text, re.M)
