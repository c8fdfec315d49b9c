"""Progress lines: cadence, format, thread-safety and the ticking helper."""

from __future__ import annotations

import threading
import time

import pytest

from trtllm_builder.progress import ProgressMeter, format_bytes, format_duration, run_ticking


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_interval_and_one_at_the_end() -> None:
    clock, lines = Clock(), []
    meter = ProgressMeter("download", 16_100_000_000, lines.append, interval=5, clock=clock)
    for _ in range(12):  # 12 s of work in 1 s steps, 412 MB each
        clock.now += 1
        meter.add(412_000_000)
        meter.tick()
    assert len(lines) == 2  # at 5 s and 10 s, never per chunk
    assert lines[0] == "download: 2.1/16.1 GB (13%), 412.0 MB/s, ETA 34 s"
    meter.finish()
    meter.finish()  # once only
    assert lines[-1] == "download: 4.9/16.1 GB (31%) in 12 s, 412.0 MB/s"
    assert len(lines) == 3
    assert all("\r" not in ln and "\n" not in ln for ln in lines)


def test_stalled_and_unknown_total() -> None:
    clock, lines = Clock(), []
    meter = ProgressMeter("pack", None, lines.append, interval=5, clock=clock)
    clock.now += 6
    meter.tick()
    assert lines == ["pack: 0 B, 0 B/s"]
    stalled = ProgressMeter("upload", 10_000, lines.append, interval=5, clock=clock)
    clock.now += 6
    stalled.tick()
    assert lines[-1] == "upload: 0.0/10.0 kB (0%), 0 B/s, ETA unknown (stalled)"


def test_counts_from_many_threads() -> None:
    meter = ProgressMeter("download", 8 * 10_000, lambda _: None)
    workers = [threading.Thread(target=lambda: [meter.add(1) for _ in range(10_000)]) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert meter.done == 80_000
    meter.set(10)  # never backwards
    assert meter.done == 80_000


@pytest.mark.parametrize(
    ("n", "binary", "text"),
    [(0, False, "0 B"), (999, False, "999 B"), (6_200_000_000, False, "6.2 GB"), (3.1 * 2**30, True, "3.1 GiB")],
)
def test_format_bytes(n: float, binary: bool, text: str) -> None:
    assert format_bytes(n, binary=binary) == text


@pytest.mark.parametrize(("s", "text"), [(24.4, "24 s"), (150, "2m30s"), (3900, "1h05m")])
def test_format_duration(s: float, text: str) -> None:
    assert format_duration(s) == text


def test_run_ticking_ticks_meanwhile_and_passes_results_and_errors() -> None:
    ticks = []
    assert run_ticking(lambda: (time.sleep(0.5), 42)[1], lambda: ticks.append(1), poll_s=0.05) == 42
    assert len(ticks) >= 5

    def boom() -> None:
        raise ValueError("from the helper thread")

    with pytest.raises(ValueError, match="helper thread"):
        run_ticking(boom, lambda: None)
