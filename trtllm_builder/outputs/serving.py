"""What makes a built engine serve: output formats, the smoke test, the upload.

Glue between the pipeline and :mod:`.triton` / :mod:`.upload`: where the backend templates
come from, how the smoke test is run (``run.py``, under ``mpirun`` for several ranks), and
which files an output format packs.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trtllm_builder.config.schema import BuildConfig, SmokeTest
from trtllm_builder.errors import ConfigError, SetupError
from trtllm_builder.outputs.upload import parse_s3_url
from trtllm_builder.plan.argv import display, flag_values
from trtllm_builder.plan.layout import Found
from trtllm_builder.plan.parsers import ParserCache, program_label
from trtllm_builder.plan.tree import TrtllmTree
from trtllm_builder.run.runner import run_step

if TYPE_CHECKING:
    from trtllm_builder.outputs.triton import TritonOptions
    from trtllm_builder.plan.planner import Plan

__all__ = [
    "OutputPlan",
    "backend_dir",
    "check_outputs",
    "parse_run_outputs",
    "run_smoke_test",
    "triton_members",
    "triton_summary",
]

# run.py prints each decoded text unescaped, `Output [Text i Beam b]: "<text>"`, so a text with
# newlines spans several lines: it runs until the next Input/Output line or a logger line.
_OUTPUT_START_RE = re.compile(r'^Output \[Text (\d+) Beam (\d+)\]: "(.*)$')
_BOUNDARY_RE = re.compile(
    r'^(Input \[Text \d+\]: "|Output \[Text \d+ Beam \d+\]: "'
    r"|\[TensorRT-LLM\]|\[\d\d/\d\d/\d{4}-\d\d:\d\d:\d\d\] \[TRT-LLM\])"
)


@dataclass(frozen=True)
class OutputPlan:
    """What the output section asks for, validated before anything runs."""

    format: str
    triton: TritonOptions | None
    templates: Path | None
    upload: str | None


def backend_dir(explicit: str | os.PathLike[str] | None, tree: TrtllmTree) -> Path:
    """``--backend-dir``, else ``TRTLLM_BACKEND_DIR``, else the pinned tree's ``triton_backend/``."""
    chosen = explicit or os.environ.get("TRTLLM_BACKEND_DIR")
    return Path(chosen) if chosen else tree.root / "triton_backend"


def check_outputs(
    config: BuildConfig,
    tree: TrtllmTree,
    *,
    backend: str | os.PathLike[str] | None = None,
    upload: str | None = None,
    plan: Plan | None = None,
    parsers: ParserCache | None = None,
) -> OutputPlan:
    """Validate the ``output`` section against the real templates; no engine needed.

    With ``plan`` (and ``parsers``), ``triton_max_batch_size`` is also checked against the build
    step's ``--max_batch_size``, or trtllm-build's own default read from its parser.
    """
    out = config.output
    url = upload or out.upload
    if url is not None:
        parse_s3_url(url)
    if out.format == "engine":
        if out.triton is not None:
            raise ConfigError("output.triton applies to `format: triton`; remove it or set the format")
        return OutputPlan("engine", None, None, url)
    # the Triton machinery is imported only by builds that make a Triton repository
    from trtllm_builder.outputs.triton import check_batch_size, find_templates, parse_triton_options, validate_options

    options = parse_triton_options(out.triton)
    try:
        templates = find_templates(backend_dir(backend, tree))
    except SetupError as exc:
        raise SetupError(f"{exc} (needed by `output.format: triton`)") from None
    validate_options(options, templates)
    if plan is not None and options.triton_max_batch_size is not None:
        planned = planned_max_batch_size(plan, parsers)
        if planned is not None:
            check_batch_size(options, *planned)
    return OutputPlan("triton", options, templates, url)


def planned_max_batch_size(plan: Plan, parsers: ParserCache | None) -> tuple[int, str] | None:
    """The engine's ``max_batch_size`` as the plan's last build step will set it, and whence it comes.

    ``None`` when that cannot be told before the build (no build step, a value that is not a
    number, or a parser that could not be read); the engine's config.json is checked after the build.
    """
    builds = [s for s in plan.steps if s.expect in ("engine", "any")]
    if not builds:
        return None
    step = builds[-1]
    given = flag_values(step.args).get("max_batch_size")
    if given is not None:
        return (int(given), f"step `{step.name}` passes --max_batch_size {given}") if given.isdigit() else None
    if parsers is None:
        return None
    found = parsers.lookup(step.program, label=program_label(step.program, plan.tree.examples))
    option = found.spec.option("--max_batch_size") if found.spec is not None else None
    if option is None or not isinstance(option.default, int) or isinstance(option.default, bool):
        return None
    return option.default, f"the default --max_batch_size of {parsers.describe(found.label)}, read from its parser"


