"""A Triton model repository (tensorrtllm_backend ``inflight_batcher_llm``) around a built engine.

The backend ships five ``config.pbtxt`` templates with ``${var}`` placeholders, filled
upstream by ``tools/fill_template.py`` (``string.Template.safe_substitute``): a
forgotten variable stays in place and Triton fails later with an opaque parse error.
Here every template is read first, its variables are compared with what we can fill
(the engine's own ``config.json``, ``output.triton`` options), and:

* each template gets its own values only (from ~v0.19 ``fill_template.py`` rejects
  keys a template lacks);
* an optional ``parameters { key: ... value: { string_value: "${x}" } }`` block whose
  variable nobody set is removed whole, found by tokenizing the pbtxt, which is how
  the backend expects an absent parameter;
* any other unfilled variable is a :class:`ConfigError` naming it, before anything
  is written.

Layout written (``<m>`` is ``model_name``, ``tensorrt_llm`` by default)::

    preprocessing/  postprocessing/  tensorrt_llm_bls/  ensemble/   config.pbtxt + 1/...
    <m>/config.pbtxt
    <m>/1/config.json, rank0.engine ...     engine (hard links when possible)
    <m>/tokenizer/...                       tokenizer files

The tokenizer lives inside the ``<m>`` model folder, not at the repository root:
Triton treats every root folder as a model and fails to start on one without a
``config.pbtxt`` ("Poll failed for model directory 'tokenizer'"), while it ignores
non-numeric sub-folders of a model folder.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError, PackagingError, SetupError, VerifyError

__all__ = [
    "DEFAULT_TEMPLATE_SUBDIR",
    "MODELS",
    "TOKENIZER_SUBDIR",
    "EngineInfo",
    "TritonOptions",
    "find_templates",
    "make_model_repository",
    "parse_triton_options",
    "read_engine_info",
    "template_variables",
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
# A value placed outside a quoted string must be one pbtxt token (a number, enum or bool).
_BARE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_RANK_RE = re.compile(r"^rank(\d+)\.engine$")
_VERSION_DIR_RE = re.compile(r"^[1-9][0-9]*$")


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


_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<var>\$\{[A-Za-z_][A-Za-z0-9_]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<dollar>\$\$)
  | (?P<punct>[{}\[\]<>:,;])
  | (?P<word>[^\s{}\[\]<>:,;"'\#$]+)
  | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
# string.Template's own rules, for placeholders inside strings and comments.
_INNER_VAR_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)


@dataclass(frozen=True)
class _Token:
    kind: str
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class _ParamBlock:
    key: str | None
    variable: str | None  # set when the value is exactly "${variable}"
    start: int
    end: int


@dataclass(frozen=True)
class _Template:
    model: str
    path: Path
    text: str
    variables: frozenset[str]
    removable: frozenset[str]  # appear only as the whole value of top-level parameters blocks
    blocks: tuple[_ParamBlock, ...]


def _tokens(text: str) -> list[_Token]:
    return [_Token(m.lastgroup or "other", m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]


def _token_variables(token: _Token) -> list[str]:
    if token.kind == "var":
        return [token.text.strip("${}")]
    if token.kind in ("string", "comment"):
        return [
            m.group("braced") or m.group("named") for m in _INNER_VAR_RE.finditer(token.text) if not m.group("dollar")
        ]
    return []


def _param_blocks(tokens: list[_Token]) -> list[_ParamBlock]:
    """Top-level ``parameters [:] { ... }`` fields, with their key and variable."""
    sig = [t for t in tokens if t.kind not in ("ws", "comment")]
    blocks: list[_ParamBlock] = []
    depth = 0
    i = 0
    while i < len(sig):
        tok = sig[i]
        if depth == 0 and tok.kind == "word" and tok.text == "parameters":
            j = i + 1
            if j < len(sig) and sig[j].text == ":":
                j += 1
            if j < len(sig) and sig[j].text in ("{", "<"):
                close = _matching(sig, j)
                if close is not None:
                    blocks.append(_describe_block(sig[j + 1 : close], tok.start, sig[close].end))
                    i = close + 1
                    continue
        if tok.kind == "punct" and tok.text in "{[<":
            depth += 1
        elif tok.kind == "punct" and tok.text in "}]>":
            depth -= 1
        i += 1
    return blocks


def _matching(sig: list[_Token], open_index: int) -> int | None:
    depth = 0
    for k in range(open_index, len(sig)):
        if sig[k].kind != "punct":
            continue
        if sig[k].text in "{[<":
            depth += 1
        elif sig[k].text in "}]>":
            depth -= 1
            if depth == 0:
                return k
    return None


def _describe_block(body: list[_Token], start: int, end: int) -> _ParamBlock:
    key: str | None = None
    variable: str | None = None
    for k in range(len(body) - 2):
        name, colon, value = body[k], body[k + 1], body[k + 2]
        if name.kind != "word" or colon.text != ":" or value.kind != "string":
            continue
        if name.text == "key":
            key = value.text[1:-1]
        elif name.text == "string_value":
            m = re.fullmatch(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", value.text[1:-1])
            if m:
                variable = m.group(1) or m.group(2)
    return _ParamBlock(key, variable, start, end)


def _parse_template(model: str, path: Path) -> _Template:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read Triton template {path}: {exc}") from exc
    tokens = _tokens(text)
    counts: dict[str, int] = {}
    for token in tokens:
        for name in _token_variables(token):
            counts[name] = counts.get(name, 0) + 1
    blocks = tuple(_param_blocks(tokens))
    in_blocks: dict[str, int] = {}
    for block in blocks:
        if block.variable is not None:
            in_blocks[block.variable] = in_blocks.get(block.variable, 0) + 1
    removable = frozenset(name for name, n in in_blocks.items() if counts.get(name) == n)
    return _Template(model, path, text, frozenset(counts), removable, blocks)


def _load_templates(templates: Path) -> dict[str, _Template]:
    return {m: _parse_template(m, Path(templates) / m / "config.pbtxt") for m in MODELS}


def template_variables(templates: Path) -> dict[str, frozenset[str]]:
    """Every ``${variable}`` of each model's ``config.pbtxt``, by model name."""
    return {m: t.variables for m, t in _load_templates(templates).items()}


