"""Command line: ``trtllm-builder plan|build|inspect|warm-parsers``.

Exit codes: 0 ok; 1 a build/step/packaging failure; 2 an invalid config or a plan that cannot
succeed here (``plan`` exits 0 or 2, nothing else); 3 a broken setup for ``build`` (no TensorRT-LLM
tree, missing tools); 130 interrupted by Ctrl-C (SIGINT), 143 stopped by SIGTERM, 129 by SIGHUP
(128 + the signal's number, as a shell reports a process the signal killed). Every stop signal is
handled like Ctrl-C: the running step's whole process tree is stopped, the partial archive removed,
and a line on stderr says so.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from trtllm_builder import __version__
from trtllm_builder.errors import BuilderError, Interrupted
from trtllm_builder.run.signals import cli_signals
from trtllm_builder.run.stepcache import cache_bound_from_env
from trtllm_builder.sizes import parse_size

__all__ = ["main"]


def _err(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="trtllm-builder",
        description="Turn a Hugging Face model into a TensorRT-LLM engine archive from one YAML config.",
    )
    p.add_argument("--version", action="version", version=f"trtllm-builder {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("config", help="pipeline config: a YAML file path or an http(s) URL")
        sp.add_argument(
            "--trtllm-dir",
            help="TensorRT-LLM checkout with examples/ (default: $TRTLLM_DIR, else /src/TensorRT-LLM)",
        )
        sp.add_argument(
            "--work-dir",
            type=Path,
            help="directory the tool owns for this build (default: a stable temp dir per config)",
        )
        sp.add_argument(
            "--backend-dir",
            type=Path,
            help="tensorrtllm_backend with all_models/inflight_batcher_llm, for output.format triton "
            "(default: $TRTLLM_BACKEND_DIR, else <trtllm-dir>/triton_backend)",
        )
        sp.add_argument(
            "--upload",
            metavar="S3_URL",
            help="upload the archive to s3://bucket/prefix (overrides output.upload; credentials from the "
            "usual AWS environment variables or files, never from the command line)",
        )

    sp = sub.add_parser("plan", help="validate the config and print the exact commands; runs nothing")
    common(sp)
    sp.add_argument("--json", action="store_true", help="print the plan as JSON")

    sb = sub.add_parser("build", help="run the pipeline and write the engine archive")
    common(sb)
    sb.add_argument("--output", "-o", type=Path, help="archive path (default: ./<output.name>, engine.tar.gz)")
    sb.add_argument(
        "--cache-dir",
        type=Path,
        help="model and step cache (default: $TRTLLM_BUILDER_CACHE, else ~/.cache/trtllm-builder)",
    )
    sb.add_argument(
        "--model-dir",
        type=Path,
        help="use this local model directory instead of fetching the config's model",
    )
    sb.add_argument("--keep-work-dir", action="store_true", help="keep the work dir after a successful build")
    sb.add_argument(
        "--no-cache",
        action="store_true",
        help="do not reuse or keep finished steps; outputs no later step needs are deleted as soon as possible",
    )
    sb.add_argument(
        "--cache-max-size",
        type=_size,
        metavar="SIZE",
        help="bound the step cache, e.g. 500G; least recently used entries are evicted "
        "(default: $TRTLLM_BUILDER_CACHE_MAX_SIZE, else unbounded)",
    )
    sb.add_argument(
        "--disk-budget",
        type=_size,
        metavar="SIZE",
        help="most disk the build may add (download, step outputs, archive), e.g. 300G; with the step cache, "
        "a build that would not fit keeps only what resume needs (default: $TRTLLM_BUILDER_DISK_BUDGET, "
        "else the free space)",
    )

    si = sub.add_parser("inspect", help="verify an archive's checksums and whether this machine can serve it")
    si.add_argument("archive", type=Path)
    si.add_argument("--json", action="store_true", help="print the report as JSON")

    sw = sub.add_parser(
        "warm-parsers",
        help="read and cache the argument parsers of every example script and trtllm-build (run at image build)",
    )
    sw.add_argument("--trtllm-dir", help="TensorRT-LLM checkout with examples/ (default: $TRTLLM_DIR)")
    sw.add_argument(
        "--cache-dir", type=Path, help="cache to fill (default: $TRTLLM_BUILDER_CACHE, else ~/.cache/trtllm-builder)"
    )
    sw.add_argument("--jobs", type=int, default=4, help="parsers read in parallel (each may import tensorrt_llm)")
    sw.add_argument(
        "--best-effort", action="store_true", help="exit 0 even if some parsers could not be read (they are listed)"
    )
    return p


def _cmd_plan(ns: argparse.Namespace) -> int:
    from trtllm_builder.fetch.preflight import check_machine
    from trtllm_builder.pipeline import BuildOptions, build_secrets, default_cache_dir, prepare
    from trtllm_builder.secrets import mask

    config, plan = prepare(
        ns.config, trtllm_dir=ns.trtllm_dir, work_dir=ns.work_dir, backend_dir=ns.backend_dir, upload=ns.upload
    )
    # the same machine checks `build` makes first; `plan` reports them and still succeeds
    findings = check_machine(plan, cache_dir=default_cache_dir(), token=config.hf_token)
    # text and JSON alike show argv as `build` logs it: every form of every secret masked
    hidden = build_secrets(config, BuildOptions(output=Path("plan"), upload=ns.upload))
    if ns.json:
        data = plan.to_json()
        data["preflight"] = [{"level": f.level, "message": f.message} for f in findings]
        print(mask(json.dumps(data, indent=2), hidden))
    else:
        print(mask(plan.describe(), hidden))
        for f in findings:
            print(mask(f"preflight {f}", hidden))
        if not findings:
            print("preflight: this machine can run the plan")
    return 0


def _cmd_warm_parsers(ns: argparse.Namespace) -> int:
    from trtllm_builder.fetch.modelcache import writable_cache_dir
    from trtllm_builder.pipeline import default_cache_dir
    from trtllm_builder.plan.parsers import ParserCache, discover_programs
    from trtllm_builder.plan.tree import find_tree
    from trtllm_builder.plan.versions import trtllm_version

    tree = find_tree(ns.trtllm_dir)
    cache_dir = writable_cache_dir(ns.cache_dir or default_cache_dir())  # else nothing would be cached
    cache = ParserCache(cache_dir, version=trtllm_version(tree.root), jobs=ns.jobs)
    results = cache.lookup_many(discover_programs(tree.examples))
    failed = [r for r in results if r.spec is None]
    for r in results:
        if r.spec is not None:
            state = "cached" if r.cached else "read"
            print(f"ok    {r.label}: {len(r.spec.options)} options ({state})")
        else:
            print(f"FAIL  {r.label}: {r.problem}")
    print(f"{len(results) - len(failed)} of {len(results)} parsers cached in {cache.dir}")
    return 1 if failed and not ns.best_effort else 0


def _cmd_build(ns: argparse.Namespace) -> int:
    from trtllm_builder.plan.gpu import prefetch_gpus

    prefetch_gpus()  # nvidia-smi runs while the pipeline is imported and the config planned
    from trtllm_builder.pipeline import BuildOptions, build, build_secrets, default_cache_dir, prepare
    from trtllm_builder.secrets import scrub

    config, plan = prepare(
        ns.config,
        trtllm_dir=ns.trtllm_dir,
        work_dir=ns.work_dir,
        backend_dir=ns.backend_dir,
        upload=ns.upload,
        cache_dir=ns.cache_dir,
        model_dir=ns.model_dir,
    )
    output = ns.output or Path.cwd() / config.output.name
    opts = BuildOptions(
        output=output.absolute(),
        cache_dir=ns.cache_dir or default_cache_dir(),
        model_dir=ns.model_dir,
        keep_work_dir=ns.keep_work_dir,
        step_cache=not ns.no_cache,
        cache_max_bytes=ns.cache_max_size or cache_bound_from_env(),
        disk_budget=ns.disk_budget,
        backend_dir=ns.backend_dir,
        upload=ns.upload,
        log=_err,
    )
    try:
        result = build(config, plan, opts)
    except BaseException as exc:
        if isinstance(exc, BuilderError):
            scrub(exc, build_secrets(config, opts))  # errors are printed by main(): never with a secret
        if isinstance(exc, (KeyboardInterrupt, Interrupted)):
            _err(f"the work dir {plan.work_dir} is kept (with build.log); the next build reuses its finished steps")
        else:
            _err(f"the work dir {plan.work_dir} is kept for inspection (build.log there has every line)")
        raise
    print(str(result.archive))
    if result.upload is not None:
        print(result.upload.url)
    return 0


def _cmd_inspect(ns: argparse.Namespace) -> int:
    from trtllm_builder.outputs.inspect import format_report, inspect_archive

    report = inspect_archive(ns.archive)
    if ns.json:
        data = dataclasses.asdict(report)
        data.update(intact=report.intact, ok=report.ok)
        print(json.dumps(data, indent=2, default=str))
    else:
        print(format_report(report))
    return 0 if report.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    # A file-size limit (ulimit -f) should fail a write with EFBIG, which we report, rather than
    # kill the process with SIGXFSZ; steps inherit the setting.
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    ns = _parser().parse_args(argv)
    handlers = {"plan": _cmd_plan, "build": _cmd_build, "inspect": _cmd_inspect, "warm-parsers": _cmd_warm_parsers}
    try:
        with cli_signals():
            return handlers[ns.command](ns)
    except BuilderError as exc:
        _err(f"error: {exc}")
        # `plan` answers one question, "is this config valid here?": any failure is a 2
        return 2 if ns.command == "plan" else exc.exit_code
    except Interrupted as exc:
        _err(f"stopped by {exc.signame}: the build and every process it started were stopped, partial outputs removed")
        return exc.exit_code
    except KeyboardInterrupt:
        _err("interrupted: the build and every process it started were stopped, partial outputs removed")
        return 130
    except BrokenPipeError:
        # e.g. `trtllm-builder plan x | head`: not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
