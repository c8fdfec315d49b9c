"""What each TensorRT-LLM script accepts, read from the script's own ``argparse`` parser.

A step's args are checked against the parser of the script it runs (``convert_checkpoint.py``,
``quantize.py``, ``trtllm-build`` ...) before anything is downloaded. The parser is read by
running the script in a subprocess under a small bootstrap that replaces
``ArgumentParser.parse_args``/``parse_known_args`` with a function dumping the parser's actions as
JSON and exiting: flags added in loops (``trtllm-build``'s plugin flags) are read like literal
ones, and the script's real work never starts. Scripts that never call a parser fall back to their
``--help`` output. A parser that cannot be read is reported, never silently skipped.

Importing ``tensorrt_llm`` takes seconds, so every parser is cached on disk, keyed by the sha256 of
the script (and its sibling ``.py`` files), the Python version and the installed TensorRT-LLM
version; ``trtllm-builder warm-parsers`` fills the cache when the image is built.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from trtllm_builder.plan import flagtable
from trtllm_builder.plan.versions import trtllm_version

__all__ = [
    "DUMP_ENV",
    "OptionSpec",
    "ParserCache",
    "ParserResult",
    "ParserSpec",
    "check_tokens",
    "discover_programs",
    "parse_help",
    "program_label",
    "read_parser",
]

logger = logging.getLogger(__name__)

DUMP_ENV = "TRTLLM_BUILDER_PARSER_DUMP"  # the bootstrap writes the parser here
CACHE_FORMAT = 1
NO_PARSER_EXIT = 17  # the bootstrap's exit code when the script ended without parsing
DEFAULT_TIMEOUT = 300.0

# Runs as `python -c BOOTSTRAP script.py`. Kept free of anything but the standard library.
BOOTSTRAP = r"""
import argparse, enum, json, os, runpy, sys

_out = os.environ["TRTLLM_BUILDER_PARSER_DUMP"]
_script = os.path.abspath(sys.argv[1])


def _scalar(v):
    if isinstance(v, enum.Enum):
        v = v.value
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


def _entry(a):
    t = a.type
    tname = None if t is None else (getattr(t, "__name__", None) or type(t).__name__)
    choices = None
    if a.choices is not None:
        try:
            choices = [str(_scalar(c)) for c in a.choices if c is not None]
        except TypeError:
            choices = None
    nargs = a.nargs
    if nargs is not None and not isinstance(nargs, (int, str)):
        nargs = str(nargs)
    default = None if a.default is argparse.SUPPRESS else _scalar(a.default)
    return {
        "flags": list(a.option_strings),
        "dest": a.dest,
        "nargs": nargs,
        "choices": choices,
        "type_name": tname,
        "required": bool(a.required),
        "takes_value": a.nargs != 0,
        "default": default,
        "action": type(a).__name__,
    }