def validate_options(options: TritonOptions, templates: Path) -> None:
    """Check ``options`` against the templates, before any build runs.

    Raises :class:`ConfigError` for an ``extra`` key no template has, an option the
    templates do not use, or a template variable that would stay unfilled.
    """
    _check_options(options, _load_templates(templates), templates)


_ENGINE_VARS = frozenset(
    {
        "triton_max_batch_size",
        "engine_dir",
        "tokenizer_dir",
        "logits_datatype",
        "max_beam_width",
        "tensorrt_llm_model_name",
        "encoder_input_features_data_type",
        "prompt_embedding_table_data_type",
    }
)


def _check_options(options: TritonOptions, loaded: Mapping[str, _Template], templates: Path) -> None:
    all_vars = frozenset().union(*(t.variables for t in loaded.values()))
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
    provided = set(options.variable_values()) | set(options.extra) | _ENGINE_VARS
    for model, tmpl in loaded.items():
        for var in sorted(tmpl.variables - tmpl.removable - provided):
            problems.append(
                f"{model}/config.pbtxt: ${{{var}}} is not an optional parameters block and nothing sets it; "
                f"set output.triton.extra.{var}"
            )
    if problems:
        raise ConfigError("output.triton does not fit the Triton templates", problems=problems)


# --------------------------------------------------------------------------- engine


@dataclass(frozen=True)
class EngineInfo:
    """What the Triton configs need from an engine's ``config.json``."""

    max_batch_size: int
    max_beam_width: int
    dtype: str
    logits_dtype: str
    world_size: int


