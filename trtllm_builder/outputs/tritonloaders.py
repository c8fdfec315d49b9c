"""Which ``parameters`` each model of the repository must carry: what its loader reads without a fallback.

Triton hands a Python model its config as JSON; ``model_config['parameters']['k']['string_value']``
raises ``KeyError`` when the block is absent, while ``.get('k')`` (or a helper that checks
``'k' in parameters`` first) falls back to a default. The TensorRT-LLM C++ backend reads a
parameter through ``ModelState::GetParameter``, which throws "Cannot find parameter with name: k"
for an absent one; most reads sit in ``try``/``catch`` with a default, a few do not.

So an unset template parameter may only be *removed* where no loader reads it directly; where one
does, it keeps a value the loader reads as "unset" (``""`` or the placeholder itself, whichever the
loader's code compares against). The Python side is derived from the ``model.py`` files themselves
(:func:`python_requirements`, by walking their syntax tree); the C++ side is the table
:data:`CPP_REQUIREMENTS`, which cites the backend's source lines.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

__all__ = [
    "ANY_PLACEHOLDER",
    "CPP_REQUIREMENTS",
    "CppRequirement",
    "Requirement",
    "cpp_requirements",
    "merge",
    "python_requirements",
    "version_tuple",
]

ANY_PLACEHOLDER = "${*}"  # in Requirement.unset: any value starting with "${" reads as unset

_Pred = Callable[[ast.AST], bool]


@dataclass(frozen=True)
class Requirement:
    """A parameter a loader reads without a fallback.

    ``unset`` holds the values the loader itself compares against to mean "not set" (such as
    ``""`` or ``"${multimodal_model_path}"``; :data:`ANY_PLACEHOLDER` for a ``startswith("${")``
    test); empty when it needs a real value. ``source`` says where it is read.
    """

    key: str
    unset: frozenset[str]
    source: str

    def unset_value(self, variable: str | None) -> str | None:
        """The value to keep for an unset parameter: ``""`` when accepted, else its placeholder."""
        if "" in self.unset:
            return ""
        placeholder = "${" + variable + "}" if variable else None
        if placeholder is not None and (placeholder in self.unset or ANY_PLACEHOLDER in self.unset):
            return placeholder
        return None

    def accepts(self, value: str) -> bool:
        """Whether the loader reads ``value`` as a real value or as "unset" (a stray ``${`` is neither)."""
        if value in self.unset or (ANY_PLACEHOLDER in self.unset and value.startswith("${")):
            return True
        return value != "" and "${" not in value


@dataclass(frozen=True)
class CppRequirement:
    requirement: Requirement
    since: tuple[int, ...]  # first TensorRT-LLM / backend release whose C++ backend reads it so


_CPP = "the TensorRT-LLM C++ backend"
_V0_18_2 = "triton-inference-server/tensorrtllm_backend v0.18.2 inflight_batcher_llm/src/model_instance_state.cc"
_V0_19_0 = "triton-inference-server/tensorrtllm_backend v0.19.0 inflight_batcher_llm/src/model_instance_state.cc"
_V1 = "NVIDIA/TensorRT-LLM triton_backend/inflight_batcher_llm/src/model_instance_state.cc (commit c8c6df08, 1.x)"
# Parameters the C++ backend reads with GetParameter<std::string> outside any try/catch; every
# other read in model_instance_state.cc and model_state.cc of these releases has a catch-all
# fallback (checked line by line). GetParameter returns the string as is, so "" and the untouched
# placeholder reach the comparisons quoted below.
CPP_REQUIREMENTS: tuple[CppRequirement, ...] = (
    CppRequirement(
        Requirement(
            "gpt_model_type", frozenset(), f"{_CPP} ({_V0_18_2}:60, {_V0_19_0}:62, {_V1} getBatchingTypeFromParams)"
        ),
        (0,),
    ),
    CppRequirement(
        # read, then only logged: `if (!tokenizerDir.empty() && tokenizerDir != "${tokenizer_dir}")`
        Requirement("tokenizer_dir", frozenset({"", "${tokenizer_dir}"}), f"{_CPP} ({_V0_19_0}:413, {_V1})"),
        (0, 19),
    ),
    CppRequirement(
        # `if (guidedDecodingBackendStr.empty() || ... == "${guided_decoding_backend}" || tokenizerInfoPath.empty()
        #      || tokenizerInfoPath == "${xgrammar_tokenizer_info_path}") return no guided decoding`
        Requirement(
            "xgrammar_tokenizer_info_path",
            frozenset({"", "${xgrammar_tokenizer_info_path}"}),
            f"{_CPP} ({_V0_19_0}:414, {_V1})",
        ),
        (0, 19),
    ),
    CppRequirement(
        Requirement(
            "guided_decoding_backend", frozenset({"", "${guided_decoding_backend}"}), f"{_CPP} ({_V0_19_0}:415, {_V1})"
        ),
        (0, 19),
    ),
)


def version_tuple(version: str | None) -> tuple[int, ...] | None:
    """``"0.19.0"`` -> ``(0, 19, 0)``; pre-release suffixes are dropped (``1.2.0rc2`` -> ``(1, 2, 0)``)."""
    if not version:
        return None
    parts: list[int] = []
    for piece in version.split(".")[:3]:
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts) or None


def cpp_requirements(*, version: str | None = None, declared: Iterable[str] | None = None) -> dict[str, Requirement]:
    """The C++ backend's direct reads.

    ``declared``: the parameter keys of the release's own ``tensorrt_llm/config.pbtxt`` template (the
    backend and its templates ship together, so a read applies exactly when the template declares
    the key). Else ``version``: the rows of that release. Neither: every row.
    """
    rows = [r.requirement for r in CPP_REQUIREMENTS]
    if declared is not None:
        keys = set(declared)
        return {r.key: r for r in rows if r.key in keys}
    wanted = version_tuple(version)
    if wanted is not None:
        return {r.requirement.key: r.requirement for r in CPP_REQUIREMENTS if wanted >= r.since}
    return {r.key: r for r in rows}


def merge(*sets: dict[str, Requirement]) -> dict[str, Requirement]:
    """Requirements of several loaders of one model: every loader's unset values must agree."""
    out: dict[str, Requirement] = {}
    for reqs in sets:
        for key, req in reqs.items():
            if key in out:
                prev = out[key]
                out[key] = Requirement(key, prev.unset & req.unset, f"{prev.source}; {req.source}")
            else:
                out[key] = req
    return out


