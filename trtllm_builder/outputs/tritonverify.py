"""Check a Triton model repository the way Triton would load it, without Triton.

Triton cannot run where repositories are built (no GPU), so its load-time checks are done here:

* every ``config.pbtxt`` parses as Triton's own ``ModelConfig`` proto (``tritonclient``), keeps no
  ``${...}`` outside comments, and passes the parts of core's ``ValidateModelConfig`` that apply
  (backend/platform, batch sizes, input/output shapes; triton-inference-server/core
  ``src/model_config_utils.cc``);
* each ensemble passes core's ``ValidateEnsembleSchedulingConfig`` (data flow: inputs used,
  outputs written, no unused tensors) and ``ValidateEnsembleConfig`` (every step's tensors exist,
  required inputs are mapped, data types and shapes agree across steps, no step receives inputs
  originated from different decoupled models; ``src/ensemble_scheduler/ensemble_utils.cc``),
  with core's own wording;
* each model keeps the ``parameters`` its loader reads without a fallback (:mod:`.tritonloaders`):
  derived from the repository's own ``model.py`` files for Python models, from the cited table
  for the TensorRT-LLM C++ backend;
* the engine has every rank, the paths point into the repository, and the tokenizer folder is
  one ``transformers.AutoTokenizer`` can load.

Core's files were read at commit 73aad7c3 of triton-inference-server/core.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trtllm_builder.errors import VerifyError
from trtllm_builder.outputs import pbtxt
from trtllm_builder.outputs.engineinfo import engine_info
from trtllm_builder.outputs.tritonloaders import Requirement, cpp_requirements, merge, python_requirements

__all__ = ["python_model_requirements", "repository_problems", "verify_model_repository"]

_VERSION_DIR_CHARS = frozenset("0123456789")
_ENSEMBLE = "ensemble"
_TYPE_INVALID = 0


def verify_model_repository(
    root: Path, *, cpp_declared: Iterable[str] | None = None, backend_version: str | None = None
) -> None:
    """Raise :class:`VerifyError` listing every problem :func:`repository_problems` finds."""
    problems = repository_problems(root, cpp_declared=cpp_declared, backend_version=backend_version)
    if problems:
        raise VerifyError(
            f"Triton model repository {root} is not servable:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def repository_problems(
    root: Path, *, cpp_declared: Iterable[str] | None = None, backend_version: str | None = None
) -> list[str]:
    """Every reason Triton (or a model's loader) would refuse the repository at ``root``.

    ``cpp_declared``: the parameter keys of the ``tensorrt_llm`` template the repository was
    filled from, which say which direct reads the matching C++ backend makes; else
    ``backend_version`` picks them (see :func:`.tritonloaders.cpp_requirements`).
    """
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    root = Path(root)
    problems: list[str] = []
    for path in sorted(root.rglob("*.pbtxt")):
        left = sorted(set(pbtxt.placeholders(path.read_text(encoding="utf-8", errors="replace"))))
        if left:
            problems.append(
                f"{path.relative_to(root).as_posix()}: unfilled template variables "
                + ", ".join(f"${{{n}}}" for n in left)
            )
    configs: dict[str, Any] = {}
    for model_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        cfg_path = model_dir / "config.pbtxt"
        rel = f"{model_dir.name}/config.pbtxt"
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
        problems.extend(f"{rel}: {p}" for p in _model_problems(config, model_dir))
        configs[model_dir.name] = config
    for name, config in configs.items():
        if config.platform == _ENSEMBLE and config.HasField("ensemble_scheduling"):
            problems.extend(_ensemble_problems(name, config, configs, model_config_pb2))
    problems.extend(_parameter_problems(root, configs, cpp_declared, backend_version))
    problems.extend(_reference_problems(root, configs))
    return problems


# --------------------------------------------------------------------------- one model


def _model_problems(config: Any, model_dir: Path) -> Iterator[str]:
    """The parts of core's ValidateModelConfig / ValidateModelIOConfig that a repository can fail."""
    latest = _latest_version_dir(model_dir)
    if latest is None:
        yield "no numeric version folder such as 1/ beside it"
    if not config.backend and config.platform != _ENSEMBLE:
        yield f"must specify 'platform' or 'backend' for '{config.name or model_dir.name}'"
    if config.backend and config.platform == _ENSEMBLE:
        yield f"Ensemble model '{config.name}' must have platform type '{_ENSEMBLE}' and empty backend type"
    if config.backend == "python" and latest is not None:
        filename = config.default_model_filename or "model.py"
        if not (latest / filename).is_file():
            yield f"the Python backend loads {latest.name}/{filename}, which is missing"
    if config.max_batch_size < 0:
        yield f"'max_batch_size' must be non-negative value for {config.name}"
    if config.HasField("dynamic_batching"):
        for size in config.dynamic_batching.preferred_batch_size:
            if size < 1:
                yield f"dynamic batching preferred size must be positive for {config.name}"
            elif size > config.max_batch_size:
                yield f"dynamic batching preferred size must be <= max batch size for {config.name}"
    for kind, ios in (("input", config.input), ("output", config.output)):
        for io in ios:
            for problem in _io_problems(io, config.max_batch_size):
                yield f"model {kind} {problem} for {config.name}"
    if config.HasField("ensemble_scheduling"):
        if config.platform != _ENSEMBLE:
            yield f"ensemble scheduling cannot be set for model '{config.name}' whose platform is not {_ENSEMBLE}"
        if len(config.instance_group):
            yield f"instance group should not be specified for ensemble '{config.name}'"
        steps = config.ensemble_scheduling.step
        if not steps:
            yield f"must specify 'step' for ensemble '{config.name}'"
        for index, step in enumerate(steps):
            for what, ok in (("model_name", step.model_name), ("input_map", step.input_map),
                             ("output_map", step.output_map)):  # fmt: skip
                if not ok:
                    yield f"must specify '{what}' in step {index} of ensemble '{config.name}'"
    elif config.platform == _ENSEMBLE:
        yield f"ensemble scheduling must be set for ensemble {config.name} whose platform is {_ENSEMBLE}"
    if config.model_transaction_policy.decoupled and config.response_cache.enable:
        yield (
            f"Response Cache does not currently support model {config.name} with 'decoupled' transaction policy. "
            "Please disable the response cache."
        )


def _io_problems(io: Any, max_batch_size: int) -> Iterator[str]:
    """core's ValidateIOShape."""
    if not io.name:
        yield "must specify 'name'"
        return
    if io.data_type == _TYPE_INVALID:
        yield f"'{io.name}' must specify 'data_type'"
    if not len(io.dims):
        yield f"'{io.name}' must specify 'dims'"
    if io.HasField("reshape") and not len(io.reshape.shape) and max_batch_size == 0:
        yield f"'{io.name}' cannot have empty reshape for non-batching model as scalar tensors are not supported"
    if any(d < 1 and d != -1 for d in io.dims):
        yield f"'{io.name}' dimension must be integer >= 1, or -1 to indicate a variable-size dimension"
    if io.HasField("reshape"):
        if any(d < 1 and d != -1 for d in io.reshape.shape):
            yield f"'{io.name}' reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension"
        elif not _same_element_count(list(io.dims), list(io.reshape.shape)):
            yield f"'{io.name}' has different size for dims and reshape"


def _same_element_count(dims: list[int], shape: list[int]) -> bool:
    def chunks(ds: list[int]) -> list[int]:
        out, cur = [], 1
        for d in ds:
            if d == -1:
                out.append(cur)
                cur = 1
            else:
                cur *= d
        out.append(cur)
        return out

    if -1 in dims or -1 in shape:
        return chunks(dims) == chunks(shape)
    total = 1
    for d in dims:
        total *= d
    reshape_total = 1
    for d in shape:
        reshape_total *= d
    return total == reshape_total or (not shape and total == 1)


# --------------------------------------------------------------------------- ensembles


@dataclass(eq=False)
class _Node:
    """core's TensorNode."""

    model: str
    data_type: int
    dims: tuple[int, ...]
    full_dims: tuple[int, ...]
    is_decoupled: bool = False
    label: int = 0
    visited: bool = False
    prev: list[_Node] = field(default_factory=list)
    next: list[_Node] = field(default_factory=list)
    sibling: _Node | None = None


def _node(model: str, batching: bool, data_type: int, dims: Sequence[int]) -> _Node:
    d = tuple(dims)
    return _Node(model, data_type, d, ((-1,) if batching else ()) + d)


def _dims_match(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """triton::common::CompareDimsWithWildcard."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _dims_str(d: tuple[int, ...]) -> str:
    return "[" + ",".join(str(x) for x in d) + "]"


def _ensemble_problems(name: str, config: Any, configs: Mapping[str, Any], pb: Any) -> list[str]:
    problems = _data_flow_problems(name, config)
    problems.extend(_step_problems(name, config, configs, pb))
    return problems


def _data_flow_problems(name: str, config: Any) -> list[str]:
    """core's BuildEnsembleGraph + the data-flow part of ValidateEnsembleSchedulingConfig."""
    producers: dict[str, list[str]] = {}  # tensor -> tensors it is computed from
    consumers: dict[str, int] = {}
    written: set[str] = set()
    problems: list[str] = []
    tensors: set[str] = set()
    for index, step in enumerate(config.ensemble_scheduling.step):
        outputs = list(step.output_map.values())
        for tensor in outputs:
            if tensor in written:
                problems.append(
                    f"ensemble tensor '{tensor}' can appear in an output map only once for ensemble '{name}' "
                    f"step {index}"
                )
            written.add(tensor)
            tensors.add(tensor)
            producers.setdefault(tensor, [])
        for tensor in step.input_map.values():
            tensors.add(tensor)
            consumers[tensor] = consumers.get(tensor, 0) + len(outputs)
            for out in outputs:
                producers[out].append(tensor)
    ready: set[str] = set()
    for io in config.input:
        if io.name not in tensors:
            problems.append(f"ensemble input '{io.name}' for ensemble {name}' is not used")
        ready.add(io.name)
    changed = True
    while changed:
        changed = False
        for tensor, sources in producers.items():
            if tensor not in ready and sources and all(s in ready for s in sources):
                ready.add(tensor)
                changed = True
    output_names = {io.name for io in config.output}
    for io in config.output:
        if io.name not in tensors:
            problems.append(f"ensemble output '{io.name}' for ensemble {name}' is not used")
        elif io.name not in ready:
            missing = next((s for s in producers.get(io.name, []) if s not in ready), None)
            tail = f": at least one of its depending tensors, '{missing}', is not connected" if missing else ""
            problems.append(f"output '{io.name}' for ensemble '{name}' is not written{tail}")
    for tensor in sorted(tensors - output_names):
        if tensor not in ready or not consumers.get(tensor):
            problems.append(f"ensemble tensor '{tensor}' is unused in ensemble '{name}'")
    return problems


def _step_problems(name: str, config: Any, configs: Mapping[str, Any], pb: Any) -> list[str]:
    """core's ValidateEnsembleConfig: tensor mapping per step, then the decoupled-label walk."""
    problems: list[str] = []
    batching = config.max_batch_size > 0
    tensors: dict[str, _Node] = {}
    for io in config.input:
        dims = io.reshape.shape if io.HasField("reshape") else io.dims
        tensors[io.name] = _node(name, batching, io.data_type, dims)
    sink = _Node(name, _TYPE_INVALID, (), ())
    for io in config.output:
        dims = io.reshape.shape if io.HasField("reshape") else io.dims
        node = tensors.setdefault(io.name, _node(name, batching, io.data_type, dims))
        sink.prev.append(node)
        node.next.append(sink)

    def dtype(value: int) -> str:
        return str(pb.DataType.Name(value))

    def consistent(tensor: str, have: _Node, new: _Node) -> str | None:
        where = f"in ensemble {name}, ensemble tensor {tensor}: "
        if have.data_type != new.data_type:
            return (
                f"{where}inconsistent data type: {dtype(have.data_type)} is inferred from model {have.model} "
                f"while {dtype(new.data_type)} is inferred from model {new.model}"
            )
        if not _dims_match(have.dims, new.dims) and not _dims_match(have.full_dims, new.full_dims):
            return (
                f"{where}inconsistent shape: {_dims_str(have.full_dims)} is inferred from model {have.model} "
                f"while {_dims_str(new.full_dims)} is inferred from model {new.model}"
            )
        return None

    walkable = True
    for step in config.ensemble_scheduling.step:
        model = configs.get(step.model_name)
        if model is None:
            problems.append(f"ensemble {name}: step uses model {step.model_name!r}, which is not in the repository")
            walkable = False
            continue
        if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:
            problems.append(
                f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it contains model "
                f"{step.model_name} which only allows maximum batch size to be {model.max_batch_size}"
            )
        step_batching = model.max_batch_size > 0
        inputs = {io.name: io for io in model.input}
        outputs = {io.name: io for io in model.output}
        bad = False
        for key, tensor in step.input_map.items():
            if key not in inputs:
                problems.append(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapping to non-existing input {key} in model "
                    f"{step.model_name}"
                )
                bad = True
        for io in model.input:
            if io.name in step.input_map:
                tensor = step.input_map[io.name]
                new = _node(step.model_name, step_batching, io.data_type, io.dims)
                if tensor in tensors:
                    if (msg := consistent(tensor, tensors[tensor], new)) is not None:
                        problems.append(msg)
                else:
                    tensors[tensor] = new
            elif not io.optional:
                problems.append(
                    f"in ensemble {name}, input {io.name} in model {step.model_name} is not mapped to any "
                    "ensemble tensors"
                )
        for key, tensor in step.output_map.items():
            if key not in outputs:
                problems.append(
                    f"in ensemble {name}, ensemble tensor {tensor} is mapped from non-existing output {key} in "
                    f"model {step.model_name}"
                )
                bad = True
        if bad:
            walkable = False
            continue
        sibling = _Node(step.model_name, _TYPE_INVALID, (), ())
        for key, tensor in step.output_map.items():
            io = outputs[key]
            new = _node(step.model_name, step_batching, io.data_type, io.dims)
            if tensor in tensors:
                if (msg := consistent(tensor, tensors[tensor], new)) is not None:
                    problems.append(msg)
            else:
                tensors[tensor] = new
            tensors[tensor].sibling = sibling
        decoupled = bool(model.model_transaction_policy.decoupled)
        for tensor in step.output_map.values():
            node = tensors[tensor]
            node.is_decoupled = decoupled
            for source in step.input_map.values():
                prev = tensors[source]
                node.prev.append(prev)
                prev.next.append(node)
    if walkable:
        problems.extend(_decoupled_problems(name, config, tensors))
    return problems


def _decoupled_problems(name: str, config: Any, tensors: dict[str, _Node]) -> list[str]:
    label = 0
    queue: deque[_Node] = deque()
    for io in config.input:
        node = tensors[io.name]
        node.visited = True
        queue.append(node)
    while queue:
        current = queue.popleft()
        for nxt in current.next:
            if nxt.visited or not all(p.visited for p in nxt.prev):
                continue
            first = nxt.prev[0].label
            if any(p.label != first for p in nxt.prev):
                return [
                    f"in ensemble {name}, step of model '{nxt.model}' receives inputs originated from different "
                    "decoupled models"
                ]
            if nxt.sibling is not None:
                if nxt.sibling.visited:
                    nxt.label = nxt.sibling.label
                else:
                    if nxt.is_decoupled:
                        label += 1
                    nxt.label = label if nxt.is_decoupled else first
                    nxt.sibling.label = nxt.label
                    nxt.sibling.visited = True
            else:
                if nxt.is_decoupled:
                    label += 1
                nxt.label = label if nxt.is_decoupled else first
            nxt.visited = True
            queue.append(nxt)
    return []


# --------------------------------------------------------------------------- parameters


def _latest_version_dir(model_dir: Path) -> Path | None:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name and set(p.name) <= _VERSION_DIR_CHARS]
    return max(versions, key=lambda p: int(p.name)) if versions else None


def python_model_requirements(version_dir: Path, label: str) -> tuple[dict[str, Requirement], list[str]]:
    """Direct reads of every ``.py`` file of a Python model's version folder (``model.py``, ``lib/``)."""
    reqs: list[dict[str, Requirement]] = []
    problems: list[str] = []
    for path in sorted(version_dir.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        name = f"{label}/{path.relative_to(version_dir).as_posix()}"
        try:
            reqs.append(python_requirements(path.read_text(encoding="utf-8"), name))
        except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
            problems.append(f"{name}: Python cannot parse it ({exc}); the model would not load")
    found: dict[str, Requirement] = {}
    for r in reqs:  # the same key read in two files: either read is enough to fail
        for key, req in r.items():
            found.setdefault(key, req)
    return found, problems


def _parameter_problems(
    root: Path, configs: Mapping[str, Any], cpp_declared: Iterable[str] | None, backend_version: str | None
) -> Iterator[str]:
    for name, config in configs.items():
        version_dir = _latest_version_dir(root / name)
        loaders: list[dict[str, Requirement]] = []
        if config.backend == "python" and version_dir is not None:
            reqs, problems = python_model_requirements(version_dir, f"{name}/{version_dir.name}")
            yield from problems
            loaders.append(reqs)
        if config.backend == "tensorrtllm":
            loaders.append(cpp_requirements(version=backend_version, declared=cpp_declared))
        params = {k: v.string_value for k, v in config.parameters.items()}
        for key, req in sorted(merge(*loaders).items()):
            where = f"{name}/config.pbtxt"
            if key not in params:
                keep = req.unset_value(key)
                fix = f'; keep its block with "{keep}" (read as unset)' if keep is not None else "; give it a value"
                yield (
                    f"{where}: no parameter `{key}`, which {req.source} reads without a fallback: the model "
                    f"fails to load ({_failure(config, key)}){fix}"
                )
            elif not req.accepts(params[key]):
                yield (
                    f"{where}: parameter `{key}` is {params[key]!r}, which {req.source} reads as neither a value "
                    "nor unset; give it a real value"
                )


def _failure(config: Any, key: str) -> str:
    if config.backend == "tensorrtllm":
        return f'"Cannot find parameter with name: {key}"'
    return f"KeyError: '{key}' in initialize()"


# --------------------------------------------------------------------------- references, engine, tokenizer


def _param(config: Any, key: str) -> str:
    return str(config.parameters[key].string_value) if key in config.parameters else ""


def _reference_problems(root: Path, configs: Mapping[str, Any]) -> Iterator[str]:
    for name, config in configs.items():
        ref = _param(config, "tensorrt_llm_model_name")
        if ref and ref not in configs:
            yield f"{name}/config.pbtxt: parameter tensorrt_llm_model_name names {ref!r}, which is not a model here"
        for key in ("gpt_model_path", "tokenizer_dir"):
            value = _param(config, key)
            if not value:
                continue
            local = _local(value, root)
            if local is None:
                yield f"{name}/config.pbtxt: parameter {key} = {value!r} points to nothing inside this repository"
            elif key == "tokenizer_dir" and config.backend == "python":  # these load it with AutoTokenizer
                yield from (f"{name}/config.pbtxt: tokenizer_dir {p}" for p in _tokenizer_problems(local, root))
    llm = [n for n, c in configs.items() if c.backend == "tensorrtllm" or (root / n / "1" / "config.json").is_file()]
    if not llm and configs:
        yield 'no TensorRT-LLM model (backend "tensorrtllm") in the repository'
    for name in llm:
        yield from _engine_problems(root / name / "1", f"{name}/1")


def _local(value: str, root: Path) -> Path | None:
    """The folder inside ``root`` an absolute serving path names (some tail of it exists under ``root``)."""
    parts = [p for p in value.split("/") if p not in ("", ".")]
    # Tails of one component ("1", "tokenizer") would match by accident; a model folder is two deep.
    for i in range(max(1, len(parts) - 1)):
        candidate = root.joinpath(*parts[i:])
        if candidate.exists():
            return candidate
    return None


def _tokenizer_problems(folder: Path, root: Path) -> Iterator[str]:
    rel = folder.relative_to(root).as_posix() + "/"
    if not folder.is_dir():
        yield f"{rel} is not a folder"
        return
    names = {p.name for p in folder.iterdir()}
    if not names & {"tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "spiece.model"}:
        yield f"{rel} has no tokenizer files"
        return
    tok_cfg = _json(folder / "tokenizer_config.json")
    if tok_cfg.get("tokenizer_class") or (tok_cfg.get("auto_map") or {}).get("AutoTokenizer"):
        return
    if not _json(folder / "config.json").get("model_type"):
        yield (
            f"{rel}: tokenizer_config.json names no tokenizer_class and there is no config.json with a model_type, "
            "so transformers' AutoTokenizer.from_pretrained cannot tell the tokenizer (4.x: 'Unrecognized "
            "model'); ship the model's config.json in that folder"
        )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _engine_problems(version_dir: Path, rel: str) -> Iterator[str]:
    if not (version_dir / "config.json").is_file():
        yield f"{rel}/: no engine config.json"
        return
    try:
        info = engine_info(json.loads((version_dir / "config.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        yield f"{rel}/config.json: not a TensorRT-LLM engine config ({exc!s})"
        return
    missing = [f"rank{n}.engine" for n in range(info.world_size) if not (version_dir / f"rank{n}.engine").is_file()]
    if missing:
        yield f"{rel}/: missing {', '.join(missing)} for world size {info.world_size}"
