"""plan -> fetch -> run -> verify -> package, as plain functions.

The CLI and the Cog predictor both call :func:`prepare` then :func:`build`; everything that
talks to the outside (log sink, metrics, environment) is passed in.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtllm_builder import __version__
from trtllm_builder.checksums import sha256_file
from trtllm_builder.config.schema import BuildConfig, load_config
from trtllm_builder.config.source import read_config_text
from trtllm_builder.errors import ConfigError, OutputError, PreflightError, SetupError
from trtllm_builder.fetch.modelcache import writable_cache_dir
from trtllm_builder.fetch.modelconfig import resolve_recipe
from trtllm_builder.fetch.preflight import check_machine, raise_for_errors
from trtllm_builder.fetch.sources import (
    FetchedModel,
    ModelRef,
    check_ref,
    classify,
    fetch_model,
    local_path,
    tokenizer_files,
)
from trtllm_builder.outputs.serving import check_outputs, run_smoke_test, triton_members, triton_summary
from trtllm_builder.outputs.upload import S3Credentials, UploadResult, pack_and_upload
from trtllm_builder.package.archive import remove_stale_partials, write_archive
from trtllm_builder.plan import disk
from trtllm_builder.plan.argv import display
from trtllm_builder.plan.gpu import GpuInfo, detect_gpus
from trtllm_builder.plan.layout import Found, describe_dir, inspect_dir, locate
from trtllm_builder.plan.parsers import ParserCache
from trtllm_builder.plan.planner import Plan, PlannedStep, make_plan, model_dir_writes
from trtllm_builder.plan.translate import known_flags_from, translate
from trtllm_builder.plan.tree import TrtllmTree, find_tree
from trtllm_builder.plan.versions import serving_runtime, trtllm_version, version_mismatch
from trtllm_builder.progress import DEFAULT_INTERVAL_S
from trtllm_builder.run.buildlog import BUILD_LOG_NAME, BuildLog
from trtllm_builder.run.runner import run_step
from trtllm_builder.run.stepcache import CachedStep, Hold, StepCache, content_hash, step_key
from trtllm_builder.run.workdir import default_work_dir, owned_work_dir, remove_inside
from trtllm_builder.secrets import collect as collect_secrets
from trtllm_builder.secrets import hf_token as hf_token_of
from trtllm_builder.secrets import mask, mask_url, scrub, secrets_in_text, step_environment

__all__ = ["BuildOptions", "BuildResult", "StepRecord", "build", "build_secrets", "default_cache_dir", "prepare"]

Log = Callable[[str], None]
Metric = Callable[[str, float], None]


def default_cache_dir() -> Path:
    """``TRTLLM_BUILDER_CACHE``, else ``$XDG_CACHE_HOME/trtllm-builder`` (``~/.cache/trtllm-builder``)."""
    if env := os.environ.get("TRTLLM_BUILDER_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "trtllm-builder"


@dataclass
class BuildOptions:
    output: Path
    cache_dir: Path = field(default_factory=default_cache_dir)
    hf_token: str | None = None  # overrides the config's hf_token; never logged
    model_dir: Path | None = None  # use this local model instead of fetching the config's
    keep_work_dir: bool = False
    step_cache: bool = True  # reuse and resume finished steps (see stepcache.py)
    cache_max_bytes: int | None = None  # LRU bound of the step cache
    disk_budget: int | None = None  # most disk the build may add; default $TRTLLM_BUILDER_DISK_BUDGET
    backend_dir: Path | None = None  # Triton templates (output.format triton)
    upload: str | None = None  # s3://bucket/prefix; overrides output.upload
    s3_credentials: S3Credentials | None = None  # None: boto3's default chain
    log: Log = print
    metric: Metric | None = None
    env: Mapping[str, str] | None = None  # base environment of the steps (default: os.environ)
    progress_interval: float = DEFAULT_INTERVAL_S  # seconds between progress lines (pack, upload, checksums)


@dataclass(frozen=True)
class StepRecord:
    name: str
    argv: list[str]  # redacted
    exit_code: int | None  # None: skipped
    duration_s: float
    output_dir: str
    layout: str | None
    cached: bool = False
    skipped: bool = False  # not run: every later step came from the step cache
    peak_rss_bytes: int | None = None  # the step's process tree (runner/heartbeat); None when cached
    output_bytes: int | None = None  # in its output dir when it ended

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "argv": self.argv,
            "exit_code": self.exit_code,
            "duration_s": round(self.duration_s, 3),
            "output_dir": self.output_dir,
            "layout": self.layout,
            "cached": self.cached,
            "skipped": self.skipped,
            "peak_rss_bytes": self.peak_rss_bytes,
            "output_bytes": self.output_bytes,
        }


@dataclass
class BuildResult:
    archive: Path
    manifest: dict[str, Any]
    steps: list[StepRecord]
    work_dir: Path
    upload: UploadResult | None = None


def prepare(
    config_source: str | Path,
    *,
    trtllm_dir: str | os.PathLike[str] | None = None,
    work_dir: Path | None = None,
    text: str | None = None,
    backend_dir: str | os.PathLike[str] | None = None,
    upload: str | None = None,
    cache_dir: Path | None = None,
    hf_token: str | None = None,
    model_dir: Path | None = None,
    output_format: str | None = None,
) -> tuple[BuildConfig, Plan]:
    """Read, validate and plan a config, output section included. No model download.

    Each step's args are checked against its script's own parser (read once per script version
    and cached in ``cache_dir``). A ``recipe:`` reads the model's config.json first (a local file,
    or that one small file from the Hub; ``model_dir`` overrides the config's model).
    """
    cache = writable_cache_dir(cache_dir or default_cache_dir())
    if text is None:
        text = read_config_text(config_source)
    # a config URL's query (a signature) must not appear in the config's errors
    source = mask_url(config_source) if isinstance(config_source, str) else str(config_source)
    try:
        config = load_config(text, source=source)
    except ConfigError as exc:  # pydantic quotes wrong values: never a secret's
        raise scrub(exc, secrets_in_text(text)) from None
    config = dataclasses.replace(config, hf_token=(config.hf_token or "").strip() or None)
    token = hf_token_of(hf_token, config.hf_token)  # refuses a malformed token before any request
    if output_format is not None and output_format != config.output.format:
        # an override of output.format (the predictor's input); triton options only go with triton
        triton = config.output.triton if output_format == "triton" else None
        config = dataclasses.replace(
            config, output=dataclasses.replace(config.output, format=output_format, triton=triton)
        )
    model = config.model
    check_ref(ModelRef(str(model_dir)) if model_dir else ModelRef(model.id, model.revision, model.tar_url))
    tree = find_tree(trtllm_dir)
    release = trtllm_version(tree.root)
    if mismatch := version_mismatch(config.trtllm_version, release):
        raise PreflightError(mismatch)  # before any parser is read or anything is fetched
    # --- args checked against the real parsers; recipes expanded (see parsers.py, recipes.py) ---
    parsers = ParserCache(cache, version=release)
    # cog-trt-llm's form: translated onto this tree's release, flag by flag (see translate.py)
    config = translate(config, tree, known_flags=known_flags_from(parsers, tree), release=release)
    config = resolve_recipe(config, token=token, cache_dir=cache, local_dir=model_dir)
    roots = [cache / "models", cache / "tars"]  # cached snapshots: shared by every later build
    ref = ModelRef(str(model_dir)) if model_dir else ModelRef(model.id, model.revision, model.tar_url)
    if classify(ref) == "local":
        roots.insert(0, local_path(ref.id).resolve())
    plan = make_plan(config, tree, work_dir or default_work_dir(text), parsers=parsers, model_roots=roots)
    check_outputs(config, tree, backend=backend_dir, upload=upload, plan=plan, parsers=parsers)
    return config, plan


def build_secrets(config: BuildConfig, opts: BuildOptions) -> list[str]:
    """Every form of every secret a build knows (see secrets.py): the list its sinks mask."""
    s3 = opts.s3_credentials.secrets() if opts.s3_credentials else []
    return collect_secrets(
        [opts.hf_token, config.hf_token, *s3],
        urls=[config.model.tar_url, config.output.upload, opts.upload],
        env=opts.env if opts.env is not None else os.environ,
    )


def _step_env(opts: BuildOptions, token: str | None) -> dict[str, str]:
    # no credential of the environment (AWS keys ...) reaches a step; the HF token only through HF_TOKEN
    env = step_environment(opts.env if opts.env is not None else os.environ, hf_token=token)
    env["PYTHONUNBUFFERED"] = "1"  # so a Python step's output arrives line by line
    return env


def _link_model(work_dir: Path, model: Path) -> Path:
    link = work_dir / "model"
    if link.is_symlink() or link.exists():
        remove_inside(work_dir, link)
    link.symlink_to(model, target_is_directory=True)
    return link


def _verify(step_name: str, expect: str, out_dir: Path, log: Log) -> Found | None:
    if expect == "none":
        return None
    found = locate(out_dir, expect)  # type: ignore[arg-type]
    what = {"checkpoint": "TensorRT-LLM checkpoint", "engine": "TensorRT-LLM engine"}.get(expect, "output")
    if found is None:
        want = (
            "config.json + rank<N>.safetensors (or config.ini + *.bin for old converters)"
            if expect == "checkpoint"
            else "config.json + rank<N>.engine (or <model>_<dtype>_tp<W>_rank<N>.engine for old builders)"
        )
        raise OutputError(
            f"step `{step_name}` exited 0 but produced no {what} in {out_dir} or its sub-folders: expected {want}; "
            f"found: {describe_dir(out_dir)}. Check the step's output flags point at {out_dir}"
        )
    if found.problems:
        raise OutputError(
            f"step `{step_name}` produced an incomplete {what} in {found.path}: "
            + "; ".join(found.problems)
            + f". Found: {describe_dir(found.path)}"
        )
    if found.path != out_dir:
        log(f"[{step_name}] output found in sub-folder {found.path.relative_to(out_dir)}/ of {out_dir}")
    log(f"[{step_name}] verified {found.layout.replace('_', ' ')} (world size {found.world_size}) in {found.path}")
    return found


def _engine_summary(found: Found) -> dict[str, Any]:
    cfg = found.config
    nested = cfg.get("pretrained_config")
    pre: dict[str, Any] = nested if isinstance(nested, dict) else cfg
    raw_mapping = pre.get("mapping")
    mapping: dict[str, Any] = raw_mapping if isinstance(raw_mapping, dict) else {}
    return {
        "layout": found.layout,
        "world_size": found.world_size,
        "tp_size": mapping.get("tp_size", found.world_size),
        "pp_size": mapping.get("pp_size", 1),
        "dtype": pre.get("dtype"),
        "architecture": pre.get("architecture"),
        "version": cfg.get("version"),
        "build_config": {
            k: v
            for k, v in (cfg.get("build_config") or {}).items()
            if k in {"max_batch_size", "max_input_len", "max_seq_len", "max_num_tokens", "max_beam_width"}
        },
    }


def _engine_members(engine: Found, model_dir: Path, log: Log) -> list[tuple[str, Path]]:
    members = engine.members()  # rank files, managed weights, lora/<i>/..., quant_cfg.json
    taken = {n for n, _ in members}
    left = sorted(p.name for p in engine.path.iterdir() if p.name not in taken and p.name != "lora")
    if left:  # e.g. a timing cache written into the engine dir: not part of the engine
        log(f"not packed (not part of the engine): {', '.join(left)}")
    for tok in tokenizer_files(model_dir):
        if tok.name not in taken:  # the engine's config.json wins at the root (cog-triton reads it there)
            members.append((tok.name, tok))
            taken.add(tok.name)
    return members


def _manifest(
    config: BuildConfig,
    plan: Plan,
    model: FetchedModel,
    records: list[StepRecord],
    engine: Found,
    gpus: list[GpuInfo],
    tree: TrtllmTree,
) -> dict[str, Any]:
    version = trtllm_version(tree.root)
    return {
        "format_version": 1,
        "tool": {"name": "trtllm-builder", "version": __version__},
        "created_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": config.raw,
        "model": {"id": model.id, "source": model.source, "revision": model.revision},
        "trtllm": {"version": version},
        # an engine runs only under the TensorRT-LLM that built it: the runtimes that ship it
        "serving": serving_runtime(version),
        "gpus": [{"name": g.name, "compute_capability": g.compute_capability} for g in gpus],
        "engine": _engine_summary(engine),
        "steps": [r.as_dict() for r in records],
        # a cog-trt-llm config: what it was translated into, and why each flag changed
        "translation": dataclasses.asdict(config.translation) if config.translation is not None else None,
        "output": {"format": config.output.format, "name": config.output.name},
        "smoke_test": None,
        "upload": None,
        "files": [],
    }


def build(config: BuildConfig, plan: Plan, opts: BuildOptions) -> BuildResult:
    """Run the plan and write the archive to ``opts.output``. Raises a ``BuilderError`` on failure."""
    secrets = build_secrets(config, opts)
    # every line goes to build.log; steps' output reaches opts.log bounded (see buildlog.py)
    log = blog = BuildLog(opts.log, secrets=secrets)
    token = hf_token_of(opts.hf_token, config.hf_token)
    writable_cache_dir(opts.cache_dir)
    out_plan = check_outputs(config, plan.tree, backend=opts.backend_dir, upload=opts.upload)
    for step in plan.steps:
        if step.program and not os.path.isabs(step.program[0]) and shutil.which(step.program[0]) is None:
            raise SetupError(f"step `{step.name}` needs `{step.program[0]}`, which is not on PATH")
    # --- preflight: refuse in seconds, before any download, a plan this machine cannot run ---
    for note in plan.notes:
        log(f"note: {note}")
    if config.translation is not None:  # what a cog-trt-llm config became (plan prints it as a config to copy)
        log(f"cog-trt-llm config translated onto TensorRT-LLM {config.translation.release}:")
        for note in config.translation.notes:
            log(f"  translation: {note}")
    gpus = detect_gpus()  # once per build: preflight, cache keys and the manifest agree
    findings = check_machine(
        plan, cache_dir=opts.cache_dir, token=token, local_model=opts.model_dir, gpus=gpus,
        step_cache=opts.step_cache, output=opts.output, disk_budget=opts.disk_budget,
    )  # fmt: skip
    for finding in findings:
        log(f"preflight {finding}")
    raise_for_errors(findings)
    start = time.monotonic()
    with owned_work_dir(plan.work_dir) as work_dir, contextlib.ExitStack() as held:
        blog.open(work_dir / BUILD_LOG_NAME)
        held.callback(blog.close)
        log(f"work dir: {work_dir} (every line of the build is kept in {BUILD_LOG_NAME} there)")
        remove_stale_partials(opts.output, log=log)
        if opts.model_dir is not None:
            model = fetch_model(ModelRef(str(opts.model_dir)), token=None, cache_dir=opts.cache_dir, log=log)
            model = FetchedModel(model.path, config.model.id, "local", None, model.size_bytes, model.files)
        else:
            ref = ModelRef(config.model.id, config.model.revision, config.model.tar_url)
            model = fetch_model(ref, token=token, cache_dir=opts.cache_dir, log=log)
        _link_model(work_dir, model.path)
        lean = _disk_mode(plan, model.size_bytes, opts, work_dir, log)
        env = _step_env(opts, token)
        cache = (
            StepCache(opts.cache_dir, max_bytes=opts.cache_max_bytes, log=log, progress_interval=opts.progress_interval)
            if opts.step_cache
            else None
        )
        keys = _step_keys(plan, model, opts.cache_dir, gpus) if cache else {}
        outputs: dict[str, Path] = {}
        records: list[StepRecord] = []
        last_engine: Found | None = None
        holds: dict[str, Hold] = {}
        shortcut = _cached_tail(plan, cache, keys, log) if cache else {}
        for i, step in enumerate(plan.steps, 1):
            # again now that the model link exists: no link or path may lead a step into the model
            if writes := model_dir_writes(plan, step, outputs):
                raise ConfigError(f"step `{step.name}` would write into the model:", problems=writes)
            if cache and step.name in shortcut:
                found, record = _reuse_tail(
                    step, i, plan, outputs, cache, shortcut[step.name], held, holds, secrets, blog
                )
            else:
                found, record = _run_or_reuse(
                    step, i, plan, outputs, cache, keys.get(step.name), held, holds, env, secrets, blog
                )
            if opts.metric:
                opts.metric(f"step_{step.name}_seconds", round(record.duration_s, 3))
            if found is not None:
                outputs[step.name] = found.path
                if found.layout in ("engine", "legacy_engine"):
                    last_engine = found
            records.append(record)
            if cache is None:
                _drop_unneeded(plan, i, outputs, work_dir, log)
            elif lean:
                _drop_cached(plan, i, work_dir, cache, holds, log)
        if last_engine is None:
            raise OutputError("no step produced an engine; the last build step must write one")
        manifest = _manifest(config, plan, model, records, last_engine, gpus, plan.tree)
        if config.smoke_test is not None:
            manifest["smoke_test"] = run_smoke_test(
                config.smoke_test, plan.tree, last_engine, work_dir / "model",
                cwd=work_dir, env=env, secrets=secrets, log=log,
            )  # fmt: skip
        if out_plan.format == "triton":
            repo = work_dir / "triton_model_repo"
            if repo.exists():  # left by an earlier, failed run in this work dir
                remove_inside(work_dir, repo)
            members = triton_members(out_plan, last_engine, model.path, repo)
            manifest["output"]["triton"] = triton_summary(out_plan)
            mount = out_plan.triton.mount_path if out_plan.triton else "/models"
            log(f"Triton model repository verified: {len(members)} files; mount it at {mount}")
        else:
            members = _engine_members(last_engine, model.path, log)
        # the packed engine files must still be what their step cache records say (item 4, #14)
        expect = _recorded_hashes(members, holds.values())
        blog.close()  # packed as it is now; lines from here on are appended after packing
        members.append((BUILD_LOG_NAME, work_dir / BUILD_LOG_NAME))
        uploaded: UploadResult | None = None
        if out_plan.upload:
            manifest["upload"] = {"url": out_plan.upload}
            _, uploaded = pack_and_upload(
                members, opts.output, manifest, out_plan.upload, credentials=opts.s3_credentials, log=log,
                expect=expect, interval=opts.progress_interval,
            )  # fmt: skip
        else:
            write_archive(members, opts.output, manifest, log=log, expect=expect, interval=opts.progress_interval)
        blog.open(work_dir / BUILD_LOG_NAME, append=True)
        size = opts.output.stat().st_size
        if opts.metric:
            opts.metric("archive_bytes", size)
            opts.metric("build_seconds", round(time.monotonic() - start, 3))
        log(f"archive: {opts.output} ({size / 2**20:.1f} MiB)")
    if not opts.keep_work_dir:
        with contextlib.suppress(OSError):
            shutil.rmtree(work_dir)
    return BuildResult(opts.output, manifest, records, work_dir, uploaded)


# --- one step: run it, or reuse it from the step cache ---------------------------------------------


def _run_or_reuse(
    step: PlannedStep,
    index: int,
    plan: Plan,
    outputs: Mapping[str, Path],
    cache: StepCache | None,
    key: str | None,
    held: contextlib.ExitStack,
    holds: dict[str, Hold],
    env: Mapping[str, str],
    secrets: list[str],
    log: BuildLog,
) -> tuple[Found | None, StepRecord]:
    work_dir = plan.work_dir
    argv = plan.argv(step, outputs)
    log(f"==> [{index}/{len(plan.steps)}] {step.name}: {display(argv, secrets)}")
    with cache.lock(key) if cache and key else contextlib.nullcontext():
        hit = cache.lookup(key) if cache and key else None
        found: Found | None = None
        if cache and hit is not None:
            problems = cache.verify(hit)  # once per reuse: sizes, then every file's sha256
            if not problems:
                holds[step.name] = cache.hold(hit, held)
                found, problems = _restore(step, hit, work_dir, log)
            if problems:
                if (ours := holds.pop(step.name, None)) is not None:
                    ours.release()
                _discard(cache, step, hit, problems, log)
                hit = None
        if hit is not None:
            rc, duration, cached = int(hit.meta.get("exit_code", 0)), float(hit.meta.get("duration_s", 0)), True
            figures: tuple[int | None, int | None] = (None, None)
        else:
            if step.output_dir.exists() or step.output_dir.is_symlink():
                remove_inside(work_dir, step.output_dir)
            step.output_dir.mkdir(parents=True, exist_ok=True)
            # the step's tree holds these while any of it lives: a rerun never runs beside a leftover
            locks = [work_dir / ".step.lock"] + ([cache.root / f"{key}.run"] if cache and key else [])
            log.start_output(step.name)
            try:
                res = run_step(
                    argv, name=step.name, cwd=step.cwd, env=env, secrets=secrets, timeout=step.timeout,
                    emit=log.output, note=log, output_dir=step.output_dir, locks=locks,
                )  # fmt: skip
            finally:
                log.end_output()
            log(f"<== {step.name} finished in {res.duration_s:.1f} s")
            rc, duration, cached = res.returncode, res.duration_s, False
            figures = (res.peak_rss_bytes, res.output_bytes)
            found = _verify(step.name, step.expect, step.output_dir, log)
            if cache and key and found is not None:
                found = _store(cache, key, step, found, rc, duration, held, holds, log)
    where = str(found.path if found else step.output_dir)
    layout = found.layout if found else None
    record = StepRecord(
        step.name, [mask(a, secrets) for a in argv], rc, duration, where, layout, cached,
        peak_rss_bytes=figures[0], output_bytes=figures[1],
    )  # fmt: skip
    return found, record


def _discard(
    cache: StepCache, step: PlannedStep, hit: CachedStep, problems: list[str], log: Log, *, rerun: bool = True
) -> None:
    shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
    then = f"running `{step.name}` again" if rerun else "no step that runs needs it, so it is skipped"
    log(f"[{step.name}] step cache entry {hit.key[:12]} is damaged ({shown}): discarded; {then}")
    cache.discard(hit.key)


_ENGINE_LAYOUTS = ("engine", "legacy_engine")
# what to do with a step whose later steps all come from the step cache
_Shortcut = tuple[str, CachedStep | None]  # ("verified" | "unread" | "skip", entry)


def _cached_tail(plan: Plan, cache: StepCache, keys: Mapping[str, str], log: Log) -> dict[str, _Shortcut]:
    """When the plan's last steps are all in the step cache, no earlier step needs to run.

    The tail's last engine is what gets packed: it is verified now (once). Every other step's
    output is read by no step that runs, so an entry is linked back unverified ("unread") and a
    step without one (dropped to save disk, or evicted) is skipped. Empty when the tail holds no
    engine or its engine is damaged (then the steps run or are reused one by one, as usual).
    """
    tail: list[tuple[PlannedStep, CachedStep]] = []
    for step in reversed(plan.steps):
        key = keys.get(step.name)
        hit = cache.lookup(key) if key else None
        if hit is None:
            break
        tail.append((step, hit))
    tail.reverse()
    engines = [(s, h) for s, h in tail if h.meta.get("layout") in _ENGINE_LAYOUTS]
    if not engines:
        return {}
    final_step, final = engines[-1]
    problems = cache.verify(final)
    if problems:
        _discard(cache, final_step, final, problems, log)
        return {}
    start = plan.steps.index(tail[0][0])
    tail_hits = {s.name: h for s, h in tail}
    out: dict[str, _Shortcut] = {}
    for i, step in enumerate(plan.steps):
        if i >= start:
            out[step.name] = ("verified" if step is final_step else "unread", tail_hits[step.name])
        else:
            key = keys.get(step.name)
            hit = cache.lookup(key) if key else None
            out[step.name] = ("unread", hit) if hit is not None else ("skip", None)
    return out


def _reuse_tail(
    step: PlannedStep,
    index: int,
    plan: Plan,
    outputs: Mapping[str, Path],
    cache: StepCache,
    shortcut: _Shortcut,
    held: contextlib.ExitStack,
    holds: dict[str, Hold],
    secrets: list[str],
    log: Log,
) -> tuple[Found | None, StepRecord]:
    """A step of a build whose later steps all come from the step cache (see :func:`_cached_tail`)."""
    mode, hit = shortcut
    argv = plan.argv(step, outputs)
    log(f"==> [{index}/{len(plan.steps)}] {step.name}: {display(argv, secrets)}")
    shown = [mask(a, secrets) for a in argv]
    if hit is None:
        log(f"<== {step.name}: skipped: not in the step cache, and no step that runs needs its output")
        return None, StepRecord(step.name, shown, None, 0.0, str(step.output_dir), None, False, skipped=True)
    holds[step.name] = cache.hold(hit, held)
    found, problems = _restore(step, hit, plan.work_dir, log, note="; verified" if mode == "verified" else _UNREAD)
    if problems and mode == "unread":  # damaged, but nothing needs it
        holds.pop(step.name).release()
        _discard(cache, step, hit, problems, log, rerun=False)
        return None, StepRecord(step.name, shown, None, 0.0, str(step.output_dir), None, False, skipped=True)
    if problems:  # a layout the record cannot explain: an entry stored by another version of the tool
        raise OutputError(
            f"step cache entry {hit.key} for `{step.name}` does not hold a valid output ({'; '.join(problems)}); "
            f"delete {hit.output.parent} and run the build again"
        )
    rc, duration = int(hit.meta.get("exit_code", 0)), float(hit.meta.get("duration_s", 0))
    where = str(found.path if found else step.output_dir)
    return found, StepRecord(step.name, shown, rc, duration, where, found.layout if found else None, True)


_UNREAD = "; not verified, since no step that runs reads it"


# --- step cache and disk budget -------------------------------------------------------------------


def _program_hash(step: PlannedStep) -> str:
    """Content hash of what the step runs: the script, or the command's executable."""
    target = step.script or Path(shutil.which(step.program[0]) or step.program[0])
    try:
        return sha256_file(Path(target).resolve())
    except OSError:
        return f"unreadable:{target}"


