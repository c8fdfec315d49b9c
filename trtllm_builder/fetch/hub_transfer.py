"""The bytes of a Hugging Face snapshot: which transport moves them, and how their progress is seen.

The download itself is always ``huggingface_hub.snapshot_download`` (per-file retries with HTTP range
resume, parallel files); this module picks the fastest transport the installed huggingface_hub offers
and counts the bytes:

- **hf_xet** for Xet-backed repos (what huggingface_hub uses by itself when ``hf_xet`` is installed),
  with ``HF_XET_HIGH_PERFORMANCE`` on hosts with enough cores;
- otherwise huggingface_hub's own parallel HTTP download (``requests`` in 0.x, ``httpx`` in 1.x,
  ``httpx2`` in 2.x), with range resume.

hf_transfer, which huggingface_hub 0.x still offers (1.x dropped it), is switched off even where it
is installed: hf_transfer 0.1.9 holds Python's GIL for a whole file (measured: a thread that should
have run 25 times during a 1.2 s, 256 MB hf_transfer download ran once), so no progress line, no Cog
cancel and no log forwarding could happen meanwhile, and a hub served from the same process
deadlocks. On a loopback hub it also moved fewer bytes per CPU second than the plain path.

Progress comes from huggingface_hub's own hook where the version has one for bytes (``tqdm_class``
of ``snapshot_download``: 1.x and later); 0.x passes that class only to its per-file counter, so
there the bytes are counted as they land in the download directory.
"""

from __future__ import annotations

import glob
import importlib
import importlib.util
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtllm_builder.fetch.hub_errors import transport_failure
from trtllm_builder.progress import ProgressMeter

__all__ = ["Download", "DownloadStopped", "Transport", "choose_transport", "hub_major", "landed_bytes"]

DOWNLOAD_WORKERS = 8
DOWNLOAD_ATTEMPTS = 3
# Cores from which hf_xet's high-performance mode (all cores, more memory) is worth it.
MANY_CORES = 8


class DownloadStopped(Exception):
    """Raised inside huggingface_hub's workers when the build that asked for the download is gone."""


@dataclass(frozen=True)
class Transport:
    """How the bytes move, and why; ``describe()`` is the line printed once per download."""

    name: str  # "hf_xet", "hf_transfer" or "http"
    reason: str
    high_performance: bool = False

    def describe(self) -> str:
        return f"transport: {self.name} ({self.reason})"


def hub_major() -> int:
    import huggingface_hub

    return int(str(huggingface_hub.__version__).split(".", 1)[0])


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def _hf_utils() -> Any:
    """``huggingface_hub.utils`` (documented home of ``tqdm`` and ``disable_progress_bars`` in every version)."""
    return importlib.import_module("huggingface_hub.utils")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def choose_transport(*, xet_backed: bool, cores: int | None = None) -> Transport:
    """The transport for one download, from what is installed, the repo's storage and the host's cores.

    A user's explicit ``HF_XET_HIGH_PERFORMANCE`` / ``HF_HUB_DISABLE_XET`` is respected;
    ``HF_HUB_ENABLE_HF_TRANSFER`` is not (see the module docstring), and the line says so.
    """
    cores = cores or os.cpu_count() or 1
    major = hub_major()
    if xet_backed and _installed("hf_xet") and not _env_flag("HF_HUB_DISABLE_XET"):
        user = _env_flag("HF_XET_HIGH_PERFORMANCE")
        high = user if user is not None else cores >= MANY_CORES
        why = (
            f"HF_XET_HIGH_PERFORMANCE={'1' if high else '0'} as set"
            if user is not None
            else f"high-performance mode, {cores} cores"
            if high
            else f"standard mode: {cores} cores, high-performance mode from {MANY_CORES}"
        )
        return Transport("hf_xet", f"the repo is Xet-backed; {why}", high_performance=high)
    where = "the repo is Xet-backed but hf_xet is not usable here" if xet_backed else "plain HTTP/LFS files"
    http = "requests" if major == 0 else "httpx" if major == 1 else "httpx2"
    reason = f"{where}; huggingface_hub {major}.x's parallel download over {http}, {DOWNLOAD_WORKERS} files at a time"
    if _env_flag("HF_HUB_ENABLE_HF_TRANSFER"):
        reason += "; HF_HUB_ENABLE_HF_TRANSFER is ignored: hf_transfer blocks all other Python threads for a file"
    return Transport("http", reason)


def _apply(transport: Transport) -> None:
    """Switch the chosen transport on for this process (read by huggingface_hub / hf_xet at call time)."""
    if transport.name == "hf_xet" and transport.high_performance:
        os.environ.setdefault("HF_XET_HIGH_PERFORMANCE", "1")  # hf_xet reads it when its runtime starts
    if hub_major() == 0:
        # 0.x reads this at import into `constants` and checks the attribute on every download.
        from huggingface_hub import constants

        flag = "HF_HUB_ENABLE_HF_TRANSFER"  # a name 1.x no longer has, hence no attribute access
        setattr(constants, flag, False)


