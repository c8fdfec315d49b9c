"""The download cache: one directory per (source, exact version), published atomically.

Layout under ``cache_dir``::

    models/<org>--<name>/<sha>/          a complete Hugging Face snapshot (only ever appears by rename)
    models/<org>--<name>/<sha>.partial/  an interrupted or running download (never used as a model)
    models/<org>--<name>/<sha>.lock      flock'd while a process fills or publishes <sha>
    tars/<url>-<version>/  tars/<url>.partial/  tars/<url>.lock   the same for ``model_tar_url`` tarballs

A directory without the ``.partial`` suffix is complete by construction: it is only ever created by
``os.rename`` of a finished ``.partial`` directory, which is atomic on one filesystem.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from trtllm_builder.errors import FetchError, PreflightError, SetupError

__all__ = [
    "CacheEntry",
    "check_free_disk",
    "hf_entry",
    "is_disk_full",
    "list_files",
    "locked",
    "publish",
    "tar_entry",
    "writable_cache_dir",
]


GIB = 1 << 30


@dataclass(frozen=True)
class CacheEntry:
    """Where one cached item lives, is built, and is locked."""

    final: Path
    partial: Path
    lock: Path

    @property
    def complete(self) -> bool:
        return self.final.is_dir()


def _entry(parent: Path, name: str) -> CacheEntry:
    return CacheEntry(final=parent / name, partial=parent / f"{name}.partial", lock=parent / f"{name}.lock")


def hf_entry(cache_dir: Path, repo_id: str, sha: str) -> CacheEntry:
    """The cache entry of ``repo_id`` at commit ``sha`` (repo ids never contain ``--``, so this is unambiguous)."""
    return _entry(cache_dir / "models" / repo_id.replace("/", "--"), sha)


def tar_entry(cache_dir: Path, url_key: str, version: str) -> CacheEntry:
    """The cache entry of the tarball at the URL digested as ``url_key``, in the ``version`` the server sent.

    The lock and the partial directory are per URL, so two builds fetching the same URL share one
    download; the complete directory is per (URL, version), so a replaced tarball is fetched anew.
    """
    parent = cache_dir / "tars"
    return CacheEntry(
        final=parent / f"{url_key}-{version}", partial=parent / f"{url_key}.partial", lock=parent / f"{url_key}.lock"
    )


@contextmanager
def locked(entry: CacheEntry, *, what: str, log: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``entry.lock``; another process on the same entry waits here.

    The lock file is never deleted: unlinking a lock file that another process is about to open
    would let two processes hold "the" lock at once.
    """
    entry.lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(entry.lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another build is fetching {what}; waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def publish(entry: CacheEntry) -> None:
    """Atomically turn the finished ``partial`` directory into the complete one (caller holds the lock)."""
    try:
        os.rename(entry.partial, entry.final)
    except OSError as e:
        raise FetchError(f"cannot publish {entry.final} in the download cache: {e}") from e


def list_files(root: Path) -> tuple[tuple[str, ...], int]:
    """Relative paths (``/``-separated, sorted) of the regular files under ``root``, and their total size.

    Symlinked directories are not followed, so a model directory linking to ``/`` cannot make this walk
    the whole machine.
    """
    files: list[str] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_file():
                continue
            files.append(path.relative_to(root).as_posix())
            total += path.stat().st_size
    files.sort()
    return tuple(files), total


def check_free_disk(target: Path, *, model_bytes: int, multiplier: float, what: str, reusable_bytes: int = 0) -> None:
    """Fail before downloading if ``model_bytes * multiplier`` will not fit on ``target``'s filesystem.

    ``multiplier`` covers what the build writes next to the weights (converted checkpoint, engines).
    ``reusable_bytes`` are bytes of this model already on that disk (an interrupted download).
    """
    target.mkdir(parents=True, exist_ok=True)
    need = int(model_bytes * multiplier)
    free = shutil.disk_usage(target).free + reusable_bytes
    if need > free:
        raise PreflightError(
            f"not enough disk space for {what}: the build needs about {need / GIB:.1f} GiB "
            f"({model_bytes / GIB:.1f} GiB of model files x {multiplier:g}) but only {free / GIB:.1f} GiB "
            f"are free in {target}; free some space or point the cache at a larger disk"
        )


_WHY = {
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "this user may not write there",
    errno.EPERM: "this user may not write there",
    errno.ENOTDIR: "it (or a folder above it) is a file, not a directory",
    errno.EEXIST: "it is a file, not a directory",
    errno.ENOSPC: "its disk is full",
    errno.EDQUOT: "the disk quota is exhausted",
}


def writable_cache_dir(path: Path) -> Path:
    """``path``, created if need be, once a file could be written in it.

    The one check every user of the cache relies on (the parser cache at plan time, downloads, the
    step cache): a read-only or foreign cache fails here, first, with a ``SetupError`` that names the
    directory and the fix, instead of an ``OSError`` from whichever part touches it first.
    """
    path = Path(path).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        why = _WHY.get(e.errno or 0, e.strerror or type(e).__name__)
        raise SetupError(
            f"the cache directory {path} is not usable: {why} ({e.strerror or e}). The cache holds parsers, "
            "downloaded models and finished steps, so it must be writable: point TRTLLM_BUILDER_CACHE (or "
            f"--cache-dir) at a writable directory, or make {path} writable by this user"
        ) from None
    return path


def is_disk_full(error: OSError) -> bool:
    return error.errno in (errno.ENOSPC, errno.EDQUOT)