def _step_keys(plan: Plan, model: FetchedModel, cache_dir: Path, gpus: list[GpuInfo]) -> dict[str, str]:
    """Each step's cache key; it chains the keys of every earlier step."""
    if model.source == "hf" and model.revision:
        ident: dict[str, Any] = {"hf": model.id, "revision": model.revision}
    else:
        ident = {"content": content_hash(model.path, memo_dir=cache_dir)}
    common = {
        "v": 1,
        "model": ident,
        "trtllm": trtllm_version(plan.tree.root),
        "gpus": sorted({g.compute_capability for g in gpus}),
    }
    keys: dict[str, str] = {}
    for step in plan.steps:
        parts = {
            **common,
            "step": step.name,
            "program": _program_hash(step),
            "args": list(step.args),  # placeholders unresolved: paths are normalised
            "expect": step.expect,
            "out": step.output_dir.relative_to(plan.work_dir).as_posix(),
            "previous": list(keys.values()),
        }
        keys[step.name] = step_key(parts)
    return keys


def _restore(
    step: PlannedStep, hit: CachedStep, work_dir: Path, log: Log, *, note: str = "; verified"
) -> tuple[Found | None, list[str]]:
    """Make a cached output appear where the step would have written it (a link into the cache).

    Returns the output found there and what is wrong with it (empty: usable).
    """
    rel = str(hit.meta.get("located", "."))
    target = Path(os.path.normpath(step.output_dir / rel))
    if not target.is_relative_to(work_dir):
        return None, ["it points outside the work dir"]
    if step.output_dir.exists() or step.output_dir.is_symlink():
        remove_inside(work_dir, step.output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(hit.output, target_is_directory=True)
    if step.expect == "none":
        return None, []
    found = inspect_dir(target)
    if found is None or found.problems:
        remove_inside(work_dir, target)
        return None, (found.problems if found else ["it holds no checkpoint or engine"])
    took = float(hit.meta.get("duration_s", 0))
    log(f"<== {step.name}: reused from the step cache ({hit.key[:12]}{note}); it took {took:.1f} s when built")
    return found, []


def _store(
    cache: StepCache,
    key: str,
    step: PlannedStep,
    found: Found,
    rc: int,
    duration: float,
    held: contextlib.ExitStack,
    holds: dict[str, Hold],
    log: Log,
) -> Found:
    """Move a verified output into the cache and link it back; returns the output at its new home."""
    located = os.path.relpath(found.path, step.output_dir)
    entry = cache.store(
        key,
        found.path,
        {"step": step.name, "located": located, "exit_code": rc, "duration_s": round(duration, 3),
         "layout": found.layout},
    )  # fmt: skip
    holds[step.name] = cache.hold(entry, held)
    found.path.symlink_to(entry.output, target_is_directory=True)
    log(f"[{step.name}] output kept in the step cache ({key[:12]})")
    return Found(found.path, found.layout, found.world_size, found.config, found.problems)


def _recorded_hashes(members: list[tuple[str, Path]], holds: Iterable[Hold]) -> dict[str, tuple[str, str]]:
    """Archive name -> (sha256, where recorded) for members that are files of a step cache entry.

    Matched by inode, so the engine format's links into the cache and the Triton repository's hard
    links are both found; a copy is not (it was hashed when it was made from a verified entry).
    """
    recorded: dict[tuple[int, int], tuple[str, str]] = {}
    for hold in holds:
        entry = hold.entry
        what = (
            f"the step cache record of `{entry.meta.get('step', '?')}` (entry {entry.key[:12]}; the next build "
            "verifies it and rebuilds it)"
        )
        for rel, digest in entry.recorded_sha256().items():
            with contextlib.suppress(OSError):
                st = (entry.output / rel).stat()
                recorded[(st.st_dev, st.st_ino)] = (digest, what)
    out: dict[str, tuple[str, str]] = {}
    for name, src in members:
        with contextlib.suppress(OSError):
            st = src.stat()
            if (hit := recorded.get((st.st_dev, st.st_ino))) is not None:
                out[name] = hit
    return out


def _drop_unneeded(plan: Plan, done: int, outputs: Mapping[str, Path], work_dir: Path, log: Log) -> None:
    """Without a step cache, delete outputs that no later step reads (see :func:`.disk.unneeded_after`)."""
    for step in disk.unneeded_after(plan, done):
        if step.name not in outputs or not step.output_dir.exists():
            continue
        remove_inside(work_dir, step.output_dir)
        log(f"[{step.name}] output deleted: no later step needs it (disk budget)")


def _disk_mode(plan: Plan, model_bytes: int, opts: BuildOptions, work_dir: Path, log: Log) -> bool:
    """Before the first step, the model on disk: does the build fit? True: keep only what resume needs.

    With the step cache, every output is kept unless that does not fit the free space (or the disk
    budget); then the cache keeps only what resume needs ("lean": an output is dropped from it once
    the step that reads it has verified its own). Raises :class:`PreflightError` when even that does
    not fit (the model's size may have been unknown at preflight, or the disk filled up since).
    """
    budget = opts.disk_budget if opts.disk_budget is not None else disk.budget_from_env()
    places = disk.places_for(opts.cache_dir, work_dir, opts.output)
    devices = disk.devices_of(places)
    if opts.step_cache:
        keep = disk.estimate(plan, model_bytes, download=False, step_cache=True, lean=False, devices=devices)
        if disk.fits(keep, places, budget):
            return False
    least = disk.estimate(plan, model_bytes, download=False, step_cache=opts.step_cache, lean=True, devices=devices)
    if short := disk.shortfalls(least, places, budget):
        raise PreflightError(
            f"not enough disk: at its peak the build needs about {'; '.join(short)} ({least.describe()}): "
            "free some space, raise the disk budget, or point the work dir (--work-dir), the cache (--cache-dir) "
            "and the archive (-o) at a larger disk"
        )
    if not opts.step_cache:
        return False
    log(
        f"disk: keeping every step's output in the step cache would take about {disk.gib(keep.total)} at the peak "
        f"({'; '.join(disk.shortfalls(keep, places, budget))}): the step cache keeps only what resume needs, about "
        f"{disk.gib(least.total)} at the peak (an output is dropped from it once the step that reads it has "
        "built and verified its own)"
    )
    return True


def _drop_cached(plan: Plan, done: int, work_dir: Path, cache: StepCache, holds: dict[str, Hold], log: Log) -> None:
    """Lean mode: drop from the step cache the outputs no later step reads (resume needs only later ones)."""
    for step in disk.unneeded_after(plan, done):
        held = holds.pop(step.name, None)
        if held is None:  # not from the cache, or gone already
            continue
        if step.output_dir.exists() or step.output_dir.is_symlink():
            remove_inside(work_dir, step.output_dir)
        size = disk.gib(int(held.entry.meta.get("size", 0)))
        what = {"checkpoint": "checkpoint", "legacy_checkpoint": "checkpoint"}.get(
            str(held.entry.meta.get("layout")), "output"
        )
        if cache.drop(held.entry.key, held):
            log(
                f"[{step.name}] dropped its cached {what} ({size}) from the step cache: no later step reads it and "
                f"keeping it does not fit the disk (see `disk:` above); a build that needs it again reruns "
                f"`{step.name}`"
            )
        else:
            log(f"[{step.name}] cached {what} kept: another build is using it")
