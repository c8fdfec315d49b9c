"""The Cog model: inputs -> ``trtllm_builder`` pipeline -> ``cog.Path``.

Serve it with ``python -m cog.server.http`` (``COG_PREDICT_TYPE_STUB=predict.py:Predictor``), or
``cog predict`` / Replicate in the GPU image. What Cog 0.23 does, and why this file looks as it does:

* Cog captures Python's ``print`` but not a child process's own output, and a failed prediction's
  sync reply carries no logs: the pipeline streams every step line through :func:`_Log`, and its
  errors (``StepFailed`` ...) carry step, exit code and last lines in the message itself.
* Cancel arrives as ``CancelationException`` in this thread; the runner stops the step's process
  group and re-raises, and :meth:`Predictor.run` then deletes the prediction's directory. SIGTERM or
  SIGHUP to the worker does the same (``trtllm_builder/run/signals.py``), then the worker exits; and if
  the worker dies anyway (SIGKILL), each step's supervisor process stops the step's whole tree.
* A step's output reaches the prediction's logs bounded and rate-limited (coglet sends every log
  line with every webhook); every line is in ``build.log``, packed beside the manifest.
* coglet never deletes returned files: every prediction gets its own directory under
  ``$TMPDIR/trtllm-builder-predictions/``, and the next prediction deletes the previous one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import IO, Any

from cog import BaseRunner, Input, Path, Secret

from trtllm_builder.config.schema import BuildConfig
from trtllm_builder.config.source import read_config_text
from trtllm_builder.errors import ConfigError, SetupError
from trtllm_builder.fetch.modelcache import writable_cache_dir
from trtllm_builder.fetch.sources import ModelRef, classify, fetch_model, remote_size
from trtllm_builder.outputs.upload import S3Credentials
from trtllm_builder.pipeline import BuildOptions, build, default_cache_dir, prepare
from trtllm_builder.plan.gpu import detect_gpus
from trtllm_builder.plan.planner import Plan
from trtllm_builder.plan.tree import TrtllmTree, find_tree
from trtllm_builder.plan.versions import trtllm_version, version_from_source
from trtllm_builder.run.signals import install_worker_signals, set_interrupt_target
from trtllm_builder.run.stepcache import CACHE_MAX_SIZE_ENV, cache_bound_from_env
from trtllm_builder.secrets import collect, mask, scrub
from trtllm_builder.secrets import hf_token as resolve_hf_token

__all__ = ["PREDICTIONS_DIR_NAME", "Predictor"]

PREDICTIONS_DIR_NAME = "trtllm-builder-predictions"
_LOCK = ".prediction.lock"
_METRIC_BAD = re.compile(r"[^A-Za-z0-9]+")


def metric_key(name: str) -> str:
    """``name`` as a key Cog accepts: letters, digits and single inner underscores, starting with a letter."""
    key = _METRIC_BAD.sub("_", name).strip("_")
    return key if key[:1].isalpha() else f"m_{key}"


class _Log:
    """The pipeline's log sink: one ``print`` per line (what Cog captures), every form of every secret masked."""

    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = collect(secrets)

    def add(self, secrets: Sequence[str]) -> None:
        self.secrets = collect([*self.secrets, *secrets])

    def __call__(self, line: str) -> None:
        print(mask(line, self.secrets), flush=True)


class _Workspace:
    """Per-prediction directories under one root, each locked while its prediction (or output) is live.

    The lock of the latest prediction is held until the next prediction starts, so its returned
    archive survives until coglet has sent it; :meth:`sweep` then deletes every unlocked directory
    (this server's earlier ones, and those a crashed server left behind), never one in use.
    """

    def __init__(self, root: FsPath) -> None:
        self.root = root
        self._held: IO[str] | None = None

    def sweep(self) -> None:
        self._release()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for entry in sorted(self.root.iterdir()):
            if entry.is_symlink() or not entry.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
                continue
            try:
                with (entry / _LOCK).open("a") as fh:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    _remove(entry)
            except BlockingIOError:
                continue  # a live prediction of another server sharing this TMPDIR
            except FileNotFoundError:
                continue  # deleted meanwhile

    def new(self) -> FsPath:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = FsPath(tempfile.mkdtemp(prefix="p-", dir=self.root))
        fh = (path / _LOCK).open("a")
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        self._held = fh
        return path

    def discard(self, path: FsPath) -> None:
        _remove(path)
        self._release()

    def _release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


