#!/usr/bin/env python3
"""Generate the GPU image's fully pinned lock, ``requirements/trtllm-<version>.txt``.

    python scripts/lock.py [--version 1.2.1 | --all] [--uv PATH]

Inputs (each recorded in the lock's header):

* ``requirements/inputs/trtllm-<version>.toml``: the TensorRT-LLM release, the Python and platform
  of the image, extra requirements (each with its reason), the package indexes, and stated metadata
  for packages whose PyPI release is a stub (their real wheels live on pypi.nvidia.com, which is not
  reachable from where locks are made; every stated fact says where it came from);
* this project's own runtime dependencies: ``pyproject.toml``'s ``dependencies`` and its ``triton``,
  ``s3`` and ``cog`` extras (what the image installs besides TensorRT-LLM).

Resolution is ``uv pip compile`` for that Python and manylinux platform against PyPI. Every package
in the output is pinned with ``==``; nothing is installed here.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS = ROOT / "requirements" / "inputs"
EXTRAS = ("triton", "s3", "cog")


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def tool_requirements() -> list[str]:
    """This project's runtime requirements, read from pyproject.toml (never restated)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs.extend(r for r in project["optional-dependencies"][extra] if not r.startswith("trtllm-builder"))
    return reqs


def uv_config(spec: dict[str, object]) -> str:
    lines = []
    for entry in spec.get("metadata", []):  # type: ignore[union-attr]
        assert isinstance(entry, dict)
        deps = ", ".join(_toml_string(d) for d in entry.get("requires-dist", []))
        lines += [
            "[[dependency-metadata]]",
            f"name = {_toml_string(entry['name'])}",
            f"version = {_toml_string(entry['version'])}",
            f"requires-dist = [{deps}]",
            "",
        ]
    return "\n".join(lines)


def parse_lock(text: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    """uv's output -> ({name: version}, {name: set of packages it is required by})."""
    pins: dict[str, str] = {}
    via: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            current = m.group(1).lower()
            pins[current] = m.group(2)
            via[current] = set()
            continue
        m = re.match(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._\[\]-]*)\s*$", line)
        if m and current is not None and m.group(1) != "via":
            via[current].add(re.sub(r"\[.*\]$", "", m.group(1)).lower())
    return pins, via


def torch_only(pins: dict[str, str], via: dict[str, set[str]], pattern: str) -> list[str]:
    """Packages matching ``pattern`` that nothing but torch (and such packages) requires."""
    rx = re.compile(pattern)
    dropped: set[str] = set()
    changed = True
    while changed:
        changed = False
        for name in pins:
            if name in dropped or not rx.match(name):
                continue
            parents = via.get(name, set())
            if parents and parents <= {"torch"} | dropped:
                dropped.add(name)
                changed = True
    return sorted(dropped)


def lock(version: str, uv: str) -> Path:
    spec_path = INPUTS / f"trtllm-{version}.toml"
    spec = tomllib.loads(spec_path.read_text(encoding="utf-8"))
    if spec["version"] != version:
        raise SystemExit(f"{spec_path}: says version {spec['version']!r}, expected {version!r}")
    reqs = [*spec["requirements"], *tool_requirements()]
    out = ROOT / "requirements" / f"trtllm-{version}.txt"
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "requirements.in").write_text("\n".join(reqs) + "\n", encoding="utf-8")
        (tmpdir / "uv.toml").write_text(uv_config(spec), encoding="utf-8")
        argv = [
            uv, "pip", "compile", "requirements.in",
            "--config-file", "uv.toml",
            "--python-version", str(spec["python"]),
            "--python-platform", str(spec["platform"]),
            "--no-header",
            "--quiet",
            "-o", "lock.txt",
        ]  # fmt: skip
        subprocess.run(argv, cwd=tmpdir, check=True)
        body = (tmpdir / "lock.txt").read_text(encoding="utf-8")
    pins, via = parse_lock(body)
    dropped = torch_only(pins, via, str(spec["drop_torch_only"])) if spec.get("drop_torch_only") else []
    if dropped:
        body = _drop(body, set(dropped))
    uv_version = subprocess.run([uv, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    header = [
        f"# requirements/trtllm-{version}.txt: the GPU image's Python packages, every one pinned with ==.",
        "# Generated by scripts/lock.py; do not edit by hand: change the inputs and run",
        f"#   python scripts/lock.py --version {version}",
        f"# Resolved {dt.date.today().isoformat()} with {uv_version} against PyPI for CPython {spec['python']}, "
        f"{spec['platform']}.",
        "# Inputs:",
        f"#   - TensorRT-LLM: {', '.join(spec['requirements'])}  (requirements/inputs/trtllm-{version}.toml)",
        "#   - this project (pyproject.toml dependencies + extras "
        + ", ".join(EXTRAS)
        + "): "
        + "; ".join(tool_requirements()),
    ]
    for entry in spec.get("metadata", []):
        header.append(
            f"#   - stated metadata of {entry['name']} {entry['version']} (NOT read from its wheel): {entry['why']}"
        )
    if dropped:
        header += [
            f"# torch: resolved here from PyPI (its CUDA 12 build); the image installs torch=={pins.get('torch')} from",
            f"#   {spec['torch_index']} instead, whose wheel pins its own CUDA libraries exactly. The PyPI build's",
            "#   CUDA 12 libraries are left out of this lock: " + ", ".join(dropped),
        ]
    header.append("")
    indexes = [f"--extra-index-url {url}" for url in spec.get("indexes", [])]
    out.write_text("\n".join(header + indexes + [""]) + body, encoding="utf-8")
    return out


def _drop(body: str, names: set[str]) -> str:
    kept: list[str] = []
    skipping = False
    for line in body.splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==", line)
        if m:
            skipping = m.group(1).lower() in names
        elif not line.startswith(" "):
            skipping = False
        if not skipping:
            kept.append(line)
    return "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    group = p.add_mutually_exclusive_group()
    group.add_argument("--version", help="the TensorRT-LLM release to lock (an inputs file must exist)")
    group.add_argument("--all", action="store_true", help="lock every release in requirements/inputs/")
    p.add_argument("--uv", default=shutil.which("uv"), help="the uv executable (default: uv on PATH)")
    ns = p.parse_args(argv)
    if not ns.uv:
        p.error("uv is not on PATH: pip install uv, or pass --uv PATH")
    versions = (
        sorted(f.stem.removeprefix("trtllm-") for f in INPUTS.glob("trtllm-*.toml"))
        if ns.all or not ns.version
        else [ns.version]
    )
    for version in versions:
        print(f"locked {lock(version, ns.uv).relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
