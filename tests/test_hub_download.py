"""Hugging Face downloads: progress lines, the transport choice, stopping, resuming.

Everything runs the installed huggingface_hub (0.x, 1.x or 2.x) against the fake hub on 127.0.0.1.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import hubserver
import huggingface_hub
import pytest
from hubserver import HubServer
from modelgen import make_tiny_model

from trtllm_builder.errors import FetchError
from trtllm_builder.fetch import hub, hub_transfer, modelcache
from trtllm_builder.fetch.hub_transfer import MANY_CORES, choose_transport
from trtllm_builder.fetch.sources import ModelRef, fetch_model

hub_server = hubserver.hub_server  # the fixture

HF_MAJOR = int(huggingface_hub.__version__.split(".")[0])
PROGRESS = re.compile(
    r"^download: [\d.]+/[\d.]+ [kMG]?B \(\d+%\), [\d.]+ [kMG]?B/s, ETA (\d+ s|\d+m\d\ds|\d+h\d\dm|unknown)"
)
MIB = 1 << 20
FINAL = re.compile(r"^download: [\d.]+/[\d.]+ [kMG]?B \(100%\) in [^,]+, [\d.]+ [kMG]?B/s; downloaded `")


def _shards(n: int, size: int) -> dict[str, bytes]:
    files: dict[str, bytes] = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}', "tokenizer.json": b"{}"}
    for i in range(n):
        files[f"model-{i + 1:05d}-of-{n:05d}.safetensors"] = os.urandom(size)
    return files


class _Log:
    """A log that records its lines and the thread each came from."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.threads: set[str] = set()

    def __call__(self, line: str) -> None:
        self.lines.append(line)
        self.threads.add(threading.current_thread().name)


def test_progress_lines_in_process(hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "PROGRESS_INTERVAL_S", 0.5)  # the mechanism, quickly; the CLI test checks 5 s
    # huggingface_hub moves (and reports) bytes in 10 MiB pieces: shards of 21 MiB, ~2 s each, in parallel
    files = _shards(2, 21 * MIB)
    hub_server.add_repo("org/slow", files)
    hub_server.slow_bps = 10 * MIB
    log = _Log()

    model = fetch_model(ModelRef("org/slow"), token=None, cache_dir=tmp_path / "cache", log=log)

    assert model.size_bytes == sum(map(len, files.values()))
    progress = [line for line in log.lines if PROGRESS.match(line)]
    assert len(progress) >= 2, log.lines
    assert [line for line in log.lines if FINAL.match(line)], log.lines
    assert sum(line.startswith("transport: ") for line in log.lines) == 1, log.lines
    # printed by the caller's thread (under Cog: the prediction's), never by huggingface_hub's workers
    assert log.threads == {threading.current_thread().name}
    assert not [line for line in log.lines if "\r" in line or "\n" in line]
    done = [float(m.group(1)) for line in progress if (m := re.match(r"download: ([\d.]+)/", line))]
    assert done == sorted(done)  # never backwards
    assert [d for d in done if 0 < d < 44], progress  # bytes counted while they move, not only at the end


def test_progress_lines_through_the_cli(
    run_cli: Callable[..., subprocess.CompletedProcess[str]], hub_server: HubServer, tmp_path: Path
) -> None:
    model = _pad_weights(make_tiny_model(tmp_path / "src", "llama"), 24 * MIB)
    files: dict[str, hubserver.Content] = {p.name: p for p in model.iterdir() if p.is_file()}
    hub_server.add_repo("org/tiny-llama", files)
    hub_server.slow_bps = 24 * MIB // 7  # ~7 s: at least one line at 5 s, then the closing one
    cfg = tmp_path / "build.yaml"
    cfg.write_text(
        "model: {id: org/tiny-llama}\n"
        "trtllm: {example: llama}\n"
        "steps:\n"
        "  - {name: convert, script: convert_checkpoint.py, args: {dtype: float16}}\n"
        "  - {name: build, command: trtllm-build, args: {max_batch_size: 1, max_seq_len: 64}}\n"
    )

    res = run_cli("build", str(cfg), "-o", str(tmp_path / "out.tar.gz"), env={"HF_ENDPOINT": hub_server.endpoint})

    assert res.returncode == 0, res.stdout + res.stderr
    lines = (res.stdout + res.stderr).splitlines()
    assert [line for line in lines if PROGRESS.match(line)], lines
    assert [line for line in lines if FINAL.match(line)], lines
    assert sum("transport: http (" in line for line in lines) == 1, lines
    assert "\r" not in res.stdout + res.stderr  # no tqdm bars
    assert (tmp_path / "out.tar.gz").is_file()