def read_engine_info(engine_dir: Path) -> EngineInfo:
    """Read ``engine_dir/config.json`` as written by ``trtllm-build`` (or the legacy ``build.py``)."""
    path = Path(engine_dir) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PackagingError(
            f"cannot read the engine config {path}: {exc}; is {engine_dir} a trtllm-build output?"
        ) from exc
    if not isinstance(data, dict):
        raise PackagingError(f"{path} is not a JSON object")
    try:
        return _engine_info(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise PackagingError(
            f"{path} lacks what a Triton repository needs ({exc!s}); expected trtllm-build's "
            "config.json with build_config.max_batch_size and pretrained_config.dtype"
        ) from exc


def _engine_info(data: dict[str, Any]) -> EngineInfo:
    if "build_config" in data:
        build = data["build_config"]
        pretrained = data.get("pretrained_config") or {}
        mapping = pretrained.get("mapping") or {}
        world = mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1))
        return EngineInfo(
            max_batch_size=int(build["max_batch_size"]),
            max_beam_width=int(build.get("max_beam_width", 1)),
            dtype=str(pretrained["dtype"]),
            logits_dtype=str(pretrained.get("logits_dtype") or "float32"),
            world_size=int(world),
        )
    builder = data["builder_config"]  # engines of the old examples/<model>/build.py
    world = int(builder.get("tensor_parallel", 1)) * int(builder.get("pipeline_parallel", 1))
    return EngineInfo(
        max_batch_size=int(builder["max_batch_size"]),
        max_beam_width=int(builder.get("max_beam_width", 1)),
        dtype=str(builder["precision"]),
        logits_dtype=str(builder.get("logits_dtype") or "float32"),
        world_size=world,
    )


def _triton_dtype(dtype: str, what: str) -> str:
    try:
        return _TRITON_DTYPES[dtype.lower()]
    except KeyError:
        raise PackagingError(
            f"engine {what} `{dtype}` has no Triton data type here (known: {', '.join(sorted(_TRITON_DTYPES))})"
        ) from None


def _engine_files(engine_dir: Path, info: EngineInfo) -> list[Path]:
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
    return wanted


# --------------------------------------------------------------------------- rendering


def _render(tmpl: _Template, values: Mapping[str, str]) -> str:
    """Remove unset optional parameters blocks, then substitute ``values`` (only this template's keys)."""
    text = tmpl.text
    drop = [b for b in tmpl.blocks if b.variable in tmpl.removable and b.variable not in values]
    for block in sorted(drop, key=lambda b: b.start, reverse=True):
        start, end = _removal_span(text, block.start, block.end)
        text = text[:start] + text[end:]
    out: list[str] = []
    unfilled: list[str] = []
    for token in _tokens(text):
        if token.kind == "var":
            name = token.text.strip("${}")
            if name not in values:
                unfilled.append(name)
                out.append(token.text)
                continue
            value = values[name]
            if not _BARE_VALUE_RE.match(value):
                raise ConfigError(
                    f"{tmpl.model}/config.pbtxt: ${{{name}}} stands outside quotes, so its value must be "
                    f"one word such as TYPE_FP16, 8 or true; got {value!r}"
                )
            out.append(value)
        elif token.kind in ("string", "comment"):
            quote = token.text[0] if token.kind == "string" else ""

            def sub(m: re.Match[str], quote: str = quote) -> str:
                if m.group("dollar"):
                    return "$"
                name = m.group("braced") or m.group("named")
                if name not in values:
                    unfilled.append(name)
                    return m.group()
                return _escape(values[name], quote)

            out.append(_INNER_VAR_RE.sub(sub, token.text))
        elif token.kind == "dollar":
            out.append("$")
        else:
            out.append(token.text)
    if unfilled:  # _check_options prevents this; keep the guarantee local too
        raise ConfigError(
            f"{tmpl.model}/config.pbtxt: no value for " + ", ".join(f"${{{n}}}" for n in sorted(set(unfilled)))
        )
    return "".join(out)


def _escape(value: str, quote: str) -> str:
    if not quote:
        return value
    return value.replace("\\", "\\\\").replace(quote, "\\" + quote)


