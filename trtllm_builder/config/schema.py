"""Pipeline config: schema, both accepted forms, and strict loading.

Two forms are accepted and normalised into one :class:`BuildConfig`:

* Replicate cog-trt-llm's form (``model_id``, ``example_name``, ``convert_to_ft`` /
  ``quantize`` / ``build`` steps), accepted as written;
* the project's own form (``model``, ``trtllm``, ``steps``, ``output``).

Parsing only: no network, no subprocess. Cross-file checks (does the script exist,
do paths stay inside the work dir) belong to :mod:`trtllm_builder.plan.planner`.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trtllm_builder.config.recipe import Recipe, recipe_problems
from trtllm_builder.config.yamlsafe import load_yaml
from trtllm_builder.errors import ConfigError
from trtllm_builder.secrets import MASK, SECRET_KEYS, mask, secrets_in_text

__all__ = [
    "LEGACY_STEP_ORDER",
    "ArgValue",
    "BuildConfig",
    "ModelSpec",
    "OutputSpec",
    "SmokeTest",
    "StepSpec",
    "Translation",
    "load_config",
    "parse_config",
]

Scalar = bool | int | float | str | None
ArgValue = Scalar | list[bool | int | float | str]

LEGACY_STEP_ORDER = ("convert_to_ft", "quantize", "build")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ARG_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
EXAMPLE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
# Hugging Face repo ids: "name" or "org/name"; letters, digits, - _ . (no "--" / ".." at the ends).
REPO_ID_RE = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/)?[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMANDS = ("trtllm-build",)
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_STEPS = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StepModel(_Strict):
    """A step in the project form."""

    name: Annotated[str, Field(min_length=1, max_length=64)]
    script: str | None = None
    command: str | None = None
    example: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)  # value types checked by _check_args
    output_dir: str | None = None
    expect: Literal["auto", "checkpoint", "engine", "any", "none"] = "auto"
    timeout: Annotated[float, Field(gt=0, le=7 * 24 * 3600)] | None = None


class ModelModel(_Strict):
    id: Annotated[str, Field(min_length=1, max_length=4096)]
    revision: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    tar_url: str | None = None


class TrtllmModel(_Strict):
    example: str | None = None
    # the TensorRT-LLM release this config is written for; a build under another one is refused
    version: Annotated[str, Field(pattern=r"^\d+\.\d+\.\d+[A-Za-z0-9.]*$")] | None = None


class OutputModel(_Strict):
    format: Literal["engine", "triton"] = "engine"
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\.tar\.gz$")] = "engine.tar.gz"
    triton: dict[str, Any] | None = None
    upload: str | None = None


class SmokeTestModel(_Strict):
    prompt: Annotated[str, Field(min_length=1, max_length=8192)]
    max_output_len: Annotated[int, Field(ge=1, le=4096)] = 16
    timeout: Annotated[float, Field(gt=0, le=24 * 3600)] = 1800.0


class ProjectModel(_Strict):
    model: ModelModel
    trtllm: TrtllmModel = Field(default_factory=TrtllmModel)
    steps: list[StepModel] | None = None
    recipe: Recipe | None = None  # instead of steps: expanded by expand.expand_config
    output: OutputModel = Field(default_factory=OutputModel)
    smoke_test: SmokeTestModel | None = None
    hf_token: str | None = None


class LegacyStepModel(_Strict):
    """A step in cog-trt-llm's form."""

    script: str | None = None
    output_dir: str | None = None
    args: dict[str, Any] | None = None
    executable: Literal["python", "trtllm-build"] | None = None


class LegacyModel(_Strict):
    """cog-trt-llm's top-level keys: the ones its predict.py and trt_llm_builder.py read."""

    model_id: Annotated[str, Field(min_length=1, max_length=4096)]
    example_name: Annotated[str, Field(min_length=1)]
    hf_token: str | None = None
    model_tar_url: str | None = None
    weight_format: Literal["safetensors", "pt"] | None = None  # which weights its downloader fetched
    convert_to_ft: LegacyStepModel | None = None
    quantize: LegacyStepModel | None = None
    build: LegacyStepModel | None = None