def _pad_weights(model: Path, size: int) -> Path:
    """Replace the model's weights by one valid safetensors file of ``size`` bytes (a padding tensor)."""
    header = json.dumps({"model.padding": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}}).encode()
    header += b" " * (-len(header) % 8)
    (model / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + os.urandom(size))
    return model


def _async_raise(thread: threading.Thread, exc: type[BaseException]) -> None:
    """Deliver ``exc`` into ``thread`` at its next bytecode: how Cog delivers a cancel to the predict thread."""
    assert thread.ident is not None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(exc))


class _Canceled(BaseException):
    pass


def test_cancel_returns_at_once_and_the_lock_is_released(hub_server: HubServer, tmp_path: Path) -> None:
    files = _shards(2, 30 * MIB)
    sha = hub_server.add_repo("org/slow", files)
    hub_server.slow_bps = 6 * MIB  # ~5 s per shard, in 10 MiB pieces
    cache = tmp_path / "cache"
    outcome: list[BaseException] = []

    def build() -> None:
        try:
            fetch_model(ModelRef("org/slow"), token=None, cache_dir=cache, log=lambda _: None)
        except BaseException as e:
            outcome.append(e)

    caller = threading.Thread(target=build, name="predict")
    caller.start()
    entry = modelcache.hf_entry(cache, "org/slow", sha)
    deadline = time.monotonic() + 20
    while not hub_server.file_gets() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # bytes are flowing
    canceled_at = time.monotonic()
    _async_raise(caller, _Canceled)
    caller.join(5)
    assert not caller.is_alive() and isinstance(outcome[0], _Canceled), outcome
    assert time.monotonic() - canceled_at < 2  # the caller is free at once, whatever the download does
    # The helper thread owns the lock until it stops: at the next chunk on 1.x+, where huggingface_hub
    # reports bytes through our hook; on 0.x, which has no such hook, only once its download is done.
    fd = os.open(entry.lock, os.O_RDWR)
    try:
        deadline = time.monotonic() + (3 if HF_MAJOR >= 1 else 20)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, "the canceled download still holds the cache lock"
                time.sleep(0.1)
    finally:
        os.close(fd)
    if HF_MAJOR >= 1:
        assert not entry.complete  # stopped, not finished
    # the next build gets the model, whatever the canceled one left behind
    hub_server.slow_bps = None
    model = fetch_model(ModelRef("org/slow"), token=None, cache_dir=cache, log=lambda _: None)
    assert model.revision == sha and model.size_bytes == sum(map(len, files.values()))


def test_transport_line_names_the_choice_and_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HF_XET_HIGH_PERFORMANCE", "HF_HUB_ENABLE_HF_TRANSFER", "HF_HUB_DISABLE_XET"):
        monkeypatch.delenv(name, raising=False)
    xet = choose_transport(xet_backed=True, cores=MANY_CORES)
    if not hub_transfer._installed("hf_xet"):  # huggingface_hub < 0.32 does not pull it in
        assert xet.name == "http" and "hf_xet is not usable here" in xet.reason
        return
    assert (xet.name, xet.high_performance) == ("hf_xet", True)
    assert "Xet-backed" in xet.describe() and "high-performance" in xet.describe()
    assert not choose_transport(xet_backed=True, cores=2).high_performance
    monkeypatch.setenv("HF_XET_HIGH_PERFORMANCE", "0")
    assert not choose_transport(xet_backed=True, cores=64).high_performance  # the user's setting wins
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    assert choose_transport(xet_backed=True, cores=64).name != "hf_xet"

    plain = choose_transport(xet_backed=False, cores=64)
    assert plain.name == "http" and "plain HTTP/LFS" in plain.reason and "ignored" not in plain.reason
    monkeypatch.setenv("HF_HUB_ENABLE_HF_TRANSFER", "1")
    assert "HF_HUB_ENABLE_HF_TRANSFER is ignored" in choose_transport(xet_backed=False).reason


