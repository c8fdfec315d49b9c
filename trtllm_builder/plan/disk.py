"""Peak disk of a build, estimated from the model's size and the plan before the first step.

Every step that writes a checkpoint or an engine is counted at the model's size (fp16 checkpoints
and engines are about as large as the fp16 model; quantized ones are smaller, so this errs on the
safe side), and so is the archive (it holds the engine). The estimate walks the plan the way a
build uses disk:

* the model, when it must be downloaded (a local model or a cached download is already there);
* while a step runs: everything kept so far plus the step's own output (in the work dir; with the
  step cache, moved into the cache when it is verified, copied if that is another filesystem);
* after a step: with the step cache, every output is kept (``keep``); in ``lean`` mode and without
  the step cache, an output that no later step reads is deleted once the next output is verified;
* packing: everything kept plus the archive.

So a convert + build plan peaks at model + checkpoint + engine + archive (4x the model) when the
step cache keeps everything, and at 3x in lean mode or without the cache: the build step needs its
checkpoint and its engine at once, packing the engine and the archive. The pipeline picks lean
mode when keeping everything does not fit, and says so.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from trtllm_builder.plan.planner import Plan, PlannedStep
from trtllm_builder.sizes import size_from_env

__all__ = [
    "DISK_BUDGET_ENV",
    "DiskNeed",
    "Place",
    "budget_from_env",
    "devices_of",
    "estimate",
    "fits",
    "gib",
    "place",
    "places_for",
    "shortfalls",
    "unneeded_after",
]

DISK_BUDGET_ENV = "TRTLLM_BUILDER_DISK_BUDGET"
_OUTPUTS = ("checkpoint", "engine", "any")
ROLES = ("cache", "work", "output")  # the model download and step cache; step outputs; the archive


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


@dataclass(frozen=True)
class Place:
    """Where a role writes: the nearest existing folder, its filesystem's free bytes and device id."""

    path: Path
    free: int
    device: int


def place(path: Path) -> Place:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return Place(p, shutil.disk_usage(p).free, os.stat(p).st_dev)


@dataclass(frozen=True)
class DiskNeed:
    """The estimate: peak bytes the build adds per device, and how many model-sized things that is."""

    per_device: dict[int, int]
    model_bytes: int
    download: bool
    at_once: int  # step outputs and archive on disk together at the peak (each model-sized)

    @property
    def total(self) -> int:
        return sum(self.per_device.values())

    def describe(self) -> str:
        """``10.0 GiB of model files x the download + 2 outputs on disk at once ...``"""
        parts = (["the download"] if self.download else []) + [
            f"{self.at_once} outputs on disk at once: step outputs and the archive, each counted at the model's size"
        ]
        return f"{gib(self.model_bytes)} of model files x {' + '.join(parts)}"


def budget_from_env() -> int | None:
    """``$TRTLLM_BUILDER_DISK_BUDGET`` as bytes, or None when unset."""
    return size_from_env(DISK_BUDGET_ENV)


def _reads(step: PlannedStep, name: str) -> bool:
    return step.reads == name or any(f"{{steps.{name}.output_dir}}" in a for a in step.args)


def unneeded_after(plan: Plan, done: int) -> list[PlannedStep]:
    """Steps among the first ``done`` whose output no later step reads (engines and none-steps aside).

    Only outputs the tool wired (injected dirs, ``{steps.<name>.output_dir}``) are tracked; a step
    whose paths a user typed by hand may be read by anything, so it is kept.
    """
    later = plan.steps[done:]
    out = []
    for step in plan.steps[:done]:
        if step.expect in ("engine", "none"):
            continue
        needed = any(_reads(s, step.name) for s in later)
        wired = any(_reads(s, step.name) for s in plan.steps)
        if wired and not needed:
            out.append(step)
    return out


def estimate(
    plan: Plan,
    model_bytes: int,
    *,
    download: bool,
    step_cache: bool,
    lean: bool,
    devices: Mapping[str, int] | None = None,
) -> DiskNeed:
    """Peak disk per device (``devices``: role -> device id; default one filesystem for all)."""
    dev = {role: 0 for role in ROLES} | dict(devices or {})
    size = model_bytes
    base: Counter[int] = Counter({dev["cache"]: size} if download else {})
    kept: dict[str, int] = {}  # step -> device of its kept output
    peaks: dict[int, int] = {}
    most = 0

    def record(*extra: int) -> None:
        nonlocal most
        usage = base.copy()
        for d in [*kept.values(), *extra]:
            usage[d] += size
        for d, n in usage.items():
            peaks[d] = max(peaks.get(d, 0), n)
        most = max(most, len(kept) + len(extra))

    record()
    for i, step in enumerate(plan.steps, 1):
        if step.expect in _OUTPUTS:
            record(dev["work"])  # written in the work dir, beside what is kept (its input among it)
            if step_cache and dev["work"] != dev["cache"]:
                record(dev["work"], dev["cache"])  # copied into the cache, then removed from the work dir
            kept[step.name] = dev["cache"] if step_cache else dev["work"]
        if lean or not step_cache:
            for gone in unneeded_after(plan, i):
                kept.pop(gone.name, None)
    record(dev["output"])  # the archive, beside everything kept
    return DiskNeed({d: n for d, n in peaks.items() if n}, model_bytes, download, most)


def shortfalls(need: DiskNeed, places: Mapping[str, Place], budget: int | None = None) -> list[str]:
    """What does not fit: one line per filesystem short of space, and one if the budget is exceeded."""
    out = []
    for device, n in need.per_device.items():
        here = [p for r, p in places.items() if p.device == device]
        if here and n > here[0].free:
            roles = sorted(r for r, p in places.items() if p.device == device)
            out.append(f"{gib(n)} in {here[0].path} ({', '.join(roles)}) but only {gib(here[0].free)} are free there")
    if budget is not None and need.total > budget:
        out.append(f"{gib(need.total)} in all, more than the disk budget of {gib(budget)}")
    return out


def places_for(cache: Path, work: Path, output: Path | None) -> dict[str, Place]:
    """The filesystem of each role (the archive goes beside the work dir when ``output`` is None)."""
    return {"cache": place(cache), "work": place(work), "output": place(output if output is not None else work)}


def devices_of(places: Mapping[str, Place]) -> dict[str, int]:
    return {role: p.device for role, p in places.items()}


def fits(need: DiskNeed, places: Mapping[str, Place], budget: int | None) -> bool:
    return not shortfalls(need, places, budget)