def _removal_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a block's span to whole lines, its comment lines above and one spare blank line."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip() == "":
        start = line_start
        # Comment lines directly above (no blank line between) describe this block.
        while start > 0:
            prev_start = text.rfind("\n", 0, start - 1) + 1
            if not text[prev_start : start - 1].lstrip().startswith("#"):
                break
            start = prev_start
    rest = re.match(r"[ \t]*[,;]?[ \t]*(\n|$)", text[end:])
    if rest:
        end += rest.end()
        at_line_start = start == 0 or text[start - 1] == "\n"
        blank_above = start == 0 or text[max(0, start - 2) : start] == "\n\n"
        if at_line_start and blank_above and text[end : end + 1] == "\n":
            end += 1
    return start, end


def _rename_refs(text: str, field: str, old: str, new: str, *, top_level_only: bool) -> str:
    """Replace ``field: "old"`` string values with ``"new"``, found by token, not by regex."""
    tokens = _tokens(text)
    sig = [t for t in tokens if t.kind not in ("ws", "comment")]
    replace: list[_Token] = []
    depth = 0
    for k, tok in enumerate(sig):
        if tok.kind == "punct" and tok.text in "{[<":
            depth += 1
        elif tok.kind == "punct" and tok.text in "}]>":
            depth -= 1
        if (
            tok.kind == "word"
            and tok.text == field
            and (depth == 0 or not top_level_only)
            and k + 2 < len(sig)
            and sig[k + 1].text == ":"
            and sig[k + 2].kind == "string"
            and sig[k + 2].text[1:-1] == old
        ):
            replace.append(sig[k + 2])
    for tok in reversed(replace):
        text = text[: tok.start] + f'"{new}"' + text[tok.end :]
    return text


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
    source is never moved). ``tokenizer_files`` go to ``<model_name>/tokenizer/``.
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

    values = _values(options, info, model_name)
    rendered = {m: _render(t, {k: v for k, v in values.items() if k in t.variables}) for m, t in loaded.items()}
    if model_name != _LLM:
        rendered[_LLM] = _rename_refs(rendered[_LLM], "name", _LLM, model_name, top_level_only=True)
        rendered["ensemble"] = _rename_refs(rendered["ensemble"], "model_name", _LLM, model_name, top_level_only=False)

    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        for model in MODELS:
            target = tmp / (model_name if model == _LLM else model)
            _copy_model_files(templates / model, target)
            (target / "config.pbtxt").write_text(rendered[model], encoding="utf-8")
            (target / "1").mkdir(exist_ok=True)
        version_dir = tmp / model_name / "1"
        linked = sum(_link_or_copy(src, version_dir / src.name) for src in engine_files)
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
        verify_model_repository(tmp)
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


def _values(options: TritonOptions, info: EngineInfo, model_name: str) -> dict[str, str]:
    if options.triton_max_batch_size is not None and options.triton_max_batch_size > info.max_batch_size:
        raise ConfigError(
            f"output.triton.triton_max_batch_size {options.triton_max_batch_size} exceeds the engine's "
            f"max_batch_size {info.max_batch_size}; lower it or rebuild with a larger --max_batch_size"
        )
    dtype = _triton_dtype(info.dtype, "dtype")
    values = {
        "triton_max_batch_size": str(info.max_batch_size),
        "engine_dir": posixpath.join(options.mount_path, model_name, "1"),
        "tokenizer_dir": posixpath.join(options.mount_path, model_name, TOKENIZER_SUBDIR),
        "logits_datatype": _triton_dtype(info.logits_dtype, "logits dtype"),
        "encoder_input_features_data_type": dtype,
        "prompt_embedding_table_data_type": dtype,
        "max_beam_width": str(info.max_beam_width),
        "tensorrt_llm_model_name": model_name,
    }
    values.update(options.variable_values())
    values.update(options.extra)
    return values


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


# --------------------------------------------------------------------------- verification


_LEFTOVER_RE = re.compile(r"\$\{([^}\s]*)\}?")


