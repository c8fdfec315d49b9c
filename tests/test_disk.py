"""The disk estimate (trtllm_builder/plan/disk.py): peak bytes from the model's size and the plan."""

from __future__ import annotations

from pathlib import Path

import pytest
from standin_world import tree_dir

from trtllm_builder.config.schema import load_config
from trtllm_builder.errors import ConfigError
from trtllm_builder.plan import disk
from trtllm_builder.plan.planner import Plan, make_plan
from trtllm_builder.plan.tree import TrtllmTree

TREE = TrtllmTree(tree_dir().resolve())
GIB = 1 << 30
M = 10 * GIB


def plan_of(steps: str) -> Plan:
    text = f"model: {{id: org/model}}\ntrtllm: {{example: llama}}\nsteps:\n{steps}"
    return make_plan(load_config(text), TREE, Path("/tmp/disk-work"), which=lambda c: f"/usr/bin/{c}")


CONVERT_BUILD = plan_of(
    "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
    "  - {name: build, command: trtllm-build, args: {max_batch_size: 8}}\n"
)
QUANTIZE_BUILD = plan_of(  # the fp8 recipe: quantize writes the checkpoint, build reads it
    "  - {name: quantize, example: quantization, script: quantize.py, args: {qformat: fp8}}\n"
    "  - {name: build, command: trtllm-build, args: {max_batch_size: 8}}\n"
)


@pytest.mark.parametrize("plan", [CONVERT_BUILD, QUANTIZE_BUILD], ids=["convert+build", "quantize+build"])
@pytest.mark.parametrize(
    ("download", "step_cache", "lean", "peak"),
    [
        (True, True, False, 4 * M),  # model + checkpoint + engine + archive: the cache keeps everything
        (True, True, True, 3 * M),  # the checkpoint goes once the engine is verified
        (True, False, True, 3 * M),  # no cache: the same, deleted outright
        (False, True, False, 3 * M),  # a local model needs no room of its own
        (False, True, True, 2 * M),
    ],
)
def test_peak_of_a_two_step_plan(plan: Plan, download: bool, step_cache: bool, lean: bool, peak: int) -> None:
    need = disk.estimate(plan, M, download=download, step_cache=step_cache, lean=lean)
    assert need.total == peak
    assert need.at_once == peak // M - int(download)


def test_separate_filesystems_are_counted_apart() -> None:
    devices = {"cache": 1, "work": 2, "output": 3}
    need = disk.estimate(CONVERT_BUILD, M, download=True, step_cache=True, lean=True, devices=devices)
    # the cache holds the model and, at the build step, the checkpoint and the engine being copied in;
    # the work dir holds a step's output until it is copied; the archive gets its own
    assert need.per_device == {1: 3 * M, 2: M, 3: M}


def test_shortfalls_name_the_place_and_the_budget(tmp_path: Path) -> None:
    need = disk.estimate(CONVERT_BUILD, M, download=False, step_cache=True, lean=True)
    here = disk.Place(tmp_path, 15 * GIB, 0)
    places = {"cache": here, "work": here, "output": here}
    assert disk.shortfalls(need, places) == [
        f"20.0 GiB in {tmp_path} (cache, output, work) but only 15.0 GiB are free there"
    ]
    roomy = disk.Place(tmp_path, 100 * GIB, 0)
    assert disk.shortfalls(need, dict.fromkeys(places, roomy), budget=19 * GIB) == [
        "20.0 GiB in all, more than the disk budget of 19.0 GiB"
    ]
    assert disk.fits(need, dict.fromkeys(places, roomy), budget=20 * GIB)


def test_budget_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(disk.DISK_BUDGET_ENV, "300G")
    assert disk.budget_from_env() == 300 * GIB
    monkeypatch.setenv(disk.DISK_BUDGET_ENV, "lots")
    with pytest.raises(ConfigError, match=r"TRTLLM_BUILDER_DISK_BUDGET: 'lots' is not a size"):
        disk.budget_from_env()
