"""cog-trt-llm's configs on the pinned TensorRT-LLM release: a translation into the project form.

cog-trt-llm ran each step as ``python <example>/<script> --<key> <value> ...`` from ``/src``, for
TensorRT-LLM 0.5-0.10. Against the pinned tree a step is translated, flag by flag from
:mod:`trtllm_builder.plan.flagtable`:

* a script the tree still has (``convert_checkpoint.py``, ``quantize.py``) or ``trtllm-build`` runs
  as written, except for flags its own parser no longer has (and deprecated spellings);
* ``hf_<model>_convert.py`` becomes ``examples/models/core/<model>/convert_checkpoint.py``;
* the per-model ``build.py`` becomes ``trtllm-build``, and when it read the Hugging Face model itself
  a ``convert`` step (``convert_checkpoint.py``) is put before it;
* paths: ``/src/models/<model_id>`` is the model, another ``/src/<path>`` is ``<work dir>/<path>``,
  a path under an earlier step's output is ``{steps.<name>.output_dir}``; the tool owns every step's
  output dir (``steps/<name>``), so output flags are left to it.

What cannot be mapped is refused with the old flag, why, and the nearest current equivalent. The
result is recorded as a :class:`~trtllm_builder.config.schema.Translation`: the project-form config a user
can copy and a note per change; ``plan`` prints both and the manifest records them.
"""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from trtllm_builder.config.recipe import to_int
from trtllm_builder.config.schema import ArgValue, BuildConfig, StepSpec, Translation
from trtllm_builder.errors import ConfigError
from trtllm_builder.plan.flagtable import ALIASES, HF_CONVERT_RE, OLD_DEFAULTS, Row, is_bare, lookup, new_value, seq_len
from trtllm_builder.plan.parsers import ParserCache, program_label
from trtllm_builder.plan.tree import TrtllmTree

__all__ = ["KnownFlags", "known_flags_from", "translate", "translation_yaml"]

# (script path or None for a command, command name) -> the flag names its own parser has, or None if unreadable
KnownFlags = Callable[[Path | None, str], frozenset[str] | None]

MODEL_PREFIX = "/src/models/"
SRC = "/src/"
# Where cog-trt-llm's image had the TensorRT-LLM checkout (its predict.py: TRTLLM_DIR).
TREE_PREFIXES = ("/src/TensorRT-LLM/", "/src/tensorrtllm_backend/tensorrt_llm/")
OUTPUT_FLAGS = frozenset({"output_dir", "output-dir", "out-dir", "out_dir", "output_model_dir", "export_path"})
_GPU_DIR_RE = re.compile(r"^\d+-gpu$")


@dataclass
class _Step:
    """One translated step while the translation runs."""

    name: str
    kind: str  # "trtllm-build" | "script" | "hf_convert" | "old_build" | "missing"
    script: str | None
    command: str | None
    example: str | None
    args: dict[str, ArgValue] = field(default_factory=dict)
    declared: list[str] = field(default_factory=list)  # work-relative dirs it writes (cog output_dir, out flags)
    ft: bool = False  # it wrote the old <out>/<tp>-gpu layout: references to that sub-folder are its output
    moved: dict[str, ArgValue] = field(default_factory=dict)  # build.py flags for a convert step made later

    def spec(self) -> StepSpec:
        return StepSpec(self.name, self.script, self.command, self.example, dict(self.args), inject=True)


def known_flags_from(
    parsers: ParserCache,
    tree: TrtllmTree,
    *,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
) -> KnownFlags:
    """A :data:`KnownFlags` answering from the scripts' own parsers (read once, cached)."""

    def known(script: Path | None, name: str) -> frozenset[str] | None:
        program = (python, str(script)) if script is not None else (which(name) or name,)
        found = parsers.lookup(program, label=program_label(program, tree.examples))
        return found.spec.flag_names() if found.spec is not None else None

    return known


def translate(config: BuildConfig, tree: TrtllmTree, *, known_flags: KnownFlags, release: str | None) -> BuildConfig:
    """``config`` (cog-trt-llm's form) as project-form steps on ``tree``; other configs unchanged.

    Raises ``ConfigError`` listing every flag that cannot be mapped.
    """
    if config.form != "cog-trt-llm":
        return config
    return _Translator(config, tree, known_flags, release).run()


