"""A Triton model repository (``inflight_batcher_llm``) around a built engine.

The backend ships five ``config.pbtxt`` templates with ``${var}`` placeholders, filled upstream
by ``tools/fill_template.py`` (``string.Template.safe_substitute``): a forgotten variable stays
in place and Triton fails later with an opaque error. Here every template is read first
(:mod:`.pbtxt`), its variables are compared with what can be filled (the engine's own
``config.json``, ``output.triton``), and:

* each template gets its own values only (from v0.19 ``fill_template.py`` rejects keys a
  template lacks); placeholders inside comments are left alone, as ``safe_substitute`` and
  Triton do;
* a ``parameters`` block whose variable nobody set is removed only where no loader of that model
  reads it without a fallback (:mod:`.tritonloaders`: the template's own ``model.py`` files,
  and the C++ backend's table); where one does, it keeps the value that loader reads as unset
  (``""`` or the placeholder);
* data types come from what the ensemble wires a tensor to, else from the documented
  invocations (``TYPE_FP16`` for the prompt table and encoder features), the logits type from
  the engine;
* any other unfilled variable is a :class:`ConfigError` naming it, before anything is written;
* the result is checked as Triton would load it (:mod:`.tritonverify`) before it is renamed
  into place.

Layout written (``<m>`` is ``model_name``, ``tensorrt_llm`` by default)::

    preprocessing/  postprocessing/  tensorrt_llm_bls/  ensemble/   config.pbtxt + 1/...
    <m>/config.pbtxt
    <m>/1/config.json, rank0.engine ...     engine (hard links when possible)
    <m>/tokenizer/...                       tokenizer files and the model's config.json

The tokenizer lives inside the ``<m>`` model folder, not at the repository root:
Triton treats every root folder as a model and fails to start on one without a
``config.pbtxt`` ("Poll failed for model directory 'tokenizer'"), while it ignores
non-numeric sub-folders of a model folder.
"""

from __future__ import annotations

import difflib
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trtllm_builder.errors import ConfigError, PackagingError, SetupError
from trtllm_builder.fetch.sources import tokenizer_files
from trtllm_builder.outputs import pbtxt
from trtllm_builder.outputs.engineinfo import EngineInfo, read_engine_info
from trtllm_builder.outputs.tritonloaders import Requirement, cpp_requirements, merge
from trtllm_builder.outputs.tritonverify import python_model_requirements, verify_model_repository
from trtllm_builder.plan.layout import inspect_dir

__all__ = [
    "DEFAULT_TEMPLATE_SUBDIR",
    "MODELS",
    "TOKENIZER_SUBDIR",
    "EngineInfo",
    "TritonOptions",
    "check_batch_size",
    "cpp_reads",
    "find_templates",
    "make_model_repository",
    "parse_triton_options",
    "read_engine_info",
    "required_parameters",
    "template_variables",
    "tokenizer_folder_files",
    "validate_options",
    "verify_model_repository",
]

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE_SUBDIR = "all_models/inflight_batcher_llm"
# TensorRT-LLM >= 0.20 carries the backend in its own tree.
_TRTLLM_TREE_SUBDIR = "triton_backend/" + DEFAULT_TEMPLATE_SUBDIR
MODELS = ("preprocessing", "tensorrt_llm", "postprocessing", "ensemble", "tensorrt_llm_bls")
TOKENIZER_SUBDIR = "tokenizer"
_LLM = "tensorrt_llm"

# Variables the builder fills from the engine and the repository layout; `extra` may not set them.
# (The engine-derived *_data_type inputs may be overridden through `extra`.)
_FIXED = frozenset({"engine_dir", "tokenizer_dir", "logits_datatype", "max_beam_width", "tensorrt_llm_model_name"})
# TritonOptions field -> the template variable it fills, where the names differ.
_VAR_FOR_FIELD = {"decoupled": "decoupled_mode"}
_NOT_VARIABLES = frozenset({"extra", "mount_path"})

_TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "fp32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "fp16": "TYPE_FP16",
    "half": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "bf16": "TYPE_BF16",
}
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_RANK_RE = re.compile(r"^rank(\d+)\.engine$")


# --------------------------------------------------------------------------- options