def landed_bytes(partial: Path, files: dict[str, int]) -> int:
    """Bytes of ``files`` on disk under ``partial``: finished files plus huggingface_hub's partial ones.

    Allocated blocks, not length, count for a partial file: hf_transfer writes chunks out of order.
    It is called while the download thread moves files (and, at the end, the whole ``partial``
    folder), so a file may vanish between listing and ``stat``: it then counts 0.
    """
    total = 0
    for name in files:
        try:
            st = os.stat(partial / name)
        except OSError:  # not there (yet, or any more)
            continue
        total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    for incomplete in glob.iglob(str(partial / ".cache" / "**" / "*.incomplete"), recursive=True):
        try:
            st = os.stat(incomplete)
        except OSError:
            continue
        total += min(st.st_size, st.st_blocks * 512)
    return total


class _Counter:
    """Bytes reported by huggingface_hub's byte bars; the bars are created and updated from its threads."""

    def __init__(self, meter: ProgressMeter, stop: threading.Event) -> None:
        self.meter = meter
        self.stop = stop
        self.lock = threading.Lock()
        self.bars: dict[int, int] = {}  # id(bar) -> bytes, for bars counting bytes

    @property
    def has_byte_bars(self) -> bool:
        with self.lock:
            return bool(self.bars)

    def add(self, bar: object, n: int) -> None:
        with self.lock:
            self.bars[id(bar)] = self.bars.get(id(bar), 0) + n
            best = max(self.bars.values())
        # 1.x+ keeps two byte bars over the same files (received, written): either alone is the whole.
        self.meter.set(best)


def _bar_class(counter: _Counter) -> type[Any]:
    """A ``tqdm`` class for ``snapshot_download(tqdm_class=...)``: never prints, counts bytes, obeys a stop."""
    hf_tqdm: Any = _hf_utils().tqdm  # the documented base for `tqdm_class` (it honours disable_progress_bars)

    class _Bar(hf_tqdm):  # type: ignore[misc]  # huggingface_hub's tqdm, typed Any here
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._bytes = kwargs.get("unit") == "B"
            kwargs["disable"] = True  # no output of its own: the meter prints
            kwargs.pop("initial", None)  # resumed bytes are not bytes moved now
            super().__init__(*args, **kwargs)
            if self._bytes:
                counter.add(self, 0)

        def update(self, n: float | None = 1) -> bool | None:
            if counter.stop.is_set():
                raise DownloadStopped("the build was stopped")
            if self._bytes and n:
                counter.add(self, int(n))
            return super().update(n)  # type: ignore[no-any-return]

    return _Bar


class Download:
    """One snapshot download: ``run()`` in a worker thread, ``poll()`` from the thread that owns the log."""

    def __init__(
        self,
        repo_id: str,
        sha: str,
        files: dict[str, int],
        partial: Path,
        *,
        token: str | None,
        endpoint: str,
        transport: Transport,
        meter: ProgressMeter,
        stop: threading.Event,
        say: Callable[[str], object],
    ) -> None:
        self.say = say
        self.repo_id, self.sha, self.files, self.partial = repo_id, sha, files, partial
        self.token, self.endpoint, self.transport = token, endpoint, transport
        self.meter, self.stop = meter, stop
        self.counter = _Counter(meter, stop)
        self.baseline = landed_bytes(partial, files)
        self._polled = 0.0

    def poll(self) -> None:
        """Where huggingface_hub reports no bytes (0.x), count what landed on disk (at most once a second)."""
        now = time.monotonic()
        if self.counter.has_byte_bars or now - self._polled < 1.0:
            return
        self._polled = now
        self.meter.set(max(0, landed_bytes(self.partial, self.files) - self.baseline))

    def run(self) -> None:
        """The download; under huggingface_hub 0.x resumed up to ``DOWNLOAD_ATTEMPTS`` times after a drop or timeout.

        huggingface_hub 1.x+ resumes a dropped body itself, 5 times within one call; 0.x gives up on a
        body cut short (``ChunkedEncodingError``) but resumes from its ``.incomplete`` file on the next
        call, so for 0.x the call is repeated. Files already complete are skipped by every call.
        """
        _hf_utils().disable_progress_bars()  # its own bars write carriage returns; the meter prints instead
        _apply(self.transport)
        attempts = DOWNLOAD_ATTEMPTS if hub_major() == 0 else 1
        for attempt in range(1, attempts + 1):
            if self.stop.is_set():
                raise DownloadStopped("the build was stopped")
            try:
                self._snapshot()
                return
            except DownloadStopped:
                raise
            except Exception as e:  # the boundary to huggingface_hub; the caller translates what is not retried
                failure = transport_failure(e)
                if failure not in ("dropped", "timeout") or attempt == attempts:
                    raise
                what = "timed out" if failure == "timeout" else "dropped mid-file"
                self.say(
                    f"the connection {what} ({type(e).__name__}); resuming "
                    f"(attempt {attempt + 1} of {attempts}; finished files are kept)"
                )

    def _snapshot(self) -> None:
        from huggingface_hub import snapshot_download

        snapshot_download(
            self.repo_id,
            revision=self.sha,
            local_dir=self.partial,
            # Exact names, escaped: what we sized for the disk check is what gets downloaded.
            allow_patterns=[glob.escape(n) for n in self.files],
            token=self.token or False,
            endpoint=self.endpoint,
            max_workers=DOWNLOAD_WORKERS,
            tqdm_class=_bar_class(self.counter),
        )
