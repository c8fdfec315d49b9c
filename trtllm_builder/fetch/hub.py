"""Hugging Face Hub models: pick the files a build needs, resolve the revision, download into the cache.

The transfer itself is ``huggingface_hub.snapshot_download`` (see :mod:`hub_transfer` for the transport
and the progress lines). This module adds what a build needs around it: a revision pinned to a commit
sha, a cache keyed by that sha, access checked before a cached gated or private snapshot is reused, a
lock, a disk check, and failures translated into messages that name the fix (:mod:`hub_errors`).
Nothing here imports huggingface_hub at module level (it costs ~0.2 s), nor its HTTP transport,
which differs by major version.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from trtllm_builder.errors import FetchError
from trtllm_builder.fetch import hub_errors, modelcache
from trtllm_builder.fetch.hub_transfer import Download, DownloadStopped, Transport, choose_transport, hub_major
from trtllm_builder.progress import ProgressMeter, format_bytes, format_duration, run_ticking

__all__ = [
    "TOKENIZER_FILES",
    "Snapshot",
    "check_access",
    "endpoint",
    "fetch",
    "fetch_file",
    "resolve",
    "select_files",
]


DEFAULT_ENDPOINT = "https://huggingface.co"
SHA_RE = re.compile(r"[0-9a-f]{40}")
API_TIMEOUT = 30.0
PROGRESS_INTERVAL_S = 5.0

# Tokenizer and generation files a served engine needs beside it. Not `config.json`: an engine
# directory has its own, and the model's would overwrite it.
TOKENIZER_FILES: tuple[str, ...] = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "tokenizer.model.v*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "*.tiktoken",
    "tokenization_*.py",
    "chat_template.jinja",
    "chat_template.json",
    "generation_config.json",
    "preprocessor_config.json",
    "processor_config.json",
)
# Small top-level files the conversion may read: configs (incl. quantization configs and the
# weight index), remote code for trust_remote_code models, tokenizer files.
_SMALL_FILES = ("*.json", "*.py", *TOKENIZER_FILES)
# Duplicates of the weights in another layout (Meta/Mistral native checkpoints), never read by a build.
_NEVER = ("consolidated*", "training_args.bin")


def endpoint() -> str:
    """The hub to talk to: ``HF_ENDPOINT`` (a mirror) read at call time, else huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def select_files(names: Iterable[str]) -> list[str]:
    """The repo files a build downloads: top-level configs, tokenizer files and weights.

    Weights are ``*.safetensors`` (+ index); ``*.bin`` only when the repo has no safetensors. Anything
    in a subfolder (``original/``, ``onnx/``), gguf, onnx, flax/tf weights and ``consolidated.*`` are
    left out.
    """
    top = [n for n in names if "/" not in n and not n.startswith(".")]
    top = [n for n in top if not any(fnmatchcase(n, p) for p in _NEVER)]
    small = [n for n in top if any(fnmatchcase(n, p) for p in _SMALL_FILES)]
    weights = [n for n in top if n.endswith(".safetensors")] or [n for n in top if n.endswith(".bin")]
    return sorted({*small, *weights})


@dataclass(frozen=True)
class Snapshot:
    """A repo at one commit, and the files (name -> size) a build downloads from it."""

    repo_id: str
    sha: str
    files: dict[str, int]
    gated: bool
    private: bool = False

    @property
    def size(self) -> int:
        return sum(self.files.values())

    @property
    def restricted(self) -> bool:
        """Gated or private: a cached copy may be reused only by a token that can read the repo."""
        return self.gated or self.private


def resolve(repo_id: str, revision: str | None, *, token: str | None) -> Snapshot:
    """Pin ``revision`` (branch, tag, short or full sha; default branch if None) to a commit sha.

    One metadata call: the sha and every file's size come from ``model_info(files_metadata=True)``.
    A private repo answers it only to a token that can read it; a gated one answers anyone (its
    files are what is gated, see :func:`check_access`).
    """
    from huggingface_hub import HfApi  # imported lazily: it costs ~0.2 s, and local builds never need it

    hub = endpoint()
    try:
        info = HfApi(endpoint=hub).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=API_TIMEOUT, token=token or False
        )
    except Exception as e:  # the boundary to huggingface_hub: its errors differ by version (see hub_errors)
        raise _translate(e, repo_id, revision, token) from hub_errors.cause(e, token)
    if info.sha is None or info.siblings is None:
        raise FetchError(f"{hub} returned no commit sha or file list for `{repo_id}`; is HF_ENDPOINT a Hub mirror?")
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size) or 0 for s in info.siblings}
    files = select_files(sizes)
    if not any(n.endswith((".safetensors", ".bin")) for n in files):
        raise FetchError(
            f"`{repo_id}` at {info.sha[:12]} has no *.safetensors or *.bin weights at its top level "
            f"(files: {', '.join(sorted(sizes)[:20]) or 'none'}); use a repo in Hugging Face transformers format"
        )
    return Snapshot(
        repo_id=repo_id,
        sha=info.sha,
        files={n: sizes[n] for n in files},
        gated=bool(info.gated),
        private=bool(getattr(info, "private", False)),
    )


