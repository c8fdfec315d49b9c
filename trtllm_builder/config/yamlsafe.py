"""Strict YAML loading: safe types only, no aliases, no duplicate keys, bounded size.

Errors say where (line, column) and what, never quote the source: PyYAML's own message shows the
line it failed on, and that line may be ``hf_token: hf_...``.
"""

from __future__ import annotations

from typing import Any

import yaml

from trtllm_builder.errors import ConfigError
from trtllm_builder.secrets import mask, secrets_in_text

__all__ = ["MAX_CONFIG_BYTES", "load_yaml"]

MAX_CONFIG_BYTES = 1 << 20  # a pipeline config is a few KiB; 1 MiB is generous
MAX_DEPTH = 32


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (billion-laughs) and duplicate mapping keys."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConfigError(
                f"YAML aliases are not supported (found `*{event.anchor}` at line {event.start_mark.line + 1}); "
                "write the value out in full"
            )
        depth = getattr(self, "_depth", 0)
        if depth > MAX_DEPTH:
            raise ConfigError(f"the config nests deeper than {MAX_DEPTH} levels; a pipeline config is flat")
        self._depth = depth + 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth = depth

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(f"line {key_node.start_mark.line + 1}: mapping keys must be plain strings")
            if key in seen:
                raise ConfigError(
                    f"line {key_node.start_mark.line + 1}: key `{key}` appears twice in the same mapping; keep one"
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str | bytes, *, source: str = "config") -> Any:
    """Parse YAML text strictly; every problem becomes a ``ConfigError`` naming ``source``."""
    if isinstance(text, bytes):
        if len(text) > MAX_CONFIG_BYTES:
            raise ConfigError(f"{source} is {len(text)} bytes; the limit is {MAX_CONFIG_BYTES} bytes")
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{source} is not UTF-8 text (byte {exc.start}); save it as UTF-8 YAML") from exc
    if len(text.encode("utf-8", errors="surrogatepass")) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source} is larger than {MAX_CONFIG_BYTES} bytes; a pipeline config is a few KiB")
    if "\x00" in text:
        raise ConfigError(f"{source} contains a NUL byte: it is binary, not YAML")
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - _StrictLoader derives from SafeLoader
    except ConfigError as exc:
        raise ConfigError(mask(f"{source}: {exc}", secrets_in_text(text))) from None
    except yaml.YAMLError as exc:
        raise ConfigError(mask(f"{source} is not valid YAML: {_describe(exc)}", secrets_in_text(text))) from None
    except RecursionError:
        raise ConfigError(f"{source} nests too deeply") from None


def _describe(exc: yaml.YAMLError) -> str:
    """The error without PyYAML's snippet of the source: the line it quotes may hold a secret (``hf_token``).

    Line and column say where; the problem and its context say what (their quoted text is masked
    by the caller when it looks like a secret).
    """
    if not isinstance(exc, yaml.MarkedYAMLError):
        return type(exc).__name__
    parts: list[str] = []
    for what, mark in ((exc.context, exc.context_mark), (exc.problem, exc.problem_mark)):
        if what is None and mark is None:
            continue
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        parts.append(": ".join(p for p in (where, what) if p))
    return "; ".join(dict.fromkeys(parts)) or type(exc).__name__
