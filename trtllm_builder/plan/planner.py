"""Config -> an ordered plan of concrete commands, directories and expected outputs.

No network and no subprocess here: everything a user can get wrong in a config is found
now, before a model is downloaded or a GPU is paid for.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trtllm_builder.config.recipe import build_rules, int8_kv_cache_in
from trtllm_builder.config.schema import BuildConfig, StepSpec
from trtllm_builder.errors import ArgsError, ConfigError
from trtllm_builder.plan.argv import PLACEHOLDER_RE, display, flag_values, render_args, substitute
from trtllm_builder.plan.expand import steps_yaml
from trtllm_builder.plan.layout import Expect
from trtllm_builder.plan.parsers import ParserCache, ParserResult, check_tokens, program_label
from trtllm_builder.plan.translate import known_flags_from, translation_yaml
from trtllm_builder.plan.tree import TrtllmTree

__all__ = [
    "KNOWN_FLAGS",
    "MODEL_DIR_READ_ONLY",
    "Plan",
    "PlannedStep",
    "is_write_flag",
    "make_plan",
    "model_dir_writes",
]

# Flags of a role, by the spellings the real scripts use.
MODEL_FLAGS = ("model_dir", "model-dir", "in-file", "in_file")
OUTPUT_FLAGS = ("output_dir", "output-dir", "output_model_dir", "output-model-dir", "out-dir", "out_dir")
CHECKPOINT_FLAGS = ("checkpoint_dir",)
ENGINE_FLAGS = ("engine_dir",)
TOKENIZER_FLAGS = ("tokenizer_dir",)

# Which directory flags a script takes when its own parser has not been read.
KNOWN_FLAGS: dict[str, frozenset[str]] = {
    "convert_checkpoint.py": frozenset({"model_dir", "output_dir"}),
    "quantize.py": frozenset({"model_dir", "output_dir"}),
    "trtllm-build": frozenset({"checkpoint_dir", "output_dir"}),
    "run.py": frozenset({"engine_dir", "tokenizer_dir"}),
    "summarize.py": frozenset({"engine_dir", "tokenizer_dir"}),
    "hf_gpt_convert.py": frozenset({"in-file", "out-dir"}),
}
# cog-trt-llm configs say "/src/models/<model_id>" for the downloaded model.
LEGACY_MODEL_PREFIX = "/src/models/"

FlagsOf = Callable[[str, Path | None], frozenset[str] | None]


def _default_flags_of(name: str, script: Path | None) -> frozenset[str] | None:
    return KNOWN_FLAGS.get(name)


@dataclass(frozen=True)
class PlannedStep:
    name: str
    program: tuple[str, ...]  # [python, /abs/script.py] or [/usr/bin/trtllm-build]
    args: tuple[str, ...]  # rendered args; may hold {placeholders} resolved at run time
    cwd: Path
    output_dir: Path  # where the step is told to write (declared)
    expect: Expect
    reads: str | None  # the earlier step whose output it consumes, if any
    timeout: float | None
    script: Path | None
    injected: tuple[str, ...] = ()
    checked_by: str | None = None  # the parser its args were checked against, e.g. "trtllm-build (0.21.0)"

    def argv(self, values: Mapping[str, str]) -> list[str]:
        return [*self.program, *(substitute(t, values) for t in self.args)]


@dataclass(frozen=True)
class Plan:
    config: BuildConfig
    tree: TrtllmTree
    work_dir: Path
    model_dir: Path
    steps: tuple[PlannedStep, ...]
    notes: tuple[str, ...] = ()
    # where the model really is: a local directory, the model cache (never written by a step)
    model_roots: tuple[Path, ...] = field(default=())

    def values(self, step: PlannedStep, outputs: Mapping[str, Path]) -> dict[str, str]:
        """Placeholder values for ``step``; ``outputs`` maps earlier steps to their real output dirs."""
        vals = {
            "model_dir": str(self.model_dir),
            "work_dir": str(self.work_dir),
            "output_dir": str(step.output_dir),
        }
        for s in self.steps:
            if s.name == step.name:
                break
            vals[f"steps.{s.name}.output_dir"] = str(outputs.get(s.name, s.output_dir))
        return vals

    def argv(self, step: PlannedStep, outputs: Mapping[str, Path] | None = None) -> list[str]:
        return step.argv(self.values(step, outputs or {}))

    def to_json(self) -> dict[str, Any]:
        return {
            "form": self.config.form,
            "model": self.config.model.id,
            "work_dir": str(self.work_dir),
            "model_dir": str(self.model_dir),
            "trtllm_dir": str(self.tree.root),
            "steps": [
                {
                    "name": s.name,
                    "argv": self.argv(s),
                    "cwd": str(s.cwd),
                    "output_dir": str(s.output_dir),
                    "expect": s.expect,
                    "injected": list(s.injected),
                    "checked_by": s.checked_by,
                }
                for s in self.steps
            ],
            "output": {"format": self.config.output.format, "name": self.config.output.name},
            "recipe_steps": self.recipe_steps(),
            "translation": (
                {
                    "release": self.config.translation.release,
                    "config": self.config.translation.project,
                    "notes": list(self.config.translation.notes),
                }
                if self.config.translation is not None
                else None
            ),
            "notes": list(self.notes),
        }

    def recipe_steps(self) -> str | None:
        """The ``steps:`` YAML a recipe expanded to (None without a recipe)."""
        return steps_yaml(self.config.steps) if self.config.recipe is not None else None

    def describe(self) -> str:
        lines = [
            f"model: {self.config.model.id}"
            + (f" @ {self.config.model.revision}" if self.config.model.revision else ""),
            f"TensorRT-LLM tree: {self.tree.root}",
            f"work dir: {self.work_dir}",
        ]
        for i, s in enumerate(self.steps, 1):
            lines.append(f"[{i}/{len(self.steps)}] {s.name} (expects {s.expect} in {s.output_dir})")
            lines.append("    " + display(self.argv(s), self.config.secrets))
            lines.append(
                f"    args checked against the parser of {s.checked_by}"
                if s.checked_by
                else "    args NOT checked (see the notes)"
            )
        lines.append(f"output: {self.config.output.name} ({self.config.output.format})")
        t = self.config.translation
        if t is not None:
            lines.append(
                f"cog-trt-llm config translated onto TensorRT-LLM {t.release or '(unknown version)'}; to take "
                "control, use this project-form config:"
            )
            lines.extend("  " + ln for ln in translation_yaml(t).rstrip("\n").splitlines())
            lines.append(f"translation notes ({len(t.notes)}):" if t.notes else "translation notes: none (1:1)")
            lines.extend(f"  - {n}" for n in t.notes)
        recipe = self.recipe_steps()
        if recipe is not None:
            src = f" (model config read from {self.config.recipe_source})" if self.config.recipe_source else ""
            lines.append(f"recipe expands to{src}; to take control, replace `recipe:` with:")
            lines.extend("  " + ln for ln in recipe.rstrip("\n").splitlines())
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _infer_expect(step: StepSpec) -> Expect:
    if step.expect != "auto":
        return step.expect  # type: ignore[return-value]
    if step.command == "trtllm-build":
        return "engine"
    base = Path(step.script or "").name
    if base in {"build.py"}:
        return "engine"
    if base in {"run.py", "summarize.py", "mmlu.py", "eval_long_context.py"}:
        return "none"
    return "checkpoint"


def _first(flags: frozenset[str] | None, candidates: tuple[str, ...]) -> str | None:
    if flags is None:
        return None
    return next((c for c in candidates if c in flags), None)


def _inside(path: str, root: Path) -> bool:
    return Path(path).is_relative_to(root)


def _resolve_in_work(value: str, work_dir: Path, what: str) -> Path:
    """A user path for something the tool owns: relative to the work dir, never outside it."""
    if value.startswith("~"):
        raise ConfigError(f"{what}: `{value}`: home-relative paths are not allowed; use a path in the work dir")
    p = Path(posixpath.normpath(str(work_dir / value)))  # an absolute value replaces work_dir
    if not p.is_relative_to(work_dir) or p == work_dir:
        raise ConfigError(
            f"{what}: `{value}` is outside the work dir {work_dir}; output directories are owned by the "
            "tool and live inside the work dir (use a relative path such as `./engine`)"
        )
    return p


def _check_value_paths(
    where: str,
    tokens: list[tuple[str, str]],
    *,
    work_dir: Path,
    model_dir: Path,
    tree: TrtllmTree,
) -> None:
    """``tokens`` are (as written, as substituted) pairs.

    A value built from a placeholder names a tool-owned place (the model link, a step's output,
    possibly a link into the step cache), so only its spelled-out path is checked; a literal
    value is also checked with symlinks resolved, so a link cannot smuggle a path out.
    """
    allowed = [work_dir, model_dir, tree.examples]
    for raw, tok in tokens:
        if tok.startswith("--"):
            continue
        if tok.startswith("~"):
            raise ConfigError(f"{where}: `{tok}`: home-relative paths are not allowed")
        if os.path.isabs(tok):
            norm = posixpath.normpath(tok)
            ok_norm = any(_inside(norm, r) for r in allowed)
            ok_real = PLACEHOLDER_RE.search(raw) is not None or any(
                _inside(os.path.realpath(norm), r.resolve()) for r in allowed
            )
            if not (ok_norm and ok_real):
                raise ConfigError(
                    f"{where}: absolute path `{tok}` is outside the work dir, the model dir and the "
                    "TensorRT-LLM examples tree; use {model_dir}, {work_dir} or a relative path"
                )
        elif "/" in tok or tok.startswith(".."):
            norm = posixpath.normpath(str(work_dir / tok))
            if not _inside(norm, work_dir):
                raise ConfigError(f"{where}: `{tok}` escapes the work dir with `..`")


MODEL_DIR_READ_ONLY = (
    "the model dir is never a write target (it may be your own directory, or a cached snapshot that later "
    "builds share); write into the work dir instead, e.g. `{output_dir}/...`"
)
# Flags through which a script writes (besides its output dir): anything named *output*/*out*, and these.
_WRITE_FLAG_RE = re.compile(r"(^|[_-])(out|output)([_-]|$)")
_WRITE_FLAGS = frozenset({"export_path", "visualize_network", "dataset_cache_dir", "cache_dir", "save_dir"})


def is_write_flag(flag: str) -> bool:
    """Does ``--flag`` (without dashes) name a place the script writes?"""
    return flag in _WRITE_FLAGS or _WRITE_FLAG_RE.search(flag) is not None


def _inside_any(path: str, roots: Sequence[Path]) -> Path | None:
    return next((r for r in roots if _inside(path, r)), None)


def model_dir_writes(plan: Plan, step: PlannedStep, outputs: Mapping[str, Path] | None = None) -> list[str]:
    """Where ``step`` would write into the model directory: its output dir, or a write flag's value,
    spelled out (the ``model`` link in the work dir, a model root) or resolved through links. The
    model dir is a read-only input: a user's own directory, or a cached snapshot later builds share.
    """
    link = plan.model_dir
    real_roots = [Path(os.path.realpath(r)) for r in plan.model_roots]
    if link.is_symlink():  # a kept work dir: the link already names the real model
        real_roots.append(Path(os.path.realpath(link)))
    found: list[str] = []

    def check(what: str, shown: str, value: str) -> None:
        norm = posixpath.normpath(str(plan.work_dir / value))  # an absolute value replaces work_dir
        real = os.path.realpath(norm)
        if _inside(norm, link) or _inside_any(norm, plan.model_roots) or _inside_any(real, real_roots):
            where = f" ({real})" if real != norm else ""
            found.append(f"{what} `{shown}` is inside the model dir{where}")

    out = step.output_dir
    shown = out.relative_to(plan.work_dir).as_posix() if out.is_relative_to(plan.work_dir) else str(out)
    check("the output dir", shown, str(out))
    argv = plan.argv(step, outputs)[len(step.program) :]
    flag: str | None = None
    for raw, tok in zip(step.args, argv, strict=True):
        if tok.startswith("--"):
            flag = tok[2:]
        elif raw == "{output_dir}":
            continue  # the output dir itself: checked above
        elif flag is not None and is_write_flag(flag) and ("/" in tok or tok in (".", "..")):
            check(f"`--{flag}`", raw, tok)
    return found


# Flags through which a step reads a model, a checkpoint or an engine.
_READ_FLAGS = frozenset(
    {*MODEL_FLAGS, *CHECKPOINT_FLAGS, *ENGINE_FLAGS, *TOKENIZER_FLAGS, "ft_model_dir", "meta_ckpt_dir"}
)


def _unmade_inputs(plan: Plan, step: PlannedStep, argv: Sequence[str]) -> list[str]:
    """Inputs in the work dir that no earlier step writes and that do not exist: they can only fail."""
    earlier = [s.output_dir for s in plan.steps[: plan.steps.index(step)]]
    found: list[str] = []
    flag: str | None = None
    for raw, tok in zip(step.args, argv, strict=True):
        if tok.startswith("--"):
            flag = tok[2:]
            continue
        # a placeholder other than {work_dir} names a tool-wired place (the model, a step's output)
        wired = PLACEHOLDER_RE.search(raw.replace("{work_dir}", "")) is not None
        if flag not in _READ_FLAGS or wired or not ("/" in tok or tok.startswith(".")):
            continue
        norm = posixpath.normpath(str(plan.work_dir / tok))
        if not _inside(norm, plan.work_dir) or _inside(norm, plan.model_dir):
            continue
        if any(_inside(norm, d) or _inside(str(d), Path(norm)) for d in earlier) or os.path.exists(norm):
            continue
        hint = f" (`{{steps.{plan.steps[plan.steps.index(step) - 1].name}.output_dir}}`)" if earlier else ""
        found.append(
            f"`--{flag} {tok}` reads {norm}, which no earlier step writes and which does not exist: point it at "
            f"an earlier step's output{hint}"
        )
    return found


def make_plan(
    config: BuildConfig,
    tree: TrtllmTree,
    work_dir: Path,
    *,
    flags_of: FlagsOf = _default_flags_of,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
    parsers: ParserCache | None = None,
    model_roots: Sequence[Path] = (),
) -> Plan:
    """Validate ``config`` against ``tree`` and produce the concrete plan. Raises ``ConfigError``.

    ``model_roots``: where the model really lives (a local directory, the model cache); no step may
    write there, whatever path or link leads there.

    With ``parsers``, each step's args are also checked against its script's own argument parser
    (and the parser's flags decide which directory flags are injected); a misfit raises ``ArgsError``
    listing every problem. A parser that cannot be read leaves a note, never a silent pass.
    """
    work_dir = Path(posixpath.normpath(str(work_dir.absolute())))
    model_dir = work_dir / "model"
    problems: list[str] = []
    # keys cog-trt-llm's form accepts and ignores (a translation carries them in its notes)
    notes: list[str] = list(config.warnings) if config.translation is None else []
    if config.recipe is not None and not config.steps:
        raise ConfigError("the config's recipe is not expanded yet: call expand.expand_config first")
    if parsers is not None:
        flags_of = _parser_flags_of(parsers, config, tree, python, which, flags_of)
    planned: list[PlannedStep] = []
    declared: dict[str, Path] = {}
    last_checkpoint: str | None = None
    last_engine: str | None = None

    for spec in config.steps:
        where = f"step `{spec.name}`"
        try:
            step = _plan_step(
                spec,
                config,
                tree,
                work_dir,
                model_dir,
                python,
                which,
                flags_of,
                last_checkpoint,
                last_engine,
                declared,
                notes,
            )
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for other, path in declared.items():
            if path == step.output_dir or path.is_relative_to(step.output_dir) or step.output_dir.is_relative_to(path):
                problems.append(
                    f"{where}: output dir {step.output_dir} overlaps step `{other}`'s {path}; give each step its own"
                )
        declared[spec.name] = step.output_dir
        planned.append(step)
        if step.expect in ("checkpoint", "any"):
            last_checkpoint = spec.name
        if step.expect in ("engine", "any"):
            last_engine = spec.name

    if planned and not problems and planned[-1].expect == "checkpoint" and last_engine is None:
        problems.append(
            "the pipeline produces no engine: add a build step (`command: trtllm-build`, or `build.py` for "
            "old releases)"
        )
    if problems:
        raise ConfigError("the pipeline cannot be planned:", problems=problems)
    roots = tuple(Path(posixpath.normpath(str(Path(r).absolute()))) for r in model_roots)
    inside_model = next((r for r in roots if work_dir.is_relative_to(r)), None)
    if inside_model is not None:
        raise ConfigError(
            f"the work dir {work_dir} is inside the model dir {inside_model}: every step would write into the "
            "model; choose a work dir elsewhere (--work-dir)"
        )
    plan = Plan(config, tree, work_dir, model_dir, tuple(planned), tuple(notes), model_roots=roots)
    # Render once now so unknown placeholders and path escapes surface before anything runs.
    for step in plan.steps:
        try:
            argv = plan.argv(step)
        except ConfigError as exc:
            problems.append(f"step `{step.name}`: {exc}")
            continue
        writes = model_dir_writes(plan, step)
        problems.extend(f"step `{step.name}`: {w}: {MODEL_DIR_READ_ONLY}" for w in writes)
        if writes:
            continue
        problems.extend(f"step `{step.name}`: {r}" for r in _unmade_inputs(plan, step, argv[len(step.program) :]))
        try:
            _check_value_paths(
                f"step `{step.name}`",
                list(zip(step.args, argv[len(step.program) :], strict=True)),
                work_dir=work_dir,
                model_dir=model_dir,
                tree=tree,
            )
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("the pipeline cannot be planned:", problems=problems)
    return _check_args_against_parsers(plan, parsers, tree)


def _program_of(
    spec: StepSpec, config: BuildConfig, tree: TrtllmTree, python: str, which: Callable[[str], str | None]
) -> tuple[str, ...]:
    if spec.script is not None:
        return (python, str(tree.script(spec.example or config.example or "", spec.script)))
    cmd = spec.command or ""
    return (which(cmd) or cmd,)


def _parser_flags_of(
    parsers: ParserCache,
    config: BuildConfig,
    tree: TrtllmTree,
    python: str,
    which: Callable[[str], str | None],
    fallback: FlagsOf,
) -> FlagsOf:
    """A ``flags_of`` that answers from the scripts' real parsers (all read up front, in parallel)."""
    programs: list[tuple[tuple[str, ...], str]] = []
    for spec in config.steps:
        try:
            program = _program_of(spec, config, tree, python, which)
        except ConfigError:
            continue  # reported by the planning loop
        programs.append((program, program_label(program, tree.examples)))
    parsers.lookup_many(programs)

    known = known_flags_from(parsers, tree, python=python, which=which)

    def flags_of(name: str, script: Path | None) -> frozenset[str] | None:
        found = known(script, name)
        return found if found is not None else fallback(name, script)

    return flags_of


def _check_args_against_parsers(plan: Plan, parsers: ParserCache | None, tree: TrtllmTree) -> Plan:
    problems: list[str] = []
    notes = list(plan.notes)
    steps: list[PlannedStep] = []
    int8_kv: str | None = None  # the earlier arg that gave the checkpoint an INT8 KV cache
    for step in plan.steps:
        where = f"step `{step.name}`"
        if step.script is None and Path(step.program[0]).name == "trtllm-build":
            rules = build_rules(flag_values(step.args), output_format=plan.config.output.format, int8_kv=int8_kv)
            problems.extend(f"{where}: {p}" for p in rules)
        elif (found_kv := int8_kv_cache_in(flag_values(step.args))) is not None:
            int8_kv = f"`{found_kv}` (step `{step.name}`)"
        if parsers is None:
            steps.append(step)
            continue
        found: ParserResult = parsers.lookup(step.program, label=program_label(step.program, tree.examples))
        if found.spec is None:
            note = found.note()
            if note is not None and note not in notes:
                notes.append(note)
            steps.append(step)
            continue
        label = parsers.describe(found.label)
        bad, remarks = check_tokens(found.spec, step.args, label=label, program=Path(step.program[-1]).name)
        problems.extend(f"{where}: {p}" for p in bad)
        notes.extend(f"{where}: {r}" for r in remarks)
        steps.append(replace(step, checked_by=label))
    if problems:
        raise ArgsError("the step args do not fit the scripts' own parsers:", problems=problems)
    return replace(plan, steps=tuple(steps), notes=tuple(notes))


def _rewrite_legacy(value: str, model_id: str) -> str:
    prefix = LEGACY_MODEL_PREFIX + model_id.strip("/")
    if value == prefix or value.startswith(prefix + "/"):
        return "{model_dir}" + value[len(prefix) :]
    if value.startswith(LEGACY_MODEL_PREFIX):
        raise ConfigError(
            f"`{value}` points into /src/models/ but not at this config's model `{model_id}`; "
            f"use `{prefix}` or {{model_dir}}"
        )
    return value


def _plan_step(
    spec: StepSpec,
    config: BuildConfig,
    tree: TrtllmTree,
    work_dir: Path,
    model_dir: Path,
    python: str,
    which: Callable[[str], str | None],
    flags_of: FlagsOf,
    last_checkpoint: str | None,
    last_engine: str | None,
    declared: Mapping[str, Path],
    notes: list[str],
) -> PlannedStep:
    args: dict[str, Any] = dict(spec.args)
    # an untranslated cog-trt-llm config (translate.py maps its paths otherwise); before the script
    # lookup, since a wrong model path is the clearer error
    legacy = config.form == "cog-trt-llm" and config.translation is None
    if legacy:
        args = {
            k: (
                [_rewrite_legacy(x, config.model.id) if isinstance(x, str) else x for x in v]
                if isinstance(v, list)
                else (_rewrite_legacy(v, config.model.id) if isinstance(v, str) else v)
            )
            for k, v in args.items()
        }
    expect = _infer_expect(spec)
    script_path: Path | None = None
    if spec.script is not None:
        example = spec.example or config.example
        if example is None:
            raise ConfigError("no example: set `trtllm.example` or the step's `example`")
        script_path = tree.script(example, spec.script)
        program: tuple[str, ...] = (python, str(script_path))
        ident = Path(spec.script).name
    else:
        cmd = spec.command or ""
        found = which(cmd)
        if found is None:
            notes.append(f"`{cmd}` is not on PATH here; a build needs it (the GPU image has it)")
        program = (found or cmd,)
        ident = cmd

    for key, value in args.items():
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, str):
                for m in PLACEHOLDER_RE.finditer(v):
                    ref = m.group(1)
                    if ref.startswith("steps.") and ref.endswith(".output_dir"):
                        other = ref[len("steps.") : -len(".output_dir")]
                        if other not in declared:
                            raise ConfigError(
                                f"args.{key}: `{{{ref}}}` names `{other}`, which is not an earlier step"
                                + (f" (earlier steps: {', '.join(declared)})" if declared else "")
                            )

    flags = flags_of(ident, script_path)
    injected: list[str] = []

    # Where does the step write?
    user_out_flag = next((k for k in OUTPUT_FLAGS if k in args), None)
    if spec.output_dir is not None:
        raw_out = _rewrite_legacy(spec.output_dir, config.model.id) if legacy else spec.output_dir
        out = _resolve_in_work(raw_out, work_dir, "output_dir")
    elif user_out_flag is not None and isinstance(args[user_out_flag], str):
        raw = str(args[user_out_flag])
        raw = raw.replace("{work_dir}", str(work_dir))
        if PLACEHOLDER_RE.search(raw):
            raise ConfigError(f"args.{user_out_flag}: the output dir may only use {{work_dir}}")
        out = _resolve_in_work(raw, work_dir, f"args.{user_out_flag}")
    else:
        out = work_dir / "steps" / spec.name

    def inject(role_flags: tuple[str, ...], value: str) -> None:
        if any(f in args for f in role_flags):
            return
        flag = _first(flags, role_flags)
        if flag is not None:
            args[flag] = value
            injected.append(flag)

    reads: str | None = None
    if spec.inject:
        if expect == "checkpoint" or expect == "any":
            inject(MODEL_FLAGS, "{model_dir}")
        elif expect == "engine":
            if last_checkpoint is None:
                raise ConfigError("builds an engine but no earlier step produces a checkpoint to read")
            reads = last_checkpoint
            inject(CHECKPOINT_FLAGS, f"{{steps.{last_checkpoint}.output_dir}}")
        elif expect == "none":
            if last_engine is not None:
                reads = last_engine
                inject(ENGINE_FLAGS, f"{{steps.{last_engine}.output_dir}}")
            inject(TOKENIZER_FLAGS, "{model_dir}")
        if expect != "none" and user_out_flag is None:
            inject(OUTPUT_FLAGS, "{output_dir}")
            if not (set(OUTPUT_FLAGS) & set(args)):
                raise ConfigError(
                    f"the tool does not know which flag of `{ident}` takes the output directory; "
                    'pass it in args, e.g. `output_dir: "{output_dir}"`'
                )
    elif expect != "none" and spec.output_dir is None and user_out_flag is None:
        raise ConfigError("give `output_dir`: where this step writes its output (relative to the work dir)")

    # Keep injected flags first (they read best there), then the user's in their order.
    ordered = {k: args[k] for k in injected}
    ordered.update((k, v) for k, v in args.items() if k not in ordered)
    return PlannedStep(
        name=spec.name,
        program=program,
        args=tuple(render_args(ordered)),
        cwd=work_dir,
        output_dir=out,
        expect=expect,
        reads=reads,
        timeout=spec.timeout,
        script=script_path,
        injected=tuple(injected),
    )