class TritonOptions(BaseModel):
    """The ``output.triton`` section of the config.

    Each field other than ``mount_path`` and ``extra`` is named after the template
    variable it fills (``decoupled`` fills ``decoupled_mode``). ``None`` means "unset":
    the matching optional ``parameters`` block is removed and the backend uses its default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    decoupled: bool = False
    max_queue_delay_microseconds: int = Field(0, ge=0)
    max_queue_size: int = Field(0, ge=0)
    # "v1" is rejected by recent backends at load time; it stays selectable for old ones.
    batching_strategy: Literal["inflight_fused_batching", "v1"] = "inflight_fused_batching"
    triton_backend: Literal["tensorrtllm", "python"] = "tensorrtllm"
    mount_path: str = "/models"
    triton_max_batch_size: int | None = Field(None, ge=1)
    preprocessing_instance_count: int = Field(1, ge=1)
    postprocessing_instance_count: int = Field(1, ge=1)
    bls_instance_count: int = Field(1, ge=1)
    kv_cache_free_gpu_mem_fraction: float | None = Field(None, gt=0, le=1)
    max_tokens_in_paged_kv_cache: int | None = Field(None, ge=1)
    max_attention_window_size: int | None = Field(None, ge=1)
    batch_scheduler_policy: Literal["max_utilization", "guaranteed_no_evict"] | None = None
    enable_chunked_context: bool | None = None
    enable_kv_cache_reuse: bool | None = None
    exclude_input_in_output: bool | None = None
    normalize_log_probs: bool | None = None
    gpu_device_ids: str | None = Field(None, pattern=r"^\d+(,\d+)*$")
    accumulate_tokens: bool | None = None
    add_special_tokens: bool | None = None
    skip_special_tokens: bool | None = None
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("mount_path")
    @classmethod
    def _check_mount_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path inside the serving container, such as /models; got {value!r}")
        if any(c in value for c in "\"'\\\n\r\t ${}"):
            raise ValueError("must not contain quotes, backslashes, whitespace, `$` or braces")
        normalized = posixpath.normpath(value)
        if normalized.startswith("//"):
            normalized = "/" + normalized.lstrip("/")
        return normalized

    @field_validator("extra", mode="before")
    @classmethod
    def _stringify_extra(cls, value: Any) -> Any:
        # YAML gives ints, floats and bools; the templates only ever hold text.
        if not isinstance(value, Mapping):
            return value
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if isinstance(item, bool):
                out[key] = "true" if item else "false"
            elif isinstance(item, int | float):
                out[key] = str(item)
            else:
                out[key] = item
        return out

    @field_validator("extra")
    @classmethod
    def _check_extra(cls, value: dict[str, str]) -> dict[str, str]:
        typed = _typed_variables()
        for key, item in value.items():
            if not _IDENT_RE.match(key):
                raise ValueError(f"`{key}` is not a template variable name")
            if key in typed:
                raise ValueError(f"`{key}` has its own option: set output.triton.{typed[key]} instead of extra.{key}")
            if key in _FIXED:
                raise ValueError(
                    f"`{key}` is filled by the builder from the engine and the repository layout"
                    + ("; set output.triton.mount_path to move it" if key.endswith("_dir") else "")
                )
            if "\n" in item or "\r" in item or "${" in item:
                raise ValueError(f"extra.{key}: values must be one line without `${{`")
        return value

    def variable_values(self) -> dict[str, str]:
        """Template values from the options alone (the engine adds the rest)."""
        values: dict[str, str] = {}
        for var, name in _typed_variables().items():
            value = getattr(self, name)
            if value is not None:
                values[var] = _format_value(value)
        return values


def _typed_variables() -> dict[str, str]:
    """Template variable -> the TritonOptions field that sets it."""
    return {_VAR_FOR_FIELD.get(f, f): f for f in TritonOptions.model_fields if f not in _NOT_VARIABLES}


def parse_triton_options(data: Mapping[str, Any] | None) -> TritonOptions:
    """Validate the config's ``output.triton`` mapping; errors become one :class:`ConfigError`."""
    try:
        return TritonOptions.model_validate(dict(data or {}))
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                close = difflib.get_close_matches(str(err["loc"][0]), list(TritonOptions.model_fields), n=1)
                msg = "unknown option" + (f"; did you mean `{close[0]}`?" if close else "")
                msg += " (other template variables go under output.triton.extra)"
            problems.append(f"output.triton.{loc}: {msg}")
        raise ConfigError("invalid output.triton section", problems=problems) from exc


def _format_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# --------------------------------------------------------------------------- templates


