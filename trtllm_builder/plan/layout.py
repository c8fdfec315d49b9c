"""What a step's output must look like, and where it really is.

Current releases: a checkpoint is ``config.json`` + ``rank{N}.safetensors`` and an engine
``config.json`` + ``rank{N}.engine`` for every rank of ``mapping.world_size``. Old releases
(the cog-trt-llm era): ``config.ini`` + ``*.bin`` checkpoints and ``<model>_<dtype>_tp<W>_rank<N>.engine``
engines. Some converters write into a sub-folder such as ``<out>/1-gpu``; :func:`locate` finds it.

What belongs to an engine besides its rank files (trtllm-build's ``Engine.save``):
``rank{N}_managed_weights.safetensors`` (``--fast_build`` keeps the weights out of the engine; the
runtime loads them from beside it), the ``lora/<i>/`` copies of ``--lora_dir`` (the engine's config
points at them), and ``quant_cfg.json`` (mixed-precision checkpoints). The timing cache
(``model.cache``) is not part of an engine and is never packed. A checkpoint with context parallelism
counts ``cp_size`` in ``mapping.world_size`` but holds files only for the tp x pp ranks.
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
_RANK_FILE_RE = re.compile(r"^rank(\d+)\.(safetensors|engine)$")


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
        return [p for _, p in self.members()]

    def members(self) -> list[tuple[str, Path]]:
        """Every file of this output as (path relative to it, path): what packing an engine copies."""
        if self.layout in ("checkpoint", "engine"):
            return [(p.relative_to(self.path).as_posix(), p) for p in self.extra_files(all_files=True)]
        if self.layout == "legacy_engine":
            return [(p.name, p) for p in [self.path / "config.json", *sorted(self.path.glob("*.engine"))]]
        return [(p.name, p) for p in [self.path / "config.ini", *sorted(self.path.glob("*.bin"))]]

    def extra_files(self, *, all_files: bool = False) -> list[Path]:
        """The files beyond config.json and the rank files (``all_files``: those too), in a stable order."""
        out: list[Path] = []
        if all_files:
            out.append(self.path / "config.json")
        suffix = ".safetensors" if self.layout == "checkpoint" else ".engine"
        for r in range(self.world_size):
            rank_file = self.path / f"rank{r}{suffix}"
            if all_files and rank_file.is_file():
                out.append(rank_file)
            managed = self.path / f"rank{r}_managed_weights.safetensors"
            if self.layout == "engine" and managed.is_file():
                out.append(managed)
        if self.layout == "engine":
            quant_cfg = self.path / "quant_cfg.json"
            if quant_cfg.is_file():
                out.append(quant_cfg)
            for entry in _lora_entries(self.config):
                target = self.path / entry
                if target.is_dir():
                    out.extend(sorted(p for p in target.rglob("*") if p.is_file()))
                elif target.is_file():
                    out.append(target)
        return out


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


def _checkpoint_ranks(cfg: dict[str, Any], world: int) -> int:
    """Rank files a checkpoint must hold: tp x pp when context parallelism shares them, else every rank."""
    m = _mapping(cfg)
    cp, tp, pp = m.get("cp_size", 1), m.get("tp_size"), m.get("pp_size", 1)
    if isinstance(cp, int) and cp > 1 and isinstance(tp, int) and isinstance(pp, int) and tp > 0 and pp > 0:
        return min(world, tp * pp)
    return world


def _build_config(cfg: dict[str, Any]) -> dict[str, Any]:
    bc = cfg.get("build_config")
    return bc if isinstance(bc, dict) else {}


def _lora_entries(cfg: dict[str, Any]) -> list[str]:
    """The engine-relative LoRA copies the engine's config names (``lora/0``, ``lora/1.nemo``)."""
    lora = _build_config(cfg).get("lora_config")
    dirs = lora.get("lora_dir") if isinstance(lora, dict) else None
    if not isinstance(dirs, list):
        return []
    return [d for d in dirs if isinstance(d, str) and re.fullmatch(r"lora/\d+(\.nemo)?", d)]


def _manages_weights(cfg: dict[str, Any]) -> bool:
    plugins = _build_config(cfg).get("plugin_config")
    return isinstance(plugins, dict) and plugins.get("manage_weights") is True


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
    rank_kinds = {m.group(2) for n in names if (m := _RANK_FILE_RE.match(n))}
    # an engine first: a --fast_build engine has rank<N>_managed_weights.safetensors beside its engines
    if has_cfg and "engine" in rank_kinds:
        layout: Layout = "engine"
    elif has_cfg and "safetensors" in rank_kinds:
        layout = "checkpoint"
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
    need = _checkpoint_ranks(cfg, ws) if layout == "checkpoint" else ws
    missing = [f"rank{r}{suffix}" for r in range(need) if f"rank{r}{suffix}" not in names]
    if missing:
        shared = " (tp x pp files: context-parallel ranks share them)" if need < ws else ""
        problems.append(f"missing {', '.join(missing)} for mapping.world_size = {ws}{shared}")
    extra = sorted(
        n for n in names if (m := _RANK_FILE_RE.match(n)) and m.group(2) == suffix[1:] and int(m.group(1)) >= ws
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
    if layout == "engine":
        problems.extend(_engine_extras_problems(path, cfg, ws, names))
    return Found(path, layout, ws, cfg, problems)


def _engine_extras_problems(path: Path, cfg: dict[str, Any], ws: int, names: set[str]) -> list[str]:
    """What the engine's own config says must sit beside its rank files."""
    problems: list[str] = []
    if _manages_weights(cfg):  # --fast_build: the runtime loads these, the engine holds no weights
        for r in range(ws):
            name = f"rank{r}_managed_weights.safetensors"
            if name not in names:
                problems.append(f"missing {name}: the engine was built with --fast_build (managed weights)")
            elif msg := _check_safetensors(path / name):
                problems.append(msg)
    for entry in _lora_entries(cfg):
        target = path / entry
        if entry.endswith(".nemo") and not target.is_file():
            problems.append(f"missing {entry}: the engine's lora_config names it")
        elif not entry.endswith(".nemo") and not (target / "adapter_config.json").is_file():
            problems.append(f"missing {entry}/adapter_config.json: the engine's lora_config names {entry}")
    pre = cfg.get("pretrained_config")
    quant = pre.get("quantization") if isinstance(pre, dict) else None
    if isinstance(quant, dict) and quant.get("quant_algo") == "MIXED_PRECISION" and "quant_cfg.json" not in names:
        problems.append("missing quant_cfg.json: a mixed-precision engine needs it")
    return problems


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