def _dump(parser, method):
    options, positionals = [], []
    for a in parser._actions:
        (options if a.option_strings else positionals).append(_entry(a))
    data = {"prog": parser.prog, "method": method, "options": options, "positionals": positionals}
    with open(_out + ".tmp", "w", encoding="utf-8") as f:
        json.dump(data, f)
    os.replace(_out + ".tmp", _out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _parse_args(self, args=None, namespace=None):
    _dump(self, "parse_args")


def _parse_known_args(self, args=None, namespace=None):
    _dump(self, "parse_known_args")


argparse.ArgumentParser.parse_args = _parse_args
argparse.ArgumentParser.parse_known_args = _parse_known_args
sys.argv = [_script, "--help"]
sys.path[0] = os.path.dirname(_script)
runpy.run_path(_script, run_name="__main__")
sys.stdout.flush()
sys.stderr.flush()
os._exit(17)
"""

_BOOL_WORDS = frozenset({"true", "false", "1", "0", "yes", "no", "y", "n", "t", "f", "on", "off"})
_NUMBER_RE = re.compile(r"^-\d|^-\.\d")


@dataclass(frozen=True)
class OptionSpec:
    """One ``add_argument`` of a parser, as far as validation needs it."""

    flags: tuple[str, ...]  # "--max_seq_len", "--max_decoder_seq_len"; empty for a positional
    dest: str
    nargs: int | str | None = None
    choices: tuple[str, ...] | None = None  # as strings; None: any value
    type_name: str | None = None  # "int", "float", "str2bool", ...; None: str
    required: bool = False
    takes_value: bool = True  # False for store_true/store_false/store_const/count switches
    default: bool | int | float | str | None = None

    @property
    def name(self) -> str:
        """The flag a message shows: the first long one."""
        return next((f for f in self.flags if f.startswith("--")), self.flags[0] if self.flags else self.dest)

    def as_dict(self) -> dict[str, Any]:
        return {
            "flags": list(self.flags),
            "dest": self.dest,
            "nargs": self.nargs,
            "choices": list(self.choices) if self.choices is not None else None,
            "type_name": self.type_name,
            "required": self.required,
            "takes_value": self.takes_value,
            "default": self.default,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> OptionSpec:
        choices = d.get("choices")
        default = d.get("default")
        return cls(
            flags=tuple(str(f) for f in d.get("flags") or ()),
            dest=str(d.get("dest") or ""),
            nargs=d.get("nargs"),
            choices=tuple(str(c) for c in choices) if isinstance(choices, list) else None,
            type_name=d.get("type_name"),
            required=bool(d.get("required")),
            takes_value=bool(d.get("takes_value", True)),
            default=default if isinstance(default, bool | int | float | str) else None,
        )


@dataclass(frozen=True)
class ParserSpec:
    """A script's command-line interface."""

    prog: str
    options: tuple[OptionSpec, ...]
    positionals: tuple[OptionSpec, ...] = ()
    method: Literal["parse_args", "parse_known_args"] = "parse_args"
    source: Literal["parser", "help"] = "parser"  # read from the parser object, or from --help text
    _by_flag: dict[str, OptionSpec] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for opt in self.options:
            for flag in opt.flags:
                self._by_flag.setdefault(flag, opt)

    def option(self, flag: str) -> OptionSpec | None:
        """The option spelt exactly ``flag`` (with its dashes); prefixes do not count."""
        return self._by_flag.get(flag)

    def flags(self) -> list[str]:
        return sorted(self._by_flag)

    def flag_names(self) -> frozenset[str]:
        """Every option name without its dashes (``model_dir``, ``model-dir`` ...): the plan's ``flags_of``."""
        return frozenset(f.lstrip("-") for f in self._by_flag)

    def as_dict(self) -> dict[str, Any]:
        return {
            "prog": self.prog,
            "method": self.method,
            "source": self.source,
            "options": [o.as_dict() for o in self.options],
            "positionals": [o.as_dict() for o in self.positionals],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: Literal["parser", "help"] | None = None) -> ParserSpec:
        method = d.get("method")
        src = source or d.get("source") or "parser"
        return cls(
            prog=str(d.get("prog") or ""),
            options=tuple(OptionSpec.from_dict(o) for o in d.get("options") or () if isinstance(o, dict)),
            positionals=tuple(OptionSpec.from_dict(o) for o in d.get("positionals") or () if isinstance(o, dict)),
            method="parse_known_args" if method == "parse_known_args" else "parse_args",
            source="help" if src == "help" else "parser",
        )


@dataclass(frozen=True)
class ParserResult:
    """The parser of one program, or why it could not be read."""

    label: str  # what messages call the program: "trtllm-build", "models/core/llama/convert_checkpoint.py"
    spec: ParserSpec | None
    problem: str | None = None  # why ``spec`` is None
    cached: bool = False  # served from the disk cache (no subprocess)

    def note(self) -> str | None:
        """The plan note for a parser that could not be read."""
        if self.spec is not None:
            return None
        return f"parser of `{self.label}` could not be read ({self.problem}): its args are passed unchecked"


# --- reading -------------------------------------------------------------------------------------------


def _is_python_file(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(256)
    except OSError:
        return False
    first = head.split(b"\n", 1)[0]
    return path.suffix == ".py" or (first.startswith(b"#!") and b"python" in first)


def _resolve(program: Sequence[str], python: str) -> tuple[str, Path] | tuple[None, Path] | str:
    """``(interpreter, script)`` for a Python program, ``(None, exe)`` for a binary, or a problem."""
    if len(program) >= 2:
        return program[0], Path(program[1])
    if not program:
        return "empty program"
    exe = program[0]
    found = exe if os.path.isabs(exe) else shutil.which(exe)
    if found is None:
        return f"`{exe}` is not on PATH"
    path = Path(found)
    if _is_python_file(path):
        return python, path  # a console script such as trtllm-build: a Python file
    return None, path


def cache_key(script: Path, interpreter: str | None) -> str:
    """sha256 of what decides a parser: the script and its sibling modules, Python and TensorRT-LLM."""
    h = hashlib.sha256(f"trtllm-builder-parser {CACHE_FORMAT}\n".encode())
    h.update(script.read_bytes())
    siblings = sorted(p for p in script.parent.glob("*.py") if p.is_file() and p.name != script.name)
    for sib in siblings:
        with contextlib.suppress(OSError):
            h.update(f"\n--{sib.name}--\n".encode() + sib.read_bytes())
    pyver = platform.python_version() if interpreter in (None, sys.executable) else os.path.realpath(interpreter)
    h.update(f"\npython {pyver}\ntensorrt_llm {trtllm_version(None)}\n".encode())
    return h.hexdigest()


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= 300 else last[:297] + "..."


_OPT_LINE = re.compile(r"^ {1,8}(-{1,2}[A-Za-z0-9?][^\s,]*.*)$")


def parse_help(text: str) -> ParserSpec | None:
    """A best-effort :class:`ParserSpec` from argparse ``--help`` output (flags, metavars, choices)."""
    options: list[OptionSpec] = []
    for line in text.splitlines():
        m = _OPT_LINE.match(line)
        if m is None:
            continue
        invocation = re.split(r"\s{2,}", m.group(1).strip(), maxsplit=1)[0]
        flags: list[str] = []
        metavar = ""
        for part in invocation.split(", "):
            flag, _, mv = part.partition(" ")
            if not flag.startswith("-"):
                break
            flags.append(flag)
            metavar = metavar or mv
        if not flags:
            continue
        nargs: int | str | None = None
        if metavar.startswith("[") and metavar.endswith("...]"):
            nargs = "*"
        elif metavar.startswith("["):
            nargs = "?"
        elif metavar.endswith("...]"):
            nargs = "+"
        choices = None
        cm = re.match(r"^\[?\{([^}]*)\}", metavar)
        if cm:
            choices = tuple(c for c in cm.group(1).split(",") if c)
        dest = next((f for f in flags if f.startswith("--")), flags[0]).lstrip("-").replace("-", "_")
        options.append(OptionSpec(tuple(flags), dest, nargs, choices, None, False, bool(metavar)))
    if not options:
        return None
    return ParserSpec(prog="", options=tuple(options), source="help")


def _run_bootstrap(interpreter: str, script: Path, timeout: float) -> tuple[ParserSpec | None, str | None, bool]:
    """(spec, problem, no_parser): ``no_parser`` when the script ran to its end without parsing."""
    with tempfile.TemporaryDirectory(prefix="trtllm-builder-parser-") as tmp:
        dump = Path(tmp) / "parser.json"
        env = dict(os.environ)
        env[DUMP_ENV] = str(dump)
        env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave the TensorRT-LLM tree as it is
        try:
            proc = subprocess.run(
                [interpreter, "-c", BOOTSTRAP, str(script)],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,  # real scripts print a version banner first: ignored
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"reading it took longer than {timeout:g} s", False
        except OSError as exc:
            return None, f"cannot run {interpreter}: {exc.strerror or exc}", False
        if dump.is_file():
            try:
                data = json.loads(dump.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return None, f"unreadable parser dump: {exc}", False
            return ParserSpec.from_dict(data, source="parser"), None, False
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode in (NO_PARSER_EXIT, 0):
            return None, "it never called an argparse parser", True
        why = _tail(stderr)
        return None, f"exit {proc.returncode}" + (f": {why}" if why else ""), False


def _run_help(argv: list[str], timeout: float) -> tuple[ParserSpec | None, str | None]:
    with tempfile.TemporaryDirectory(prefix="trtllm-builder-help-") as tmp:
        env = dict(os.environ)
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        try:
            proc = subprocess.run(
                [*argv, "--help"],
                cwd=tmp,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None, f"`--help` took longer than {timeout:g} s"
        except OSError as exc:
            return None, f"cannot run {argv[0]}: {exc.strerror or exc}"
    spec = parse_help(proc.stdout.decode("utf-8", "replace"))
    if spec is None:
        why = _tail(proc.stderr.decode("utf-8", "replace"))
        return None, f"`--help` exited {proc.returncode} and listed no options" + (f" ({why})" if why else "")
    return spec, None


def read_parser(
    program: Sequence[str],
    *,
    cache_dir: Path | None,
    timeout: float = DEFAULT_TIMEOUT,
    python: str = sys.executable,
) -> ParserSpec | None:
    """The parser of ``program`` (``[python, script.py]`` or ``[trtllm-build]``), or None if unreadable."""
    return ParserCache(cache_dir, timeout=timeout, python=python).lookup(program).spec


# --- the cache -----------------------------------------------------------------------------------------


class ParserCache:
    """Reads parsers once per script content: memory, then ``<cache_dir>/parsers/<key>.json``, then a subprocess.

    ``runs`` counts the subprocesses started (tests use it to prove a warm cache starts none).
    Failures are remembered in memory only, so a later run (with a GPU, say) tries again.
    """

    def __init__(
        self,
        cache_dir: Path | None,
        *,
        version: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        python: str = sys.executable,
        jobs: int = 4,
    ) -> None:
        self.dir = Path(cache_dir) / "parsers" if cache_dir is not None else None
        self.version = version
        self.timeout = timeout
        self.python = python
        self.jobs = max(1, jobs)
        self.runs = 0
        self._memory: dict[str, tuple[ParserSpec | None, str | None]] = {}
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}

    def describe(self, label: str) -> str:
        """``trtllm-build (0.21.0)``: how messages name a program."""
        return f"{label} ({self.version})" if self.version else label

    def lookup(self, program: Sequence[str], *, label: str | None = None) -> ParserResult:
        label = label or program_label(program)
        where = _resolve(program, self.python)
        if isinstance(where, str):
            return ParserResult(label, None, where)
        interpreter, script = where
        try:
            key = cache_key(script, interpreter)
        except OSError as exc:
            return ParserResult(label, None, f"cannot read {script}: {exc.strerror or exc}")
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:  # two steps running the same script read it once
            with self._lock:
                hit = self._memory.get(key)
            if hit is not None:
                return ParserResult(label, hit[0], hit[1], cached=True)
            spec = self._load(key)
            if spec is not None:
                with self._lock:
                    self._memory[key] = (spec, None)
                return ParserResult(label, spec, None, cached=True)
            spec, problem = self._read(interpreter, script)
            with self._lock:
                self._memory[key] = (spec, problem)
            if spec is not None:
                self._store(key, spec, script)
            else:
                logger.warning("parser of %s could not be read: %s", label, problem)
            return ParserResult(label, spec, problem)

    def lookup_many(self, programs: Iterable[tuple[Sequence[str], str]]) -> list[ParserResult]:
        """Look up several programs in parallel (each read may import ``tensorrt_llm``)."""
        items = list(programs)
        if len(items) <= 1:
            return [self.lookup(p, label=lb) for p, lb in items]
        with ThreadPoolExecutor(max_workers=min(self.jobs, len(items))) as pool:
            return list(pool.map(lambda it: self.lookup(it[0], label=it[1]), items))

    def _read(self, interpreter: str | None, script: Path) -> tuple[ParserSpec | None, str | None]:
        with self._lock:
            self.runs += 1
        if interpreter is None:  # not a Python program: its --help is all there is
            return _run_help([str(script)], self.timeout)
        spec, problem, no_parser = _run_bootstrap(interpreter, script, self.timeout)
        if spec is not None or not no_parser:
            return spec, problem
        with self._lock:
            self.runs += 1
        return _run_help([interpreter, str(script)], self.timeout)

    def _path(self, key: str) -> Path | None:
        return self.dir / f"{key}.json" if self.dir is not None else None

    def _load(self, key: str) -> ParserSpec | None:
        path = self._path(key)
        if path is None or not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            logger.debug("ignoring unreadable parser cache %s: %s", path, exc)
            return None
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("spec"), dict):
            return None
        return ParserSpec.from_dict(data["spec"])

    def _store(self, key: str, spec: ParserSpec, script: Path) -> None:
        path = self._path(key)
        if path is None:
            return
        record = {"format": CACHE_FORMAT, "script": str(script), "spec": spec.as_dict()}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    json.dump(record, f)
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:  # a read-only cache costs time, not correctness
            logger.debug("cannot write parser cache %s: %s", path, exc)


def program_label(program: Sequence[str], examples: Path | None = None) -> str:
    """``trtllm-build`` for a command, the path under ``examples/`` for a script."""
    if len(program) >= 2:
        script = Path(program[1])
        if examples is not None:
            with contextlib.suppress(ValueError):
                return script.relative_to(examples).as_posix()
        return script.name
    return Path(program[0]).name if program else "?"


# Scripts worth reading ahead of time: converters, quantize.py, old builders, the runners.
_WARM_NAMES = ("convert_checkpoint.py", "quantize.py", "build.py", "hf_*_convert.py")
_WARM_TOP = ("run.py", "summarize.py", "mmlu.py")


def discover_programs(
    examples: Path,
    *,
    python: str = sys.executable,
    which: Callable[[str], str | None] = shutil.which,
    commands: Sequence[str] = ("trtllm-build",),
) -> list[tuple[tuple[str, ...], str]]:
    """Every (program, label) whose parser ``warm-parsers`` caches: the tree's scripts and the commands on PATH."""
    scripts: set[Path] = set()
    for pattern in _WARM_NAMES:
        scripts.update(p for p in examples.rglob(pattern) if p.is_file())
    scripts.update(examples / name for name in _WARM_TOP if (examples / name).is_file())
    out: list[tuple[tuple[str, ...], str]] = []
    for cmd in commands:
        found = which(cmd)
        if found is not None:
            out.append(((found,), cmd))
    for script in sorted(scripts):
        program = (python, str(script))
        out.append((program, program_label(program, examples)))
    return out


# --- validation ----------------------------------------------------------------------------------------


def _groups(tokens: Sequence[str]) -> list[tuple[str, list[str]]]:
    groups: list[tuple[str, list[str]]] = []
    for tok in tokens:
        if tok.startswith("--") and len(tok) > 2:
            flag, eq, value = tok.partition("=")
            groups.append((flag, [value] if eq else []))
        elif tok.startswith("-") and len(tok) > 1 and not _NUMBER_RE.match(tok):
            groups.append((tok, []))
        elif groups:
            groups[-1][1].append(tok)
        else:
            groups.append(("", [tok]))
    return groups


def _flag_values(tokens: Sequence[str]) -> dict[str, str]:
    """``{flag: value}`` of rendered tokens (a bare flag: ``"true"``), for messages that show a rewrite."""
    return {_key(flag): (values[0] if values else "true") for flag, values in _groups(tokens) if flag}


def _type_problem(opt: OptionSpec, value: str) -> str | None:
    t = (opt.type_name or "").lower()
    if t == "int":
        try:
            int(value)
        except ValueError:
            return "not a whole number"
    elif t == "float":
        try:
            float(value)
        except ValueError:
            return "not a number"
    elif "bool" in t and t != "bool" and value.lower() not in _BOOL_WORDS:
        return "expected true or false"
    return None


def _canonical(opt: OptionSpec, value: str) -> str:
    t = (opt.type_name or "").lower()
    try:
        if t == "int":
            return str(int(value))
        if t == "float" and opt.choices is not None:
            f = float(value)
            return next((c for c in opt.choices if _float_eq(c, f)), value)
    except ValueError:
        return value
    return value.lower() if t == "lower" else value


def _float_eq(text: str, f: float) -> bool:
    try:
        return float(text) == f
    except ValueError:
        return False


def _key(flag: str) -> str:
    return flag.lstrip("-")


def _value_hint(opt: OptionSpec) -> str:
    """`` (one of a, b)`` / `` (a whole number)`` / ``""``: what the option takes, for messages."""
    if opt.choices:
        return f" (one of {', '.join(opt.choices)})"
    t = (opt.type_name or "").lower()
    what = {"int": "a whole number", "float": "a number"}.get(t)
    return f" ({what})" if what else ""


def _unknown(flag: str, spec: ParserSpec, label: str, program: str | None, args: Mapping[str, str]) -> str:
    msg = f"`{flag}` is not a flag of {label}"
    longs = [f for f in spec.flags() if f.startswith("--")]
    # a flag of an older release: the exact rewrite, from the same table cog-trt-llm configs are translated with
    rewrite = flagtable.hint(program, _key(flag), args) if program else None
    if rewrite is not None:
        return f"{msg}; {rewrite}"
    close: list[str] = []
    prefixed = [f for f in longs if f.startswith(flag)]
    for c in [*difflib.get_close_matches(flag, longs, n=3, cutoff=0.6), *prefixed[:3]]:
        if c not in close:
            close.append(c)
    if close:  # the three closest spellings, then flags it abbreviates
        msg += "; did you mean " + ", ".join(f"`{c}`" for c in close[:3]) + "?"
    if prefixed:
        msg += " (abbreviated flags are not accepted: write the full name)"
    return msg


def check_tokens(
    spec: ParserSpec, tokens: Sequence[str], *, label: str, program: str | None = None
) -> tuple[list[str], list[str]]:
    """Check rendered args against ``spec`` the way its parser would, minus abbreviations.

    Returns ``(problems, notes)``; each message names the flag and the fix. ``label`` names the
    program in messages (``trtllm-build (0.21.0)``); ``program`` (``trtllm-build``,
    ``convert_checkpoint.py``) lets an old flag's message give its exact rewrite.
    """
    given_args = _flag_values(tokens)
    problems: list[str] = []
    notes: list[str] = []
    seen_dest: dict[str, str] = {}
    given: set[str] = set()
    lenient = spec.method == "parse_known_args"
    for flag, values in _groups(tokens):
        if not flag:
            problems.append(
                f"`{' '.join(values)}`: a positional value; every arg must be a flag (`key: value` in args)"
            )
            continue
        opt = spec.option(flag)
        if opt is None:
            msg = _unknown(flag, spec, label, program, given_args)
            if lenient:
                notes.append(msg + f" ({label} parses with parse_known_args: passed on unchecked)")
            else:
                problems.append(msg)
            continue
        given.add(opt.dest)
        if opt.dest in seen_dest and seen_dest[opt.dest] != flag:
            problems.append(f"`{seen_dest[opt.dest]}` and `{flag}` set the same option of {label}: give one")
        elif opt.dest in seen_dest:
            problems.append(f"`{flag}` is given twice")
        seen_dest[opt.dest] = flag
        shown = " ".join([flag, *values])
        if not opt.takes_value:
            if values:
                problems.append(
                    f"`{flag}` is a switch and takes no value (got `{' '.join(values)}`): write "
                    f"`{_key(flag)}: true` to pass it or `{_key(flag)}: false` to leave it out"
                )
            continue
        n = len(values)
        nargs = opt.nargs
        if nargs is None or nargs == 1:
            if n == 0:
                example = opt.choices[0] if opt.choices else "<value>"
                problems.append(f"`{flag}` needs a value{_value_hint(opt)}: write `{_key(flag)}: {example}`")
                continue
            if n > 1:
                problems.append(f"`{flag}` takes one value, got {n} (`{' '.join(values)}`)")
                continue
        elif nargs == "?" and n > 1:
            problems.append(f"`{flag}` takes at most one value, got {n} (`{' '.join(values)}`)")
            continue
        elif nargs == "+" and n == 0:
            problems.append(f"`{flag}` needs at least one value{_value_hint(opt)}: write `{_key(flag)}: [a, b]`")
            continue
        elif isinstance(nargs, int) and n != nargs:
            problems.append(f"`{flag}` takes exactly {nargs} values, got {n}")
            continue
        for value in values:
            bad_type = _type_problem(opt, value)
            if bad_type is not None:
                problems.append(f"`{shown}`: {bad_type}")
                break
            if opt.choices is not None and _canonical(opt, value) not in opt.choices:
                close = difflib.get_close_matches(value, list(opt.choices), n=1, cutoff=0.6)
                hint = f"; did you mean `{close[0]}`?" if close else ""
                problems.append(f"`{flag} {value}` is not one of {', '.join(opt.choices)}{hint}")
                break
    if spec.source == "parser":
        for opt in spec.options:
            if opt.required and opt.dest not in given:
                problems.append(f"`{opt.name}` is required by {label}: add `{_key(opt.name)}: ...` to the args")
        for pos in spec.positionals:
            if pos.nargs not in ("?", "*"):
                problems.append(
                    f"{label} needs the positional argument `{pos.dest}`, which a step cannot pass; "
                    "run it some other way"
                )
    return problems, notes
