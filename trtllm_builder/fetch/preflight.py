"""Can this machine run the plan? GPUs, compute capability and disk, checked before any download.

:func:`preflight` is pure (the plan and the machine's numbers in, findings out) so ``plan`` can
report on any machine and tests can pass any GPUs; :func:`check_machine` gathers the numbers
(``nvidia-smi``, the model's size from its source's metadata, free disk). ``build`` refuses a plan
with an error finding in seconds, before the model is fetched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trtllm_builder.config.recipe import to_int
from trtllm_builder.errors import BuilderError, PreflightError
from trtllm_builder.plan import disk
from trtllm_builder.plan.argv import flag_values
from trtllm_builder.plan.gpu import GpuInfo, detect_gpus
from trtllm_builder.plan.planner import Plan

__all__ = ["Finding", "Needs", "check_machine", "plan_needs", "preflight", "raise_for_errors"]

FP8_MIN_CC = (8, 9)
FP4_MIN_CC = (10, 0)

# Flags (without dashes) whose value sets the tensor / pipeline / context parallel size.
_TP_FLAGS = ("tp_size", "world-size", "world_size", "tensor-parallelism", "tensor_parallelism", "auto_parallel")
_PP_FLAGS = ("pp_size",)
_CP_FLAGS = ("cp_size",)
# flag -> values that make a step produce or run FP8 / FP4 kernels
_FP8_VALUES: dict[str, frozenset[str]] = {
    "qformat": frozenset({"fp8", "w4a8_awq"}),
    "kv_cache_dtype": frozenset({"fp8"}),
    "gemm_plugin": frozenset({"fp8"}),
    "gemm_swiglu_plugin": frozenset({"fp8"}),
    "low_latency_gemm_plugin": frozenset({"fp8"}),
    "low_latency_gemm_swiglu_plugin": frozenset({"fp8"}),
}
_FP8_SWITCHES = frozenset({"use_fp8", "fp8_kv_cache", "enable_fp8", "use_fp8_rowwise"})
_FP4_VALUES: dict[str, frozenset[str]] = {"qformat": frozenset({"nvfp4"}), "gemm_plugin": frozenset({"nvfp4"})}
_FP4_SWITCHES = frozenset({"use_nvfp4"})

# What TensorRT-LLM's builder refuses on compute capability 10.x-11.x (builder.build(): "INT8/INT4
# quantization is not supported on SM>=100.", "SmoothQuant ...", "Per-channel or per-token scaling ...").
# SM 12.x (RTX 50 series) is not refused. flag -> (values that trigger it, or None for a switch; what it is)
SM100_MIN, SM100_END = (10, 0), (12, 0)
_SM100_REFUSED: dict[str, tuple[frozenset[str] | None, str]] = {
    "use_weight_only": (None, "INT8/INT4 weight-only"),
    "use-weight-only-with-precision": (frozenset({"int8", "int4", "w4a16_awq"}), "INT8/INT4 weight-only"),
    "qformat": (frozenset({"int8_wo", "int4_wo", "int4_awq"}), "INT8/INT4 weight-only"),
    "int8_kv_cache": (None, "an INT8 KV cache"),
    "calibrate_kv_cache": (None, "an INT8 KV cache"),
    "calibrate-kv-cache": (None, "an INT8 KV cache"),
    "kv_cache_dtype": (frozenset({"int8"}), "an INT8 KV cache"),
    "smoothquant": (frozenset(), "SmoothQuant"),  # any value
    "use_smooth_quant": (None, "SmoothQuant"),
    "use_smooth_quant_plugin": (frozenset(), "SmoothQuant"),
    "per_channel": (None, "per-channel scaling"),
    "per_token": (None, "per-token scaling"),
    "use_fp8_rowwise": (None, "per-channel/per-token (FP8 rowwise) scaling"),
}
_SM100_QFORMAT_SQ = frozenset({"int8_sq"})


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.message}"


@dataclass(frozen=True)
class Needs:
    """What a plan asks of the machine."""

    world_size: int
    world_from: str  # "tp_size 2 x pp_size 1 in step `convert`"
    fp8: str | None  # the first arg that needs FP8 kernels, e.g. "step `quantize`: --qformat fp8"
    fp4: str | None
    workers: int  # trtllm-build --workers
    outputs: int  # steps that write a checkpoint or an engine
    sm100_refused: tuple[str, ...] = ()  # "step `convert`: `--use_weight_only` (INT8/INT4 weight-only)", ...


def plan_needs(plan: Plan) -> Needs:
    """World size, FP8/FP4 use, build workers and output count, read from the plan's args."""
    world, world_from = 1, "no tp_size/pp_size given: one GPU"
    fp8: str | None = None
    fp4: str | None = None
    workers = 1
    outputs = 0
    sm100: list[str] = []
    for step in plan.steps:
        args = flag_values(step.args)
        tp = next((v for f in _TP_FLAGS if (v := to_int(args.get(f))) is not None), None)
        pp = next((v for f in _PP_FLAGS if (v := to_int(args.get(f))) is not None), None)
        cp = next((v for f in _CP_FLAGS if (v := to_int(args.get(f))) is not None), None)
        size = (tp or 1) * (pp or 1) * (cp or 1)
        if size > world:
            world = size
            parts = [f"tp_size {tp or 1}", f"pp_size {pp or 1}"] + ([f"cp_size {cp}"] if cp and cp > 1 else [])
            world_from = " x ".join(parts) + f" in step `{step.name}`"
        if step.expect in ("checkpoint", "engine", "any"):
            outputs += 1
        if (w := to_int(args.get("workers"))) is not None and step.expect in ("engine", "any"):
            workers = max(workers, w)
        for flag, value in args.items():
            bare = value == "true"  # flag_values() reads a bare switch as "true"
            shown = f"step `{step.name}`: `--{flag}{'' if bare else ' ' + value}`"
            if fp8 is None and (value in _FP8_VALUES.get(flag, ()) or (flag in _FP8_SWITCHES and bare)):
                fp8 = shown
            if fp4 is None and (value in _FP4_VALUES.get(flag, ()) or (flag in _FP4_SWITCHES and bare)):
                fp4 = shown
            refused = _sm100_refusal(flag, value, bare, gemma="gemma" in Path(step.program[-1]).parts)
            if refused is not None:
                sm100.append(f"{shown} ({refused})")
    return Needs(world, world_from, fp8, fp4, workers, outputs, tuple(sm100))