# Keys older cog-trt-llm versions read and later ones dropped: accepted and ignored, with a warning.
LEGACY_IGNORED = {
    "model_name": "older cog-trt-llm versions read it as the model's directory name; `model_id` decides now",
    "input_dir": "older cog-trt-llm versions took it and never used it",
}


# --- the normalised form every later stage works on -------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    id: str
    revision: str | None = None
    tar_url: str | None = None
    weight_format: str | None = None  # cog-trt-llm's `weight_format` (safetensors | pt), as given


@dataclass(frozen=True)
class Translation:
    """A cog-trt-llm config as the project form on the pinned release (see translate.py)."""

    release: str | None  # the TensorRT-LLM version it was translated onto
    project: dict[str, Any]  # the project-form config a user can copy (no secrets)
    notes: tuple[str, ...]  # one per changed flag, script or path


@dataclass(frozen=True)
class StepSpec:
    name: str
    script: str | None
    command: str | None
    example: str | None
    args: dict[str, ArgValue]
    output_dir: str | None = None
    expect: str = "auto"
    timeout: float | None = None
    inject: bool = True  # may the tool inject the dirs the user did not pass?


@dataclass(frozen=True)
class SmokeTest:
    prompt: str
    max_output_len: int = 16
    timeout: float = 1800.0


@dataclass(frozen=True)
class OutputSpec:
    format: str = "engine"
    name: str = "engine.tar.gz"
    triton: dict[str, Any] | None = None
    upload: str | None = None


@dataclass(frozen=True)
class BuildConfig:
    form: Literal["cog-trt-llm", "project"]
    model: ModelSpec
    example: str | None
    steps: tuple[StepSpec, ...]
    output: OutputSpec = field(default_factory=OutputSpec)
    smoke_test: SmokeTest | None = None
    hf_token: str | None = None  # a secret: never logged, never in argv or files
    raw: dict[str, Any] = field(default_factory=dict)  # as given, secrets redacted
    recipe: Recipe | None = None  # steps are empty until expand.expand_config fills them
    recipe_source: str | None = None  # where the expansion read the model's config.json
    warnings: tuple[str, ...] = ()  # keys accepted but ignored (cog-trt-llm's form), shown as plan notes
    translation: Translation | None = None  # a cog-trt-llm config translated onto the pinned release
    trtllm_version: str | None = None  # `trtllm.version`: the release the config requires

    @property
    def secrets(self) -> list[str]:
        return [s for s in (self.hf_token,) if s]


# --- loading ------------------------------------------------------------------------------------------

_PROJECT_KEYS = frozenset(ProjectModel.model_fields)
_LEGACY_KEYS = frozenset(LegacyModel.model_fields)
_LEGACY_STEP_KEYS = frozenset(LegacyStepModel.model_fields)


def _did_you_mean(word: str, options: Any) -> str:
    close = difflib.get_close_matches(str(word), sorted(options), n=1, cutoff=0.6)
    return f"; did you mean `{close[0]}`?" if close else ""


