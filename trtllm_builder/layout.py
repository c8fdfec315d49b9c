"""What a step's output must look like, and where it really is.

Current releases: a checkpoint is ``config.json`` + ``rank{N}.safetensors`` and an engine
``config.json`` + ``rank{N}.engine`` for every rank of ``mapping.world_size``. Old releases
(the cog-trt-llm era): ``config.ini`` + ``*.bin`` checkpoints and ``<model>_<dtype>_tp<W>_rank<N>.engine``
engines. Some converters write into a sub-folder such as ``<out>/1-gpu``; :func:`locate` finds it.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Expect", "Found", "Layout", "describe_dir", "inspect_dir", "locate"]

Layout = Literal["checkpoint", "engine", "legacy_checkpoint", "legacy_engine"]
Expect = Literal["checkpoint", "engine", "any", "none"]
_ACCEPTS: dict[str, tuple[Layout, ...]] = {
    "checkpoint": ("checkpoint", "legacy_checkpoint"),
    "engine": ("engine", "legacy_engine"),
    "any": ("checkpoint", "engine", "legacy_checkpoint", "legacy_engine"),
}
_LEGACY_ENGINE_RE = re.compile(r"_rank(\d+)\.engine$")


@dataclass
class Found:
    """A recognised output directory."""

    path: Path
    layout: Layout
    world_size: int
    config: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def files(self) -> list[Path]:
        if self.layout == "checkpoint":
            return [self.path / "config.json"] + [self.path / f"rank{r}.safetensors" for r in range(self.world_size)]
        if self.layout == "engine":
            return [self.path / "config.json"] + [self.path / f"rank{r}.engine" for r in range(self.world_size)]
        if self.layout == "legacy_engine":
            return [self.path / "config.json", *sorted(self.path.glob("*.engine"))]
        return [self.path / "config.ini", *sorted(self.path.glob("*.bin"))]


def _load_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{path.name} is not valid JSON ({exc})"
    if not isinstance(data, dict):
        return None, f"{path.name} is not a JSON object"
    return data, None


def _mapping(cfg: dict[str, Any]) -> dict[str, Any]:
    for holder in (cfg, cfg.get("pretrained_config") or {}):
        m = holder.get("mapping") if isinstance(holder, dict) else None
        if isinstance(m, dict):
            return m
    return {}


def _world_size(cfg: dict[str, Any]) -> int:
    m = _mapping(cfg)
    ws = m.get("world_size")
    if isinstance(ws, int) and ws > 0:
        return ws
    tp, pp = m.get("tp_size", 1), m.get("pp_size", 1)
    if isinstance(tp, int) and isinstance(pp, int) and tp > 0 and pp > 0:
        return tp * pp
    return 1


def _check_safetensors(path: Path) -> str | None:
    """Cheap structural check: header length + JSON header + data of the declared size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            (n,) = struct.unpack("<Q", raw)
            if n > min(size - 8, 100 << 20):
                return f"{path.name} has a corrupt header"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        return f"{path.name} is not a safetensors file ({exc})"
    end = 0
    for key, meta in header.items():
        if key == "__metadata__" or not isinstance(meta, dict):
            continue
        offsets = meta.get("data_offsets") or [0, 0]
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        return f"{path.name} is truncated: header promises {8 + n + end} bytes, file has {size}"
    return None


def inspect_dir(path: Path) -> Found | None:
    """Recognise the layout in ``path`` itself (no sub-folders), or None."""
    if not path.is_dir():
        return None
    names = {p.name for p in path.iterdir()}
    has_cfg = "config.json" in names
    if has_cfg and any(n.startswith("rank") and n.endswith(".safetensors") for n in names):
        layout: Layout = "checkpoint"
    elif has_cfg and any(re.fullmatch(r"rank\d+\.engine", n) for n in names):
        layout = "engine"
    elif has_cfg and any(n.endswith(".engine") for n in names):
        layout = "legacy_engine"
    elif "config.ini" in names and any(n.endswith(".bin") for n in names):
        layout = "legacy_checkpoint"
    else:
        return None

    problems: list[str] = []
    cfg: dict[str, Any] = {}
    if layout == "legacy_checkpoint":
        return Found(path, layout, 1)
    loaded, err = _load_json(path / "config.json")
    if err:
        problems.append(err)
    cfg = loaded or {}
    if layout == "legacy_engine":
        bc = cfg.get("builder_config") if isinstance(cfg.get("builder_config"), dict) else {}
        ws = bc.get("tensor_parallel", 1) * bc.get("pipeline_parallel", 1) if bc else 1
        ranks = sorted(int(m.group(1)) for n in names if (m := _LEGACY_ENGINE_RE.search(n)))
        want = list(range(ws))
        if ranks != want:
            problems.append(f"expected engines for ranks {want} (tensor_parallel={ws}), found ranks {ranks}")
        return Found(path, layout, ws, cfg, problems)
    ws = _world_size(cfg)
    suffix = ".safetensors" if layout == "checkpoint" else ".engine"
    missing = [f"rank{r}{suffix}" for r in range(ws) if f"rank{r}{suffix}" not in names]
    if missing:
        problems.append(f"missing {', '.join(missing)} for mapping.world_size = {ws}")
    extra = sorted(
        n for n in names if re.fullmatch(rf"rank(\d+){re.escape(suffix)}", n) and int(n[4 : -len(suffix)]) >= ws
    )
    if extra:
        problems.append(f"{', '.join(extra)} beyond mapping.world_size = {ws}")
    for r in range(ws):
        f = path / f"rank{r}{suffix}"
        if f.exists():
            if f.stat().st_size == 0:
                problems.append(f"{f.name} is empty")
            elif layout == "checkpoint" and (msg := _check_safetensors(f)):
                problems.append(msg)
    return Found(path, layout, ws, cfg, problems)


def describe_dir(path: Path, limit: int = 12) -> str:
    """A short listing of what is there, for error messages."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is not a directory"
    entries = sorted(path.iterdir())
    if not entries:
        return f"{path} is empty"
    shown = [p.name + ("/" if p.is_dir() else "") for p in entries[:limit]]
    more = f" and {len(entries) - limit} more" if len(entries) > limit else ""
    return f"{path} has: {', '.join(shown)}{more}"


def locate(out_dir: Path, expect: Expect, *, max_depth: int = 2) -> Found | None:
    """Find the output of kind ``expect`` in ``out_dir`` or a sub-folder (e.g. ``1-gpu/``).

    Breadth-first, so ``out_dir`` itself wins over sub-folders; among sub-folders of one level,
    ``<N>-gpu`` names sort first.
    """
    accepts = _ACCEPTS.get(expect, ())
    level = [out_dir]
    for _ in range(max_depth + 1):
        nxt: list[Path] = []
        for d in level:
            found = inspect_dir(d)
            if found is not None and found.layout in accepts:
                return found
            if d.is_dir() and not d.is_symlink():
                subs = sorted(
                    (p for p in d.iterdir() if p.is_dir() and not p.is_symlink()),
                    key=lambda p: (not re.fullmatch(r"\d+-gpu", p.name), p.name),
                )
                nxt.extend(subs)
        level = nxt
    return None
