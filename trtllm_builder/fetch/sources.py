"""Model sources: a Hugging Face repo, a local directory, or a tarball URL, fetched into the cache.

``fetch_model`` is the one entry point the pipeline calls; ``hub``, ``tarball`` and ``modelcache``
hold the details of each source and of the cache they share.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from trtllm_builder import secrets
from trtllm_builder.errors import ConfigError, FetchError
from trtllm_builder.fetch import hub, modelcache
from trtllm_builder.fetch.hub import TOKENIZER_FILES

__all__ = [
    "TOKENIZER_FILES",
    "FetchedModel",
    "ModelRef",
    "check_local_dir",
    "check_ref",
    "classify",
    "fetch_model",
    "hf_token",
    "local_path",
    "remote_size",
    "tokenizer_files",
]

SourceKind = Literal["hf", "local", "tar"]


@dataclass(frozen=True)
class ModelRef:
    """The model as the config names it."""

    id: str  # HF repo id "org/name", or a local path / "file://..." URL
    revision: str | None = None
    tar_url: str | None = None  # cog-trt-llm's model_tar_url (then `id` is only a display name)


@dataclass(frozen=True)
class FetchedModel:
    """A model directory on local disk, ready for conversion."""

    path: Path  # directory holding config.json, weights, tokenizer files
    id: str  # display id
    source: SourceKind
    revision: str | None  # resolved commit sha for hf; None otherwise
    size_bytes: int
    files: tuple[str, ...]  # relative paths present


def local_path(model_id: str) -> Path:
    """The directory a local model id (a path or ``file://`` URL) names."""
    if model_id.startswith("file://"):
        return Path(unquote(urlsplit(model_id).path))
    return Path(model_id).expanduser()


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("file://", "/", "./", "../", "~", ".\\")) or model_id in (".", "..")


def classify(ref: ModelRef) -> SourceKind:
    """Which source ``ref`` names; raises ``ConfigError`` if it names none. No I/O beyond ``os.path`` checks.

    An existing directory wins over a repo id of the same spelling (as in ``transformers``).
    """
    if ref.tar_url is not None:
        if urlsplit(ref.tar_url).scheme not in ("http", "https"):
            raise ConfigError(f"`model_tar_url` must be an http(s) URL, got `{secrets.mask_url(ref.tar_url)}`")
        if ref.revision is not None:
            raise ConfigError("`revision` applies to Hugging Face repos, not to `model_tar_url`; remove it")
        return "tar"
    if not ref.id:
        raise ConfigError("the model id is empty: give a Hugging Face repo id (org/name) or a local directory")
    path = local_path(ref.id)
    if os.path.isdir(path) or _looks_like_path(ref.id):
        if not os.path.isdir(path):
            raise ConfigError(f"local model directory {path} does not exist")
        if ref.revision is not None:
            raise ConfigError(f"`revision` applies to Hugging Face repos, not to the local directory {path}; remove it")
        return "local"
    # huggingface_hub's own rules for repo ids (imported here: local and tarball models never need it)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id  # type: ignore[attr-defined]

    try:
        validate_repo_id(ref.id)
    except HFValidationError as e:
        raise ConfigError(
            f"model `{ref.id}` is neither an existing directory nor a valid Hugging Face repo id "
            "(org/name: letters, digits, '-', '_', '.')"
        ) from e
    return "hf"


def check_ref(ref: ModelRef) -> SourceKind:
    """:func:`classify`, plus the checks that need no network: a local model must have a config.json
    and no file that resolves outside it (:func:`check_local_dir`)."""
    kind = classify(ref)
    if kind == "local":
        path = local_path(ref.id).resolve()
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"local model directory {path} has no config.json: point the model id at a Hugging Face "
                "model directory (config.json, weights, tokenizer files)"
            )
        check_local_dir(path)
    return kind