def find_templates(backend_dir: Path) -> Path:
    """The ``inflight_batcher_llm`` template folder inside ``backend_dir``.

    Accepts a tensorrtllm_backend checkout (``all_models/inflight_batcher_llm``), a
    TensorRT-LLM >= 0.20 tree (``triton_backend/all_models/inflight_batcher_llm``) or
    the template folder itself.
    """
    backend_dir = Path(backend_dir)
    candidates = [backend_dir / DEFAULT_TEMPLATE_SUBDIR, backend_dir / _TRTLLM_TREE_SUBDIR, backend_dir]
    for candidate in candidates:
        if (candidate / "tensorrt_llm" / "config.pbtxt").is_file():
            missing = [m for m in MODELS if not (candidate / m / "config.pbtxt").is_file()]
            if missing:
                raise SetupError(
                    f"Triton templates at {candidate} are incomplete: no config.pbtxt for "
                    + ", ".join(missing)
                    + "; use an unmodified tensorrtllm_backend checkout or TensorRT-LLM tree"
                )
            return candidate
    tried = ", ".join(str(c) for c in candidates[:2])
    raise SetupError(
        f"no Triton inflight_batcher_llm templates under {backend_dir} (looked in {tried}); "
        "point it at a tensorrtllm_backend checkout or a TensorRT-LLM >= 0.20 source tree "
        "(which has triton_backend/)"
    )


# --------------------------------------------------------------------------- templates and loaders


@dataclass(frozen=True)
class _Model:
    """One template model folder: its config template and what its loaders read without a fallback."""

    template: pbtxt.Template
    required: Mapping[str, Requirement]


def _load_templates(templates: Path) -> dict[str, _Model]:
    templates = Path(templates)
    models: dict[str, _Model] = {}
    for m in MODELS:
        tmpl = pbtxt.parse_template(m, templates / m / "config.pbtxt")
        loaders: list[dict[str, Requirement]] = []
        version_dir = templates / m / "1"
        if version_dir.is_dir() and (version_dir / "model.py").is_file():
            reqs, problems = python_model_requirements(version_dir, f"{m}/1")
            if problems:
                raise SetupError(f"Triton templates at {templates}: " + "; ".join(problems))
            loaders.append(reqs)
        if m == _LLM:  # the C++ backend of the same release (triton_backend: tensorrtllm)
            loaders.append(cpp_requirements(declared=tmpl.block_keys()))
        models[m] = _Model(tmpl, merge(*loaders))
    return models


def template_variables(templates: Path) -> dict[str, frozenset[str]]:
    """Every ``${variable}`` of each model's ``config.pbtxt`` outside comments, by model name."""
    return {m: t.template.variables for m, t in _load_templates(templates).items()}


def cpp_reads(templates: Path) -> list[str]:
    """The parameters the C++ backend matching ``templates`` reads without a fallback (for the manifest)."""
    tmpl = pbtxt.parse_template(_LLM, Path(templates) / _LLM / "config.pbtxt")
    return sorted(cpp_requirements(declared=tmpl.block_keys()))


def required_parameters(templates: Path) -> dict[str, dict[str, Requirement]]:
    """Per model: the parameters its loaders read without a fallback (see :mod:`.tritonloaders`)."""
    return {m: dict(t.required) for m, t in _load_templates(templates).items()}


def validate_options(options: TritonOptions, templates: Path) -> None:
    """Check ``options`` against the templates, before any build runs.

    Raises :class:`ConfigError` for an ``extra`` key no template has, an option the
    templates do not use, or a template variable that would stay unfilled.
    """
    _check_options(options, _load_templates(templates), templates)


# The data types the documented invocations pass where nothing in the ensemble decides: every
# `fill_template.py` line of tensorrtllm_backend docs/*.md (v0.18.2 to v1.0.0, and main at 8addf2f,
# the TensorRT-LLM 1.2.1 one) gives encoder_input_features_data_type:TYPE_FP16 (multimodal.md:
# TYPE_BF16 for mllama only) and prompt_embedding_table_data_type:TYPE_FP16.
_DOCUMENTED_TYPES = {
    "encoder_input_features_data_type": "TYPE_FP16",
    "prompt_embedding_table_data_type": "TYPE_FP16",
}
# Filled by the builder from the engine and the documented invocations (see _values).
_ENGINE_VARS = _FIXED | {"triton_max_batch_size"} | frozenset(_DOCUMENTED_TYPES)
# The documented invocations set these for tensorrt_llm only; tools/fill_template.py itself
# defaults them to 0 in every template (v0.18.2: max_queue_size only; from v0.19.0 both,
# tools/fill_template.py lines 38-41), which is what preprocessing gets.
_LLM_ONLY = {"max_queue_delay_microseconds": "0", "max_queue_size": "0"}


