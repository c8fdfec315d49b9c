"""Triton ``config.pbtxt`` templates as text: tokens, ``${var}`` placeholders, ``parameters`` blocks.

The backend's templates are protobuf text with :class:`string.Template` placeholders, filled
upstream by ``tools/fill_template.py`` (``Template.safe_substitute``). They are read here by
tokenizing, not by a regex over the whole text, because:

* a placeholder inside a ``#`` comment is no variable: ``safe_substitute`` leaves an unknown one
  alone and Triton ignores comments, so the commented-out ``${enable_trt_overlap}`` block of
  ``tensorrt_llm/config.pbtxt`` (tensorrtllm_backend v0.12 to v0.19, TensorRT-LLM 1.x) is neither
  required nor filled here;
* a top-level ``parameters { key: "k" value: { string_value: "${x}" } }`` block is what a loader
  reads: it is kept, given the value the loader reads as "unset", or removed whole.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trtllm_builder.errors import ConfigError, SetupError

__all__ = [
    "ParamBlock",
    "Template",
    "Token",
    "parse_template",
    "placeholders",
    "rename_refs",
    "render",
    "tokens",
]

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
# string.Template's own rules, for placeholders inside quoted strings.
_INNER_VAR_RE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<named>[A-Za-z_][A-Za-z0-9_]*)|(?P<dollar>\$))"
)
_WHOLE_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
# A value placed outside a quoted string must be one pbtxt token (a number, enum or bool).
_BARE_VALUE_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
_OPEN, _CLOSE = "{[<", "}]>"


@dataclass(frozen=True)
class Token:
    kind: str  # ws, comment, string, var, dollar, punct, word, other
    start: int
    end: int
    text: str


@dataclass(frozen=True)
class ParamBlock:
    """A top-level ``parameters`` field: its key, and its variable when the value is exactly ``"${x}"``."""

    key: str | None
    variable: str | None
    start: int
    end: int
    value_start: int  # span of the quoted string_value token, for rewriting it
    value_end: int


@dataclass(frozen=True)
class Template:
    model: str
    path: Path
    text: str
    variables: frozenset[str]  # placeholders outside comments
    removable: frozenset[str]  # appear only as the whole value of top-level parameters blocks
    blocks: tuple[ParamBlock, ...]
    typed: Mapping[str, tuple[tuple[str, str], ...]]  # variable -> (("input"|"output"), tensor name) it types

    def block_keys(self) -> frozenset[str]:
        return frozenset(b.key for b in self.blocks if b.key is not None)


def tokens(text: str) -> list[Token]:
    return [Token(m.lastgroup or "other", m.start(), m.end(), m.group()) for m in _TOKEN_RE.finditer(text)]


def _token_variables(token: Token) -> list[str]:
    if token.kind == "var":
        return [token.text.strip("${}")]
    if token.kind == "string":
        return [
            m.group("braced") or m.group("named") for m in _INNER_VAR_RE.finditer(token.text) if not m.group("dollar")
        ]
    return []


def placeholders(text: str) -> list[str]:
    """Every placeholder outside comments, in order (a name may repeat)."""
    return [name for tok in tokens(text) for name in _token_variables(tok)]


def _significant(toks: list[Token]) -> list[Token]:
    return [t for t in toks if t.kind not in ("ws", "comment")]


def _matching(sig: list[Token], open_index: int) -> int | None:
    depth = 0
    for k in range(open_index, len(sig)):
        if sig[k].kind != "punct":
            continue
        if sig[k].text in _OPEN:
            depth += 1
        elif sig[k].text in _CLOSE:
            depth -= 1
            if depth == 0:
                return k
    return None


def _param_blocks(sig: list[Token]) -> list[ParamBlock]:
    blocks: list[ParamBlock] = []
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
        if tok.kind == "punct" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "punct" and tok.text in _CLOSE:
            depth -= 1
        i += 1
    return blocks


def _describe_block(body: list[Token], start: int, end: int) -> ParamBlock:
    key: str | None = None
    variable: str | None = None
    value_span = (0, 0)
    for k in range(len(body) - 2):
        name, colon, value = body[k], body[k + 1], body[k + 2]
        if name.kind != "word" or colon.text != ":" or value.kind != "string":
            continue
        if name.text == "key":
            key = value.text[1:-1]
        elif name.text == "string_value":
            value_span = (value.start, value.end)
            m = _WHOLE_VAR_RE.fullmatch(value.text[1:-1])
            if m:
                variable = m.group(1) or m.group(2)
    return ParamBlock(key, variable, start, end, *value_span)


def _typed_tensors(sig: list[Token]) -> dict[str, list[tuple[str, str]]]:
    """``data_type: ${x}`` fields, with the ``input``/``output`` list and tensor name they sit in."""
    found: dict[str, list[tuple[str, str]]] = {}
    stack: list[str] = []  # the field name each open bracket belongs to ("" for list elements)
    names: list[str | None] = []  # the `name: "..."` of each open element
    pending: list[tuple[str, int]] = []  # (variable, depth) seen before the element's name
    for k, tok in enumerate(sig):
        if tok.kind == "punct" and tok.text in _OPEN:
            field = ""
            prev = sig[k - 1] if k else None
            if prev is not None and prev.text == ":" and k >= 2:
                prev = sig[k - 2]
            if prev is not None and prev.kind == "word":
                field = prev.text
            stack.append(field)
            names.append(None)
        elif tok.kind == "punct" and tok.text in _CLOSE:
            if stack:
                depth = len(stack)
                name = names.pop()
                stack.pop()
                for var, _ in [p for p in pending if p[1] == depth]:
                    direction = stack[-1] if stack else ""
                    if name is not None and direction in ("input", "output"):
                        found.setdefault(var, []).append((direction, name))
                pending = [p for p in pending if p[1] != depth]
        elif tok.kind == "word" and k + 2 < len(sig) and sig[k + 1].text == ":":
            value = sig[k + 2]
            if tok.text == "name" and value.kind == "string" and names:
                names[-1] = value.text[1:-1]
            elif tok.text == "data_type" and value.kind == "var":
                pending.append((value.text.strip("${}"), len(stack)))
    return found


def parse_template(model: str, path: Path) -> Template:
    """Read and tokenize ``path``; :class:`SetupError` when it cannot be read."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SetupError(f"cannot read Triton template {path}: {exc}") from exc
    toks = tokens(text)
    counts: dict[str, int] = {}
    for token in toks:
        for name in _token_variables(token):
            counts[name] = counts.get(name, 0) + 1
    sig = _significant(toks)
    blocks = tuple(_param_blocks(sig))
    in_blocks: dict[str, int] = {}
    for block in blocks:
        if block.variable is not None:
            in_blocks[block.variable] = in_blocks.get(block.variable, 0) + 1
    removable = frozenset(name for name, n in in_blocks.items() if counts.get(name) == n)
    typed = {var: tuple(where) for var, where in _typed_tensors(sig).items()}
    return Template(model, path, text, frozenset(counts), removable, blocks, typed)


