"""The build's work dir: created, marked and locked by the tool, cleaned only inside itself."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trtllm_builder.errors import ConfigError

__all__ = ["MARKER", "default_work_dir", "owned_work_dir", "remove_inside"]

MARKER = ".trtllm-builder-workdir"


def default_work_dir(config_text: str) -> Path:
    """A stable path per config, so ``plan`` shows the paths ``build`` will use."""
    digest = hashlib.sha256(config_text.encode("utf-8", errors="surrogatepass")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / "trtllm-builder" / f"work-{digest}"


def remove_inside(root: Path, target: Path) -> None:
    """Delete ``target`` (file, dir or link) only if it lies inside ``root``; links are never followed."""
    root_r = root.resolve()
    parent = target.parent.resolve()
    if not (parent == root_r or parent.is_relative_to(root_r)):
        raise ConfigError(f"refusing to delete {target}: it is outside the work dir {root}")
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.is_dir():
        shutil.rmtree(target)


@contextlib.contextmanager
def owned_work_dir(path: Path) -> Iterator[Path]:
    """Create (or reuse a work dir this tool made) and hold an exclusive lock on it.

    A non-empty directory without the tool's marker is refused: nothing of the user's is ever
    cleaned. A second build on the same work dir fails fast instead of corrupting the first.
    """
    path = Path(os.path.abspath(path))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"work dir {path} exists and is not a directory; choose another --work-dir")
    if path.is_dir() and any(path.iterdir()) and not (path / MARKER).exists():
        raise ConfigError(
            f"work dir {path} is not empty and was not created by trtllm-builder; the tool deletes "
            "things inside its work dir, so choose an empty or new directory"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    lock = (path / ".lock").open("w")
    try:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(
                f"another build is using the work dir {path}; wait for it or choose another --work-dir"
            ) from None
        yield path
    finally:
        lock.close()
