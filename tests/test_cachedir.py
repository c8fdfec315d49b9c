"""A cache directory that cannot be written: one clear message naming it and the fix (issue #14, item 11).

The read-only case is a real read-only file system: a tmpfs mounted ``ro`` in a private mount
namespace (``unshare -rm``), so it works as root too (root ignores permission bits).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from test_predict import predict

from trtllm_builder.errors import SetupError
from trtllm_builder.fetch.modelcache import writable_cache_dir

CONFIG = """\
model: {{id: {model}}}
trtllm: {{example: llama}}
steps:
  - {{name: convert, script: convert_checkpoint.py, args: {{dtype: float16}}}}
  - {{name: build, command: trtllm-build, args: {{max_batch_size: 4}}}}
"""


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    return subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode == 0


def run_with_readonly(mount: Path, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m trtllm_builder ARGS`` with a read-only tmpfs mounted at ``mount``."""
    script = 'mount -t tmpfs -o ro,size=1m none "$0" && exec "$@"'
    cmd = ["unshare", "-rm", "sh", "-c", script, str(mount), sys.executable, "-m", "trtllm_builder", *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -rm` (user + mount namespaces) for a read-only mount")
@pytest.mark.parametrize("where", ["the dir", "below it"])
def test_read_only_cache_is_named_with_the_fix(
    standin_env: dict[str, str], tmp_path: Path, tiny_model: Callable[..., Path], where: str
) -> None:
    mount = tmp_path / "ro"
    mount.mkdir()
    cache = mount if where == "the dir" else mount / "nested" / "cache"
    env = {**standin_env, "TRTLLM_BUILDER_CACHE": str(cache)}
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(model=tiny_model("llama")))
    for args, code in ((["plan", str(cfg)], 2), (["build", str(cfg), "-o", str(tmp_path / "e.tar.gz")], 3)):
        res = run_with_readonly(mount, args, env, tmp_path)
        assert res.returncode == code, res.stderr
        assert f"the cache directory {cache} is not usable: it is on a read-only file system" in res.stderr
        assert "point TRTLLM_BUILDER_CACHE (or --cache-dir) at a writable directory" in res.stderr
        assert "Traceback" not in res.stderr and "Errno 30" not in res.stderr.split("(", 1)[0]
    # --cache-dir is checked the same way
    res = run_with_readonly(mount, ["build", str(cfg), "--cache-dir", str(mount / "x")], standin_env, tmp_path)
    assert res.returncode == 3 and f"the cache directory {mount / 'x'} is not usable" in res.stderr


def test_cache_path_that_is_a_file(run_cli: Callable[..., subprocess.CompletedProcess[str]], tmp_path: Path,
                                   tiny_model: Callable[..., Path]) -> None:  # fmt: skip
    blocker = tmp_path / "cachefile"
    blocker.write_text("not a dir")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(CONFIG.format(model=tiny_model("llama")))
    res = run_cli("build", str(cfg), env={"TRTLLM_BUILDER_CACHE": str(blocker)})
    assert res.returncode == 3, res.stderr
    assert f"the cache directory {blocker} is not usable: it is a file, not a directory" in res.stderr
    res = run_cli("plan", str(cfg), env={"TRTLLM_BUILDER_CACHE": str(blocker / "sub")})
    assert res.returncode == 2 and "is a file, not a directory" in res.stderr
    res = run_cli("warm-parsers", "--cache-dir", str(blocker))  # would report parsers "cached" in it
    assert res.returncode == 3 and f"the cache directory {blocker} is not usable" in res.stderr
    assert blocker.read_text() == "not a dir"


def test_cache_without_write_permission(tmp_path: Path) -> None:
    """A directory this user may not write. Root (CI) ignores permission bits through CAP_DAC_OVERRIDE,
    so there the check runs in a child without that capability (setpriv drops it from the bounding set)."""
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        if os.geteuid() != 0:
            with pytest.raises(SetupError, match=r"is not usable: this user may not write there"):
                writable_cache_dir(locked)
            return
        import shutil
        import sys

        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to run this check without CAP_DAC_OVERRIDE"
        code = (
            "import pathlib, sys\n"
            "from trtllm_builder.errors import SetupError\n"
            "from trtllm_builder.fetch.modelcache import writable_cache_dir\n"
            "try:\n"
            f"    writable_cache_dir(pathlib.Path({str(locked)!r}))\n"
            "except SetupError as exc:\n"
            "    print(exc)\n"
            "    sys.exit(7)\n"
        )
        res = subprocess.run(
            [setpriv, "--bounding-set=-dac_override,-dac_read_search", sys.executable, "-c", code],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert res.returncode == 7, res.stdout + res.stderr
        assert "is not usable: this user may not write there" in res.stdout
    finally:
        locked.chmod(0o755)


def test_predictor_setup_fails_with_the_message(standin_env: dict[str, str], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    blocker = tmp_path / "cachefile"
    blocker.write_text("")
    monkeypatch.setenv("TRTLLM_BUILDER_CACHE", str(blocker))
    with pytest.raises(SetupError, match=r"the cache directory .*cachefile is not usable"):
        predict.Predictor().setup()


def test_a_writable_cache_is_created_and_left_clean(tmp_path: Path) -> None:
    cache = tmp_path / "a" / "b" / "cache"
    assert writable_cache_dir(cache) == cache
    assert cache.is_dir() and list(cache.iterdir()) == []  # the probe file is gone