def _sm100_refusal(flag: str, value: str, bare: bool, *, gemma: bool) -> str | None:
    """What ``--flag value`` asks for that Blackwell's builder refuses, or None."""
    if flag == "qformat" and value in _SM100_QFORMAT_SQ:
        return "SmoothQuant"
    if flag == "weight_only_precision" and gemma and value in ("int8", "int4", "w4a16_awq"):
        return "INT8/INT4 weight-only"  # gemma's converter quantizes on the precision alone
    rule = _SM100_REFUSED.get(flag)
    if rule is None:
        return None
    values, what = rule
    if values is None:
        return what if bare else None
    return what if (not values and not bare) or value in values else None


def _cc(gpu: GpuInfo) -> tuple[int, int]:
    major, _, minor = gpu.compute_capability.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (0, 0)


def _gpu_list(gpus: Sequence[GpuInfo]) -> str:
    names: dict[str, int] = {}
    for g in gpus:
        key = f"{g.name} (compute capability {g.compute_capability})"
        names[key] = names.get(key, 0) + 1
    return ", ".join(f"{n} x {k}" if n > 1 else k for k, n in names.items())


def preflight(
    plan: Plan,
    *,
    gpus: Sequence[GpuInfo],
    model_bytes: int | None,
    free_disk: int | None,
    disk_path: Path | None = None,
    needs_download: bool = True,
    step_cache: bool = True,
    disk_budget: int | None = None,
) -> list[Finding]:
    """The findings for ``plan`` on a machine with ``gpus`` and ``free_disk`` bytes free where it writes.

    The disk estimate (:func:`.disk.estimate`) is the build's peak: the model if it must be
    downloaded, plus the step outputs and the archive on disk at once, each counted at the model's
    size (conservative: quantized outputs are smaller). ``disk_budget`` caps it further.
    """
    needs = plan_needs(plan)
    found: list[Finding] = []
    n = len(gpus)
    if n == 0:
        found.append(
            Finding(
                "error",
                f"no GPU found (nvidia-smi lists none): a build needs {needs.world_size} ({needs.world_from}); "
                "run it on a machine with NVIDIA GPUs and drivers",
            )
        )
    elif needs.world_size > n:
        found.append(
            Finding(
                "error",
                f"the plan needs {needs.world_size} GPUs ({needs.world_from}) but this machine has {n} "
                f"({_gpu_list(gpus)}): lower tensor_parallel/pipeline_parallel (tp_size/pp_size) to fit, "
                f"or use a machine with {needs.world_size} GPUs",
            )
        )
    if n and needs.workers > n:
        found.append(
            Finding(
                "warning",
                f"trtllm-build `--workers {needs.workers}` builds on {needs.workers} GPUs but this machine has {n}",
            )
        )
    if n:
        slowest = min(gpus, key=_cc)
        cc = _cc(slowest)
        for uses, minimum, what, alternatives in (
            (needs.fp8, FP8_MIN_CC, "FP8", "int8_weight_only, int4_awq or smooth_quant; or an L4, L40S or H100"),
            (needs.fp4, FP4_MIN_CC, "FP4", "fp8 or int4_awq; or a Blackwell GPU"),
        ):
            if uses is not None and cc < minimum:
                found.append(
                    Finding(
                        "error",
                        f"{what} ({uses}) needs compute capability >= {minimum[0]}.{minimum[1]}, but GPU "
                        f"{slowest.index} ({slowest.name}) has {slowest.compute_capability}: use "
                        f"{alternatives}",
                    )
                )
        blackwell = next((g for g in gpus if SM100_MIN <= _cc(g) < SM100_END), None)
        if blackwell is not None and needs.sm100_refused:
            found.append(
                Finding(
                    "error",
                    f"GPU {blackwell.index} ({blackwell.name}) has compute capability "
                    f"{blackwell.compute_capability}, and on 10.x-11.x (Blackwell) TensorRT-LLM's builder refuses "
                    "INT8/INT4 weight-only, INT8 KV cache, SmoothQuant and per-channel/per-token scaling; the plan "
                    f"uses {'; '.join(needs.sm100_refused)}: use fp8 instead (`qformat: fp8` with quantize.py, "
                    "`kv_cache_dtype: fp8` for the KV cache, recipe `quantization: fp8` / `fp8_kv`) or nvfp4 "
                    "(`qformat: nvfp4`), or build on a GPU of another generation",
                )
            )
    if model_bytes is None:
        found.append(Finding("warning", "the model's size is unknown: disk space is not checked ahead"))
    elif free_disk is not None or disk_budget is not None:
        # the least a build can do with (lean mode, see disk.py) or without the step cache
        need = disk.estimate(plan, model_bytes, download=needs_download, step_cache=step_cache, lean=True)
        where = f" in {disk_path}" if disk_path is not None else ""
        if free_disk is not None and need.total > free_disk:
            found.append(
                Finding(
                    "error",
                    f"not enough disk: the build needs about {disk.gib(need.total)} at its peak ({need.describe()}), "
                    f"but only {disk.gib(free_disk)} are free{where}: free some space, or point the work dir "
                    "(--work-dir) and the cache (--cache-dir) at a larger disk",
                )
            )
        if disk_budget is not None and need.total > disk_budget:
            found.append(
                Finding(
                    "error",
                    f"the build needs about {disk.gib(need.total)} of disk at its peak ({need.describe()}), more than "
                    f"the disk budget of {disk.gib(disk_budget)} (--disk-budget / ${disk.DISK_BUDGET_ENV}): raise it",
                )
            )
    return found