def _hf_cache_blobs(root: Path) -> Path | None:
    """``<repo>/blobs`` when ``root`` is a snapshot of a huggingface_hub cache (``<repo>/snapshots/<sha>``).

    huggingface_hub stores each file once in ``blobs/`` and links it from every snapshot with a
    relative link (``snapshots/<sha>/config.json -> ../../blobs/<etag>``): those links are the model.
    """
    if root.parent.name != "snapshots":
        return None
    blobs = root.parent.parent / "blobs"
    return blobs.resolve() if blobs.is_dir() else None


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def check_local_dir(path: Path) -> None:
    """Refuse a local model directory with links that resolve outside it.

    A build reads the model's files and packs its tokenizer files into the archive (and so into an
    upload): ``tokenizer.json -> /etc/passwd`` would ship that file. Links inside the directory, and
    a huggingface_hub cache snapshot's links into its ``blobs/``, are fine. Directory links are
    checked, never followed, so a link to ``/`` costs nothing.
    """
    root = Path(path).resolve()
    allowed = [root] + [b for b in (_hf_cache_blobs(root),) if b is not None]
    escapes: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            link = Path(dirpath) / name
            if not link.is_symlink():
                continue
            target = Path(os.path.realpath(link))
            if not any(_inside(a, target) for a in allowed):
                escapes.append(f"`{link.relative_to(root).as_posix()}` -> {target}")
    if escapes:
        shown = ", ".join(escapes[:10]) + (f" and {len(escapes) - 10} more" if len(escapes) > 10 else "")
        raise ConfigError(
            f"local model directory {root} has links that resolve outside it: {shown}. A build reads the "
            "model's files and packs its tokenizer files into the archive, so it refuses them: copy the real "
            "files into the directory (e.g. `cp -rL`), or remove the links"
        )


def hf_token(token: str | None) -> str | None:
    """The token to use, stripped and checked: ``token`` (the ``hf_token`` input or the config's), else
    ``HF_TOKEN``; never a token stored on disk. ``ConfigError`` for a malformed one (see secrets.py)."""
    return secrets.hf_token(token)


def remote_size(ref: ModelRef, *, token: str | None) -> int | None:
    """Bytes the download of ``ref`` will take, from metadata only; None for a local directory (or unknown)."""
    kind = classify(ref)
    if kind == "hf":
        return hub.resolve(ref.id, ref.revision, token=hf_token(token)).size
    if kind == "tar" and ref.tar_url is not None:
        from trtllm_builder.fetch import tarball  # requests: only tarball models need it

        return tarball.tar_size(ref.tar_url)
    return None


def fetch_model(
    ref: ModelRef,
    *,
    token: str | None,
    cache_dir: Path,
    free_disk_multiplier: float = 3.0,
    log: Callable[[str], None] = print,
) -> FetchedModel:
    """Make the model ``ref`` names available on local disk and describe it.

    Hugging Face repos and tarballs go to ``cache_dir`` (reused across runs, safe to share between
    processes); local directories are used in place, never copied or modified. Raises ``FetchError``
    (and ``PreflightError`` when the disk is too small) with a message that names the fix; the token
    never appears in a message or a log line.
    """
    kind = classify(ref)
    cache_dir = Path(cache_dir)
    revision: str | None = None
    if kind == "hf":
        tok = hf_token(token)
        hidden = secrets.collect([token, tok])
        # hub's errors mask the token themselves (hub_errors.translate); its log lines are masked here
        path, revision = hub.fetch(
            ref.id,
            ref.revision,
            token=tok,
            cache_dir=cache_dir,
            free_disk_multiplier=free_disk_multiplier,
            log=lambda line: log(secrets.mask(line, hidden)),
        )
    elif kind == "tar" and ref.tar_url is not None:  # classify() says "tar" only with a tar_url
        from trtllm_builder.fetch import tarball

        path = tarball.fetch_tar(ref.tar_url, cache_dir=cache_dir, free_disk_multiplier=free_disk_multiplier, log=log)
    else:
        path = local_path(ref.id).resolve()
        if not (path / "config.json").is_file():
            raise FetchError(
                f"local model directory {path} has no config.json: point the model id at a Hugging Face "
                "model directory (config.json, weights, tokenizer files)"
            )
        check_local_dir(path)
        log(f"using local model directory {path} in place")
    files, size = modelcache.list_files(path)
    return FetchedModel(path=path, id=ref.id, source=kind, revision=revision, size_bytes=size, files=files)


def tokenizer_files(model_dir: Path) -> list[Path]:
    """The tokenizer and generation-config files present at the top of ``model_dir``, sorted by name."""
    return sorted(
        p
        for p in Path(model_dir).iterdir()
        if p.is_file() and any(fnmatchcase(p.name, pattern) for pattern in TOKENIZER_FILES)
    )
