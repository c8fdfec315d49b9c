"""The step cache: a finished step's output kept under a content key, reused and resumed from.

A key covers everything that decides a step's output: the model (repo id + resolved revision,
or a local model's content hash), the step's argv with paths normalised to placeholders, the
script's content hash, the TensorRT-LLM version, the GPUs' compute capability, and the keys of
every earlier step (so a changed convert step invalidates the build step after it).

An entry appears only when complete: the output is moved into a temp folder of the cache and
renamed to its key. Concurrent builds computing the same key serialise on a lock file, so the
second one finds the first one's result. Entries carry their size and last use; the cache is
kept under a size bound by evicting the least recently used entries that nobody holds.

Entries are checked before they are trusted: :meth:`StepCache.store` records every file's size
and sha256 (hashed on a few threads right after the step, while the files are still in the page
cache), and :meth:`StepCache.verify` compares them again before a reuse: the listing and sizes
first (a truncated or deleted rank file costs nothing to find), then every file's sha256,
streamed in 4 MiB chunks, files hashed in parallel. A reuse verifies once; the packer compares
the packed engine files' sha256 with the same record, so an entry that changes later is caught
there too. A damaged entry is discarded (:meth:`StepCache.discard`) and the step runs again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from trtllm_builder.checksums import sha256_file
from trtllm_builder.progress import DEFAULT_INTERVAL_S, ProgressMeter
from trtllm_builder.sizes import size_from_env

__all__ = [
    "CACHE_MAX_SIZE_ENV",
    "CachedStep",
    "Hold",
    "StepCache",
    "cache_bound_from_env",
    "content_hash",
    "record_files",
    "step_key",
]

CACHE_MAX_SIZE_ENV = "TRTLLM_BUILDER_CACHE_MAX_SIZE"


def cache_bound_from_env() -> int | None:
    """``$TRTLLM_BUILDER_CACHE_MAX_SIZE`` as bytes, or None when unset."""
    return size_from_env(CACHE_MAX_SIZE_ENV)


_META = "meta.json"
_OUT = "output"


def content_hash(root: Path, memo_dir: Path | None = None) -> str:
    """sha256 over a directory's files (relative path + content), following the model link.

    Hashing a 100 GB local model takes a minute, so per-file hashes are memoised under
    ``memo_dir`` keyed by (path, size, mtime, inode): a later build re-hashes only what changed.
    """
    root = root.resolve()
    memo_path = memo_dir / "file-hashes.json" if memo_dir else None
    memo: dict[str, str] = {}
    if memo_path and memo_path.exists():
        with contextlib.suppress(OSError, ValueError):
            memo = json.loads(memo_path.read_text())
    h = hashlib.sha256()
    changed = False
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        st = path.stat()
        ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
        digest = memo.get(ident)
        if digest is None:
            digest = sha256_file(path)
            memo[ident] = digest
            changed = True
        h.update(f"{path.relative_to(root).as_posix()}\0{digest}\n".encode())
    if memo_path and changed:
        memo_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_path)
    return h.hexdigest()


def step_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedStep:
    key: str
    output: Path  # the cached output folder (what the step's located output dir held)
    meta: dict[str, Any]

    def recorded_sha256(self) -> dict[str, str]:
        """Relative path -> sha256 recorded when the entry was stored (empty for old entries)."""
        files = self.meta.get("files")
        if not isinstance(files, dict):
            return {}
        return {n: str(f.get("sha256")) for n, f in files.items() if isinstance(f, dict)}


class Hold:
    """A shared lock on an entry's use file: eviction and :meth:`StepCache.drop` skip it meanwhile."""

    def __init__(self, fh: IO[str], entry: CachedStep) -> None:
        self._fh: IO[str] | None = fh
        self.entry = entry

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _hash_files(paths: Sequence[Path], meter: ProgressMeter | None = None) -> list[str]:
    """sha256 of each file, a few at a time (hashlib and reads release the GIL).

    ``meter`` counts the bytes; the calling thread ticks it while the helper threads hash.
    """
    if not paths:
        return []
    on_chunk = meter.add if meter is not None else None
    with ThreadPoolExecutor(max_workers=min(len(paths), os.cpu_count() or 1, 8)) as pool:
        futures = [pool.submit(sha256_file, p, on_chunk) for p in paths]
        printed = False
        while wait(futures, timeout=0.2).not_done:
            printed = (meter is not None and meter.tick()) or printed
        if meter is not None and printed:  # a closing line only when the work was long enough to show
            meter.finish()
        return [f.result() for f in futures]


def _listing(root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """(regular files, symlinks -> target) under ``root`` by relative path; links are not followed."""
    files: dict[str, Path] = {}
    links: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*filenames, *dirnames]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                links[rel] = os.readlink(path)
            elif name in filenames and path.is_file():
                files[rel] = path
    return files, links


def _sizes(files: dict[str, Path]) -> dict[str, int]:
    """Each listed file's size in bytes (one stat per file)."""
    return {n: p.stat().st_size for n, p in files.items()}


def _record(
    files: dict[str, Path], sizes: dict[str, int], links: dict[str, str], meter: ProgressMeter | None
) -> dict[str, Any]:
    names = sorted(files)
    digests = _hash_files([files[n] for n in names], meter)
    return {
        "files": {n: {"size": sizes[n], "sha256": d} for n, d in zip(names, digests, strict=True)},
        "links": links,
    }


def record_files(root: Path, meter: ProgressMeter | None = None) -> dict[str, Any]:
    """What :meth:`StepCache.verify` checks later: each file's size and sha256, each link's target."""
    files, links = _listing(root)
    return _record(files, _sizes(files), links, meter)