def test_landed_bytes_while_the_download_thread_moves_the_folder(tmp_path: Path) -> None:
    # The progress poll runs in the log's thread while the download thread publishes `.partial`
    # (a rename): a file seen a moment ago may be gone at its stat. That must count 0, not fail the
    # build (CI caught the FileNotFoundError in test_cached_gated_model_is_refused_through_the_cli).
    partial, final = tmp_path / "m.partial", tmp_path / "m"
    files = {f"f{i}.json": 3 for i in range(50)}
    partial.mkdir()
    for name in files:
        (partial / name).write_bytes(b"abc")
    stop = threading.Event()

    def flip() -> None:
        while not stop.is_set():
            os.rename(partial, final)
            os.rename(final, partial)

    mover = threading.Thread(target=flip, daemon=True)
    mover.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            seen.add(hub_transfer.landed_bytes(partial, files))
    finally:
        stop.set()
        mover.join()
    assert seen <= set(range(0, 151, 3)), seen  # whole files only, whatever moment the poll saw
    assert hub_transfer.landed_bytes(partial, files) == 150  # the mover always puts the folder back


@pytest.mark.timeout(90)
def test_hf_transfer_is_switched_off_so_progress_and_cancel_keep_working(
    hub_server: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # huggingface_hub 0.x hands files from 50 MB on to hf_transfer when this is set, and hf_transfer
    # holds the GIL for the whole file: with the hub in this process that is a deadlock, and in any
    # process no other thread (progress lines, Cog's cancel) runs. 1.x+ ignore the variable.
    monkeypatch.setenv("HF_HUB_ENABLE_HF_TRANSFER", "1")
    monkeypatch.setattr(hub, "PROGRESS_INTERVAL_S", 0.2)
    name = "model-00001-of-00001.safetensors"
    files = _shards(1, 60 * MIB)
    hub_server.add_repo("org/big", files)
    hub_server.slow_bps = 40 * MIB
    log = _Log()

    model = fetch_model(ModelRef("org/big"), token=None, cache_dir=tmp_path / "cache", log=log)

    assert (model.path / name).read_bytes() == files[name]
    assert [line for line in log.lines if line.startswith("transport: http (")], log.lines
    assert [line for line in log.lines if PROGRESS.match(line)], log.lines  # the caller's thread kept running
    assert all(r.range is None for r in hub_server.file_gets(name))  # one plain stream, not hf_transfer's chunks


def test_next_run_resumes_a_file_cut_short(hub_server: HubServer, tmp_path: Path) -> None:
    name = "model-00001-of-00001.safetensors"
    files = _shards(1, 12 * MIB)
    hub_server.add_repo("org/big", files)
    hub_server.drop_at, hub_server.drop_times, hub_server.drop_files = 11 * MIB, -1, name
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"kept dropping mid-file.*next run resumes"):
        fetch_model(ModelRef("org/big"), token=None, cache_dir=cache, log=lambda _: None)
    failed = len(hub_server.file_gets(name))

    hub_server.drop_at = None
    model = fetch_model(ModelRef("org/big"), token=None, cache_dir=cache, log=lambda _: None)

    assert (model.path / name).read_bytes() == files[name]
    (again,) = hub_server.file_gets(name)[failed:]
    # huggingface_hub writes 10 MiB pieces; 0.x keeps its `.incomplete` file and the next run goes on
    # from it, 1.x+ names those files per attempt (and deletes them), so the next run starts over.
    assert again.range == (f"bytes={10 * MIB}-" if HF_MAJOR == 0 else None)