def translation_yaml(t: Translation) -> str:
    """The project-form config of a translation, to paste into a file."""
    return yaml.safe_dump(t.project, sort_keys=False, default_flow_style=False)


class _Translator:
    def __init__(self, config: BuildConfig, tree: TrtllmTree, known_flags: KnownFlags, release: str | None) -> None:
        self.config = config
        self.tree = tree
        self.known_flags = known_flags
        self.release = release
        self.notes: list[str] = list(config.warnings)
        self.problems: list[str] = []
        self.steps: list[_Step] = []
        self.example = config.example or ""
        self._path_notes: list[str] = []  # how the current flag's paths were mapped
        self._original: Mapping[str, ArgValue] = {}  # the current step's args as written

    # --- the whole config -----------------------------------------------------------------------

    def run(self) -> BuildConfig:
        fmt = self.config.model.weight_format
        if fmt == "pt":
            self.notes.append(
                "`weight_format: pt`: this tool downloads a repo's *.safetensors weights when it has them and "
                "*.bin (pt) only when it has none; the converters read either and produce the same checkpoint"
            )
        for spec in self.config.steps:
            self._step(spec)
        if self.problems:
            raise ConfigError(
                f"the cog-trt-llm config cannot be translated onto TensorRT-LLM {self.release or '(unknown)'}:",
                problems=self.problems,
            )
        steps = [s.spec() for s in self.steps]
        translation = Translation(self.release, self._project(steps), tuple(self.notes))
        return dataclasses.replace(self.config, steps=tuple(steps), translation=translation)

    def _project(self, steps: list[StepSpec]) -> dict[str, Any]:
        model: dict[str, Any] = {"id": self.config.model.id}
        if self.config.model.tar_url:
            model["tar_url"] = self.config.model.tar_url
        out: list[dict[str, Any]] = []
        for s in steps:
            item: dict[str, Any] = {"name": s.name}
            if s.example is not None:
                item["example"] = s.example
            item["script" if s.script is not None else "command"] = s.script or s.command
            item["args"] = dict(s.args)
            out.append(item)
        project: dict[str, Any] = {"model": model, "trtllm": {"example": self.example}, "steps": out}
        if self.config.hf_token:
            self.notes.append("`hf_token` is not shown; keep it in the config or pass it as the hf_token input")
        return project

    # --- one step --------------------------------------------------------------------------------

    def _step(self, spec: StepSpec) -> None:
        where = f"step `{spec.name}`"
        step = _Step(spec.name, "missing", spec.script, spec.command, None)
        kind_program = self._classify(spec, step)
        declared = [d for d in (self._work_path(spec.output_dir),) if d is not None] if spec.output_dir else []
        args: dict[str, ArgValue] = {}
        convert = self._convert_step()
        hf_input = False
        known = self._known(step)
        self._original = spec.args
        for raw_flag, written in spec.args.items():
            flag = ALIASES.get((kind_program, raw_flag), raw_flag)
            self._path_notes = []
            value = self._map(written, where, f"args.{raw_flag}")
            before = len(self.notes)
            row = lookup(kind_program, flag)
            if raw_flag in OUTPUT_FLAGS or flag in OUTPUT_FLAGS:
                if isinstance(value, str) and (wp := self._work_path_of_mapped(value)) is not None:
                    declared.append(wp)
                why = row.why if row is not None and row.action == "output" else "the tool passes the step's own dir"
                self.notes.append(f"{where}: `{raw_flag}: {written}` dropped: {why}")
            elif row is not None and (
                step.kind in ("hf_convert", "old_build") or row.deprecated or known is None or flag not in known
            ):
                hf_input = self._apply(row, raw_flag, value, step, args, convert, where, spec.args) or hf_input
                if len(self.notes) > before:  # say what it was as written, not as mapped
                    self.notes[before] = self.notes[before].replace(
                        f"`{raw_flag}: {value}`", f"`{raw_flag}: {written}`"
                    )
            else:
                args[raw_flag] = True if is_bare(value) else value  # `key:` is a switch: `true` in the project form
            if len(self.notes) == before:  # no note of its own: say how its path was mapped
                self.notes.extend(self._path_notes)
        step.args = args
        if step.kind == "hf_convert" and not any(k in spec.args for k in ("storage-type", "t")):
            self.notes.append(
                f"{where}: no `storage-type`: hf_*_convert.py defaulted to float32; convert_checkpoint.py's "
                "`dtype` defaults to auto (the model's dtype, float32 becomes float16)"
            )
        step.declared = sorted({*declared}, key=len, reverse=True)
        if step.kind == "old_build":
            self._finish_old_build(step, spec, hf_input, where)
        self.steps.append(step)

    def _classify(self, spec: StepSpec, step: _Step) -> str:
        """Decide what ``spec`` runs on the pinned tree; returns the flag table's program name."""
        if spec.command == "trtllm-build":
            step.kind, step.command = "trtllm-build", "trtllm-build"
            return "trtllm-build"
        script = spec.script or ""
        try:
            self.tree.script(self.example, script)
        except ConfigError:
            pass
        else:
            step.kind = "script"
            return Path(script).name
        if script == "quantize.py" and (self.tree.examples / "quantization" / "quantize.py").is_file():
            step.kind, step.example = "script", "quantization"
            self.notes.append(
                f"step `{spec.name}`: `quantize.py` is examples/quantization/quantize.py in this release "
                f"(not in example `{self.example}`)"
            )
            return "quantize.py"
        if HF_CONVERT_RE.match(script) or script == "build.py":
            try:
                self.tree.script(self.example, "convert_checkpoint.py")
            except ConfigError as exc:
                self.problems.append(f"step `{spec.name}`: `{script}` (a 0.5-0.7 script) has no successor here: {exc}")
                return "missing"
        if HF_CONVERT_RE.match(script):
            step.kind, step.script, step.ft = "hf_convert", "convert_checkpoint.py", True
            self.notes.append(
                f"step `{spec.name}`: `{script}` (0.5-0.7, FasterTransformer format) -> `convert_checkpoint.py` "
                f"of example `{self.example}` (the TensorRT-LLM checkpoint format)"
            )
            return "hf_convert"
        if script == "build.py":
            step.kind, step.script, step.command = "old_build", None, "trtllm-build"
            return "build.py"
        return "missing"  # make_plan reports the missing script (with the hint for old names)

    def _known(self, step: _Step) -> frozenset[str] | None:
        if step.kind == "trtllm-build":
            return self.known_flags(None, "trtllm-build")
        if step.kind == "script" and step.script is not None:
            try:
                path = self.tree.script(step.example or self.example, step.script)
            except ConfigError:
                return None
            return self.known_flags(path, Path(step.script).name)
        return None

    def _convert_step(self) -> _Step | None:
        """The latest earlier step that makes a checkpoint from the model (where moved flags go)."""
        return next((s for s in reversed(self.steps) if s.script == "convert_checkpoint.py"), None)

    # --- one flag --------------------------------------------------------------------------------

    def _apply(
        self,
        row: Row,
        flag: str,
        value: ArgValue,
        step: _Step,
        args: dict[str, ArgValue],
        convert: _Step | None,
        where: str,
        original: Mapping[str, ArgValue],
    ) -> bool:
        """Apply ``row`` to ``--flag value``; returns True when a build.py reads the HF model directly."""
        bare = is_bare(value)
        shown = f"`{flag}`" if bare else f"`{flag}: {value}`"
        if row.action == "refuse":
            self.problems.append(f"{where}: `--{flag}`: {row.why}; nearest current equivalent: {row.nearest}")
        elif row.action == "drop":
            if value is not False:
                self.notes.append(f"{where}: {shown} dropped: {row.why}")
        elif row.action == "seq_len":
            got = seq_len(original, program=row.program, example=self.example)
            if got is not None:
                args["max_seq_len"], how = got
                self.notes.append(f"{where}: {shown} -> `max_seq_len: {got[0]}` ({how})")
        elif row.action == "input":
            if step.kind == "old_build" and isinstance(value, str) and value.startswith("{model_dir}"):
                return True  # build.py read the Hugging Face model: a convert step is made for it
            args[row.new or flag] = value
            if row.new and row.new != flag:
                self.notes.append(f"{where}: `{flag}: {value}` -> `{row.new}: {value}` ({row.why})")
        elif row.action == "output":
            self.notes.append(f"{where}: `{flag}` dropped: {row.why}")
        elif row.action == "rename":
            self._rename(row, flag, value, step, args, where)
        elif row.action == "move":
            target = convert if step.kind == "old_build" else None
            if target is None:  # a build.py that read the HF model: its convert step is made afterwards
                step.moved[row.new or flag] = new_value(row, value)
            elif row.new == "dtype" and "dtype" in target.args:
                self.notes.append(f"{where}: {shown} dropped: the checkpoint's dtype (step `{target.name}`) decides")
            else:
                target.args[row.new or flag] = new_value(row, value)
                self.notes.append(f"{where}: {shown} moved to step `{target.name}` ({row.why})")
        return False

    def _rename(self, row: Row, flag: str, value: ArgValue, step: _Step, args: dict[str, ArgValue], where: str) -> None:
        bare = is_bare(value)
        new = row.new or flag
        if value is False:
            return
        if new == "gpt_attention_plugin" and bare:
            self.notes.append(f"{where}: `{flag}` dropped: {row.why}")
            return
        if new == "workers":
            old = self._original  # build.py: its own world_size (or tp x pp), whatever order the flags came in
            world = to_int(old.get("world_size")) or (to_int(old.get("tp_size")) or 1) * (
                to_int(old.get("pp_size")) or 1
            )
            world = max(world, self._world_size(step))
            if world > 1:
                args["workers"] = world
                self.notes.append(f"{where}: `{flag}` -> `workers: {world}` ({row.why})")
            else:
                self.notes.append(f"{where}: `{flag}` dropped: one rank, nothing to build in parallel")
            return
        mapped: ArgValue = "auto" if new == "gemm_plugin" and bare else new_value(row, value)
        args[new] = mapped
        why = f" ({row.why})" if row.why and not (new == "gpt_attention_plugin" and not bare) else ""
        self.notes.append(f"{where}: `{flag}{'' if bare else f': {value}'}` -> `{new}: {_show(mapped)}`{why}")

    def _world_size(self, step: _Step | None = None) -> int:
        """tp x pp of the conversion: the earlier convert step's, or what a build.py moves to its own."""
        source = step.moved if step is not None and step.moved else None
        if source is None:
            convert = self._convert_step()
            source = convert.args if convert is not None else {}
        tp = to_int(source.get("tp_size")) or 1
        pp = to_int(source.get("pp_size")) or 1
        return tp * pp

    def _finish_old_build(self, step: _Step, spec: StepSpec, hf_input: bool, where: str) -> None:
        """build.py -> trtllm-build: the limits it defaulted to, and the convert step it may stand for."""
        defaults = OLD_DEFAULTS.get(("build.py", self.example), {})
        if defaults and not any(k in spec.args for k in ("max_batch_size", "max_input_len", "max_output_len")):
            self.notes.append(
                f"{where}: no max_input_len/max_output_len: build.py built for {defaults['max_input_len']} input + "
                f"{defaults['max_output_len']} output tokens by default; trtllm-build's defaults apply now "
                "(max_input_len 1024, max_seq_len = the model's max_position_embeddings)"
            )
        if "max_seq_len" not in step.args and "max_input_len" in step.args and "max_output_len" in defaults:
            inp = to_int(step.args["max_input_len"]) or 0
            step.args["max_seq_len"] = inp + defaults["max_output_len"]
            self.notes.append(
                f"{where}: `max_seq_len: {step.args['max_seq_len']}` (max_input_len {inp} + build.py's default "
                f"max_output_len {defaults['max_output_len']})"
            )
        moved = step.moved
        world = to_int(spec.args.get("world_size"))
        if hf_input or "meta_ckpt_dir" in moved:
            convert = _Step("convert", "script", "convert_checkpoint.py", None, None)
            convert.args = {"model_dir": "{model_dir}"} if "meta_ckpt_dir" not in moved else {}
            convert.args.update(moved)
            tp = to_int(convert.args.get("tp_size")) or 1
            pp = to_int(convert.args.get("pp_size")) or 1
            if world is not None and world != tp * pp:
                self.problems.append(
                    f"{where}: `world_size: {world}` is not tp_size {tp} x pp_size {pp}: the old build.py refused "
                    f"this too; set `tp_size`/`pp_size` so they multiply to {world}"
                )
            self.steps.append(convert)
            self.notes.append(
                f"{where}: `build.py` (0.5-0.7) read the Hugging Face model itself: on this release that is "
                f"step `convert` (convert_checkpoint.py of example `{self.example}`) + `trtllm-build`"
                + (f"; moved to `convert`: {', '.join(f'`{k}`' for k in moved)}" if moved else "")
            )
            step.args = {"checkpoint_dir": "{steps.convert.output_dir}", **step.args}
            return
        self.notes.append(f"{where}: `build.py` (0.5-0.7) -> `trtllm-build`")
        earlier = self._convert_step()
        if moved:
            if earlier is None:
                self.problems.append(
                    f"{where}: {', '.join(f'`--{k}`' for k in moved)} are set at conversion now, and no earlier step "
                    "converts the model: add a convert_to_ft step (convert_checkpoint.py)"
                )
            else:
                for key, value in moved.items():
                    earlier.args.setdefault(key, value)
        if earlier is not None and world is not None and world != self._world_size():
            self.problems.append(
                f"{where}: `world_size: {world}` but step `{earlier.name}` converts for {self._world_size()} GPU(s) "
                "(tensor parallelism is fixed at conversion): make them agree"
            )

    # --- paths -----------------------------------------------------------------------------------

    def _map(self, value: ArgValue, where: str, what: str) -> ArgValue:
        if isinstance(value, list):
            return [self._map_one(v, where, what) if isinstance(v, str) else v for v in value]
        return self._map_one(value, where, what) if isinstance(value, str) else value

    def _map_one(self, value: str, where: str, what: str) -> str:
        model = MODEL_PREFIX + self.config.model.id.strip("/")
        if value == model or value.startswith(model + "/"):
            self._path_notes.append(f"{where}: `{value}` -> `{{model_dir}}{value[len(model) :]}` (the model)")
            return "{model_dir}" + value[len(model) :]
        if value.startswith(MODEL_PREFIX):
            self.problems.append(
                f"{where}: {what}: `{value}` points into /src/models/ but not at this config's model "
                f"`{self.config.model.id}`; use `{model}` or {{model_dir}}"
            )
            return value
        for prefix in TREE_PREFIXES:
            if value.startswith(prefix):
                return str(self.tree.root / value[len(prefix) :])
        wp = self._work_path(value)
        if wp is None:
            return value
        for step in reversed(self.steps):
            for d in step.declared:
                if wp == d or wp.startswith(d + "/"):
                    rest = wp[len(d) + 1 :] if wp != d else ""
                    parts = rest.split("/") if rest else []
                    if step.ft and parts and _GPU_DIR_RE.match(parts[0]):
                        parts = parts[1:]  # the old <tp>-gpu sub-folder: the new converter writes no such thing
                    mapped = "{steps." + step.name + ".output_dir}" + "".join("/" + p for p in parts)
                    self._path_notes.append(f"{where}: `{value}` -> `{mapped}` (the output of step `{step.name}`)")
                    return mapped
        if value.startswith(SRC):
            self._path_notes.append(f"{where}: `{value}` -> `{{work_dir}}/{wp}` (cog-trt-llm ran in /src)")
            return "{work_dir}/" + wp
        return value

    def _work_path(self, value: str | None) -> str | None:
        """``value`` as a path relative to the work dir (cog-trt-llm's /src), or None if it is not one."""
        if not value or "{" in value:
            return None
        if value.startswith(SRC):
            return posixpath.normpath(value[len(SRC) :])
        if value.startswith("/") or value.startswith("~"):
            return None
        if "/" in value or value.startswith("."):
            norm = posixpath.normpath(value)
            return None if norm.startswith("..") else norm
        return None

    def _work_path_of_mapped(self, value: str) -> str | None:
        if value.startswith("{work_dir}/"):
            return posixpath.normpath(value[len("{work_dir}/") :])
        return self._work_path(value)


def _show(value: ArgValue) -> str:
    return "true" if value is True else str(value)