def render(tmpl: Template, values: Mapping[str, str], unset: Mapping[str, str]) -> str:
    """Fill ``tmpl`` with ``values`` (this template's variables only).

    A removable ``parameters`` block whose variable has no value is kept with ``unset[key]`` when
    its key is there (a loader reads that parameter without a fallback), else removed whole.
    Comments are left as they are. Any other variable without a value is a :class:`ConfigError`.
    """
    text = tmpl.text
    edits: list[tuple[int, int, str]] = []
    for block in tmpl.blocks:
        if block.variable not in tmpl.removable or block.variable in values:
            continue
        if block.key is not None and block.key in unset:
            edits.append((block.value_start, block.value_end, '"' + _escape(unset[block.key], '"') + '"'))
        else:
            start, end = _removal_span(text, block.start, block.end)
            edits.append((start, end, ""))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    out: list[str] = []
    unfilled: list[str] = []
    for token in tokens(text):
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
        elif token.kind == "string":
            quote = token.text[0]

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
            out.append("$")  # string.Template's escape
        else:
            out.append(token.text)
    if unfilled:
        raise ConfigError(
            f"{tmpl.model}/config.pbtxt: no value for " + ", ".join(f"${{{n}}}" for n in sorted(set(unfilled)))
        )
    return "".join(out)


def _escape(value: str, quote: str) -> str:
    return value.replace("\\", "\\\\").replace(quote, "\\" + quote)


def _removal_span(text: str, start: int, end: int) -> tuple[int, int]:
    """Widen a block's span to whole lines, its comment lines above and one spare blank line."""
    line_start = text.rfind("\n", 0, start) + 1
    if text[line_start:start].strip() == "":
        start = line_start
        # Comment lines directly above (no blank line between) describe this block; a commented-out
        # block there (braces or a placeholder in the comment) is not its description and stays.
        while start > 0:
            prev_start = text.rfind("\n", 0, start - 1) + 1
            line = text[prev_start : start - 1].lstrip()
            if not line.startswith("#") or any(c in line for c in "{}$"):
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


def rename_refs(text: str, field: str, old: str, new: str, *, top_level_only: bool) -> str:
    """Replace ``field: "old"`` string values with ``"new"``, found by token, not by regex."""
    sig = _significant(tokens(text))
    replace: list[Token] = []
    depth = 0
    for k, tok in enumerate(sig):
        if tok.kind == "punct" and tok.text in _OPEN:
            depth += 1
        elif tok.kind == "punct" and tok.text in _CLOSE:
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
