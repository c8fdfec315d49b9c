"""Controls (environment variables), logging and file helpers shared by every stand-in.

Controls (see tests/standin/README.md): a value ``<name>`` is a comma-separated list of
script names; an entry matches a script when it equals the script's basename
(``convert_checkpoint.py``), its stem (``convert_checkpoint``), a path suffix of the
script (``llama/convert_checkpoint.py``) or is ``*``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path

DEFAULT_VERSION = "1.2.1"  # for a script outside any stand-in tree (none ships that way)
ENGINE_MAGIC = b"ftrt"
# The TensorRT each release ships with (its release notes); engines record it in their header.
TRT_BY_TRTLLM = {"1.2.1": "10.14.1.48", "0.21.0": "10.11.0.33", "0.7.1": "9.2.0.5"}
_VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)
_tree_version: str | None = None


def tree_version(script: str | Path) -> str | None:
    """The ``__version__`` of the stand-in tree ``script`` belongs to (found by walking up from it).

    A tree script finds ``<TensorRT-LLM>/tensorrt_llm/version.py`` above itself; a tree's
    ``bin/trtllm-build`` finds its sibling ``TensorRT-LLM/``.
    """
    here = Path(script).resolve().parent
    for d in (here, *here.parents):
        for cand in (d / "tensorrt_llm" / "version.py", d / "TensorRT-LLM" / "tensorrt_llm" / "version.py"):
            if cand.is_file():
                m = _VERSION_RE.search(cand.read_text(encoding="utf-8"))
                return m.group(1) if m else None
    return None


def trtllm_version() -> str:
    """The TensorRT-LLM version the stand-in pretends to be: ``STANDIN_VERSION``, else its tree's."""
    return os.environ.get("STANDIN_VERSION") or _tree_version or DEFAULT_VERSION


def release() -> tuple[int, ...]:
    """:func:`trtllm_version` as numbers (``(1, 2, 1)``), for behaviour that differs between releases."""
    return tuple(int(x) for x in re.findall(r"\d+", trtllm_version())[:3])


def trt_version() -> str:
    return TRT_BY_TRTLLM.get(trtllm_version(), "10.11.0.33")


def legacy_warning(caller: str) -> None:
    """1.x marks the engine workflow legacy: a one-time FutureWarning on stderr (tensorrt_llm/_deprecation.py)."""
    if release() < (1, 0):
        return
    import warnings

    rule = "=" * 70
    warnings.warn(
        f"\n{rule}\nLEGACY WARNING: {caller}\n{rule}\nconvert_checkpoint.py -> trtllm-build -> run.py is the legacy "
        "TensorRT engine workflow; the PyTorch backend (trtllm-serve, the LLM API) is recommended for new "
        f"projects.\n{rule}\n",
        FutureWarning,
        stacklevel=2,
    )


def banner() -> None:
    """What ``import tensorrt_llm`` prints before anything else."""
    print(f"[TensorRT-LLM] TensorRT-LLM version: {trtllm_version()}", flush=True)


class Logger:
    """Mimics tensorrt_llm.logger: ``[MM/DD/YYYY-HH:MM:SS] [TRT-LLM] [I] message`` on stdout."""

    _LEVELS = {"E": 1, "W": 2, "I": 3, "V": 4, "D": 5}
    _NAMES = {
        "internal_error": 0,
        "error": 1,
        "warning": 2,
        "info": 3,
        "verbose": 4,
        "debug": 5,
        "trace": 6,
    }

    def __init__(self) -> None:
        self.level = 3

    def set_level(self, name: str) -> None:
        self.level = self._NAMES.get(name, 3)

    def _log(self, tag: str, msg: str) -> None:
        if self._LEVELS[tag] > self.level:
            return
        stamp = time.strftime("%m/%d/%Y-%H:%M:%S")
        print(f"[{stamp}] [TRT-LLM] [{tag}] {msg}", flush=True)

    def info(self, msg: str) -> None:
        self._log("I", msg)

    def warning(self, msg: str) -> None:
        self._log("W", msg)

    def error(self, msg: str) -> None:
        self._log("E", msg)

    def debug(self, msg: str) -> None:
        self._log("D", msg)


logger = Logger()


def _entries(var: str) -> list[tuple[str, str]]:
    raw = os.environ.get(var, "")
    out = []
    for item in raw.split(","):
        item = item.strip()
        if not item:
            continue
        name, _, arg = item.partition(":")
        out.append((name.strip(), arg.strip()))
    return out