def triton_members(outputs: OutputPlan, engine: Found, model_dir: Path, dest: Path) -> list[tuple[str, Path]]:
    """Build the model repository at ``dest`` and list its files as archive members.

    The tokenizer folder gets the model's tokenizer files and its ``config.json``
    (:func:`.triton.tokenizer_folder_files`).
    """
    if outputs.triton is None or outputs.templates is None:
        raise ConfigError("internal: triton output without options")  # pragma: no cover
    from trtllm_builder.outputs.triton import make_model_repository, tokenizer_folder_files

    repo = make_model_repository(
        engine_dir=engine.path,
        tokenizer_files=tokenizer_folder_files(model_dir),
        templates=outputs.templates,
        dest=dest,
        options=outputs.triton,
    )
    return sorted((p.relative_to(repo).as_posix(), p) for p in repo.rglob("*") if p.is_file())


def triton_summary(outputs: OutputPlan) -> dict[str, Any]:
    """What the manifest records of a Triton output: the templates, and the parameters the C++
    backend of those templates reads without a fallback (``inspect`` checks the repository
    against them)."""
    if outputs.templates is None:
        raise ConfigError("internal: triton output without templates")  # pragma: no cover
    from trtllm_builder.outputs.triton import cpp_reads

    return {"templates": str(outputs.templates), "cpp_reads": cpp_reads(outputs.templates)}


def smoke_argv(
    smoke: SmokeTest, tree: TrtllmTree, engine: Found, model_dir: Path, *, python: str = sys.executable
) -> list[str]:
    run_py = tree.examples / "run.py"
    if not run_py.is_file():
        raise SetupError(f"the smoke test needs {run_py}, which this TensorRT-LLM tree lacks")
    argv = [
        python,
        str(run_py),
        "--engine_dir",
        str(engine.path),
        "--tokenizer_dir",
        str(model_dir),
        "--max_output_len",
        str(smoke.max_output_len),
        "--input_text",
        smoke.prompt,
    ]
    if engine.world_size > 1:
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            raise SetupError(f"the engine has {engine.world_size} ranks: the smoke test needs `mpirun` on PATH")
        argv = [mpirun, "-n", str(engine.world_size), "--allow-run-as-root", *argv]
    return argv


def run_smoke_test(
    smoke: SmokeTest,
    tree: TrtllmTree,
    engine: Found,
    model_dir: Path,
    *,
    cwd: Path,
    env: Mapping[str, str],
    secrets: Sequence[str],
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Run ``run.py`` on the engine; a failure raises ``StepFailed`` with its tail."""
    argv = smoke_argv(smoke, tree, engine, model_dir)
    log(f"==> smoke test: {display(argv, secrets)}")
    lines: list[str] = []

    def keep(line: str) -> None:
        lines.append(line)
        log(line)

    res = run_step(argv, name="smoke_test", cwd=cwd, env=env, secrets=secrets, timeout=smoke.timeout, emit=keep)
    outputs = parse_run_outputs(line.removeprefix("[smoke_test] ") for line in lines)
    log(f"<== smoke test passed in {res.duration_s:.1f} s")
    return {
        "prompt": smoke.prompt,
        "max_output_len": smoke.max_output_len,
        "output": outputs[0]["output"] if outputs else None,
        "outputs": outputs,
        "duration_s": round(res.duration_s, 3),
        "world_size": engine.world_size,
    }


def parse_run_outputs(lines: Iterable[str]) -> list[dict[str, Any]]:
    """``[{"text": i, "beam": b, "output": "..."}]`` from run.py's output, multi-line texts whole.

    A text ends at the last line before the next boundary that ends with the closing quote; lines
    after it (a stray warning) are not part of it.
    """
    found: list[dict[str, Any]] = []
    current: tuple[int, int, list[str]] | None = None

    def close() -> None:
        if current is None:
            return
        text, beam, parts = current
        last = max((i for i, part in enumerate(parts) if part.endswith('"')), default=None)
        if last is not None:
            body = "\n".join(parts[: last + 1])[:-1]
            found.append({"text": text, "beam": beam, "output": body})

    for line in lines:
        if m := _OUTPUT_START_RE.match(line):
            close()
            current = (int(m.group(1)), int(m.group(2)), [m.group(3)])
        elif current is not None and _BOUNDARY_RE.match(line):
            close()
            current = None
        elif current is not None:
            current[2].append(line)
    close()
    return found
