"""Hugging Face Hub models: pick the files a build needs, resolve the revision, download into the cache.

The transfer itself is ``huggingface_hub.snapshot_download`` (per-file retries with HTTP range resume,
parallel files, and hf_xet when the server is Xet-capable). This module adds what a build needs around
it: a revision pinned to a commit sha, a cache keyed by that sha, a lock, a disk check, and failures
translated into messages that name the fix.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import httpx2
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from . import modelcache
from .errors import BuilderError, FetchError

__all__ = ["TOKENIZER_FILES", "Snapshot", "endpoint", "fetch", "redact", "resolve", "select_files"]

logger = logging.getLogger("trtllm_builder")

DEFAULT_ENDPOINT = "https://huggingface.co"
SHA_RE = re.compile(r"[0-9a-f]{40}")
API_TIMEOUT = 30.0
DOWNLOAD_WORKERS = 8

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


def redact(text: str, token: str | None) -> str:
    """``text`` with every occurrence of ``token`` replaced, for messages that may echo a foreign one."""
    return text.replace(token, "***") if token else text


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

    @property
    def size(self) -> int:
        return sum(self.files.values())


def resolve(repo_id: str, revision: str | None, *, token: str | None) -> Snapshot:
    """Pin ``revision`` (branch, tag, short or full sha; default branch if None) to a commit sha.

    One metadata call: the sha and every file's size come from ``model_info(files_metadata=True)``.
    """
    from huggingface_hub import HfApi  # imported lazily: it costs ~0.2 s, and local builds never need it

    hub = endpoint()
    try:
        info = HfApi(endpoint=hub).model_info(
            repo_id, revision=revision, files_metadata=True, timeout=API_TIMEOUT, token=token or False
        )
    except (HfHubHTTPError, httpx2.HTTPError, OfflineModeIsEnabled) as e:
        raise _translate(e, repo_id=repo_id, revision=revision, token=token, hub=hub) from _cause(e, token)
    if info.sha is None or info.siblings is None:
        raise FetchError(f"{hub} returned no commit sha or file list for `{repo_id}`; is HF_ENDPOINT a Hub mirror?")
    sizes = {s.rfilename: (s.lfs.size if s.lfs else s.size) or 0 for s in info.siblings}
    files = select_files(sizes)
    if not any(n.endswith((".safetensors", ".bin")) for n in files):
        raise FetchError(
            f"`{repo_id}` at {info.sha[:12]} has no *.safetensors or *.bin weights at its top level "
            f"(files: {', '.join(sorted(sizes)[:20]) or 'none'}); use a repo in Hugging Face transformers format"
        )
    return Snapshot(repo_id=repo_id, sha=info.sha, files={n: sizes[n] for n in files}, gated=bool(info.gated))


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

    A full 40-hex ``revision`` that is cached is returned without any network call.
    """
    if revision is not None and SHA_RE.fullmatch(revision):
        entry = modelcache.hf_entry(cache_dir, repo_id, revision)
        if entry.complete:
            log(f"using cached `{repo_id}` at {revision[:12]} ({entry.final})")
            return entry.final, revision
    snap = resolve(repo_id, revision, token=token)
    entry = modelcache.hf_entry(cache_dir, repo_id, snap.sha)
    shown = f"`{repo_id}` at {snap.sha[:12]}" + (f" ({revision})" if revision and revision != snap.sha else "")
    if entry.complete:
        log(f"using cached {shown} ({entry.final})")
        return entry.final, snap.sha
    if snap.gated and not token:  # fail now, not after 8 parallel requests were refused
        raise FetchError(_gated_message(repo_id, token=None, hub=endpoint()))
    with modelcache.locked(entry, what=shown, log=log):
        if entry.complete:  # another process finished it while we waited
            log(f"using {shown}, fetched by another build ({entry.final})")
            return entry.final, snap.sha
        present = _prepare_partial(entry.partial, snap.files)
        modelcache.check_free_disk(
            entry.final.parent,
            model_bytes=snap.size,
            multiplier=free_disk_multiplier,
            what=shown,
            reusable_bytes=present,
        )
        _download(snap, entry.partial, token=token, shown=shown, present=present, log=log)
        modelcache.publish(entry)
    return entry.final, snap.sha


def _prepare_partial(partial: Path, files: dict[str, int]) -> int:
    """Make ``partial`` ready for a (resumed) download; return the bytes of files already complete in it.

    Files finished by an interrupted run stay (huggingface_hub skips them); its temporary
    ``*.incomplete`` files are unique per attempt and would never be reused, so they go.
    """
    partial.mkdir(parents=True, exist_ok=True)
    for stale in (partial / ".cache").rglob("*.incomplete"):
        stale.unlink(missing_ok=True)
    present = 0
    for name, size in files.items():
        path = partial / name
        if path.is_file() and path.stat().st_size == size:
            present += size
    return present