def _remove(path: FsPath) -> None:
    # A cancelled archive writer may still be closing files in there: never fail the cleanup.
    shutil.rmtree(path, ignore_errors=True)


def server_cache_bound(cache_dir: FsPath) -> int:
    """A long-running server must not fill its disk: ``$TRTLLM_BUILDER_CACHE_MAX_SIZE``, else half of the
    cache's filesystem (least recently used steps are evicted beyond it)."""
    from_env = cache_bound_from_env()
    if from_env is not None:
        return from_env
    probe = cache_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).total // 2


def _s3_credentials(
    key_id: Secret | None, secret: Secret | None, session: Secret | None, endpoint: str | None
) -> S3Credentials | None:
    def value(s: Secret | None) -> str | None:
        return (s.get_secret_value() if s is not None else None) or None

    if not (key_id or secret or session or endpoint):
        return None  # boto3's default chain (the image's environment)
    if bool(value(key_id)) != bool(value(secret)):
        raise ConfigError("give both `aws_access_key_id` and `aws_secret_access_key`, or neither")
    return S3Credentials(value(key_id), value(secret), value(session), None, endpoint or None)


def check_image(trtllm_dir: str | None = None) -> tuple[TrtllmTree, dict[str, str | None]]:
    """What a build needs from the image; raises ``SetupError`` naming what is missing."""
    tree = find_tree(trtllm_dir)
    exe = shutil.which("trtllm-build")
    if exe is None:
        raise SetupError(
            "`trtllm-build` is not on PATH: the image must install the `tensorrt_llm` package "
            "(requirements/trtllm-<version>.txt) into the Python environment that serves predictions"
        )
    installed = trtllm_version(None)
    in_tree = version_from_source(tree.root / "tensorrt_llm" / "version.py")
    if installed is None and in_tree is None:
        raise SetupError(
            f"cannot tell which TensorRT-LLM this image has: no installed `tensorrt_llm` distribution "
            f"and no readable {tree.root}/tensorrt_llm/version.py; rebuild the image (Dockerfile / cog.yaml)"
        )
    if installed is not None and in_tree is not None and installed != in_tree:
        raise SetupError(
            f"the TensorRT-LLM examples tree {tree.root} is version {in_tree} but tensorrt_llm {installed} "
            "is installed; the example scripts must match the installed package: check out the tree at "
            f"tag v{installed} (`bash scripts/fetch-trees.sh --version {installed} --force`, then rebuild the image)"
        )
    return tree, {"tensorrt_llm": installed or in_tree, "examples_tree": in_tree, "trtllm-build": exe}