# --------------------------------------------------------------------------- model.py


def python_requirements(source: str, filename: str = "model.py") -> dict[str, Requirement]:
    """The ``parameters`` a Triton Python model reads without a fallback, from its source.

    Direct reads are ``<expr>['parameters']['k']`` (also through an alias such as
    ``params = model_config['parameters']``) that are not guarded by ``'k' in ...``, and calls of a
    local helper that indexes the parameters with one of its arguments without such a guard. A
    ``SyntaxError`` propagates: a model.py Python cannot parse would not load either.
    """
    tree = ast.parse(source, filename=filename)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    aliases = _aliases(tree)

    def is_params(node: ast.AST) -> bool:
        if isinstance(node, ast.Name):
            return node.id in aliases
        return isinstance(node, ast.Subscript) and _const_str(node.slice) == "parameters"

    found: dict[str, Requirement] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Subscript) and is_params(node.value) and isinstance(node.ctx, ast.Load)):
            continue
        key = _const_str(node.slice)
        if key is None or _guarded(node, key, parents, is_params):
            continue
        found.setdefault(key, Requirement(key, frozenset(), f"{filename}:{node.lineno}"))
    for key, lineno in _helper_reads(tree, parents, is_params):
        found.setdefault(key, Requirement(key, frozenset(), f"{filename}:{lineno}"))
    return {key: Requirement(key, _unset_values(tree, key, req), req.source) for key, req in found.items()}