def _download(
    snap: Snapshot, partial: Path, *, token: str | None, shown: str, present: int, log: Callable[[str], None]
) -> None:
    hub = endpoint()
    todo = snap.size - present
    log(
        f"downloading {shown} from {hub}: {len(snap.files)} files, {snap.size / 1e9:.2f} GB"
        + (f" ({present / 1e9:.2f} GB already there from an interrupted run)" if present else "")
    )
    # hf_xet is used automatically when the server is Xet-capable; this makes it use all cores and
    # more memory, which a build machine has. Plain HTTP servers get huggingface_hub's own parallel,
    # range-resuming downloader. (huggingface_hub 2.x no longer uses hf_transfer.)
    os.environ.setdefault("HF_XET_HIGH_PERFORMANCE", "1")
    from huggingface_hub import snapshot_download

    start = time.monotonic()
    try:
        snapshot_download(
            snap.repo_id,
            revision=snap.sha,
            local_dir=partial,
            # Exact names, escaped: what we sized for the disk check is what gets downloaded.
            allow_patterns=[glob.escape(n) for n in snap.files],
            token=token or False,
            endpoint=hub,
            max_workers=DOWNLOAD_WORKERS,
        )
    except (HfHubHTTPError, httpx2.HTTPError, OSError) as e:
        raise _translate(e, repo_id=snap.repo_id, revision=snap.sha, token=token, hub=hub, partial=partial) from _cause(
            e, token
        )
    for name, size in snap.files.items():
        path = partial / name
        if not path.is_file() or path.stat().st_size != size:
            got = path.stat().st_size if path.is_file() else "no file"
            raise FetchError(
                f"download of {shown} is incomplete: `{name}` should be {size} bytes, got {got}; run again to resume"
            )
    # The published snapshot holds exactly the selected files: not huggingface_hub's per-file
    # bookkeeping, nor files an interrupted run of an older selection left behind.
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    for path in [p for p in partial.rglob("*") if p.is_file() or p.is_symlink()]:
        if path.relative_to(partial).as_posix() not in snap.files:
            path.unlink()
    elapsed = max(time.monotonic() - start, 1e-6)
    log(f"downloaded {shown}: {todo / 1e9:.2f} GB in {elapsed:.1f} s ({todo / 1e6 / elapsed:.0f} MB/s)")


def _cause(error: BaseException, token: str | None) -> BaseException | None:
    """``error`` as the ``__cause__`` of our error, unless its text would leak the token."""
    return None if token and token in str(error) else error


def _gated_message(repo_id: str, *, token: str | None, hub: str) -> str:
    if not token:
        return (
            f"the repository `{repo_id}` is gated: pass `hf_token` (a token of an account that accepted "
            f"its license at {hub}/{repo_id})"
        )
    return (
        f"the token passed as `hf_token` has no access to the gated repository `{repo_id}`: accept its "
        f"license at {hub}/{repo_id} with that token's account, or pass a token of an account that has"
    )


def _translate(
    e: BaseException,
    *,
    repo_id: str,
    revision: str | None,
    token: str | None,
    hub: str,
    partial: Path | None = None,
) -> BuilderError:
    """One huggingface_hub / network failure as a ``FetchError`` whose message names the fix."""
    rev = revision or "the default branch"
    resume = f"; files already complete are kept in {partial} and the next run resumes" if partial else ""
    if isinstance(e, GatedRepoError):
        msg = _gated_message(repo_id, token=token, hub=hub)
    elif isinstance(e, RepositoryNotFoundError):
        msg = f"repository `{repo_id}` not found on {hub}: check the id (org/name)" + (
            "; if it is private, check that `hf_token` can read it"
            if token
            else "; if it is private, pass `hf_token` (a token with read access)"
        )
    elif isinstance(e, RevisionNotFoundError):
        msg = (
            f"revision `{rev}` not found in `{repo_id}`: use a branch, tag or commit sha that exists "
            f"(see {hub}/{repo_id}/tree/main)"
        )
    elif isinstance(e, RemoteEntryNotFoundError):
        msg = f"a file of `{repo_id}` at {rev} vanished from {hub} during the download ({e}); run again"
    elif isinstance(e, HfHubHTTPError) and e.response.status_code == 401:
        msg = (
            f"token rejected by {hub}: check `hf_token` (it is invalid, expired or revoked)"
            if token
            else f"{hub} requires authentication for `{repo_id}`: pass `hf_token`"
        )
    elif isinstance(e, HfHubHTTPError) and e.response.status_code == 403:
        msg = (
            f"access to `{repo_id}` denied by {hub}: check that `hf_token` has read access to it "
            "(fine-grained tokens list the repos they may read)"
        )
    elif isinstance(e, HfHubHTTPError):
        msg = f"{hub} answered HTTP {e.response.status_code} for `{repo_id}` at {rev}: try again later{resume}"
    elif isinstance(e, OfflineModeIsEnabled):
        msg = (
            f"HF_HUB_OFFLINE is set and `{repo_id}` at {rev} is not in the download cache: unset "
            "HF_HUB_OFFLINE, or pin `revision` to the full sha of a cached snapshot"
        )
    elif isinstance(e, httpx2.ConnectError | LocalEntryNotFoundError):
        msg = f"cannot reach {hub} for `{repo_id}` ({e}): check the network, or HF_ENDPOINT if you use a mirror"
    elif isinstance(e, httpx2.TimeoutException):
        msg = f"{hub} did not answer in time for `{repo_id}` ({type(e).__name__}); check the network{resume}"
    elif isinstance(e, httpx2.HTTPError) or "Consistency check failed" in str(e):
        msg = (
            f"download of `{repo_id}` at {rev} failed: the connection to {hub} kept dropping mid-file and "
            f"huggingface_hub's retries (with resume) gave up ({type(e).__name__}: {e}){resume}"
        )
    elif isinstance(e, OSError) and modelcache.is_disk_full(e):
        msg = f"disk full while downloading `{repo_id}` ({e}); free space or move the cache{resume}"
    else:
        msg = f"download of `{repo_id}` at {rev} failed: {type(e).__name__}: {e}{resume}"
    return FetchError(redact(msg, token))