def verify_model_repository(root: Path) -> None:
    """Check a model repository is complete and every ``config.pbtxt`` is a valid Triton config.

    Checks: no ``${`` left in any ``.pbtxt`` (``model.py`` files of the backend contain
    ``"${"`` on purpose); every root folder is a model whose ``config.pbtxt`` parses as
    ``ModelConfig`` with a numeric version folder; ensemble steps and the BLS model
    name existing models; the TensorRT-LLM model's ``1/`` holds ``config.json`` and
    ``rank{N}.engine`` for the engine's world size; engine and tokenizer paths point
    into the repository. Raises :class:`VerifyError` listing every problem found.
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root = Path(root)
    problems: list[str] = []
    for path in sorted(root.rglob("*.pbtxt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        leftovers = sorted({m.group(1) or "?" for m in _LEFTOVER_RE.finditer(text)})
        if leftovers:
            problems.append(
                f"{path.relative_to(root)}: unfilled template variables " + ", ".join(f"${{{n}}}" for n in leftovers)
            )
    configs: dict[str, Any] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg_path = model_dir / "config.pbtxt"
        rel = cfg_path.relative_to(root)
        if not cfg_path.is_file():
            problems.append(
                f"{model_dir.name}/: Triton loads every root folder as a model, and this one has no config.pbtxt"
            )
            continue
        config = model_config_pb2.ModelConfig()
        try:
            text_format.Parse(cfg_path.read_text(encoding="utf-8"), config)
        except (text_format.ParseError, UnicodeDecodeError) as exc:
            problems.append(f"{rel}: not a valid Triton model config: {exc}")
            continue
        if config.name and config.name != model_dir.name:
            problems.append(f"{rel}: name {config.name!r} differs from its folder {model_dir.name!r}")
        if not any(_VERSION_DIR_RE.match(p.name) for p in model_dir.iterdir() if p.is_dir()):
            problems.append(f"{model_dir.name}/: no numeric version folder such as 1/")
        configs[model_dir.name] = config
    for name, config in configs.items():
        for step in config.ensemble_scheduling.step:
            if step.model_name not in configs:
                problems.append(
                    f"{name}/config.pbtxt: ensemble step uses model {step.model_name!r}, which is not in the repository"
                )
        for key in ("tensorrt_llm_model_name",):
            if key in config.parameters:
                ref = config.parameters[key].string_value
                if ref and ref not in configs:
                    problems.append(
                        f"{name}/config.pbtxt: parameter {key} names {ref!r}, which is not in the repository"
                    )
        for key in ("gpt_model_path", "tokenizer_dir"):
            if key in config.parameters:
                value = config.parameters[key].string_value
                if value and not _points_into(value, root):
                    problems.append(
                        f"{name}/config.pbtxt: parameter {key} = {value!r} points to nothing inside this repository"
                    )
    # The C++ backend model, or (triton_backend: python) the model holding an engine config.json.
    llm = [n for n, c in configs.items() if c.backend == "tensorrtllm" or (root / n / "1" / "config.json").is_file()]
    if not llm and configs:
        problems.append('no TensorRT-LLM model (backend "tensorrtllm") in the repository')
    for name in llm:
        problems.extend(_engine_problems(root / name / "1", f"{name}/1"))
    if problems:
        raise VerifyError(
            f"Triton model repository {root} is not servable:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def _engine_problems(version_dir: Path, rel: str) -> Iterator[str]:
    if not (version_dir / "config.json").is_file():
        yield f"{rel}/: no engine config.json"
        return
    try:
        info = _engine_info(json.loads((version_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        yield f"{rel}/config.json: not a TensorRT-LLM engine config ({exc!s})"
        return
    missing = [f"rank{n}.engine" for n in range(info.world_size) if not (version_dir / f"rank{n}.engine").is_file()]
    if missing:
        yield f"{rel}/: missing {', '.join(missing)} for world size {info.world_size}"


def _points_into(value: str, root: Path) -> bool:
    """Whether some tail of the absolute serving path ``value`` exists under ``root``."""
    parts = [p for p in value.split("/") if p not in ("", ".")]
    # Tails of one component ("1", "tokenizer") would match by accident; a model folder is two deep.
    tails = range(max(1, len(parts) - 1))
    return any(root.joinpath(*parts[i:]).exists() for i in tails)
