"""``--run-gpu``: tests marked ``gpu`` run only when asked, and a run without it says so.

Wire into ``tests/conftest.py`` with::

    from _gpu_option import pytest_addoption, pytest_collection_modifyitems, pytest_terminal_summary  # noqa: F401

(if conftest already defines one of these hooks, call the function of the same name from it instead).
"""

from __future__ import annotations

import pytest

__all__ = ["GPU_NOT_RUN", "pytest_addoption", "pytest_collection_modifyitems", "pytest_terminal_summary"]

GPU_NOT_RUN = (
    "GPU smoke test NOT RUN: it builds the Docker image and runs one prediction on an NVIDIA GPU; "
    "run `pytest --run-gpu -m gpu` on a GPU host with Docker (README: Run it as a Cog model)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-gpu",
        action="store_true",
        default=False,
        help="run the tests marked `gpu` (needs an NVIDIA GPU, Docker and the nvidia-container-toolkit)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-gpu"):
        return
    skip = pytest.mark.skip(reason=GPU_NOT_RUN)
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    if config.getoption("--run-gpu"):
        return
    not_run = [r for r in terminalreporter.stats.get("skipped", []) if "gpu" in getattr(r, "keywords", {})]
    if not_run:
        terminalreporter.write_sep("=", f"{len(not_run)} GPU test(s) NOT RUN here (no --run-gpu)", yellow=True)
        terminalreporter.write_line(GPU_NOT_RUN)