def _check_options(options: TritonOptions, loaded: Mapping[str, _Model], templates: Path) -> None:
    all_vars = frozenset().union(*(t.template.variables for t in loaded.values()))
    settable = sorted(all_vars - set(_typed_variables()) - _FIXED)
    problems: list[str] = []
    for key in options.extra:
        if key not in all_vars:
            close = difflib.get_close_matches(key, settable, n=1)
            hint = f" (did you mean `{close[0]}`?)" if close else ""
            problems.append(
                f"output.triton.extra.{key}: no template in {templates} has ${{{key}}}{hint}; "
                f"variables extra can set: {', '.join(settable)}"
            )
    for field in sorted(options.model_fields_set - _NOT_VARIABLES):
        var = _VAR_FOR_FIELD.get(field, field)
        if var not in all_vars:
            problems.append(
                f"output.triton.{field}: the templates in {templates} have no ${{{var}}} "
                "(this backend version does not support it); remove the option"
            )
    provided = set(options.variable_values()) | set(options.extra) | _ENGINE_VARS | set(_LLM_ONLY)
    for model, entry in loaded.items():
        tmpl = entry.template
        for var in sorted(tmpl.variables - tmpl.removable - provided):
            problems.append(
                f"{model}/config.pbtxt: ${{{var}}} is not an optional parameters block and nothing sets it; "
                f"set output.triton.extra.{var}"
            )
        for block in tmpl.blocks:
            req = entry.required.get(block.key or "")
            if block.variable in provided or block.variable not in tmpl.removable or req is None:
                continue
            if req.unset_value(block.variable) is None:
                problems.append(
                    f"{model}/config.pbtxt: nothing sets ${{{block.variable}}}, and {req.source} reads parameter "
                    f"`{block.key}` without a fallback and needs a real value; set output.triton.extra.{block.variable}"
                )
    if problems:
        raise ConfigError("output.triton does not fit the Triton templates", problems=problems)


def check_batch_size(options: TritonOptions, engine_max: int, where: str) -> None:
    """``triton_max_batch_size`` may not exceed the engine's ``max_batch_size`` (``where`` says whence it came)."""
    if options.triton_max_batch_size is not None and options.triton_max_batch_size > engine_max:
        raise ConfigError(
            f"output.triton.triton_max_batch_size {options.triton_max_batch_size} exceeds the engine's "
            f"max_batch_size {engine_max} ({where}); lower it or build with a larger --max_batch_size"
        )


# --------------------------------------------------------------------------- engine and tokenizer


def _triton_dtype(dtype: str, what: str) -> str:
    try:
        return _TRITON_DTYPES[dtype.lower()]
    except KeyError:
        raise PackagingError(
            f"engine {what} `{dtype}` has no Triton data type here (known: {', '.join(sorted(_TRITON_DTYPES))})"
        ) from None


def _engine_files(engine_dir: Path, info: EngineInfo) -> list[tuple[str, Path]]:
    """The engine's files as (path relative to the engine dir, path): ``config.json`` and every rank's
    engine, plus what trtllm-build leaves beside them that the runtime loads (``--fast_build``'s
    ``rank<N>_managed_weights.safetensors``, ``--lora_dir``'s ``lora/``, ``quant_cfg.json``)."""
    wanted = [engine_dir / "config.json"] + [engine_dir / f"rank{n}.engine" for n in range(info.world_size)]
    missing = [p.name for p in wanted if not p.is_file()]
    if missing:
        raise PackagingError(
            f"engine dir {engine_dir} lacks {', '.join(missing)} (world size {info.world_size} in its "
            "config.json); did trtllm-build finish for every rank?"
        )
    stale = sorted(
        p.name for p in engine_dir.iterdir() if (m := _RANK_RE.match(p.name)) and int(m.group(1)) >= info.world_size
    )
    if stale:
        raise PackagingError(
            f"engine dir {engine_dir} has {', '.join(stale)} but its config.json says world size "
            f"{info.world_size}: stale files from an earlier build? clear the folder and rebuild"
        )
    found = inspect_dir(engine_dir)
    if found is None or found.layout != "engine" or found.problems:
        problems = "; ".join(found.problems) if found is not None and found.problems else "not an engine layout"
        raise PackagingError(f"engine dir {engine_dir}: {problems}")
    return found.members()