class Controls:
    """The STANDIN_* controls for one script invocation."""

    def __init__(self, script: str | Path) -> None:
        self.path = Path(script).resolve()
        self.name = self.path.name

    # -- matching -------------------------------------------------------------------
    def _match(self, entry: str) -> bool:
        if entry in ("*", self.name, self.path.stem):
            return True
        return "/" in entry and self.path.as_posix().endswith("/" + entry.strip("/"))

    def selected(self, var: str) -> tuple[bool, str]:
        """Whether ``var`` names this script, and the entry's ``:argument`` if any."""
        for name, arg in _entries(var):
            if self._match(name):
                return True, arg
        return False, ""

    # -- lifecycle ------------------------------------------------------------------
    def log_invocation(self) -> None:
        path = os.environ.get("STANDIN_LOG")
        if not path:
            return
        record = {
            "script": self.name,
            "argv": sys.argv[1:],
            "cwd": os.getcwd(),
            "env_hf_token": bool(os.environ.get("HF_TOKEN")),
        }
        _append(path, json.dumps(record) + "\n")

    def begin_work(self) -> None:
        """Called once the arguments parsed: garbage, kill, hang and fail controls."""
        if self.selected("STANDIN_GARBAGE")[0]:
            emit_garbage()
        hit, arg = self.selected("STANDIN_CHATTY")
        if hit:  # a step that prints a lot, fast (bounded log forwarding)
            n = int(arg or 1000)
            for start in range(0, n, 10_000):
                sys.stdout.write(
                    "".join(f"[standin] {self.name}: line {i}\n" for i in range(start, min(n, start + 10_000)))
                )
            sys.stdout.flush()
        if self.selected("STANDIN_KILL")[0]:
            print(f"[standin] {self.name}: allocating memory ...", flush=True)
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.selected("STANDIN_HANG")[0]:
            self._hang()
        hit, arg = self.selected("STANDIN_FAIL")
        if hit:
            self._fail(int(arg) if arg else 1)

    def before_write(self) -> None:
        """Called just before outputs are written: sleep and empty controls."""
        delay = os.environ.get("STANDIN_SLEEP")
        if delay:
            time.sleep(float(delay))
        if self.selected("STANDIN_EMPTY")[0]:
            logger.info("Nothing to do.")
            sys.stdout.flush()
            sys.exit(0)

    def output_dir(self, base: str | Path, world_size: int) -> Path:
        """``base``, or ``base/<world_size>-gpu`` under STANDIN_SUBDIR."""
        out = Path(base)
        if self.selected("STANDIN_SUBDIR")[0]:
            out = out / f"{world_size}-gpu"
        return out

    def write_files(self, out_dir: Path, files: Iterable[tuple[str, Callable[[], bytes]]]) -> None:
        """Write ``files`` (name, producer) into ``out_dir``; STANDIN_PARTIAL stops halfway."""
        items = list(files)
        partial = self.selected("STANDIN_PARTIAL")[0]
        out_dir.mkdir(parents=True, exist_ok=True)
        for i, (name, produce) in enumerate(items):
            data = produce()
            if partial and i == len(items) - 1:
                (out_dir / name).write_bytes(data[: len(data) // 2])
                raise OSError(28, "No space left on device")
            (out_dir / name).write_bytes(data)

    # -- the controls themselves ----------------------------------------------------
    def _fail(self, code: int) -> None:
        message = os.environ.get("STANDIN_FAIL_MESSAGE") or (
            f"standin: simulated failure of {self.name} (STANDIN_FAIL)"
        )
        print(f"[standin] {self.name}: loading weights ...", flush=True)
        try:
            raise RuntimeError(message)
        except RuntimeError:
            traceback.print_exc()
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(code)

    def _hang(self) -> None:
        import subprocess

        ignore_term = os.environ.get("STANDIN_HANG_TERM", "") == "ignore"
        seconds = float(os.environ.get("STANDIN_HANG_SECONDS", "900"))
        print(f"[standin] {self.name}: working (STANDIN_HANG), pid {os.getpid()}", flush=True)
        code = "import signal, time\n"
        if ignore_term:
            code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        code += f"time.sleep({seconds!r})\n"
        # The trailing arguments only label the grandchild in `ps` (it shows the stand-in's path).
        child = subprocess.Popen(
            [sys.executable, "-c", code, "standin-hang-grandchild", str(self.path)], stdin=subprocess.DEVNULL
        )
        pidfile = os.environ.get("STANDIN_PIDFILE")
        if pidfile:
            _append(pidfile, f"{os.getpid()}\n{child.pid}\n")
        if ignore_term:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        child.kill()
        os._exit(3)


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)


def emit_garbage() -> None:
    """Binary garbage, escapes, NULs and one huge line on stdout (a little on stderr)."""
    sys.stdout.flush()
    out = sys.stdout.buffer
    out.write(b"\x1b[1;31m[E]\x1b[0m \xff\xfe\xfd not utf-8 \xc3\x28 \xe2\x82 \x00\x00 nul bytes\n")
    out.write(b"\x1b]0;title\x07\x1b[2K\x1b[1Aprogress  10%\rprogress 100%\r\n")
    size = int(os.environ.get("STANDIN_GARBAGE_BYTES", str(20 * 1024 * 1024)))
    chunk = b"garbage\xff\x00" * 6554  # ~64 KiB, no newline
    written = 0
    while written < size:
        piece = chunk[: size - written]
        out.write(piece)
        written += len(piece)
    out.write(b"\n")
    out.flush()
    sys.stderr.flush()
    sys.stderr.buffer.write(b"\xff\xfe stderr garbage \x00 \x1b[0m\n")
    sys.stderr.buffer.flush()


def start(script: str | Path, *, print_banner: bool = True) -> Controls:
    """First thing every TensorRT-LLM stand-in script does (the version comes from its tree)."""
    global _tree_version
    _tree_version = tree_version(script)
    if print_banner:
        banner()
    controls = Controls(script)
    controls.log_invocation()
    return controls


def elapsed(tik: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(time.time() - tik))