def check_access(snap: Snapshot, *, token: str | None) -> bool:
    """Check that ``token`` may download ``snap``'s files; return whether they are Xet-backed.

    One ``HEAD`` of the largest file, as huggingface_hub does before a download: a gated repo refuses
    it (401/403) to a token whose account has not accepted the license, while ``model_info`` does not.
    """
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    hub = endpoint()
    if snap.gated and not token:  # fail now, without a request
        raise FetchError(hub_errors.gated_message(snap.repo_id, token=None, hub=hub))
    name = max(snap.files, key=lambda n: (snap.files[n], n))
    url = hf_hub_url(snap.repo_id, name, revision=snap.sha, endpoint=hub)
    try:
        meta = get_hf_file_metadata(url, token=token or False, timeout=API_TIMEOUT)
    except Exception as e:  # the boundary to huggingface_hub (see resolve)
        raise _translate(e, snap.repo_id, snap.sha, token) from hub_errors.cause(e, token)
    return getattr(meta, "xet_file_data", None) is not None


def fetch(
    repo_id: str,
    revision: str | None,
    *,
    token: str | None,
    cache_dir: Path,
    free_disk_multiplier: float,
    log: Callable[[str], None],
) -> tuple[Path, str]:
    """The cached snapshot directory of ``repo_id`` at ``revision`` and its commit sha, downloading if needed.

    A full 40-hex ``revision`` of a public repo that is cached is returned without any network call.
    A cached gated or private snapshot is reused only after the hub confirmed that ``token`` can read
    it, so one build's download never hands a restricted model to a later build without access.
    """
    if revision is not None and SHA_RE.fullmatch(revision):
        entry = modelcache.hf_entry(cache_dir, repo_id, revision)
        if entry.complete and _recorded_access(entry) == "public":
            log(f"using cached `{repo_id}` at {revision[:12]} ({entry.final})")
            return entry.final, revision
    snap = resolve(repo_id, revision, token=token)
    entry = modelcache.hf_entry(cache_dir, repo_id, snap.sha)
    shown = f"`{repo_id}` at {snap.sha[:12]}" + (f" ({revision})" if revision and revision != snap.sha else "")
    if entry.complete:
        if snap.gated:
            check_access(snap, token=token)
        _record_access(entry, snap)
        checked = " (access checked)" if snap.restricted else ""
        log(f"using cached {shown}{checked} ({entry.final})")
        return entry.final, snap.sha
    transport = choose_transport(xet_backed=check_access(snap, token=token))
    _fetch_locked(snap, entry, shown, transport, token=token, multiplier=free_disk_multiplier, log=log)
    return entry.final, snap.sha


def fetch_file(repo_id: str, filename: str, revision: str | None, *, token: str | None, cache_dir: Path | None) -> Path:
    """One small file of ``repo_id`` (e.g. ``config.json``), through huggingface_hub's own cache.

    ``cache_dir`` None means huggingface_hub's default cache. Raises ``FetchError`` naming the fix.
    """
    from huggingface_hub import hf_hub_download

    try:
        path = hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            token=token or False,
            cache_dir=str(cache_dir) if cache_dir is not None else None,
            endpoint=endpoint(),
        )
    except Exception as e:  # the boundary to huggingface_hub (see resolve)
        err = hub_errors.translate(
            e, repo_id=repo_id, revision=revision, token=token, hub=endpoint(), filename=filename
        )
        raise err from hub_errors.cause(e, token)
    return Path(str(path))


def _access_file(entry: modelcache.CacheEntry) -> Path:
    return entry.final.with_name(entry.final.name + ".access")


def _recorded_access(entry: modelcache.CacheEntry) -> str | None:
    """The access recorded when ``entry`` was published (``public`` or ``restricted``); None for older caches."""
    try:
        data = json.loads(_access_file(entry).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("access") if isinstance(data, dict) else None


def _record_access(entry: modelcache.CacheEntry, snap: Snapshot) -> None:
    access = "restricted" if snap.restricted else "public"
    if _recorded_access(entry) == access:
        return
    path = _access_file(entry)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"access": access, "gated": snap.gated, "private": snap.private}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:
        raise FetchError(f"cannot write {path} in the download cache: {e}") from e