def redact_config(data: Any) -> Any:
    """A copy of the raw config with every secret replaced by ``**********``: the values of secret keys
    (``hf_token`` ..., at any depth) and, in any string, the secret parts of URLs (a signed
    ``model_tar_url``'s query) and anything shaped like a token (see secrets.py)."""
    if isinstance(data, dict):
        return {k: (MASK if k in SECRET_KEYS and v else redact_config(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact_config(v) for v in data]
    if isinstance(data, str):
        return mask(data, secrets_in_text(data))
    return data


def _loc(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic error location with step names instead of list indexes."""
    parts: list[str] = []
    node = data
    for item in loc:
        if isinstance(item, int) and isinstance(node, list) and item < len(node):
            node = node[item]
            name = node.get("name") if isinstance(node, dict) else None
            parts.append(f"[{item}]" + (f" (step `{name}`)" if isinstance(name, str) else ""))
            continue
        parts.append(("." if parts else "") + str(item))
        node = node.get(item) if isinstance(node, dict) else None
    return "".join(parts)


def _problems(exc: ValidationError, data: Any, model: type[BaseModel]) -> list[str]:
    out: list[str] = []
    for err in exc.errors():
        loc = tuple(err["loc"])
        # pydantic reports each member of a union separately; keep the first useful line per location
        where = _loc(loc, data)
        if err["type"] == "extra_forbidden":
            known = _known_fields(model, loc[:-1], data)
            out.append(f"{where}: unknown key{_did_you_mean(str(loc[-1]), known)}")
        elif err["type"] == "missing":
            out.append(f"{where}: required key is missing")
        else:
            msg = err["msg"]
            value = err.get("input")
            shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
            if len(shown) > 80:
                shown = shown[:77] + "..."
            out.append(f"{where}: {msg} (got {shown})")
    # de-duplicate while keeping order (unions produce several errors for one location)
    seen: set[str] = set()
    uniq = []
    for p in out:
        key = p.split(":", 1)[0]
        if key not in seen:
            seen.add(key)
            uniq.append(p)
    return uniq


def _known_fields(model: type[BaseModel], loc: tuple[Any, ...], data: Any) -> list[str]:
    current: Any = model
    for item in loc:
        if isinstance(item, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        fld = current.model_fields.get(str(item))
        if fld is None:
            return []
        current = _unwrap(fld.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    for arg in getattr(annotation, "__args__", ()) or ():
        inner = _unwrap(arg)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner
    return annotation


def _check_args(where: str, args: dict[str, ArgValue], problems: list[str], *, key_name: str = "args") -> None:
    at = f"{where}.{key_name}"
    if len(args) > MAX_ARGS:
        problems.append(f"{at}: {len(args)} args; the limit is {MAX_ARGS}")
    for key, value in args.items():
        if key.startswith("-"):
            problems.append(f"{at}: write `{key.lstrip('-')}`, not `{key}` (the tool adds the dashes)")
            continue
        if not ARG_KEY_RE.match(key):
            problems.append(f"{at}: `{key}` is not a flag name (letters, digits, `_`, `-`, `.`; no spaces)")
            continue
        if isinstance(value, dict):
            problems.append(
                f"{at}.{key}: a mapping is not an arg value; use a string, number, true/false, "
                "empty (bare flag) or a list"
            )
            continue
        values = value if isinstance(value, list) else [value]
        for v in values:
            if not isinstance(v, str | int | float | bool) and not (v is None and not isinstance(value, list)):
                problems.append(
                    f"{at}.{key}: {type(v).__name__} values are not allowed; use strings, numbers or true/false"
                )
            elif isinstance(v, str) and "\x00" in v:
                problems.append(f"{at}.{key}: contains a NUL byte")
            elif isinstance(v, str) and len(v) > MAX_ARG_CHARS:
                problems.append(f"{at}.{key}: {len(v)} characters; the limit is {MAX_ARG_CHARS}")
            elif isinstance(v, float) and v != v:  # NaN
                problems.append(f"{at}.{key}: NaN is not a valid value")
            elif isinstance(v, int) and not isinstance(v, bool) and abs(v) > 2**63 - 1:
                problems.append(f"{at}.{key}: {v} does not fit in 64 bits")


def _check_step(where: str, step: StepSpec, problems: list[str]) -> None:
    if not NAME_RE.match(step.name):
        problems.append(f"{where}.name: `{step.name}` must be letters, digits, `_`, `-`, `.` (max 64)")
    if (step.script is None) == (step.command is None):
        problems.append(f"{where}: give exactly one of `script` (a file of the example) or `command`")
    if step.command is not None and step.command not in COMMANDS:
        problems.append(
            f"{where}.command: `{step.command}` is not allowed; allowed: {', '.join(COMMANDS)}"
            + _did_you_mean(step.command, COMMANDS)
        )
    if step.script is not None:
        s = step.script
        if not s or "\x00" in s or s.startswith(("/", "~")) or ".." in s.replace("\\", "/").split("/"):
            problems.append(
                f"{where}.script: `{s}` must be a file name inside the example directory (no absolute paths, no `..`)"
            )
    if step.example is not None and not EXAMPLE_RE.match(step.example):
        problems.append(f"{where}.example: `{step.example}` must be an example name such as `llama` or `quantization`")
    _check_args(where, step.args, problems)


def _from_project(
    m: ProjectModel,
) -> tuple[ModelSpec, str | None, list[StepSpec], OutputSpec, SmokeTest | None]:
    steps = [
        StepSpec(
            name=s.name,
            script=s.script,
            command=s.command,
            example=s.example,
            args=dict(s.args),
            output_dir=s.output_dir,
            expect=s.expect,
            timeout=s.timeout,
        )
        for s in m.steps or ()
    ]
    smoke = SmokeTest(m.smoke_test.prompt, m.smoke_test.max_output_len, m.smoke_test.timeout) if m.smoke_test else None
    out = OutputSpec(m.output.format, m.output.name, m.output.triton, m.output.upload)
    return ModelSpec(m.model.id, m.model.revision, m.model.tar_url), m.trtllm.example, steps, out, smoke


def _split_unknown(
    data: dict[str, Any], known: frozenset[str], where: str, problems: list[str], warnings: list[str]
) -> dict[str, Any]:
    """cog-trt-llm ignored keys it did not read: so do we, loudly; a near-miss of a known key is an error."""
    kept: dict[str, Any] = {}
    for key, value in data.items():
        if key in known:
            kept[key] = value
        elif key in LEGACY_IGNORED:
            warnings.append(f"{where}`{key}` is ignored: {LEGACY_IGNORED[key]}")
        elif close := _near_miss(key, known):
            problems.append(f"{where}{key}: unknown key; did you mean `{close}`?")
        else:
            warnings.append(f"{where}`{key}` is ignored: cog-trt-llm does not read it (neither does this tool)")
    return kept


def _edits(a: str, b: str) -> int:
    """Levenshtein distance (keys are short)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def _near_miss(key: str, known: frozenset[str]) -> str | None:
    """A known key ``key`` is probably a typo of: very similar, or one or two edits away."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.8)
    if close:
        return close[0]
    best = min(sorted(known), key=lambda k: _edits(key, k))
    return best if _edits(key, best) <= max(1, len(best) // 5) else None


def _legacy_keys(data: dict[str, Any], problems: list[str], warnings: list[str]) -> dict[str, Any]:
    top = _split_unknown(data, _LEGACY_KEYS, "", problems, warnings)
    for name in LEGACY_STEP_ORDER:
        step = top.get(name)
        if isinstance(step, dict):
            top[name] = _split_unknown(step, _LEGACY_STEP_KEYS, f"{name}.", problems, warnings)
    return top


def _from_legacy(m: LegacyModel, problems: list[str]) -> tuple[ModelSpec, str | None, list[StepSpec]]:
    steps: list[StepSpec] = []
    for name in LEGACY_STEP_ORDER:
        s: LegacyStepModel | None = getattr(m, name)
        if s is None:
            continue
        if s.executable == "trtllm-build":
            script, command = None, "trtllm-build"
        else:
            script, command = s.script, None
            if not s.script:
                problems.append(f"{name}.script: required key is missing (or set `executable: trtllm-build`)")
        steps.append(
            StepSpec(
                name=name,
                script=script,
                command=command,
                example=None,
                args=dict(s.args or {}),
                output_dir=s.output_dir,
                inject=False,  # cog-trt-llm users pass every path themselves
            )
        )
    if not steps:
        problems.append("no steps: give at least one of `convert_to_ft`, `quantize`, `build`")
    return ModelSpec(m.model_id, None, m.model_tar_url, m.weight_format), m.example_name, steps


def parse_config(data: Any, *, source: str = "config") -> BuildConfig:
    """Validate parsed YAML data and normalise it. Raises ``ConfigError`` listing every problem."""
    if not isinstance(data, dict):
        kind = "empty" if data is None else type(data).__name__
        raise ConfigError(f"{source}: the top level must be a mapping of keys, got {kind}")
    bad_keys = [k for k in data if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{source}: top-level keys must be strings, got {bad_keys[0]!r}")
    keys = set(data)
    legacy = bool(keys & {"model_id", "example_name", "convert_to_ft", "quantize", "build"})
    project = bool(keys & {"model", "trtllm", "steps", "recipe", "output", "smoke_test"})
    if legacy and project:
        raise ConfigError(
            f"{source}: mixes cog-trt-llm keys ({', '.join(sorted(keys & _LEGACY_KEYS))}) with project keys "
            f"({', '.join(sorted(keys & _PROJECT_KEYS))}); use one form"
        )
    problems: list[str] = []
    warnings: list[str] = []
    raw = redact_config(data)
    model_cls: type[BaseModel] = LegacyModel if legacy else ProjectModel
    if legacy:
        data = _legacy_keys(data, problems, warnings)
        if problems:
            raise ConfigError(f"{source} is invalid:", problems=problems)
    try:
        parsed = model_cls.model_validate(data)
    except ValidationError as exc:
        probs = _problems(exc, data, model_cls)
        if not legacy and not project:
            probs.insert(
                0,
                "neither form recognised: a project config has `model` and `steps`; "
                "a cog-trt-llm config has `model_id`, `example_name` and `convert_to_ft`/`build`",
            )
        raise ConfigError(f"{source} is invalid:", problems=probs) from None

    output = OutputSpec()
    smoke: SmokeTest | None = None
    token: str | None = None
    recipe: Recipe | None = None
    required_version: str | None = None
    if isinstance(parsed, LegacyModel):
        model, example, steps = _from_legacy(parsed, problems)
        form: Literal["cog-trt-llm", "project"] = "cog-trt-llm"
        token = parsed.hf_token
    elif isinstance(parsed, ProjectModel):
        model, example, steps, output, smoke = _from_project(parsed)
        form = "project"
        token = parsed.hf_token
        recipe = parsed.recipe
        required_version = parsed.trtllm.version
        if recipe is not None:
            if parsed.steps is not None:
                problems.append("give either `steps:` or `recipe:`, not both (`plan` prints a recipe's steps)")
            _check_args("recipe", dict(recipe.build_args), problems, key_name="build_args")
            problems.extend(recipe_problems(recipe, output_format=output.format))
        elif not steps:
            problems.append("steps: give at least one step (or a `recipe:`)")

    if example is not None and not EXAMPLE_RE.match(example):
        problems.append(f"example: `{example}` must be an example directory name such as `llama` or `gpt`")
    if len(steps) > MAX_STEPS:
        problems.append(f"steps: {len(steps)} steps; the limit is {MAX_STEPS}")
    names: set[str] = set()
    for i, step in enumerate(steps):
        where = step.name if form == "cog-trt-llm" else f"steps[{i}] (`{step.name}`)"
        if step.name in names:
            problems.append(f"{where}: step name `{step.name}` is used twice; step names must be unique")
        names.add(step.name)
        if step.example is None and example is None and step.script is not None:
            problems.append(f"{where}: no example: set `trtllm.example` or the step's `example`")
        _check_step(where, step, problems)
    if "\x00" in model.id:
        problems.append("model id contains a NUL byte")
    if problems:
        raise ConfigError(f"{source} is invalid:", problems=problems)
    return BuildConfig(
        form=form,
        model=model,
        example=example,
        steps=tuple(steps),
        output=output,
        smoke_test=smoke,
        hf_token=token or None,
        raw=raw,
        recipe=recipe,
        warnings=tuple(warnings),
        trtllm_version=required_version,
    )


def load_config(text: str | bytes, *, source: str = "config") -> BuildConfig:
    """Parse and validate a YAML pipeline config."""
    return parse_config(load_yaml(text, source=source), source=source)