class Predictor(BaseRunner):  # type: ignore[misc]  # cog ships no type information
    """Build a TensorRT-LLM engine archive from one YAML config."""

    def setup(self) -> None:
        """Check the image (quick: no import of TensorRT-LLM) and clean up after earlier servers."""
        self._tree, versions = check_image()
        install_worker_signals()  # setup() runs on the worker's main thread, where handlers can be set
        self._workspace = _Workspace(FsPath(tempfile.gettempdir()) / PREDICTIONS_DIR_NAME)
        self._cache_max_bytes = server_cache_bound(writable_cache_dir(default_cache_dir()))
        self._workspace.sweep()
        gpus = ", ".join(f"{g.name} (sm {g.compute_capability})" for g in detect_gpus()) or "none visible"
        print(
            f"TensorRT-LLM {versions['tensorrt_llm']}; examples tree {self._tree.root}; "
            f"trtllm-build {versions['trtllm-build']}; GPUs: {gpus}; "
            f"work dirs under {self._workspace.root}; step cache bound "
            f"{self._cache_max_bytes / 2**30:.0f} GiB (${CACHE_MAX_SIZE_ENV})",
            flush=True,
        )

    def run(
        self,
        config: Path = Input(  # noqa: B008 - Cog reads inputs from defaults
            description="The pipeline config (YAML): an http(s) URL or an upload. Both the project's form "
            "(`model`, `steps`, `output`) and Replicate cog-trt-llm's form (`model_id`, `example_name`, "
            "`convert_to_ft`/`build`) are accepted."
        ),
        hf_token: Secret | None = Input(  # noqa: B008
            default=None,
            description="Hugging Face token for gated or private models; overrides the config's `hf_token`. "
            "Never logged.",
        ),
        dry_run: bool = Input(
            default=False,
            description="Validate the config, plan the exact commands and check that the model is reachable, "
            "then return the plan as JSON (plan.json) instead of building.",
        ),
        output_format: str = Input(
            default="config",
            choices=["config", "engine", "triton"],
            description="What to pack: `engine` (engine + tokenizer at the archive root, as cog-triton expects), "
            "`triton` (a complete inflight_batcher_llm model repository), or `config` to use the config's "
            "`output.format`.",
        ),
        upload_url: str | None = Input(
            default=None,
            description="Also upload the archive to this s3://bucket/prefix (multipart, verified by checksum "
            "after upload); overrides the config's `output.upload`.",
        ),
        aws_access_key_id: Secret | None = Input(  # noqa: B008
            default=None, description="S3 access key id for `upload_url` (else the image's AWS environment)."
        ),
        aws_secret_access_key: Secret | None = Input(  # noqa: B008
            default=None, description="S3 secret access key for `upload_url`. Never logged."
        ),
        aws_session_token: Secret | None = Input(  # noqa: B008
            default=None, description="S3 session token for `upload_url`, for temporary credentials. Never logged."
        ),
        s3_endpoint_url: str | None = Input(
            default=None,
            description="Endpoint of an S3-compatible store (MinIO, R2, ...) for `upload_url`; default AWS S3.",
        ),
    ) -> Path:
        # as given: prepare() and build() strip it and refuse a malformed one (secrets.hf_token)
        token = (hf_token.get_secret_value() if hf_token is not None else None) or None
        log = _Log(collect([token], env=os.environ))  # the server's own credentials too
        s3 = _s3_credentials(aws_access_key_id, aws_secret_access_key, aws_session_token, s3_endpoint_url)
        if s3 is not None:
            log.add(s3.secrets())
        self._workspace.sweep()
        pdir = self._workspace.new()
        set_interrupt_target(threading.get_ident())  # SIGTERM/SIGHUP interrupt this thread like a cancel
        try:
            text = read_config_text(FsPath(config))
            cfg, plan = prepare(
                "config",
                trtllm_dir=self._tree.root,
                work_dir=pdir / "work",
                text=text,
                upload=upload_url or None,
                cache_dir=default_cache_dir(),
                hf_token=token,
                output_format=None if output_format == "config" else output_format,
            )
            log.add(collect(cfg.secrets, urls=[cfg.model.tar_url]))
            if dry_run:
                return Path(self._dry_run(cfg, plan, token, pdir / "out", log))
            out = pdir / "out" / cfg.output.name
            out.parent.mkdir()
            opts = BuildOptions(
                output=out,
                cache_dir=default_cache_dir(),
                cache_max_bytes=self._cache_max_bytes,
                hf_token=token,
                upload=upload_url or None,
                s3_credentials=s3,
                log=log,
                metric=self._metric,
            )
            result = build(cfg, plan, opts)
            return Path(result.archive)
        except BaseException as exc:
            # Failure or cancel: nothing of this prediction is kept (work dir, partial archive).
            self._workspace.discard(pdir)
            # Cog puts the message in the reply's `error`: masked, type (and exit code) kept
            scrub(exc, log.secrets)
            raise
        finally:
            set_interrupt_target(None)

    def _metric(self, name: str, value: float) -> None:
        self.record_metric(metric_key(name), value)

    def _dry_run(self, cfg: BuildConfig, plan: Plan, token: str | None, out_dir: FsPath, log: _Log) -> FsPath:
        log(plan.describe())
        ref = ModelRef(cfg.model.id, cfg.model.revision, cfg.model.tar_url)
        kind = classify(ref)
        if kind == "local":
            # used in place: checking it is listing it
            size: int | None = fetch_model(ref, token=None, cache_dir=default_cache_dir(), log=log).size_bytes
        else:
            size = remote_size(ref, token=resolve_hf_token(token, cfg.hf_token))
        shown = f"{size / 2**20:.1f} MiB" if size is not None else "size unknown"
        log(f"model `{cfg.model.id}` ({kind}) is reachable: {shown}")
        doc: dict[str, Any] = {
            "dry_run": True,
            "plan": plan.to_json(),
            "model": {"id": cfg.model.id, "source": kind, "size_bytes": size},
        }
        out_dir.mkdir()
        out = out_dir / "plan.json"
        tmp = out.with_suffix(".tmp")
        tmp.write_text(mask(json.dumps(doc, indent=2), log.secrets) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        return out