def _const_str(node: ast.AST | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def _aliases(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Subscript)
            and _const_str(node.value.slice) == "parameters"
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return names


def _membership_of(test: ast.AST, key_matches: _Pred, is_params: _Pred) -> ast.cmpop | None:
    """``<key> in|not in <parameters>`` inside ``test``: the operator, else None."""
    for node in ast.walk(test):
        if (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and key_matches(node.left)
            and is_params(node.comparators[0])
        ):
            return node.ops[0]
    return None


def _under_guard(node: ast.AST, stop: ast.AST | None, parents: dict[ast.AST, ast.AST], matches: _Pred,
                 is_params: _Pred) -> bool:  # fmt: skip
    """Whether ``node`` sits under ``if <key> in params`` (or its else branch of ``not in``) or in a
    ``try`` that catches ``KeyError``, below ``stop``."""
    child, parent = node, parents.get(node)
    while parent is not None and parent is not stop:
        if isinstance(parent, ast.If | ast.IfExp) and child is not parent.test:
            op = _membership_of(parent.test, matches, is_params)
            in_body = child in (parent.body if isinstance(parent.body, list) else [parent.body])
            if (isinstance(op, ast.In) and in_body) or (isinstance(op, ast.NotIn) and not in_body):
                return True
        if isinstance(parent, ast.Try) and child in parent.body and _catches_key_error(parent):
            return True
        child, parent = parent, parents.get(parent)
    return False


def _guarded(node: ast.AST, key: str, parents: dict[ast.AST, ast.AST], is_params: _Pred) -> bool:
    return _under_guard(node, None, parents, lambda n: _const_str(n) == key, is_params)


def _catches_key_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        if handler.type is None:
            return True
        kinds = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(k, ast.Name) and k.id in ("KeyError", "LookupError", "Exception") for k in kinds):
            return True
    return False


def _helper_reads(tree: ast.AST, parents: dict[ast.AST, ast.AST], is_params: _Pred) -> Iterator[tuple[str, int]]:
    """Calls of local functions that index the parameters with an argument, without a guard."""
    helpers: dict[str, tuple[int, str]] = {}  # function name -> (position, name) of the key argument
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        args = [a.arg for a in fn.args.args]
        for node in ast.walk(fn):
            if not (isinstance(node, ast.Subscript) and is_params(node.value)):
                continue
            if not (isinstance(node.slice, ast.Name) and node.slice.id in args):
                continue
            arg = node.slice.id
            if not _guarded_by_arg(fn, node, arg, parents, is_params):
                helpers[fn.name] = (args.index(arg), arg)
    if not helpers:
        return
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in helpers:
            index, arg = helpers[node.func.id]
            key = _const_str(node.args[index]) if index < len(node.args) else None
            key = key or next((_const_str(k.value) for k in node.keywords if k.arg == arg), None)
            if key is not None:
                yield key, node.lineno


def _guarded_by_arg(
    fn: ast.FunctionDef, read: ast.AST, arg: str, parents: dict[ast.AST, ast.AST], is_params: _Pred
) -> bool:
    def matches(n: ast.AST) -> bool:
        return isinstance(n, ast.Name) and n.id == arg

    # `if arg not in params: return ...` before the read
    for stmt in fn.body:
        if stmt.lineno >= getattr(read, "lineno", 0):
            break
        if (
            isinstance(stmt, ast.If)
            and isinstance(_membership_of(stmt.test, matches, is_params), ast.NotIn)
            and any(isinstance(s, ast.Return | ast.Raise) for s in stmt.body)
        ):
            return True
    return _under_guard(read, fn, parents, matches, is_params)


def _unset_values(tree: ast.AST, key: str, req: Requirement) -> frozenset[str]:
    """The string constants a directly read value is compared with (its "unset" spellings)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(sub, ast.Subscript) and _const_str(sub.slice) == key for sub in ast.walk(node.value)
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    values: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if not any(isinstance(s, ast.Name) and s.id in names for s in sides):
                continue
            for side in sides:
                if (s := _const_str(side)) is not None:
                    values.add(s)
                elif isinstance(side, ast.Tuple | ast.List | ast.Set):
                    values.update(c for e in side.elts if (c := _const_str(e)) is not None)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "startswith"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in names
            and node.args
            and _const_str(node.args[0]) == "${"
        ):
            values.add(ANY_PLACEHOLDER)
        elif (
            isinstance(node, ast.UnaryOp)
            and isinstance(node.op, ast.Not)
            and isinstance(node.operand, ast.Name)
            and node.operand.id in names
        ):
            values.add("")
    return frozenset(values)