def _model_size(plan: Plan, *, cache_dir: Path, token: str | None, local_model: Path | None) -> tuple[int, bool]:
    """(bytes, needs_download); raises ``BuilderError`` when the source cannot tell."""
    from trtllm_builder.fetch import hub, modelcache
    from trtllm_builder.fetch.sources import ModelRef, classify, hf_token, local_path, remote_size

    if local_model is not None:
        return modelcache.list_files(Path(local_model))[1], False
    model = plan.config.model
    ref = ModelRef(model.id, model.revision, model.tar_url)
    kind = classify(ref)
    if kind == "local":
        return modelcache.list_files(local_path(model.id))[1], False
    if kind == "hf":
        snap = hub.resolve(model.id, model.revision, token=hf_token(token))
        return snap.size, not modelcache.hf_entry(cache_dir, model.id, snap.sha).complete
    size = remote_size(ref, token=token)
    if size is None:
        raise PreflightError("the tarball server does not say how large it is")
    return size, True


def check_machine(
    plan: Plan,
    *,
    cache_dir: Path,
    token: str | None = None,
    local_model: Path | None = None,
    gpus: Sequence[GpuInfo] | None = None,
    detect: Callable[[], list[GpuInfo]] = detect_gpus,
    step_cache: bool = True,
    output: Path | None = None,
    disk_budget: int | None = None,
) -> list[Finding]:
    """Gather this machine's numbers and run :func:`preflight`. Never raises for a lookup that fails:
    an unknown model size becomes a warning. ``output``: where the archive goes (default: beside the
    work dir); ``disk_budget`` defaults to ``$TRTLLM_BUILDER_DISK_BUDGET``."""
    found_gpus = list(gpus) if gpus is not None else detect()
    extra: list[Finding] = []
    model_bytes: int | None
    try:
        model_bytes, download = _model_size(plan, cache_dir=cache_dir, token=token, local_model=local_model)
    except (BuilderError, OSError) as exc:
        model_bytes, download = None, True
        extra.append(Finding("warning", f"cannot tell the model's size ahead ({exc}): disk space is not checked"))
    places = disk.places_for(cache_dir, plan.work_dir, output)
    budget = disk_budget if disk_budget is not None else disk.budget_from_env()
    single = len({p.device for p in places.values()}) == 1
    findings = preflight(
        plan,
        gpus=found_gpus,
        model_bytes=model_bytes,
        free_disk=places["work"].free if single else None,
        disk_path=places["work"].path,
        needs_download=download,
        step_cache=step_cache,
        disk_budget=budget,
    )
    if model_bytes is not None and not single:
        # several filesystems: the download and the step cache, the step outputs, the archive
        need = disk.estimate(
            plan, model_bytes, download=download, step_cache=step_cache, lean=True, devices=disk.devices_of(places)
        )
        for short in disk.shortfalls(need, places):
            findings.append(
                Finding(
                    "error",
                    f"not enough disk: at its peak the build needs about {short}: free some space, or point the "
                    "work dir (--work-dir), the cache (--cache-dir) and the archive (-o) at a larger disk",
                )
            )
    if extra:  # the specific reason replaces the generic "size is unknown"
        findings = [f for f in findings if "size is unknown" not in f.message]
    return findings + extra


def raise_for_errors(findings: Sequence[Finding]) -> None:
    """``PreflightError`` listing every error finding (with its numbers), if there is one."""
    errors = [f.message for f in findings if f.level == "error"]
    if errors:
        raise PreflightError(
            "this machine cannot run the plan (nothing was downloaded or built):\n"
            + "\n".join(f"  - {e}" for e in errors)
        )