class StepCache:
    """Step outputs under ``root/steps/<key>/{output,meta.json}``."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int | None = None,
        log: Callable[[str], object] = print,
        progress_interval: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.root = root / "steps"
        self.max_bytes = max_bytes
        self.log = log
        self.progress_interval = progress_interval  # hashing a large output prints progress lines

    def _meter(self, phase: str, total: int) -> ProgressMeter:
        return ProgressMeter(phase, total, self.log, interval=self.progress_interval)

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Exclusive per-key lock: a second build of the same step waits, then finds the entry."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / f"{key}.lock").open("w") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log(f"another build is computing the same step ({key[:12]}); waiting for it")
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def hold(self, entry: CachedStep, stack: contextlib.ExitStack) -> Hold:
        """Mark the entry in use until ``stack`` closes (or the hold is released): eviction skips it."""
        fh = (self.root / f"{entry.key}.use").open("w")
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        held = Hold(fh, entry)
        stack.callback(held.release)
        return held

    def verify(self, entry: CachedStep) -> list[str]:
        """What no longer matches the record made at store time (empty: intact). Sizes, then sha256s."""
        record = entry.meta.get("files")
        if not isinstance(record, dict):
            return ["it has no checksums (written by an older trtllm-builder)"]
        files, links = _listing(entry.output)
        sizes = _sizes(files)
        problems = [f"{n} is missing" for n in sorted(set(record) - set(files))]
        problems += [f"{n} was not there when the step finished" for n in sorted(set(files) - set(record))]
        if links != entry.meta.get("links", {}):
            problems.append("its links changed")
        for name in sorted(set(record) & set(files)):
            size, want = sizes[name], record[name].get("size")
            if size != want:
                problems.append(f"{name} has {size} bytes, {want} when the step finished")
        if problems:
            return problems
        names = sorted(files)
        meter = self._meter(f"verify {entry.meta.get('step', '?')}", sum(sizes.values()))
        for name, digest in zip(names, _hash_files([files[n] for n in names], meter), strict=True):
            want = str(record[name].get("sha256"))
            if digest != want:
                problems.append(f"{name}'s sha256 is {digest[:12]}..., {want[:12]}... when the step finished")
        return problems

    def discard(self, key: str) -> None:
        """Remove an entry (a damaged one): later lookups miss, and the step runs again."""
        entry = self.root / key
        if entry.exists():
            trash = self.root / f".discard-{key}-{os.getpid()}"
            os.rename(entry, trash)
            shutil.rmtree(trash, ignore_errors=True)

    def drop(self, key: str, held: Hold | None = None) -> bool:
        """Remove an entry nobody else holds (``held``, ours, is released first); False if one does."""
        if held is not None:
            held.release()
        with (self.root / f"{key}.use").open("w") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            self.discard(key)
        return True

    def lookup(self, key: str) -> CachedStep | None:
        entry = self.root / key
        meta_path = entry / _META
        if not meta_path.is_file() or not (entry / _OUT).is_dir():
            return None
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            return None
        meta["last_used"] = time.time()
        tmp = meta_path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(meta, indent=2))
        os.replace(tmp, meta_path)
        return CachedStep(key, entry / _OUT, meta)

    def store(self, key: str, output: Path, meta: dict[str, Any]) -> CachedStep:
        """Move ``output`` into the cache under ``key`` (atomically) and return the entry.

        The caller links the step's output location to :attr:`CachedStep.output`.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{key}-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        try:
            try:
                os.rename(output, tmp / _OUT)  # same filesystem: free
            except OSError:
                shutil.copytree(output, tmp / _OUT, symlinks=True)
                shutil.rmtree(output)
            files, links = _listing(tmp / _OUT)
            sizes = _sizes(files)
            size = sum(sizes.values())
            meta = {
                **meta,
                **_record(files, sizes, links, self._meter(f"checksum {meta.get('step', '?')}", size)),
                "size": size,
                "created": time.time(),
                "last_used": time.time(),
            }
            (tmp / _META).write_text(json.dumps(meta, indent=2))
            entry = self.root / key
            if entry.exists():  # a stale or concurrent entry: ours is complete, replace it
                shutil.rmtree(entry)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.evict(keep=key)
        return CachedStep(key, entry / _OUT, meta)

    def entries(self) -> list[tuple[Path, dict[str, Any]]]:
        out: list[tuple[Path, dict[str, Any]]] = []
        if not self.root.is_dir():
            return out
        for entry in self.root.iterdir():
            meta_path = entry / _META
            if entry.is_dir() and meta_path.is_file():
                with contextlib.suppress(OSError, ValueError):
                    out.append((entry, json.loads(meta_path.read_text())))
        return out

    def evict(self, *, keep: str | None = None) -> list[str]:
        """Drop least recently used entries until the cache fits ``max_bytes``; skip locked ones."""
        if self.max_bytes is None:
            return []
        entries = sorted(self.entries(), key=lambda e: float(e[1].get("last_used", 0)))
        total = sum(int(m.get("size", 0)) for _, m in entries)
        evicted: list[str] = []
        for entry, meta in entries:
            if total <= self.max_bytes:
                break
            if entry.name == keep or not self.drop(entry.name):  # False: in use by a running build
                continue
            total -= int(meta.get("size", 0))
            evicted.append(entry.name)
            self.log(f"step cache: evicted {meta.get('step', '?')} ({int(meta.get('size', 0)) / 2**20:.1f} MiB)")
        return evicted