def tokenizer_folder_files(model_dir: Path) -> list[Path]:
    """What ``AutoTokenizer.from_pretrained(<m>/tokenizer)`` needs from the model: its tokenizer files,
    and its ``config.json`` (plus any ``configuration_*.py`` it names): without a ``tokenizer_class``
    in ``tokenizer_config.json``, transformers reads the model type from ``config.json``."""
    model_dir = Path(model_dir)
    files = list(tokenizer_files(model_dir))
    extra = [model_dir / "config.json", *sorted(model_dir.glob("configuration_*.py"))]
    files.extend(p for p in extra if p.is_file() and p not in files)
    return sorted(files, key=lambda p: p.name)


# --------------------------------------------------------------------------- building


def make_model_repository(
    *,
    engine_dir: Path,
    tokenizer_files: list[Path],
    templates: Path,
    dest: Path,
    options: TritonOptions,
    model_name: str = _LLM,
) -> Path:
    """Build a complete ``inflight_batcher_llm`` Triton model repository at ``dest``.

    ``engine_dir`` holds trtllm-build's ``config.json`` + ``rank*.engine``; they are
    hard-linked into ``<model_name>/1/`` when on the same filesystem, else copied (the
    source is never moved). ``tokenizer_files`` go to ``<model_name>/tokenizer/``
    (:func:`tokenizer_folder_files` lists what a model needs there).
    ``dest`` must not exist or be empty; it is written in a sibling temp folder and
    renamed into place once :func:`verify_model_repository` passes. Returns ``dest``.
    """
    engine_dir, templates, dest = Path(engine_dir), Path(templates), Path(dest)
    if not _MODEL_NAME_RE.match(model_name) or model_name in set(MODELS) - {_LLM}:
        raise ConfigError(f"model name {model_name!r} is not usable for the TensorRT-LLM model in the repository")
    loaded = _load_templates(templates)
    _check_options(options, loaded, templates)
    info = read_engine_info(engine_dir)
    engine_files = _engine_files(engine_dir, info)
    if not tokenizer_files:
        raise PackagingError("no tokenizer files given: the preprocessing and postprocessing models need them")
    for tok in tokenizer_files:
        if not Path(tok).is_file():
            raise PackagingError(f"tokenizer file {tok} does not exist or is not a file")
    names = [Path(t).name for t in tokenizer_files]
    if len(set(names)) != len(names):
        raise PackagingError(f"tokenizer files have clashing names: {sorted(names)}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise PackagingError(f"{dest} already exists and is not an empty folder; remove it or choose another output")

    values = _values(options, info, model_name, loaded)
    rendered = {m: _render_model(m, entry, values) for m, entry in loaded.items()}
    if model_name != _LLM:
        rendered[_LLM] = pbtxt.rename_refs(rendered[_LLM], "name", _LLM, model_name, top_level_only=True)
        rendered["ensemble"] = pbtxt.rename_refs(
            rendered["ensemble"], "model_name", _LLM, model_name, top_level_only=False
        )

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for model in MODELS:
            target = tmp / (model_name if model == _LLM else model)
            _copy_model_files(templates / model, target)
            (target / "config.pbtxt").write_text(rendered[model], encoding="utf-8")
            (target / "1").mkdir(exist_ok=True)
        version_dir = tmp / model_name / "1"
        linked = 0
        for rel, src in engine_files:
            (version_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            linked += _link_or_copy(src, version_dir / rel)
        logger.info(
            "engine: %d file(s) into %s/1 (%d hard-linked, %d copied)",
            len(engine_files), model_name, linked, len(engine_files) - linked,
        )  # fmt: skip
        tok_dir = tmp / model_name / TOKENIZER_SUBDIR
        tok_dir.mkdir()
        for tok in tokenizer_files:
            shutil.copyfile(tok, tok_dir / Path(tok).name)
        for model in MODELS:  # an empty version folder would vanish from a tar of files
            vdir = tmp / (model_name if model == _LLM else model) / "1"
            if not any(vdir.iterdir()):
                (vdir / ".keep").touch()
        verify_model_repository(tmp, cpp_declared=loaded[_LLM].template.block_keys())
        if dest.exists():
            dest.rmdir()  # checked empty above
        os.replace(tmp, dest)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)  # our own temp folder; engine hard links inside are only links
        raise PackagingError(f"cannot write the Triton model repository at {dest}: {exc}") from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("Triton model repository ready at %s (mount it at %s)", dest, options.mount_path)
    return dest


def _render_model(model: str, entry: _Model, values: Mapping[str, str]) -> str:
    tmpl = entry.template
    own = {k: v for k, v in values.items() if k in tmpl.variables}
    if model != _LLM:
        own.update((k, v) for k, v in _LLM_ONLY.items() if k in tmpl.variables)
    unset: dict[str, str] = {}
    for block in tmpl.blocks:
        req = entry.required.get(block.key or "")
        if req is None or block.variable is None or block.variable in own:
            continue
        keep = req.unset_value(block.variable)
        if keep is not None:  # None: _check_options refused it already
            unset[req.key] = keep
    return pbtxt.render(tmpl, own, unset)


def _values(options: TritonOptions, info: EngineInfo, model_name: str, loaded: Mapping[str, _Model]) -> dict[str, str]:
    check_batch_size(options, info.max_batch_size, "its config.json build_config")
    values = {
        "triton_max_batch_size": str(info.max_batch_size),
        "engine_dir": posixpath.join(options.mount_path, model_name, "1"),
        "tokenizer_dir": posixpath.join(options.mount_path, model_name, TOKENIZER_SUBDIR),
        # The C++ backend takes the logits type from this output's data_type and checks the
        # engine's against it (TLLM_CHECK(contextLogitsType == getLogitsDataType())).
        "logits_datatype": _triton_dtype(info.logits_dtype, "logits dtype"),
        "max_beam_width": str(info.max_beam_width),
        "tensorrt_llm_model_name": model_name,
        **_DOCUMENTED_TYPES,
    }
    values.update(options.variable_values())
    values.update(_ensemble_types(loaded, values))
    values.update(options.extra)
    return values


def _ensemble_types(loaded: Mapping[str, _Model], values: Mapping[str, str]) -> dict[str, str]:
    """``data_type: ${x}`` of a step model's tensor, decided by what the ensemble wires it to.

    Triton refuses an ensemble whose tensor has two data types ("ensemble tensor
    prompt_embedding_table: inconsistent data type"), so where the ensemble declares the
    tensor itself (an ensemble input or output with a literal type), that type is the only one
    that loads, whatever the engine's dtype.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    ensemble = loaded["ensemble"].template
    typed_here = {v for v in ensemble.variables if any(v in t.template.typed for t in loaded.values())}
    own = {k: v for k, v in values.items() if k in ensemble.variables and k not in typed_here}
    try:
        text = pbtxt.render(ensemble, {**own, **{v: "TYPE_INVALID" for v in typed_here}}, {})
        config = model_config_pb2.ModelConfig()
        text_format.Parse(text, config)
    except (ConfigError, text_format.ParseError):
        return {}  # the verifier reports what is wrong with the ensemble
    declared = {io.name: io.data_type for io in [*config.input, *config.output]}
    found: dict[str, set[int]] = {}
    for model, entry in loaded.items():
        steps = [s for s in config.ensemble_scheduling.step if s.model_name == model]
        for var, where in entry.template.typed.items():
            for direction, tensor in where:
                for step in steps:
                    wiring = step.input_map if direction == "input" else step.output_map
                    name = wiring.get(tensor)
                    if name is not None and name in declared and declared[name] != 0:
                        found.setdefault(var, set()).add(declared[name])
    return {var: model_config_pb2.DataType.Name(types.pop()) for var, types in found.items() if len(types) == 1}


def _copy_model_files(src: Path, dst: Path) -> None:
    """Copy a template model folder (``1/model.py``, ``1/lib/...``) without its template or caches."""
    dst.mkdir(parents=True)
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if rel == Path("config.pbtxt") or "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if path.is_dir():
            (dst / rel).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dst / rel)


def _link_or_copy(src: Path, dst: Path) -> bool:
    """Hard-link ``src`` at ``dst``, or copy it when linking is impossible. True if linked."""
    real = src.resolve()
    try:
        os.link(real, dst)
        return True
    except OSError as exc:  # EXDEV (other filesystem), EPERM (protected_hardlinks), ...
        logger.debug("cannot hard-link %s (%s); copying", real, exc)
    shutil.copyfile(real, dst)
    return False
