"""Free-form args -> argv, exactly, and ``{placeholder}`` substitution.

Rules (cog-trt-llm dropped falsy values; we do not):

* ``key: value``        -> ``--key value`` (the key spelled as written)
* ``key:`` / ``key: ""`` / ``key: true`` -> bare ``--key``
* ``key: false``        -> omitted
* numbers, ``0`` too    -> ``--key 0``
* ``key: [a, b]``       -> ``--key a b``
* a string is always exactly one argv element, whatever it contains.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence

from trtllm_builder.config.schema import ArgValue
from trtllm_builder.errors import ConfigError
from trtllm_builder.secrets import MASK, mask

__all__ = ["PLACEHOLDER_RE", "display", "flag_values", "placeholders_in", "render_args", "substitute"]

_PLACEHOLDER = "TRTLLM_BUILDER_MASKED_SECRET"
PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")


def _scalar(value: bool | int | float | str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_args(args: Mapping[str, ArgValue]) -> list[str]:
    """Render ``args`` in the order given."""
    argv: list[str] = []
    for key, value in args.items():
        flag = f"--{key}"
        if value is False:
            continue
        if value is None or value is True or value == "":
            argv.append(flag)
        elif isinstance(value, list):
            argv.append(flag)
            argv.extend(_scalar(v) for v in value)
        else:
            argv.extend((flag, _scalar(value)))
    return argv


def flag_values(tokens: Iterable[str]) -> dict[str, str]:
    """Rendered ``--k v`` tokens back as ``{k: v}``; a bare flag maps to ``"true"``, the last value wins."""
    out: dict[str, str] = {}
    key: str | None = None
    for tok in tokens:
        if tok.startswith("--"):
            key = tok[2:]
            out[key] = "true"
        elif key is not None and out[key] == "true":
            out[key] = tok
    return out


def placeholders_in(tokens: Iterable[str]) -> set[str]:
    return {m.group(1) for t in tokens for m in PLACEHOLDER_RE.finditer(t)}


def substitute(token: str, values: Mapping[str, str]) -> str:
    """Replace ``{name}`` placeholders; an unknown one is a ``ConfigError``."""

    def repl(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            close = difflib.get_close_matches(name, list(values), n=1)
            hint = f"; did you mean `{{{close[0]}}}`?" if close else ""
            raise ConfigError(
                f"unknown placeholder `{{{name}}}` in `{token}`{hint} "
                "(known: {model_dir}, {work_dir}, {output_dir}, {steps.<earlier step>.output_dir})"
            )
        return values[name]

    return PLACEHOLDER_RE.sub(repl, token)


def display(argv: Sequence[str], secrets: Sequence[str] = ()) -> str:
    """A copy-pasteable shell line with secrets replaced by ``**********``."""
    secrets = list(secrets)
    # Each element first (shell quoting could split a secret that has quotes or spaces), through a
    # placeholder that needs no quoting, so a masked element reads `--t **********`, not `'**********'`.
    hidden = [mask(a, secrets).replace(MASK, _PLACEHOLDER) for a in argv]
    return mask(shlex.join(hidden).replace(_PLACEHOLDER, MASK), secrets)