class _Relay:
    """What the download thread has to say, said by the thread that owns the log (under Cog: the prediction's)."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.lines: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.download: Download | None = None

    def tick(self) -> None:
        while True:
            try:
                self.log(self.lines.get_nowait())
            except queue.Empty:
                break
        download = self.download
        if download is not None:
            download.poll()
            download.meter.tick()


def _fetch_locked(
    snap: Snapshot,
    entry: modelcache.CacheEntry,
    shown: str,
    transport: Transport,
    *,
    token: str | None,
    multiplier: float,
    log: Callable[[str], None],
) -> None:
    """Lock the entry, download what is missing and publish it, in a helper thread; progress lines meanwhile.

    The helper thread holds the lock from start to end, so a build that is canceled while it runs
    never leaves a half-written directory unlocked: the helper stops at huggingface_hub's next chunk
    (0.x, which reports no bytes through the hook: once its whole download is done) and releases the lock itself.
    """
    relay = _Relay(log)
    stop = threading.Event()
    start = time.monotonic()

    def work() -> int:
        with modelcache.locked(entry, what=shown, log=relay.lines.put):
            if entry.complete:  # another process finished it while we waited
                relay.lines.put(f"using {shown}, fetched by another build ({entry.final})")
                _record_access(entry, snap)
                return -1
            if stop.is_set():
                raise DownloadStopped("the build was stopped")
            present = _prepare_partial(entry.partial, snap.files)
            modelcache.check_free_disk(
                entry.final.parent, model_bytes=snap.size, multiplier=multiplier, what=shown, reusable_bytes=present
            )
            relay.lines.put(
                f"downloading {shown} from {endpoint()}: {len(snap.files)} files, {snap.size / 1e9:.2f} GB"
                + (f" ({present / 1e9:.2f} GB already there from an interrupted run)" if present else "")
            )
            relay.lines.put(transport.describe())
            meter = ProgressMeter("download", None, relay.log, interval=PROGRESS_INTERVAL_S)
            download = Download(
                snap.repo_id, snap.sha, snap.files, entry.partial,
                token=token, endpoint=endpoint(), transport=transport, meter=meter, stop=stop, say=relay.lines.put,
            )  # fmt: skip
            meter.total = max(snap.size - download.baseline, 0) or None
            relay.download = download
            try:
                download.run()
            except DownloadStopped:
                raise
            except Exception as e:  # the boundary to huggingface_hub (see resolve)
                raise _translate(e, snap.repo_id, snap.sha, token, partial=entry.partial) from hub_errors.cause(
                    e, token
                )
            _verify_and_trim(snap, entry.partial, shown)
            _record_access(entry, snap)
            modelcache.publish(entry)
            return snap.size - download.baseline

    try:
        moved = run_ticking(work, relay.tick, name="hf-download")
    except BaseException:
        stop.set()  # canceled or failed: the helper thread stops at its next chunk
        relay.tick()
        raise
    relay.tick()
    if relay.download is not None and moved >= 0:
        elapsed = max(time.monotonic() - start, 1e-6)
        relay.download.meter.set(moved)
        relay.download.meter.finish(
            note=f"downloaded {shown} via {transport.name}: {format_bytes(moved)} in {format_duration(elapsed)}"
        )


def _prepare_partial(partial: Path, files: dict[str, int]) -> int:
    """Make ``partial`` ready for a (resumed) download; return the bytes of files already complete in it.

    Files finished by an interrupted run stay (huggingface_hub skips them). Its ``*.incomplete``
    files stay too: huggingface_hub 0.x resumes from them (and discards them itself when hf_transfer,
    which cannot resume, is on); 1.x and later name them per attempt and never reuse them, so they go.
    """
    partial.mkdir(parents=True, exist_ok=True)
    if hub_major() >= 1:
        for stale in (partial / ".cache").rglob("*.incomplete"):
            stale.unlink(missing_ok=True)
    present = 0
    for name, size in files.items():
        path = partial / name
        if path.is_file() and path.stat().st_size == size:
            present += size
    return present


def _verify_and_trim(snap: Snapshot, partial: Path, shown: str) -> None:
    """Every selected file is there at its size; nothing else is (huggingface_hub's bookkeeping, older selections)."""
    for name, size in snap.files.items():
        path = partial / name
        if not path.is_file() or path.stat().st_size != size:
            got = path.stat().st_size if path.is_file() else "no file"
            raise FetchError(
                f"download of {shown} is incomplete: `{name}` should be {size} bytes, got {got}; run again to resume"
            )
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    for path in [p for p in partial.rglob("*") if p.is_file() or p.is_symlink()]:
        if path.relative_to(partial).as_posix() not in snap.files:
            path.unlink()


def _translate(
    e: BaseException, repo_id: str, revision: str | None, token: str | None, *, partial: Path | None = None
) -> FetchError:
    return hub_errors.translate(e, repo_id=repo_id, revision=revision, token=token, hub=endpoint(), partial=partial)
